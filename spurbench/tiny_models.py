"""Tiny models with random weights, built and saved locally, for CPU smoke builds and tests: a Stable Diffusion
(the `tiny` base model of a recipe) and the detectors and segmenter of spurbench.detection (`tiny`). Below both the
building side and detection, which import it; it imports nothing of spurbench.

The Stable Diffusion has the architecture of Stable Diffusion (UNet2DConditionModel with cross-attention, AutoencoderKL,
CLIP text encoder and tokenizer, a DDPM-family scheduler) at toy width, with random weights. It is saved
with `save_pretrained`, so everything downstream loads it through the same `from_pretrained(folder)`
path a real checkpoint takes. Its images are noise-like: it tests the machinery, not image quality.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

# Numbers follow the tiny configs of diffusers' own pipeline tests (see DESIGN.md).
TEXT_HIDDEN = 32


def _byte_level_vocab() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A CLIP BPE vocabulary over single byte-level characters (plus their end-of-word forms)
    and a few merges, so any prompt, including rare identifiers like "sks", tokenizes."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    tokens = chars + [c + "</w>" for c in chars]
    merges = [("s", "k"), ("sk", "s</w>"), ("o", "f</w>"), ("t", "h"), ("th", "e</w>")]
    tokens += ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(dict.fromkeys(tokens))}, merges


def tower_config(hidden: int, intermediate: int, layers: int, heads: int, **more) -> dict:
    """A transformer tower's sizes under transformers' config names (CLIP text and vision towers, OWLv2's)."""
    return dict(
        hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers, num_attention_heads=heads, **more
    )


def tiny_unet_config(latent_size: int, in_channels: int = 4) -> dict:
    """UNet2DConditionModel arguments of the tiny model (also what spurbench.generate.cost builds on the meta device)."""
    return dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=latent_size,
        in_channels=in_channels,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=TEXT_HIDDEN,
        norm_num_groups=2,
        attention_head_dim=2,
    )


def tiny_vae_config(image_size: int) -> dict:
    """AutoencoderKL arguments of the tiny model: two blocks, so latents are image_size / 2."""
    return dict(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
        sample_size=image_size,
    )


def tiny_text_config(vocab: dict[str, int] | None = None) -> dict:
    """CLIPTextConfig arguments of the tiny model's text encoder."""
    vocab = vocab if vocab is not None else _byte_level_vocab()[0]
    return tower_config(
        TEXT_HIDDEN,
        37,
        2,
        4,
        bos_token_id=vocab["<|startoftext|>"],
        eos_token_id=vocab["<|endoftext|>"],
        pad_token_id=vocab["<|endoftext|>"],
        layer_norm_eps=1e-05,
        vocab_size=max(1000, len(vocab)),
        max_position_embeddings=77,
    )


def make_tiny_stable_diffusion(
    out_dir: str | Path,
    prediction_type: str = "epsilon",
    seed: int = 0,
    image_size: int = 64,
) -> Path:
    """Build a randomly initialised tiny Stable Diffusion and save it in diffusers layout.

    `prediction_type` is "epsilon" or "v_prediction" (SD 2.x style). Deterministic in `seed`.
    Returns `out_dir`, loadable with `StableDiffusionPipeline.from_pretrained(out_dir)`.
    """
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if prediction_type not in ("epsilon", "v_prediction"):
        raise ValueError(f"prediction_type must be 'epsilon' or 'v_prediction', got {prediction_type!r}")
    out_dir = Path(out_dir)
    latent_size = image_size // 2  # the VAE below downsamples once (two blocks)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**tiny_unet_config(latent_size))
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**tiny_vae_config(image_size))
    torch.manual_seed(seed + 2)
    vocab, merges = _byte_level_vocab()
    text_encoder = CLIPTextModel(CLIPTextConfig(**tiny_text_config(vocab)))
    tokenizer = tiny_clip_tokenizer(out_dir, model_max_length=77)
    scheduler = DDPMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        prediction_type=prediction_type,
        clip_sample=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(out_dir), safe_serialization=True)
    return out_dir


def tiny_clip_tokenizer(scratch_dir: str | Path, model_max_length: int = 77):
    """A CLIPTokenizer over the byte-level vocabulary above, loaded with `from_pretrained` from files
    written into a scratch folder under `scratch_dir` (removed again). Shared with the tiny detectors."""
    from transformers import CLIPTokenizer

    vocab, merges = _byte_level_vocab()
    tok_dir = Path(scratch_dir) / "_tokenizer_src"
    tok_dir.mkdir(parents=True, exist_ok=True)
    try:
        (tok_dir / "vocab.json").write_text(json.dumps(vocab))
        (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
        return CLIPTokenizer.from_pretrained(str(tok_dir), model_max_length=model_max_length)
    finally:
        for f in tok_dir.iterdir():
            f.unlink()
        tok_dir.rmdir()


# ---------------------------------------------------------------------------------------------
# Tiny detectors and segmenter (spurbench.detection's `tiny` models; their scores mean nothing)

_TINY_IMAGE = 64  # tiny models see 64x64 inputs: fast on any CPU


def make_tiny_owlv2(out_dir: str | Path, seed: int = 0) -> Path:
    """A randomly initialised OWLv2 at toy width (CLIP text + ViT vision, 8x8 patches), saved with
    `save_pretrained` with its processor; loads with `Owlv2ForObjectDetection.from_pretrained(out_dir)`."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = tiny_clip_tokenizer(out_dir, model_max_length=64)
    torch.manual_seed(seed)
    config = Owlv2Config(
        text_config=tower_config(
            32,
            37,
            2,
            4,
            vocab_size=max(1000, len(tokenizer)),
            max_position_embeddings=64,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=tower_config(32, 37, 2, 4, image_size=_TINY_IMAGE, patch_size=8),
        projection_dim=32,
        # default-scale random weights saturate: most images score 1.0. A tenth of it spreads the scores
        # (about 0.5 to 0.75), so thresholds in tests and smoke builds split a set (the scores still mean nothing).
        initializer_factor=0.1,
    )
    Owlv2ForObjectDetection(config).save_pretrained(str(out_dir))
    image_processor = Owlv2ImageProcessor(size={"height": _TINY_IMAGE, "width": _TINY_IMAGE})
    Owlv2Processor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(out_dir))
    return out_dir


def _tiny_bert_tokenizer(scratch_dir: Path):
    """A WordPiece tokenizer whose [CLS], [SEP], "." and "?" have BERT-base's ids (101, 102, 1012, 1029):
    Grounding DINO splits phrases at exactly those ids, so the tiny model exercises the same masking."""
    from transformers import BertTokenizer

    vocab = [f"[unused{i}]" for i in range(1030)]
    for i, tok in {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]", 1012: ".", 1029: "?"}.items():
        vocab[i] = tok
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)] + [str(d) for d in range(10)] + list("-',()&/!")
    free = iter(i for i in range(104, 1012) if vocab[i].startswith("[unused"))
    for tok in chars + [f"##{c}" for c in chars]:
        vocab[next(free)] = tok
    folder = scratch_dir / "_bert_vocab"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
        return BertTokenizer.from_pretrained(str(folder), model_max_length=256)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def make_tiny_grounding_dino(out_dir: str | Path, seed: int = 0) -> Path:
    """A randomly initialised Grounding DINO at toy width (Swin backbone, BERT text encoder, 10 queries),
    saved with `save_pretrained` with its processor; loads with AutoModelForZeroShotObjectDetection."""
    import torch
    from transformers import (
        BertConfig,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = _tiny_bert_tokenizer(out_dir)
    torch.manual_seed(seed)
    config = GroundingDinoConfig(
        backbone_config=SwinConfig(
            image_size=_TINY_IMAGE,
            patch_size=4,
            embed_dim=8,
            depths=[1, 1, 1, 1],
            num_heads=[1, 1, 1, 1],
            window_size=4,
            out_features=["stage2", "stage3", "stage4"],
        ),
        text_config=BertConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=16,
            max_position_embeddings=256,
        ),
        d_model=32,  # its GroupNorms use 32 groups
        encoder_layers=1,
        decoder_layers=2,  # decoder box heads are tied across layers: at least two
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=10,
        encoder_n_points=2,
        decoder_n_points=2,
        max_text_len=256,
    )
    GroundingDinoForObjectDetection(config).save_pretrained(str(out_dir))
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": _TINY_IMAGE, "longest_edge": 2 * _TINY_IMAGE})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(str(out_dir))
    return out_dir


def make_tiny_sam(out_dir: str | Path, seed: int = 0) -> Path:
    """A randomly initialised SAM at toy width (64-pixel inputs, 8x8 patches), saved with its processor;
    loads with `SamModel.from_pretrained(out_dir)`."""
    import torch
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    config = SamConfig(
        vision_config=dict(
            hidden_size=32,
            output_channels=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=_TINY_IMAGE,
            patch_size=8,
            mlp_dim=32,
            global_attn_indexes=[1],
            window_size=4,
            num_pos_feats=8,
        ),  # 2 * num_pos_feats = output_channels
        prompt_encoder_config=dict(hidden_size=16, image_size=_TINY_IMAGE, patch_size=8, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=16, mlp_dim=32, num_hidden_layers=2, num_attention_heads=2, iou_head_hidden_dim=16
        ),
    )
    SamModel(config).save_pretrained(str(out_dir))
    image_processor = SamImageProcessor(
        size={"longest_edge": _TINY_IMAGE},
        pad_size={"height": _TINY_IMAGE, "width": _TINY_IMAGE},
        mask_size={"longest_edge": _TINY_IMAGE // 4},
        mask_pad_size={"height": _TINY_IMAGE // 4, "width": _TINY_IMAGE // 4},
    )
    SamProcessor(image_processor=image_processor).save_pretrained(str(out_dir))
    return out_dir
