"""The schema-2 store: a schema-1 board migrated losslessly, the export, a process killed in the middle of
a record. (Several processes recording at once: test_leaderboard.py::test_parallel_processes_lose_no_entry.)
Predictions CSVs are hand-made files in the format `spurbench eval` writes, as in test_leaderboard.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
from test_leaderboard import DATASET, assert_consistency_equal, independent_consistency, make_entry, write_csv

from spurbench.evaluate import leaderboard as lb


def _fooled(m: int, seed: int) -> np.ndarray:
    f = np.random.default_rng(seed).random((12, m)) < 0.5
    f[0], f[1] = True, False
    return f


def _schema1_board(tmp_path, fooled, names):
    """A schema-1 board: leaderboard.json holding everything, its predictions CSVs, no store. Written in
    the one-file layout schema 1 used (the figures come from recording with the store elsewhere)."""
    src = tmp_path / "src" / "leaderboard.json"
    for j, n in enumerate(names):
        rel = write_csv(src.parent, n, fooled[:, j])
        lb.record_entry(src, DATASET, make_entry(n, 0.1 * (j + 1), 0.5 + 0.1 * j, rel))
    lb.record_failure(src, DATASET, {"model": "broken", "reason": "no weights", "date": "2025-01-01T00:00:00Z"})
    board = {**lb.load_leaderboard(src), "schema_version": 1}
    old = tmp_path / "old" / "leaderboard.json"
    shutil.copytree(src.parent / "predictions", old.parent / "predictions")
    old.write_text(lb.dumps_board(board))
    return old, board


def test_schema1_board_migrated_losslessly(tmp_path):
    names = ["a", "b", "c"]
    fooled = _fooled(4, seed=1)
    path, v1 = _schema1_board(tmp_path, fooled, names)
    assert lb.load_leaderboard(path) == v1  # read as it is, nothing written
    assert not lb.store_path(path).exists()
    # the first write migrates: a failure recorded changes nothing else, so every figure can be compared
    lb.record_failure(path, DATASET, {"model": "other", "reason": "out of memory", "date": "2025-01-02T00:00:00Z"})
    after = lb.load_leaderboard(path)
    assert (lb.store_path(path) / "index.json").is_file() and after["schema_version"] == 2
    assert after["entries"] == v1["entries"]  # every entry, every figure, in order
    assert after["dataset"] == v1["dataset"] and after["consistency"] == v1["consistency"]
    assert after["failures"] == v1["failures"] + [
        {
            "model": "other",
            "reason": "out of memory",
            "date": "2025-01-02T00:00:00Z",
            "fingerprint": DATASET["fingerprint"],
        }
    ]
    assert {k for k in after if k != "schema_version"} == {k for k in v1 if k != "schema_version"}
    assert json.loads(path.read_text()) == after  # the export: the same board
    # and recording goes on from the migrated store: a fourth model, consistency over all four
    rel = write_csv(path.parent, "d", fooled[:, 3])
    board = lb.record_entry(path, DATASET, make_entry("d", 0.4, 0.9, rel))
    assert [e["model"] for e in board["entries"]] == names + ["d"] and board["entries"][:3] == v1["entries"]
    assert_consistency_equal(board["consistency"], independent_consistency(fooled, names + ["d"]))


def test_big_schema1_board_kept_beside_the_store_and_export_on_request(tmp_path, monkeypatch):
    monkeypatch.setattr(lb, "EXPORT_MAX_ENTRIES", 2)
    path, v1 = _schema1_board(tmp_path, _fooled(3, seed=2), ["a", "b", "c"])
    before = path.read_bytes()
    lb.record_failure(path, DATASET, {"model": "other", "reason": "x"})
    # above EXPORT_MAX_ENTRIES no export is kept current: the old file is kept, renamed, never left looking current
    assert not path.exists() and (path.parent / "leaderboard.schema1.json").read_bytes() == before
    assert lb.load_leaderboard(path)["entries"] == v1["entries"]
    assert lb.export(path) == path and json.loads(path.read_text()) == lb.load_leaderboard(path)
    out = subprocess.run(
        [sys.executable, "-m", "spurbench", "leaderboard", "--leaderboard", str(path.parent), "--format", "md"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0 and "| a |" in out.stdout.replace("`", "")


# a process that dies (SIGKILL, as an OOM kill or a pulled plug) after writing its entry file, hits and the
# consistency state, just before the index is replaced: the record's last step
KILLED = """
import json, os, signal, sys
from spurbench.evaluate import leaderboard as lb
path, entry_file = sys.argv[1], sys.argv[2]
dataset, entry = json.load(open(entry_file))
lb._commit = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
lb.record_entry(path, dataset, entry)
"""


def test_process_killed_mid_record_leaves_a_readable_board_and_a_redoable_record(tmp_path):
    path = tmp_path / "leaderboard.json"
    fooled = _fooled(3, seed=3)
    for j, n in enumerate(["a", "b"]):
        lb.record_entry(path, DATASET, make_entry(n, 0.5, None, write_csv(tmp_path, n, fooled[:, j])))
    before = lb.load_leaderboard(path)
    export_before = path.read_bytes()
    entry_file = tmp_path / "c.entry.json"
    entry_file.write_text(json.dumps([DATASET, make_entry("c", 0.7, None, write_csv(tmp_path, "c", fooled[:, 2]))]))
    r = subprocess.run([sys.executable, "-c", KILLED, str(path), str(entry_file)], env={**os.environ}, timeout=120)
    assert r.returncode == -9  # killed, holding the lock, entry file and hit store written
    assert lb.load_leaderboard(path) == before and path.read_bytes() == export_before
    # redo: the lock was released with the process, and the record completes
    board = lb.record_entry(path, DATASET, make_entry("c", 0.7, None, "predictions/c.csv"))
    assert [e["model"] for e in board["entries"]] == ["a", "b", "c"]
    assert_consistency_equal(board["consistency"], independent_consistency(fooled, ["a", "b", "c"]))
    assert lb.load_leaderboard(path) == board == json.loads(path.read_text())


def test_corrupt_store_is_refused_and_left_untouched(tmp_path):
    import pytest

    from spurbench.errors import SpurbenchError

    path = tmp_path / "leaderboard.json"
    lb.record_entry(path, DATASET, make_entry("a", 0.5, None, write_csv(tmp_path, "a", _fooled(1, seed=4)[:, 0])))
    index = lb.store_path(path) / "index.json"
    good = index.read_text()
    for bad, why in (
        ("{not json", "not valid JSON"),
        (good.replace('"schema_version": 2', '"schema_version": 7'), "schema-2"),
        (good.replace('"file": "entries/', '"file": "entries/gone-'), "entry files that do not exist"),
        (good.replace('"file": "entries/', '"file": "gone/'), "not in its entries/"),
    ):
        index.write_text(bad)
        with pytest.raises(SpurbenchError, match=why) as err:
            lb.load_leaderboard(path)
        assert "left untouched" in str(err.value)
        with pytest.raises(SpurbenchError):
            lb.record_entry(
                path, DATASET, make_entry("b", 0.5, None, write_csv(tmp_path, "b", _fooled(1, seed=5)[:, 0]))
            )
        assert index.read_text() == bad
