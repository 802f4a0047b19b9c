"""Writing one scored classifier: its predictions CSV next to the leaderboard, then its entry on the board."""

from __future__ import annotations

import os
from pathlib import Path

from spurbench.evaluate.predict import Predictions
from spurbench.evaluate.predictions_csv import write_predictions


def record(leaderboard: str | Path, dataset_info: dict, entry: dict, preds: Predictions) -> dict:
    """Write the predictions CSV next to the leaderboard, then add/replace the entry (under its lock).

    If the leaderboard refuses the entry (another dataset, corrupt file), the model's previous
    predictions file is put back, so nothing that was there is damaged.
    """
    from spurbench.evaluate.leaderboard import entry_files, predictions_relpath, record_entry

    leaderboard = Path(leaderboard)
    if (leaderboard.parent / entry["predictions"]).exists():
        # this model's earlier file, or (a board from before names were made distinct) another model's
        taken = {rel for model, rel in entry_files(leaderboard).items() if model != entry["model"]}
        entry = {**entry, "predictions": predictions_relpath(entry["model"], taken)}
    csv_path = leaderboard.parent / entry["predictions"]
    backup = csv_path.with_name(csv_path.name + f".bak-{os.getpid()}")
    had_old = csv_path.exists()
    if had_old:
        os.replace(csv_path, backup)
    try:
        write_predictions(csv_path, preds)
        board = record_entry(leaderboard, dataset_info, entry, full=False)  # the whole board is not read back
    except BaseException:
        if had_old:
            os.replace(backup, csv_path)
        elif csv_path.exists():
            csv_path.unlink()
        raise
    if had_old:
        backup.unlink()
    return board
