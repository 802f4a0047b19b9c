"""Image preprocessing for evaluation: which size, which resize/crop, and how batches are formed.

Workers only decode and resize/crop (PIL), and hand over uint8 CHW tensors: 4x less to copy between
processes than float32, and the float conversion plus mean/std normalisation then runs once per batch
in the main process (`normalise_batch`), with exactly the arithmetic of torchvision's `ToTensor` +
`Normalize` (divide by 255, subtract the mean, divide by the std), so results are bit-identical to the
per-image float transforms.

Decoding (`spurbench eval --decode`, `DECODE_PATHS`):
- `pil`, the default: PIL decodes the bytes and timm's own eval transform runs on the PIL image, so the uint8
  tensor is bit for bit what `timm.data.create_transform(**resolve_data_config(model=...))` gives on a PIL image
  (tests/test_decode.py: max abs diff 0 on real photos of several sizes, PNG and JPEG).
  A faster lossless decoder feeding PIL's resize was measured (issue 23): `torchvision.io.decode_image` gives the
  same pixels as PIL on 48 PNG and 96 JPEG (4:2:0 and 4:4:4, quality 90) encodings of 8 scikit-image /
  scikit-learn photos at 6 sizes, but it saves nothing worth a second path: decode + PIL resize took the same
  time within noise (e.g. 1024x768 JPEG 9.1 ms PIL vs 11.2 ms torchvision + `Image.fromarray`, PNG 56 vs 55 ms),
  because the resize, not the decoder, dominates. So the default is PIL throughout.
- `torchvision`, an explicit opt-in: `torchvision.io.decode_image` and the same steps (timm's `Resize` +
  `CenterCrop`, or the Spurious ImageNet ones) on the uint8 tensor (`tensor_transform`), which
  `benchmarks/eval_throughput.py` measured at about 1/3 (JPEG) to 2/3 (PNG) of the CPU time of PIL in issue 18 (a
  rerun at load 11-13 for issue 23 measured 9.2 ms vs PIL's 8.0 ms per PNG: the gain depends on the machine). Not bit-equal:
  torchvision's antialiased uint8 resize rounds differently from PIL's. Measured on 8 real photos at 5 sizes,
  PNG and JPEG, through both preprocessings' transforms (320 images): worst 12 levels of 255 per pixel, mean
  absolute difference at most 0.21 (tested against DECODE_MAX_ABS_DIFF / DECODE_MEAN_ABS_DIFF, which leave room
  for the 15 levels issue 23 saw on the noise smoke sets); issue 23 also found that, on 190
  photos, EfficientNet-Lite0's top-1 changed on 7 and p of the PIL top-1 moved by up to 0.148. Entries record the
  path (`loop.decode`) and the leaderboard ranks the paths apart (`leaderboard.comparability_key`).
  torchvision 0.29 deprecates its image decoders (for TorchCodec); where they are gone, everything takes the PIL
  path. Transforms with other steps (a zoo's own) and images torchvision cannot decode take the PIL path too.

Two preprocessings:
- `timm`: timm's eval transform for the model's resolved data config (what timm's `validate.py` does);
  with `use_prefetcher=True` timm itself ends that transform in a uint8 tensor.
- `spurious-imagenet`: the released Spurious ImageNet code's (`dataset/spurious_score.py`): size = the
  model's `test_input_size` when its timm config declares one, else `input_size`; spurious images
  resized so the shorter side is `size` (aspect kept, no crop), real images ("positives") resized to
  `int(256 / 224 * size)` then center-cropped to `size`; both bicubic on PIL images.
  Spurious images of different aspect ratios then have different shapes: `collate_by_shape` groups the
  images of a batch by shape and the model runs once per group (no padding, so no pixel is invented and
  every image is scored exactly as it would be alone).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from spurbench.errors import SpurbenchError

if TYPE_CHECKING:  # torch is imported where used: the leaderboard reads DEFAULT_DECODE without it
    import torch

PREPROCESSING = ("timm", "spurious-imagenet")
#: `--decode` paths: "pil" is timm's own transform bit for bit; "torchvision" faster, within the tolerance below
DECODE_PATHS = ("pil", "torchvision")
DEFAULT_DECODE = "pil"
#: the measured tolerance of the torchvision path against the PIL transform, uint8 levels (see the module's docstring)
DECODE_MAX_ABS_DIFF = 16
DECODE_MEAN_ABS_DIFF = 0.25


def check_preprocessing(preprocessing: str) -> None:
    if preprocessing not in PREPROCESSING:
        raise SpurbenchError(f"unknown preprocessing '{preprocessing}'; use one of {', '.join(PREPROCESSING)}")


def tensor_transform(transform: Callable) -> Callable | None:
    """The same transform on a uint8 CHW tensor instead of a PIL image, when every step of `transform` is
    one torchvision applies to tensors as well (Resize, CenterCrop) followed by the PIL-to-uint8 step;
    None for anything else (the caller then decodes with PIL)."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", [transform]))
    if not steps or type(steps[-1]).__name__ not in ("PILToTensor", "MaybePILToTensor"):
        return None
    geometric = steps[:-1]
    for t in geometric:
        if type(t) not in (T.Resize, T.CenterCrop):
            return None
        if isinstance(t, T.Resize) and t.antialias is False:
            return None

    def apply(x: torch.Tensor) -> torch.Tensor:
        for t in geometric:
            x = t(x)
        return x

    return apply


def data_config_for(model: torch.nn.Module, preprocessing: str) -> dict:
    """timm's resolved data config of `model`; for `spurious-imagenet` at its test size when declared."""
    import timm.data

    check_preprocessing(preprocessing)
    return dict(timm.data.resolve_data_config(model=model, use_test_size=preprocessing == "spurious-imagenet"))


def build_uint8_transforms(data_config: dict, preprocessing: str = "timm") -> tuple[Callable, Callable]:
    """(transform for spurious images, transform for positives), PIL image -> uint8 CHW tensor.

    `data_config` is the one `data_config_for` resolved (its `input_size` is the size used).
    """
    from torchvision import transforms as T

    if preprocessing == "timm":
        import timm.data

        # use_prefetcher=True: timm's eval transform without ToTensor/Normalize, ending in a uint8 tensor
        t = timm.data.create_transform(**data_config, use_prefetcher=True)
        return t, t
    check_preprocessing(preprocessing)
    h, w = data_config["input_size"][-2:]
    if h != w:
        raise SpurbenchError(
            f"--preprocessing spurious-imagenet needs a square input size, the model's is {h}x{w}; use --preprocessing timm"
        )
    bicubic = T.InterpolationMode.BICUBIC
    spurious = T.Compose([T.Resize(h, interpolation=bicubic), T.PILToTensor()])
    positive = T.Compose([T.Resize(int(256 / 224 * h), interpolation=bicubic), T.CenterCrop(h), T.PILToTensor()])
    return spurious, positive


def normalise_batch(x: torch.Tensor, data_config: dict) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> float32 normalised, the same arithmetic as ToTensor + Normalize."""
    import torch

    mean = torch.as_tensor(data_config["mean"], dtype=torch.float32, device=x.device).view(-1, 1, 1)
    std = torch.as_tensor(data_config["std"], dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.to(torch.float32).div_(255).sub_(mean).div_(std)


def build_transforms(data_config: dict, preprocessing: str = "timm") -> tuple[Callable, Callable]:
    """Float versions of `build_uint8_transforms` (PIL -> normalised float tensor), one image at a time."""
    spurious, positive = build_uint8_transforms(data_config, preprocessing)

    def finish(t: Callable) -> Callable:
        return lambda img: normalise_batch(t(img).unsqueeze(0), data_config)[0]

    return finish(spurious), finish(positive)


def collate_by_shape(
    batch: Sequence[tuple[torch.Tensor, int, int, str]],
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor, torch.Tensor, list[str]]:
    """DataLoader collate: ([(images of one shape stacked, their positions in the batch)], labels, indices, errors).

    Runs in the worker, so the stacking happens there, as with the default collate.
    """
    import torch

    groups: dict[tuple[int, ...], list[int]] = {}
    for pos, item in enumerate(batch):
        groups.setdefault(tuple(item[0].shape), []).append(pos)
    stacked = [(torch.stack([batch[p][0] for p in ps]), torch.tensor(ps, dtype=torch.long)) for ps in groups.values()]
    labels = torch.tensor([b[1] for b in batch], dtype=torch.long)
    index = torch.tensor([b[2] for b in batch], dtype=torch.long)
    return stacked, labels, index, [b[3] for b in batch]
