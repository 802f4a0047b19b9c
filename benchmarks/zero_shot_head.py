"""Zero-shot head cost: spurbench's batched head (spurbench/zoo/zero_shot.py) against open_clip's own
`build_zero_shot_classifier` on the same tiny open_clip model, 1000 ImageNet classes x the chosen templates.

    python benchmarks/zero_shot_head.py [--templates openai|simple] [--context-length 16] [--repeats 3]

Prints the median seconds of each, their ratio, and the largest absolute difference of the two heads
(the same float32 operations batched differently).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    import open_clip
    from safetensors.torch import save_file

    from spurbench.zoo import zero_shot

    p = argparse.ArgumentParser()
    p.add_argument("--templates", default="simple", choices=zero_shot.TEMPLATE_SETS)
    p.add_argument("--context-length", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "tiny"
        folder.mkdir()
        cfg = {
            "embed_dim": 32,
            "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8},
            "text_cfg": {
                "context_length": args.context_length,
                "vocab_size": 49408,
                "width": 64,
                "heads": 2,
                "layers": 2,
            },
        }
        torch.manual_seed(0)
        save_file(open_clip.CLIP(**cfg).state_dict(), str(folder / "open_clip_model.safetensors"))
        (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
        model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{folder}")
        model.eval()
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
        prompts, _ = zero_shot.load_templates(args.templates)
        names = list(open_clip.IMAGENET_CLASSNAMES)
        fns = open_clip.OPENAI_IMAGENET_TEMPLATES if args.templates == "openai" else open_clip.SIMPLE_IMAGENET_TEMPLATES
        ours, ref = [], []
        for _ in range(args.repeats):
            t = time.perf_counter()
            a = zero_shot.build_head(lambda texts: model.encode_text(tokenizer(texts), normalize=True), names, prompts)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.inference_mode():
                b = open_clip.build_zero_shot_classifier(model, tokenizer, names, fns, num_classes_per_batch=10)
            ref.append(time.perf_counter() - t)
        mo, mr = statistics.median(ours), statistics.median(ref)
        print(
            f"{len(names)} classes x {len(prompts)} templates, context {args.context_length}, {torch.get_num_threads()} threads"
        )
        print(
            f"spurbench build_head: {mo:.2f} s  open_clip build_zero_shot_classifier: {mr:.2f} s  ratio (open_clip / spurbench): {mr / mo:.2f}"
        )
        print(f"max |difference| of the heads: {(a - b).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
