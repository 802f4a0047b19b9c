"""Method d3s: the image guide (paste box and content), the prompt of a known class, img2img's step count,
bad inputs as one clear line, and the shipped d3s_smoke recipe built through the CLI, killed and resumed
to the same bytes.

Real parts: the tiny Stable Diffusion of spurbench.tiny_models loaded as a diffusers
StableDiffusionImg2ImgPipeline (random weights: its images mean nothing, the machinery is real), real
photos from scikit-image/scikit-learn, timm's own lemma and definition files, real Parquet read back with
`datasets`. Subprocess builds use one thread so their exports compare byte for byte.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from spurbench import cli
from spurbench.errors import SpurbenchError
from spurbench.generate.methods.d3s import make_guide, square_crop
from spurbench.generate.recipe import load_recipe, recipe_from_dict, recipe_hash

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1"
    )
    env.update(extra)
    return env


def _smoke() -> dict:
    from spurbench.resources import resolve

    return yaml.safe_load(resolve("recipe", "d3s_smoke").read_text())


# ---------------------------------------------------------------------------------------------
# The guide


def _framed(size: tuple[int, int], centre: tuple[int, int, int], margin: tuple[int, int, int]) -> Image.Image:
    """A landscape or portrait image whose centred square is `centre` and whose margins are `margin`."""
    w, h = size
    a = np.zeros((h, w, 3), np.uint8)
    a[:] = margin
    s = min(w, h)
    a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s] = centre
    return Image.fromarray(a)


def test_guide_pastes_the_squared_foreground_at_the_seeded_box():
    red, blue, green, black = (255, 0, 0), (0, 0, 255), (0, 160, 0), (0, 0, 0)
    fg = _framed((90, 60), red, blue)  # only the centred 60 x 60 square is red
    bg = _framed((70, 120), green, black)  # only the centred 70 x 70 square is green
    guide, box = make_guide(bg, fg, 64, 0.4, np.random.default_rng(5))
    x0, y0, x1, y1 = box
    assert guide.size == (64, 64)
    assert x1 - x0 == y1 - y0 == round(0.4 * 64) == 26  # round(fg_scale x resolution)
    assert 0 <= x0 and x1 <= 64 and 0 <= y0 and y1 <= 64
    a = np.asarray(guide)
    # inside the box: the foreground's centre square only (no blue margin); outside: the background's (no black)
    assert (a[y0:y1, x0:x1] == red).all()
    outside = np.ones((64, 64), bool)
    outside[y0:y1, x0:x1] = False
    assert (a[outside] == green).all()
    # the position is the image's seed's: the same seed, the same box; other seeds move it
    assert make_guide(bg, fg, 64, 0.4, np.random.default_rng(5))[1] == box
    boxes = {tuple(make_guide(bg, fg, 64, 0.4, np.random.default_rng(s))[1]) for s in range(40)}
    assert len(boxes) > 20
    # every position the box can take is reachable: corners included (uniform over 0..64-26)
    xs = {b[0] for b in (make_guide(bg, fg, 64, 0.4, np.random.default_rng(s))[1] for s in range(2000))}
    assert min(xs) == 0 and max(xs) == 64 - 26


def test_guide_content_is_the_resized_photo():
    from spurbench.generate.references import sample_photo

    photo = Image.fromarray(sample_photo("chelsea"))  # 451 x 300
    bg = Image.fromarray(sample_photo("grass"))
    guide, (x0, y0, x1, y1) = make_guide(bg, photo, 128, 0.4, np.random.default_rng(0))
    side = x1 - x0
    # independently: numpy's centre slice of the photo, resized with PIL's bicubic filter
    a = np.asarray(photo)
    h, w = a.shape[:2]
    s = min(h, w)
    centre = a[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    expected = np.asarray(Image.fromarray(centre).resize((side, side), Image.Resampling.BICUBIC))
    assert np.array_equal(np.asarray(guide)[y0:y1, x0:x1], expected)
    assert square_crop(photo).size == (300, 300)


# ---------------------------------------------------------------------------------------------
# Recipe and prompt


def test_prompt_of_a_known_class_comes_from_wordnet():
    _, r = load_recipe("d3s_smoke")
    # ImageNet class 967 (n07920052): lemma "espresso", gloss as WordNet 3.0 has it
    assert r.prompt_for(967, "snow") == (
        "a photo of an espresso, strong black coffee brewed by forcing hot water under pressure through finely ground "
        "coffee beans, in snow"
    )
    assert r.prompt_for(0, "cave") == (
        "a photo of a tench, freshwater dace-like game fish of Europe and western Asia noted for ability to survive "
        "outside water, in a cave"
    )
    assert r.background_words == [
        "grass",
        "road",
        "forest",
        "water",
        "sand",
        "indoors",
        "snow",
        "rain",
        "night",
        "cave",
    ]


def test_shipped_d3s_recipes_validate():
    _, full = load_recipe("d3s")
    assert len(full.classes) == 1000 and full.all_classes and full.to_dict()["classes"] == "all"
    g = full.generation
    assert (g.scheduler, g.eta, g.num_inference_steps, g.strength, g.guidance_scale) == (
        "DDIMScheduler",
        0.0,
        50,
        0.9,
        5.0,
    )
    assert full.base_model.id == "CompVis/stable-diffusion-v1-4" and len(full.base_model.revision) == 40
    assert full.fg_scale == 0.4 and full.resolution == 512 and full.builder == "d3s"
    # held-out foregrounds (ImageNet val, not the train photos the classifiers learnt), exactly those pasted
    assert Path(full.foregrounds.folder).name == "val" and full.foregrounds.per_class == full.images_per_background
    _, smoke = load_recipe("d3s_smoke")
    assert smoke.backgrounds.builtin and len(smoke.background_words) == 10
    # the method is part of the hash; `classes: all` hashes as written
    assert recipe_hash(full) != recipe_hash(smoke)


@pytest.mark.parametrize(
    "edit, message",
    [
        ({"fg_scale": 1.5}, r"key 'fg_scale' must be in \(0, 1\]"),
        ({"generation": {"strength": 0.01, "num_inference_steps": 50}}, r"less than one denoising step"),
        ({"prompt": "a photo of a {nmae}"}, r"key 'prompt': unknown placeholder \{nmae\}"),
        ({"backgrounds": {"builtin": True, "folder": "x"}}, r"key 'backgrounds' needs exactly one of"),
        ({"classes": [{"index": 285}]}, r"key 'classes\[0\]': class 285 has no foregrounds"),
        ({"classes": [{"index": 1000}]}, r"key 'classes\[0\]\.index'"),
        ({"licenses": {"base_model": "x", "foregrounds": "y"}}, r"missing licenses\.backgrounds"),
        ({"method": "d3z"}, r"key 'method' must be one of"),
        ({"token": "sks"}, r"unknown key 'token'"),
    ],
)
def test_d3s_recipe_mistakes_name_the_key(edit, message):
    d = _smoke()
    d.update(edit)
    with pytest.raises(SpurbenchError, match=message):
        recipe_from_dict(d)


# ---------------------------------------------------------------------------------------------
# img2img


@pytest.fixture(scope="module")
def tiny_img2img(tmp_path_factory):
    from spurbench.generate.sampling import load_pipeline
    from spurbench.tiny_models import make_tiny_stable_diffusion

    folder = make_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny") / "sd", image_size=32)
    return load_pipeline(folder, "cpu", scheduler="DDIMScheduler", img2img=True)


@pytest.mark.parametrize("strength, steps, expected", [pytest.param(0.9, 50, 45, marks=pytest.mark.slow), (0.5, 10, 5)])
def test_img2img_runs_strength_times_steps_denoising_steps(tiny_img2img, tmp_path, strength, steps, expected):
    from spurbench.generate.sampling import Job, sample, save_png

    calls = []
    hook = tiny_img2img.unet.register_forward_hook(lambda module, args, out: calls.append(args[1]))
    try:
        init = tmp_path / "init.png"
        save_png(Image.fromarray(np.full((32, 32, 3), 128, np.uint8)), init)
        jobs = [Job("a photo of a cat, in snow", s, tmp_path / f"{s}.png", init) for s in (1, 2)]
        sample(
            tiny_img2img,
            jobs,
            batch_size=2,
            num_inference_steps=steps,
            guidance_scale=5.0,
            resolution=32,
            progress=False,
            strength=strength,
            eta=0.0,
        )
    finally:
        hook.remove()
    # one UNet call per denoising step (classifier-free guidance runs both halves in one batch)
    assert len(calls) == expected
    # and they are the last `expected` timesteps of the full DDIM schedule of `steps` steps, highest first
    from diffusers import DDIMScheduler

    schedule = DDIMScheduler.from_config(tiny_img2img.scheduler.config)
    schedule.set_timesteps(steps)
    assert len(schedule.timesteps) == steps
    assert [int(t.flatten()[0]) for t in calls] == schedule.timesteps.tolist()[steps - expected :]
    assert all(Image.open(j.path).size == (32, 32) for j in jobs)


# ---------------------------------------------------------------------------------------------
# Bad inputs


def _folder_recipe(tmp_path: Path, classes=(285,)) -> Path:
    d = _smoke()
    d["backgrounds"] = {"folder": "bg"}
    d["foregrounds"] = {"folder": "fg"}
    d["classes"] = [{"index": k} for k in classes]
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def test_missing_background_class_or_bad_file_is_one_line_and_writes_nothing(tmp_path, capsys):
    from spurbench.generate.references import sample_photo

    recipe = _folder_recipe(tmp_path)
    out = tmp_path / "out"

    def build() -> str:
        cwd = os.getcwd()
        os.chdir(tmp_path)
        try:
            rc = cli.main(["build", "--recipe", str(recipe), "--out", str(out), "--no-progress"])
        finally:
            os.chdir(cwd)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and "\n" not in err and not out.exists() and not (tmp_path / "out.work").exists()
        return err

    assert "backgrounds folder" in build() and "does not exist" in build()
    words = _smoke()["backgrounds"].get("phrases") or [
        "grass",
        "road",
        "forest",
        "water",
        "sand",
        "indoors",
        "snow",
        "rain",
        "night",
        "cave",
    ]
    for w in list(words)[:-1]:
        (tmp_path / "bg" / w).mkdir(parents=True)
        Image.fromarray(sample_photo("grass")).save(tmp_path / "bg" / w / "a.png")
    assert "has no folder 'cave/' for background 'cave'" in build()
    (tmp_path / "bg" / "cave").mkdir()
    (tmp_path / "bg" / "cave" / "a.jpg").write_bytes(b"not a jpeg")
    assert "a.jpg': not an image" in build()
    Image.fromarray(sample_photo("gravel")).save(tmp_path / "bg" / "cave" / "a.jpg")
    (tmp_path / "fg").mkdir()
    assert "foregrounds folder" in (err := build()) and "no folder 'n02124075' for class 285 (Egyptian cat)" in err


# ---------------------------------------------------------------------------------------------
# The smoke recipe end to end, killed and resumed


def _cmd(*extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "spurbench",
        "build",
        "--recipe",
        "d3s_smoke",
        "--out",
        "data",
        "--no-progress",
        "--classes",
        ",".join(map(str, CLASSES)),
        *extra,
    ]


#: the classes the smoke builds here make (of d3s_smoke's three)
CLASSES = (285, 967)


def _export_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def d3s_reference(tmp_path_factory) -> Path:
    cwd = tmp_path_factory.mktemp("d3s_ref")
    proc = subprocess.run(_cmd(), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return cwd / "data"


@pytest.mark.slow
def test_d3s_smoke_export_is_a_shift_set_with_guides(d3s_reference, tmp_path):
    import datasets

    from spurbench.dataset import read_kind, read_provenance

    assert read_kind(d3s_reference) == "shift"
    prov = read_provenance(d3s_reference)
    assert (
        prov["builder"] == "d3s"
        and prov["method"] == "d3s"
        and prov["classes"] == [285, 967]
        and len(prov["backgrounds"]) == 10
    )
    ds = datasets.load_dataset(str(d3s_reference), cache_dir=str(tmp_path / "cache"))  # its own cache (see DESIGN.md)
    test, ref = ds["test"], ds["reference"]
    assert len(test) == 2 * 10 and len(ref) == 4  # 2 classes x 10 backgrounds; chelsea x2 + coffee x2
    assert sorted(set(test["background"])) == sorted(_smoke_words())
    assert set(ref["source"]) == {"reference"} and set(test["source"]) == {"generated"}
    for row in test:
        x0, y0, x1, y1 = row["init_box"]
        assert row["init_image"].size == row["image"].size == (32, 32) and x1 - x0 == y1 - y0 == 13
        assert abs(row["fg_scale"] - 0.4) < 1e-6
        pasted = ref[row["reference_index"]]
        assert pasted["label"] == row["label"]
        # the guide's box holds exactly the reference photo, squared and resized (the row it names)
        side = x1 - x0
        expected = np.asarray(
            square_crop(pasted["image"].convert("RGB")).resize((side, side), Image.Resampling.BICUBIC)
        )
        assert np.array_equal(np.asarray(row["init_image"])[y0:y1, x0:x1], expected)
        article = "an" if row["class_name"][0].lower() in "aeiou" else "a"
        assert row["prompt"].startswith(f"a photo of {article} {row['class_name']}, ")


@pytest.mark.slow
def test_d3s_smoke_export_stands_alone_and_can_leave_the_photos_out(d3s_reference, tmp_path):
    from stand_alone import assert_loads_without, assert_names_no_local_folder

    from spurbench.dataset import read_provenance

    work = d3s_reference.with_name("data.work")
    assert assert_names_no_local_folder(d3s_reference, d3s_reference.parent) >= 3
    assert assert_loads_without(d3s_reference, work, tmp_path / "hf") == 24
    card = (d3s_reference / "README.md").read_text()
    assert "ImageNet's terms of access and may not be redistributable" in card
    assert "- Control: split `reference` (the class photos pasted onto the backgrounds) is this set's control" in card
    assert read_provenance(d3s_reference)["scheduler"]["class"] == "DDIMScheduler"
    # the same work dir re-exported without the photos: `export:` is not hashed, nothing is regenerated
    data = _smoke()
    data["export"] = {"source_photos": False}
    recipe = tmp_path / "d3s_hub.yaml"
    recipe.write_text(yaml.safe_dump(data))
    cmd = [
        sys.executable,
        "-m",
        "spurbench",
        "build",
        "--recipe",
        str(recipe),
        "--out",
        "hub",
        "--work-dir",
        str(work),
        "--classes",
        "285,967",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already done" in proc.stderr
    import datasets

    ds = datasets.load_dataset(str(tmp_path / "hub"), cache_dir=str(tmp_path / "hf2"))
    assert list(ds) == ["test"] and set(ds["test"]["init_image"]) == {None}
    full = datasets.load_dataset(str(d3s_reference), cache_dir=str(tmp_path / "hf3"))["test"]
    assert ds["test"]["reference_index"] == full["reference_index"] and ds["test"]["init_box"] == full["init_box"]
    assert "This export leaves them out" in (tmp_path / "hub" / "README.md").read_text()
    assert "is this set's control" not in (tmp_path / "hub" / "README.md").read_text()
    assert assert_names_no_local_folder(tmp_path / "hub", tmp_path, work) >= 3


def _smoke_words() -> list[str]:
    from spurbench.generate.backgrounds import D3S_BACKGROUNDS

    return list(D3S_BACKGROUNDS)


@pytest.mark.slow
def test_killed_d3s_build_resumes_to_identical_bytes(d3s_reference, tmp_path):
    work = tmp_path / "data.work"
    proc = subprocess.Popen(
        _cmd(),
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 600
    while not list(work.glob("classes/*/done.json")):
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "timed out waiting for the first class"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()
    # what had finished is read from the markers on disk after the kill (more than one class may have finished
    # before it landed on a loaded machine), never assumed from its timing
    finished = sorted(work.glob("classes/*/done.json"))
    files = [f for done in finished for f in [done, *sorted(done.parent.glob("images/*.png"))]]
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in files}
    left = len(CLASSES) - len(finished)
    resumed = subprocess.run(_cmd(), cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # exactly the rest is made: the finished classes are not redone, their files untouched
    said = f"guides and img2img: {left} class(es)" if left else "every class of this process is already done"
    assert said in resumed.stderr
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before
    assert _export_files(tmp_path / "data") == _export_files(d3s_reference)


@pytest.mark.slow
def test_d3s_smoke_drop_is_paired_and_recomputes_from_the_predictions(d3s_reference, tmp_path):
    """Issue 14 §1 on the real smoke build: each background has one image per class, made from the first photo of
    the class; the second photo of each class is never pasted, so it must not enter the reference figure. Every
    number is recomputed from the predictions CSV (which holds the reference rows scored)."""
    import csv
    import json

    import datasets

    lb = tmp_path / "lb" / "leaderboard.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "spurbench",
            "eval",
            "--panel",
            "offline",
            "--dataset",
            str(d3s_reference),
            "--leaderboard",
            str(lb),
            "--workers",
            "0",
        ],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    test = datasets.load_dataset(str(d3s_reference), cache_dir=str(tmp_path / "cache"))["test"]
    behind, background = test["reference_index"], test["background"]
    assert sorted(set(behind)) == [0, 2]  # photos 1 and 3 are never pasted
    for e in json.loads(lb.read_text())["entries"]:
        with open(lb.parent / e["predictions"]) as fh:
            rows = list(csv.DictReader(fh))
        right = {(r["split"], int(r["index"])): r["top1"] == r["label"] for r in rows}
        assert sorted(i for s, i in right if s == "reference") == [0, 2]  # only the photos behind scored images
        pairs = [(right[("reference", behind[i])], right[("test", i)], background[i]) for i in range(len(behind))]
        m = e["metrics"]
        assert m["num_paired"] == len(pairs) == 20 and m["num_reference"] == 2
        assert m["reference_accuracy"] == pytest.approx(np.mean([a for a, _, _ in pairs]))
        assert m["accuracy_drop"] == pytest.approx(
            np.mean([a for a, _, _ in pairs]) - np.mean([b for _, b, _ in pairs])
        )
        drops = {}
        for g in set(background):
            mine = [(a, b) for a, b, h in pairs if h == g]
            drops[g] = np.mean([a for a, _ in mine]) - np.mean([b for _, b in mine])
            assert e["per_group"][g]["accuracy_drop"] == pytest.approx(drops[g])
        # the overall drop can never lie outside its parts (each background has 2 images: a plain mean)
        assert min(drops.values()) - 1e-9 <= m["accuracy_drop"] <= max(drops.values()) + 1e-9
        assert m["accuracy_drop"] == pytest.approx(np.mean(list(drops.values())))
        worst = min(e["per_group"][g]["accuracy"] for g in drops)
        assert m["worst_groups"] == sorted(g for g in drops if e["per_group"][g]["accuracy"] == worst)
