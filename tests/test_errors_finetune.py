"""`spurbench finetune`'s one-line errors on its flags, --config file and data, before any training: exit
status 2, one stderr line, and no --out folder made."""

from __future__ import annotations

import pytest

from spurbench.cli import main


def _finetune_error(argv: list[str], tmp_path, capsys) -> str:
    out = tmp_path / "ft"
    code = main(["finetune", "--model", "resnet18", "--data", str(tmp_path / "data"), "--out", str(out), *argv])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("spurbench finetune: error: "), err
    assert not out.exists()
    return err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--lr", "0"], "--lr must be positive, got 0.0"),
        (["--gamma2", "-1"], "--gamma2 must be >= 0, got -1.0"),
        (["--minority-groups", "a", "a"], "--minority-groups takes two different group names, got ['a', 'a']"),
        (["--panel", "offline", "--weights", "w.pth"], "give either --panel (its entry's weights) or --weights"),
        (["--panel", "offline"], "panel 'offline' has no entry named 'resnet18'; its entries: tf_efficientnet_lite0"),
        (["--key-map", "positional"], "--key-map applies to --weights; add --weights FILE"),
        (["--config", "/no/such/settings.yaml"], "cannot read --config '/no/such/settings.yaml' (FileNotFoundError)"),
    ],
)
def test_a_finetune_flag_mistake_is_one_line(argv, needle, tmp_path, capsys):
    assert needle in _finetune_error(argv, tmp_path, capsys)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("- 200\n", "must be a YAML mapping of settings, e.g. `epochs: 200`"),
        ("epochs: 2\nwarmup: 3\n", "has unknown setting(s) warmup; known: "),
        ("epochs: 0\n", "--epochs must be a positive integer, got 0"),
    ],
)
def test_a_bad_finetune_config_file_is_one_line(text, needle, tmp_path, capsys):
    config = tmp_path / "settings.yaml"
    config.write_text(text)
    assert needle in _finetune_error(["--config", str(config)], tmp_path, capsys)
    assert config.read_text() == text


def test_data_without_group_labels_is_one_line(photo_dataset, tmp_path, capsys):
    out = tmp_path / "ft"
    data = ["--data", str(photo_dataset.path), "--train-split", "test", "--val-split", "test"]
    code = main(["finetune", "--model", "resnet18", *data, "--out", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "has no `group` column; fine-tuning needs group labels" in err and len(err.splitlines()) == 1
    assert not out.exists()
