"""`spurbench import sample-photos --out DIR`: the real photos that scikit-image and scikit-learn ship, labelled
as a small spurious set for a first, offline look at what spurbench measures.

Each photo is labelled with an ImageNet class whose object it does NOT show but whose context or texture it
has (a brick wall for "maze", a lawn for "soccer ball", a space rocket for "missile", ...); two photos of houses
labelled "gondola" fool none of the offline panel. A classifier that predicts the label is fooled.
"""

from __future__ import annotations

import argparse

from spurbench import imagenet
from spurbench.dataset import DEFAULT_SPLIT, DatasetCard, encode_image, write_dataset
from spurbench.importers import add_out_argument

BUILDER = "sample_photos"

#: (photo as `spurbench.builtin_photos.sample_photo` names it, ImageNet class k, what in it looks like k).
#: Chosen by looking at what the offline panel (EfficientNet-Lite0/1/2) predicts, so that each model is fooled
#: on some photos and not on others; the numbers therefore say nothing about how often models are fooled in
#: general (the photos were picked for it), only that the scoring, the consistency measures and the page work.
PHOTOS: tuple[tuple[str, int, str], ...] = (
    ("flower", 599, "violet flower heads (a honeycomb-like texture)"),
    ("flower:mirror", 599, "violet flower heads (a honeycomb-like texture)"),
    ("astronaut", 560, "an astronaut's space helmet"),
    ("astronaut:mirror", 560, "an astronaut's space helmet"),
    ("astronaut:crop", 560, "an astronaut's space helmet"),
    ("brick", 646, "a brick wall's regular pattern"),
    ("brick:mirror", 646, "a brick wall's regular pattern"),
    ("rocket", 657, "a space rocket on its launch pad"),
    ("rocket:mirror", 657, "a space rocket on its launch pad"),
    ("rocket:crop", 657, "a space rocket on its launch pad"),
    ("hubble_deep_field", 971, "round galaxies in a telescope image"),
    ("hubble_deep_field:mirror", 971, "round galaxies in a telescope image"),
    ("grass", 805, "a lawn"),
    ("grass:crop", 805, "a lawn"),
    ("retina:crop", 107, "a retina scan's glowing disc and vessels"),
    ("china", 576, "houses by the water"),
    ("china:mirror", 576, "houses by the water"),
)

#: what the set is and what its numbers can and cannot show: the card's first paragraph, its provenance `about`
#: (shown on the leaderboard page) and the quickstart's output say it
ABOUT = (
    "Real photos (scikit-image and scikit-learn sample images), each labelled with an ImageNet class whose object "
    "it does not show but whose context or texture it has. The labels were chosen by looking at what the offline "
    "panel predicts, so its rates differ per model and the kappas have values: this shows that scoring, consistency "
    "and the page work on real spurious failures. It cannot rank models or estimate how often they are fooled "
    "(17 hand-picked photos, not a sample); for that, score Spurious ImageNet or a generated set."
)

LICENCE = (
    "scikit-image sample images: public domain (astronaut: NASA; rocket: SpaceX; hubble_deep_field: NASA) or CC0 "
    "(brick, grass, retina), as skimage.data's notes state; scikit-learn sample images (china.jpg, flower.jpg): "
    "CC BY 2.0. The set is CC BY 2.0 (the most restrictive input; attribution: flower.jpg by Flickr user vultilion, "
    "china.jpg by Flickr user danielbuechele)"
)


def sample_rows() -> list[dict]:
    """Contract rows, one per entry of PHOTOS, in that order."""
    from spurbench.builtin_photos import sample_photo  # the one reader of the built-in photos

    return [
        {
            "image": encode_image(sample_photo(spec), f"sample photo '{spec}'"),
            "label": k,
            "class_name": imagenet.class_name(k),
            "spurious_feature": feature,
            "component": -1,
            "source": "reference",
            "builder": BUILDER,
            "prompt": "",
            "seed": -1,
            "file": spec,
        }
        for spec, k, feature in PHOTOS
    ]


def import_samples(out: str) -> str:
    from datasets import Value

    from spurbench.dataset import card_license, check_out_folder

    out_path = check_out_folder(out)
    rows = sample_rows()
    body = (
        f"{ABOUT}\n\nPhotos (the `file` column: name, `:mirror` mirrored, `:crop` the central 3/4):\n\n"
        "| photo | label | what looks like it |\n|---|---|---|\n"
        + "".join(f"| {spec} | {imagenet.class_name(k)} ({k}) | {feature} |\n" for spec, k, feature in PHOTOS)
        + f"\nLicence of the photos: {LICENCE}."
    )
    card = DatasetCard(
        pretty_name="Sample photos as a spurious set (spurbench demo)",
        body=body,
        **card_license("other", {"photos": LICENCE}),
        provenance={"source": BUILDER, "about": ABOUT, "licence_of_inputs": LICENCE},
        tags=["spurious-correlations", "robustness", "imagenet", "demo"],
        kind="spurious",
        annotations_creators=["expert-generated"],
    )
    return str(write_dataset(out_path, {DEFAULT_SPLIT: rows}, card, extra_features={"file": Value("string")}))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_out_argument(parser)


def run(args: argparse.Namespace) -> int:
    out = import_samples(args.out)
    print(f"wrote {len(PHOTOS)} sample photos as a spurious set to {out}")
    print(f"  what it is: {ABOUT}")
    return 0
