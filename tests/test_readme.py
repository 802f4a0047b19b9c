"""The README's commands run as written, in order, in a fresh folder, offline on a CPU.

The convention (stated in the README): every line of a ```bash block is a command (a trailing `\\` joins
the next line), run from the top of the README down in one folder that starts as a fresh clone; a line
whose comment says `# needs: ...` (a GPU, the Hub, your own files) says what it needs instead and is not
run here. The builds and evals among them are real (the three smoke recipes, the offline panel), so their
stderr is also where library noise would show: none may reach the user.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NEEDS = re.compile(r"#\s*needs:")
#: what the libraries print that a spurbench user cannot act on (spurbench's own lines start with its name or [build])
LIBRARY_NOISE = re.compile(
    r"^\[?(transformers|diffusers|datasets|accelerate)\]?[\s:]|Warning\b|warnings\.warn|Token indices sequence length|"
    r"Generating \w+ split|Creating parquet from Arrow|Traceback",
    re.M,
)


def readme_commands(text: str) -> list[tuple[str, bool]]:
    """(command, runs here) for every command of the README's bash blocks, in order."""
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        lines, current = [], ""
        for raw in block.splitlines():
            current += raw.strip() if not current else " " + raw.strip()
            if current.endswith("\\"):
                current = current[:-1].rstrip()
                continue
            lines.append(current)
            current = ""
        for line in lines:
            if line and not line.startswith("#"):
                out.append((line, not NEEDS.search(line)))
    return out


def test_the_convention_is_read_as_documented():
    text = "```bash\nspurbench a --x 1 \\\n    --y 2   # offline\nspurbench b   # needs: the Hub\n# a comment\n```\n```python\nx = 1\n```\n"
    assert readme_commands(text) == [
        ("spurbench a --x 1 --y 2   # offline", True),
        ("spurbench b   # needs: the Hub", False),
    ]


def test_every_readme_command_says_what_it_needs_or_runs_offline():
    commands = readme_commands((ROOT / "README.md").read_text())
    assert len(commands) > 20
    for cmd, runs in commands:
        if runs:  # nothing that reaches the network or a GPU may run unmarked
            assert not re.search(r"pip install|--download|--push-to-hub|--multi_gpu|hf-hub:|--dataset org/", cmd), cmd


def _fresh_clone(dest: Path) -> Path:
    """The repository's files as a fresh clone has them (tracked and new files, nothing ignored)."""
    try:
        files = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: cannot tell a fresh clone's files")
    for name in files:
        src = ROOT / name
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():  # spurbench/recipes -> ../builders, as git checks it out
            os.symlink(os.readlink(src), dest / name)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    return dest


@pytest.mark.slow
def test_readme_commands_run_in_order_in_a_fresh_folder(tmp_path):
    clone = _fresh_clone(tmp_path / "clone")
    env = {
        **os.environ,
        "PYTHONPATH": str(clone),  # this checkout's spurbench, as `pip install -e .` in the clone would give
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
        "SPURBENCH_CACHE": str(tmp_path / "spurbench-cache"),
    }
    for var in (
        "TRANSFORMERS_VERBOSITY",
        "DIFFUSERS_VERBOSITY",
        "DATASETS_VERBOSITY",
        "HF_DATASETS_DISABLE_PROGRESS_BARS",
    ):
        env.pop(var, None)  # the CLI must quiet the libraries itself
    ran = []
    for cmd, runs in readme_commands((clone / "README.md").read_text()):
        if not runs:
            continue
        res = subprocess.run(["bash", "-c", cmd], cwd=clone, env=env, capture_output=True, text=True, timeout=900)
        assert res.returncode == 0, f"README command failed after {len(ran)} others: {cmd}\n{res.stderr[-3000:]}"
        if re.match(r"spurbench (build|eval|verify|finetune)", cmd):
            noise = LIBRARY_NOISE.findall(res.stderr)
            assert not noise, f"library noise from `{cmd}`:\n" + "\n".join(
                line for line in res.stderr.splitlines() if LIBRARY_NOISE.search(line)
            )
        if cmd.startswith("spurbench build --recipe d3s_smoke"):  # the tiny CLIP's 77-token cut: one line per class cut
            assert 1 <= len(re.findall(r"prompts cut to fit", res.stderr)) <= 3, res.stderr
            assert len(re.findall(r"the text encoder reads 77 tokens", res.stderr)) == 1, res.stderr
        if cmd.startswith(
            "spurbench leaderboard --leaderboard runs/before/board.json --format html"
        ):  # a DDB set's own words
            page = (clone / "runs" / "page" / "index.html").read_text()
            assert "Original photo | mask | counterfactual" in page and "pasted on the background" not in page
            assert 'alt="mask of image' in page and 'alt="original photo of image' in page
        ran.append((cmd, res))
    assert len(ran) >= 15
    # eval without --leaderboard: the dataset's own board, and the last line says where
    last = next(res for cmd, res in reversed(ran) if cmd.startswith("spurbench eval") and "--leaderboard" not in cmd)
    board = clone / "leaderboard" / "d3s_smoke-verified" / "leaderboard.json"
    assert board.is_file() and last.stdout.strip().splitlines()[-1].startswith(
        f"leaderboard: {board.relative_to(clone)}"
    )
    # work products are git-ignored in the clone
    ignored = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "check-ignore",
            "--no-index",
            "runs/x",
            "work/x",
            "data/x",
            "leaderboard/d3s_smoke-verified/leaderboard.json",
        ],
        capture_output=True,
        text=True,
    )
    assert len(ignored.stdout.split()) == 4, ignored.stdout
