"""Every command of the README's example block runs on the bundled data, as a user types it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MARKER = "<!-- README examples: each line below is run by tests/test_readme.py -->"


def readme_examples() -> list[str]:
    """The command lines of the README's example block (after :data:`MARKER`)."""
    text = (REPO / "README.md").read_text()
    assert MARKER in text, "the README lost its example block"
    block = text.split(MARKER, 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [ln.strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]


def test_the_example_block_covers_the_command_summary():
    lines = readme_examples()
    used = {ln.split()[1] for ln in lines}
    summary = (REPO / "README.md").read_text().split("## Commands", 1)[1].split("\n\n", 2)[1]
    named = {cell.split("`agriseries ", 1)[1].split()[0].split("`")[0].split("\\")[0]
             for cell in summary.splitlines()[2:] if "`agriseries " in cell}
    assert named <= used, named - used


def test_readme_examples_run(tmp_path):
    (tmp_path / "tests").symlink_to(REPO / "tests")  # the bundled data, read only
    shutil.copytree(REPO / "sites", tmp_path / "sites")  # writes into tmp_path/build
    exe = shlex.quote(sys.executable)
    import agriseries

    # the code under test, whatever the working directory
    src = str(Path(agriseries.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [src, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
    for line in readme_examples():
        assert line.startswith("agriseries "), line
        cmd = f"{exe} -m agriseries.cli {line[len('agriseries '):]}"
        res = subprocess.run(["bash", "-c", cmd], cwd=tmp_path, capture_output=True, text=True,
                             timeout=1200, env=env)
        assert res.returncode == 0, f"{line}\n{res.stdout[-1500:]}\n{res.stderr[-3000:]}"
        assert "Traceback" not in res.stderr, f"{line}\n{res.stderr[-3000:]}"
    assert (tmp_path / "store" / "catalog.json").is_file()
