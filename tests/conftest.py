"""Shared fixtures. Everything runs offline (HF_HUB_OFFLINE=1) on real photos that scikit-image and
scikit-learn ship; no model or dataset hub is reached."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# locally built tiny models (spurbench.detection's `tiny` detector) go to a scratch folder, not ~/.cache
os.environ.setdefault("SPURBENCH_CACHE", __import__("tempfile").mkdtemp(prefix="spurbench-test-cache-"))

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from spurbench import imagenet
from spurbench.dataset import DatasetCard, write_dataset


def _photo(name: str) -> np.ndarray:
    if name in ("china", "flower"):
        from sklearn.datasets import load_sample_images

        images = load_sample_images()
        return images.images[[Path(f).stem for f in images.filenames].index(name)]
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return img[..., :3]


def _variants(img: np.ndarray) -> list[np.ndarray]:
    """The photo, its mirror image and a central crop: three distinct real images of one scene."""
    h, w = img.shape[:2]
    return [img, img[:, ::-1].copy(), img[h // 8 : h - h // 8, w // 8 : w - w // 8].copy()]


# class index the photo is labelled as spurious *for* -> photos. Chosen so that a real ImageNet
# classifier is fooled on some (a cat photo "spurious for" Egyptian cat) and not on others
# (an astronaut "spurious for" tench), which exercises both sides of every metric.
PHOTO_CLASSES: dict[int, list[str]] = {
    285: ["chelsea"],  # Egyptian cat
    967: ["coffee"],  # espresso
    657: ["rocket"],  # missile
    0: ["astronaut", "grass"],  # tench: nothing fish-like, should rarely fool
}
# real in-class images ("positives") for the spurious score, by WordNet id; tench has none on purpose
POSITIVE_PHOTOS: dict[int, list[str]] = {285: ["chelsea"], 967: ["coffee"], 657: ["rocket"]}


@dataclass
class PhotoDataset:
    path: Path  # Hub-layout dataset folder (split "test")
    positives: Path  # image folder by WordNet id
    labels: list[int]  # label of each row, in row order


def make_photo_dataset(root: Path) -> PhotoDataset:
    rows, labels = [], []
    for label, names in PHOTO_CLASSES.items():
        for name in names:
            for img in _variants(_photo(name)):
                rows.append(
                    dict(
                        image=img,
                        label=label,
                        class_name=imagenet.class_name(label),
                        spurious_feature=f"photo of {name}",
                        component=-1,
                        source="reference",
                        builder="photos",
                        prompt="",
                        seed=-1,
                    )
                )
                labels.append(label)
    path = write_dataset(
        root / "photos",
        {"test": rows},
        DatasetCard(pretty_name="spurbench test photos", body="Real photos from scikit-image, for tests."),
    )
    positives = root / "positives"
    for label, names in POSITIVE_PHOTOS.items():
        folder = positives / imagenet.wnids()[label]
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            img = _photo(name)
            h, w = img.shape[:2]
            # different crops than the spurious rows, so positives and negatives are distinct images
            Image.fromarray(img[: h * 3 // 4, : w * 3 // 4]).save(folder / f"{name}_tl.png")
            Image.fromarray(img[h // 4 :, w // 4 :]).save(folder / f"{name}_br.png")
    return PhotoDataset(path=path, positives=positives, labels=labels)


@pytest.fixture(scope="session")
def photo_dataset(tmp_path_factory) -> PhotoDataset:
    """A small dataset in the contract format, made from real photos, exported as Parquet + card."""
    return make_photo_dataset(tmp_path_factory.mktemp("photo_dataset"))


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` need a CUDA GPU: without one they skip, saying so (scripts/gpu_check.sh runs them on a GPU).
    SPURBENCH_CUDA_CHECK_DEVICE=cpu runs their bodies on the CPU instead (a dry run of their logic)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked or os.environ.get("SPURBENCH_CUDA_CHECK_DEVICE", "cuda") == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(
            reason="needs a CUDA GPU (torch.cuda.is_available() is False); scripts/gpu_check.sh runs these on one"
        )
        for item in marked:
            item.add_marker(skip)


# ---------------------------------------------------------------------------------------------
# error coverage (scripts/error_coverage.py): which SpurbenchError call sites the suite triggers

import importlib.util as _importlib_util  # noqa: E402

_spec = _importlib_util.spec_from_file_location(
    "spurbench_error_coverage", Path(__file__).resolve().parent.parent / "scripts" / "error_coverage.py"
)
error_coverage = _importlib_util.module_from_spec(_spec)
__import__("sys").modules[_spec.name] = error_coverage  # its dataclasses look their module up there
_spec.loader.exec_module(error_coverage)

# $SPURBENCH_ERROR_LOG when already set (appended to: a run beside another, or a nested session), else one
# per checkout, emptied at the start of each run (`python scripts/error_coverage.py` reads it)
_ERROR_LOG = Path(os.environ.get("SPURBENCH_ERROR_LOG") or error_coverage.log_path())
_coverage_state = {"deselected": 0, "full": False, "report": None}


def pytest_configure(config):
    """Start this session's error log; subprocesses inherit the variable."""
    if hasattr(config, "workerinput") or os.environ.get("SPURBENCH_ERROR_LOG"):
        return
    _ERROR_LOG.write_text("", encoding="utf-8")
    os.environ["SPURBENCH_ERROR_LOG"] = str(_ERROR_LOG)


def pytest_runtest_setup(item):
    """Mark in the log which test the following constructions belong to (tests run one at a time)."""
    if os.environ.get("SPURBENCH_ERROR_LOG"):
        with open(os.environ["SPURBENCH_ERROR_LOG"], "a", encoding="utf-8") as f:
            f.write(f"{error_coverage.TEST_MARK}{item.nodeid}\n")


def pytest_deselected(items):
    _coverage_state["deselected"] += len(items)


def pytest_collection_finish(session):
    """A full run: every tests/test_*.py collected, nothing deselected (-k, -m, --deselect, --lf), no `::` selection."""
    tests = Path(__file__).resolve().parent
    wanted = {p.resolve() for p in tests.glob("test_*.py")}
    collected = {Path(str(item.fspath)).resolve() for item in session.items}
    opt = session.config.option
    _coverage_state["full"] = (
        wanted <= collected
        and _coverage_state["deselected"] == 0
        and not getattr(opt, "keyword", "")
        and not getattr(opt, "markexpr", "")
        and not any("::" in str(arg) for arg in session.config.args)
    )


def pytest_sessionfinish(session, exitstatus):
    """At the end of a full run that went to its end: fail it when too many error call sites went untriggered."""
    if hasattr(session.config, "workerinput") or not _coverage_state["full"]:
        return
    if session.shouldstop or session.shouldfail or exitstatus in (pytest.ExitCode.INTERRUPTED,):
        return  # stopped early (-x, Ctrl-C): the log is incomplete
    with open(_ERROR_LOG, "a", encoding="utf-8") as f:
        f.write(f"{error_coverage.FULL_RUN_MARK}\n")
    sites, missing = error_coverage.uncovered(_ERROR_LOG)
    share = len(missing) / len(sites)
    failed = share > error_coverage.ALLOWED_UNCOVERED
    _coverage_state["report"] = (error_coverage.report(sites, missing), failed)
    if failed and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
    if _coverage_state["report"] is None:
        return
    text, failed = _coverage_state["report"]
    terminalreporter.section("error coverage", red=failed, green=not failed)
    last = text.splitlines()[-1]
    if failed:
        terminalreporter.write_line(text)
        terminalreporter.write_line(
            "FAILED: more SpurbenchError call sites untriggered than scripts/error_coverage.py ALLOWED_UNCOVERED allows"
        )
    else:
        terminalreporter.write_line(last)
        terminalreporter.write_line("python scripts/error_coverage.py lists the untriggered sites")
