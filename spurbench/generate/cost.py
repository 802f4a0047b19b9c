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
(weight gradients only for trained weights). Time per stage = FLOPs / (peak x the utilisation of its kind of
stage: train, sample, vision) + the memory traffic FLOPs miss (AdamW, clipping, GradScaler, autocast copies:
bytes / bandwidth) + fixed costs (weights read from disk, pipelines built, checkpoints written). The utilisations,
bandwidth and disk figures come from a measured profile of the GPU kind (spurbench/generate/profiles/<kind>.yaml,
written by `benchmarks/cost_model.py --measure --write-profile`), else from stated defaults (DEFAULT_UTILIZATIONS,
the datasheet bandwidth, DEFAULT_IO). Peak memory per stage: MemTracker on fake tensors (`track_peak`).
"""

from __future__ import annotations

import functools
import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spurbench.errors import SpurbenchError
from spurbench.tiny_models import tower_config

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
    memory_gb: float
    bandwidth: float  # memory (HBM/GDDR) bandwidth, GB/s, datasheet


GPUS: dict[str, GPU] = {
    "H100": GPU("NVIDIA H100 SXM", 989.4, 66.9, 80, 3350),  # datasheet: 1979 bf16 with sparsity, half dense
    "H200": GPU("NVIDIA H200 SXM", 989.4, 66.9, 141, 4800),  # same chip as H100, more and faster memory
    "A100": GPU("NVIDIA A100 SXM 80GB", 312.0, 19.5, 80, 2039),
    "L40S": GPU("NVIDIA L40S", 362.05, 91.6, 48, 864),
    "L4": GPU("NVIDIA L4", 121.0, 30.3, 24, 300),
}
DEFAULT_GPU = "H100"
#: a CPU is priced only from a profile measured on it (`benchmarks/cost_model.py --measure --device cpu`)
CPU = "CPU"


def gpu_spec(name: str) -> GPU:
    key = name.upper()
    if key not in GPUS:
        raise SpurbenchError(
            f"--plan-gpu {name!r} is not known to the cost model; use one of {', '.join(GPUS)} "
            f"(or {CPU} with --plan-profile)"
        )
    return GPUS[key]


# ---------------------------------------------------------------------------------------------
# Stage kinds and what a stage costs besides its FLOPs.

#: The utilisation (model FLOPs utilisation) of each kind of stage when no profile of the GPU is found: stated
#: assumptions, not measurements. train: a DreamBooth / textual-inversion step at batch 1-2 (+ prior) keeps a GPU
#: busy a few per cent of peak (launch overheads, small matmuls, gradient checkpointing's recompute is counted
#: as FLOPs): 400-800 DreamBooth steps take 5-15 min on an A100 in practice. sample: batched denoising at
#: UNet batch 8-32 reaches 15-25 %. vision: batch-1 detection, classification, integrated gradients.
DEFAULT_UTILIZATIONS: dict[str, float] = {"train": 0.06, "sample": 0.2, "vision": 0.1}
#: Disk and pipeline-building figures when no profile says otherwise (assumptions: a cloud volume or an SSD
#: shared with other jobs; local NVMe reads 2-7 GB/s). pipeline_build_s: constructing a diffusers pipeline's
#: modules and moving them to the device, besides reading the weights.
DEFAULT_IO: dict[str, float] = {"disk_read_gbs": 1.0, "disk_write_gbs": 0.5, "pipeline_build_s": 3.0}

#: Memory traffic of a training step that FlopCounterMode does not see, bytes per trained (float32) parameter.
#: AdamW (torch.optim.AdamW, foreach): reads parameter, gradient, exp_avg, exp_avg_sq, writes parameter (twice:
#: decoupled weight decay, then the update), exp_avg, exp_avg_sq -> 9 x 4 bytes. clip_grad_norm_: reads every
#: gradient for the norm, then reads and writes it to scale -> 3 x 4. GradScaler.unscale_ (fp16 only): reads
#: and writes every gradient -> 2 x 4. Autocast (fp16/bf16): every forward reads the float32 weight and writes
#: its 2-byte copy -> 6 per forward (gradient checkpointing runs the forward twice).
TRAFFIC_PER_PARAMETER: dict[str, int] = {"AdamW": 36, "clipping": 12, "grad scaler": 8, "autocast copies": 6}


def step_traffic(trained: int, precision: str, checkpointing: bool, clipping: bool = True) -> tuple[int, str]:
    """Bytes a training step moves outside the counted FLOPs for `trained` float32 parameters, and the breakdown."""
    parts = {"AdamW": TRAFFIC_PER_PARAMETER["AdamW"]}
    if clipping:
        parts["clipping"] = TRAFFIC_PER_PARAMETER["clipping"]
    if precision == "fp16":
        parts["grad scaler"] = TRAFFIC_PER_PARAMETER["grad scaler"]
    if precision in ("fp16", "bf16"):
        parts["autocast copies"] = TRAFFIC_PER_PARAMETER["autocast copies"] * (2 if checkpointing else 1)
    per = sum(parts.values())
    note = f"{trained / 1e6:.0f} M fp32 params x {per} B (" + ", ".join(f"{k} {v}" for k, v in parts.items()) + ")"
    return trained * per, note


# ---------------------------------------------------------------------------------------------
# Measured profiles: one versioned file per GPU kind (spurbench/generate/profiles/<kind>.yaml), written by
# `benchmarks/cost_model.py --measure`.

PROFILES_DIR = Path(__file__).with_name("profiles")
_PROFILE_KEYS = ("kind", "device", "torch", "diffusers", "date", "command", "peak_tflops", "bandwidth_gbs")


@dataclass(frozen=True)
class Profile:
    """What one GPU kind (or a CPU) measured: the utilisation of each kind of stage, the bandwidth an optimizer
    update reached, disk and pipeline-building figures, and where they came from."""

    kind: str
    device: str
    torch: str
    diffusers: str
    date: str
    command: str
    peak_tflops: float  # the peak the utilisations are fractions of
    bandwidth_gbs: float  # what the optimizer update + clipping (+ scaler) reached, GB/s
    utilization: dict[str, float]
    io: dict[str, float]
    source: str = ""

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in _PROFILE_KEYS}
        d["utilization"] = dict(self.utilization)
        d.update(self.io)
        return d


def _number(data: dict, key: str, what: str, upper: float = 1e9) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= upper:
        raise SpurbenchError(f"{what}: key {key!r} must be a number in (0, {upper:g}], got {value!r}; re-measure it")
    return float(value)


def load_profile(path: str | Path) -> Profile:
    """A profile file, checked; every problem is one line naming the file and the key."""
    from spurbench.untrusted import load_yaml

    path = Path(path).expanduser()
    what = f"cost profile '{path}'"
    try:
        text = path.read_bytes()
    except OSError as err:
        raise SpurbenchError(f"cannot read {what}: {err.strerror or err}; give an existing file") from None
    data = load_yaml(text, what)
    if not isinstance(data, dict):
        raise SpurbenchError(f"{what} is not a mapping; write it with benchmarks/cost_model.py --measure")
    missing = [k for k in _PROFILE_KEYS + ("utilization",) if k not in data]
    if missing:
        raise SpurbenchError(f"{what} lacks {', '.join(missing)}; write it with benchmarks/cost_model.py --measure")
    util = data["utilization"]
    if not isinstance(util, dict) or set(util) != set(DEFAULT_UTILIZATIONS):
        raise SpurbenchError(f"{what}: 'utilization' must give exactly {', '.join(DEFAULT_UTILIZATIONS)}")
    return Profile(
        **{k: str(data[k]) for k in ("kind", "device", "torch", "diffusers", "date", "command")},
        peak_tflops=_number(data, "peak_tflops", what),
        bandwidth_gbs=_number(data, "bandwidth_gbs", what),
        utilization={k: _number(util, k, f"{what} utilization", 1.0) for k in DEFAULT_UTILIZATIONS},
        io={k: _number(data, k, what) if k in data else v for k, v in DEFAULT_IO.items()},
        source=str(path),
    )


def profile_path(kind: str) -> Path:
    return PROFILES_DIR / f"{kind.lower()}.yaml"


def write_profile(profile: Profile, path: str | Path) -> None:
    """Write a profile (benchmarks/cost_model.py --measure) as YAML."""
    import yaml

    from spurbench.files import atomic_write

    header = "# spurbench cost profile, written by benchmarks/cost_model.py --measure (spurbench.generate.cost)\n"
    atomic_write(Path(path), (header + yaml.safe_dump(profile.to_dict(), sort_keys=False)).encode())


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
_SD1_TEXT = tower_config(768, 3072, 12, 12, hidden_act="quick_gelu", projection_dim=768)
# SD 2: OpenCLIP ViT-H/14's text tower with its last layer dropped (penultimate layer features): 23 layers
_SD2_TEXT = tower_config(1024, 4096, 23, 16, hidden_act="gelu", projection_dim=512)
# SD v1 repos ship a safety checker (CLIP ViT-L/14 vision tower + projection, safety_checker/config.json),
# downloaded with the pipeline even where spurbench switches it off
_SD1_SAFETY = tower_config(1024, 4096, 24, 16, patch_size=14, image_size=224, projection_dim=768)


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
OWLV2 = dict(vision_config=dict(image_size=960, patch_size=16))
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


#: kind -> (package, model class, its config class; None: a diffusers model, built with `from_config`)
_MODELS: dict[str, tuple[str, str, str | None]] = {
    "unet": ("diffusers", "UNet2DConditionModel", None),
    "vae": ("diffusers", "AutoencoderKL", None),
    "tiny-vae": ("diffusers", "AutoencoderTiny", None),
    "text": ("transformers", "CLIPTextModel", "CLIPTextConfig"),
    "safety": ("transformers", "CLIPVisionModelWithProjection", "CLIPVisionConfig"),
    "owlv2": ("transformers", "Owlv2ForObjectDetection", "Owlv2Config"),
    "sam": ("transformers", "SamModel", "SamConfig"),
}


def _build(kind: str, config: dict) -> Any:
    """A new model of `kind` from a config, on the meta device (each call builds a fresh one)."""
    if kind == "timm":
        import timm

        return timm.create_model(config["model"], pretrained=False)
    if kind not in _MODELS:
        raise ValueError(f"unknown model kind {kind!r}")
    package, model_class, config_class = _MODELS[kind]
    module = importlib.import_module(package)
    if config_class is None:
        return getattr(module, model_class).from_config(config)
    return getattr(module, model_class)(getattr(module, config_class)(**config))


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

    det = model("owlv2", OWLV2)
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
# Peak memory, estimated without a GPU.
# torch.distributed._tools.mem_tracker.MemTracker on FakeTensorMode: fake tensors carry shape, dtype and device
# and no data, so the real-size models are built and run (forward, backward, optimizer step) in seconds on any
# machine; MemTracker follows every tensor storage as it is allocated and freed and files it as parameter,
# gradient, optimizer state or activation, which is the breakdown a user needs to know what to change. (The
# meta device cannot be used: MemTracker counts storages, and meta tensors have none. FakeTensorMode alone
# reports no memory.) Autocast runs on the CPU device with bfloat16, which has fp16's 2 bytes per element.


@dataclass(frozen=True)
class Memory:
    """Peak memory of one stage, bytes, by kind at the moment of the peak; `other`: the same stage with the other
    gradient-checkpointing setting (None where checkpointing does not apply)."""

    weights: int
    gradients: int
    optimizer: int
    activations: int
    checkpointing: bool | None = None
    other: int | None = None

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations


def track_peak(build: Callable[[], tuple], step: Callable[[tuple], Any], iterations: int = 1) -> Memory:
    """Peak memory of `step(build())` run `iterations` times (2 for a training step: AdamW makes its state in the
    first), measured by MemTracker on fake tensors. Models are built inside, fresh for each call."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker, _MemRefType

    class Tracker(MemTracker):
        # MemTracker hooks the gradient of every parameter of a module it sees run, which raises on frozen ones
        # (frozen VAE, feature model, a text encoder of which only the embeddings learn): hook only modules whose
        # parameters all learn; a frozen parameter has no gradient to follow
        def _track_module_params_and_buffers(self, module, install_grad_hooks=True):
            trained = all(p.requires_grad for p in module.parameters())
            return super()._track_module_params_and_buffers(module, install_grad_hooks and trained)

    with FakeTensorMode(allow_non_fake_inputs=False):
        models = build()
        tracker = Tracker()
        tracker.track_external(*models)
        with tracker:
            for _ in range(iterations):
                tracker.reset_mod_stats()  # MemTracker tracks one iteration of a module at a time
                step(models)
        peak = tracker.get_tracker_snapshot("peak").get(torch.device("cpu"), {})
    get = lambda *kinds: int(sum(peak.get(k, 0) for k in kinds))  # noqa: E731
    return Memory(
        weights=get(_MemRefType.PARAM, _MemRefType.BUFFER),
        gradients=get(_MemRefType.GRAD),
        optimizer=get(_MemRefType.OPT),
        activations=get(_MemRefType.ACT, _MemRefType.TEMP, _MemRefType.OTH),
    )


def _autocast(precision: str):
    import contextlib

    import torch

    if precision in ("fp16", "bf16"):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _low(precision: str):
    import torch

    return torch.bfloat16 if precision in ("fp16", "bf16") else torch.float32


def _fresh(kind: str, config: dict, train: bool = False, dtype=None) -> Any:
    """A new model built in `dtype` (frozen models run in the low precision; trained ones stay float32). Built in
    that dtype rather than cast: fake parameters cannot be swapped by `.to()`."""
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype if dtype is not None and not train else torch.float32)
    try:
        return _build(kind, config).requires_grad_(train).train(train)
    finally:
        torch.set_default_dtype(before)


@functools.cache
def _train_memory(
    arch: SDArch,
    resolution: int,
    batch: int,
    prior: bool,
    train_text_encoder: bool,
    checkpointing: bool,
    precision: str,
    sfsl: tuple | None,
) -> Memory:
    import torch

    n = batch * (2 if prior else 1)
    size = _timm_input(sfsl[0]) if sfsl is not None else 0  # (built on the meta device: before the fake mode)

    def build():
        unet = _fresh("unet", arch.unet, train=True)
        te = _fresh("text", arch.text, train=train_text_encoder, dtype=_low(precision))
        if checkpointing:
            unet.enable_gradient_checkpointing()
            if train_text_encoder:
                (getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable)()
        extra = ()
        if sfsl is not None:
            feature_model, decoder = sfsl
            vae = _fresh("tiny-vae", {}) if decoder == "tiny" else _fresh("vae", arch.vae, dtype=_low(precision))
            if checkpointing and decoder == "full":
                vae.enable_gradient_checkpointing()
            extra = (vae, _fresh("timm", {"model": feature_model}))
        params = [p for m in (unet, te) for p in m.parameters() if p.requires_grad]
        return (unet, te, *extra, torch.optim.AdamW(params, weight_decay=1e-2))

    def step(models):
        unet, te, *extra, opt = models
        with _autocast(precision):
            states = te(_text_ids(n))[0]
            pred = unet(*_unet_inputs(arch, resolution, n, channels=4), states).sample
            loss = pred.float().pow(2).mean()
            if extra:
                vae, net = extra
                x = vae.decode(pred[:batch].to(vae.dtype)).sample
                x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear")
                loss = loss + net(x.float()).float().mean()
        loss.backward()
        params = [p for m in (unet, te) for p in m.parameters() if p.requires_grad]
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return track_peak(build, step, iterations=2)


def train_memory(
    arch: SDArch,
    resolution: int,
    batch: int = 1,
    prior: bool = True,
    train_text_encoder: bool = True,
    checkpointing: bool = False,
    precision: str = "no",
    sfsl: tuple | None = None,
) -> Memory:
    """Peak memory of a DreamBooth (+ SFSL: `(feature model, decoder)`) training step as the trainer runs it: float32
    trained weights, AdamW state, gradients, the frozen parts in the low precision, activations at the recipe's
    batch and resolution; with the other checkpointing setting's total in `other`."""
    args = (arch, resolution, batch, prior, train_text_encoder)
    this = _train_memory(*args, checkpointing, precision, sfsl)
    other = _train_memory(*args, not checkpointing, precision, sfsl)
    return Memory(this.weights, this.gradients, this.optimizer, this.activations, checkpointing, other.total)


@functools.cache
def textual_inversion_memory(arch: SDArch, resolution: int, batch: int, precision: str) -> Memory:
    """Peak memory of a textual-inversion step: frozen UNet in the low precision, the text encoder's embeddings
    trained (AdamW over the embedding table)."""
    import torch

    def build():
        unet = _fresh("unet", arch.unet, dtype=_low(precision))
        te = _fresh("text", arch.text)
        emb = te.get_input_embeddings().weight.requires_grad_(True)
        return unet, te, torch.optim.AdamW([emb])

    def step(models):
        unet, te, opt = models
        with _autocast(precision):
            pred = unet(*_unet_inputs(arch, resolution, batch, channels=4), te(_text_ids(batch))[0]).sample
        pred.float().pow(2).mean().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return track_peak(build, step, iterations=2)


@functools.cache
def sampling_memory(arch: SDArch, resolution: int, images: int, guidance: bool, precision: str) -> Memory:
    """Peak memory of sampling `images` at once (a pipeline batch): the whole pipeline in the low precision, the
    UNet at batch 2 x images with guidance, then the VAE decoding the batch."""
    import torch

    n = images * (2 if guidance else 1)

    def build():
        low = _low(precision)
        return (
            _fresh("unet", arch.unet, dtype=low),
            _fresh("text", arch.text, dtype=low),
            _fresh("vae", arch.vae, dtype=low),
        )

    def step(models):
        unet, te, vae = models
        low = _low(precision)
        with torch.no_grad(), _autocast(precision):
            states = te(_text_ids(n))[0]
            latents = unet(*_unet_inputs(arch, resolution, n), states).sample[:images]
            return vae.decode(latents[:, :4].to(low)).sample

    return track_peak(build, step)


def fits(memory: int, gpus: dict[str, GPU] | None = None) -> list[str]:
    """The named GPUs whose memory holds `memory` bytes (plus ~1 GB for the CUDA context and allocator slack)."""
    return [k for k, g in (gpus or GPUS).items() if memory + 1e9 <= g.memory_gb * 1e9]


# ---------------------------------------------------------------------------------------------
# The plan of a recipe


@dataclass
class Line:
    """One stage: `count` units of `flops_each`, priced as FLOPs at the utilisation of its `kind` + `traffic_each`
    bytes per unit at the memory bandwidth + fixed costs over the whole stage (`reads` and `writes` bytes of disk,
    `builds` pipelines constructed)."""

    stage: str
    count: int  # how many units
    unit: str  # "step", "image", ...
    flops_each: int
    note: str = ""
    kind: str = "sample"  # a key of DEFAULT_UTILIZATIONS
    traffic_each: int = 0
    traffic_note: str = ""
    reads: int = 0
    writes: int = 0
    builds: int = 0
    fixed_note: str = ""
    memory: Memory | None = None

    @property
    def flops(self) -> int:
        return self.count * self.flops_each


@dataclass
class Download:
    what: str
    source: str
    params: int
    note: str = ""

    @property
    def bytes(self) -> int:
        return 4 * self.params  # float32 weights


@dataclass
class DiskItem:
    """Files the build writes: `where` is "work" or "export"; `transient` ones are deleted during the build (they
    count towards the peak, not the end)."""

    what: str
    where: str
    bytes: int
    note: str = ""
    transient: bool = False


@dataclass
class Seconds:
    compute: float
    traffic: float
    fixed: float

    @property
    def total(self) -> float:
        return self.compute + self.traffic + self.fixed


@dataclass
class Plan:
    recipe: str
    method: str
    classes: int
    resolution: int
    precision: str  # "fp16"/"bf16"/"no"
    gpu: GPU
    utilization: float | None = None  # --plan-utilization: one figure for every kind of stage
    profile: Profile | None = None
    lines: list[Line] = field(default_factory=list)
    downloads: list[Download] = field(default_factory=list)
    images: int = 0  # images exported
    extra_images: int = 0  # images made but not exported (class priors)
    reference_rows: int = 0  # rows of the exported `reference` split
    disk: list[DiskItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    tiny: bool = False  # tiny random models: their images are noise (PNG does not compress them)
    memory: bool = False  # estimate each stage's peak memory (MemTracker on fake tensors: seconds to minutes)

    @property
    def flops(self) -> int:
        return sum(line.flops for line in self.lines)

    @property
    def peak(self) -> float:
        if self.profile is not None and self.gpu.name.startswith(CPU):
            return self.profile.peak_tflops * 1e12
        return (self.gpu.bf16 if self.precision in ("fp16", "bf16") else self.gpu.fp32) * 1e12

    def add(self, stage: str, count: int, unit: str, flops_each: int, note: str = "", **terms: Any) -> Line:
        """One more stage line (`terms`: kind, traffic_each, reads, writes, builds, memory and their notes)."""
        line = Line(stage, count, unit, flops_each, note, **terms)
        self.lines.append(line)
        return line

    def add_disk(self, what: str, where: str, nbytes: int, note: str = "", transient: bool = False) -> None:
        self.disk.append(DiskItem(what, where, int(nbytes), note, transient))

    def batch_memory(self, arch: SDArch, batch_size: int, guidance_scale: float) -> Memory | None:
        """Peak memory of one sampling batch at the plan's resolution where it estimates memory, else None."""
        if not self.memory:
            return None
        return sampling_memory(arch, self.resolution, batch_size, guidance_scale > 1, self.precision)

    def add_photos_written(self, photos: Photos, what: str) -> None:
        """The built-in sample photos stage 1 writes into the work folder, if any."""
        if photos.written:
            self.add_disk(f"built-in {what} photos (work/references)", "work", sum(photos.written.values()))

    def add_export_end(self, photos: Photos, source_photos: bool = True, left_out: str = "") -> None:
        """The real photos exported as split `reference` (with `export.source_photos: false`, the note `left_out`
        instead), then the card, eval.yaml and record."""
        if source_photos:
            self.reference_rows += photos.rows
            self.add_disk(
                "export: reference split", "export", photos.row_bytes, f"{photos.rows} photos, {photos.note()}"
            )
        else:
            self.notes.append(f"export.source_photos false: {left_out}")
        self.add_disk("export: card, eval.yaml, record", "export", EXPORT_METADATA_BYTES)

    # -- rates and their sources
    def rate(self, kind: str) -> tuple[float, str]:
        """The utilisation of a kind of stage and where it came from."""
        if self.utilization is not None:
            return self.utilization, "--plan-utilization"
        if self.profile is not None:
            return self.profile.utilization[kind], f"profile {Path(self.profile.source).name} ({self.profile.date})"
        return DEFAULT_UTILIZATIONS[kind], f"default for {kind} stages (no profile for {self.gpu.name})"

    def bandwidth(self) -> tuple[float, str]:
        if self.profile is not None:
            return (
                self.profile.bandwidth_gbs * 1e9,
                f"measured update bandwidth, profile {Path(self.profile.source).name}",
            )
        return self.gpu.bandwidth * 1e9, f"{self.gpu.name} datasheet bandwidth"

    def io(self, key: str) -> tuple[float, str]:
        if self.profile is not None:
            return self.profile.io[key], f"profile {Path(self.profile.source).name}"
        return DEFAULT_IO[key], "assumed"

    def seconds(self, line: Line) -> Seconds:
        util, _ = self.rate(line.kind)
        bandwidth, _ = self.bandwidth()
        read, _ = self.io("disk_read_gbs")
        write, _ = self.io("disk_write_gbs")
        build, _ = self.io("pipeline_build_s")
        return Seconds(
            compute=line.flops / (self.peak * util),
            traffic=line.count * line.traffic_each / bandwidth,
            fixed=line.reads / (read * 1e9) + line.writes / (write * 1e9) + line.builds * build,
        )

    def gpu_hours(self) -> float:
        return sum(self.seconds(line).total for line in self.lines) / 3600

    # -- disk
    @property
    def disk_bytes(self) -> int:
        """Every file the build leaves, work folder and export."""
        return sum(d.bytes for d in self.disk if not d.transient)

    @property
    def disk_peak(self) -> int:
        return self.disk_bytes + max((d.bytes for d in self.disk if d.transient), default=0)

    def disk_in(self, where: str) -> int:
        """What the build leaves in the work folder ("work") or the export ("export")."""
        return sum(d.bytes for d in self.disk if d.where == where and not d.transient)

    @property
    def download_bytes(self) -> int:
        return sum(d.bytes for d in self.downloads)


# PNG bytes per pixel: SD images (measured on SD images: 1.2-1.8); guides and photos the same order; the tiny
# random models' images are noise, which PNG cannot compress (2.8 bytes per pixel measured on the smoke builds,
# 2950 bytes for a 32 px image), plus a PNG's fixed chunks (83 bytes).
PNG_BYTES_PER_PIXEL = 1.5
NOISE_PNG_BYTES_PER_PIXEL = 2.8
PNG_OVERHEAD = 83
# an ImageNet class folder holds about 1300 training photos (used when a recipe's folder is not on this machine)
IMAGENET_PHOTOS_PER_CLASS = 1300
# a photo of a folder that is not on this machine (ImageNet train JPEGs average ~110 KB)
ASSUMED_PHOTO_BYTES = 110_000
# what an export holds besides the images: README card (~35 KB), eval.yaml, spurbench's record
EXPORT_METADATA_BYTES = 37_000


def png_bytes(resolution: int, noise: bool = False) -> int:
    """The disk size of one generated PNG at `resolution` px (estimate; `noise`: a tiny random model's image)."""
    return int(resolution**2 * (NOISE_PNG_BYTES_PER_PIXEL if noise else PNG_BYTES_PER_PIXEL)) + PNG_OVERHEAD


@functools.cache
def sample_photo_bytes(spec: str) -> int:
    """Exact bytes of a built-in sample photo as stage 1 writes it (PNG-encoded in memory, nothing written)."""
    import io

    from PIL import Image

    from spurbench.generate.references import sample_photo

    buf = io.BytesIO()
    Image.fromarray(sample_photo(spec)).save(buf, format="PNG")
    return len(buf.getvalue())


def folder_photo_bytes(
    folder: str | Path | None, limit: int | None = None, assumed: int = IMAGENET_PHOTOS_PER_CLASS
) -> tuple[list[int], bool]:
    """Sizes of the image files of a folder (first `limit` by name), and whether the folder was absent (then
    `assumed` photos of ASSUMED_PHOTO_BYTES are)."""
    path = Path(folder).expanduser() if folder else None
    if path is None or not path.is_dir():
        return [ASSUMED_PHOTO_BYTES] * min(limit or assumed, assumed), True
    from spurbench.generate.references import image_files

    files = sorted(image_files(path))[: limit or None]
    return [f.stat().st_size for f in files], False


# images per class folder of the Spurious ImageNet download (used when it is not on this machine)
SPURIOUS_IMAGENET_PER_CLASS = 75


@dataclass
class Photos:
    """The real photos a build reads for its classes: `per_class` sizes (export rows repeat a photo shared by two
    classes), `written` sizes of the files stage 1 writes into the work folder (built-in samples, once each)."""

    per_class: dict[int, list[int]] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    assumed: bool = False

    def add(
        self,
        index: int,
        samples: list[str] | None = None,
        folder: Any = None,
        limit: int | None = None,
        assumed: int = IMAGENET_PHOTOS_PER_CLASS,
    ) -> None:
        if samples:
            sizes = [sample_photo_bytes(s) for s in samples]
            self.written.update({s.replace(":", "_"): b for s, b in zip(samples, sizes)})
        else:
            sizes, guessed = folder_photo_bytes(folder, limit, assumed)
            self.assumed |= guessed
        self.per_class[index] = sizes[:limit] if limit else sizes

    @property
    def rows(self) -> int:
        return sum(len(v) for v in self.per_class.values())

    @property
    def row_bytes(self) -> int:
        return sum(sum(v) for v in self.per_class.values())

    def note(self) -> str:
        return (
            f"{ASSUMED_PHOTO_BYTES // 1000} KB photos assumed where a folder is not on this machine"
            if self.assumed
            else "sizes on disk"
        )


def spurious_imagenet_folder(root: str | Path, index: int) -> Path | None:
    """The class's folder of a Spurious ImageNet download on this machine (first component), if any."""
    images = Path(root).expanduser() / "images"
    found = sorted(images.glob(f"spurious_imagenet_{index}_comp_*")) if images.is_dir() else []
    return found[0] if found else None


def add_sd_download(p: Plan, what: str, base: Any, resolution: int, inpainting: bool = False) -> SDArch:
    """Cost a recipe's Stable Diffusion section (`base_model` or `inpainting`) as a download; returns its
    architecture. A tiny model is built into the work folder instead (counted on the disk)."""
    arch, note = sd_arch(base, resolution, inpainting=inpainting)
    parts = [("unet", arch.unet), ("vae", arch.vae), ("text", arch.text)]
    if arch.safety_checker:
        parts.append(("safety", _SD1_SAFETY))
    params = sum(parameters(k, c) for k, c in parts)
    if getattr(base, "tiny", None) is not None:
        p.tiny = True
        p.add_disk(f"{what} (tiny, built locally)", "work", pipeline_bytes(arch) + TOKENIZER_BYTES)
    else:
        p.downloads.append(Download(what, base.id or "tiny", params, note))
    return arch


# a saved CLIP tokenizer (tokenizer.json + config) as diffusers writes it with a pipeline
TOKENIZER_BYTES = 12_000


def pipeline_bytes(arch: SDArch) -> int:
    """Disk size of a pipeline saved in fp32 (the safety checker is not saved with it)."""
    return 4 * sum(parameters(k, c) for k, c in (("unet", arch.unet), ("vae", arch.vae), ("text", arch.text)))


def trained_parameters(arch: SDArch, train_text_encoder: bool) -> int:
    return parameters("unet", arch.unet) + (parameters("text", arch.text) if train_text_encoder else 0)


def memory_note(m: Memory, gpus: dict[str, GPU] | None = None) -> str:
    """Which named GPUs a stage's peak fits, and what to change where it does not."""
    names = fits(m.total, gpus)
    missing = [k for k in (gpus or GPUS) if k not in names]
    if not missing:
        return "fits every listed GPU"
    advice = []
    if m.checkpointing is False and m.other is not None and m.other < m.total:
        advice.append(
            f"gradient_checkpointing: true ({m.other / 1e9:.1f} GB; fits {', '.join(fits(m.other, gpus)) or 'none'})"
        )
    if m.optimizer:
        advice.append("a smaller train_batch_size")
    elif m.activations > m.weights:
        advice.append("a smaller generation batch_size")
    fit = f"fits {', '.join(names)}" if names else "fits none of the listed GPUs"
    return f"{fit}; not {', '.join(missing)}" + (": try " + " or ".join(advice) if advice else "")


def add_timm_download(p: Plan, what: str, spec: dict | None) -> str | None:
    """Cost a recipe's timm classifier section as a download; returns the timm model name (None without one)."""
    if not spec:
        return None
    from spurbench.classifiers import ClassifierSpec

    s = ClassifierSpec.from_dict(spec)
    params = parameters("timm", {"model": s.model})
    weights = spec.get("weights") if isinstance(spec.get("weights"), dict) else {}
    source = str(weights.get("hub") or weights.get("package") or s.model)
    p.downloads.append(Download(what, source, params, "weights only; a training checkpoint may be larger"))
    return s.model


def add_model_download(p: Plan, what: str, source: str, kind: str, config: dict) -> None:
    p.downloads.append(Download(what, source, parameters(kind, config)))


def plan(
    recipe: Any,
    classes: list | None = None,
    recipe_path: str | Path | None = None,
    gpu: str = DEFAULT_GPU,
    utilization: float | None = None,
    profile: str | Path | None = None,
    memory: bool = False,
) -> Plan:
    """The bill of `recipe` for `classes` (default: all of the recipe's), from the cost model; loads no weights.
    Each method writes its own stages into the plan (`plan` of its module in spurbench.generate.methods).
    `profile`: a measured profile file; default the shipped one of `gpu` (spurbench/generate/profiles), if any.
    `utilization`: one utilisation for every stage instead (overrides the profile's and the defaults)."""
    from spurbench.generate.methods import get_method

    if utilization is not None and not 0 < utilization <= 1:
        raise SpurbenchError(f"--plan-utilization must be a fraction in (0, 1], got {utilization}")
    measured = load_profile(profile) if profile is not None else None
    if gpu.upper() == CPU:
        if measured is None:
            raise SpurbenchError(
                "--plan-gpu CPU needs --plan-profile FILE, measured on this machine by "
                "`python benchmarks/cost_model.py --measure --device cpu --arch tiny --write-profile FILE`"
            )
        spec = GPU(f"{CPU} ({measured.device})", measured.peak_tflops, measured.peak_tflops, 0, measured.bandwidth_gbs)
    else:
        spec = gpu_spec(gpu)
        if measured is None and profile_path(gpu).is_file():
            measured = load_profile(profile_path(gpu))
    classes = list(recipe.classes if classes is None else classes)
    method = getattr(recipe, "method", "sfsl")
    p = Plan(
        recipe=recipe.name,
        method=method,
        classes=len(classes),
        resolution=int(getattr(recipe, "resolution", 512)),
        precision=str(getattr(recipe, "mixed_precision", "no") or "no"),
        gpu=spec,
        utilization=utilization,
        profile=measured,
        memory=memory,
    )
    get_method(method).plan(p, recipe, classes)
    if recipe_path is not None:
        _plan_verify(p, recipe_path)
    return p


def _plan_verify(p: Plan, recipe_path: str | Path) -> None:
    """The recipe's `verify:` stage, if it has one: the detector on every exported row, and what it writes."""
    from spurbench.generate.verify_stage import load_verify_section

    check = load_verify_section(recipe_path)
    if check is None:
        return
    rows = p.images + p.reference_rows
    if check.detector == "owlv2" and check.model is None:
        p.add("verify (OWLv2 on every exported row)", rows, "image", owlv2_image(), kind="vision")
    else:
        p.notes.append(f"verify with detector {check.detector!r} is not costed (only the default OWLv2 is)")
    p.add_disk(
        "export before verification (work/unverified)", "work", p.disk_in("export"), "a second copy of the export"
    )
    p.add_disk("detections (work/verify/detections.jsonl)", "work", rows * DETECTION_RECORD_BYTES)


# one row's record in verify/detections.jsonl (measured on the smoke build: 560 bytes)
DETECTION_RECORD_BYTES = 560


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
    """The text `spurbench build --plan` prints: downloads, the stage table and its sources, peak memory, disk."""
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
    out.append(f"  {'total':<34} {'':<48} {'':>17}  {p.download_bytes / 1e9:6.2f} GB")
    out += _stage_table(p)
    out += ["", "sources:"] + [f"  {s}" for s in _sources(p)]
    out += _memory_table(p)
    out += _disk_table(p)
    out += [
        "",
        f"images to make: {p.images:,} exported" + (f" + {p.extra_images:,} class priors" if p.extra_images else ""),
        f"GPU-hours: {_hours(p.gpu_hours())} on one {p.gpu.name} (wall-clock on N GPUs: / N; classes are sharded)",
        "FLOPs: counted by torch.utils.flop_counter.FlopCounterMode on the real architectures built on the meta device "
        "(matmuls, convolutions, attention; 2 FLOPs per multiply-add).",
    ]
    out += [f"note: {n}" for n in p.notes]
    return "\n".join(out)


def _seconds_columns(t: Seconds) -> str:
    return "  ".join(f"{_hours(s / 3600):>8}" for s in (t.compute, t.traffic, t.fixed, t.total))


def _stage_table(p: Plan) -> list[str]:
    """One row per stage (its hours split into compute, traffic and fixed costs) with its details below it."""
    out = [
        "",
        f"time per stage on one {p.gpu.name} (hours: FLOPs / (peak x utilisation) + memory traffic / bandwidth + fixed "
        "disk and pipeline costs):",
        f"{'stage':<44} {'count':>12}  {'FLOPs total':>11}  {'util':>5}  {'compute':>8}  {'traffic':>8}  {'fixed':>8}  "
        f"{'total':>8}  {'peak mem':>8}",
    ]
    total = Seconds(0.0, 0.0, 0.0)
    for line in p.lines:
        t = p.seconds(line)
        total = Seconds(total.compute + t.compute, total.traffic + t.traffic, total.fixed + t.fixed)
        util, _ = p.rate(line.kind)
        mem = f"{line.memory.total / 1e9:.1f} GB" if line.memory else ""
        out.append(
            f"{line.stage:<44} {line.count:>8,} {line.unit:<5} {_si(line.flops, 'FLOP'):>11}  {util:>5.1%}  "
            f"{_seconds_columns(t)}  {mem:>8}"
        )
        details = [line.note] if line.note else []
        details.append(f"{_si(line.flops_each, 'FLOP')} per {line.unit} ({line.kind} stage)")
        if line.traffic_each:
            details.append(f"traffic {_si(line.traffic_each, 'B')} per {line.unit}: {line.traffic_note}")
        if line.reads or line.writes or line.builds:
            details.append(
                f"fixed: read {_si(line.reads, 'B')}, write {_si(line.writes, 'B')}, {line.builds} pipeline build(s)"
                + (f" ({line.fixed_note})" if line.fixed_note else "")
            )
        out += [f"    {d}" for d in details]
    out.append(f"{'total':<44} {'':>12}  {_si(p.flops, 'FLOP'):>11}  {'':>5}  {_seconds_columns(total)}")
    return out


def _sources(p: Plan) -> list[str]:
    """Where every rate of the table comes from: utilisations, bandwidth, disk and build figures, peak, profile."""
    peak_kind = "dense bf16/fp16" if p.precision in ("fp16", "bf16") else "fp32 (mixed_precision no)"
    kinds = sorted({line.kind for line in p.lines})
    sources = [f"utilisation of {k} stages {p.rate(k)[0]:.1%}: {p.rate(k)[1]}" for k in kinds]
    bandwidth, source = p.bandwidth()
    sources.append(f"memory traffic at {bandwidth / 1e9:,.0f} GB/s: {source}")
    for key, unit in (("disk_read_gbs", "GB/s"), ("disk_write_gbs", "GB/s"), ("pipeline_build_s", "s")):
        value, src = p.io(key)
        sources.append(f"{key} {value:g} {unit}: {src}")
    peak = p.peak / 1e12
    sources.append(f"peak {peak:g} TFLOP/s {peak_kind}" + ("" if p.gpu.name.startswith(CPU) else " (datasheet)"))
    if p.profile is not None:
        q = p.profile
        sources.append(
            f"profile {q.source}: {q.device}, torch {q.torch}, diffusers {q.diffusers}, {q.date}, by `{q.command}`"
        )
    elif p.utilization is None:
        sources.append(
            f"no measured profile for {p.gpu.name} (spurbench/generate/profiles/): the utilisations are stated defaults; "
            "measure one with `python benchmarks/cost_model.py --measure --write-profile FILE` and pass --plan-profile FILE"
        )
    return sources


def _memory_table(p: Plan) -> list[str]:
    """Each stage's peak memory by kind, and which GPUs it fits (or how to ask for the estimate)."""
    out = []
    if not p.memory:
        out += [
            "",
            "peak memory per stage: give --plan-memory (estimated on fake tensors; minutes for a training step)",
        ]
    mem_lines = [line for line in p.lines if line.memory is not None]
    if mem_lines:
        out += ["", "peak memory per stage (MemTracker on fake tensors, no GPU used):"]
    for line in mem_lines:
        m = line.memory
        switch = (
            f" (gradient checkpointing {'on' if m.checkpointing else 'off'})" if m.checkpointing is not None else ""
        )
        other = ""
        if m.other is not None:
            other = f"; {'without' if m.checkpointing else 'with'} gradient checkpointing {m.other / 1e9:.2f} GB"
        out.append(
            f"  {line.stage:<42} {m.total / 1e9:7.2f} GB = weights {m.weights / 1e9:.2f} + gradients "
            f"{m.gradients / 1e9:.2f} + optimizer {m.optimizer / 1e9:.2f} + activations {m.activations / 1e9:.2f}"
            + switch
            + other
        )
        out.append(f"    {memory_note(m)}")
    return out


def _disk_table(p: Plan) -> list[str]:
    out = ["", "disk (every file the build writes):"]
    for d in p.disk:
        out.append(
            f"  {d.where:<6} {d.what:<58} {_si(d.bytes, 'B'):>9}"
            + ("  (deleted during the build)" if d.transient else "")
            + (f"  {d.note}" if d.note else "")
        )
    out.append(
        f"  total left on disk: {_si(p.disk_bytes, 'B')} (work folder {_si(p.disk_in('work'), 'B')}, "
        f"export {_si(p.disk_in('export'), 'B')}); peak {_si(p.disk_peak, 'B')}; "
        f"plus {_si(p.download_bytes, 'B')} of models in the Hugging Face cache"
    )
    return out
