"""The cost model (spurbench.generate.cost) and `spurbench build --plan`: real architectures on the meta device,
checked against published parameter counts and FLOP counts, and a plan that loads and downloads nothing."""

from __future__ import annotations

import re

import pytest

from spurbench.cli import main
from spurbench.generate import cost

SD1 = cost.SD_ARCHS["sd-v1"]
SD2 = cost.SD_ARCHS["sd-2-base"]
RECIPES = ["smoke", "spurious_imagenet", "d3s", "d3s_smoke", "ddb", "ddb_smoke"]


def test_published_parameter_counts():
    # The configs written in cost.py give the published models exactly: parameter counts of the released
    # checkpoints (SD v1.4/1.5 UNet 859.52 M, VAE 83.65 M, CLIP ViT-L/14 text 123.06 M; SD 2 UNet 865.91 M,
    # OpenCLIP-H text tower without its last layer 340.39 M; SAM ViT-B 93.74 M).
    assert cost.parameters("unet", SD1.unet) == 859_520_964
    assert cost.parameters("vae", SD1.vae) == 83_653_863
    assert cost.parameters("text", SD1.text) == 123_060_480
    assert cost.parameters("unet", SD2.unet) == 865_910_724
    assert cost.parameters("text", SD2.text) == 340_387_840
    inpaint = cost.SD_ARCHS["sd-2-inpainting"]
    # 9 input channels: 5 more input planes of the first 3x3 convolution to 320 channels
    assert cost.parameters("unet", inpaint.unet) - cost.parameters("unet", SD2.unet) == 5 * 320 * 3 * 3
    assert cost.parameters("sam", {}) == 93_735_728


def test_resnet50_flops_match_published_macs():
    # ResNet-50 at 224 px: 4.09 G multiply-adds (torchvision's model table, "GFLOPS 4.09"; He et al. 2016: 3.8 G
    # without the shortcut projections); FlopCounterMode counts 2 FLOPs per multiply-add
    assert cost.classifier_pass("resnet50") == pytest.approx(2 * 4.09e9, rel=0.01)


def test_conv_flops_hand_count():
    # an independent hand count: one 3x3 convolution 64 -> 128 channels on a 56 x 56 map, batch 3
    import torch

    conv = lambda: torch.nn.Conv2d(64, 128, 3, padding=1)(torch.randn(3, 64, 56, 56))  # noqa: E731
    assert cost.count_flops(conv) == 2 * 3 * 56 * 56 * 128 * 64 * 3 * 3


@pytest.mark.slow
def test_unet_flops_scale_with_batch_and_guidance():
    one, two = cost._unet_call(SD1, 512, 1), cost._unet_call(SD1, 512, 2)
    assert two == 2 * one
    # SD's UNet is ~400 G multiply-adds per 64 x 64 latent
    assert 0.75e12 < one < 0.85e12
    # classifier-free guidance doubles the UNet's work; the decode is paid once per image
    with_cfg, without = cost.sample_image(SD1, 512, 30, 7.5), cost.sample_image(SD1, 512, 30, 1.0)
    assert with_cfg - without == pytest.approx(30 * one, rel=0.01)


@pytest.mark.slow
def test_dreambooth_step_and_sfsl_extra():
    plain = cost.dreambooth_step(SD1, 512, 1, prior=False)
    with_prior = cost.dreambooth_step(SD1, 512, 1, prior=True)
    assert with_prior == 2 * plain  # prior preservation doubles the batch
    # training = forward + backward with weight gradients: about 3 forwards of the UNet
    assert with_prior == pytest.approx(3 * cost._unet_call(SD1, 512, 2), rel=0.05)
    # a frozen decoder's backward computes input gradients only: about one more forward
    assert cost.decode_image(SD1, 512, grad=True) == pytest.approx(2 * cost.decode_image(SD1, 512), rel=0.05)
    full = cost.sfsl_extra(SD1, 512, "resnet50", "full")
    tiny = cost.sfsl_extra(SD1, 512, "resnet50", "tiny")
    # the full VAE decoder is nearly all of the SFSL extra, which is about one DreamBooth step at 512 px
    assert cost.decode_image(SD1, 512, grad=True) / full > 0.95
    assert 0.8 < full / with_prior < 1.3
    assert full / tiny > 10


def test_sd_arch_from_recipe_names_and_local_folder(tmp_path):
    from spurbench.generate.recipe import BaseModel

    assert cost.sd_arch(BaseModel(id="CompVis/stable-diffusion-v1-4"))[0] is SD1
    assert cost.sd_arch(BaseModel(id="stabilityai/stable-diffusion-2-base"))[0] is SD2
    assert cost.sd_arch(BaseModel(id="stabilityai/stable-diffusion-2-inpainting"))[0].unet["in_channels"] == 9
    arch, note = cost.sd_arch(BaseModel(id="someone/unknown-model"))
    assert arch is SD1 and "unknown" in note
    # a local diffusers folder is costed from its own config.json files (here: the tiny model's, saved)
    from spurbench.tiny_models import make_tiny_stable_diffusion

    folder = make_tiny_stable_diffusion(tmp_path / "sd", image_size=32)
    local, _ = cost.sd_arch(BaseModel(id=str(folder)), 32)
    tiny, _ = cost.sd_arch(
        BaseModel(tiny=__import__("spurbench.generate.recipe", fromlist=["TinyBase"]).TinyBase()), 32
    )
    assert local.vae_factor == 2
    assert cost.sample_image(local, 32, 4, 7.5) == cost.sample_image(tiny, 32, 4, 7.5)


def _forbid_loading(monkeypatch):
    """Every way spurbench could read or fetch weights raises."""
    import diffusers
    import huggingface_hub
    import timm
    import transformers

    def forbidden(*args, **kwargs):
        raise AssertionError(f"--plan loaded or downloaded something: {args!r}")

    monkeypatch.setattr(diffusers.ModelMixin, "from_pretrained", classmethod(forbidden))
    monkeypatch.setattr(diffusers.DiffusionPipeline, "from_pretrained", classmethod(forbidden))
    monkeypatch.setattr(diffusers.DiffusionPipeline, "download", classmethod(forbidden))
    monkeypatch.setattr(transformers.PreTrainedModel, "from_pretrained", classmethod(forbidden))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", forbidden)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", forbidden)
    real_create = timm.create_model

    def create_model(name, pretrained=False, **kwargs):
        if pretrained:
            forbidden(name)
        return real_create(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)
    import torch

    monkeypatch.setattr(torch, "load", forbidden)


@pytest.mark.slow
def test_plan_of_every_recipe_loads_and_downloads_nothing(tmp_path, monkeypatch, capsys):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.chdir(tmp_path)
    _forbid_loading(monkeypatch)
    for name in RECIPES:
        assert main(["build", "--recipe", name, "--plan"]) == 0, name
        out = capsys.readouterr().out
        assert (
            f"plan for recipe {name}" in out
            and "GPU-hours" in out
            and "images to make" in out
            and "total left on disk" in out
        )
    assert not any(hf_home.iterdir())  # nothing cached, nothing downloaded
    assert not any(p for p in tmp_path.iterdir() if p.name != "hf")  # no work dir, no export


@pytest.mark.slow
def test_plan_numbers_of_the_sfsl_recipe(capsys):
    assert main(["build", "--recipe", "spurious_imagenet", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "images to make: 10,000 exported + 11,200 class priors" in out  # 100 x 4 x 25; 56 nouns x 200
    assert re.search(r"DreamBooth step\s+60,000 step", out)  # 100 classes x 600 steps
    assert re.search(r"SFSL extra \(full decoder\)\s+30,000 step", out)  # t < 500 of 1000
    assert (
        "stable-diffusion-v1-5/stable-diffusion-v1-5" in out and "5.48 GB" in out
    )  # UNet+VAE+text+safety checker, fp32
    from spurbench.generate.recipe import load_recipe

    path, recipe = load_recipe("spurious_imagenet")
    h100 = cost.plan(recipe, recipe_path=path, utilization=0.2)
    a100 = cost.plan(recipe, recipe_path=path, gpu="A100", utilization=0.4)
    assert h100.flops == a100.flops
    # the compute term is FLOPs at the one utilisation given; traffic and fixed costs come on top
    compute = sum(h100.seconds(line).compute for line in h100.lines)
    assert compute == pytest.approx(h100.flops / (989.4e12 * 0.2))
    a100_compute = sum(a100.seconds(line).compute for line in a100.lines)
    assert a100_compute / compute == pytest.approx((989.4 * 0.2) / (312.0 * 0.4))
    assert h100.gpu_hours() * 3600 > compute
    # a class selection costs its share
    one = cost.plan(recipe, recipe.classes[:1])
    assert one.images == 100


def test_plan_flags_fail_in_one_line(capsys):
    assert main(["build", "--recipe", "smoke", "--plan", "--plan-gpu", "TPU"]) == 2
    err = capsys.readouterr().err
    assert "--plan-gpu 'TPU' is not known" in err and "H100" in err and len(err.strip().splitlines()) == 1
    assert main(["build", "--recipe", "smoke", "--plan", "--plan-utilization", "1.5"]) == 2
    assert "--plan-utilization must be a fraction" in capsys.readouterr().err
    # without --plan, --out is still required (a one-line error, nothing written)
    assert main(["build", "--recipe", "smoke"]) == 2
    assert "--out" in capsys.readouterr().err


def _tiny_arch():
    from spurbench.generate.recipe import BaseModel, TinyBase

    return cost.sd_arch(BaseModel(tiny=TinyBase()), 32)[0]


def _clear_count_caches():
    for fn in (cost.dreambooth_step, cost.textual_inversion_step, cost._unet_call, cost._text_call):
        fn.cache_clear()


def test_a_count_does_not_depend_on_the_counts_before_it():
    # Counting a DreamBooth step with gradient checkpointing and a trained text encoder, then frozen inference,
    # gives the same numbers as counting them alone: no count leaves a model behind in another state.
    arch = _tiny_arch()
    _clear_count_caches()
    alone_unet = cost._unet_call(arch, 32, 2)
    alone_text = cost._text_call(arch, 2)
    _clear_count_caches()
    alone_ti = cost.textual_inversion_step(arch, 32)
    _clear_count_caches()
    cost.dreambooth_step(arch, 32, 1, True, True, gradient_checkpointing=True)
    cost.textual_inversion_step(arch, 32)
    assert cost._unet_call(arch, 32, 2) == alone_unet
    assert cost._text_call(arch, 2) == alone_text
    _clear_count_caches()
    cost.dreambooth_step(arch, 32, 1, True, True, gradient_checkpointing=True)
    assert cost.textual_inversion_step(arch, 32) == alone_ti
    # and a model handed out is a new one each time
    assert cost.model("text", arch.text) is not cost.model("text", arch.text)
