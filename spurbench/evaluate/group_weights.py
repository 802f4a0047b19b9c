"""Group proportions of a dataset's training split: the weights of the train-weighted group accuracy
(`metrics.train_weighted_accuracy`, what Waterbirds papers call "average accuracy").

Read straight from the training split's Parquet shards (only the group column, once per opened dataset), so
the weights are those of the data on disk. Needs only the evaluation install.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from spurbench import dataset as ds_contract

#: the split whose group sizes weigh the groups
TRAIN_SPLIT = "train"


def training_group_counts(
    dataset: ds_contract.OpenDataset | str | Path, group_column: str, split: str = TRAIN_SPLIT
) -> dict[str, int] | None:
    """{group: number of images} of `split`'s `group_column`; None when the dataset has no such split or column.

    `dataset`: an opened dataset (`spurbench.dataset.open_dataset_folder`; the column is read once and kept) or a folder."""
    opened = ds_contract.open_dataset_folder(dataset)
    if split not in opened.split_names:
        return None
    values = opened.column(split, group_column)
    if values is None:
        return None
    return dict(sorted(Counter(str(g) for g in values).items()))
