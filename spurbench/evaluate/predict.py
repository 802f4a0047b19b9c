"""The forward pass: decode images in DataLoader workers, run a classifier in batches, keep p_label and the top 5.

This is the loop `spurbench eval` runs for every classifier (and benchmarks/eval_throughput.py measures).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from spurbench.classifiers import LoadedClassifier
from spurbench.errors import SpurbenchError, first_line
from spurbench.evaluate.preprocessing import (
    DECODE_PATHS,
    DEFAULT_DECODE,
    collate_by_shape,
    normalise_batch,
)
from spurbench.untrusted import image_size, open_image

TOPK = 5
#: worker processes decoding images by default: a few, never more than the machine has cores
DEFAULT_WORKERS = max(1, min(8, (os.cpu_count() or 2)))


def default_workers(device: torch.device) -> int:
    """`--workers` when unset. On a CPU with two cores or fewer, decoding in the main process is fastest:
    workers there compete with the model's threads (measured with benchmarks/eval_throughput.py on an idle
    2-core machine: 0.87 of forward-only images/s with 0 workers, 0.80 with 2)."""
    if device.type != "cuda" and (os.cpu_count() or 2) <= 2:
        return 0
    return DEFAULT_WORKERS


# ---------------------------------------------------------------------------------------------
# batch size and memory format for the device

#: batch sizes a CPU calibration tries, largest first (it stops once smaller ones get slower): large batches
#: are never pathological, small ones can be on a loaded machine (threads waiting on preempted peers)
CPU_BATCH_CANDIDATES = (32, 16, 8, 4, 2, 1)
#: batch size on a GPU (large batches keep it busy; `--batch-size` overrides)
CUDA_BATCH_SIZE = 32
#: the most a CPU calibration may spend, seconds, once 4 candidates are tried (it finishes the one it started)
CALIBRATION_BUDGET_S = 4.0


def _per_image_seconds(model: torch.nn.Module, x: torch.Tensor, repeats: int = 2) -> float:
    with torch.inference_mode():
        model(x)  # warm-up: oneDNN picks its kernels for this shape
        best = math.inf
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            best = min(best, time.perf_counter() - t)
    return best / len(x)


#: a CPU calibration runs only for a set at least this large (or of unknown size): it costs 4-11 s per model on a
#: 2-core CPU, more than scoring a few dozen images takes, and the best batch is at most ~2.5x faster per image
#: than SMALL_SET_BATCH_SIZE (issue 18), so below this a small fixed batch is faster end to end. Its result is
#: cached per model and machine (`calibration_cache`), so once run, every later set of any size reuses it.
CALIBRATE_MIN_IMAGES = 256
#: the CPU batch size of a set too small to calibrate for, with no cached calibration: small batches are the
#: fast ones on small CPUs (EfficientNet-Lite0 2.5x faster per image at batch 4 than at 32 on 2 cores)
SMALL_SET_BATCH_SIZE = 8
#: the format of a cached calibration file; a file of another format or for another key is ignored
CALIBRATION_FORMAT = "spurbench-cpu-calibration/1"
#: the largest calibration file read (a few hundred bytes are written): anything bigger is not ours
CALIBRATION_MAX_BYTES = 64 * 1024


def _machine() -> dict[str, Any]:
    """What the best batch size depends on besides the model: CPU, cores, torch threads, torch version."""
    import platform

    cpu = platform.processor() or ""
    try:  # Linux names the CPU model here; bounded read, a missing or odd file just leaves it out
        with open("/proc/cpuinfo", "rb") as fh:
            text = fh.read(64 * 1024).decode("utf-8", "replace")
        cpu = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def calibration_cache(model: str, size: Sequence[int]) -> tuple[Path, dict[str, Any]]:
    """(the cache file, the key it must hold) of a CPU calibration of `model` at input `size` on this machine:
    `resources.cache_dir("calibration")/<model>-<hash of the key>.json`."""
    import hashlib
    import json

    from spurbench.files import safe_filename
    from spurbench.resources import cache_dir

    key = {"model": model, "size": [int(v) for v in size[-2:]], "machine": _machine()}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir("calibration") / f"{safe_filename(model)}-{digest}.json", key


def _read_calibration(path: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The cached choice at `path` when it is a calibration for exactly `key`; None for a missing, oversized,
    corrupt or foreign file (then spurbench calibrates again and replaces it)."""
    import json

    try:
        with open(path, "rb") as fh:
            raw = fh.read(CALIBRATION_MAX_BYTES + 1)
        held = json.loads(raw) if len(raw) <= CALIBRATION_MAX_BYTES else None
    except (OSError, ValueError):
        return None
    if not isinstance(held, dict) or held.get("format") != CALIBRATION_FORMAT or held.get("key") != key:
        return None
    b, fmt = held.get("batch_size"), held.get("memory_format")
    if type(b) is not int or b not in CPU_BATCH_CANDIDATES or fmt not in ("channels_last", "contiguous"):
        return None
    return {"batch_size": b, "memory_format": fmt, "calibration": held.get("calibration")}


def _write_calibration(path: Path, key: dict[str, Any], chosen: dict[str, Any]) -> None:
    """Cache a calibration (atomically: a concurrent reader sees the old file or the new one). A cache that
    cannot be written costs a calibration next time, nothing else."""
    import json

    from spurbench.files import atomic_write

    record = {"format": CALIBRATION_FORMAT, "key": key, **chosen}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    except OSError:
        pass


def choose_batch(
    classifier: LoadedClassifier,
    device: torch.device | str | None,
    size: Sequence[int],
    batch_size: int | None = None,
    num_images: int | None = None,
) -> dict[str, Any]:
    """The batch size and memory format to run `classifier` with on `device`, and where they came from:
    `{"batch_size", "memory_format", "batch_size_from", "calibration"}` (recorded in the entry).

    `batch_size` given (`--batch-size`): that, channels-last. CUDA: CUDA_BATCH_SIZE, channels-last.
    CPU: a calibration of this model and machine cached earlier ("cached cpu calibration"); else, for a set of
    fewer than CALIBRATE_MIN_IMAGES images (`num_images`), SMALL_SET_BATCH_SIZE channels-last ("small set
    default"); else a calibration (`calibrate_cpu_batch`, "cpu calibration"), announced on stderr and cached.
    """
    device = resolve_device(device)
    if batch_size is not None:
        return {"batch_size": int(batch_size), "memory_format": "channels_last", "batch_size_from": "--batch-size"}
    if device.type == "cuda":
        return {"batch_size": CUDA_BATCH_SIZE, "memory_format": "channels_last", "batch_size_from": "default for cuda"}
    name = classifier.spec.display_name
    path, key = calibration_cache(name, size)
    cached = _read_calibration(path, key)
    if cached is not None:
        return {**cached, "batch_size_from": "cached cpu calibration"}
    if num_images is not None and num_images < CALIBRATE_MIN_IMAGES:
        return {
            "batch_size": min(SMALL_SET_BATCH_SIZE, max(1, num_images)),
            "memory_format": "channels_last",
            "batch_size_from": "small set default",
        }
    import sys

    print(
        f"{name}: calibrating the CPU batch size (a few seconds, once per model and machine; --batch-size N skips it)",
        file=sys.stderr,
        flush=True,
    )
    chosen = calibrate_cpu_batch(classifier, device, size)
    _write_calibration(path, key, chosen)
    return {**chosen, "batch_size_from": "cpu calibration"}


def calibrate_cpu_batch(classifier: LoadedClassifier, device: torch.device, size: Sequence[int]) -> dict[str, Any]:
    """A short calibration on random inputs of the model's size: per-image forward time at each of
    CPU_BATCH_CANDIDATES (largest first), channels-last, stopping once a batch is 10 % slower per image
    than the best so far or after CALIBRATION_BUDGET_S (once 4 were tried), then the best batch size again in the
    default memory format; the fastest wins: `{"batch_size", "memory_format", "calibration"}`. On a loaded
    machine the choice moves with the load (measured here at load 11 on 2 cores: batch 1 took 5.8 s per image
    with 2 threads); the entry records the timings. On this project's 2-core CPU, EfficientNet-Lite0 was 2.5x
    faster per image at batch 4 than at 32 (issue 18): the best batch is small and model- and machine-dependent.
    """
    model = classifier.model.to(device).eval()
    h, w = (int(v) for v in size[-2:])
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    timings: dict[str, float] = {}
    best_b, best = CPU_BATCH_CANDIDATES[0], math.inf
    try:
        model.to(memory_format=torch.channels_last)
        for b in CPU_BATCH_CANDIDATES:
            x = torch.randn(b, 3, h, w, generator=gen).contiguous(memory_format=torch.channels_last)
            t = _per_image_seconds(model, x)
            timings[f"channels_last b{b}"] = round(t * 1000, 3)
            if t < best:
                best_b, best = b, t
            tried = len(timings)
            # the budget stops it only after 32..4 were tried: a first, slow large batch must not decide alone
            if t > 1.1 * best or (tried >= 4 and time.perf_counter() - start > CALIBRATION_BUDGET_S):
                break
        model.to(memory_format=torch.contiguous_format)
        t = _per_image_seconds(model, torch.randn(best_b, 3, h, w, generator=gen))
        timings[f"contiguous b{best_b}"] = round(t * 1000, 3)
        fmt = "contiguous" if t < best else "channels_last"
    finally:
        model.to(memory_format=torch.channels_last)
    return {
        "batch_size": best_b,
        "memory_format": fmt,
        "calibration": {
            "ms_per_image": timings,
            "seconds": round(time.perf_counter() - start, 2),
            "threads": torch.get_num_threads(),
        },
    }


# ---------------------------------------------------------------------------------------------
# decoding and preprocessing (runs inside the DataLoader workers)


def _complete_png_or_jpeg(data: bytes) -> bool:
    """A PNG that ends in its IEND chunk, or a JPEG that ends in its EOI marker (trailing padding allowed)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return data[-12:-8] == b"\x00\x00\x00\x00" and data[-8:-4] == b"IEND"
    if data[:3] == b"\xff\xd8\xff":
        return b"\xff\xd9" in data[-64:]
    return False


def _decode_tensor(data: bytes) -> torch.Tensor | None:
    """uint8 CHW RGB tensor from torchvision's decoder, or None where it cannot (then PIL decides, and names the
    error of a broken image). The caller has checked the header's size."""
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:  # a torchvision without its decoders (deprecated in 0.29): PIL
        return None
    if not _complete_png_or_jpeg(data):  # other formats, and truncated files (libpng would print to stderr): PIL
        return None
    try:
        x = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)
    except Exception:  # a format torchvision does not read (or a broken file): PIL's turn
        return None
    return x if x.dtype == torch.uint8 and x.ndim == 3 and x.shape[0] == 3 else None


class ImageItems(torch.utils.data.Dataset):
    """Items (uint8 tensor, label, index, error) decoded on demand, so only the current batches are in memory.

    `decode` (preprocessing.DECODE_PATHS): "pil" (the default) decodes with PIL and runs `transform` on the PIL
    image, bit for bit timm's own eval transform; "torchvision" decodes with `torchvision.io.decode_image` and runs
    the transform's steps on the uint8 tensor (`preprocessing.tensor_transform`) when the transform allows it,
    faster but only within a measured tolerance (see preprocessing.py), else PIL. `self.decode` says which path is
    used. Every image's header is checked against `untrusted.MAX_IMAGE_PIXELS` before either decoder runs. A
    refused or failed decode yields a zero tensor and the reason; the main process names the image and stops.
    """

    def __init__(
        self,
        transform: Callable,
        labels: np.ndarray,
        rows: Any = None,
        paths: Sequence[Path] | None = None,
        size=(224, 224),
        decode: str = DEFAULT_DECODE,
    ):
        from spurbench.evaluate.preprocessing import tensor_transform

        if decode not in DECODE_PATHS:
            raise ValueError(f"decode must be one of {DECODE_PATHS}, got {decode!r}")
        self.transform, self.labels, self.rows, self.paths, self.size = transform, labels, rows, paths, tuple(size)
        self.tensor_transform = tensor_transform(transform) if decode == "torchvision" else None
        self.decode = "torchvision" if self.tensor_transform is not None else "pil"
        # torchvision 0.29 warns on every decode that its decoders are deprecated (for TorchCodec): said once, in the docs
        warnings.filterwarnings(
            "ignore", message="The image decoding and encoding capabilities of TorchVision", category=DeprecationWarning
        )

    def __len__(self) -> int:
        return len(self.labels)

    def encoded(self, i: int) -> bytes:
        """The encoded bytes of item `i`: its file, its row's embedded bytes, or the file its row points to
        (the one place a row's image is read)."""
        if self.paths is not None:
            return Path(self.paths[i]).read_bytes()
        cell = self.rows[i]["image"]
        return cell["bytes"] if cell.get("bytes") is not None else Path(cell["path"]).read_bytes()

    def __getitem__(self, i: int):
        try:
            data = self.encoded(i)
            # the header's size, before any decoder runs: a 200 KB PNG can claim 30000 x 30000 (2.7 GB decoded)
            image_size(data, "it")
            if self.tensor_transform is not None:
                x = _decode_tensor(data)
                if x is not None:
                    return self.tensor_transform(x).contiguous(), int(self.labels[i]), i, ""
            with open_image(data, "it") as im:
                img = im.convert("RGB")
            return self.transform(img), int(self.labels[i]), i, ""
        except Exception as err:  # too large / corrupt / truncated / missing image: named by the main process
            reason = (
                str(err)
                if isinstance(err, SpurbenchError)
                else f"cannot decode it ({first_line(err)}); replace or remove it"
            )
            return torch.zeros(3, *self.size, dtype=torch.uint8), int(self.labels[i]), i, reason

    def describe(self, i: int) -> str:
        if self.paths is not None:
            return f"'{self.paths[i]}'"
        path = self.rows[i]["image"].get("path")
        return f"row {i}" + (f" (path '{path}')" if path else "")


# ---------------------------------------------------------------------------------------------
# the prediction loop


@dataclass
class Predictions:
    """Per-image results, small arrays only (a few numbers per image)."""

    index: np.ndarray  # int[N] row index in the split
    label: np.ndarray  # int[N]
    target_prob: np.ndarray  # float[N] p_label
    top5: np.ndarray  # int[N, 5]
    top5_probs: np.ndarray  # float[N, 5]
    seconds: float = 0.0
    split: str | None = None  # the split the rows belong to (the predictions CSV's `split` column)
    reference: Predictions | None = None  # a shift set's reference rows scored with them (paired drop), if any

    @property
    def fooled_top1(self) -> np.ndarray:
        return self.top5[:, 0] == self.label

    @property
    def fooled_top5(self) -> np.ndarray:
        return (self.top5 == self.label[:, None]).any(axis=1)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise SpurbenchError(f"--device '{device}' is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SpurbenchError(f"--device {device} asked for, but this torch sees no CUDA GPU; use --device cpu")
    return dev


class ImageDecodeError(SpurbenchError):
    """An image of the data cannot be decoded: a problem of the data, not of the classifier being scored."""


def precision_for(device: torch.device, amp: bool) -> tuple[str, torch.dtype | None]:
    """(name recorded in the entry, autocast dtype or None). float32 unless --amp on CUDA (float16, as
    timm's validate.py --amp); CPU always runs float32."""
    if amp and device.type == "cuda":
        return "amp-float16", torch.float16
    return "float32", None


def predict(
    classifier: LoadedClassifier,
    items: ImageItems,
    *,
    batch_size: int = 32,
    workers: int = DEFAULT_WORKERS,
    device: torch.device | str | None = None,
    amp: bool = False,
    what: str = "images",
    desc: str | None = None,
    data_config: dict | None = None,
    class_mask: torch.Tensor | None = None,
    memory_format: str = "channels_last",
) -> Predictions:
    """Run the classifier over `items` in batches; workers decode while the model runs.

    Workers hand over uint8 images grouped by shape (`collate_by_shape`); each group is normalised on
    the device and classified; logits are divided by the classifier's temperature before the softmax.
    `data_config` gives the mean/std to normalise with (default: the classifier's); `memory_format`
    ("channels_last" or "contiguous", see `choose_batch`) the layout of the model and its inputs. `class_mask`
    (bool over the outputs, `--class-subset`) restricts the softmax and the top 5 to those classes; top-5 places
    past the subset's size are class -1 at probability 0.
    """
    from tqdm.auto import tqdm

    device = resolve_device(device)
    cuda = device.type == "cuda"
    # channels-last: faster convolutions on CUDA (tensor cores) and, mostly, on CPU (oneDNN) too
    fmt = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}[memory_format]
    forward = _Forward(
        classifier.model.to(device).to(memory_format=fmt),
        device,
        fmt,
        precision_for(device, amp)[1],
        float(getattr(classifier, "temperature", 1.0) or 1.0),
        class_mask.to(device) if class_mask is not None else None,
        data_config or classifier.data_config,
    )
    loader = torch.utils.data.DataLoader(
        items,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=cuda,
        collate_fn=collate_by_shape,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )
    start = time.perf_counter()
    with (
        torch.inference_mode(),
        tqdm(total=len(items), desc=desc or classifier.spec.display_name, unit="img", disable=None, leave=False) as bar,
    ):
        out = _collect(loader, forward, items, what, bar)
    if cuda:
        torch.cuda.synchronize(device)
    out.seconds = time.perf_counter() - start
    return out


def _collect(loader: Any, forward: _Forward, items: ImageItems, what: str, bar: Any) -> Predictions:
    """Every batch of `loader` through `forward`, into the arrays of one Predictions; an image that could not be
    decoded stops it, named."""
    n = len(items)
    out = Predictions(
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.int64),
        np.empty(n, dtype=np.float64),
        np.empty((n, TOPK), dtype=np.int64),
        np.empty((n, TOPK), dtype=np.float64),
    )
    pos = 0
    device = forward.device
    for groups, y, idx, errors in loader:
        bad = next((j for j, e in enumerate(errors) if e), None)
        if bad is not None:
            raise ImageDecodeError(f"{what} {items.describe(int(idx[bad]))}: {errors[bad]}")
        b = len(y)
        y_dev = y.to(device, non_blocking=device.type == "cuda")
        packed = torch.empty(b, 1 + 2 * TOPK, device=device)
        for x, where in groups:  # one forward per image shape in the batch (one group unless shapes differ)
            where = where.to(device)
            packed[where] = forward(x, y_dev[where])
        packed = packed.cpu().numpy()  # one small device-to-host copy per batch
        out.index[pos : pos + b] = idx.numpy()
        out.label[pos : pos + b] = y.numpy()
        out.target_prob[pos : pos + b] = packed[:, 0]
        out.top5_probs[pos : pos + b] = packed[:, 1 : 1 + TOPK]
        out.top5[pos : pos + b] = packed[:, 1 + TOPK :].astype(np.int64)
        pos += b
        bar.update(b)
    return out


@dataclass
class _Forward:
    """The model on its device and how `predict` runs it on one group of same-shape images."""

    model: torch.nn.Module
    device: torch.device
    fmt: torch.memory_format
    autocast_dtype: torch.dtype | None
    temperature: float
    mask: torch.Tensor | None  # bool over the outputs (--class-subset), or None
    data_config: dict

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """[p_label, top-5 probs, top-5 indices (exact in float32)] of every image of `x`."""
        x = x.to(self.device, non_blocking=self.device.type == "cuda")
        if x.dtype == torch.uint8:  # float items (build_transforms) come normalised already
            x = normalise_batch(x, self.data_config)
        x = x.contiguous(memory_format=self.fmt)
        dtype = self.autocast_dtype
        with torch.autocast(device_type=self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
            logits = self.model(x)
        logits = logits.float()
        if self.temperature != 1.0:
            logits = logits / self.temperature
        if self.mask is not None:
            logits = logits.masked_fill(~self.mask, float("-inf"))
        probs = logits.softmax(dim=-1)
        top_p, top_i = probs.topk(min(TOPK, probs.shape[-1]), dim=-1)
        if self.mask is not None:
            top_i = torch.where(self.mask[top_i], top_i, -1)
        if top_i.shape[-1] < TOPK:  # a label set of fewer than 5 classes: pad with class -1 at probability 0
            top_p = torch.nn.functional.pad(top_p, (0, TOPK - top_i.shape[-1]))
            top_i = torch.nn.functional.pad(top_i, (0, TOPK - top_i.shape[-1]), value=-1)
        target = probs.gather(1, labels.view(-1, 1))
        return torch.cat([target, top_p, top_i.float()], dim=1)
