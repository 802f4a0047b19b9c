"""What one unit of each build stage costs at real size, counted without weights (spurbench.generate.cost).

Builds the real architectures on the meta device from their published configs (SD v1.4/1.5 UNet, VAE and
text encoder; SD-2-base; SD-2-inpainting; OWLv2-base at 960 px; SAM-base at 1024 px; the robust ResNet-50 and
diffusers' AutoencoderTiny) and counts FLOPs with torch.utils.flop_counter.FlopCounterMode: a DreamBooth step,
the SFSL extra (decode with gradients + feature model forward and backward) with the full VAE decoder and with
AutoencoderTiny, one text-to-image sample, one img2img image, one inpainting, one textual-inversion step, one
detection. It prints the table and the SFSL extra as a ratio to the DreamBooth step, both counted in the same run;
the ResNet-50 forward + backward at 224 px (24.3 GFLOPs, the count quoted in DESIGN.md) checks the counter.

    python benchmarks/cost_model.py                        # the FLOP table (CPU, no weights, ~20 s)
    python benchmarks/cost_model.py --measure              # + time the real-size models (random weights) on the GPU:
                                                           #   achieved TFLOP/s, utilisation of --peak, measured ratios
    python benchmarks/cost_model.py --measure --device cpu --arch tiny --resolution 64   # the code path, small, on a CPU

`--measure` is the GPU mode (scripts/gpu_check.sh runs it): it builds each model with random weights on the
device (no download), times medians of --repeats runs after a warm-up, and divides the counted FLOPs by the time.
Its utilisation is what `spurbench build --plan --plan-utilization` should be given for that GPU.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spurbench.generate import cost  # noqa: E402

FEATURE_MODEL = "resnet50"  # the robust ResNet-50 of the spurious_imagenet recipe is a torchvision/timm ResNet-50


def flop_table(resolution: int) -> dict[str, float]:
    sd1, sd2, inp = cost.SD_ARCHS["sd-v1"], cost.SD_ARCHS["sd-2-base"], cost.SD_ARCHS["sd-2-inpainting"]
    rows = {
        "check: ResNet-50 forward + backward at 224 px (DESIGN.md: 24.3 GFLOPs)": cost.count_flops(_resnet_fwd_bwd),
        f"DreamBooth step, SD v1 at {resolution} px (1 instance + 1 prior, UNet + text encoder trained)": cost.dreambooth_step(
            sd1, resolution
        ),
        "  same, with gradient checkpointing (the spurious_imagenet recipe)": cost.dreambooth_step(
            sd1, resolution, gradient_checkpointing=True
        ),
        "SFSL extra, full VAE decoder (decode with grad + ResNet-50 fwd/bwd)": cost.sfsl_extra(
            sd1, resolution, FEATURE_MODEL, "full"
        ),
        "  same, VAE gradient checkpointing (recipe)": cost.sfsl_extra(
            sd1, resolution, FEATURE_MODEL, "full", gradient_checkpointing=True
        ),
        "SFSL extra, AutoencoderTiny decoder": cost.sfsl_extra(sd1, resolution, FEATURE_MODEL, "tiny"),
        "  of which: VAE decode forward + backward to the latent": cost.decode_image(
            sd1, resolution, "full", grad=True
        ),
        "  of which: AutoencoderTiny decode forward + backward": cost.decode_image(sd1, resolution, "tiny", grad=True),
        "sampling, one image (SD v1, 30 steps, guidance 7.5)": cost.sample_image(sd1, resolution, 30, 7.5),
        "img2img, one image (D3S: SD v1.4, 50 steps x strength 0.9, guidance 5)": cost.img2img_image(
            sd1, resolution, 50, 0.9, 5.0
        ),
        "inpainting, one image (DDB: SD-2-inpainting, 50 steps, guidance 7.5)": cost.inpaint_image(
            inp, resolution, 50, 7.5
        ),
        "textual inversion micro-step (DDB: SD-2-base, batch 1)": cost.textual_inversion_step(sd2, resolution),
        "detection, one photo (OWLv2-base/16 at 960 px + SAM-base at 1024 px)": cost.detect_image("owlv2", "sam"),
        "  of which OWLv2": cost.owlv2_image(),
        "integrated gradients, one image (ResNet-50, 50 steps)": cost.integrated_gradients("resnet50", 50),
    }
    return rows


def _resnet_fwd_bwd() -> None:
    import torch

    net = cost.model("timm", {"model": "resnet50"}, train=True)
    net(torch.randn(1, 3, 224, 224)).sum().backward()


# ---------------------------------------------------------------------------------------------
# --measure: the real-size models with random weights on a device


def _timed(fn, device, repeats: int) -> float:
    import torch

    fn()  # warm-up (cuDNN autotuning, allocator)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _arch(name: str, resolution: int) -> cost.SDArch:
    if name == "tiny":  # spurbench's tiny SD: the same code path, small enough for a CPU
        from spurbench.generate.recipe import BaseModel, TinyBase

        return cost.sd_arch(BaseModel(tiny=TinyBase()), resolution)[0]
    return cost.SD_ARCHS[name]


def measure(resolution: int, device_name: str, repeats: int, arch: str = "sd-v1") -> list[tuple[str, float, float]]:
    """(name, seconds, counted FLOPs) for the main units, on `device` with random weights, fp16 autocast on CUDA."""
    import timm
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from spurbench.generate.features import FeatureModel

    device = torch.device(device_name)
    sd = _arch(arch, resolution)
    torch.manual_seed(0)
    low = torch.float16 if device.type == "cuda" else torch.float32
    with device:  # random initialisation on the device itself (seconds for SD's UNet on a GPU)
        unet = UNet2DConditionModel.from_config(sd.unet)
        text = CLIPTextModel(CLIPTextConfig(**sd.text))
        vae = AutoencoderKL.from_config(sd.vae).to(low).requires_grad_(False).eval()
        tiny = AutoencoderTiny().to(low).requires_grad_(False).eval()
        net = timm.create_model(FEATURE_MODEL, pretrained=False)
        features = FeatureModel(
            net, {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3}
        )
        unet_eval = UNet2DConditionModel.from_config(sd.unet).to(low).requires_grad_(False).eval()
    h = sd.latent(resolution)
    autocast = torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")

    def dreambooth():
        unet.train()
        text.train()
        with autocast:
            states = text(torch.zeros(2, 77, dtype=torch.long, device=device))[0]
            out = unet(
                torch.randn(2, sd.unet.get("in_channels", 4), h, h, device=device),
                torch.zeros(2, dtype=torch.long, device=device),
                states,
            ).sample
            loss = out.float().pow(2).mean()
        loss.backward()
        unet.zero_grad(set_to_none=True)
        text.zero_grad(set_to_none=True)

    def sfsl(decoder):
        def run():
            z = torch.randn(1, 4, h, h, device=device, requires_grad=True)
            with autocast:
                x = decoder.decode((z / decoder.config.scaling_factor).to(decoder.dtype)).sample
                a = features.class_features(x, 0)
                loss = (1 - torch.nn.functional.cosine_similarity(a.float(), torch.ones_like(a).float(), dim=1)).sum()
            loss.backward()

        return run

    @torch.no_grad()
    def sample_step():
        return unet_eval(
            torch.randn(2, sd.unet.get("in_channels", 4), h, h, device=device, dtype=low),
            torch.zeros(2, dtype=torch.long, device=device),
            torch.randn(2, 77, sd.unet.get("cross_attention_dim", 768), device=device, dtype=low),
        ).sample

    @torch.no_grad()
    def decode():
        return vae.decode(torch.randn(1, 4, h, h, device=device, dtype=low)).sample

    runs = [
        ("DreamBooth step (no checkpointing)", dreambooth, cost.dreambooth_step(sd, resolution)),
        ("SFSL extra, full VAE decoder", sfsl(vae), cost.sfsl_extra(sd, resolution, FEATURE_MODEL, "full")),
        ("SFSL extra, AutoencoderTiny", sfsl(tiny), cost.sfsl_extra(sd, resolution, FEATURE_MODEL, "tiny")),
        ("sampling UNet call (batch 2, guidance)", sample_step, cost._unet_call(sd, resolution, 2)),
        ("VAE decode (no grad)", decode, cost.decode_image(sd, resolution)),
    ]
    return [(name, _timed(fn, device, repeats), flops) for name, fn, flops in runs]


def measure_profile(
    resolution: int, device_name: str, repeats: int, arch: str, precision: str, batch: int, checkpointing: bool
) -> tuple[cost.Profile, list[tuple[str, float, float]]]:
    """Time each kind of stage as the build runs it and turn the times into a profile: the DreamBooth step with
    AdamW, gradient clipping, the GradScaler (fp16) and gradient checkpointing as the recipe says; the update alone
    (its bandwidth); sampling at the recipe's batch (UNet batch 2 x `batch` with guidance) in the low precision;
    a batch-1 ResNet-50 forward (vision); saving and loading a UNet (disk, pipeline build)."""
    import datetime
    import shlex
    import tempfile

    import diffusers
    import timm
    import torch
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    device = torch.device(device_name)
    sd = _arch(arch, resolution)
    torch.manual_seed(0)
    cuda = device.type == "cuda"
    low = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32) if cuda else torch.float32
    with device:
        unet = UNet2DConditionModel.from_config(sd.unet).train()
        text = CLIPTextModel(CLIPTextConfig(**sd.text)).train()
        unet_eval = UNet2DConditionModel.from_config(sd.unet).to(low).requires_grad_(False).eval()
        net = timm.create_model(FEATURE_MODEL, pretrained=False).eval()
    if checkpointing:
        unet.enable_gradient_checkpointing()
    params = [p for m in (unet, text) for p in m.parameters()]
    opt = torch.optim.AdamW(params, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    scaler = torch.amp.GradScaler(device.type) if cuda and precision == "fp16" else None
    autocast = torch.autocast(device.type, dtype=low, enabled=cuda and low != torch.float32)
    h, c = sd.latent(resolution), sd.unet.get("in_channels", 4)

    def update():
        if scaler is not None:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()

    def train_step():  # as DreamBoothTrainer.step + backward_and_update: instance + prior, text encoder trained
        with autocast:
            states = text(torch.zeros(2, 77, dtype=torch.long, device=device))[0]
            out = unet(torch.randn(2, c, h, h, device=device), torch.zeros(2, dtype=torch.long, device=device), states)
            loss = out.sample.float().pow(2).mean()
        (scaler.scale(loss) if scaler is not None else loss).backward()
        update()
        opt.zero_grad(set_to_none=True)

    def update_only():  # the update with gradients in place (kept between runs)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        update()

    n = 2 * batch

    @torch.no_grad()
    def sample_call():
        return unet_eval(
            torch.randn(n, c, h, h, device=device, dtype=low),
            torch.zeros(n, dtype=torch.long, device=device),
            torch.randn(n, 77, sd.unet.get("cross_attention_dim", 768), device=device, dtype=low),
        ).sample

    @torch.no_grad()
    def vision():
        return net(torch.randn(1, 3, 224, 224, device=device))

    t_step = _timed(train_step, device, repeats)
    t_update = _timed(update_only, device, repeats)
    for p in params:
        p.grad = None
    t_sample = _timed(sample_call, device, repeats)
    t_vision = _timed(vision, device, repeats)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        unet_eval.save_pretrained(tmp, safe_serialization=True)
        t_save = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        t0 = time.perf_counter()
        UNet2DConditionModel.from_pretrained(tmp).to(device)
        t_load = time.perf_counter() - t0
    trained = sum(p.numel() for p in params)
    traffic, _ = cost.step_traffic(trained, precision if cuda else "no", checkpointing)
    f_step = cost.dreambooth_step(sd, resolution, 1, True, True, checkpointing)
    f_sample = cost._unet_call(sd, resolution, n)
    f_vision = cost.classifier_pass(FEATURE_MODEL)
    if cuda:
        gpu = next((k for k in cost.GPUS if k in torch.cuda.get_device_name(device).upper()), "GPU")
        peak = (cost.GPUS[gpu].bf16 if low != torch.float32 else cost.GPUS[gpu].fp32) if gpu in cost.GPUS else 0
        name = torch.cuda.get_device_name(device)
    else:  # a CPU's peak: what a large float32 matmul reaches
        gpu, name = cost.CPU, "cpu"
        a = torch.randn(1024, 1024)
        peak = 2 * 1024**3 / _timed(lambda: a @ a, device, repeats) / 1e12
    peak_flops = peak * 1e12
    compute = max(t_step - t_update, 1e-9)
    profile = cost.Profile(
        kind=gpu,
        device=name,
        torch=str(torch.__version__),
        diffusers=str(diffusers.__version__),
        date=datetime.date.today().isoformat(),
        command="python benchmarks/cost_model.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        peak_tflops=round(peak, 3),
        bandwidth_gbs=round(traffic / t_update / 1e9, 3),
        utilization={
            "train": round(min(1.0, f_step / (peak_flops * compute)), 5),
            "sample": round(min(1.0, f_sample / (peak_flops * t_sample)), 5),
            "vision": round(min(1.0, f_vision / (peak_flops * t_vision)), 5),
        },
        io={
            "disk_read_gbs": round(size / t_load / 1e9, 3),
            "disk_write_gbs": round(size / t_save / 1e9, 3),
            "pipeline_build_s": round(t_load, 3),
        },
    )
    rows = [
        ("DreamBooth step (AdamW, clipping, scaler, as the recipe)", t_step, f_step),
        ("  of which the update (AdamW + clipping + scaler)", t_update, 0),
        (f"sampling UNet call (batch {n})", t_sample, f_sample),
        ("ResNet-50 forward, batch 1 (vision)", t_vision, f_vision),
        (f"UNet save ({size / 1e6:.0f} MB)", t_save, 0),
        ("UNet load + build", t_load, 0),
    ]
    return profile, rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--resolution", type=int, default=512, help="image size in pixels (SD v1/2 base: 512)")
    parser.add_argument(
        "--measure", action="store_true", help="also time the real-size models with random weights on --device"
    )
    parser.add_argument("--device", default="cuda", help="device for --measure")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per unit in --measure (median)")
    parser.add_argument(
        "--arch",
        choices=("sd-v1", "sd-2-base", "tiny"),
        default="sd-v1",
        help="architecture timed by --measure (tiny: spurbench's tiny SD, to run the code path on a CPU)",
    )
    parser.add_argument(
        "--precision", choices=("no", "fp16", "bf16"), default="fp16", help="the recipe's mixed_precision"
    )
    parser.add_argument(
        "--batch", type=int, default=16, help="the recipe's generation batch_size (UNet batch 2 x this)"
    )
    parser.add_argument(
        "--no-checkpointing", action="store_true", help="train without gradient checkpointing (the recipe's setting)"
    )
    parser.add_argument("--write-profile", metavar="FILE", help="with --measure: write the measured profile here")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="no GPU: run the whole measuring path on the CPU with the tiny models at 64 px, batch 2, one repeat, and "
        "print (and with --write-profile write) the profile it gives; its numbers describe this CPU, not a GPU",
    )
    parser.add_argument(
        "--peak",
        type=float,
        default=cost.GPUS["H100"].bf16,
        help="the device's peak TFLOP/s for the utilisation in --measure (H100/H200 dense bf16: 989.4)",
    )
    args = parser.parse_args()
    if args.dry_run:
        args.measure, args.device, args.arch, args.resolution, args.repeats, args.batch = True, "cpu", "tiny", 64, 1, 2

    t = time.perf_counter()
    rows = flop_table(args.resolution)
    width = max(map(len, rows))
    print(f"FLOPs counted on the meta device (FlopCounterMode), resolution {args.resolution} px")
    for name, flops in rows.items():
        print(f"  {name:<{width}}  {flops / 1e9:>12,.1f} GFLOP")
    keys = list(rows)
    db, db_ckpt, full, full_ckpt, tiny, dec = (rows[keys[i]] for i in (1, 2, 3, 4, 5, 6))
    print(
        f"SFSL extra / DreamBooth step: full decoder {full / db:.3f}, AutoencoderTiny {tiny / db:.3f} "
        f"(with the recipe's gradient checkpointing: {full_ckpt / db_ckpt:.3f})"
    )
    print(
        f"decoder share of the SFSL extra: {dec / full:.1%}; AutoencoderTiny cuts the SFSL extra {full / tiny:.1f}x "
        f"and a DreamBooth + SFSL step {(db + full) / (db + tiny):.2f}x"
    )
    print(f"(counted in {time.perf_counter() - t:.1f} s)")

    if args.measure:
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print(
                "--measure: skipped, no CUDA device (give --device cpu --resolution 64 to run the code path on a CPU)"
            )
            return
        profile, rows = measure_profile(
            args.resolution, args.device, args.repeats, args.arch, args.precision, args.batch, not args.no_checkpointing
        )
        print(f"stages timed as the build runs them on {profile.device} ({args.arch}, {args.resolution} px):")
        for name, seconds, flops in rows:
            print(
                f"  {name:<58} {seconds * 1e3:10.2f} ms" + (f"  {flops / seconds / 1e12:8.3f} TFLOP/s" if flops else "")
            )
        import yaml

        print("profile:\n" + yaml.safe_dump(profile.to_dict(), sort_keys=False))
        if args.write_profile:
            cost.write_profile(profile, args.write_profile)
            print(f"wrote {args.write_profile}")
        if args.dry_run:
            return
        results = measure(args.resolution, args.device, args.repeats, args.arch)
        name_width = max(len(n) for n, _, _ in results)
        dev = torch.cuda.get_device_name(torch.device(args.device)) if args.device.startswith("cuda") else "cpu"
        print(
            f"measured: {args.arch} at {args.resolution} px on {dev}, random weights, {'fp16 autocast' if args.device.startswith('cuda') else 'float32'}, "
            f"median of {args.repeats} after a warm-up; utilisation against {args.peak:g} TFLOP/s"
        )
        for name, seconds, flops in results:
            print(
                f"  {name:<{name_width}}  {seconds * 1e3:9.2f} ms  {flops / seconds / 1e12:8.2f} TFLOP/s  utilisation {flops / seconds / 1e12 / args.peak:.3f}"
            )
        by = {n: s for n, s, _ in results}
        print(
            f"measured time ratio SFSL extra / DreamBooth step: full decoder {by['SFSL extra, full VAE decoder'] / by['DreamBooth step (no checkpointing)']:.3f}, "
            f"AutoencoderTiny {by['SFSL extra, AutoencoderTiny'] / by['DreamBooth step (no checkpointing)']:.3f}"
        )


if __name__ == "__main__":
    main()
