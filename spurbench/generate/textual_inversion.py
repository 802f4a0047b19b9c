"""Textual inversion of one class (DDB learns one token per class, then paints it into masks).

The training logic of diffusers' textual-inversion example, written for spurbench: a new placeholder
token is added to the tokenizer, its embedding row starts from the initializer word's embedding (the
mean of its pieces when the tokenizer splits it), and only that row learns. The UNet and VAE are
frozen; the text encoder is frozen except its token-embedding matrix, whose other rows are put back
to their original values after every optimizer step (AdamW's weight decay would otherwise move
them). Loss: the diffusion loss (epsilon or v target, as the base model predicts) on the class's
images with "a photo of a {token}"-style prompts.

The result is saved as `learned_embeds.safetensors` holding `{token: (1, hidden) tensor}`, the file
`pipeline.load_textual_inversion(folder)` reads, so the inpainting pipeline (same text encoder) uses it.
DDB's settings: stable-diffusion-2-base, 3000 steps, lr 5e-4 scaled by batch x accumulation, batch 1 x 4.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from spurbench.errors import SpurbenchError

EMBEDDINGS_FILE = "learned_embeds.safetensors"
#: prompt templates for object tokens, in the spirit of the textual-inversion paper's list
OBJECT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a good photo of a {}",
    "a photo of one {}",
    "a photo of the large {}",
)


@dataclass
class InversionConfig:
    """Settings of one token's training (a recipe's `textual_inversion:` block)."""

    max_train_steps: int = 3000
    learning_rate: float = 5e-4
    #: multiply the learning rate by batch size x accumulation steps, as DDB runs the example
    scale_lr: bool = True
    train_batch_size: int = 1
    gradient_accumulation_steps: int = 4
    weight_decay: float = 1e-2
    resolution: int = 512
    seed: int = 0
    templates: list[str] = field(default_factory=lambda: list(OBJECT_TEMPLATES))

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> InversionConfig:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SpurbenchError(
                f"textual_inversion has unknown key(s) {', '.join(unknown)}; allowed: {', '.join(cls.__dataclass_fields__)}"
            )
        cfg = cls(**d)
        for key in ("max_train_steps", "train_batch_size", "gradient_accumulation_steps", "resolution"):
            if not isinstance(getattr(cfg, key), int) or getattr(cfg, key) < 1:
                raise SpurbenchError(f"textual_inversion.{key} must be a positive integer, got {getattr(cfg, key)!r}")
        if not cfg.templates or not all(isinstance(t, str) and "{}" in t for t in cfg.templates):
            raise SpurbenchError(
                "textual_inversion.templates must be a non-empty list of prompts each containing {} (where the token goes)"
            )
        return cfg

    @property
    def effective_lr(self) -> float:
        return self.learning_rate * (self.train_batch_size * self.gradient_accumulation_steps if self.scale_lr else 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class LearnedToken:
    """What `learn_token` leaves behind (the models too, so callers and tests can inspect them)."""

    path: Path  # the learned_embeds.safetensors file
    token: str
    token_id: int
    losses: list[float]
    tokenizer: Any
    text_encoder: Any
    unet: Any
    vae: Any


def add_token(tokenizer, text_encoder, placeholder: str, initializer: str) -> int:
    """Add `placeholder` to the tokenizer and give its embedding row the initializer word's embedding."""
    if placeholder in tokenizer.get_vocab() or tokenizer.add_tokens(placeholder) != 1:
        raise SpurbenchError(
            f"placeholder token {placeholder!r} is already in the tokenizer's vocabulary; pick a new one like <class-123>"
        )
    init_ids = tokenizer.encode(initializer, add_special_tokens=False)
    if not init_ids:
        raise SpurbenchError(
            f"initializer word {initializer!r} is empty after tokenisation; give a word such as the class's name"
        )
    token_id = tokenizer.convert_tokens_to_ids(placeholder)
    # never shrink a matrix larger than the vocabulary
    if token_id >= text_encoder.get_input_embeddings().num_embeddings:
        text_encoder.resize_token_embeddings(len(tokenizer))
    weight = text_encoder.get_input_embeddings().weight
    with torch.no_grad():
        weight[token_id] = weight[init_ids].mean(dim=0)
    return token_id


def _encode_images(vae, images: Sequence[Any], resolution: int, device, dtype) -> torch.Tensor:
    """The scaled VAE latents of `images` (they never change: encoded once)."""
    from spurbench.generate.dreambooth import pixel_tensor

    with torch.no_grad():
        pixels = [pixel_tensor(im, resolution)[None].to(device, dtype) for im in images]
        return torch.cat([vae.encode(x).latent_dist.mean for x in pixels]).float() * vae.config.scaling_factor


def _denoising_loss(parts: dict, prompts: list[str], z0: torch.Tensor, gen: torch.Generator, dtype) -> torch.Tensor:
    """The diffusion loss of latents `z0` captioned `prompts`: noise at random timesteps, the frozen UNet's
    prediction from the text encoder's states (whose new token row learns) against the scheduler's target."""
    from spurbench.generate.dreambooth import training_target

    tokenizer, text_encoder, unet, scheduler = (
        parts[k] for k in ("tokenizer", "text_encoder", "unet", "noise_scheduler")
    )
    device = z0.device
    ids = tokenizer(
        prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids.to(device)
    noise = torch.randn(z0.shape, generator=gen).to(device)
    t = torch.randint(0, scheduler.config.num_train_timesteps, (len(prompts),), generator=gen).to(device)
    states = text_encoder(ids)[0].to(dtype)
    pred = unet(scheduler.add_noise(z0, noise, t).to(dtype), t, states).sample
    return F.mse_loss(pred.float(), training_target(scheduler, z0, noise, t).float())


def _only_the_token_learns(parts: dict, token_id: int, device, weight_dtype) -> tuple[Any, tuple]:
    """Freeze the VAE, the UNet and the text encoder except its token-embedding matrix, on `device`; (the embedding
    layer, (its original weights, the rows to put back after every step: all but the token's))."""
    vae, unet, text_encoder = parts["vae"], parts["unet"], parts["text_encoder"]
    vae.requires_grad_(False).to(device, weight_dtype).eval()
    unet.requires_grad_(False).to(device, weight_dtype).eval()
    text_encoder.requires_grad_(False).to(device)
    embeddings = text_encoder.get_input_embeddings()
    embeddings.weight.requires_grad_(True)
    text_encoder.train()
    original = embeddings.weight.detach().clone()
    frozen_rows = torch.ones(embeddings.num_embeddings, dtype=torch.bool, device=device)
    frozen_rows[token_id] = False
    return embeddings, (original, frozen_rows)


def _train(parts, embeddings, put_back, latents, placeholder, config, weight_dtype, progress) -> list[float]:
    """The optimisation steps (each over `gradient_accumulation_steps` batches); the loss of every step."""
    from tqdm.auto import tqdm

    original, frozen_rows = put_back
    optimizer = torch.optim.AdamW([embeddings.weight], lr=config.effective_lr, weight_decay=config.weight_decay)
    rng = random.Random(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    bsz, accum = config.train_batch_size, config.gradient_accumulation_steps
    for _ in tqdm(
        range(config.max_train_steps), desc=f"textual inversion {placeholder}", leave=False, disable=not progress
    ):
        step_loss = 0.0
        for _ in range(accum):
            index = [rng.randrange(len(latents)) for _ in range(bsz)]
            prompts = [rng.choice(config.templates).format(placeholder) for _ in index]
            loss = _denoising_loss(parts, prompts, latents[index], gen, weight_dtype) / accum
            loss.backward()
            step_loss += float(loss.detach())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():  # only the new token's row may move
            embeddings.weight[frozen_rows] = original[frozen_rows]
        losses.append(step_loss)
    return losses


def learn_token(
    base_model: str | Path,
    images: Sequence[Any],
    placeholder: str,
    initializer: str,
    out_dir: str | Path,
    config: InversionConfig | None = None,
    revision: str | None = None,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> LearnedToken:
    """Learn `placeholder` on `images` (PIL) with the Stable Diffusion at `base_model`; save it under `out_dir`."""
    from safetensors.torch import save_file

    from spurbench.generate.dreambooth import _load_components

    config = config or InversionConfig()
    if not images:
        raise SpurbenchError(f"no images to learn {placeholder!r} from; the class needs at least one source image")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    parts = _load_components(base_model, revision)
    tokenizer, text_encoder, vae, unet = (parts[k] for k in ("tokenizer", "text_encoder", "vae", "unet"))
    token_id = add_token(tokenizer, text_encoder, placeholder, initializer)

    weight_dtype = torch.float16 if device.type == "cuda" else torch.float32
    embeddings, put_back = _only_the_token_learns(parts, token_id, device, weight_dtype)
    latents = _encode_images(vae, images, config.resolution, device, weight_dtype)
    losses = _train(parts, embeddings, put_back, latents, placeholder, config, weight_dtype, progress)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / EMBEDDINGS_FILE
    learned = embeddings.weight[token_id : token_id + 1].detach().float().cpu().contiguous()
    save_file({placeholder: learned}, str(path))
    return LearnedToken(path, placeholder, token_id, losses, tokenizer, text_encoder, unet, vae)
