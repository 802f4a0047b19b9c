"""Writing one scored classifier: its predictions CSV and its entry, committed to the board together."""

from __future__ import annotations

from pathlib import Path

from spurbench.evaluate.predict import Predictions
from spurbench.evaluate.predictions_csv import format_predictions


def record(leaderboard: str | Path, dataset_info: dict, entry: dict, preds: Predictions) -> dict:
    """Add/replace the entry with its predictions CSV in one transaction of the board (`record_entry`): the CSV
    is written under a name no committed entry uses, and the index names it only once both are on disk, so a
    refusal writes nothing and a crash leaves the previous entry paired with its own predictions."""
    from spurbench.evaluate.leaderboard import record_entry

    # the whole board is not read back
    return record_entry(leaderboard, dataset_info, entry, full=False, predictions=format_predictions(preds))
