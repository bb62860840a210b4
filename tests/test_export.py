"""The exported workbook, recalculated by an independent engine (`formulas`), gives the sheet's values.

Workbooks are read back with openpyxl (names, colours, links) and recalculated with the
`formulas` package; tensors are read through the workbook's defined names and the
documented block layout, and compared with the engine and with the numpy reference.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import reference
from conftest import random_model, ref_cfg

import dfgpt
from dfgpt import Config
from dfgpt.cli import main
from dfgpt.export.writers import ExportError

openpyxl = pytest.importorskip("openpyxl")
formulas = pytest.importorskip("formulas")
from openpyxl.utils import range_boundaries  # noqa: E402

BASIC = Config(n_layer=1, n_head=2, n_embd=4, block_size=4, vocab=("A", "B", "C"), n_inner=8, name="basic")
# erf GELU, [in, out] weights (read with MMULT), no biases, tied unembedding, 2 layers, T < block_size
VARIANT = Config(n_layer=2, n_head=2, n_embd=4, block_size=5, vocab=("A", "B", "C"), n_inner=6,
                 gelu="erf", layout="in_out", bias=False, tied=True, name="variant")
# no LayerNorm, no MLP (like the hand-made aab model)
BARE = Config(n_layer=1, n_head=1, n_embd=4, block_size=4, vocab=("a", "b"), layer_norm=False, mlp=False,
              tied=True, name="bare")
ALLOWED = {"SUM", "SUMPRODUCT", "MMULT", "MAX", "EXP", "SQRT", "TANH", "ERF", "INDEX", "MATCH"}


class Book:
    """An exported workbook: openpyxl's view and the `formulas` engine's recalculated values."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.wb = openpyxl.load_workbook(path)
        self.engine = formulas.ExcelModel().loads(str(path)).finish()
        self.values = self.recalc()

    def key(self, sheet: str, r: int, c: int) -> str:
        from openpyxl.utils import get_column_letter

        return f"'[{self.path.name}]{sheet.upper()}'!{get_column_letter(c)}{r}"  # as `formulas` spells it

    def recalc(self, inputs: dict[str, object] | None = None) -> dict[str, object]:
        sol = self.engine.calculate(inputs=inputs or {})
        return {k.upper(): v for k, v in sol.items()}

    def cell(self, values: dict[str, object], sheet: str, r: int, c: int) -> float:
        """A recalculated cell (nan when the cell is empty)."""
        got = values.get(self.key(sheet, r, c).upper())
        if got is None:
            return np.nan
        v = got.value[0, 0]  # type: ignore[attr-defined]
        return float(v) if not isinstance(v, str) else v  # type: ignore[return-value]

    def where(self, name: str) -> tuple[str, int, int, int, int]:
        dn = self.wb.defined_names[name]
        ((sheet, ref),) = list(dn.destinations)
        c0, r0, c1, r1 = range_boundaries(ref.replace("$", ""))
        return sheet, r0, c0, r1, c1

    def tensor(self, values: dict[str, object], name: str, spec: dfgpt.core.graph.TensorSpec,
               shape: tuple) -> np.ndarray:
        """A tensor read through its defined name and the documented layout."""
        sheet, r0, c0, r1, c1 = self.where(name)
        grid = np.array([[self.cell(values, sheet, r, c) for c in range(c0, c1 + 1)] for r in range(r0, r1 + 1)])
        if len(shape) == 0:
            return grid[0, 0]
        if len(shape) == 1:
            return grid.reshape(-1)
        if spec.axes == ("head", "pos"):
            return grid.T
        if len(shape) == 3:  # one row per position, heads side by side
            return grid.reshape(shape[1], shape[0], shape[2]).transpose(1, 0, 2)
        return grid


def excel(name: str) -> str:
    return re.sub(r"\[(\d+)\]", r"\1", name).replace(".", "_")


def assert_matches(book: Book, values: dict[str, object], sheet: dfgpt.Sheet) -> None:
    """Every tensor of the workbook equals the sheet's to 1e-9 (masked scores: empty cells)."""
    for name in sheet.tensors():
        spec = sheet.graph.specs[name]
        want = np.asarray(sheet.values(name), dtype=float)
        got = book.tensor(values, excel(name), spec, want.shape).astype(float)
        if name.endswith("attn.score"):
            masked = np.isinf(want)
            assert masked.any() and np.isnan(got[masked]).all(), name
            got, want = got[~masked], want[~masked]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=name)


@pytest.fixture(scope="module")
def basic(tmp_path_factory) -> tuple[dfgpt.Model, dict, dfgpt.Sheet, Book]:
    model, state = random_model(BASIC, seed=3)
    sheet = model.sheet("CABA")
    path = tmp_path_factory.mktemp("x") / "basic.xlsx"
    result = sheet.to_xlsx(path, progress=False)
    assert result.warnings == () and result.path == path
    return model, state, sheet, Book(path)


def test_recalculated_workbook_gives_the_sheet_values(basic):
    _model, state, sheet, book = basic
    assert_matches(book, book.values, sheet)
    # and the independent reference forward, read through the `logit` name
    ref = reference.forward(state, ref_cfg(BASIC), sheet.tokens)["logits"]
    sh, r0, c0, r1, c1 = book.where("logit")
    assert (r1 - r0 + 1, c1 - c0 + 1) == (sheet.T, 3)
    got = np.array([[book.cell(book.values, sh, r, c) for c in range(c0, c1 + 1)] for r in range(r0, r1 + 1)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-9)


def test_changing_one_weight_cell_agrees_with_an_edited_sheet(basic):
    model, _, sheet, book = basic
    sh, r0, c0, _, _ = book.where("h0_mlp_c_fc_w")
    values = book.recalc({book.key(sh, r0 + 3, c0 + 1): 0.75})  # h[0].mlp.c_fc.w[3][1]
    fresh = model.sheet("CABA")
    fresh.engine.write("h[0].mlp.c_fc.w", (3, 1), 0.75)
    assert abs(fresh.value("logit[3][A]") - sheet.value("logit[3][A]")) > 1e-6  # the edit matters
    assert_matches(book, values, fresh)
    sh, r0, c0, _, _ = book.where("h0_attn_c_attn_w")
    values = book.recalc({book.key(sh, r0 + 9, c0 + 2): -1.5})  # a key weight: h[0].attn.c_attn.w[9][2]
    fresh = model.sheet("CABA")
    fresh.engine.write("h[0].attn.c_attn.w", (9, 2), -1.5)
    assert_matches(book, values, fresh)


def test_typing_a_new_input_recalculates_its_logits(basic):
    model, _state, _, book = basic
    sh, r0, c0, _, c1 = book.where("input")
    assert (sh, r0, c1 - c0 + 1) == ("MAP", 4, 4)
    assert [book.wb["MAP"].cell(r0, c).value for c in range(c0, c1 + 1)] == list("CABA")
    values = book.recalc({book.key("MAP", r0, c0 + i): ch for i, ch in enumerate("BCCA")})
    other = model.sheet("BCCA")
    assert_matches(book, values, other)
    # the greedy-next-token row under the input follows the new logits
    nxt = [book.cell(values, "MAP", 5, c0 + t) for t in range(4)]
    assert nxt == [BASIC.vocab[i] for i in np.argmax(other.values("logit"), axis=1)]


@pytest.mark.parametrize("cfg,text,temperature", [(VARIANT, "CAB", 0.7), (BARE, "abba", 1.0)])
def test_variants_recalculate(tmp_path, cfg, text, temperature):
    model, state = random_model(cfg, seed=5)
    sheet = model.sheet(text, temperature=temperature)
    path = tmp_path / "v.xlsx"
    sheet.to_xlsx(path, progress=False)
    book = Book(path)
    assert_matches(book, book.values, sheet)
    ref = reference.forward(state, ref_cfg(cfg), sheet.tokens)["logits"]
    np.testing.assert_allclose(book.tensor(book.values, "logit", sheet.graph.specs["logit"], ref.shape), ref,
                               rtol=0, atol=1e-9)


def test_layout_colours_links_and_formula_functions(basic):
    _model, _, sheet, book = basic
    wb = book.wb
    stages = ["embedding", "h0.attn", "h0.mlp", "output"]
    assert wb.sheetnames == ["MAP", *stages]
    links = {c.hyperlink.location for row in wb["MAP"].iter_rows() for c in row if c.hyperlink}
    assert {f"'{s}'!A1" for s in stages} <= links
    for s in stages:
        assert wb[s]["A2"].hyperlink.location == "'MAP'!A1"
        assert wb[s]["A1"].value.startswith(s)
    # colours: parameters purple, input green, intermediates orange; masked att 0 constants
    sh, r0, c0, *_ = book.where("h0_attn_c_attn_w")
    assert wb[sh].cell(r0, c0).fill.fgColor.rgb == "FFD9C3E9"
    assert wb[sh].cell(r0, c0).value == pytest.approx(float(sheet.value("h[0].attn.c_attn.w[0][0]")), abs=0)
    assert wb["MAP"]["B4"].fill.fgColor.rgb == "FFC6EFCE"
    sh, r0, c0, *_ = book.where("h0_attn_att")
    assert wb[sh].cell(r0, c0).fill.fgColor.rgb == "FFFCD5B4"
    assert wb[sh].cell(r0, c0 + 1).value == 0  # att[0][0][1]: masked, the constant 0
    assert wb[sh].cell(r0, c0).value.startswith("=EXP(")
    # every computed cell is a plain formula over the allowed functions; nothing volatile
    seen: set[str] = set()
    n = 0
    for ws in wb.worksheets:
        for row in ws.iter_rows():
            for c in row:
                if isinstance(c.value, str) and c.value.startswith("="):
                    n += 1
                    seen |= set(re.findall(r"([A-Z][A-Z0-9.]*)\(", c.value))
    assert seen == ALLOWED - {"MMULT", "ERF"}
    T, H = sheet.T, BASIC.n_head
    masked = 2 * H * T * (T - 1) // 2  # score and att above the diagonal
    computed = sum(int(np.prod(sheet.engine.shape(t))) for t in sheet.graph.computed)
    assert n == computed - masked + T + T  # + tokens (MATCH) + the greedy-next row
    # the mapping: one name per tensor, logit exactly, per-head names
    names = set(wb.defined_names)
    assert {excel(t) for t in sheet.tensors()} <= names
    assert {"logit", "h0_attn_q_head0", "h0_attn_q_head1", "input", "vocab"} <= names


def test_pinned_cells_are_exported_as_constants_with_a_warning(tmp_path, capsys):
    model, _ = random_model(BASIC, seed=3)
    sheet = model.sheet("CAB")
    _ = sheet.values("logit")
    sheet.engine.pin("h[0].mlp.gelu", (1, 2), 0.125)
    result = sheet.to_xlsx(tmp_path / "p.xlsx", progress=False)
    assert len(result.warnings) == 1 and "h[0].mlp.gelu[1][2]" in result.warnings[0]
    assert "constant" in str(result)
    wb = openpyxl.load_workbook(tmp_path / "p.xlsx")
    sh, r0, c0, *_ = (lambda d: (d[0][0], *range_boundaries(d[0][1].replace("$", ""))[1::-1]))(
        list(wb.defined_names["h0_mlp_gelu"].destinations))
    assert wb[sh].cell(r0 + 1, c0 + 2).value == 0.125
    assert wb[sh].cell(r0 + 1, c0 + 1).value.startswith("=0.5*")
    npz = sheet.to_npz(tmp_path / "p.npz")
    assert npz.warnings and np.load(tmp_path / "p.npz")["h[0].mlp.gelu"][1, 2] == 0.125


def test_bad_paths_and_too_large_models(tmp_path, monkeypatch, capsys, sort_random):
    sheet = sort_random.sheet("CAB")
    for bad in (tmp_path / "missing" / "x.xlsx", tmp_path):
        with pytest.raises(ExportError, match="folder"):
            sheet.to_xlsx(bad, progress=False)
        with pytest.raises(ExportError, match="folder"):
            sheet.to_npz(bad)
    (tmp_path / "file").write_text("")
    with pytest.raises(ExportError, match="does not exist"):
        sheet.to_xlsx(tmp_path / "file" / "x.xlsx")
    monkeypatch.setattr("dfgpt.export.writers.MAX_CELLS", 50_000)
    with pytest.raises(ExportError, match=r"94,078 cells.*limit is 50,000"):
        sheet.to_xlsx(tmp_path / "big.xlsx", progress=False)
    assert not (tmp_path / "big.xlsx").exists()
    assert main(["export", "xlsx", str(tmp_path / "nope" / "a.xlsx"), "--model", "sort-random"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_npz_holds_every_tensor_by_name(tmp_path, sort_random):
    sheet = sort_random.sheet("CABAC")
    result = sheet.to_npz(tmp_path / "a.npz")
    with np.load(tmp_path / "a.npz", allow_pickle=False) as z:
        assert set(z.files) == set(sheet.tensors())
        for name in z.files:
            np.testing.assert_array_equal(z[name], sheet.values(name))
        assert z["tokens"].tolist() == sheet.tokens and z["logit"].shape == (5, 3)
    assert result.cells == sum(int(np.prod(sheet.engine.shape(n))) for n in sheet.tensors())


def test_cli_export_and_the_sort_model_workbook(tmp_path, capsys, sort_random):
    path = tmp_path / "sort.xlsx"
    assert main(["export", "xlsx", str(path), "--model", "sort-random", "CABACA"]) == 0
    assert "formulas" in capsys.readouterr().out
    assert main(["export", "npz", str(tmp_path / "s.npz"), "--model", "sort-random", "CABACA"]) == 0
    wb = openpyxl.load_workbook(path, read_only=True)
    assert wb.sheetnames == ["MAP", "embedding"] + [f"h{i}.{p}" for i in range(3) for p in ("attn", "mlp")] + [
        "output"]
    dn = wb.defined_names["h2_attn_c_attn_w"]
    ((sh, ref),) = list(dn.destinations)
    c0, r0, c1, r1 = range_boundaries(ref.replace("$", ""))
    assert (r1 - r0 + 1, c1 - c0 + 1) == (144, 48)
    rows = wb[sh].iter_rows(min_row=r0, max_row=r1, min_col=c0, max_col=c1, values_only=True)
    np.testing.assert_array_equal(np.array(list(rows)), sort_random.params["h[2].attn.c_attn.w"])
    sh, ref = next(iter(wb.defined_names["logit"].destinations))
    assert sh == "output" and ref.count("$") == 4
    wb.close()
