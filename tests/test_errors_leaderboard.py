"""`spurbench leaderboard`'s one-line errors: a missing board, flags that belong to another --format, bad
--groups, the Hub eval-results export's dataset id and --out. Each through the CLI in-process: exit status 2,
one stderr line, and the board file unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_leaderboard import record

from spurbench.cli import main


def _leaderboard_error(argv: list[str], capsys) -> str:
    assert main(["leaderboard", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("spurbench leaderboard: error: "), err
    return err


@pytest.fixture
def board(tmp_path) -> Path:
    path = tmp_path / "lb" / "leaderboard.json"
    record(path, "a", [1] * 12)
    return path


def test_a_missing_board_is_one_line(tmp_path, capsys):
    err = _leaderboard_error(["--leaderboard", str(tmp_path / "none.json")], capsys)
    assert "no leaderboard at '" in err and "create one with `spurbench eval --model NAME --dataset FOLDER" in err
    assert not (tmp_path / "none.json").exists()


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--dataset", "data/toy"], "--dataset is only used by --format html; drop it or add --format html"),
        (["--dataset-id", "org/toy"], "--dataset-id is only used by --format eval-results"),
        (["--groups", "all"], "--groups is only used by --format eval-results"),
        (["--format", "eval-results"], "--format eval-results writes one folder per model: add --out DIR"),
        (["--format", "eval-results", "--out", "x", "--groups", "one"], "--groups 'one': give canonical, all, or"),
        (["--format", "eval-results", "--out", "x", "--dataset-id", "toy"], "name the dataset by its Hub id (org/"),
        (["--format", "eval-results", "--out", "x", "--dataset-id", "org/toy", "--groups", "7"], "--groups 7: the"),
        (["--format", "html", "--dataset", "no/such/folder", "--out", "site"], "--dataset 'no/such/folder' is not a"),
    ],
)
def test_a_leaderboard_flag_mistake_is_one_line(board, extra, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = board.read_bytes()
    assert needle in _leaderboard_error(["--leaderboard", str(board), *extra], capsys)
    assert board.read_bytes() == before
    assert not (tmp_path / "x").exists() and not (tmp_path / "site").exists()


def test_eval_results_out_that_is_a_file(board, tmp_path, capsys):
    out = tmp_path / "file.txt"
    out.write_text("mine")
    err = _leaderboard_error(
        ["--leaderboard", str(board), "--format", "eval-results", "--dataset-id", "org/toy", "--out", str(out)], capsys
    )
    assert f"--out '{out}' is a file, not a folder; give a folder" in err
    assert out.read_text() == "mine"


def test_eval_results_with_nothing_canonical_to_export(tmp_path):
    from test_leaderboard import DATASET, make_entry, write_csv

    from spurbench.errors import SpurbenchError
    from spurbench.evaluate import leaderboard as lb
    from spurbench.evaluate.hub_results import write_eval_results

    path = tmp_path / "lb" / "leaderboard.json"
    rel = write_csv(path.parent, "a", np.ones(12, bool))
    lb.record_entry(path, DATASET, {**make_entry("a", 0.5, None, rel), "preprocessing": "spurious-imagenet"})
    board = lb.load_leaderboard(path)
    with pytest.raises(SpurbenchError, match=r"no canonical group to export \(every entry was scored on other rows"):
        write_eval_results(board, tmp_path / "out", "org/toy")
    assert not (tmp_path / "out").exists()
