"""`features.decoder: tiny`: the SFSL decodes z0_hat with diffusers' AutoencoderTiny instead of the VAE
(tested with a tiny random AutoencoderTiny built and saved locally; the default stays the VAE, bit for bit)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from spurbench import resources
from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.generate import features as features_module
from spurbench.generate.dreambooth import DreamBoothTrainer, TrainConfig, pixel_tensor, predict_z0
from spurbench.generate.features import FeatureModel, load_tiny_decoder, sfsl_loss
from spurbench.generate.recipe import recipe_from_dict, recipe_hash
from spurbench.tiny_models import make_tiny_stable_diffusion

RES = 64
K = 285
# the smoke recipe's hash before `features:` existed: recipes without the key must hash (and export) the same
SMOKE_SHA256 = "39ca4e59d809cb826216606778ee82259485f5f90cb64f133325b89fbee4e54f"


def _tiny_autoencoder_tiny(folder):
    """A random AutoencoderTiny whose decoder upsamples 2x, like the tiny SD's VAE (latents at RES / 2)."""
    from diffusers import AutoencoderTiny

    torch.manual_seed(0)
    AutoencoderTiny(
        encoder_block_out_channels=(8, 8),
        decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1),
        num_decoder_blocks=(1, 1),
        latent_channels=4,
    ).save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def tiny_decoder_dir(tmp_path_factory):
    return _tiny_autoencoder_tiny(tmp_path_factory.mktemp("taesd") / "taesd")


def _photo(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (RES, RES, 3), dtype=np.uint8))


def test_sfsl_decodes_with_the_tiny_decoder(tmp_path, tiny_decoder_dir):
    import timm

    base = make_tiny_stable_diffusion(tmp_path / "sd", image_size=RES)
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False)
    fm = FeatureModel(net, timm.data.resolve_data_config(model=net))
    decoder = load_tiny_decoder(str(tiny_decoder_dir))
    assert not any(p.requires_grad for p in decoder.parameters())
    config = TrainConfig(max_train_steps=2, resolution=RES, sfsl_weight=1.0, seed=3)
    trainer = DreamBoothTrainer.from_pretrained(base, config, feature_model=fm)
    instance = [_photo(0), _photo(1)]
    trainer.prepare(instance, "a photo of sks cat", [_photo(2)], "a photo of a cat", K)

    g = torch.Generator().manual_seed(1)
    noisy, pred = torch.randn(1, 4, RES // 2, RES // 2, generator=g), torch.randn(1, 4, RES // 2, RES // 2, generator=g)
    t, index = torch.tensor([10]), torch.tensor([1])
    ref = fm.class_features(pixel_tensor(instance[1], RES)[None], K)
    z0 = predict_z0(trainer.noise_scheduler, noisy, pred, t)
    with torch.no_grad():
        by_vae = sfsl_loss(fm, trainer.vae.decode(z0 / trainer.vae.config.scaling_factor).sample, ref, K)
        by_tiny = sfsl_loss(fm, decoder.decode(z0 / decoder.config.scaling_factor).sample, ref, K)
        torch.testing.assert_close(trainer.sfsl_term(noisy, pred, t, index), by_vae)  # default: the VAE
        fm.decoder = decoder
        torch.testing.assert_close(trainer.sfsl_term(noisy, pred, t, index), by_tiny)
    assert not torch.isclose(by_vae, by_tiny)
    # the gradient still reaches the UNet through the tiny decoder, which itself stays frozen
    before = {k: v.clone() for k, v in decoder.state_dict().items()}
    trainer.compute_losses()["sfsl"].backward()
    assert sum(p.grad.abs().sum() for p in trainer.unet.parameters() if p.grad is not None) > 0
    assert all(p.grad is None for p in decoder.parameters())
    assert all(torch.equal(v, before[k]) for k, v in decoder.state_dict().items())


def _smoke_dict() -> dict:
    _, data = resources.load_yaml("recipe", "smoke")
    data = copy.deepcopy(data)
    data.pop("verify", None)
    data.pop("control", None)  # the smoke recipe without the later `control:` key hashes as it always did
    return data


def test_recipe_features_section(tiny_decoder_dir):
    default = recipe_from_dict(_smoke_dict())
    assert default.features is None and "features" not in default.to_dict()
    assert recipe_hash(default) == SMOKE_SHA256
    data = _smoke_dict()
    data["features"] = {"decoder": "tiny", "tiny_decoder": str(tiny_decoder_dir)}
    with pytest.raises(SpurbenchError, match=r"licenses.sfsl_decoder"):
        recipe_from_dict(data)  # every input states its licence
    data["licenses"]["sfsl_decoder"] = "MIT (madebyollin/taesd)"
    tiny = recipe_from_dict(data)
    assert tiny.features.decoder == "tiny" and recipe_hash(tiny) != SMOKE_SHA256
    data["features"] = {"decoder": "full"}
    assert recipe_hash(recipe_from_dict(data)) != SMOKE_SHA256  # stated explicitly: part of the recipe
    data["features"] = {"decoder": "small"}
    with pytest.raises(SpurbenchError, match=r"key 'features.decoder' must be one of full, tiny, got 'small'"):
        recipe_from_dict(data)
    data["features"] = {"decoder": "tiny", "size": 3}
    with pytest.raises(SpurbenchError, match=r"unknown key 'features.size'"):
        recipe_from_dict(data)


def test_unloadable_tiny_decoder_is_one_line(tmp_path):
    with pytest.raises(SpurbenchError) as err:
        load_tiny_decoder("nobody-here/no-such-taesd")  # HF_HUB_OFFLINE=1: never reached
    assert "features.tiny_decoder" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpurbenchError, match="cannot load the SFSL tiny decoder"):
        load_tiny_decoder(str(tmp_path / "empty"))


@pytest.mark.slow
def test_build_with_tiny_decoder(tmp_path, tiny_decoder_dir, monkeypatch):
    """The smoke recipe with `features.decoder: tiny`, one class, through the CLI: the build loads the decoder once
    and decodes every SFSL step's z0_hat with it."""
    data = _smoke_dict()
    data["features"] = {"decoder": "tiny", "tiny_decoder": str(tiny_decoder_dir)}
    data["licenses"]["sfsl_decoder"] = "random weights (test)"
    recipe = tmp_path / "smoke_tiny.yaml"
    recipe.write_text(yaml.safe_dump(data))
    calls = []
    real = features_module.load_tiny_decoder

    def counting_loader(*args, **kwargs):  # the real loader; the hook counts the decoder's forward passes
        decoder = real(*args, **kwargs)
        decoder.decoder.register_forward_hook(lambda *a: calls.append(1))
        return decoder

    monkeypatch.setattr(features_module, "load_tiny_decoder", counting_loader)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    assert (
        main(["build", "--recipe", str(recipe), "--out", str(tmp_path / "out"), "--classes", "309", "--no-progress"])
        == 0
    )
    assert len(calls) == data["training"]["max_train_steps"]  # sfsl_max_timestep null: every step
    assert (tmp_path / "out" / "README.md").is_file()
