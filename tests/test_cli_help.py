"""The entry point answers --help and --version without importing the commands (no torch), names a mistyped
command with the closest one, and states each flag's default once."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from spurbench.cli import COMMANDS, main


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_top_level_help_and_version_import_no_command_and_no_torch(flag):
    code = (
        "import sys\nfrom spurbench.cli import main\n"
        f"try:\n    main([{flag!r}])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'timm', 'datasets', 'spurbench.evaluate.cli', 'spurbench.generate.stages') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stdout, out.stdout + out.stderr
    if flag == "--help":
        for name in COMMANDS:
            assert name in out.stdout


def test_a_mistyped_command_is_named_with_the_closest_one(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evl", "--panel", "offline"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'evl'; did you mean `spurbench eval`?" in err
    assert "--panel" not in err
    with pytest.raises(SystemExit):
        main(["zzzz"])
    assert "`spurbench --help` lists them" in capsys.readouterr().err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_flag_states_its_default_at_most_once(command, capsys):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    assert "(default: None)" not in text and "(default: False)" not in text
    # one help entry per flag: split at the flags and look at each entry's text
    for entry in re.split(r" (?=--?[a-z])", text):
        assert len(re.findall(r"\(default", entry)) <= 1, entry
