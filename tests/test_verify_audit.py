"""`spurbench verify --audit N`: a seeded random sample, stratified by class and verdict, decided by a person; the card's
per-verdict disagreement rates with Wilson intervals (equal to statsmodels'), kept across a re-verification and a
rebuild (rows found again by their image bytes), and one-line errors for bad input."""

from __future__ import annotations

import csv
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spurbench import cli
from spurbench.dataset import read_provenance
from spurbench.verification import AUDIT_KEY, PRESENT, REVIEWED, SCORE, audit_line, audit_stats
from spurbench.verify import draw_audit, parse_audit


def _table(folder, split="test") -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob(f"data/{split}-*.parquet"))])


@pytest.fixture(scope="module")
def checked(photo_dataset, tmp_path_factory):
    """The photo dataset checked by the tiny OWLv2 at its median score: about half passed, half failed."""
    root = tmp_path_factory.mktemp("audit")
    old = os.environ.get("SPURBENCH_CACHE")
    os.environ["SPURBENCH_CACHE"] = str(root / "cache")
    try:
        args = ["verify", "--dataset", str(photo_dataset.path), "--detector", "tiny", "--out", str(root / "v0")]
        assert cli.main(args) == 0
        scores = sorted(_table(root / "v0").column(SCORE).to_pylist())
        thr = str(scores[len(scores) // 2])
        assert cli.main(["verify", "--dataset", str(root / "v0"), "--threshold", thr, "--out", str(root / "set")]) == 0
    finally:
        os.environ.pop("SPURBENCH_CACHE") if old is None else os.environ.__setitem__("SPURBENCH_CACHE", old)
    return root / "set"


def test_wilson_interval_equals_statsmodels():
    from statsmodels.stats.proportion import proportion_confint

    for disagree, n in [(0, 5), (3, 120), (7, 40), (40, 40), (1, 1)]:
        stats = audit_stats(
            "spurious", ["passed"] * n, ["drop"] * disagree + ["keep"] * (n - disagree), {"passed": 1000}
        )
        low, high = proportion_confint(disagree, n, alpha=0.05, method="wilson")
        p = stats["passed"]
        assert (p["low"], p["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
        assert p["rate"] == disagree / n and p["set_estimate"][0] == round(1000 * disagree / n, 1)


def test_draw_is_seeded_and_stratified_by_class_and_verdict():
    strata = {(1, "passed"): list(range(0, 60)), (2, "passed"): list(range(60, 80)), (1, "failed"): list(range(80, 85))}
    a = draw_audit(strata, 20, seed=3)
    assert a == draw_audit(strata, 20, seed=3) and a != draw_audit(strata, 20, seed=4)
    assert len(a) == len(set(a)) == 20
    # half per verdict, but the failed verdict has only 5: the passed one takes the rest, classes 3:1
    assert sum(x >= 80 for x in a) == 5
    assert sum(x < 60 for x in a) == 11 and sum(60 <= x < 80 for x in a) == 4


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--audit", "0"], r"^--audit must be at least 1 image, got 0$"),
        (["--audit", "-3"], r"^--audit must be at least 1 image, got -3$"),
        (["--audit", "ten"], r"^--audit must be a whole number of images to audit, got 'ten'$"),
        (["--audit", "4", "--audit-seed", "1.5"], r"^--audit-seed must be a whole number, got '1.5'$"),
        (["--audit", "4", "--audit-seed", "x"], r"^--audit-seed must be a whole number, got 'x'$"),
        (["--audit", "4", "--audit-seed", "-1"], r"^--audit-seed must be 0 or more, got -1$"),
        (["--audit-seed", "2"], r"^--audit-seed seeds the audit sample: give --audit N too$"),
        (["--audit", "100000"], r"^--audit 100000 asks for more images than the \d+ checked ones; give at most \d+$"),
    ],
)
def test_bad_audit_input_is_one_line_and_writes_nothing(checked, tmp_path, capsys, flags, message):
    import re

    before = {p: p.read_bytes() for p in checked.rglob("*") if p.is_file()}
    code = cli.main(["verify", "--dataset", str(checked), "--out", str(checked), *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1 and re.search(message, err[0].split(": error: ", 1)[-1]), err
    assert {p: p.read_bytes() for p in checked.rglob("*") if p.is_file()} == before


def test_audit_without_out_is_refused(checked, tmp_path, capsys):
    code = cli.main(["verify", "--dataset", str(checked), "--page", str(tmp_path / "p"), "--audit", "4"])
    assert code != 0 and not (tmp_path / "p").exists()
    assert "--audit records its sample in a new copy of the dataset: add --out DIR" in capsys.readouterr().err


def test_audit_decisions_give_the_cards_rates_and_survive_reverification(checked, tmp_path):
    out = tmp_path / "audited"
    args = ["verify", "--dataset", str(checked), "--audit", "8", "--audit-seed", "5", "--out", str(out)]
    assert cli.main(args) == 0
    audit = read_provenance(out)["verification"][AUDIT_KEY]
    t = _table(out)
    present = t.column(PRESENT).to_pylist()
    rows = [int(i) for _, i, _ in audit["images"]]
    assert len(rows) == 8 and audit["seed"] == 5
    assert sum(present[i] for i in rows) == 4  # half failed, half passed
    assert audit["verdicts"]["passed"]["audited"] == 4 and audit["verdicts"]["passed"]["decided"] == 0
    assert audit_line(read_provenance(out)["verification"]) == ""
    # a person decides: on the passed ones one drop (object there after all), on the failed ones all drop (agree)
    passed = [i for i in rows if not present[i]]
    failed = [i for i in rows if present[i]]
    decisions = tmp_path / "decisions.csv"
    with decisions.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "split", "decision"])
        w.writerows([[passed[0], "test", "drop"], *[[i, "test", "keep"] for i in passed[1:]]])
        w.writerows([[i, "test", "drop"] for i in failed])
    assert cli.main(["verify", "--dataset", str(out), "--decisions", str(decisions), "--out", str(out)]) == 0
    record = read_provenance(out)["verification"]
    v = record[AUDIT_KEY]["verdicts"]
    assert (v["passed"]["decided"], v["passed"]["disagree"], v["passed"]["rate"]) == (4, 1, 0.25)
    assert (v["failed"]["decided"], v["failed"]["disagree"]) == (4, 0)
    assert v["passed"]["images_in_set"] == sum(not p for p in present)
    assert audit_line(record) == "object in passed images: 25 % [5 %, 70 %], 4 audited"
    card = (out / "README.md").read_text()
    assert "### Audit of the check" in card and "- passed: 4 audited, 4 decided, 1 disagreement(s)" in card
    # verified again (another threshold: verdicts change, the sample stays)
    again = tmp_path / "again"
    assert cli.main(["verify", "--dataset", str(out), "--threshold", "0.0", "--out", str(again)]) == 0
    a2 = read_provenance(again)["verification"][AUDIT_KEY]
    assert a2["images"] == record[AUDIT_KEY]["images"] and a2["verdicts"]["passed"]["audited"] == 0


def test_audit_survives_a_rebuild_that_moves_the_rows(checked, tmp_path):
    """A rebuild exports the rows anew (here: reversed); the build's verify stage finds the audit sample and its
    decisions again by image bytes (verify_stage.earlier_audit + decided_images)."""
    from spurbench.dataset import DatasetCard, open_dataset_folder, write_dataset
    from spurbench.generate.verify_stage import earlier_audit
    from spurbench.verify import decided_images, verify_dataset

    out = tmp_path / "audited"
    assert cli.main(["verify", "--dataset", str(checked), "--audit", "6", "--out", str(out)]) == 0
    first = read_provenance(out)["verification"][AUDIT_KEY]["images"]
    decisions = tmp_path / "d.csv"
    decisions.write_text("index,split,decision\n" + "".join(f"{i},test,keep\n" for _, i, _ in first))
    assert cli.main(["verify", "--dataset", str(out), "--decisions", str(decisions), "--out", str(out)]) == 0
    opened = open_dataset_folder(checked)
    table, feats = opened.table("test")
    keep = [c for c in table.column_names if c not in (SCORE, PRESENT, "object_boxes", REVIEWED)]
    rows = table.select(keep).to_pylist()[::-1]
    extra = {c: feats[c] for c in keep if c in feats and c not in ("image", "label")}
    from spurbench.dataset import REQUIRED_COLUMNS

    extra = {c: f for c, f in extra.items() if c not in REQUIRED_COLUMNS}
    rebuilt = tmp_path / "unverified"
    write_dataset(rebuilt, {"test": rows}, DatasetCard(pretty_name="rebuilt", body="x"), extra_features=extra)
    final = tmp_path / "final"
    record = verify_dataset(
        rebuilt,
        final,
        detector="tiny",
        carry=decided_images(out),
        audit_carry=earlier_audit(out),
        progress=False,
        cache=tmp_path / "det.jsonl",
    )
    n = len(rows)
    moved = sorted(n - 1 - i for _, i, _ in first)
    assert sorted(i for _, i, _ in record[AUDIT_KEY]["images"]) == moved and record[AUDIT_KEY]["not_found"] == 0
    reviewed = _table(final).column(REVIEWED).to_pylist()
    assert [reviewed[i] for i in moved] == ["keep"] * 6
    assert sum(v["decided"] for v in record[AUDIT_KEY]["verdicts"].values()) == 6


def test_parse_audit_defaults():
    assert parse_audit(None, None) == (None, 0)
    assert parse_audit("12", " 7 ") == (12, 7)


def test_page_shows_the_audited_rate_beside_the_headline(tmp_path):
    from spurbench.evaluate.page_common import PageData
    from spurbench.evaluate.page_sections import ranking_section
    from spurbench.verification import audit_stats

    verdicts = audit_stats("spurious", ["passed"] * 120, ["drop"] * 4 + ["keep"] * 116, {"passed": 900})
    record = {"audit": {"kind": "spurious", "verdicts": verdicts}}
    page = PageData({"entries": []}, [], [], [], None, "", {}, {}, {"verification": record}, tmp_path, tmp_path, "")
    assert "object in passed images: 3 % [1 %, 8 %], 120 audited" in ranking_section(page)
    page.provenance = {"verification": {"threshold": 0.1}}
    assert 'id="audit-rate"' not in ranking_section(page)
