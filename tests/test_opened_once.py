"""A dataset is opened once: a whole `spurbench eval` of a shift set (a reference split, a group column, a training
split for the group weights) with the real offline panel reads the card once and each split's Parquet once, and
the numbers are those of a fresh read of every split; the page of its board reads them once too.

The counters wrap the low-level readers of spurbench/dataset.py: the card (`_read_card_text`), a split's rows
(`read_split`, which fingerprints the bytes it reads), a split as a table (`read_split_table`) and one column
(`read_split_column`)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spurbench import dataset as sd
from spurbench import imagenet

PHOTOS = {285: "chelsea", 967: "coffee", 657: "rocket"}
SHIFTS = {"plain": lambda a: a, "mirror": lambda a: a[:, ::-1]}


def _set(root: Path) -> Path:
    from datasets import Value

    from spurbench.generate.references import sample_photo

    def row(img, k, source, **extra):
        return dict(
            image=Image.fromarray(np.ascontiguousarray(img)),
            label=k,
            class_name=imagenet.class_name(k),
            spurious_feature="",
            component=-1,
            source=source,
            builder="photos",
            prompt="",
            seed=-1,
            **extra,
        )

    test, ref, train = [], [], []
    for r, (k, name) in enumerate(PHOTOS.items()):
        a = sample_photo(name)[::4, ::4]
        ref.append(row(a, k, "reference", background=None, reference_index=r))
        train.append(row(a, k, "reference", background="plain" if r else "mirror", reference_index=r))
        for g, shift in SHIFTS.items():
            test.append(row(shift(a), k, "generated", background=g, reference_index=r))
    card = sd.DatasetCard(
        pretty_name="spurbench opened-once photos", body="Real photos, mirrored, for tests.", kind="shift"
    )
    extra = {"background": Value("string"), "reference_index": Value("int64")}
    return sd.write_dataset(
        root / "shift", {"test": test, "reference": ref, "train": train}, card, extra_features=extra
    )


class _Reads:
    """Counts calls of the dataset module's low-level readers, by reader and split."""

    def __init__(self, monkeypatch):
        self.calls: Counter = Counter()
        for name in ("read_split", "read_split_table", "read_split_column", "fingerprint"):
            real = getattr(sd, name)
            monkeypatch.setattr(sd, name, self._wrap(name, real))
        real_card = sd._read_card_text

        def card(folder):
            self.calls[("card", Path(folder).name)] += 1
            return real_card(folder)

        monkeypatch.setattr(sd, "_read_card_text", card)

    def _wrap(self, name, real):
        def wrapped(folder, split=sd.DEFAULT_SPLIT, *args, **kwargs):
            self.calls[(name, split)] += 1
            return real(folder, split, *args, **kwargs)

        return wrapped


@pytest.fixture(scope="module")
def shift_eval(tmp_path_factory):
    """(dataset folder, leaderboard file, reads counted during the whole `spurbench eval`)."""
    from spurbench.cli import main

    root = tmp_path_factory.mktemp("opened-once")
    folder = _set(root)
    board_file = root / "lb" / "leaderboard.json"
    with pytest.MonkeyPatch.context() as mp:
        reads = _Reads(mp)
        assert (
            main(
                [
                    "eval",
                    "--panel",
                    "offline",
                    "--dataset",
                    str(folder),
                    "--leaderboard",
                    str(board_file),
                    "--workers",
                    "0",
                ]
            )
            == 0
        )
    return folder, board_file, reads.calls


@pytest.mark.slow
def test_eval_of_a_shift_set_reads_the_card_once_and_each_split_once(shift_eval):
    from spurbench.evaluate import metrics

    folder, board_file, calls = shift_eval
    board = json.loads(board_file.read_text())
    assert len(board["entries"]) == 3  # three models, each scored on test + reference, each weighted by train's groups
    assert calls == Counter(
        {
            ("card", "shift"): 1,
            ("read_split", "test"): 1,
            ("fingerprint", "test"): 1,  # the rows scored, fingerprinted as they are read
            ("read_split", "reference"): 1,
            ("fingerprint", "reference"): 1,  # the reference photos, once for all models
            ("read_split_column", "train"): 1,  # only the group column of the training split
        }
    )
    # the data read once is the data on disk: fingerprint, reference size, group weights as a fresh read gives them
    fresh_train = sd.read_split_table(folder, "train")[0].column("background").to_pylist()
    weights = dict(Counter(fresh_train))
    assert board["dataset"]["fingerprint"] == sd.fingerprint(folder, "test")
    for e in board["entries"]:
        m = e["metrics"]
        assert m["num_reference"] == len(PHOTOS) and m["group_weights_from"] == "train"
        expected = metrics.train_weighted_accuracy(e["per_group"], weights)["train_weighted_accuracy"]
        assert m["train_weighted_group_accuracy"] == pytest.approx(expected)


@pytest.mark.slow
def test_page_of_a_shift_set_reads_the_card_once_and_each_split_once(shift_eval, tmp_path, monkeypatch):
    from spurbench.evaluate.page import render_page

    folder, board_file, _ = shift_eval
    reads = _Reads(monkeypatch)
    page = render_page(board_file, tmp_path / "site", folder)
    assert 'id="per-class"' in page.read_text()
    # the fingerprint check, the thumbnails and the review of the scored split share one read; the reference photos one
    assert reads.calls == Counter(
        {
            ("card", "shift"): 1,
            ("read_split", "test"): 1,
            ("fingerprint", "test"): 1,
            ("read_split", "reference"): 1,
            ("fingerprint", "reference"): 1,
        }
    )
    assert len(list((tmp_path / "site" / "images" / "test").glob("*.jpg"))) == len(PHOTOS) * len(SHIFTS)
    assert len(list((tmp_path / "site" / "images" / "reference").glob("*.jpg"))) == len(PHOTOS)


@pytest.mark.slow
def test_verify_and_the_page_of_a_verified_set_read_the_card_once_and_each_split_once(
    shift_eval, tmp_path, monkeypatch
):
    import yaml

    from spurbench.cli import main
    from spurbench.evaluate.page import render_page

    folder, _, _ = shift_eval
    reads = _Reads(monkeypatch)
    assert (
        main(
            [
                "verify",
                "--dataset",
                str(folder),
                "--detector",
                "tiny",
                "--threshold",
                "0",
                "--out",
                str(tmp_path / "verified"),
            ]
        )
        == 0
    )
    assert reads.calls == Counter(
        {
            ("card", "shift"): 1,
            ("read_split_table", "test"): 1,
            ("read_split_table", "reference"): 1,
            ("read_split_table", "train"): 1,
        }
    )
    # every split rewritten whole: the same rows as a fresh read of the input, plus the verification columns
    for split in ("test", "reference", "train"):
        before, after = sd.read_split_table(folder, split)[0], sd.read_split_table(tmp_path / "verified", split)[0]
        assert after.select(before.column_names).equals(before), split

    # the page of a verified set: its review reads every split, the scored and reference ones from the rows already read
    panel = yaml.safe_load((Path(__file__).parents[1] / "classifiers" / "offline.yaml").read_text())
    panel["models"] = panel["models"][:1]
    (tmp_path / "lite0.yaml").write_text(yaml.safe_dump(panel))
    board_file = tmp_path / "lb" / "leaderboard.json"
    assert (
        main(
            [
                "eval",
                "--panel",
                str(tmp_path / "lite0.yaml"),
                "--dataset",
                str(tmp_path / "verified"),
                "--leaderboard",
                str(board_file),
                "--workers",
                "0",
            ]
        )
        == 0
    )
    reads.calls.clear()
    html = render_page(board_file, tmp_path / "site", tmp_path / "verified").read_text()
    assert 'id="review"' in html
    assert reads.calls == Counter(
        {
            ("card", "verified"): 1,
            ("read_split", "test"): 1,
            ("fingerprint", "test"): 1,
            ("read_split", "reference"): 1,
            ("fingerprint", "reference"): 1,
            ("read_split_table", "train"): 1,
        }
    )


def test_an_opened_dataset_says_what_the_folder_readers_say(tmp_path):
    from datasets import Value

    def row(k, g):
        return dict(
            image=np.full((8, 8, 3), k, np.uint8),
            label=k,
            class_name=imagenet.class_name(k),
            spurious_feature="",
            component=-1,
            source="generated",
            builder="b",
            prompt="",
            seed=-1,
            group=g,
        )

    card = sd.DatasetCard(
        pretty_name="opened",
        body="Body.",
        kind="shift",
        provenance={"recipe_sha256": "abc", "verification": {"threshold": 0.5}},
    )
    folder = sd.write_dataset(
        tmp_path / "ds",
        {"test": [row(1, "a"), row(2, "b")], "reference": [row(1, "a")], "train": [row(3, "c")] * 3},
        card,
        extra_features={"group": Value("string")},
    )
    opened = sd.open_dataset_folder(str(folder))
    assert sd.open_dataset_folder(opened) is opened
    assert (opened.kind, opened.label_set, opened.reference_split) == (
        sd.read_kind(folder),
        sd.IMAGENET_LABEL_SET,
        "reference",
    )
    assert opened.split_names == sd.split_names(folder) == ["test", "reference", "train"]
    assert opened.provenance == sd.read_provenance(folder) and opened.verification == {"threshold": 0.5}
    assert opened.card() == sd.read_card(folder)
    opened.card().provenance["verification"]["threshold"] = 0.9  # a card handed out is the caller's to change
    assert opened.verification == {"threshold": 0.5}
    # rows, table and column agree with fresh reads of the shards, whichever is asked first
    ds, digest = opened.read("test")
    assert digest == sd.fingerprint(folder, "test") and ds["label"] == [1, 2]
    table, feats = opened.table("test")
    fresh, fresh_feats = sd.read_split_table(folder, "test")
    assert table.equals(fresh) and feats == fresh_feats
    assert opened.column("train", "group") == ["c"] * 3 and opened.column("train", "nothing") is None
    assert opened.column("test", "group") == ["a", "b"]
    assert (
        sd.open_dataset_folder(folder).verification is not None
        and sd.open_dataset_folder(folder).reference_split == "reference"
    )
    with pytest.raises(sd.SpurbenchError, match="has no split 'nope'"):
        opened.split("nope")
