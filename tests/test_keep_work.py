"""No command deletes what it did not write, and people's work survives: every command that writes a dataset folder
refuses a foreign --out (and ., the home folder, a folder holding its input) with one line; an empty dataset is one
clear error; a killed `spurbench verify` resumes to the same dataset as an uninterrupted run; a decided review item
is captioned as decided."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from spurbench import cli
from spurbench.dataset import DatasetCard, write_dataset
from spurbench.errors import SpurbenchError


def _rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        dict(
            image=rng.integers(0, 256, (48, 48, 3), dtype=np.uint8),
            label=285,
            class_name="Egyptian cat",
            spurious_feature="x",
            component=-1,
            source="generated",
            builder="test",
            prompt="p",
            seed=i,
        )
        for i in range(n)
    ]


def _foreign(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "chapter1.tex").write_text("\\chapter{One}\n")
    return folder


def _refused(capsys, argv: list[str], needle: str) -> None:
    assert cli.main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, (argv, err)


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A stand-in home folder (Path.home() reads $HOME), so a guard that failed could never write into the real one."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def test_build_refuses_a_foreign_out_the_working_directory_home_and_the_recipe_folder(
    tmp_path, monkeypatch, capsys, home
):
    monkeypatch.chdir(tmp_path)
    thesis = _foreign(tmp_path / "thesis")
    _refused(
        capsys,
        ["build", "--recipe", "ddb_smoke", "--out", str(thesis)],
        "holds chapter1.tex, which spurbench did not write",
    )
    _refused(capsys, ["build", "--recipe", "ddb_smoke", "--out", "."], "is the working directory")
    _refused(capsys, ["build", "--recipe", "ddb_smoke", "--out", "~"], "is your home folder")
    _refused(capsys, ["build", "--recipe", "ddb_smoke", "--out", "/"], "or a folder above it")
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    from spurbench.resources import resolve

    (recipes / "r.yaml").write_text(resolve("recipe", "ddb_smoke").read_text())
    _refused(capsys, ["build", "--recipe", str(recipes / "r.yaml"), "--out", str(tmp_path)], "is the working directory")
    _refused(
        capsys,
        ["build", "--recipe", "recipes/r.yaml", "--out", str(tmp_path / "recipes")],
        "holds the input 'recipes/r.yaml'",
    )
    assert (thesis / "chapter1.tex").read_text() == "\\chapter{One}\n" and sorted(p.name for p in thesis.iterdir()) == [
        "chapter1.tex"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "home",
        "recipes",
        "thesis",
    ]  # no work dir, no temporary folder


def test_imports_refuse_a_foreign_out_and_a_folder_holding_their_input(tmp_path, capsys, home):
    from test_waterbirds import make_waterbirds_tree

    wb = make_waterbirds_tree(tmp_path / "wb" / "waterbird_complete95_forest2water2")
    thesis = _foreign(tmp_path / "thesis")
    _refused(
        capsys,
        ["import", "waterbirds", str(wb), "--out", str(thesis)],
        "holds chapter1.tex, which spurbench did not write",
    )
    _refused(capsys, ["import", "waterbirds", str(wb), "--out", str(tmp_path / "wb")], "holds the input")
    _refused(capsys, ["import", "waterbirds", str(wb), "--out", str(wb)], "holds the input")
    _refused(capsys, ["import", "waterbirds", str(wb), "--out", str(home)], "is your home folder")
    release = tmp_path / "si" / "spurious_imagenet"
    (release / "images").mkdir(parents=True)
    _refused(
        capsys,
        ["import", "spurious-imagenet", str(release), "--out", str(thesis)],
        "holds chapter1.tex, which spurbench did not write",
    )
    _refused(capsys, ["import", "spurious-imagenet", str(release), "--out", str(tmp_path / "si")], "holds the input")
    assert (thesis / "chapter1.tex").is_file() and len(list(thesis.iterdir())) == 1
    # a dataset folder spurbench wrote is replaced, as before
    out = tmp_path / "ds"
    assert cli.main(["import", "waterbirds", str(wb), "--out", str(out)]) == 0
    assert cli.main(["import", "waterbirds", str(wb), "--out", str(out)]) == 0


def test_verify_refuses_a_foreign_out_and_may_rewrite_the_dataset_in_place(tmp_path, capsys, monkeypatch, home):
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    ds = write_dataset(tmp_path / "sets" / "ds", {"test": _rows(3)}, DatasetCard(pretty_name="guard"))
    thesis = _foreign(tmp_path / "thesis")
    capsys.readouterr()  # the set-up's own progress bars
    _refused(
        capsys,
        ["verify", "--dataset", str(ds), "--detector", "tiny", "--out", str(thesis)],
        "which spurbench did not write",
    )
    _refused(
        capsys,
        ["verify", "--dataset", str(ds), "--detector", "tiny", "--out", str(tmp_path / "sets")],
        "holds the input",
    )
    decisions = ds / "decisions.csv"  # saved into the dataset folder: rewriting it in place would delete the file
    decisions.write_text("index,split,decision\n0,test,keep\n")
    _refused(
        capsys,
        ["verify", "--dataset", str(ds), "--decisions", str(decisions), "--out", str(ds)],
        "decisions.csv'; writing a dataset replaces",
    )
    assert decisions.is_file() and (thesis / "chapter1.tex").is_file()
    decisions.unlink()
    assert cli.main(["verify", "--dataset", str(ds), "--detector", "tiny", "--out", str(ds)]) == 0  # in place: allowed
    assert not list((tmp_path / "sets").glob(".*"))  # the resume file is gone once the dataset is written


def test_write_dataset_never_replaces_a_foreign_folder_and_refuses_an_empty_set(tmp_path):
    thesis = _foreign(tmp_path / "thesis")
    with pytest.raises(SpurbenchError, match="holds chapter1.tex"):
        write_dataset(thesis, {"test": _rows(1)}, DatasetCard(pretty_name="x"))
    assert (thesis / "chapter1.tex").is_file()
    (tmp_path / "nested" / "data").mkdir(parents=True)
    (tmp_path / "nested" / "data" / "notes.txt").write_text("mine")
    with pytest.raises(SpurbenchError, match="already holds data/, which spurbench did not write"):
        write_dataset(tmp_path / "nested", {"test": _rows(1)}, DatasetCard(pretty_name="x"))
    assert (tmp_path / "nested" / "data" / "notes.txt").read_text() == "mine"
    # a set whose only split is empty: one clear error, no unreadable folder
    with pytest.raises(SpurbenchError, match="split\\(s\\) test have no rows"):
        write_dataset(tmp_path / "empty", {"test": iter([])}, DatasetCard(pretty_name="x"))
    assert not (tmp_path / "empty").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    # an empty split next to others is left out of the card, so the folder loads
    import datasets

    out = write_dataset(tmp_path / "some", {"test": _rows(2), "pruned": []}, DatasetCard(pretty_name="some-empty"))
    assert list(datasets.load_dataset(str(out), cache_dir=str(tmp_path / "hf"))) == ["test"]


def test_a_decided_image_neither_failed_nor_borderline_is_captioned_decided():
    from spurbench.evaluate.review import ReviewItem, _figure

    item = dict(
        split="test",
        index=3,
        label=285,
        class_name="Egyptian cat",
        score=0.01,
        present=False,
        boxes=[],
        width=8,
        height=8,
    )
    decided = _figure(ReviewItem(**item, failed=False, borderline=False, reviewed="keep"), 0.5)
    assert 'class="rv decided"' in decided and "· decided<br>" in decided and "borderline" not in decided
    assert 'class="rv borderline"' in _figure(ReviewItem(**item, failed=False, borderline=True, reviewed=""), 0.5)
    assert 'class="rv failed"' in _figure(ReviewItem(**item, failed=True, borderline=False, reviewed="keep"), 0.5)


# ---------------------------------------------------------------------------------------------
# a killed `spurbench verify` resumes


def _env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SPURBENCH_CACHE": str(tmp_path / "cache"),
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }


def _verify_cmd(ds: Path, out: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spurbench",
        "verify",
        "--dataset",
        str(ds),
        "--detector",
        "tiny",
        "--batch-size",
        "1",
        "--out",
        out,
    ]


def _data(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))}


def _card_without_date(folder: Path) -> str:
    return "\n".join(
        line for line in (folder / "README.md").read_text().splitlines() if not line.strip().startswith("date:")
    )


@pytest.mark.slow
def test_killed_verify_resumes_to_the_uninterrupted_dataset(tmp_path):
    import json

    ds = write_dataset(tmp_path / "ds", {"test": _rows(160)}, DatasetCard(pretty_name="resume"))
    env = _env(tmp_path)
    whole = subprocess.run(_verify_cmd(ds, "whole"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-3000:]

    resume = tmp_path / ".killed.detections.jsonl"
    # A run that finished between the last look and the stop has nothing to resume: start it again (it rewrites
    # its own --out) rather than skip, so the test always checks a resume; three such misses are a failure.
    for _attempt in range(3):
        proc = subprocess.Popen(
            _verify_cmd(ds, "killed"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 300
        while not (resume.is_file() and len(resume.read_text().splitlines()) > 1):
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            assert time.monotonic() < deadline, "no detection was cached in time"
            time.sleep(0.01)
        # stop the run, then read what it had done from disk, then kill it: no assumption about how far it got
        os.killpg(proc.pid, signal.SIGSTOP)
        if proc.poll() is None:
            break
        proc.stderr.close()
    else:
        raise AssertionError("the verify run finished before it could be stopped, three times")
    saved = resume.read_text()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    assert resume.read_text() == saved  # the cache as it stood when the run was stopped

    again = subprocess.run(
        _verify_cmd(ds, "killed"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert _data(tmp_path / "killed") == _data(tmp_path / "whole")
    assert _card_without_date(tmp_path / "killed") == _card_without_date(tmp_path / "whole").replace(
        "--out whole", "--out killed"
    )
    assert not resume.exists()

    # the re-run read what the killed run had cached: an entry marked by hand shows up in a run resumed from it
    header, first, *rest = saved.splitlines()
    entry = json.loads(first)
    entry["score"] = 0.987654
    (tmp_path / ".marked.detections.jsonl").write_text("\n".join([header, json.dumps(entry), *rest]) + "\n")
    marked = subprocess.run(
        _verify_cmd(ds, "marked"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert marked.returncode == 0, marked.stderr[-3000:]
    import pyarrow.parquet as pq

    scores = [
        s
        for f in sorted((tmp_path / "marked" / "data").glob("*.parquet"))
        for s in pq.read_table(f).column("object_score").to_pylist()
    ]
    assert sum(abs(s - 0.987654) < 1e-6 for s in scores) == 1


@pytest.mark.slow
def test_rebuild_without_a_verify_stage_keeps_the_decisions_for_verify(tmp_path):
    """A set verified in place by `spurbench verify` and then rebuilt from a recipe without `verify:`: the new export
    has no `reviewed` column, so the carried decisions are written as a decisions.csv of the new rows, not lost."""
    import csv

    from test_build import _build_cmd, _run, _tiny_dir

    cwd = _tiny_dir(tmp_path / "b")
    env = {"SPURBENCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    assert (proc := _run(_build_cmd("tiny.yaml"), cwd, **env)).returncode == 0, proc.stderr[-3000:]
    (cwd / "d.csv").write_text("index,split,decision\n1,test,drop\n0,reference,keep\n")
    verify = [
        sys.executable,
        "-m",
        "spurbench",
        "verify",
        "--dataset",
        "data",
        "--detector",
        "tiny",
        "--decisions",
        "d.csv",
        "--out",
        "data",
    ]
    assert (proc := _run(verify, cwd, **env)).returncode == 0, proc.stderr[-3000:]
    proc = _run(_build_cmd("tiny.yaml"), cwd, **env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 decision(s) are in" in proc.stderr and "0 could not be carried" in proc.stderr
    with open(cwd / "data.work" / "decisions.csv", newline="") as fh:
        assert list(csv.DictReader(fh)) == [
            {"index": "1", "split": "test", "decision": "drop"},
            {"index": "0", "split": "reference", "decision": "keep"},
        ]
    # the command the log gives applies them
    assert (
        proc := _run([*verify[:-4], "--decisions", "data.work/decisions.csv", "--out", "data"], cwd, **env)
    ).returncode == 0, proc.stderr
    from spurbench.verify import decided_images

    assert sorted(decided_images(cwd / "data").values()) == ["drop", "keep"]


def test_paths_recorded_in_exports_are_never_absolute(tmp_path, monkeypatch):
    from spurbench.dataset import dataset_display_name, portable_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "smoke").mkdir(parents=True)
    assert portable_path(tmp_path / "data" / "smoke") == "data/smoke"  # under the working directory: relative
    assert portable_path("data/smoke") == "data/smoke" and portable_path("ddb_smoke") == "ddb_smoke"
    assert portable_path("/elsewhere/sets/ds") == "ds"  # elsewhere: the folder's name alone
    assert portable_path("../sets/ds") == "ds"
    assert dataset_display_name(str(tmp_path / "data" / "smoke")) == "data/smoke"
    assert dataset_display_name("/gone/folder/ds") == "ds"
    assert dataset_display_name("org/name") == "org/name"  # a Hub id as given


def test_a_placeholder_licence_is_refused_not_printed_into_the_card(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _refused(
        capsys,
        ["build", "--recipe", "d3s", "--out", "data/d3s"],
        "key 'licenses.backgrounds' is the placeholder 'state the licence of your background photos here'",
    )
    assert not (tmp_path / "data").exists()
