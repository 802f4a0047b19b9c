"""What a newcomer sees on a mistake: flag typos, abbreviations, default boards, accelerate launch, long names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from spurbench import cli


def _error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(argv)
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_a_flag_typo_prints_the_subcommands_usage_and_the_closest_flag(capsys):
    err = _error(capsys, ["eval", "--panel", "offline", "--datset", "data/smoke"])
    assert (
        err.startswith("usage: spurbench eval ")
        and "spurbench eval: error: unrecognized argument --datset; did you mean --dataset?" in err
    )
    # a required flag misspelt: the typo is named, not only the flag then missing
    err = _error(capsys, ["build", "--recipe", "smoke", "--otu", "data/x"])
    assert err.startswith("usage: spurbench build ") and "did you mean --out?" in err
    err = _error(capsys, ["import", "waterbirds", "src", "--otu", "data/x"])
    assert err.startswith("usage: spurbench import waterbirds ") and "did you mean --out?" in err
    err = _error(capsys, ["eval", "--zzzzzz"])
    assert "unrecognized argument --zzzzzz; `spurbench eval --help` lists the flags" in err


def test_abbreviations_are_refused(capsys):
    err = _error(capsys, ["leaderboard", "--leader", "x.json"])
    assert "unrecognized argument --leader; did you mean --leaderboard?" in err
    err = _error(capsys, ["eval", "--model", "resnet50", "--data", "x"])
    assert "did you mean --dataset?" in err
    # every parser, subcommands' included, is built without prefix matching
    parser = cli.build_parser()
    subs = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"][0]
    assert parser.allow_abbrev is False and all(p.allow_abbrev is False for p in subs.choices.values())


def test_values_that_look_like_flags_after_a_double_dash_are_left_alone(capsys):
    argv = ["eval", "--model", "x", "--", "--not-a-flag"]
    cli.check_flags(cli.build_parser(["eval"]), argv)  # no SystemExit
    assert capsys.readouterr().err == ""
    assert argv == ["eval", "--model", "x", "--", "--not-a-flag"]  # left as given
    # the same unknown flag before the `--` is refused: the check does look at flags
    with pytest.raises(SystemExit) as exit_info:
        cli.check_flags(cli.build_parser(["eval"]), ["eval", "--model", "x", "--not-a-flag"])
    assert exit_info.value.code == 2 and "unrecognized argument --not-a-flag" in capsys.readouterr().err


def test_default_board_is_one_per_dataset(tmp_path, monkeypatch):
    from spurbench.evaluate.leaderboard import default_leaderboard

    (tmp_path / "data" / "smoke").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert default_leaderboard("data/smoke") == Path("leaderboard/smoke/leaderboard.json")
    assert default_leaderboard("data/smoke/", "train") == Path("leaderboard/smoke-train/leaderboard.json")
    assert default_leaderboard("org/spurious-set") == Path("leaderboard/org--spurious-set/leaderboard.json")


def test_leaderboard_command_without_a_board_names_the_ones_it_found(tmp_path, monkeypatch, capsys):
    for name in ("a", "b"):
        (tmp_path / "leaderboard" / name).mkdir(parents=True)
        (tmp_path / "leaderboard" / name / "leaderboard.json").write_text("{}")
    monkeypatch.chdir(tmp_path)
    assert cli.main(["leaderboard", "--format", "md"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "leaderboard/a/leaderboard.json, leaderboard/b/leaderboard.json" in err
    assert "--leaderboard FILE" in err


def test_libraries_are_quieted_by_the_entry_point_not_by_importing_spurbench():
    code = (
        "import os, spurbench.evaluate.cli, spurbench.dataset; "
        "print(os.environ.get('TRANSFORMERS_VERBOSITY'), os.environ.get('HF_DATASETS_DISABLE_PROGRESS_BARS')); "
        "from spurbench import cli; cli.quiet_libraries(); "
        "print(os.environ.get('TRANSFORMERS_VERBOSITY'), os.environ.get('HF_DATASETS_DISABLE_PROGRESS_BARS'))"
    )
    env = {k: v for k, v in os.environ.items() if k not in cli.QUIET_LIBRARIES}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["None None", "error 1"]
    # a user's own setting wins
    env["TRANSFORMERS_VERBOSITY"] = "info"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.stdout.split("\n")[1] == "info 1"


@pytest.mark.slow
def test_a_user_error_under_accelerate_launch_is_one_line(tmp_path):
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "-q",
            "--num_processes",
            "1",
            "--num_machines",
            "1",
            "--mixed_precision",
            "no",
            "--dynamo_backend",
            "no",
            "-m",
            "spurbench",
            "eval",
            "--panel",
            "offline",
            "--dataset",
            str(tmp_path / "missing"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=tmp_path,
    )
    assert res.returncode != 0
    lines = res.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0].startswith("spurbench eval: error: dataset folder")
        and "Traceback" not in res.stderr
    ), res.stderr
    assert not (tmp_path / "leaderboard").exists()


def test_group_names_are_never_cut():
    from spurbench.evaluate.shift import format_table

    group = "Egyptian cat/espresso maker"
    entry = {
        "model": "m",
        "metrics": {
            "group_by": "group",
            "worst_group_accuracy": 0.0,
            "worst_group": group,
            "num_groups": 1,
            "mean_group_accuracy": 0.0,
            "accuracy": 0.0,
            "accuracy_top5": 0.0,
            "num_images": 2,
        },
        "per_group": {group: {"n": 2, "accuracy": 0.0, "accuracy_top5": 0.5, "reference_accuracy": None}},
        "per_class": {},
    }
    lines = format_table(entry).splitlines()
    row = next(line for line in lines if line.startswith("Egyptian"))
    assert row.startswith(group + " ") and row.split()[-5] == "2"


def test_cut_prompts_name_what_clip_drops():
    """The words the pipeline's truncation drops, checked against the tokenizer's own truncation."""
    import tempfile

    from spurbench.generate.methods.d3s import cut_prompts
    from spurbench.tiny_models import tiny_clip_tokenizer

    with tempfile.TemporaryDirectory() as d:
        tok = tiny_clip_tokenizer(Path(d), model_max_length=16)
    short, long = "cat", "a red cat on a red mat in the red house at night"
    cut = cut_prompts(tok, [short, long, long])
    assert list(cut) == [long]
    ids = tok(long, truncation=False).input_ids
    kept = tok(long, truncation=True, max_length=16).input_ids
    assert len(tok(short).input_ids) <= 16 < len(ids) and kept == ids[:15] + [ids[-1]]  # what the text encoder sees
    assert cut[long] == tok.decode(ids[15:-1], skip_special_tokens=True) and cut[long]
    # kept + lost is the whole prompt (the cut may fall inside a word: CLIP cuts tokens, not words)
    assert (tok.decode(kept, skip_special_tokens=True) + cut[long]).replace(" ", "") == long.replace(" ", "")
