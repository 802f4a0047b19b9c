"""What a build costs, on paper: FLOPs of every stage at real size, counted without any weights.

The real architectures are built on PyTorch's meta device (tensors with a shape and no data) from their
published configs, written below with the source of each number, and `torch.utils.flop_counter.FlopCounterMode`
counts the FLOPs of exactly the computation spurbench runs: a DreamBooth step (UNet and text encoder trained,
prior preservation), the SFSL extra (decode z0_hat with gradients, resize, the frozen feature model forward
and backward), one text-to-image sample, one img2img image (D3S), one inpainting (DDB), one textual-inversion
step, one detection (OWLv2 at 960 px + SAM at 1024 px), integrated gradients of a classifier. Nothing is
downloaded and no weight is read: a local diffusers folder contributes only its `config.json` files.

`spurbench build --recipe R --plan` (`plan` below) turns these counts into a bill: stages, models and their
download sizes, images to make, disk, and GPU-hours at a stated utilisation of a stated GPU. Each method's own
stages are written by the `plan` function of its module (spurbench.generate.methods); this module counts.
`benchmarks/cost_model.py` prints the per-stage table and the SFSL/DreamBooth ratio.

FLOPs here are what FlopCounterMode counts: 2 per multiply-add of matmuls, convolutions and attention
(element-wise ops, norms and softmax are not counted, as is usual); a backward counts what autograd runs
(weight gradients only for trained weights). GPU time = FLOPs / (peak x utilisation), so the utilisation
(model FLOPs utilisation) carries every inefficiency. The default, 0.2, is an assumption; `benchmarks/cost_model.py
--measure` on a GPU times the real-size models (random weights) and prints the utilisation they reach there.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spurbench.errors import SpurbenchError

__all__ = [
    "GPUS",
    "SD_ARCHS",
    "count_flops",
    "sd_arch",
    "dreambooth_step",
    "sfsl_extra",
    "sample_image",
    "img2img_image",
    "inpaint_image",
    "textual_inversion_step",
    "detect_image",
    "classifier_pass",
    "integrated_gradients",
    "plan",
    "format_plan",
]


# ---------------------------------------------------------------------------------------------
# GPUs: dense (no sparsity) tensor-core peaks from the vendors' datasheets, TFLOP/s.


@dataclass(frozen=True)
class GPU:
    name: str
    bf16: float  # dense bf16/fp16 tensor-core peak, TFLOP/s (mixed precision fp16 or bf16)
    fp32: float  # plain fp32 peak, TFLOP/s (mixed_precision "no"; TF32 is not assumed)
    memory_gb: int


GPUS: dict[str, GPU] = {
    "H100": GPU("NVIDIA H100 SXM", 989.4, 66.9, 80),  # H100 datasheet: 1979 bf16 with sparsity, half dense
    "H200": GPU("NVIDIA H200 SXM", 989.4, 66.9, 141),  # same chip as H100, more memory
    "A100": GPU("NVIDIA A100 SXM 80GB", 312.0, 19.5, 80),
    "L40S": GPU("NVIDIA L40S", 362.05, 91.6, 48),
    "L4": GPU("NVIDIA L4", 121.0, 30.3, 24),
}
DEFAULT_GPU = "H100"
DEFAULT_UTILIZATION = 0.2


def gpu_spec(name: str) -> GPU:
    key = name.upper()
    if key not in GPUS:
        raise SpurbenchError(f"--plan-gpu {name!r} is not known to the cost model; use one of {', '.join(GPUS)}")
    return GPUS[key]


# ---------------------------------------------------------------------------------------------
# Published architectures (only the fields that differ from the library defaults that matter).

# diffusers' UNet2DConditionModel defaults are SD v1's UNet (block_out_channels 320/640/1280/1280, 2 layers per
# block, attention_head_dim 8); CompVis/stable-diffusion-v1-4 unet/config.json (and v1-5's) adds:
_SD1_UNET = dict(sample_size=64, cross_attention_dim=768)
# stabilityai/stable-diffusion-2-base unet/config.json: OpenCLIP-H conditioning, per-block head dims, linear proj
_SD2_UNET = dict(
    sample_size=64, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20], use_linear_projection=True
)
# stabilityai/stable-diffusion-2-inpainting unet/config.json: SD-2's UNet with 9 input channels
# (noisy latents + mask + masked-image latents)
_SD2_INPAINT_UNET = dict(_SD2_UNET, in_channels=9)
# vae/config.json of all three repos (the SD VAE, f = 8, 4 latent channels)
_SD_VAE = dict(
    block_out_channels=[128, 256, 512, 512],
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    layers_per_block=2,
    latent_channels=4,
    sample_size=512,
)
# text_encoder/config.json: SD v1 uses OpenAI CLIP ViT-L/14's text tower (transformers' CLIPTextConfig defaults
# are the ViT-B/32 tower: hidden 512, 8 heads)
_SD1_TEXT = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    hidden_act="quick_gelu",
    projection_dim=768,
)
# SD 2: OpenCLIP ViT-H/14's text tower with its last layer dropped (penultimate layer features): 23 layers
_SD2_TEXT = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=23,
    num_attention_heads=16,
    hidden_act="gelu",
    projection_dim=512,
)
# SD v1 repos ship a safety checker (CLIP ViT-L/14 vision tower + projection, safety_checker/config.json),
# downloaded with the pipeline even where spurbench switches it off
_SD1_SAFETY = dict(
    hidden_size=1024,
    intermediate_size=4096,
    num_hidden_layers=24,
    num_attention_heads=16,
    patch_size=14,
    image_size=224,
    projection_dim=768,
)


@dataclass(frozen=True, eq=False)
class SDArch:
    """One Stable Diffusion architecture: configs of its parts, and what it is called. Equal (and hashed, for the
    caches below) by content."""

    name: str
    unet: dict
    vae: dict
    text: dict
    vae_factor: int = 8  # pixels per latent
    safety_checker: bool = False
    source: str = ""

    def latent(self, resolution: int) -> int:
        return resolution // self.vae_factor

    def _key(self) -> str:
        return json.dumps([self.unet, self.vae, self.text, self.vae_factor], sort_keys=True)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SDArch) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())


SD_ARCHS: dict[str, SDArch] = {
    "sd-v1": SDArch(
        "Stable Diffusion v1.x",
        _SD1_UNET,
        _SD_VAE,
        _SD1_TEXT,
        safety_checker=True,
        source="CompVis/stable-diffusion-v1-4 (= stable-diffusion-v1-5) config.json files",
    ),
    "sd-2-base": SDArch(
        "Stable Diffusion 2 base",
        _SD2_UNET,
        _SD_VAE,
        _SD2_TEXT,
        source="stabilityai/stable-diffusion-2-base config.json files",
    ),
    "sd-2-inpainting": SDArch(
        "Stable Diffusion 2 inpainting",
        _SD2_INPAINT_UNET,
        _SD_VAE,
        _SD2_TEXT,
        source="stabilityai/stable-diffusion-2-inpainting config.json files",
    ),
}

# AutoencoderTiny's defaults are TAESD (madebyollin/taesd, the SD v1/v2 latent space): 64 channels, 3 blocks.
TINY_DECODER_REPO = "madebyollin/taesd"

# Detection models as spurbench.detection pins them.
# google/owlv2-base-patch16-ensemble config.json: ViT-B/16 vision tower at 960 px; the text tower is CLIP's
# (transformers' Owlv2TextConfig defaults: 512 wide, 12 layers, 16 tokens)
OWLV2_VISION = dict(image_size=960, patch_size=16)
OWLV2_TOKENS = 16
# facebook/sam-vit-base: transformers' SamConfig defaults are the ViT-B image encoder at 1024 px
SAM_IMAGE = 1024


def sd_arch(base: Any, resolution: int | None = None, inpainting: bool = False) -> tuple[SDArch, str]:
    """The architecture of a recipe's `base_model` (or `inpainting`) section, and a note on how it was chosen.

    `tiny`: spurbench's tiny model. A local diffusers folder: its own config.json files (no weights read).
    A Hub id: matched by name against the published architectures above."""
    tiny = getattr(base, "tiny", None)
    if tiny is not None:
        from spurbench.tiny_models import tiny_text_config, tiny_unet_config, tiny_vae_config

        size = resolution or 64
        arch = SDArch(
            "spurbench tiny SD" + (" inpainting" if inpainting else ""),
            tiny_unet_config(size // 2, in_channels=9 if inpainting else 4),
            tiny_vae_config(size),
            tiny_text_config(),
            vae_factor=2,
            source="spurbench.tiny_models",
        )
        return arch, "built locally, no download"
    ident = str(getattr(base, "id", "") or "")
    folder = Path(ident).expanduser()
    if folder.is_dir() and (folder / "unet" / "config.json").is_file():
        configs = {}
        for part in ("unet", "vae", "text_encoder"):
            cfg = json.loads((folder / part / "config.json").read_text())
            configs[part] = {k: v for k, v in cfg.items() if not k.startswith("_")}
        down = len(configs["vae"].get("block_out_channels", [0, 0, 0, 0])) - 1
        arch = SDArch(
            f"local {folder.name}",
            configs["unet"],
            configs["vae"],
            configs["text_encoder"],
            vae_factor=2**down,
            safety_checker=(folder / "safety_checker").is_dir(),
            source=str(folder),
        )
        return arch, "local folder (its config.json files)"
    low = ident.lower()
    if inpainting or "inpainting" in low:
        known = "stable-diffusion-2" in low and "inpainting" in low
        return SD_ARCHS["sd-2-inpainting"], "published config" if known else f"{ident!r} costed as SD-2 inpainting"
    if "stable-diffusion-2" in low:
        return SD_ARCHS["sd-2-base"], "published config"
    if "stable-diffusion-v1" in low:
        return SD_ARCHS["sd-v1"], "published config"
    return SD_ARCHS["sd-v1"], f"architecture of {ident!r} unknown to the cost model: costed as SD v1"


# ---------------------------------------------------------------------------------------------
# Building on the meta device and counting.
# Every count builds its own models: a count sets requires_grad, train/eval and gradient checkpointing on what it
# builds, so models shared between counts would make one count depend on which ran before it. Only immutable
# results (integers) are cached.


def count_flops(fn: Callable[[], Any]) -> int:
    """FLOPs of `fn()` run on the meta device (build inputs and call models inside `fn`)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _no_grad(fn: Callable[[], Any]) -> int:
    import torch

    def run():
        with torch.no_grad():
            fn()

    return count_flops(run)


def _build(kind: str, config: dict) -> Any:
    """A new model of `kind` from a config, on the meta device (each call builds a fresh one)."""
    if kind == "unet":
        from diffusers import UNet2DConditionModel

        return UNet2DConditionModel.from_config(config)
    if kind == "vae":
        from diffusers import AutoencoderKL

        return AutoencoderKL.from_config(config)
    if kind == "tiny-vae":
        from diffusers import AutoencoderTiny

        return AutoencoderTiny.from_config(config)
    if kind == "text":
        from transformers import CLIPTextConfig, CLIPTextModel

        return CLIPTextModel(CLIPTextConfig(**config))
    if kind == "safety":
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        return CLIPVisionModelWithProjection(CLIPVisionConfig(**config))
    if kind == "timm":
        import timm

        return timm.create_model(config["model"], pretrained=False)
    if kind == "owlv2":
        from transformers import Owlv2Config, Owlv2ForObjectDetection

        return Owlv2ForObjectDetection(Owlv2Config(vision_config=config))
    if kind == "sam":
        from transformers import SamConfig, SamModel

        return SamModel(SamConfig())
    raise ValueError(f"unknown model kind {kind!r}")


def model(kind: str, config: dict, train: bool = False) -> Any:
    """A new model of `kind` on the meta device: frozen and in eval mode, or (`train`) trainable in train mode."""
    import torch

    with torch.device("meta"):
        m = _build(kind, config)
    return m.requires_grad_(train).train(train)


@functools.cache
def _parameters(kind: str, config_json: str) -> int:
    return sum(p.numel() for p in model(kind, json.loads(config_json)).parameters())


def parameters(kind: str, config: dict) -> int:
    return _parameters(kind, json.dumps(config, sort_keys=True))


@functools.cache
def _timm_input(name: str) -> int:
    cfg = getattr(model("timm", {"model": name}), "pretrained_cfg", None) or {}
    return int((cfg.get("input_size") or (3, 224, 224))[-1])


def _text_ids(prompts: int):
    import torch

    return torch.zeros(prompts, 77, dtype=torch.long)


def _unet_inputs(arch: SDArch, resolution: int, batch: int, channels: int | None = None) -> tuple:
    """Noisy latents and timesteps of a UNet call (`channels`: the latents' own, default the UNet's input)."""
    import torch

    h = arch.latent(resolution)
    c = arch.unet.get("in_channels", 4) if channels is None else channels
    return torch.randn(batch, c, h, h), torch.zeros(batch, dtype=torch.long)


def _backward(out) -> None:
    """A scalar loss on `out` and its backward (what a training step's loss costs is not counted)."""
    out.float().pow(2).mean().backward()


@functools.cache
def dreambooth_step(
    arch: SDArch,
    resolution: int,
    batch: int = 1,
    prior: bool = True,
    train_text_encoder: bool = True,
    gradient_checkpointing: bool = False,
) -> int:
    """One DreamBooth step: text encoder and UNet forward on instance (+ prior) images, MSE, backward into both."""
    n = batch * (2 if prior else 1)
    unet = model("unet", arch.unet, train=True)
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    te = model("text", arch.text, train=train_text_encoder)
    return count_flops(lambda: _backward(unet(*_unet_inputs(arch, resolution, n), te(_text_ids(n))[0]).sample))


@functools.cache
def sfsl_extra(
    arch: SDArch,
    resolution: int,
    feature_model: str,
    decoder: str = "full",
    batch: int = 1,
    gradient_checkpointing: bool = False,
) -> int:
    """What SFSL adds to a step for `batch` instance images: decode z0_hat with gradients (frozen decoder), resize to
    the feature model's input, its forward and backward (frozen), the cosine. The UNet's backward is shared with the
    denoising loss and not counted again. `gradient_checkpointing`: the trainer checkpoints the full VAE too (its
    forward is recomputed in the backward); AutoencoderTiny is not checkpointed."""
    import torch

    from spurbench.generate.features import FeatureModel

    vae = _decoder(arch, decoder)
    if gradient_checkpointing and decoder == "full":
        vae.enable_gradient_checkpointing()
    net = model("timm", {"model": feature_model})
    size = _timm_input(feature_model)
    data_config = {"input_size": (3, size, size), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3}

    def step():
        features = FeatureModel(net, data_config)  # spurbench's own preprocessing and class-wise features, on meta
        h = arch.latent(resolution)
        z0 = torch.randn(batch, 4, h, h, requires_grad=True)
        a = features.class_features(vae.decode(z0).sample, 0)
        (1 - torch.nn.functional.cosine_similarity(a, torch.randn_like(a), dim=1)).sum().backward()

    return count_flops(step)


def _decoder(arch: SDArch, decoder: str = "full") -> Any:
    """A frozen decoder: the pipeline's VAE (`full`) or AutoencoderTiny (`tiny`)."""
    return model("tiny-vae", {}) if decoder == "tiny" else model("vae", arch.vae)


@functools.cache
def decode_image(arch: SDArch, resolution: int, decoder: str = "full", grad: bool = False) -> int:
    """One latent decoded; `grad`: with the backward to the latent (the decoder itself frozen)."""
    import torch

    vae = _decoder(arch, decoder)

    def run():
        h = arch.latent(resolution)
        x = vae.decode(torch.randn(1, 4, h, h, requires_grad=grad)).sample
        if grad:
            _backward(x)

    return count_flops(run) if grad else _no_grad(run)


@functools.cache
def _unet_call(arch: SDArch, resolution: int, batch: int) -> int:
    import torch

    unet = model("unet", arch.unet)
    states = torch.Size([batch, 77, arch.unet.get("cross_attention_dim", 768)])
    return _no_grad(lambda: unet(*_unet_inputs(arch, resolution, batch), torch.randn(states)).sample)


@functools.cache
def _text_call(arch: SDArch, prompts: int) -> int:
    te = model("text", arch.text)
    return _no_grad(lambda: te(_text_ids(prompts))[0])


@functools.cache
def _encode_image(arch: SDArch, resolution: int) -> int:
    import torch

    vae = model("vae", arch.vae)
    return _no_grad(lambda: vae.encode(torch.randn(1, 3, resolution, resolution)).latent_dist.mean)


def _denoise(arch: SDArch, resolution: int, steps: int, guidance_scale: float) -> int:
    cfg = guidance_scale > 1  # classifier-free guidance: conditional and unconditional in one batch of 2
    return steps * _unet_call(arch, resolution, 2 if cfg else 1) + _text_call(arch, 2 if cfg else 1)


def sample_image(arch: SDArch, resolution: int, steps: int, guidance_scale: float = 7.5) -> int:
    """One text-to-image sample (batch 1): prompts encoded, `steps` UNet calls, one decode."""
    return _denoise(arch, resolution, steps, guidance_scale) + decode_image(arch, resolution)


def img2img_image(arch: SDArch, resolution: int, steps: int, strength: float, guidance_scale: float) -> int:
    """One img2img image (D3S): the guide encoded, int(steps x strength) UNet calls (diffusers' count), one decode."""
    return inpaint_image(arch, resolution, min(int(steps * strength), steps), guidance_scale)


def inpaint_image(arch: SDArch, resolution: int, steps: int, guidance_scale: float) -> int:
    """One inpainting (DDB): the masked photo encoded, `steps` calls of the 9-channel UNet, one decode."""
    return _encode_image(arch, resolution) + sample_image(arch, resolution, steps, guidance_scale)


@functools.cache
def textual_inversion_step(arch: SDArch, resolution: int, batch: int = 1) -> int:
    """One textual-inversion micro-step: text encoder forward and backward (only the token embeddings learn),
    frozen UNet forward and backward to its text states."""
    unet = model("unet", arch.unet)
    te = model("text", arch.text)
    te.get_input_embeddings().weight.requires_grad_(True)
    return count_flops(
        lambda: _backward(unet(*_unet_inputs(arch, resolution, batch, channels=4), te(_text_ids(batch))[0]).sample)
    )


@functools.cache
def classifier_pass(name: str, batch: int = 1) -> int:
    """A timm classifier's forward at its input size."""
    import torch

    net, size = model("timm", {"model": name}), _timm_input(name)
    return _no_grad(lambda: net(torch.randn(batch, 3, size, size)))


@functools.cache
def integrated_gradients(name: str, steps: int) -> int:
    """Integrated gradients of one image (DDB's pruning): `steps` interpolated inputs, forward and input backward."""
    import torch

    net, size = model("timm", {"model": name}), _timm_input(name)
    return count_flops(lambda: net(torch.randn(steps, 3, size, size, requires_grad=True))[:, 0].sum().backward())


@functools.cache
def owlv2_image() -> int:
    """OWLv2 base/16 at 960 px with one text query of 16 tokens."""
    import torch

    det = model("owlv2", OWLV2_VISION)
    # no attention_mask: transformers' mask helper reads it with .item(), which meta tensors cannot do;
    # an all-ones mask changes no FLOP count
    return _no_grad(
        lambda: det(input_ids=torch.zeros(1, OWLV2_TOKENS, dtype=torch.long), pixel_values=torch.randn(1, 3, 960, 960))
    )


@functools.cache
def sam_image() -> int:
    """SAM ViT-B at 1024 px with one box prompt."""
    import torch

    sam = model("sam", {})
    return _no_grad(lambda: sam(pixel_values=torch.randn(1, 3, SAM_IMAGE, SAM_IMAGE), input_boxes=torch.zeros(1, 1, 4)))


def detect_image(detector: str = "owlv2", segmenter: str | None = "sam") -> int:
    """One detection (+ segmentation). Only OWLv2 and SAM are costed; tiny (random toy) models count 0."""
    return (owlv2_image() if detector == "owlv2" else 0) + (sam_image() if segmenter == "sam" else 0)


# ---------------------------------------------------------------------------------------------
# The plan of a recipe


@dataclass
class Line:
    stage: str
    count: int  # how many units
    unit: str  # "step", "image", ...
    flops_each: int
    note: str = ""

    @property
    def flops(self) -> int:
        return self.count * self.flops_each


@dataclass
class Download:
    what: str
    source: str
    params: int
    bytes: int
    note: str = ""


@dataclass
class Plan:
    recipe: str
    method: str
    classes: int
    resolution: int
    precision: str  # "fp16"/"bf16"/"no"
    gpu: GPU
    utilization: float
    lines: list[Line] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    images: int = 0  # images exported
    extra_images: int = 0  # images made but not exported (class priors)
    disk_bytes: int = 0  # the export + kept state
    disk_peak_note: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def flops(self) -> int:
        return sum(line.flops for line in self.lines)

    @property
    def peak(self) -> float:
        return (self.gpu.bf16 if self.precision in ("fp16", "bf16") else self.gpu.fp32) * 1e12

    def add(self, stage: str, count: int, unit: str, flops_each: int, note: str = "") -> None:
        """One more stage line."""
        self.lines.append(Line(stage, count, unit, flops_each, note))

    def gpu_hours(self, flops: int | None = None) -> float:
        return (self.flops if flops is None else flops) / (self.peak * self.utilization) / 3600


# PNG bytes per pixel of generated photos (measured on SD images: 1.2-1.8; the export stores PNG)
PNG_BYTES_PER_PIXEL = 1.5
# an ImageNet class folder holds about 1300 training photos (used when a recipe's folder is not on this machine)
IMAGENET_PHOTOS_PER_CLASS = 1300


def png_bytes(resolution: int) -> int:
    """The disk size of one exported PNG at `resolution` px (estimate)."""
    return int(resolution**2 * PNG_BYTES_PER_PIXEL)


def add_sd_download(p: Plan, what: str, base: Any, resolution: int, inpainting: bool = False) -> SDArch:
    """Cost a recipe's Stable Diffusion section (`base_model` or `inpainting`) as a download; returns its
    architecture."""
    arch, note = sd_arch(base, resolution, inpainting=inpainting)
    parts = [("unet", arch.unet), ("vae", arch.vae), ("text", arch.text)]
    if arch.safety_checker:
        parts.append(("safety", _SD1_SAFETY))
    params = sum(parameters(k, c) for k, c in parts)
    p.downloads.append(Download(what, base.id or "tiny", params, 4 * params, note))
    return arch


def pipeline_bytes(arch: SDArch) -> int:
    """Disk size of a fine-tuned pipeline saved in fp32 (the safety checker is not saved with it)."""
    return 4 * sum(parameters(k, c) for k, c in (("unet", arch.unet), ("vae", arch.vae), ("text", arch.text)))


def add_timm_download(p: Plan, what: str, spec: dict | None) -> str | None:
    """Cost a recipe's timm classifier section as a download; returns the timm model name (None without one)."""
    if not spec:
        return None
    from spurbench.classifiers import ClassifierSpec

    s = ClassifierSpec.from_dict(spec)
    params = parameters("timm", {"model": s.model})
    weights = spec.get("weights") if isinstance(spec.get("weights"), dict) else {}
    source = str(weights.get("hub") or weights.get("package") or s.model)
    p.downloads.append(Download(what, source, params, 4 * params, "weights only; a training checkpoint may be larger"))
    return s.model


def add_model_download(p: Plan, what: str, source: str, kind: str, config: dict) -> None:
    params = parameters(kind, config)
    p.downloads.append(Download(what, source, params, 4 * params))


def plan(
    recipe: Any,
    classes: list | None = None,
    recipe_path: str | Path | None = None,
    gpu: str = DEFAULT_GPU,
    utilization: float = DEFAULT_UTILIZATION,
) -> Plan:
    """The bill of `recipe` for `classes` (default: all of the recipe's), from the cost model; loads no weights.
    Each method writes its own stages into the plan (`plan` of its module in spurbench.generate.methods)."""
    from spurbench.generate.methods import get_method

    if not 0 < utilization <= 1:
        raise SpurbenchError(f"--plan-utilization must be a fraction in (0, 1], got {utilization}")
    classes = list(recipe.classes if classes is None else classes)
    method = getattr(recipe, "method", "sfsl")
    p = Plan(
        recipe=recipe.name,
        method=method,
        classes=len(classes),
        resolution=int(getattr(recipe, "resolution", 512)),
        precision=str(getattr(recipe, "mixed_precision", "no") or "no"),
        gpu=gpu_spec(gpu),
        utilization=utilization,
    )
    get_method(method).plan(p, recipe, classes)
    if recipe_path is not None:
        from spurbench.generate.verify_stage import load_verify_section

        check = load_verify_section(recipe_path)
        if check is not None:
            if check.detector == "owlv2" and check.model is None:
                p.add("verify (OWLv2 on every exported image)", p.images, "image", owlv2_image())
            else:
                p.notes.append(f"verify with detector {check.detector!r} is not costed (only the default OWLv2 is)")
    return p


# ---------------------------------------------------------------------------------------------
# Printing


def _si(x: float, unit: str = "") -> str:
    for scale, prefix in ((1e18, "E"), (1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _hours(h: float) -> str:
    return f"{h:,.1f}" if h >= 1 else f"{h:.3f}" if h >= 0.001 else f"{h:.1e}"


def format_plan(p: Plan) -> str:
    peak_kind = "dense bf16/fp16" if p.precision in ("fp16", "bf16") else "fp32 (mixed_precision no)"
    out = [
        f"plan for recipe {p.recipe} (method {p.method}): {p.classes} class(es) at {p.resolution} px, mixed precision {p.precision}",
        "",
        "models to download (float32 weights; nothing is downloaded by --plan):",
    ]
    for d in p.downloads:
        out.append(
            f"  {d.what:<34} {d.source:<48} {d.params / 1e6:>8.1f} M params  {d.bytes / 1e9:6.2f} GB"
            + (f"  ({d.note})" if d.note else "")
        )
    out.append(f"  {'total':<34} {'':<48} {'':>17}  {sum(d.bytes for d in p.downloads) / 1e9:6.2f} GB")
    out += ["", f"{'stage':<46} {'count':>12}  {'FLOPs each':>11}  {'FLOPs total':>11}  {'GPU-hours':>9}  note"]
    for line in p.lines:
        out.append(
            f"{line.stage:<46} {line.count:>8,} {line.unit:<5} {_si(line.flops_each, 'FLOP'):>11}  {_si(line.flops, 'FLOP'):>11}  "
            f"{_hours(p.gpu_hours(line.flops)):>9}  {line.note}"
        )
    out.append(f"{'total':<46} {'':>12}  {'':>11}  {_si(p.flops, 'FLOP'):>11}  {_hours(p.gpu_hours()):>9}")
    out += [
        "",
        f"images to make: {p.images:,} exported" + (f" + {p.extra_images:,} class priors" if p.extra_images else ""),
        f"disk needed: about {_si(p.disk_bytes, 'B')} ({p.disk_peak_note}), plus {_si(sum(d.bytes for d in p.downloads), 'B')} of models in the Hugging Face cache",
        f"GPU-hours: {_hours(p.gpu_hours())} on one {p.gpu.name} at {p.utilization:.0%} of its {p.gpu.bf16 if p.precision in ('fp16', 'bf16') else p.gpu.fp32:g} "
        f"TFLOP/s {peak_kind} peak (wall-clock on N GPUs: / N; classes are sharded)",
        "FLOPs: counted by torch.utils.flop_counter.FlopCounterMode on the real architectures built on the meta device "
        "(matmuls, convolutions, attention; 2 FLOPs per multiply-add).",
    ]
    out += [f"note: {n}" for n in p.notes]
    return "\n".join(out)
