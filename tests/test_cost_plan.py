"""The plan's bill beyond FLOPs (spurbench.generate.cost): time per stage with its terms and sources, measured
profiles, peak memory on fake tensors, and the whole disk checked against real smoke builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spurbench.cli import main
from spurbench.errors import SpurbenchError
from spurbench.generate import cost
from spurbench.generate.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]


def _profile(**changes) -> dict:
    data = {
        "kind": "H100",
        "device": "NVIDIA H100 80GB HBM3",
        "torch": "2.x",
        "diffusers": "0.x",
        "date": "2026-12-05",
        "command": "python benchmarks/cost_model.py --measure",
        "peak_tflops": 989.4,
        "bandwidth_gbs": 2000.0,
        "utilization": {"train": 0.03, "sample": 0.25, "vision": 0.05},
        "disk_read_gbs": 2.0,
    }
    data.update(changes)
    return data


def _write(tmp_path: Path, data) -> Path:
    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_time_terms_and_their_sources(tmp_path):
    path, recipe = load_recipe("smoke")
    default = cost.plan(recipe)
    text = cost.format_plan(default)
    # one utilisation per kind of stage, stated as a default without a profile
    assert default.rate("train") == (
        cost.DEFAULT_UTILIZATIONS["train"],
        "default for train stages (no profile for NVIDIA H100 SXM)",
    )
    assert "no measured profile for NVIDIA H100 SXM" in text and "traffic" in text and "fixed: read" in text
    step = next(line for line in default.lines if line.stage == "3 fine-tune: DreamBooth step")
    # the optimizer/clipping traffic of every trained parameter: 48 B each without mixed precision
    trained = cost.trained_parameters(cost.sd_arch(recipe.base_model, 32)[0], True)
    assert step.traffic_each == 48 * trained
    t = default.seconds(step)
    assert t.traffic == pytest.approx(step.count * 48 * trained / 3350e9)
    assert t.fixed == pytest.approx(step.reads / 1e9 + step.writes / 0.5e9 + step.builds * 3.0)
    # a measured profile replaces the defaults, and says where its numbers came from
    measured = cost.plan(recipe, profile=_write(tmp_path, _profile()))
    assert measured.rate("train") == (0.03, "profile profile.yaml (2026-12-05)")
    assert measured.bandwidth()[0] == 2000e9 and measured.io("disk_read_gbs") == (2.0, "profile profile.yaml")
    assert "by `python benchmarks/cost_model.py --measure`" in cost.format_plan(measured)
    # --plan-utilization: one figure for the FLOPs of every stage, the other terms unchanged
    flat = cost.plan(recipe, utilization=0.5)
    assert {flat.rate(k)[0] for k in cost.DEFAULT_UTILIZATIONS} == {0.5}
    assert flat.seconds(step).traffic == t.traffic


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "is not a mapping"),
        ({"kind": "H100"}, "lacks device, torch"),
        (_profile(utilization={"train": 0.1}), "'utilization' must give exactly train, sample, vision"),
        (
            _profile(utilization={"train": 2, "sample": 0.2, "vision": 0.1}),
            "key 'train' must be a number in \\(0, 1\\]",
        ),
        (_profile(bandwidth_gbs="fast"), "key 'bandwidth_gbs' must be a number"),
    ],
)
def test_a_bad_profile_is_one_line(tmp_path, capsys, data, message):
    path = _write(tmp_path, data)
    before = path.read_bytes()
    assert main(["build", "--recipe", "smoke", "--plan", "--plan-profile", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "cost profile" in err
    with pytest.raises(SpurbenchError, match=message):
        cost.load_profile(path)
    assert path.read_bytes() == before  # read, never rewritten


def test_cpu_needs_a_profile_and_a_missing_profile_is_one_line(tmp_path, capsys):
    assert main(["build", "--recipe", "smoke", "--plan", "--plan-gpu", "cpu"]) == 2
    assert "--plan-gpu CPU needs --plan-profile FILE" in capsys.readouterr().err
    assert main(["build", "--recipe", "smoke", "--plan", "--plan-profile", str(tmp_path / "none.yaml")]) == 2
    assert "cannot read cost profile" in capsys.readouterr().err


def test_a_written_profile_reads_back(tmp_path):
    profile = cost.load_profile(_write(tmp_path, _profile()))
    cost.write_profile(profile, tmp_path / "again.yaml")
    again = cost.load_profile(tmp_path / "again.yaml")
    assert again.to_dict() == profile.to_dict()


@pytest.mark.slow
def test_memory_on_fake_tensors_matches_a_real_cpu_run():
    # The estimate (MemTracker on FakeTensorMode, nothing computed) against the same tracker following the real
    # float32 tensors of a tiny DreamBooth step on this CPU: the fake run must allocate what the real one does.
    import torch
    from torch.distributed._tools.mem_tracker import MemTracker

    arch = cost.sd_arch(load_recipe("smoke")[1].base_model, 32)[0]
    estimate = cost._train_memory(arch, 32, 1, True, True, False, "no", None)
    torch.manual_seed(0)
    unet, te = cost._fresh("unet", arch.unet, train=True), cost._fresh("text", arch.text, train=True)
    params = [p for m in (unet, te) for p in m.parameters()]
    opt = torch.optim.AdamW(params, weight_decay=1e-2)
    tracker = MemTracker()
    tracker.track_external(unet, te, opt)
    with tracker:
        for _ in range(2):
            tracker.reset_mod_stats()
            pred = unet(*cost._unet_inputs(arch, 32, 2, channels=4), te(cost._text_ids(2))[0]).sample
            pred.float().pow(2).mean().backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
    real = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    assert estimate.total == pytest.approx(real, rel=0.05)
    # and the parts a user can act on are exact: fp32 weights, two AdamW moments per trained parameter (+ one
    # float32 step counter per parameter tensor)
    numel = sum(p.numel() for p in params)
    assert estimate.weights >= 4 * numel and estimate.optimizer == 8 * numel + 4 * len(params)


def _build(name: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "spurbench", "build", "--recipe", name, "--out", "data", "--no-progress"]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smoke", "d3s_smoke", "ddb_smoke"])
def test_disk_figure_matches_a_real_smoke_build(tmp_path, name):
    # every byte the build writes, work folder and export, against the plan's figure: within 10 %
    proc = _build(name, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file())
    path, recipe = load_recipe(name)
    planned = cost.plan(recipe, recipe_path=path).disk_bytes
    assert planned == pytest.approx(written, rel=0.10), (planned, written)


def test_source_photos_off_leaves_the_guides_and_references_out():
    from spurbench.generate.methods import Export
    from spurbench.generate.methods.d3s import recipe_from_dict

    path, recipe = load_recipe("d3s_smoke")
    data = yaml.safe_load(path.read_text())
    on = cost.plan(recipe)
    off = cost.plan(recipe_from_dict(dict(data, export={"source_photos": False})))
    guides = next(d.bytes for d in on.disk if d.what == "export: init_image guides")
    refs = next(d.bytes for d in on.disk if d.what == "export: reference split")
    assert guides > 0 and refs > 0 and on.disk_bytes - off.disk_bytes == guides + refs
    assert Export().source_photos  # the default exports them
