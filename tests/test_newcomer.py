"""The first hour: help that lists what ships, the sample-photos set the quickstart scores, cards a Hub user reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spurbench import cli

PACKAGE = Path(cli.__file__).parent


def _help(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main([*argv, "--help"])
    assert exit_.value.code == 0
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines: compare on words


def _listed(text: str, flag: str) -> list[str]:
    """The names a flag's help lists as `a shipped name (a, b, c)`."""
    after = text[text.index(f"{flag} NAME|") :]
    return re.search(r"a shipped name \(([^)]*)\)", after).group(1).replace(" ", "").split(",")


def test_build_help_lists_every_shipped_recipe_and_shows_out_as_required(capsys):
    text = _help(capsys, ["build"])
    assert sorted(_listed(text, "--recipe")) == sorted(p.stem for p in (PACKAGE / "recipes").glob("*.yaml"))
    assert "usage: spurbench build --recipe NAME|PATH --out DIR [flags]" in text
    assert "Required, except with --plan" in text


@pytest.mark.slow  # imports torch with the eval command (~10 s)
def test_eval_help_lists_every_shipped_panel(capsys):
    text = _help(capsys, ["eval"])
    assert sorted(_listed(text, "--panel")) == sorted(p.stem for p in (PACKAGE / "panels").glob("*.yaml"))


@pytest.mark.parametrize("argv", [["build"], ["import"], ["import", "waterbirds"], ["leaderboard"]])
def test_help_descriptions_are_written_for_users_not_module_docstrings(argv, capsys):
    text = _help(capsys, argv)
    for leak in ("add_arguments", "IMPORTERS", "Imports flow one way", "this module", "(default: None)"):
        assert leak not in text, (argv, leak)


# --- mistakes that misled (issue 25 point 5) ---------------------------------------------------------------------


def test_a_builds_work_folder_given_as_dataset_is_named_with_its_dataset_folder(tmp_path):
    from spurbench.dataset import open_dataset_folder
    from spurbench.errors import SpurbenchError

    work = tmp_path / "smoke.work"  # what `spurbench build --out smoke` leaves beside the dataset
    (work / "classes" / "309").mkdir(parents=True)
    (work / "state.json").write_text("{}")
    before = sorted(p.relative_to(work) for p in work.rglob("*"))
    with pytest.raises(
        SpurbenchError, match=r"is a build's work folder .*not a dataset; give the dataset folder, '.*smoke'$"
    ):
        open_dataset_folder(work)
    assert sorted(p.relative_to(work) for p in work.rglob("*")) == before


def test_the_hub_probe_names_offline_mode_without_connecting(monkeypatch):
    from spurbench.hub import hub_unreachable

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    assert hub_unreachable() == "HF_HUB_OFFLINE is set"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub_unreachable().startswith("127.0.0.1:9 is unreachable")


def test_a_model_missing_from_the_cache_fails_at_once_when_the_hub_is_unreachable(monkeypatch, tmp_path, capfd):
    import time

    from huggingface_hub import constants

    from spurbench.classifiers import ClassifierSpec, create_classifier
    from spurbench.errors import SpurbenchError

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: refused at once
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    offline_before = constants.HF_HUB_OFFLINE
    start = time.monotonic()
    with pytest.raises(
        SpurbenchError, match=r"cannot be fetched .*\(127\.0\.0\.1:9 is unreachable \(.*\)\); pass --weights"
    ):
        create_classifier(ClassifierSpec(model="resnet10t.c3_in1k"))
    assert time.monotonic() - start < 30  # the Hub client's retries took about a minute
    assert "Retrying" not in capfd.readouterr().err
    assert constants.HF_HUB_OFFLINE == offline_before  # offline mode only for that call


# --- progress in a log file (issue 25 point 7) --------------------------------------------------------------------


def test_progress_written_to_a_file_is_plain_lines(tmp_path, monkeypatch):
    import tqdm.auto

    from spurbench import progress

    before = tqdm.auto.tqdm
    with open(tmp_path / "log", "w") as log, progress.plain_progress_in_logs(log) as plain:
        assert plain  # a file is not a terminal
        bar = tqdm.auto.tqdm  # what every spurbench bar is made from (`from tqdm.auto import tqdm`)
        monkeypatch.setattr(progress, "INTERVAL_S", 0.0)
        for _ in bar(range(2), desc="classes", file=log, disable=None):  # disable=None: "only on a terminal"
            with bar(total=3, desc="fine-tune", unit="it", file=log, position=1, leave=False) as inner:
                inner.update(3)
        for _ in bar(range(5), desc="switched off", file=log, disable=True):
            pass
    assert tqdm.auto.tqdm is before  # only while the command runs
    text = (tmp_path / "log").read_text()
    assert "\r" not in text and "\x1b" not in text
    lines = text.splitlines()
    assert lines[0].startswith("classes:   0% 0/2") and lines[-1].startswith("classes: 100% 2/2")
    assert any(line.startswith("fine-tune: 100% 3/3") for line in lines)
    assert "switched off" not in text
    # a bar over before INTERVAL_S prints nothing (a failing command's one-line error stays alone)
    monkeypatch.setattr(progress, "INTERVAL_S", 3600.0)
    with open(tmp_path / "quick", "w") as log, progress.plain_progress_in_logs(log):
        for _ in tqdm.auto.tqdm(range(3), desc="quick", file=log, disable=None):
            pass
    assert (tmp_path / "quick").read_text() == ""


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_progress_interval_that_is_not_seconds_is_a_one_line_error(value, monkeypatch, capsys):
    monkeypatch.setenv("SPURBENCH_PROGRESS_INTERVAL", value)
    assert cli.main(["leaderboard", "--leaderboard", "absent-board.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "$SPURBENCH_PROGRESS_INTERVAL=" in err and "seconds >= 0" in err


def test_progress_interval_from_the_environment(tmp_path, monkeypatch):
    from spurbench import progress

    monkeypatch.setenv("SPURBENCH_PROGRESS_INTERVAL", "0")
    with open(tmp_path / "log", "w") as log, progress.plain_progress_in_logs(log):
        assert progress.INTERVAL_S == 0.0
        for _ in progress.PlainProgress(range(2), desc="short", file=log):
            pass
    assert progress.INTERVAL_S == 30.0  # restored after the command
    assert (tmp_path / "log").read_text().splitlines()[-1].startswith("short: 100% 2/2")


def test_progress_on_a_terminal_stays_tqdms_own():
    import tqdm.auto

    from spurbench import progress

    class Terminal:
        def isatty(self) -> bool:
            return True

    before = tqdm.auto.tqdm
    with progress.plain_progress_in_logs(Terminal()) as plain:
        assert not plain and tqdm.auto.tqdm is before


# --- cards and prompts (issue 25 point 6) -------------------------------------------------------------------------


def test_d3s_prompts_take_the_article_their_class_name_needs():
    from spurbench.generate.recipe import load_recipe

    _, r = load_recipe("d3s_smoke")
    assert r.prompt_for(285, "snow").startswith("a photo of an Egyptian cat, ")
    assert r.prompt_for(0, "snow").startswith("a photo of a tench, ")


@pytest.mark.parametrize(
    ("inputs", "licence", "note"),
    [
        (
            {"base_model": "Apache-2.0 (tiny)", "references": "scikit-learn sample images, CC BY 2.0: flower.jpg"},
            "cc-by-2.0",
            "derived from the licences of the inputs above: the strictest of them, that of references",
        ),
        ({"a": "CC0 1.0", "b": "public domain (NASA)"}, "cc0-1.0", "derived"),
        ({"a": "Apache-2.0", "b": "ImageNet terms of access, research only"}, "other", "input `b`"),
        ({"a": "CC BY 2.0", "b": "CC BY 4.0"}, "other", "cc-by-2.0 and cc-by-4.0"),
        ({"a": "CC BY-NC 4.0"}, "other", "input `a`"),
    ],
)
def test_a_sets_licence_is_derived_from_its_inputs_only_where_sound(inputs, licence, note):
    from spurbench.dataset import card_license

    got = card_license("other", inputs)
    assert got["license"] == licence and note in got["license_note"]
    assert card_license("mit", inputs) == {"license": "mit", "license_note": "mit, as the recipe states."}


def test_a_card_tells_a_hub_user_how_to_load_it_what_its_columns_mean_and_warns_on_smoke_sets(tmp_path):
    import numpy as np

    from spurbench.dataset import DatasetCard, read_card, write_dataset

    row = {
        "image": np.zeros((8, 8, 3), np.uint8),
        "label": 309,
        "class_name": "bee",
        "spurious_feature": "flower",
        "component": -1,
        "source": "generated",
        "builder": "sfsl",
        "prompt": "a photo of a sks flower",
        "seed": 1,
    }
    base = {"base_model": "spurbench.tiny_sd(prediction_type=epsilon, seed=0, image_size=32)"}
    for provenance, smoke in ((base, True), ({"base_model": "org/sd"}, False)):
        out = write_dataset(tmp_path / str(smoke), {"test": [row]}, DatasetCard("x", provenance=provenance))
        text = (out / "README.md").read_text()
        assert ("**Smoke set: not for measuring classifiers.**" in text) is smoke
        assert 'datasets.load_dataset("<this folder, or its Hub id>", split="test")' in text
        assert "| `spurious_feature` | Value (string) | what in the image makes classifiers see k" in text
        assert "| `label` | ClassLabel |" in text and "## Citation" in text and "CITATION.cff" in text
        # read back and written again (as `spurbench verify` rewrites a set): the added prose appears once
        again = write_dataset(tmp_path / f"{smoke}-again", {"test": [row]}, read_card(out))
        text = (again / "README.md").read_text()
        assert text.count("## Using this dataset") == 1 and text.count("Smoke set: not for") == int(smoke)


@pytest.mark.slow  # three real classifiers on 17 photos (~40 s on 2 cores)
def test_the_sample_photos_fool_the_offline_panel_on_some_photos_and_not_others(tmp_path, capsys):
    import json

    assert cli.main(["import", "sample-photos", "--out", str(tmp_path / "photos")]) == 0
    card = (tmp_path / "photos" / "README.md").read_text()
    assert "license: cc-by-2.0" in card and "It cannot rank models" in card
    board = tmp_path / "lb" / "leaderboard.json"
    argv = ["eval", "--panel", "offline", "--dataset", str(tmp_path / "photos"), "--leaderboard", str(board)]
    assert cli.main([*argv, "--batch-size", "4"]) == 0
    entries = json.loads(board.read_text())["entries"]
    rates = [e["metrics"]["spurious_rate_micro"] for e in entries]
    assert len(rates) == 3 and all(0 < r < 1 for r in rates) and len(set(rates)) == 3, rates
