"""The eval board's store against hostile boards and other people's folders (issue 21 §1, §2, §4, §5 for the store;
issue 23 §3 for one board per folder): paths read from an index or an entry stay inside the board's folder, names
become safe file names, what a card copies into a board is bounded, a user's same-named files are never replaced,
a refusal writes nothing, a killed record leaves a consistent board, and the board/index reader returns a valid
board or one SpurbenchError for any JSON (a hypothesis property test).

Predictions CSVs are hand-made files in the format `spurbench eval` writes, as in test_leaderboard.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_leaderboard import DATASET, OTHER_DATASET, make_entry, write_csv

from spurbench.errors import SpurbenchError
from spurbench.evaluate import hitstore
from spurbench.evaluate import leaderboard as lb
from spurbench.files import RECORD_NAME, temporary_name

FOOLED = np.array([True, False, True, True, False, False, True, False, True, False, True, False])


def _csv_text(fooled=FOOLED) -> str:
    """A predictions CSV's text (the eval format), made through the same helper the other store tests use."""
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        rel = write_csv(Path(d), "x", np.asarray(fooled, bool))
        return (Path(d) / rel).read_text()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` with its bytes (what "left untouched" is checked against)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _board(tmp_path: Path, models=("a", "b")) -> Path:
    path = tmp_path / "board" / "leaderboard.json"
    for j, m in enumerate(models):
        lb.record_entry(path, DATASET, make_entry(m, 0.1 * (j + 1)), predictions=_csv_text(np.roll(FOOLED, j)))
    return path


def _outside(tmp_path: Path) -> Path:
    """A user's project beside the board, which nothing read from the board may reach."""
    proj = tmp_path / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "package.json").write_text('{"name": "mine"}')
    (proj / "data.csv").write_text("index,label\n")
    return proj


def _assert_consistent(path: Path) -> None:
    """Every entry of the committed index exists, belongs to its model and names its own CSV; no file of the
    store's kinds is left that the index does not name; no temporary is left."""
    folder = path.parent
    index = json.loads((folder / "store" / "index.json").read_text())
    named = set()
    for row in index["entries"]:
        entry = json.loads((folder / "store" / row["file"]).read_text())
        assert entry["model"] == row["model"] and entry["predictions"] == row["predictions"]
        assert (folder / row["predictions"]).is_file()
        named |= {f"store/{row['file']}", row["predictions"], hitstore.hits_relpath(row["predictions"])}
    record = json.loads((folder / RECORD_NAME).read_text())["files"]
    for rel in _snapshot(folder):
        if rel.startswith(("store/entries/", "predictions/", "hits/")) and rel != hitstore.STATE_FILE:
            assert rel in named, f"leftover {rel}"
        assert ".spurbench-tmp-" not in rel and ".tmp-" not in rel and ".bak-" not in rel, rel
    for rel in named:
        if (folder / rel).is_file():
            assert rel in record  # every file of the board is spurbench's, by its record


# ------------------------------------------------------------------------------------------- §2 paths stay inside


@pytest.mark.parametrize(
    "field, value",
    [
        ("file", "../../proj/package.json"),
        ("file", "entries/../../../proj/package.json"),
        ("file", "/etc/hostname"),
        ("predictions", "../../proj/data.csv"),
        ("predictions", "/tmp/x.csv"),
        ("predictions", "~/x.csv"),
    ],
)
def test_index_path_out_of_the_store_is_refused_and_nothing_outside_changes(tmp_path, field, value):
    path = _board(tmp_path)
    proj = _outside(tmp_path)
    ipath = lb.store_path(path) / "index.json"
    index = json.loads(ipath.read_text())
    index["entries"][0][field] = value
    ipath.write_text(json.dumps(index))
    before, outside = _snapshot(path.parent), _snapshot(proj)
    with pytest.raises(SpurbenchError, match="leads out of|not in its entries/"):
        lb.load_leaderboard(path)
    with pytest.raises(SpurbenchError, match="leads out of|not in its entries/"):  # the next eval records nothing
        lb.record_entry(path, DATASET, make_entry("c", 0.5), predictions=_csv_text())
    assert _snapshot(proj) == outside and _snapshot(path.parent) == before


def test_entry_file_linked_out_of_the_store_is_refused(tmp_path):
    path = _board(tmp_path)
    proj = _outside(tmp_path)
    index = json.loads((lb.store_path(path) / "index.json").read_text())
    efile = lb.store_path(path) / index["entries"][0]["file"]
    efile.unlink()
    efile.symlink_to(proj / "package.json")
    with pytest.raises(SpurbenchError, match="through a symbolic link"):
        lb.load_leaderboard(path)
    assert (proj / "package.json").read_text() == '{"name": "mine"}'


def test_entry_naming_a_predictions_path_outside_is_refused(tmp_path):
    path = _board(tmp_path)
    index = json.loads((lb.store_path(path) / "index.json").read_text())
    efile = lb.store_path(path) / index["entries"][1]["file"]
    entry = json.loads(efile.read_text())
    efile.write_text(json.dumps({**entry, "predictions": "../proj/data.csv"}))
    with pytest.raises(SpurbenchError, match="leads out of"):
        lb.load_leaderboard(path)


def test_schema1_board_naming_a_csv_outside_is_refused(tmp_path):
    path = tmp_path / "old" / "leaderboard.json"
    path.parent.mkdir()
    board = {**lb.empty_board(), "schema_version": 1, "dataset": DATASET}
    board["entries"] = [make_entry("a", 0.1, predictions="../proj/package.json")]
    path.write_text(json.dumps(board))
    proj = _outside(tmp_path)
    with pytest.raises(SpurbenchError, match="leads out of"):
        lb.record_entry(path, DATASET, make_entry("b", 0.5), predictions=_csv_text())
    assert not lb.store_path(path).exists() and (proj / "package.json").read_text() == '{"name": "mine"}'


@pytest.mark.parametrize("model", ["..", "../../evil", "/abs/name", "a\nb\x1b[31m", "x" * 400, ".hidden"])
def test_model_names_become_safe_file_names_inside_the_board(tmp_path, model):
    path = tmp_path / "board" / "leaderboard.json"
    board = lb.record_entry(path, DATASET, make_entry(model, 0.2), predictions=_csv_text())
    rel = board["entries"][0]["predictions"]
    csv = (path.parent / rel).resolve()
    assert csv.parent == (path.parent / "predictions").resolve() and len(csv.name) <= 140
    assert not csv.name.startswith(".")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["board"]  # nothing written beside the board
    assert lb.load_leaderboard(path)["entries"][0]["model"] == model


def test_existing_safe_names_keep_their_file_names():
    assert lb.predictions_relpath("resnet50.a1_in1k") == "predictions/resnet50.a1_in1k.csv"
    assert lb.slugify("ViT-B") != lb.slugify("vit-b")  # distinct on a case-insensitive file system too


# ------------------------------------------------------------------------------------------- §3 bounded inputs


def _alias_bomb():
    """What a ~500-byte card of YAML aliases parses to: shared lists that expand 10^7-fold when written out."""
    level = ["x" * 100] * 10
    for _ in range(6):
        level = [level] * 10
    return level


def test_card_that_expands_hugely_is_not_copied_into_the_board(tmp_path):
    path = tmp_path / "board" / "leaderboard.json"
    dataset = {**DATASET, "provenance": {"recipe": _alias_bomb()}}
    with pytest.raises(SpurbenchError, match="expands to more than"):
        lb.record_entry(path, dataset, make_entry("a", 0.2), predictions=_csv_text())
    with pytest.raises(SpurbenchError, match="expands to more than"):
        lb.record_failure(path, dataset, {"model": "a", "reason": "x"})
    assert not path.parent.exists()


def test_oversized_index_is_refused_before_it_is_parsed(tmp_path, monkeypatch):
    path = _board(tmp_path)
    monkeypatch.setattr(lb, "MAX_BOARD_BYTES", 1000)
    with pytest.raises(SpurbenchError, match="over the 0 MiB a leaderboard file may hold"):
        lb.load_leaderboard(path)


def test_oversized_entry_file_is_refused(tmp_path, monkeypatch):
    path = _board(tmp_path)
    monkeypatch.setattr(lb, "MAX_ENTRY_BYTES", 100)
    with pytest.raises(SpurbenchError, match="a leaderboard file may hold"):
        lb.load_leaderboard(path)


def test_deeply_nested_index_is_one_line(tmp_path):
    path = _board(tmp_path)
    ipath = lb.store_path(path) / "index.json"
    ipath.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(SpurbenchError, match="nests too deeply"):
        lb.load_leaderboard(path)


# ------------------------------------------------------------------------------------------- §1 a user's folder


def test_users_same_named_predictions_file_is_never_overwritten(tmp_path):
    folder = tmp_path / "mine"
    (folder / "predictions").mkdir(parents=True)
    (folder / "predictions" / "a.csv").write_text("my own table\n")
    (folder / "notes.txt").write_text("notes")
    path = folder / "leaderboard.json"
    board = lb.record_entry(path, DATASET, make_entry("a", 0.2), predictions=_csv_text())
    assert (folder / "predictions" / "a.csv").read_text() == "my own table\n"
    assert (folder / "notes.txt").read_text() == "notes"
    assert board["entries"][0]["predictions"] != "predictions/a.csv"
    assert board["consistency"]["models"] == ["a"]  # scored from its own file, not the user's


def test_users_hit_store_file_is_refused_before_anything_is_written(tmp_path):
    folder = tmp_path / "mine"
    (folder / "hits").mkdir(parents=True)
    (folder / "hits" / "state.npz").write_bytes(b"my own arrays")
    path = folder / "leaderboard.json"
    with pytest.raises(SpurbenchError, match="state.npz' was not written by spurbench"):
        lb.record_entry(path, DATASET, make_entry("a", 0.2), predictions=_csv_text())
    assert (folder / "hits" / "state.npz").read_bytes() == b"my own arrays"
    assert not (folder / "predictions").exists() and not list((folder / "store").glob("entries/*"))
    assert not (folder / "store" / "index.json").exists()


def test_users_file_named_like_the_export_is_never_overwritten(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "leaderboard.json").write_text('{"my": "own json"}')
    with pytest.raises(SpurbenchError, match="schema_version"):
        lb.record_entry(folder / "leaderboard.json", DATASET, make_entry("a", 0.2), predictions=_csv_text())
    assert (folder / "leaderboard.json").read_text() == '{"my": "own json"}'


def test_previous_version_store_is_taken_over_when_recognisable(tmp_path):
    path = _board(tmp_path)
    (path.parent / RECORD_NAME).unlink()  # a board the previous spurbench wrote: no record
    board = lb.record_entry(path, DATASET, make_entry("a", 0.9), predictions=_csv_text(~FOOLED))
    assert [e["model"] for e in board["entries"]] == ["a", "b"]
    _assert_consistent(path)


def test_previous_version_store_with_a_foreign_file_is_refused(tmp_path):
    path = _board(tmp_path)
    (path.parent / RECORD_NAME).unlink()
    (lb.store_path(path) / "notes.txt").write_text("mine")
    before = _snapshot(path.parent)
    with pytest.raises(SpurbenchError, match="holds 'notes.txt', which a spurbench store does not hold"):
        lb.record_entry(path, DATASET, make_entry("c", 0.5), predictions=_csv_text())
    assert _snapshot(path.parent) == before


# ------------------------------------------------------------------------------------------- §4 nothing half-done


def test_refused_record_writes_nothing(tmp_path):
    path = _board(tmp_path)
    before = _snapshot(path.parent)
    with pytest.raises(SpurbenchError, match="holds dataset"):
        lb.record_entry(path, OTHER_DATASET, make_entry("c", 0.5), predictions=_csv_text())
    with pytest.raises(SpurbenchError, match="holds dataset"):
        lb.record_failure(path, OTHER_DATASET, {"model": "c", "reason": "x"})
    assert _snapshot(path.parent) == before  # no orphan entry, hits/state.npz as it was, the record as it was


KILL_AT = """
import json, os, signal, sys
from spurbench.evaluate import leaderboard as lb
path, job, point = sys.argv[1], json.load(open(sys.argv[2])), sys.argv[3]
die = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
if point == "commit":  # every file written, the index not yet replaced
    lb._commit = die
elif point == "write":  # the CSV recorded in the folder's record, not yet on disk
    lb.atomic_write = die
elif point == "hits":  # CSV and entry on disk, the hit store being updated
    lb.hitstore.update = die
lb.record_entry(path, job["dataset"], job["entry"], predictions=job["csv"])
"""


@pytest.mark.parametrize("point", ["write", "hits", "commit"])
@pytest.mark.parametrize("model", ["a", "c"])  # a re-score of an entry, a new entry
def test_record_killed_at_a_chosen_point_leaves_a_consistent_board(tmp_path, point, model):
    path = _board(tmp_path)
    before = lb.load_leaderboard(path)
    csv_before = {e["model"]: (path.parent / e["predictions"]).read_bytes() for e in before["entries"]}
    job = tmp_path / "job.json"
    new_csv = _csv_text(~FOOLED)
    job.write_text(json.dumps({"dataset": DATASET, "entry": make_entry(model, 0.9), "csv": new_csv}))
    r = subprocess.run([sys.executable, "-c", KILL_AT, str(path), str(job), point], timeout=120)
    assert r.returncode == -9
    # the board is the one before: every entry paired with its own predictions, byte for byte
    after = lb.load_leaderboard(path)
    assert after == before
    assert {e["model"]: (path.parent / e["predictions"]).read_bytes() for e in after["entries"]} == csv_before
    # the next record finds the lock free, removes the killed run's files and completes
    board = lb.record_entry(path, DATASET, make_entry(model, 0.9), predictions=new_csv)
    assert (
        path.parent / next(e for e in board["entries"] if e["model"] == model)["predictions"]
    ).read_text() == new_csv
    _assert_consistent(path)


def test_leftover_temporaries_of_dead_processes_are_removed(tmp_path):
    path = _board(tmp_path)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    leftovers = []
    for folder in (path.parent, lb.store_path(path), path.parent / "predictions", lb.store_path(path) / "entries"):
        tmp = temporary_name(folder / "x.json")
        tmp = tmp.with_name(tmp.name.replace(f"-{os.getpid()}-", f"-{pid}-"))
        tmp.write_text("half")
        leftovers.append(tmp)
    lb.record_failure(path, DATASET, {"model": "z", "reason": "x"})
    assert not any(p.exists() for p in leftovers)
    _assert_consistent(path)


# ------------------------------------------------------------------------------------------- §5 one line


def test_store_that_is_a_file_is_one_line(tmp_path):
    folder = tmp_path / "b"
    folder.mkdir()
    (folder / "store").write_text("mine")
    with pytest.raises(SpurbenchError, match="is not a folder spurbench made"):
        lb.record_entry(folder / "leaderboard.json", DATASET, make_entry("a", 0.2), predictions=_csv_text())
    assert (folder / "store").read_text() == "mine"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; CI runs as a user")
def test_read_only_store_is_one_line_and_left_as_it_was(tmp_path):
    path = _board(tmp_path)
    before = _snapshot(path.parent)
    folders = [path.parent, *[p for p in path.parent.rglob("*") if p.is_dir()]]
    for f in folders:
        f.chmod(0o555)
    try:
        for call in (
            lambda: lb.record_entry(path, DATASET, make_entry("c", 0.5), predictions=_csv_text()),
            lambda: lb.export(path),
            lambda: lb.check_writable(path),
        ):
            with pytest.raises(SpurbenchError, match="cannot write the leaderboard in"):
                call()
    finally:
        for f in folders:
            f.chmod(0o755)
    assert _snapshot(path.parent) == before


def test_lock_held_elsewhere_is_one_line_for_export_too(tmp_path, monkeypatch):
    from filelock import FileLock

    path = _board(tmp_path)
    monkeypatch.setattr(lb, "LOCK_TIMEOUT_S", 0.05)
    held = FileLock(str(lb.store_path(path) / "lock"))
    code = "import time; from filelock import FileLock; l = FileLock({!r}); l.acquire(); print('held', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", code.format(held.lock_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        for call in (lambda: lb.export(path), lambda: lb.record_failure(path, DATASET, {"model": "z", "reason": "x"})):
            with pytest.raises(SpurbenchError, match="another process has held"):
                call()
    finally:
        proc.kill()
        proc.wait()


# ------------------------------------------------------------------------------------------- one board per folder


def test_second_board_name_in_the_same_folder_is_refused(tmp_path):
    a, b = tmp_path / "t" / "a.json", tmp_path / "t" / "b.json"
    lb.record_entry(a, DATASET, make_entry("m", 0.2), predictions=_csv_text())
    before = _snapshot(a.parent)
    for call in (
        lambda: lb.record_entry(b, DATASET, make_entry("m", 0.2), predictions=_csv_text()),
        lambda: lb.load_leaderboard(b),
        lambda: lb.check_writable(b),
    ):
        with pytest.raises(SpurbenchError, match=r"holds the leaderboard '.*a\.json', not '.*b\.json': one folder"):
            call()
    assert _snapshot(a.parent) == before and not b.exists()


# ------------------------------------------------------------------------------------------- the reader, fuzzed

_HOSTILE = st.sampled_from(
    [
        "../../proj/package.json",
        "/etc/hostname",
        "entries/../../proj/package.json",
        "entries/x.json",
        "predictions/a.csv",
        "~/.bashrc",
        "entries/\x00.json",
        "",
        ".",
        "entries/" + "x" * 300 + ".json",
    ]
)
_SCALAR = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20) | _HOSTILE
_JSON = st.recursive(
    _SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12) | _HOSTILE, inner, max_size=4),
    max_leaves=25,
)
_ROW = st.fixed_dictionaries(
    {"model": st.text(max_size=8) | st.integers(), "file": _HOSTILE | st.text(max_size=10)},
    optional={"predictions": _HOSTILE | st.none() | st.integers()},
)
_INDEX = st.fixed_dictionaries(
    {"schema_version": st.sampled_from([2, 2, 1, "2", None])},
    optional={
        "entries": st.lists(_ROW, max_size=3) | _JSON,
        "dataset": st.none() | st.fixed_dictionaries({"fingerprint": st.text(max_size=4)}) | _JSON,
        "failures": st.lists(_JSON, max_size=2) | _JSON,
        "consistency": _JSON,
        "board": st.sampled_from(["leaderboard.json", "other.json"]) | _JSON,
    },
)


@settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(index=_INDEX | _JSON, entry=_JSON, nesting=st.integers(0, 3000), where=st.sampled_from(["index", "schema1"]))
def test_board_reader_returns_a_board_or_one_error(tmp_path_factory, index, entry, nesting, where):
    """Any JSON (and deep nesting) in the index, an entry file or a schema-1 board: a valid board or one
    SpurbenchError, nothing else; no file outside the board's folder is read into it or changed."""
    root = tmp_path_factory.mktemp("fuzz")
    proj = _outside(root)
    path = root / "board" / "leaderboard.json"
    (path.parent / "store" / "entries").mkdir(parents=True)
    text = json.dumps(index)
    if nesting:
        text = "[" * nesting + text + "]" * nesting
    if where == "index":
        (path.parent / "store" / "index.json").write_text(text)
    else:
        path.write_text(text)
    (path.parent / "store" / "entries" / "x.json").write_text(json.dumps(entry))
    outside = _snapshot(proj)
    try:
        board = lb.load_leaderboard(path)
    except SpurbenchError as err:
        assert "\n" not in str(err).strip()
    else:
        assert isinstance(board["entries"], list)
        for e in board["entries"]:
            assert isinstance(e, dict) and isinstance(e["model"], str) and isinstance(e["metrics"], dict)
            if e.get("predictions") is not None:
                target = (path.parent / e["predictions"]).resolve()
                assert target.is_relative_to(path.parent.resolve())
        assert board.get("dataset") is None or isinstance(board["dataset"], dict)
        assert isinstance(board["failures"], list)
    assert _snapshot(proj) == outside


# ------------------------------------------------------------------------------------------- the folder's record


@pytest.mark.parametrize("name", ["../../proj/package.json", "/etc/hostname", "~/x"])
def test_record_naming_a_file_outside_is_refused(tmp_path, name):
    path = _board(tmp_path)
    proj = _outside(tmp_path)
    rpath = path.parent / RECORD_NAME
    record = json.loads(rpath.read_text())
    record["files"][name] = "0" * 64
    rpath.write_text(json.dumps(record))
    with pytest.raises(SpurbenchError, match="is not a record spurbench wrote"):
        lb.record_entry(path, DATASET, make_entry("c", 0.5), predictions=_csv_text())
    assert (proj / "package.json").read_text() == '{"name": "mine"}'


def test_record_listing_a_folder_linked_outside_is_refused(tmp_path):
    path = _board(tmp_path)
    proj = _outside(tmp_path)
    rpath = path.parent / RECORD_NAME
    record = json.loads(rpath.read_text())
    (path.parent / "linked").symlink_to(proj)
    record["files"]["linked/package.json"] = "0" * 64
    rpath.write_text(json.dumps(record))
    with pytest.raises(SpurbenchError, match="through a symbolic link"):
        lb.record_entry(path, DATASET, make_entry("c", 0.5), predictions=_csv_text())
    assert (proj / "package.json").read_text() == '{"name": "mine"}'


# ------------------------------------------------------------------------------------------- `spurbench eval`


def _lite0_args() -> list[str]:
    import importlib.metadata as md

    from spurbench.classifiers import load_panel

    w = load_panel("offline")[0].weights
    weights = str(md.distribution(w["package"]).locate_file(w["file"]))
    return ["--model", "tf_efficientnet_lite0", "--weights", weights, "--key-map", "positional", "--workers", "0"]


@pytest.mark.slow  # a real model scored once (seconds; minutes on a loaded 2-core machine)
def test_eval_second_board_name_in_a_folder_is_one_line_before_scoring(photo_dataset, tmp_path, capsys):
    from spurbench import cli

    data = ["--dataset", str(photo_dataset.path), "--limit", "2"]
    a, b = tmp_path / "t" / "a.json", tmp_path / "t" / "b.json"
    assert cli.main(["eval", *_lite0_args(), *data, "--leaderboard", str(a)]) == 0
    capsys.readouterr()
    before = _snapshot(a.parent)
    assert cli.main(["eval", *_lite0_args(), *data, "--leaderboard", str(b)]) == 2
    out, err = capsys.readouterr()
    assert len(err.strip().splitlines()) == 1 and "one folder holds one board" in err and "Traceback" not in err
    assert "dataset" not in out  # refused before the data was opened or any model scored
    assert _snapshot(a.parent) == before and not b.exists()
    _assert_consistent(a)
