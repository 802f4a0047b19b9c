"""The review section (spurbench.evaluate.review): on `spurbench verify --page DIR` and on the leaderboard
page of a verified set. Checked as HTML against the dataset's own columns, and in a real headless Chromium
(Debian's `chromium`, driven by Playwright as in test_page.py): clicking keep / drop, the downloaded
decisions.csv's content, and applying it with `spurbench verify --decisions`.
"""

from __future__ import annotations

import csv
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_page import _browser_or_skip

from spurbench import cli
from spurbench.verification import BOXES, PRESENT, REVIEWED, SCORE


@pytest.fixture(scope="module")
def verified(photo_dataset, tmp_path_factory):
    """The photo dataset checked by the tiny OWLv2 at its median score (some images fail, some pass)."""
    root = tmp_path_factory.mktemp("review")
    old = os.environ.get("SPURBENCH_CACHE")
    os.environ["SPURBENCH_CACHE"] = str(root / "cache")
    try:
        assert (
            cli.main(["verify", "--dataset", str(photo_dataset.path), "--detector", "tiny", "--out", str(root / "v0")])
            == 0
        )
        scores = sorted(_table(root / "v0").column(SCORE).to_pylist())
        assert (
            cli.main(
                [
                    "verify",
                    "--dataset",
                    str(root / "v0"),
                    "--threshold",
                    str(scores[len(scores) // 2]),
                    "--out",
                    str(root / "review-set"),
                ]
            )
            == 0
        )
    finally:
        os.environ.pop("SPURBENCH_CACHE") if old is None else os.environ.__setitem__("SPURBENCH_CACHE", old)
    return root / "review-set"


def _table(folder: Path, split: str = "test") -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(folder.glob(f"data/{split}-*.parquet"))])


def _expected_items(folder: Path, margin: float = 0.05) -> dict[int, dict]:
    """Rows the page must show, recomputed from the Parquet: failed (spurious: present), borderline, or decided."""
    from spurbench.dataset import read_provenance

    thr = read_provenance(folder)["verification"]["threshold"]
    t = _table(folder)
    out = {}
    for i, (s, p, b, r) in enumerate(zip(*(t.column(c).to_pylist() for c in (SCORE, PRESENT, BOXES, REVIEWED)))):
        if p or abs(s - thr) <= margin or r:
            out[i] = {"score": s, "boxes": json.loads(b), "reviewed": r}
    return out


class _Figures(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []
        self.in_review = False

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and a.get("id") == "review":
            self.in_review = True
        if not self.in_review:
            return
        if tag == "figure" and "rv" in a.get("class", ""):
            self.figures.append({**a, "rects": [], "buttons": []})
        elif tag == "svg" and self.figures:
            self.figures[-1]["viewBox"] = a.get("viewbox")
        elif tag == "rect" and self.figures:
            self.figures[-1]["rects"].append(a)
        elif tag == "img" and self.figures:
            self.figures[-1]["src"] = a["src"]
        elif tag == "button" and self.figures and "data-decision" in a:
            self.figures[-1]["buttons"].append(a["data-decision"])


def _figures(page: Path) -> list[dict]:
    p = _Figures()
    p.feed(page.read_text(encoding="utf-8"))
    return p.figures


@pytest.fixture(scope="module")
def review_page(verified, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("review_page") / "site"
    assert cli.main(["verify", "--dataset", str(verified), "--page", str(out)]) == 0
    return out / "index.html"


def test_review_page_shows_flagged_and_borderline_images_with_boxes(verified, review_page):
    import io

    from PIL import Image

    expected = _expected_items(verified)
    figures = _figures(review_page)
    assert sorted(int(f["data-index"]) for f in figures) == sorted(expected) and expected
    t = _table(verified)
    for f in figures:
        i = int(f["data-index"])
        assert f["data-split"] == "test" and float(f["data-score"]) == pytest.approx(expected[i]["score"], abs=1e-4)
        assert f["buttons"] == ["keep", "drop"]
        assert (review_page.parent / f["src"]).is_file()
        w, h = Image.open(io.BytesIO(t.column("image")[i].as_py()["bytes"])).size
        assert f["viewBox"] == f"0 0 {w} {h}"  # boxes drawn in the image's own pixel coordinates
        assert len(f["rects"]) == len(expected[i]["boxes"]) >= 1
        x0, y0, x1, y1 = expected[i]["boxes"][0]["box"]
        r = f["rects"][0]
        assert (float(r["x"]), float(r["y"])) == pytest.approx((x0, y0), abs=0.06)
        assert float(r["width"]) == pytest.approx(x1 - x0, abs=0.11)
    failed = [f for f in figures if "failed" in f["class"]]
    assert len(failed) == sum(t.column(PRESENT).to_pylist())


@pytest.mark.slow
def test_leaderboard_page_has_the_review_section(verified, tmp_path):
    import importlib.metadata as md

    from spurbench.classifiers import load_panel

    w = load_panel("offline")[0].weights
    lb = tmp_path / "board" / "lb.json"
    assert (
        cli.main(
            [
                "eval",
                "--model",
                "tf_efficientnet_lite0",
                "--weights",
                str(md.distribution(w["package"]).locate_file(w["file"])),
                "--key-map",
                "positional",
                "--workers",
                "0",
                "--dataset",
                str(verified),
                "--leaderboard",
                str(lb),
            ]
        )
        == 0
    )
    out = tmp_path / "site"
    assert (
        cli.main(
            ["leaderboard", "--leaderboard", str(lb), "--format", "html", "--out", str(out), "--dataset", str(verified)]
        )
        == 0
    )
    figures = _figures(out / "index.html")
    assert sorted(int(f["data-index"]) for f in figures) == sorted(_expected_items(verified))
    assert all((out / f["src"]).is_file() for f in figures)
    assert '<a href="#review">review</a>' in (out / "index.html").read_text()
    # the contact sheets' n/a badge of an image verification left out says why (a spurious set: the object was found)
    text = (out / "index.html").read_text()
    t = _table(verified)
    left_out = [(i, s) for i, (s, p) in enumerate(zip(t.column(SCORE).to_pylist(), t.column(PRESENT).to_pylist())) if p]
    assert left_out and text.count('title="left out: object found, score ') == len(left_out)
    assert all(f'title="left out: object found, score {s:.2f}">n/a<' in text for _, s in left_out)
    assert "not scored by the panel" not in text


@pytest.mark.browser
def test_clicking_downloading_and_applying_decisions(verified, review_page, tmp_path):
    exe = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    figures = _figures(review_page)
    assert len(figures) >= 3
    a, b, c = (int(f["data-index"]) for f in figures[:3])
    errors: list[str] = []
    requests: list[str] = []
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=exe,
            args=args,
            headless=True,
            accept_downloads=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            tab = ctx.new_page()
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(review_page.as_uri(), wait_until="load")
            fig = lambda i: f'figure.rv[data-index="{i}"]'  # noqa: E731
            assert tab.text_content("#rv-count") == "0 decisions"
            tab.click(f'{fig(a)} button[data-decision="keep"]')
            tab.click(f'{fig(b)} button[data-decision="drop"]')
            tab.click(f'{fig(c)} button[data-decision="drop"]')
            tab.click(f'{fig(c)} button[data-decision="drop"]')  # a second click clears it
            tab.click(f'{fig(b)} button[data-decision="keep"]')
            tab.click(f'{fig(b)} button[data-decision="drop"]')  # changed its mind: drop after all
            assert tab.get_attribute(f'{fig(a)} button[data-decision="keep"]', "aria-pressed") == "true"
            assert tab.get_attribute(f'{fig(b)} button[data-decision="keep"]', "aria-pressed") == "false"
            assert tab.get_attribute(fig(c), "data-decision") == ""
            assert tab.text_content("#rv-count") == "2 decisions"
            with tab.expect_download() as info:
                tab.click("#rv-download")
            download = info.value
            assert download.suggested_filename == "decisions.csv"
            saved = tmp_path / "decisions.csv"
            download.save_as(str(saved))
        finally:
            ctx.close()
    assert errors == []
    assert all(u.startswith(("file://", "data:", "blob:")) for u in requests), requests
    rows = list(csv.DictReader(saved.open()))
    assert rows == [
        {"index": str(a), "split": "test", "decision": "keep"},
        {"index": str(b), "split": "test", "decision": "drop"},
    ]

    # applying it: the `reviewed` column records exactly those two decisions, and eval follows them
    out = tmp_path / "decided"
    assert cli.main(["verify", "--dataset", str(verified), "--decisions", str(saved), "--out", str(out)]) == 0
    reviewed = _table(out).column(REVIEWED).to_pylist()
    assert {i: r for i, r in enumerate(reviewed) if r} == {a: "keep", b: "drop"}
    # the new page starts from those decisions, and a download without clicks gives them back
    page2 = tmp_path / "page2"
    assert cli.main(["verify", "--dataset", str(out), "--page", str(page2)]) == 0
    f2 = {int(f["data-index"]): f for f in _figures(page2 / "index.html")}
    assert f2[a]["data-decision"] == "keep" and f2[b]["data-decision"] == "drop"


@pytest.mark.browser
def test_audit_queue_in_a_real_browser(verified, tmp_path):
    """`verify --audit N`: the sample sits in its own queue, blind (no score, no boxes); deciding it in Chromium and
    applying the download gives the card's per-verdict rates."""
    exe = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    from spurbench.dataset import read_provenance
    from spurbench.verification import AUDIT_KEY

    audited = tmp_path / "audited"
    assert (
        cli.main(["verify", "--dataset", str(verified), "--audit", "6", "--audit-seed", "1", "--out", str(audited)])
        == 0
    )
    sample = [int(i) for _, i, _ in read_provenance(audited)["verification"][AUDIT_KEY]["images"]]
    page = tmp_path / "site"
    assert cli.main(["verify", "--dataset", str(audited), "--page", str(page)]) == 0
    html = (page / "index.html").read_text()
    queue = html[html.index('id="review-audit"') : html.index("</section>", html.index('id="review-audit"'))]
    assert sorted(int(x) for x in __import__("re").findall(r'data-index="(\d+)"', queue)) == sorted(sample)
    assert "<rect" not in queue and "≥" not in queue  # blind: the detector's verdict is not shown
    # an audited image is not also among the disputed ones
    assert all(html.count('figure class="rv') and html.count(f'data-index="{i}"') == 1 for i in sample)
    present = _table(audited).column(PRESENT).to_pylist()
    passed = [i for i in sample if not present[i]]
    with sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=exe,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            headless=True,
            accept_downloads=True,
        )
        try:
            tab = ctx.new_page()
            errors: list[str] = []
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.goto((page / "index.html").as_uri(), wait_until="load")
            for i in sample:  # the person: object present in the first passed image, absent in every other
                d = "drop" if i == passed[0] else "keep"
                tab.click(f'#review-audit figure.rv[data-index="{i}"] button[data-decision="{d}"]')
            assert tab.text_content("#rv-count") == f"{len(sample)} decisions"
            with tab.expect_download() as info:
                tab.click("#rv-download")
            saved = tmp_path / "decisions.csv"
            info.value.save_as(str(saved))
        finally:
            ctx.close()
    assert errors == []
    assert cli.main(["verify", "--dataset", str(audited), "--decisions", str(saved), "--out", str(audited)]) == 0
    v = read_provenance(audited)["verification"][AUDIT_KEY]["verdicts"]
    assert (v["passed"]["decided"], v["passed"]["disagree"]) == (len(passed), 1)
    assert (v["failed"]["decided"], v["failed"]["disagree"]) == (len(sample) - len(passed), len(sample) - len(passed))
    assert "### Audit of the check" in (audited / "README.md").read_text()
