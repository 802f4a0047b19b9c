"""Fine-tuning one class: DreamBooth (UNet + CLIP text encoder, prior preservation) plus SFSL.

One step, on a batch of B instance (reference spurious) images and B class-prior images in the same
batch, with latents z0, noise eps and random timesteps t:

    z_t  = sqrt(abar_t) z0 + sqrt(1 - abar_t) eps
    pred = UNet(z_t, t, TextEncoder(prompt))
    L    = L_instance + prior_loss_weight * L_prior + sfsl_weight * L_sfsl

L_instance / L_prior are the MSE of `pred` against eps (epsilon models) or the velocity
v = sqrt(abar_t) eps - sqrt(1 - abar_t) z0 (v-prediction models) on each half. L_sfsl (DESIGN.md) works
on the instance half only: z0_hat is recovered from the prediction, decoded by the frozen VAE *with*
gradients, and compared with the reference image x in the class-wise feature space of a frozen
classifier: 1 - cos(a_k(D(z0_hat)), a_k(x)), optionally only where t < sfsl_max_timestep (the masked
samples count as 0 in the batch mean). With sfsl_weight == 0 the SFSL branch is not entered at all, so
training is exactly plain DreamBooth (same random draws, same arithmetic).

Choices that make a step cheap and reproducible:
- Images are resized/cropped and VAE-encoded once per class, under no_grad, each image on its own.
  The latent is the posterior *mean* (times the VAE scaling factor): with latents cached, a single
  posterior sample would be one frozen perturbation rather than augmentation, and the mean keeps z0
  independent of any random draw.
- Prompts are tokenised once; the class-wise features a_k(x) of the references are computed once.
- All randomness comes from two explicit CPU generators seeded from `TrainConfig.seed`: one for the
  order of the images (a fresh permutation per pass over max(n_instance, n_class) indices, image =
  index modulo the number of images, as diffusers' DreamBooth dataset does) and one for noise and
  timesteps. On CPU, same inputs and seed give bitwise identical weights; on GPU some kernels are
  non-deterministic unless `torch.use_deterministic_algorithms(True)` is set by the caller.

Accelerate supplies the device and the mixed-precision autocast (fp16 adds a GradScaler). The
models and the optimizer are deliberately NOT passed through `accelerator.prepare`: in a build launched
with `accelerate launch --num_processes N`, every process fine-tunes *different* classes, and prepare()
would wrap the UNet in DistributedDataParallel, averaging gradients of unrelated classes across
processes (and hanging when processes have different amounts of work). A build also fine-tunes many
models in one process, and prepared objects stay referenced by the Accelerator, keeping every
finished model's optimizer state alive. So each process trains on `accelerator.device` on its own.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

from spurbench.errors import SpurbenchError
from spurbench.generate.features import FeatureModel, sfsl_loss
from spurbench.once import replace_folder

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "TrainConfig",
    "DreamBoothTrainer",
    "finetune_class",
    "make_accelerator",
    "predict_z0",
    "training_target",
    "pixel_tensor",
]

_MIXED_PRECISION = ("no", "fp16", "bf16")
_PREDICTION_TYPES = ("epsilon", "v_prediction")


@dataclass
class TrainConfig:
    """Hyperparameters of one per-class fine-tune (the recipe's `training:` block)."""

    max_train_steps: int = 400
    learning_rate_unet: float = 2e-6
    learning_rate_text_encoder: float = 2e-6
    train_batch_size: int = 1  # instance images per step (same number of prior images added)
    with_prior_preservation: bool = True
    prior_loss_weight: float = 1.0
    sfsl_weight: float = 0.0  # lambda_sfsl; 0 = plain DreamBooth, bit for bit
    sfsl_max_timestep: int | None = None  # SFSL only on samples with t < this (None: every t)
    train_text_encoder: bool = True  # False: frozen text encoder, prompt states computed once
    mixed_precision: str = "no"  # "no" | "fp16" | "bf16"
    gradient_checkpointing: bool = False
    max_grad_norm: float = 1.0
    resolution: int = 512
    seed: int = 0  # image order, noise and timesteps all derive from it

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> TrainConfig:
        """Build from a recipe mapping; an unknown key or a bad value is a SpurbenchError naming it."""
        d = dict(d or {})
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(names))
        if unknown:
            raise SpurbenchError(
                f"unknown training option(s) {', '.join(map(repr, unknown))}; valid options: {', '.join(names)}"
            )
        config = cls(**d)
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        def bad(key: str, why: str) -> SpurbenchError:
            return SpurbenchError(f"training option {key!r} = {getattr(self, key)!r} is invalid: {why}")

        for key in ("max_train_steps", "train_batch_size", "resolution", "seed"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise bad(key, "it must be an integer")
        if self.max_train_steps < 0:
            raise bad("max_train_steps", "it must be >= 0")
        if self.train_batch_size < 1:
            raise bad("train_batch_size", "it must be >= 1")
        if self.resolution < 8 or self.resolution % 8:
            raise bad(
                "resolution", "it must be a positive multiple of 8 (the VAE downsamples by 8 in Stable Diffusion)"
            )
        for key in (
            "learning_rate_unet",
            "learning_rate_text_encoder",
            "prior_loss_weight",
            "sfsl_weight",
            "max_grad_norm",
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise bad(key, "it must be a number >= 0")
        for key in ("with_prior_preservation", "train_text_encoder", "gradient_checkpointing"):
            if not isinstance(getattr(self, key), bool):
                raise bad(key, "it must be true or false")
        if self.sfsl_max_timestep is not None and (
            not isinstance(self.sfsl_max_timestep, int)
            or isinstance(self.sfsl_max_timestep, bool)
            or self.sfsl_max_timestep < 1
        ):
            raise bad("sfsl_max_timestep", "it must be a positive integer, or null for every timestep")
        if self.mixed_precision not in _MIXED_PRECISION:
            raise bad("mixed_precision", f"choose one of {', '.join(_MIXED_PRECISION)}")


def make_accelerator(mixed_precision: str = "no"):
    """An Accelerator for this process: CPU when CUDA is absent (DESIGN.md, "Distributed")."""
    from accelerate import Accelerator

    cpu = not torch.cuda.is_available()
    if cpu and mixed_precision == "fp16":
        raise SpurbenchError("mixed_precision 'fp16' needs a CUDA GPU; use 'no' or 'bf16' on CPU")
    try:
        return Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    except ValueError as e:  # Accelerate's state is process-wide and fixed at its first creation
        raise SpurbenchError(
            f"cannot use mixed_precision {mixed_precision!r} in this process: {e}; "
            "pass the same mixed precision everywhere or create one Accelerator and pass it in"
        ) from e


def pixel_tensor(image: Image.Image, resolution: int) -> torch.Tensor:
    """A PIL image as the [-1, 1] tensor DreamBooth trains on: shorter side resized to `resolution`
    (bilinear), centre crop, [3, resolution, resolution]."""
    from torchvision import transforms

    transform = transforms.Compose(
        [
            transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(resolution),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )
    return transform(image.convert("RGB") if image.mode != "RGB" else image)


def _abar(noise_scheduler, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    abar = noise_scheduler.alphas_cumprod.to(device=like.device, dtype=torch.float32)[timesteps.to(like.device)]
    return abar.view(-1, *([1] * (like.dim() - 1)))


def _prediction_type(noise_scheduler) -> str:
    prediction_type = noise_scheduler.config.prediction_type
    if prediction_type not in _PREDICTION_TYPES:
        raise SpurbenchError(
            f"the base model's scheduler predicts {prediction_type!r}; spurbench trains 'epsilon' and 'v_prediction' models"
        )
    return prediction_type


def training_target(
    noise_scheduler, latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the UNet must predict: the noise (epsilon) or the velocity (v_prediction)."""
    if _prediction_type(noise_scheduler) == "epsilon":
        return noise
    return noise_scheduler.get_velocity(latents, noise, timesteps)


def predict_z0(
    noise_scheduler, noisy_latents: torch.Tensor, model_output: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The clean latent implied by the model's prediction at z_t (float32, differentiable):
    epsilon: (z_t - sqrt(1 - abar) eps_hat) / sqrt(abar);  v: sqrt(abar) z_t - sqrt(1 - abar) v_hat."""
    z_t = noisy_latents.float()
    out = model_output.float()
    abar = _abar(noise_scheduler, timesteps, z_t)
    if _prediction_type(noise_scheduler) == "epsilon":
        return (z_t - (1 - abar).sqrt() * out) / abar.sqrt()
    return abar.sqrt() * z_t - (1 - abar).sqrt() * out


def _load_components(base_model: str | Path, revision: str | None) -> dict[str, Any]:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    source = str(base_model)
    try:
        return {
            "tokenizer": CLIPTokenizer.from_pretrained(source, subfolder="tokenizer", revision=revision),
            "text_encoder": CLIPTextModel.from_pretrained(source, subfolder="text_encoder", revision=revision),
            "vae": AutoencoderKL.from_pretrained(source, subfolder="vae", revision=revision),
            "unet": UNet2DConditionModel.from_pretrained(source, subfolder="unet", revision=revision),
            # Training always noises with DDPM's forward process; the betas come from the base model.
            "noise_scheduler": DDPMScheduler.from_pretrained(source, subfolder="scheduler", revision=revision),
        }
    except (OSError, ValueError) as e:
        raise SpurbenchError(
            f"cannot load Stable Diffusion from {source!r} (revision {revision}): {str(e).splitlines()[0]}; "
            "give a local diffusers folder, or a hub id with network access"
        ) from e


def _accelerator_for(config: TrainConfig, accelerator):
    """The given Accelerator, checked against the config's mixed precision, or a new one."""
    if accelerator is None:
        return make_accelerator(config.mixed_precision)
    if accelerator.mixed_precision != config.mixed_precision:
        raise SpurbenchError(
            f"the Accelerator uses mixed precision {accelerator.mixed_precision!r} but the training config asks "
            f"for {config.mixed_precision!r}; create the Accelerator with mixed_precision={config.mixed_precision!r}"
        )
    return accelerator


def _always_save(is_main_process: bool = True) -> bool:
    return True


class DreamBoothTrainer:
    """DreamBooth + SFSL on one class. Usage: `trainer.prepare(...)`, then `trainer.step()` per step,
    then `trainer.save(folder)` (or use `finetune_class`, which does all of it)."""

    def __init__(
        self,
        unet,
        text_encoder,
        vae,
        tokenizer,
        noise_scheduler,
        config: TrainConfig,
        feature_model: FeatureModel | None = None,
        accelerator=None,
    ) -> None:
        config.validate()
        if config.sfsl_weight > 0 and feature_model is None:
            raise SpurbenchError(
                "sfsl_weight > 0 needs a feature model; set the recipe's feature model or sfsl_weight: 0"
            )
        _prediction_type(noise_scheduler)
        accelerator = _accelerator_for(config, accelerator)
        self.config = config
        self.accelerator = accelerator
        self.device = accelerator.device
        # Frozen modules run in the low-precision dtype, as diffusers' example does; trained ones stay
        # float32 (autocast computes in low precision, the optimizer updates float32 master weights).
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
            accelerator.mixed_precision, torch.float32
        )
        self.use_sfsl = config.sfsl_weight > 0

        self.tokenizer = tokenizer
        self.noise_scheduler = noise_scheduler
        self._place_modules(unet, text_encoder, vae, feature_model)
        self._make_optimizer()
        self.order_generator = torch.Generator().manual_seed(config.seed)
        self.noise_generator = torch.Generator().manual_seed(config.seed + 1)
        self._order: list[int] = []
        self.global_step = 0
        self._prepared = False

    def _place_modules(self, unet, text_encoder, vae, feature_model: FeatureModel | None) -> None:
        """The models on the device, frozen or in training mode, in their dtype, with gradient checkpointing."""
        config = self.config
        # (.to(dtype=...) only when it changes something: diffusers warns about any dtype cast)
        self.vae = vae.requires_grad_(False).eval().to(self.device)
        if self.weight_dtype != torch.float32:
            self.vae.to(dtype=self.weight_dtype)
        self.unet = unet.to(self.device).train()
        self.text_encoder = text_encoder.to(self.device)
        if config.train_text_encoder:
            self.text_encoder.train()
        else:
            self.text_encoder.requires_grad_(False).eval().to(dtype=self.weight_dtype)
        self.feature_model = feature_model.to(self.device) if (self.use_sfsl and feature_model is not None) else None
        if self.feature_model is not None:
            self.feature_model.requires_grad_(False).eval()

        if config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
            if config.train_text_encoder:
                # transformers >= 5 renamed it; older releases only have the first name
                enable = getattr(self.text_encoder, "activation_checkpointing_enable", None)
                (enable or self.text_encoder.gradient_checkpointing_enable)()
            if self.use_sfsl:  # the decoder's activations dominate SFSL's memory at 512 px
                self.vae.enable_gradient_checkpointing()

    def _make_optimizer(self) -> None:
        config, accelerator = self.config, self.accelerator
        groups = [{"params": [p for p in self.unet.parameters() if p.requires_grad], "lr": config.learning_rate_unet}]
        if config.train_text_encoder:
            groups.append({"params": list(self.text_encoder.parameters()), "lr": config.learning_rate_text_encoder})
        self.params = [p for g in groups for p in g["params"]]
        # AdamW with the hyperparameters of diffusers' DreamBooth example.
        self.optimizer = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
        # fp16 needs loss scaling. One scaler per trainer (not the Accelerator's shared one), so a class's
        # run does not depend on the scale the previous class ended with.
        self.scaler = torch.amp.GradScaler(self.device.type) if accelerator.mixed_precision == "fp16" else None

    @classmethod
    def from_pretrained(
        cls,
        base_model: str | Path,
        config: TrainConfig,
        feature_model: FeatureModel | None = None,
        revision: str | None = None,
        accelerator=None,
    ) -> DreamBoothTrainer:
        return cls(
            **_load_components(base_model, revision),
            config=config,
            feature_model=feature_model,
            accelerator=accelerator,
        )

    # ----------------------------------------------------------------------------------- data, once
    def _tokens(self, prompt: str) -> torch.Tensor:
        return self.tokenizer(
            prompt,
            padding="max_length",
            truncation=True,
            max_length=self.tokenizer.model_max_length,
            return_tensors="pt",
        ).input_ids.to(self.device)

    @torch.no_grad()
    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Posterior-mean latents, one image at a time (so a latent never depends on its batch mates)."""
        latents = [self.vae.encode(p[None].to(self.device, self.weight_dtype)).latent_dist.mean for p in pixels]
        return torch.cat(latents).float() * self.vae.config.scaling_factor

    def prepare(
        self,
        instance_images: list[Image.Image],
        instance_prompt: str,
        class_images: list[Image.Image],
        class_prompt: str,
        target_class: int,
    ) -> None:
        """Encode the images, tokenise the prompts and compute the reference features, once."""
        config = self.config
        if not instance_images:
            raise SpurbenchError("no instance (reference) images to fine-tune on; give at least one reference image")
        if config.with_prior_preservation and not class_images:
            raise SpurbenchError(
                "prior preservation is on but there are no class-prior images; generate some or set with_prior_preservation: false"
            )
        self.target_class = int(target_class)
        instance_pixels = torch.stack([pixel_tensor(im, config.resolution) for im in instance_images])
        self.instance_latents = self._encode(instance_pixels)
        self.instance_ids = self._tokens(instance_prompt)
        if config.with_prior_preservation:
            self.class_latents = self._encode(torch.stack([pixel_tensor(im, config.resolution) for im in class_images]))
            self.class_ids = self._tokens(class_prompt)
            self._length = max(len(instance_images), len(class_images))
        else:
            self._length = len(instance_images)
        if not config.train_text_encoder:  # a frozen text encoder gives the same states every step
            with torch.no_grad(), self.accelerator.autocast():
                self.instance_states = self.text_encoder(self.instance_ids)[0]
                self.class_states = self.text_encoder(self.class_ids)[0] if config.with_prior_preservation else None
        if self.use_sfsl:
            with torch.no_grad():  # float32, outside autocast: the targets should be exact
                self.reference_features = torch.cat(
                    [
                        self.feature_model.class_features(p[None].to(self.device), self.target_class)
                        for p in instance_pixels
                    ]
                )
        self._prepared = True

    def _next_indices(self) -> torch.Tensor:
        """The next B dataset indices: consecutive entries of a fresh permutation per pass."""
        out: list[int] = []
        while len(out) < self.config.train_batch_size:
            if not self._order:
                self._order = torch.randperm(self._length, generator=self.order_generator).tolist()
            out.append(self._order.pop(0))
        return torch.tensor(out)

    # ----------------------------------------------------------------------------------- one step
    def step(self) -> dict[str, float]:
        """One optimisation step; returns the losses of this step as floats."""
        losses = self.compute_losses()
        self.backward_and_update(losses["loss"])
        self.global_step += 1
        return {
            name: float(v)
            for name, v in zip(losses, torch.stack([v.detach().float() for v in losses.values()]).tolist())
        }

    def compute_losses(self) -> dict[str, torch.Tensor]:
        """Draw the next batch, noise and timesteps and return the loss terms (with their graphs):
        "instance", "prior" (with prior preservation), "sfsl" (when sfsl_weight > 0) and the total "loss"."""
        if not self._prepared:
            raise RuntimeError("call prepare() before step()")
        config = self.config
        bsz = config.train_batch_size
        index = self._next_indices()
        instance_index = index % len(self.instance_latents)
        latents = self.instance_latents[instance_index]
        if config.with_prior_preservation:
            latents = torch.cat([latents, self.class_latents[index % len(self.class_latents)]])

        noise = torch.randn(latents.shape, generator=self.noise_generator).to(self.device)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), generator=self.noise_generator
        ).to(self.device)
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)

        with self.accelerator.autocast():
            if config.train_text_encoder:
                ids = self.instance_ids.expand(bsz, -1)
                if config.with_prior_preservation:
                    ids = torch.cat([ids, self.class_ids.expand(bsz, -1)])
                states = self.text_encoder(ids)[0]
            else:
                states = self.instance_states.expand(bsz, -1, -1)
                if config.with_prior_preservation:
                    states = torch.cat([states, self.class_states.expand(bsz, -1, -1)])
            pred = self.unet(noisy_latents, timesteps, states).sample
            target = training_target(self.noise_scheduler, latents, noise, timesteps)

            losses: dict[str, torch.Tensor] = {}
            losses["instance"] = F.mse_loss(pred[:bsz].float(), target[:bsz].float(), reduction="mean")
            loss = losses["instance"]
            if config.with_prior_preservation:
                losses["prior"] = F.mse_loss(pred[bsz:].float(), target[bsz:].float(), reduction="mean")
                loss = loss + config.prior_loss_weight * losses["prior"]
            if self.use_sfsl:  # skipped entirely at weight 0: plain DreamBooth, bit for bit
                losses["sfsl"] = self.sfsl_term(noisy_latents[:bsz], pred[:bsz], timesteps[:bsz], instance_index)
                loss = loss + config.sfsl_weight * losses["sfsl"]
        losses["loss"] = loss
        return losses

    def sfsl_term(
        self, noisy_latents: torch.Tensor, pred: torch.Tensor, timesteps: torch.Tensor, instance_index: torch.Tensor
    ) -> torch.Tensor:
        """sum over instance samples with t < sfsl_max_timestep of 1 - cos(a_k(D(z0_hat)), a_k(x)), / B.

        Only the qualifying samples are decoded; if none qualify the term is a zero that does not
        touch the graph."""
        bsz = noisy_latents.shape[0]
        if self.config.sfsl_max_timestep is None:
            keep = torch.arange(bsz, device=timesteps.device)
        else:
            keep = (timesteps < self.config.sfsl_max_timestep).nonzero().flatten()
            if keep.numel() == 0:
                return torch.zeros((), device=self.device)
        z0_hat = predict_z0(self.noise_scheduler, noisy_latents[keep], pred[keep], timesteps[keep])
        x_hat = self.feature_model.decode(z0_hat, self.vae)  # the VAE, or the recipe's tiny decoder (features.decoder)
        reference = self.reference_features[instance_index.to(self.device)[keep]]
        return sfsl_loss(self.feature_model, x_hat, reference, self.target_class, reduction="none").sum() / bsz

    def backward_and_update(self, loss: torch.Tensor) -> None:
        """Backward, gradient clipping, AdamW step (fp16: through the GradScaler)."""
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, self.config.max_grad_norm)
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    # ----------------------------------------------------------------------------------- loop, save
    def train(self, progress: bool = True, desc: str = "fine-tune") -> dict[str, float]:
        """Run the remaining steps up to max_train_steps; returns the last step's losses."""
        from tqdm.auto import tqdm

        last: dict[str, float] = {}
        with tqdm(
            total=self.config.max_train_steps, initial=self.global_step, desc=desc, disable=not progress, leave=False
        ) as bar:
            while self.global_step < self.config.max_train_steps:
                last = self.step()
                bar.set_postfix({k: f"{v:.4f}" for k, v in last.items()}, refresh=False)
                bar.update()
        return last

    def save(self, output_dir: str | Path, base_model: str | Path, revision: str | None = None) -> Path:
        """Save the fine-tuned pipeline (diffusers layout, safetensors) atomically: it is written to
        a temporary sibling and renamed, so a killed run never leaves a finished-looking folder."""
        from diffusers import StableDiffusionPipeline

        output_dir = Path(output_dir)
        components = {"unet": self.unet}
        if self.config.train_text_encoder:
            components["text_encoder"] = self.text_encoder
        # Everything not trained (VAE, tokenizer, sampling scheduler, safety checker) comes unchanged
        # from the base model, in its original dtype.
        pipe = StableDiffusionPipeline.from_pretrained(str(base_model), revision=revision, **components)
        for component in pipe.components.values():
            # transformers >= 5 writes a model only on rank 0 once torch.distributed is initialised (as
            # under `accelerate launch`); here every process saves its own class's model, so it must write.
            if hasattr(component, "should_save_on_this_rank"):
                component.should_save_on_this_rank = _always_save
        with replace_folder(output_dir) as tmp:
            pipe.save_pretrained(str(tmp), safe_serialization=True)
            missing = [n for n in ("unet", "text_encoder", "vae") if not any((tmp / n).glob("*.safetensors"))]
            if missing:  # never let an incomplete model look finished
                raise RuntimeError(f"saving the fine-tuned pipeline wrote no weights for {', '.join(missing)} in {tmp}")
        return output_dir


def finetune_class(
    base_model: str | Path,
    instance_images: list[Image.Image],
    instance_prompt: str,
    class_images: list[Image.Image],
    class_prompt: str,
    target_class: int,
    config: TrainConfig,
    output_dir: str | Path,
    feature_model: FeatureModel | None = None,
    revision: str | None = None,
    accelerator=None,
    progress: bool = True,
) -> Path:
    """Fine-tune Stable Diffusion on one class's reference images (DreamBooth + SFSL) and save the
    pipeline to `output_dir` (diffusers layout, safetensors, written atomically). Returns `output_dir`."""
    trainer = DreamBoothTrainer.from_pretrained(
        base_model, config, feature_model=feature_model, revision=revision, accelerator=accelerator
    )
    trainer.prepare(instance_images, instance_prompt, class_images, class_prompt, target_class)
    trainer.train(progress=progress, desc=f"fine-tune class {int(target_class)}")
    path = trainer.save(output_dir, base_model, revision=revision)
    del trainer
    return path
