"""Textual inversion on a tiny Stable Diffusion built locally: only the new token's embedding learns,
and the saved file is the one `pipe.load_textual_inversion` reads."""

from __future__ import annotations

import pytest
import torch
from conftest import _photo
from PIL import Image

from spurbench.errors import SpurbenchError
from spurbench.generate import textual_inversion as ti
from spurbench.tiny_models import make_tiny_stable_diffusion


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    return make_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "sd", prediction_type="v_prediction")


@pytest.mark.slow
def test_only_the_new_token_embedding_changes_and_the_file_loads(tiny_sd, tmp_path):
    from diffusers import StableDiffusionPipeline

    images = [Image.fromarray(_photo(n)) for n in ("chelsea", "coffee")]
    cfg = ti.InversionConfig(
        max_train_steps=3, gradient_accumulation_steps=2, resolution=64, learning_rate=0.05, seed=1
    )
    result = ti.learn_token(tiny_sd, images, "<tabby>", "sks", tmp_path / "tok", cfg, device="cpu", progress=False)
    assert len(result.losses) == 3 and all(loss > 0 for loss in result.losses)

    fresh = StableDiffusionPipeline.from_pretrained(str(tiny_sd))
    for name in ("unet", "vae"):
        before, after = getattr(fresh, name).state_dict(), getattr(result, name).state_dict()
        assert all(torch.equal(before[k], after[k].to(before[k].dtype)) for k in before), name
    before, after = fresh.text_encoder.state_dict(), result.text_encoder.state_dict()
    emb_key = next(k for k in before if k.endswith("token_embedding.weight"))
    assert all(torch.equal(before[k], after[k]) for k in before if k != emb_key)
    n = result.token_id
    assert n == len(fresh.tokenizer)  # the next free id
    rows = max(before[emb_key].shape[0], n + 1)
    assert after[emb_key].shape[0] == rows
    others = torch.ones(rows, dtype=torch.bool)
    others[n] = False
    padded = torch.cat([before[emb_key], after[emb_key][before[emb_key].shape[0] :]])  # rows a resize added, if any
    assert torch.equal(padded[others], after[emb_key][others])  # every other row exactly as it was
    init = before[emb_key][fresh.tokenizer.encode("sks", add_special_tokens=False)].mean(0)
    assert not torch.allclose(after[emb_key][n], init)  # the new row learned

    fresh.load_textual_inversion(str(tmp_path / "tok"))
    assert "<tabby>" in fresh.tokenizer.get_vocab()
    new_id = fresh.tokenizer.convert_tokens_to_ids("<tabby>")
    assert torch.equal(fresh.text_encoder.get_input_embeddings().weight[new_id], after[emb_key][n])


def test_bad_tokens_and_settings_are_one_line_errors(tiny_sd):
    from transformers import CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(str(tiny_sd), subfolder="tokenizer")
    enc = CLIPTextModel.from_pretrained(str(tiny_sd), subfolder="text_encoder")
    with pytest.raises(SpurbenchError, match="already in the tokenizer"):
        ti.add_token(tok, enc, "sks</w>", "a")
    with pytest.raises(SpurbenchError, match="unknown key"):
        ti.InversionConfig.from_dict({"steps": 3})
    with pytest.raises(SpurbenchError, match="templates"):
        ti.InversionConfig.from_dict({"templates": ["no placeholder"]})
    assert ti.InversionConfig().effective_lr == pytest.approx(5e-4 * 4)
