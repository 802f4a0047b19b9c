"""Find an object in an image from its name: open-vocabulary detection and text-prompted segmentation.

One place knows how to look for class k in an image, for every stage that needs it: verification
(`spurbench verify`: is the object really absent?) and mask-based builders (DDB-style inpainting).

- Detection by text query with transformers: OWLv2 (`Owlv2ForObjectDetection`) or Grounding DINO
  (`AutoModelForZeroShotObjectDetection`), selected by name from DETECTORS. `detect(detector, images,
  queries)` takes per-image query lists and returns, per image, the boxes, their scores and the query
  each matched; an image's `score` is the highest score over all its boxes and queries (the max-score rule).
- Segmentation from a text prompt: the detector's boxes, then transformers' `SamModel` turns each box
  into a mask; `segment(images, prompts)` returns one boolean mask per image (union over the boxes).
- ImageNet class queries: the class's lemmas from the installed timm (`imagenet_synset_to_lemma.txt`),
  lower-cased, in the form each detector family expects (`class_queries`).
- `tiny` models: OWLv2, Grounding DINO and SAM at toy width with random weights, built locally from small
  configs and saved with `save_pretrained`, so the whole path runs on any CPU without a download. Their
  scores mean nothing.

Building side only (needs transformers): the evaluating side (spurbench/evaluate/) never imports this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from spurbench.errors import SpurbenchError, hub_failure_reason
from spurbench.once import build_once
from spurbench.tiny_models import make_tiny_grounding_dino, make_tiny_owlv2, make_tiny_sam

# ---------------------------------------------------------------------------------------------
# Registry: detectors and segmenters, by name


@dataclass(frozen=True)
class ModelSpec:
    """A named detector or segmenter: which architecture family, which weights at which revision."""

    name: str
    family: str  # "owlv2" | "grounding-dino" | "sam"
    model_id: str | None  # Hub id; None for the locally built tiny models
    revision: str | None  # pinned Hub commit; None for local models
    #: presence threshold on the detection score (detectors only), and where that number comes from
    default_threshold: float | None = None
    threshold_source: str = ""
    #: builds the model into a folder (tiny models only)
    builder: Callable[[Path], Path] | None = field(default=None, compare=False)


DETECTORS: dict[str, ModelSpec] = {}
SEGMENTERS: dict[str, ModelSpec] = {}
DETECTOR_FAMILIES = ("owlv2", "grounding-dino")


def detector_spec(name: str) -> ModelSpec:
    try:
        return DETECTORS[name]
    except KeyError:
        raise SpurbenchError(f"unknown detector '{name}'; choose one of: {', '.join(DETECTORS)}") from None


def segmenter_spec(name: str) -> ModelSpec:
    try:
        return SEGMENTERS[name]
    except KeyError:
        raise SpurbenchError(f"unknown segmenter '{name}'; choose one of: {', '.join(SEGMENTERS)}") from None


# ---------------------------------------------------------------------------------------------
# Class queries


@lru_cache(maxsize=1)
def _lemma_table() -> dict[str, str]:
    # timm ships WordNet lemmas for every synset it knows; read from the installed copy, never copied here.
    import timm

    path = Path(timm.__file__).parent / "data" / "_info" / "imagenet_synset_to_lemma.txt"
    table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        wnid, _, lemmas = line.partition("\t")
        if lemmas:
            table[wnid] = lemmas
    return table


def class_lemmas(index: int) -> list[str]:
    """The lemmas of ImageNet-1k class `index`, lower-cased, in timm's order, without repeats."""
    from spurbench import imagenet

    wnid = imagenet.wnids()[imagenet.check_index(index)]
    return list(dict.fromkeys(lemma.strip().lower() for lemma in _lemma_table()[wnid].split(",") if lemma.strip()))


def queries_for_names(names: Iterable[str], family: str) -> list[str]:
    """Object names as the detector family expects its text queries.

    OWLv2 was trained and evaluated with CLIP-style prompts ("a photo of a {name}", the form of the
    model card's example); Grounding DINO takes lower-case phrases that it joins with ". ", so a dot
    inside a name would split it: dots are dropped there."""
    names = [n.strip().lower() for n in names if n.strip()]
    if family == "owlv2":
        return [f"a photo of a {n}" for n in names]
    if family == "grounding-dino":
        return [" ".join(n.replace(".", " ").split()) for n in names]
    raise SpurbenchError(f"unknown detector family '{family}'; expected one of {', '.join(DETECTOR_FAMILIES)}")


def class_queries(index: int, family: str) -> list[str]:
    """Text queries that find ImageNet-1k class `index` with a detector of `family`."""
    return queries_for_names(class_lemmas(index), family)


# ---------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedModel:
    """A detector or segmenter ready to run: model (eval mode, on `device`) and its processor."""

    spec: ModelSpec
    model: Any
    processor: Any
    device: str
    source: str  # Hub id or local folder it was loaded from
    revision: str | None

    @property
    def family(self) -> str:
        return self.spec.family

    def describe(self) -> dict[str, Any]:
        """What a dataset card records about it."""
        model = self.source
        if self.spec.builder is not None and Path(self.source).parent == tiny_cache_dir():
            model = f"spurbench {self.spec.builder.__name__} ({_TINY_VERSION}, random weights)"  # not a path on this machine
        return {"name": self.spec.name, "family": self.family, "model": model, "revision": self.revision}


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def tiny_cache_dir() -> Path:
    """Where locally built tiny models live: $SPURBENCH_CACHE/tiny, else ~/.cache/spurbench/tiny."""
    from spurbench.resources import cache_dir

    return cache_dir("tiny")


def tiny_model_dir(spec: ModelSpec) -> Path:
    """The tiny model's folder, built on first use (atomically, one process at a time)."""
    assert spec.builder is not None
    return build_once(tiny_cache_dir() / f"{spec.family}-{_TINY_VERSION}", "config.json", spec.builder)


def _from_pretrained(loader, source: str, revision: str | None, what: str):
    try:
        return loader(source, revision=revision) if revision else loader(source)
    except (OSError, ValueError) as err:
        if Path(source).is_dir():
            raise SpurbenchError(
                f"cannot load the {what} from folder '{source}' ({err.__class__.__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                "give a folder written by save_pretrained"
            ) from None
        raise SpurbenchError(
            f"cannot load the {what} '{source}'"
            + (f" at revision {revision}" if revision else "")
            + f" ({hub_failure_reason(err)}); check the Hub id and network, or pass a local save_pretrained folder"
            + (
                "; for a dry run offline, the `tiny` detector (`--detector tiny`, random weights: plumbing only)"
                if what.startswith("detector")
                else ""
            )
        ) from None


def _load(
    spec: ModelSpec, model: str | Path | None, revision: str | None, device: str | None, what: str
) -> LoadedModel:
    if model is not None:
        source, rev = str(model), revision
    elif spec.builder is not None:
        source, rev = str(tiny_model_dir(spec)), None
    else:
        source, rev = spec.model_id, revision or spec.revision
    if Path(source).is_dir():
        rev = None  # a local folder has no Hub revision
    model_cls, processor_cls = _classes(spec.family)
    processor = _from_pretrained(processor_cls.from_pretrained, source, rev, f"{what} processor")
    net = _from_pretrained(model_cls.from_pretrained, source, rev, what)
    device = device or default_device()
    net = net.to(device).eval()
    return LoadedModel(spec=spec, model=net, processor=processor, device=device, source=source, revision=rev)


def _classes(family: str):
    import transformers as tf

    return {
        "owlv2": (tf.Owlv2ForObjectDetection, tf.Owlv2Processor),
        "grounding-dino": (tf.AutoModelForZeroShotObjectDetection, tf.AutoProcessor),
        "sam": (tf.SamModel, tf.SamProcessor),
    }[family]


def load_detector(
    name: str = "owlv2", model: str | Path | None = None, revision: str | None = None, device: str | None = None
) -> LoadedModel:
    """Load detector `name` (see DETECTORS); `model` takes other weights of the same family (a Hub id
    or a local `save_pretrained` folder), `revision` a Hub commit for them."""
    return _load(detector_spec(name), model, revision, device, "detector")


def load_segmenter(
    name: str = "sam", model: str | Path | None = None, revision: str | None = None, device: str | None = None
) -> LoadedModel:
    """Load segmenter `name` (see SEGMENTERS); `model`/`revision` as for `load_detector`."""
    return _load(segmenter_spec(name), model, revision, device, "segmenter")


# ---------------------------------------------------------------------------------------------
# Detection


@dataclass
class Detections:
    """What a detector found in one image: boxes (x0, y0, x1, y1 in pixels of the input image), their
    scores, and for each box the index of the query it matched best, best first."""

    queries: list[str]
    boxes: np.ndarray  # (n, 4) float32
    scores: np.ndarray  # (n,) float32
    query_index: np.ndarray  # (n,) int64

    @property
    def score(self) -> float:
        """The highest score over all boxes and queries (0.0 when there are no queries)."""
        return float(self.scores[0]) if len(self.scores) else 0.0

    @property
    def matched_query(self) -> str | None:
        return self.queries[int(self.query_index[0])] if len(self.scores) else None

    def above(self, threshold: float) -> Detections:
        keep = self.scores >= threshold
        return Detections(self.queries, self.boxes[keep], self.scores[keep], self.query_index[keep])

    def to_json(self, digits: int = 4) -> list[dict[str, Any]]:
        return [
            {"box": [round(float(v), 1) for v in box], "score": round(float(s), digits), "query": self.queries[int(q)]}
            for box, s, q in zip(self.boxes, self.scores, self.query_index)
        ]


def _rgb(image) -> Any:
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return image if image.mode == "RGB" else image.convert("RGB")


def _batches(n: int, size: int) -> Iterable[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def _top_boxes(box_query_scores, boxes_xyxy, queries: list[str], min_score: float, max_boxes: int) -> Detections:
    """Per box its best query; keep boxes scoring >= min_score (at most max_boxes, best first), and always
    the single best box so that `score` is the image's maximum."""
    import torch

    if box_query_scores.shape[-1] == 0:
        empty = np.zeros((0,), np.float32)
        return Detections(queries, np.zeros((0, 4), np.float32), empty, np.zeros((0,), np.int64))
    best, which = box_query_scores.max(dim=-1)
    order = torch.argsort(best, descending=True)[:max_boxes]
    keep = order[(best[order] >= min_score) | (torch.arange(len(order), device=order.device) == 0)]
    return Detections(
        queries,
        boxes_xyxy[keep].float().cpu().numpy().astype(np.float32),
        best[keep].float().cpu().numpy().astype(np.float32),
        which[keep].cpu().numpy().astype(np.int64),
    )


def _corners(cxcywh):
    import torch

    cx, cy, w, h = cxcywh.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)


def _clip_boxes(boxes, width: int, height: int):
    import torch

    limit = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
    return torch.minimum(boxes.clamp(min=0), limit)


def _detect_owlv2(
    det: LoadedModel, images, queries: list[list[str]], min_score: float, max_boxes: int
) -> list[Detections]:
    import torch

    # The processor pads every image's query list to the longest with " " queries, which the model does
    # not mask (its query mask only tests the first token id): those columns are cut off below.
    padded = [q if q else [" "] for q in queries]
    inputs = det.processor(text=padded, images=images, return_tensors="pt", truncation=True).to(det.device)
    out = det.model(**inputs)
    probs = torch.sigmoid(out.logits)  # (batch, boxes, max queries)
    # OWLv2 pads each image to a square at the bottom/right: boxes are relative to that square's side
    # (transformers' Owlv2 post-processing scales by max(height, width) for the same reason).
    boxes = _corners(out.pred_boxes)
    result = []
    for i, image in enumerate(images):
        w, h = image.size
        xyxy = _clip_boxes(boxes[i] * max(w, h), w, h)
        result.append(_top_boxes(probs[i, :, : len(queries[i])], xyxy, queries[i], min_score, max_boxes))
    return result


def _query_token_spans(offsets: Sequence[tuple[int, int]], queries: list[str]) -> list[list[int]]:
    """Token positions of each query inside the text "q0. q1. ... qn." from the tokenizer's character offsets."""
    spans, start = [], 0
    for q in queries:
        end = start + len(q)
        spans.append([t for t, (a, b) in enumerate(offsets) if b > a and a >= start and b <= end])
        start = end + 2  # ". "
    return spans


def _detect_grounding_dino(
    det: LoadedModel, images, queries: list[list[str]], min_score: float, max_boxes: int
) -> list[Detections]:
    import torch

    # Grounding DINO's text is one string of lower-case phrases, each ended by a dot ("a cat. a dog."),
    # the form its processor builds from a list; built here so each query's token positions are known.
    texts = [". ".join(q) + "." if q else "." for q in queries]
    inputs = det.processor(images=images, text=texts, return_tensors="pt", padding=True, truncation=True).to(det.device)
    out = det.model(**inputs)
    probs = torch.sigmoid(out.logits)  # (batch, boxes, text positions)
    boxes = _corners(out.pred_boxes)  # relative to the (unpadded) image
    result = []
    for i, image in enumerate(images):
        w, h = image.size
        offsets = det.processor.tokenizer(texts[i], return_offsets_mapping=True, truncation=True)["offset_mapping"]
        spans = _query_token_spans(offsets, queries[i])
        # score of (box, query) = the highest token probability over the query's own tokens
        per_query = (
            torch.stack(
                [probs[i][:, s].max(dim=-1).values if s else torch.zeros_like(probs[i][:, 0]) for s in spans], dim=-1
            )
            if spans
            else probs[i][:, :0]
        )
        scale = torch.tensor([w, h, w, h], dtype=boxes.dtype, device=boxes.device)
        result.append(_top_boxes(per_query, _clip_boxes(boxes[i] * scale, w, h), queries[i], min_score, max_boxes))
    return result


_DETECT_FAMILY = {"owlv2": _detect_owlv2, "grounding-dino": _detect_grounding_dino}


def detect(
    detector: LoadedModel,
    images: Sequence[Any],
    queries: Sequence[Sequence[str]],
    batch_size: int = 8,
    min_score: float = 0.05,
    max_boxes: int = 10,
    progress: bool = True,
    desc: str = "detecting",
) -> list[Detections]:
    """Look for the text `queries[i]` in `images[i]` (PIL images or HxWx3 uint8 arrays).

    Returns one Detections per image: boxes scoring >= `min_score` (at most `max_boxes`, best first) and
    always the best box, so `Detections.score` is the image's highest score over its queries.
    """
    import torch
    from tqdm.auto import tqdm

    if len(images) != len(queries):
        raise ValueError(f"{len(images)} images but {len(queries)} query lists")
    run = _DETECT_FAMILY[detector.family]
    out: list[Detections] = []
    with torch.inference_mode(), tqdm(total=len(images), desc=desc, unit="img", disable=not progress) as bar:
        for batch in _batches(len(images), max(1, batch_size)):
            imgs = [_rgb(images[i]) for i in batch]
            out.extend(run(detector, imgs, [list(queries[i]) for i in batch], min_score, max_boxes))
            bar.update(len(batch))
    return out


# ---------------------------------------------------------------------------------------------
# Segmentation


def masks_from_boxes(
    segmenter: LoadedModel,
    images: Sequence[Any],
    boxes: Sequence[np.ndarray],
    batch_size: int = 4,
    progress: bool = True,
) -> list[np.ndarray]:
    """One boolean HxW mask per image: the union of SAM's masks for the image's boxes (x0, y0, x1, y1 in
    pixels). An image without boxes gets an empty mask."""
    import torch
    from tqdm.auto import tqdm

    images = [_rgb(im) for im in images]
    masks = [np.zeros((im.size[1], im.size[0]), dtype=bool) for im in images]
    todo = [i for i, b in enumerate(boxes) if len(b)]
    with torch.inference_mode(), tqdm(total=len(todo), desc="segmenting", unit="img", disable=not progress) as bar:
        for batch in _batches(len(todo), max(1, batch_size)):
            idx = [todo[j] for j in batch]
            # SAM takes the same number of boxes per image in a batch: repeat an image's first box to
            # pad (a repeated box adds nothing to the union).
            n = max(len(boxes[i]) for i in idx)
            prompt = [
                [list(map(float, b)) for b in boxes[i]] + [list(map(float, boxes[i][0]))] * (n - len(boxes[i]))
                for i in idx
            ]
            inputs = segmenter.processor(images=[images[i] for i in idx], input_boxes=prompt, return_tensors="pt").to(
                segmenter.device
            )
            out = segmenter.model(
                pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"], multimask_output=False
            )
            full = segmenter.processor.image_processor.post_process_masks(
                out.pred_masks.cpu(), inputs["original_sizes"].cpu(), inputs["reshaped_input_sizes"].cpu()
            )
            for i, m in zip(idx, full):
                masks[i] = m.reshape(-1, *m.shape[-2:]).any(dim=0).numpy()
            bar.update(len(idx))
    return masks


def segment(
    images: Sequence[Any],
    prompts: Sequence[str | Sequence[str]],
    detector: LoadedModel | None = None,
    segmenter: LoadedModel | None = None,
    threshold: float | None = None,
    batch_size: int = 8,
    progress: bool = True,
) -> list[np.ndarray]:
    """Masks of the objects named by `prompts[i]` (a text query or a list of them) in `images[i]`.

    The detector finds boxes scoring >= `threshold` (default: the detector's presence threshold), SAM
    turns them into masks; one boolean HxW mask per image, empty where nothing was found. Defaults:
    OWLv2 and SAM at their pinned revisions.
    """
    detector = detector or load_detector("owlv2")
    segmenter = segmenter or load_segmenter("sam")
    threshold = detector.spec.default_threshold if threshold is None else threshold
    queries = [[p] if isinstance(p, str) else list(p) for p in prompts]
    found = detect(detector, images, queries, batch_size=batch_size, progress=progress)
    boxes = [d.above(threshold).boxes for d in found]
    return masks_from_boxes(segmenter, images, boxes, batch_size=max(1, batch_size // 2), progress=progress)


# ---------------------------------------------------------------------------------------------
# Tiny random-weight models (plumbing only: their scores mean nothing; built by spurbench.tiny_models)

_TINY_VERSION = "v2"
# Default presence thresholds and their sources (see README, "Verify a dataset"):
# - OWLv2 0.1: the score threshold of transformers' Owlv2 post-processing and of the model card's example
#   (OWL-ViT's own demo uses the same).
# - Grounding DINO 0.35: the box threshold of the Grounding DINO authors' README demo (box 0.35, text 0.25).
DETECTORS.update(
    (spec.name, spec)
    for spec in (
        ModelSpec(
            "owlv2",
            "owlv2",
            "google/owlv2-base-patch16-ensemble",
            "cfd3195ba4ea9592eec887ded089f4c08eff231d",
            0.1,
            "transformers' Owlv2 post-processing default and the model card's example (threshold=0.1)",
        ),
        ModelSpec(
            "grounding-dino",
            "grounding-dino",
            "IDEA-Research/grounding-dino-tiny",
            "a2bb814dd30d776dcf7e30523b00659f4f141c71",
            0.35,
            "the Grounding DINO authors' README demo (box_threshold=0.35, text_threshold=0.25)",
        ),
        ModelSpec(
            "tiny",
            "owlv2",
            None,
            None,
            0.1,
            "OWLv2's default; the tiny model's scores mean nothing (plumbing only)",
            builder=make_tiny_owlv2,
        ),
        ModelSpec(
            "tiny-grounding-dino",
            "grounding-dino",
            None,
            None,
            0.35,
            "Grounding DINO's default; the tiny model's scores mean nothing (plumbing only)",
            builder=make_tiny_grounding_dino,
        ),
    )
)
SEGMENTERS.update(
    (spec.name, spec)
    for spec in (
        ModelSpec("sam", "sam", "facebook/sam-vit-base", "70c1a07f894ebb5b307fd9eaaee97b9dfc16068f"),
        ModelSpec("tiny", "sam", None, None, builder=make_tiny_sam),
    )
)
