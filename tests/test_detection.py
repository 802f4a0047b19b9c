"""spurbench.detection: text-prompted detection (OWLv2, Grounding DINO) and segmentation (SAM).

No detector weights are reachable here: the models are tiny random-weight OWLv2, Grounding DINO and SAM
built from small configs, saved with `save_pretrained` and reloaded with `from_pretrained` (the path real
checkpoints take). Their scores mean nothing: these tests check the plumbing (queries, the max-score rule,
box geometry, batching, masks) against transformers' own post-processing or a direct computation, never
detection quality.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import _photo

from spurbench import detection as D
from spurbench.errors import SpurbenchError


@pytest.fixture(scope="module")
def photos():
    return [_photo("chelsea"), _photo("coffee"), _photo("rocket")]


@pytest.fixture(scope="module")
def owl(tmp_path_factory):
    folder = D.make_tiny_owlv2(tmp_path_factory.mktemp("owl") / "tiny-owlv2")
    return D.load_detector("owlv2", model=folder, device="cpu")


@pytest.fixture(scope="module")
def dino(tmp_path_factory):
    folder = D.make_tiny_grounding_dino(tmp_path_factory.mktemp("dino") / "tiny-gdino")
    return D.load_detector("grounding-dino", model=folder, device="cpu")


@pytest.fixture(scope="module")
def sam(tmp_path_factory):
    folder = D.make_tiny_sam(tmp_path_factory.mktemp("sam") / "tiny-sam")
    return D.load_segmenter("sam", model=folder, device="cpu")


def _timm_lemmas(wnid: str) -> str:
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synset_to_lemma.txt"
    return next(line.split("\t", 1)[1] for line in path.read_text().splitlines() if line.startswith(wnid + "\t"))


# ---------------------------------------------------------------------------------------------
# queries


def test_class_queries_are_the_lower_cased_lemmas_in_each_detectors_form():
    # class 1 (goldfish): "goldfish, Carassius auratus"; class 285: "Egyptian cat"
    assert _timm_lemmas("n01443537") == "goldfish, Carassius auratus"
    assert D.class_lemmas(1) == ["goldfish", "carassius auratus"]
    assert D.class_queries(1, "owlv2") == ["a photo of a goldfish", "a photo of a carassius auratus"]
    assert D.class_queries(1, "grounding-dino") == ["goldfish", "carassius auratus"]
    assert D.class_queries(285, "owlv2") == ["a photo of a egyptian cat"]
    # every class has at least one query, and Grounding DINO's never contain its phrase separator
    for k in range(0, 1000, 37):
        assert D.class_queries(k, "owlv2")
        assert all("." not in q for q in D.class_queries(k, "grounding-dino"))
    assert D.queries_for_names(["St. Bernard"], "grounding-dino") == ["st bernard"]


def test_unknown_names_are_one_line_errors():
    with pytest.raises(SpurbenchError, match="unknown detector 'yolo'; choose one of: owlv2, grounding-dino"):
        D.load_detector("yolo")
    with pytest.raises(SpurbenchError, match="unknown segmenter"):
        D.load_segmenter("nope")
    with pytest.raises(SpurbenchError, match="not an ImageNet-1k class index"):
        D.class_queries(1000, "owlv2")


def test_missing_weights_are_a_clear_error(tmp_path):
    with pytest.raises(SpurbenchError, match="cannot load the detector.*HF_HUB_OFFLINE is set.*`--detector tiny`"):
        D.load_detector(
            "owlv2", device="cpu"
        )  # the pinned Hub checkpoint: unreachable offline; the hint names the dry run
    with pytest.raises(SpurbenchError) as segmenter:
        D.load_segmenter("sam", device="cpu")
    assert "--detector tiny" not in str(segmenter.value)  # the hint is the detector's only
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpurbenchError, match="from folder .*save_pretrained"):
        D.load_detector("owlv2", model=tmp_path / "empty", device="cpu")


def test_pinned_revisions_are_full_commit_ids():
    for spec in (D.DETECTORS["owlv2"], D.DETECTORS["grounding-dino"], D.SEGMENTERS["sam"]):
        assert spec.model_id and len(spec.revision) == 40 and int(spec.revision, 16) >= 0
    assert D.DETECTORS["owlv2"].model_id == "google/owlv2-base-patch16-ensemble"
    assert D.DETECTORS["grounding-dino"].model_id == "IDEA-Research/grounding-dino-tiny"
    assert D.SEGMENTERS["sam"].model_id == "facebook/sam-vit-base"


# ---------------------------------------------------------------------------------------------
# OWLv2


def test_owlv2_matches_transformers_post_processing(owl, photos):
    """Single image, all queries real: our best box and score equal transformers' own post-processing
    (which scales by the padded square's side), and the score is the max over boxes x queries."""
    from PIL import Image

    image = Image.fromarray(photos[0])
    queries = D.class_queries(285, "owlv2") + ["a photo of a lampshade"]
    ours = D.detect(owl, [image], [queries], progress=False)[0]
    with torch.inference_mode():
        inputs = owl.processor(text=[queries], images=[image], return_tensors="pt", truncation=True)
        out = owl.model(**inputs)
    ref = owl.processor.post_process_grounded_object_detection(
        out, threshold=0.0, target_sizes=[(image.height, image.width)], text_labels=[queries]
    )[0]
    best = int(ref["scores"].argmax())
    assert ours.score == pytest.approx(float(ref["scores"][best]), abs=1e-6)
    assert ours.score == pytest.approx(float(torch.sigmoid(out.logits).max()), abs=1e-6)
    assert ours.matched_query == ref["text_labels"][best]
    box = ref["boxes"][best].clamp(min=0).numpy()
    box = np.minimum(box, [image.width, image.height, image.width, image.height])
    np.testing.assert_allclose(ours.boxes[0], box, atol=1e-3)
    assert list(ours.scores) == sorted(ours.scores, reverse=True)


def test_owlv2_batching_pads_queries_without_changing_scores(owl, photos):
    """Images with 1 and 3 queries in one batch: the padding queries never win, and every image scores as
    it does alone (batched == one image per call)."""
    queries = [["a photo of a cat"], ["a photo of a cup", "a photo of a mug", "a photo of a saucer"], []]
    batched = D.detect(owl, photos, queries, batch_size=3, progress=False)
    single = [D.detect(owl, [p], [q], batch_size=1, progress=False)[0] for p, q in zip(photos, queries)]
    for b, s, q in zip(batched, single, queries):
        assert b.score == pytest.approx(s.score, abs=1e-5)
        np.testing.assert_allclose(b.boxes, s.boxes, atol=1e-2)
        assert all(0 <= i < len(q) for i in b.query_index)
    assert batched[2].score == 0.0 and batched[2].matched_query is None  # no queries, nothing found
    h, w = photos[1].shape[:2]
    assert (
        (batched[1].boxes >= 0).all()
        and (batched[1].boxes[:, [0, 2]] <= w).all()
        and (batched[1].boxes[:, [1, 3]] <= h).all()
    )


def test_min_score_and_max_boxes_keep_the_best_box(owl, photos):
    d = D.detect(owl, photos[:1], [["a photo of a cat"]], min_score=2.0, progress=False)[0]
    assert len(d.scores) == 1  # nothing reaches 2.0, the best box stays so `score` is the maximum
    d = D.detect(owl, photos[:1], [["a photo of a cat"]], min_score=0.0, max_boxes=3, progress=False)[0]
    assert len(d.scores) == 3
    assert len(d.above(d.scores[1]).scores) == 2


# ---------------------------------------------------------------------------------------------
# Grounding DINO


def test_grounding_dino_scores_each_query_on_its_own_tokens(dino, photos):
    """The (box, query) score is the highest token probability over the query's tokens in the text
    "q0. q1.", found here independently by searching the query's own token ids in input_ids."""
    from PIL import Image

    image = Image.fromarray(photos[1])
    queries = ["espresso", "coffee cup", "saucer"]
    ours = D.detect(dino, [image], [queries], min_score=0.0, max_boxes=100, progress=False)[0]
    text = ". ".join(queries) + "."
    assert text == "espresso. coffee cup. saucer."
    with torch.inference_mode():
        inputs = dino.processor(images=[image], text=[text], return_tensors="pt")
        out = dino.model(**inputs)
    probs = torch.sigmoid(out.logits[0])
    ids = inputs["input_ids"][0].tolist()
    per_query = []
    for q in queries:
        qids = dino.processor.tokenizer(q, add_special_tokens=False)["input_ids"]
        start = next(i for i in range(len(ids)) if ids[i : i + len(qids)] == qids)
        per_query.append(probs[:, start : start + len(qids)].max(dim=-1).values)
    table = torch.stack(per_query, dim=-1)  # (boxes, queries)
    assert ours.score == pytest.approx(float(table.max()), abs=1e-6)
    assert ours.matched_query == queries[int(table.max(dim=0).values.argmax())]
    # the separators (".") and [CLS]/[SEP] are not part of any query
    assert ids[0] == 101 and ids[-1] == 102 and ids.count(1012) == 3
    # transformers' post-processing takes the max over every text position, separators included: >= ours
    ref = dino.processor.post_process_grounded_object_detection(
        out,
        input_ids=inputs["input_ids"],
        threshold=0.0,
        text_threshold=0.0,
        target_sizes=[(image.height, image.width)],
    )[0]
    assert float(ref["scores"].max()) >= ours.score - 1e-6


def test_grounding_dino_batch_equals_single(dino, photos):
    queries = [["cat"], ["cup", "mug"], ["rocket", "missile", "projectile"]]
    batched = D.detect(dino, photos, queries, batch_size=3, progress=False)
    single = [D.detect(dino, [p], [q], progress=False)[0] for p, q in zip(photos, queries)]
    for b, s in zip(batched, single):
        # images of different sizes are padded to one batch (with a pixel mask): equal up to float noise
        assert b.score == pytest.approx(s.score, abs=1e-4)


# ---------------------------------------------------------------------------------------------
# SAM and segment()


def test_masks_from_boxes_union_and_shapes(sam, photos):
    h, w = photos[0].shape[:2]
    a, b = np.array([10, 20, 200, 150.0]), np.array([250, 100, 440, 290.0])
    one_a, one_b, both, none = D.masks_from_boxes(
        sam, [photos[0]] * 4, [a[None], b[None], np.stack([a, b]), np.zeros((0, 4))], batch_size=4, progress=False
    )
    for m in (one_a, one_b, both, none):
        assert m.shape == (h, w) and m.dtype == bool
    np.testing.assert_array_equal(both, one_a | one_b)  # padding with a repeated box adds nothing
    assert not none.any()


def test_segment_uses_detections_above_the_threshold(owl, sam, photos):
    masks = D.segment(
        photos,
        ["a photo of a cat", ["a photo of a cup"], "a photo of a rocket"],
        detector=owl,
        segmenter=sam,
        threshold=0.0,
        progress=False,
    )
    assert [m.shape for m in masks] == [p.shape[:2] for p in photos]
    assert any(m.any() for m in masks)
    # nothing scores above 1: every mask is empty
    assert not any(
        m.any()
        for m in D.segment(
            photos, ["a photo of a cat"] * 3, detector=owl, segmenter=sam, threshold=1.01, progress=False
        )
    )


def test_tiny_names_build_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPURBENCH_CACHE", str(tmp_path))
    det = D.load_detector("tiny", device="cpu")
    folder = Path(det.source)
    assert folder.parent == tmp_path / "tiny" and (folder / "config.json").is_file()
    assert any(folder.glob("*.safetensors")) and det.revision is None
    stamp = (folder / "config.json").stat().st_mtime_ns
    assert D.load_detector("tiny", device="cpu").source == str(folder)
    assert (folder / "config.json").stat().st_mtime_ns == stamp  # reused, not rebuilt
    assert det.describe() == {
        "name": "tiny",
        "family": "owlv2",
        "model": "spurbench make_tiny_owlv2 (v2, random weights)",
        "revision": None,
    }
