"""The docs run: every python block executes and prints what it shows, every `dfgpt` command
prints the output shown under it, every picture the docs reference is made by dfgpt and current.

Conventions the docs follow (and this file enforces):

- python blocks of one file share one namespace, top to bottom (the walkthrough is a session);
  `# ` comment lines right after a `print(...)` line are that print's output, and every line a
  block prints must be shown so;
- a ```sh block of `dfgpt ...` lines is run through `dfgpt.cli.main` (in a scratch folder);
  when a ```text block follows it, that is its stdout (durations like `0.42 s` aside);
- shown numbers with a fractional part match to one unit in their last digit (tests/printed.py:
  BLAS kernels differ across CPUs in the last bits); text, counts and order match exactly;
- pictures under docs/images/walkthrough/ are drawn by `PICTURES` below; the others by
  `dfgpt.views.render.write_docs` (checked in tests/test_render.py).

After changing the model or the code, refresh the shown outputs and pictures with
`DFGPT_UPDATE_DOCS=1 python -m pytest -q tests/test_docs.py` and read the diff.
"""

from __future__ import annotations

import ast
import contextlib
import io
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from printed import first_difference

import dfgpt
from dfgpt.cli import main as cli_main
from dfgpt.views.attention_map import attention_map
from dfgpt.views.colors import write
from dfgpt.views.render import DOCS as RENDER_DOCS
from dfgpt.views.sweep_map import lens_map, sweep_map

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PICS = DOCS / "images" / "walkthrough"
UPDATE = os.environ.get("DFGPT_UPDATE_DOCS") == "1"
FILES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
FENCE = re.compile(r"```(\w*)\n(.*?)```", re.S)
MARK = "\x00dfgpt-docs-mark "


# -- python blocks ------------------------------------------------------------------------------
def split_block(code: str) -> tuple[list[str], dict[int, list[str]]]:
    """(program lines, {index of a print line in the program: its shown output lines})."""
    program: list[str] = []
    shown: dict[int, list[str]] = {}
    for line in code.splitlines():
        if line.startswith("# ") or line == "#":
            if program and program[-1].lstrip().startswith("print("):
                shown.setdefault(len(program) - 1, []).append(line[2:])
                continue
        program.append(line)
    return program, shown


def run_block(code: str, env: dict[str, Any], where: str) -> tuple[list[str], dict[int, list[str]], list[str]]:
    """Run a block in `env`; return (program, shown, actual output per print) and the trailing output.

    A marker print goes after the top-level statement holding each shown print, so the output
    printed since the previous marker belongs to that print (a print in a loop shows all its lines).
    """
    program, shown = split_block(code)
    tree = ast.parse("\n".join(program), where)
    prints = [i for i, line in enumerate(program) if line.lstrip().startswith("print(")] if UPDATE else shown
    ends: dict[int, int] = {}  # after line (1-based end of a top-level statement) -> print index
    for stmt in tree.body:
        for i in prints:
            if stmt.lineno <= i + 1 <= stmt.end_lineno:
                ends[stmt.end_lineno] = i
    lines: list[str] = []
    for n, line in enumerate(program, 1):
        lines.append(line)
        if n in ends:
            lines.append(f"print({MARK + str(ends[n])!r})")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile("\n".join(lines), where, "exec"), env)
    actual: dict[int, list[str]] = {}
    chunk: list[str] = []
    for line in out.getvalue().splitlines():
        if line.startswith(MARK):
            actual[int(line[len(MARK):])] = chunk
            chunk = []
        else:
            chunk.append(line)
    return program, shown, [actual, chunk]  # type: ignore[list-item]


def rebuild(program: list[str], outputs: dict[int, list[str]]) -> str:
    text = []
    for i, line in enumerate(program):
        text.append(line)
        text += [("# " + o).rstrip() if o else "#" for o in outputs.get(i, [])]
    return "\n".join(text) + "\n"


# -- sh and text blocks -------------------------------------------------------------------------
def dfgpt_commands(block: str) -> list[list[str]]:
    """The dfgpt argv of each line (`pip install -e . && dfgpt ...` runs its dfgpt part)."""
    out = []
    for line in block.strip().splitlines():
        cmd = line.split("&&")[-1].strip()
        if cmd.startswith("dfgpt "):
            out.append(shlex.split(cmd)[1:])
    return out


def run_cli(argvs: list[list[str]]) -> str:
    """The stdout of the commands; a nonzero exit status is shown as `(exit status N)`."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        for argv in argvs:
            code = cli_main(argv)
            if code:
                print(f"(exit status {code})")
    return out.getvalue()


def timeless(text: str) -> str:
    """Durations vary from run to run: `in 0.42 s` and `0.2 s,` compare as `<t> s`."""
    return re.sub(r"\b\d+\.\d+ s\b", "<t> s", text)


def check_file(path: Path, tmp: Path) -> None:
    """Run every block of one file in order; compare (or, updating, rewrite) what it shows."""
    source = path.read_text(encoding="utf-8")
    blocks = list(FENCE.finditer(source))
    env: dict[str, Any] = {"__name__": f"docs_{path.stem}"}
    replace: list[tuple[int, int, str]] = []
    cwd = os.getcwd()
    os.chdir(tmp)  # commands and blocks write their files in a scratch folder
    try:
        for j, m in enumerate(blocks):
            lang, body = m.group(1), m.group(2)
            where = f"{path.name}:{source[: m.start()].count(chr(10)) + 1}"
            if lang == "python":
                program, shown, (actual, trailing) = run_block(body, env, where)
                assert not trailing, f"{where}: printed lines not shown under a print: {trailing}"
                if UPDATE:
                    replace.append((m.start(2), m.end(2), rebuild(program, actual)))
                    continue
                for i, want in shown.items():
                    got = actual.get(i, [])
                    assert first_difference("\n".join(want), "\n".join(got)) is None, (
                        f"{where}: {program[i].strip()} printed {got}")
            elif lang == "sh" and dfgpt_commands(body):
                got = run_cli(dfgpt_commands(body))
                nxt = blocks[j + 1] if j + 1 < len(blocks) else None
                if nxt is not None and nxt.group(1) == "text" and source[m.end(): nxt.start()].strip() == "":
                    if UPDATE:
                        replace.append((nxt.start(2), nxt.end(2), got))
                    else:
                        assert first_difference(timeless(nxt.group(2)), timeless(got)) is None, (
                            f"{where}: `{body.strip()}` printed:\n{got}")
    finally:
        os.chdir(cwd)
    if UPDATE and replace:
        for a, b, text in sorted(replace, reverse=True):
            source = source[:a] + text + source[b:]
        path.write_text(source, encoding="utf-8")


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_blocks_run_and_show_their_output(path, tmp_path):
    check_file(path, tmp_path)


def test_runner_catches_a_wrong_output(tmp_path):
    doc = tmp_path / "wrong.md"
    doc.write_text("```python\nx = 2\nprint(x + 1)\n# 4\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError, match="printed"):
        check_file(doc, tmp_path)
    doc.write_text("```python\nprint(1)\nprint(2)\n# 2\n```\n", encoding="utf-8")
    with pytest.raises(AssertionError):  # the first print's line is not shown
        check_file(doc, tmp_path)
    doc.write_text("```python\nfor i in range(2):\n    print(i)\n# 0\n# 1\nprint('end')\n# end\n```\n")
    check_file(doc, tmp_path)


# -- pictures -----------------------------------------------------------------------------------
def _receipt(sheet: dfgpt.Sheet) -> Any:
    sheet.values("prob")
    return sheet.set("lm_head.w[A][26]", -5.0).settle()


def _append(model: dfgpt.Model) -> Any:
    sheet = model.sheet("CBABBC")
    sheet.values("prob")
    return dfgpt.draw(sheet.append("A").settle(), sheet=sheet)


PICTURES: dict[str, Callable[[dfgpt.Model, dfgpt.Sheet], Any]] = {
    "embedding": lambda m, s: dfgpt.draw(s, "emb[5][0]", depth=1),
    "layernorm": lambda m, s: dfgpt.draw(s, "h[0].ln_1.out[5][0]", depth=2),
    "attention-cell": lambda m, s: dfgpt.draw(s, "h[0].attn.att[1][5][2]", depth=2),
    "weighted": lambda m, s: dfgpt.draw(s, "h[0].attn.y[5][16]", depth=1),
    "residual": lambda m, s: dfgpt.draw(s, "h[0].mid[5][0]", depth=2),
    "gelu": lambda m, s: dfgpt.draw(s, "h[0].mlp.gelu[5][0]", depth=2),
    "stack": lambda m, s: dfgpt.draw(m, expand=True),
    "softmax": lambda m, s: dfgpt.draw(s, "prob[5][A]", depth=1),
    "cone": lambda m, s: dfgpt.draw(s.provenance("logit[5][A]"), influence=s.influence("logit[5][A]", top=50)),
    "edit": lambda m, s: dfgpt.draw(_receipt(s), sheet=s),
    "append": lambda m, s: _append(m),
    "attention-11": lambda m, s: attention_map(m.sheet("CBABBCABBBC"), layer=0),
    "patch-heads": lambda m, s: sweep_map(dfgpt.sweep(m.sheet("CABACAAAA"), m.sheet("CACACAAAA"), "logit_diff:B,C",
                                                      over="head_out")),
    "lens": lambda m, s: lens_map(dfgpt.logit_lens(m.sheet("CABACAAAA"))),
    "circuit": lambda m, s: dfgpt.acdc(m, [("BACACAAAA", "CACACAAAA"), ("CABACAAAA", "CACACAAAA"), ("ACABCAAAA",
                                           "ACACCAAAA"), ("CAACABAAA", "CAACACAAA")], "kl", threshold=0.1).picture(),
}


def make_pictures(folder: Path) -> list[Path]:
    """Draw every walkthrough picture: <name>.dot (compared) and <name>.svg (or .png for maps)."""
    folder.mkdir(parents=True, exist_ok=True)
    model = dfgpt.load("sort")
    out = []
    for name, make in PICTURES.items():
        dot = make(model, model.sheet("CABACA"))  # a fresh sheet each: edits stay in their picture
        out += [write(dot, folder / f"{name}.dot"), write(dot, folder / f"{name}.svg")]
    return out


def referenced_pictures() -> set[Path]:
    refs = set()
    for path in FILES:
        for target in re.findall(r"!\[[^\n]*?\]\((\S+?\.(?:svg|png))\)", path.read_text(encoding="utf-8")):
            refs.add((path.parent / target).resolve())
    return refs


def test_every_referenced_picture_is_made_by_dfgpt_and_current(tmp_path):
    if UPDATE:
        make_pictures(PICS)
    make_pictures(tmp_path)
    refs = referenced_pictures()
    assert refs, "the docs show no picture"
    made_by_render = {(DOCS / "images" / f"{n}.svg").resolve() for n in RENDER_DOCS}
    made_by_render.add((DOCS / "images" / "attention.png").resolve())
    for ref in refs:
        assert ref.exists(), f"{ref} is referenced but missing"
        if ref.parent == PICS.resolve():
            assert ref.stem in PICTURES, f"{ref.name} is not drawn by PICTURES"
        elif ref.parent == (DOCS / "images" / "explorer").resolve():
            continue  # screenshots of the explorer, taken by tests/test_explorer_browser.py (which checks them)
        elif ref.parent == (DOCS / "images" / "families").resolve():
            continue  # drawn by docs/families.md's model, checked in tests/test_families_capabilities.py
        else:
            assert ref in made_by_render, f"{ref} is not made by dfgpt.views.render.write_docs"
    version = re.search(rb"Generated by graphviz version ([^\n]*)-->", (tmp_path / "stack.svg").read_bytes())
    for name in PICTURES:
        fresh = (tmp_path / f"{name}.dot").read_text()
        kept = (PICS / f"{name}.dot").read_text()
        assert first_difference(kept, fresh) is None, f"{name} is stale: DFGPT_UPDATE_DOCS=1 pytest"
        shipped = (PICS / f"{name}.svg").read_bytes()
        # Same DOT and same Graphviz: the SVG bytes must match too. (Another CPU may print a
        # label's last digit one off; its layout then differs by that glyph, and only the DOT is held.)
        if kept == fresh and version and version.group(0) in shipped:
            assert shipped == (tmp_path / f"{name}.svg").read_bytes()
    unused = {p.name for p in PICS.glob("*.svg")} - {r.name for r in refs if r.parent == PICS.resolve()}
    assert not unused, f"pictures no doc shows: {unused}"


# -- links ---------------------------------------------------------------------------------------
def test_relative_links_resolve():
    for path in FILES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text(encoding="utf-8")):
            if "://" not in target:
                assert (path.parent / target).exists(), f"{path.name}: broken link {target}"


def test_readme_sh_commands_are_the_two_commands():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    sh = [m.group(2).strip() for m in FENCE.finditer(text) if m.group(1) == "sh"]
    assert sh[1] == "bash .ci/setup && python -m pytest -q"
    assert sh[1] in (ROOT / ".ci" / "run").read_text().splitlines()
    assert sh[0].startswith("pip install -e . && dfgpt ")
