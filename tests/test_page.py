"""The leaderboard page (spurbench.evaluate.page): rendered from a real leaderboard (the offline panel's three
real ImageNet classifiers scored by `spurbench eval` on real photos), checked as HTML and in a real
headless Chromium (Debian's `chromium`, driven by Playwright).

Without a browser the browser test is skipped with the reason, unless SPURBENCH_REQUIRE_BROWSER=1
(set by .ci/run), where it fails instead.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from spurbench import cli
from spurbench.dataset import DatasetCard, fingerprint, load_split, write_dataset
from spurbench.errors import SpurbenchError
from spurbench.evaluate.leaderboard import ranked_entries
from spurbench.evaluate.page import esc, render_page
from spurbench.files import RECORD_NAME

CHROMIUM = os.environ.get("SPURBENCH_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
BUILD_COMMAND = "spurbench build --recipe photos --out 'a folder' # <b>&\"quoted\"</b>"


# ---------------------------------------------------------------------------------------------
# fixtures: one real `spurbench eval` run, shared by every test here


@pytest.fixture(scope="module")
def with_refs(photo_dataset, tmp_path_factory):
    """The photo dataset's test split unchanged (same bytes, same fingerprint) plus a `reference` split
    of real photos and a provenance block, as `spurbench build` exports them."""
    from datasets import Image

    rows = [dict(r) for r in load_split(photo_dataset.path).cast_column("image", Image(decode=False))]
    refs = [dict(r, source="reference") for r in rows if r["label"] in (285, 967)][:4]
    folder = write_dataset(
        tmp_path_factory.mktemp("refs") / "photos_refs",
        {"test": rows, "reference": refs},
        DatasetCard(
            pretty_name="photos with references",
            provenance={
                "recipe": "photos",
                "recipe_sha256": "ab" * 32,
                "base_model": "<none> & real photos",
                "created": "2025-01-02",
                "command": BUILD_COMMAND,
            },
        ),
    )
    assert fingerprint(folder) == fingerprint(photo_dataset.path)
    return folder, refs


@pytest.fixture(scope="module")
def board(photo_dataset, tmp_path_factory) -> Path:
    """A leaderboard from the real CLI: `spurbench eval --panel offline` on the photo dataset."""
    lb = tmp_path_factory.mktemp("page_board") / "board" / "leaderboard.json"
    cmd = [
        sys.executable,
        "-m",
        "spurbench",
        "eval",
        "--panel",
        "offline",
        "--dataset",
        str(photo_dataset.path),
        "--positives",
        str(photo_dataset.positives),
        "--leaderboard",
        str(lb),
        "--workers",
        "0",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return lb


@pytest.fixture(scope="module")
def page(board, with_refs, tmp_path_factory) -> Path:
    """The page of that leaderboard with the references dataset's images, rendered through the CLI."""
    out = tmp_path_factory.mktemp("page") / "site"
    rc = cli.main(
        [
            "leaderboard",
            "--leaderboard",
            str(board),
            "--format",
            "html",
            "--out",
            str(out),
            "--dataset",
            str(with_refs[0]),
        ]
    )
    assert rc == 0
    return out / "index.html"


# ---------------------------------------------------------------------------------------------
# helpers: an independent reading of the page (stdlib HTML parser) and of the CSVs


class _Page(HTMLParser):
    """Collects what the checks need: figures with their class section, images, table rows, scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.section: str | None = None
        self.figures: list[dict[str, str]] = []  # attrs + "section"
        self.imgs: list[dict[str, str]] = []
        self.ranking_rows = 0
        self._table: str | None = None
        self.scripts = 0
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        if tag == "section" and a.get("id", "").startswith("class-"):
            self.section = a["id"]
        if tag == "figure":
            self.figures.append({**a, "section": self.section})
        if tag == "img":
            self.imgs.append(a)
        if tag == "table":
            self._table = a.get("id")
        if tag == "tr" and self._table == "ranking" and "data-i" in a:
            self.ranking_rows += 1
        if tag == "script":
            self.scripts += 1
        for key in ("src", "href"):
            v = a.get(key, "")
            if v and not (v.startswith("#") or v.startswith("images/") or v.startswith("data:")):
                self.external.append(v)
        if tag == "svg" and a.get("xmlns"):
            self.external = [v for v in self.external if v != a["xmlns"]]

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None


def _parse(path: Path) -> _Page:
    p = _Page()
    p.feed(path.read_text(encoding="utf-8"))
    return p


def _fool_counts(board_path: Path) -> dict[int, int]:
    """Per image index: how many entries' CSVs say fooled_top1 = 1 (read with the csv module)."""
    b = json.loads(board_path.read_text())
    counts: Counter[int] = Counter()
    for e in b["entries"]:
        with open(board_path.parent / e["predictions"], newline="") as fh:
            for row in csv.DictReader(fh):
                counts[int(row["index"])] += int(row["fooled_top1"])
    return counts


# ---------------------------------------------------------------------------------------------
# without a browser


def test_contact_sheets_show_every_image_with_its_fool_count(page, board, photo_dataset, with_refs):
    p = _parse(page)
    shots = [f for f in p.figures if "data-fooled" in f]
    refs = [f for f in p.figures if "data-reference" in f]
    # one figure per row of the test split, each in its class's section
    assert sorted(int(f["data-index"]) for f in shots) == list(range(len(photo_dataset.labels)))
    for f in shots:
        assert f["section"] == f"class-{photo_dataset.labels[int(f['data-index'])]}"
    per_class = Counter(f["section"] for f in shots)
    assert per_class == Counter(f"class-{k}" for k in photo_dataset.labels)
    # marks equal the CSVs: the number of the 3 models whose top-1 is the label
    counts = _fool_counts(board)
    assert {int(f["data-index"]): int(f["data-fooled"]) for f in shots} == {i: counts[i] for i in range(len(shots))}
    assert any(counts.values()) and not all(c == 3 for c in counts.values())  # both kinds occur on real photos
    # reference images: one per reference row, in the section of its class
    assert Counter(f["section"] for f in refs) == Counter(f"class-{r['label']}" for r in with_refs[1])
    # every image is a file next to the page, and a real JPEG
    from PIL import Image

    assert len(p.imgs) == len(shots) + len(refs)
    for img in p.imgs:
        with Image.open(page.parent / img["src"]) as im:
            assert im.format == "JPEG" and min(im.size) > 0
    # nothing that could be fetched from elsewhere
    assert p.external == []
    assert p.scripts == 1


def test_table_has_one_row_per_entry_and_the_metrics(page, board):
    b = json.loads(board.read_text())
    p = _parse(page)
    assert p.ranking_rows == len(b["entries"]) == 3
    html_text = page.read_text()
    for e in b["entries"]:
        assert f'data-v="{float(e["metrics"]["spurious_rate"])!r}"' in html_text
        assert f'data-v="{float(e["metrics"]["spurious_score_ap"])!r}"' in html_text  # --positives gave AP
    assert "spurious score AP" in html_text and "AUROC" in html_text
    assert "Fleiss" in html_text and "fooled by all" in html_text


def test_provenance_and_reproduce_commands(page, board):
    text = page.read_text()
    b = json.loads(board.read_text())
    assert esc(BUILD_COMMAND) in text  # escaped, exactly
    assert "<b>&" not in text
    assert "ab" * 32 in text and "2025-01-02" in text
    for e in b["entries"]:
        assert esc(e["command"]) in text
    assert "--format html" in text


def test_dataset_without_provenance_says_so(board, photo_dataset, tmp_path):
    out = render_page(board, tmp_path / "site", dataset_folder=photo_dataset.path)
    text = out.read_text()
    assert "carries no spurbench provenance" in text
    assert "not recorded: the dataset has no spurbench provenance" in text
    p = _parse(out)
    assert [f for f in p.figures if "data-reference" in f] == []
    assert len([f for f in p.figures if "data-fooled" in f]) == len(photo_dataset.labels)


def test_text_is_escaped(board, photo_dataset, tmp_path):
    """Model names and commands are user text: a name with markup shows as text, never as markup."""
    evil = '<script>alert("x")</script>&<img src=x>'
    b = json.loads(board.read_text())
    old = b["entries"][0]["model"]
    b["entries"][0]["model"] = evil
    b["entries"][0]["command"] = "spurbench eval --name '" + evil + "'"
    b["consistency"]["models"] = [evil if m == old else m for m in b["consistency"]["models"]]
    b["consistency"]["pairwise_kappa"] = {
        k.replace(old, evil): v for k, v in b["consistency"]["pairwise_kappa"].items()
    }
    copy = tmp_path / "board" / "leaderboard.json"
    shutil.copytree(board.parent, copy.parent)
    shutil.rmtree(copy.parent / "store")  # the edited export alone is the board
    copy.write_text(json.dumps(b))
    out = render_page(copy, tmp_path / "site", dataset_folder=photo_dataset.path)
    text = out.read_text()
    assert evil not in text
    assert esc(evil) in text
    p = _parse(out)
    assert p.scripts == 1 and all(i["src"].startswith("images/") for i in p.imgs)


def test_page_without_the_dataset_still_renders(board, tmp_path):
    b = json.loads(board.read_text())
    b["dataset"]["id"] = str(tmp_path / "gone")
    copy = tmp_path / "board" / "leaderboard.json"
    shutil.copytree(board.parent, copy.parent)
    shutil.rmtree(copy.parent / "store")  # the edited export alone is the board
    copy.write_text(json.dumps(b))
    out = render_page(copy, tmp_path / "site")
    text = out.read_text()
    assert "pass --dataset FOLDER to show them" in text
    assert _parse(out).ranking_rows == 3 and _parse(out).imgs == []


def test_images_a_model_did_not_score_are_marked_as_such(board, photo_dataset, tmp_path):
    """As after `spurbench eval --limit N`: predictions CSVs that cover only the first rows."""
    copy = tmp_path / "board" / "leaderboard.json"
    shutil.copytree(board.parent, copy.parent)
    for csv_path in (copy.parent / "predictions").glob("*.csv"):
        lines = csv_path.read_text().splitlines(keepends=True)
        csv_path.write_text("".join(lines[:5]))  # header + images 0..3
    out = render_page(copy, tmp_path / "site", dataset_folder=photo_dataset.path)
    counts = _fool_counts(copy)
    shots = {int(f["data-index"]): f for f in _parse(out).figures if "data-fooled" in f}
    assert len(shots) == len(photo_dataset.labels)
    assert {i: int(shots[i]["data-fooled"]) for i in range(4)} == {i: counts[i] for i in range(4)}
    text = out.read_text()
    assert text.count('title="not scored by the panel">n/a<') == len(photo_dataset.labels) - 4


def test_user_mistakes_are_clear_and_leave_the_old_page(board, page, photo_dataset, tmp_path):
    before = page.read_bytes()
    # a different dataset than the one scored: refused by fingerprint, old page untouched
    other = write_dataset(
        tmp_path / "other", {"test": [dict(load_split(photo_dataset.path)[0])]}, DatasetCard(pretty_name="one")
    )
    with pytest.raises(SpurbenchError, match="not the data this leaderboard was scored on"):
        render_page(board, page.parent, dataset_folder=other)
    assert page.read_bytes() == before and (page.parent / "images").is_dir()
    # no staging left behind (the record of what spurbench wrote stays)
    assert not [p for p in page.parent.iterdir() if p.name.startswith(".") and p.name != RECORD_NAME]
    with pytest.raises(SpurbenchError, match="is a file"):
        render_page(board, page, dataset_folder=photo_dataset.path)
    with pytest.raises(SpurbenchError, match="does not exist"):
        render_page(tmp_path / "nope.json", tmp_path / "site")
    # a predictions file gone missing
    copy = tmp_path / "board" / "leaderboard.json"
    shutil.copytree(board.parent, copy.parent)
    first = json.loads(copy.read_text())["entries"][0]["predictions"]
    (copy.parent / first).unlink()
    with pytest.raises(SpurbenchError, match="missing"):
        render_page(copy, tmp_path / "site", dataset_folder=photo_dataset.path)


# ---------------------------------------------------------------------------------------------
# in a real browser


def _browser_or_skip():
    required = os.environ.get("SPURBENCH_REQUIRE_BROWSER") == "1"
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "the Python package playwright is not installed (pip install -e '.[test]')"
    if why is None and not CHROMIUM:
        why = "no chromium on PATH (Debian: apt-get install chromium)"
    if why:
        if required:
            pytest.fail(f"SPURBENCH_REQUIRE_BROWSER=1 but {why}")
        pytest.skip(why)
    return CHROMIUM


@pytest.mark.browser
def test_page_in_headless_chromium(page, board, tmp_path):
    exe = _browser_or_skip()
    from playwright.sync_api import sync_playwright

    b = json.loads(board.read_text())
    errors: list[str] = []
    requests: list[str] = []
    args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
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
            viewport={"width": 1300, "height": 900},
        )
        try:
            tab = ctx.new_page()
            tab.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            tab.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.as_uri(), wait_until="load")

            # one row per entry, in ranked order
            models = lambda: tab.eval_on_selector_all("#ranking tbody tr", "rs => rs.map(r => r.cells[1].textContent)")  # noqa: E731
            ranked = [e["model"] for e in ranked_entries(b)]  # the leaderboard's own ranking (AP here)
            assert models() == ranked

            # sorting: click "params" -> ascending by size, again -> descending. Ascending and descending
            # cannot both equal the ranked order, so a table that does not sort fails one of the two.
            by_size = [e["model"] for e in sorted(b["entries"], key=lambda e: e["num_params"])]
            tab.click("#ranking th[data-key=num_params] button")
            assert models() == by_size
            assert tab.get_attribute("#ranking th[data-key=num_params]", "aria-sort") == "ascending"
            tab.click("#ranking th[data-key=num_params] button")
            assert models() == by_size[::-1]
            assert tab.get_attribute("#ranking th[data-key=num_params]", "aria-sort") == "descending"
            # text column, then back to the rank
            tab.click("#ranking th[data-key=model] button")
            assert models() == sorted(m for m in ranked)
            tab.click("#ranking th[data-key=rank] button")
            assert models() == ranked

            # every image is displayed: load the lazy ones too, then check the decoded widths
            n_imgs = tab.evaluate(
                """async () => {
                    const imgs = Array.from(document.images);
                    imgs.forEach(i => { i.loading = 'eager'; });
                    await Promise.all(imgs.map(i => i.decode().catch(() => null)));
                    return imgs.length;
                }"""
            )
            assert n_imgs == len(_parse(page).imgs) > 0
            broken = tab.evaluate(
                "() => Array.from(document.images).filter(i => !(i.naturalWidth > 0)).map(i => i.src)"
            )
            assert broken == []
            shot = Path(os.environ.get("SPURBENCH_PAGE_SCREENSHOT") or tmp_path / "page.png")
            tab.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 0
        finally:
            ctx.close()
    assert errors == []
    assert requests and all(u.startswith(("file://", "data:")) for u in requests), [
        u for u in requests if not u.startswith("file://")
    ]
