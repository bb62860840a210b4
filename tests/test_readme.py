"""The README's code runs, and its two commands are the ones CI uses."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def blocks(path: Path, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", path.read_text(), flags=re.S)


def run_python_block(code: str) -> None:
    """Run a block; every `# ...` comment line right after a print is its expected output."""
    lines = code.splitlines()
    program, expected = [], []
    for line in lines:
        if line.startswith("# ") and program and program[-1].lstrip().startswith("print("):
            expected.append(line[2:])
        else:
            program.append(line)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("\n".join(program), "README", "exec"), {})
    assert out.getvalue().splitlines() == expected


def test_readme_python_blocks_run_and_print_what_they_show():
    code = blocks(ROOT / "README.md", "python")
    assert code
    for block in code:
        run_python_block(block)


def test_readme_test_command_is_what_ci_runs():
    commands = [b.strip() for b in blocks(ROOT / "README.md", "sh")]
    assert len(commands) == 2
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()
    assert commands[0].startswith("pip install -e .")
