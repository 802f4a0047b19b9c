"""Group proportions of a dataset's training split: the weights of the train-weighted group accuracy
(`metrics.train_weighted_accuracy`, what Waterbirds papers call "average accuracy").

Read straight from the training split's Parquet shards (only the group column), so the weights are
those of the data on disk. Needs only the evaluation install.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from spurbench import dataset as ds_contract

#: the split whose group sizes weigh the groups
TRAIN_SPLIT = "train"


def training_group_counts(folder: str | Path, group_column: str, split: str = TRAIN_SPLIT) -> dict[str, int] | None:
    """{group: number of images} of `split`'s `group_column`; None when the dataset has no such split or column."""
    if split not in ds_contract.split_names(folder):
        return None
    table, _ = ds_contract.read_split_table(folder, split)
    if group_column not in table.column_names:
        return None
    return dict(sorted(Counter(str(g) for g in table.column(group_column).to_pylist()).items()))
