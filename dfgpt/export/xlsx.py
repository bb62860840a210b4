"""A minimal, fast .xlsx writer: numbers, inline text, formulas, fills, internal links, defined names.

openpyxl writes about 40k cells a second; the sort model's workbook has ~120k, so dfgpt
writes the SpreadsheetML parts itself (plain string joins, one zip). The files open in
Excel and LibreOffice and read back with openpyxl; formulas carry no cached values and
the workbook asks for a full recalculation on load.

>>> import tempfile, pathlib, openpyxl
>>> book = Book()
>>> ws = book.sheet("demo")
>>> ws.number(1, 1, 2.5, "parameter"); ws.formula(1, 2, "A1*2", "computed")
>>> book.define("x", "'demo'!$A$1")
>>> p = pathlib.Path(tempfile.mkdtemp()) / "demo.xlsx"
>>> book.save(p)
>>> openpyxl.load_workbook(p)["demo"]["B1"].value
'=A1*2'
"""

from __future__ import annotations

import zipfile
from collections import defaultdict
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

__all__ = ["FILLS", "STYLES", "Book", "XSheet", "col_letter"]

# Fill colours of the spreadsheet convention (ARGB).
FILLS = {
    "parameter": "FFD9C3E9",  # purple: weights, constants
    "input": "FFC6EFCE",  # green: values from the input
    "computed": "FFFCD5B4",  # orange: intermediates, live formulas
    "masked": "FFD9D9D9",  # grey: causally masked attention entries
    "pinned": "FFFFFF66",  # yellow: computed cells pinned to a constant
}
# Style name -> cellXfs index in styles.xml below.
STYLES = {"plain": 0, "parameter": 1, "input": 2, "computed": 3, "masked": 4, "pinned": 5,
          "title": 6, "label": 7, "link": 8, "header": 9}

_NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
_NS_R = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_LETTERS: list[str] = []


def col_letter(c: int) -> str:
    """1 -> 'A', 27 -> 'AA' (cached)."""
    while len(_LETTERS) < c:
        n, s = len(_LETTERS) + 1, ""
        while n:
            n, r = divmod(n - 1, 26)
            s = chr(65 + r) + s
        _LETTERS.append(s)
    return _LETTERS[c - 1]


class XSheet:
    """The cells of one worksheet, kept as XML fragments per row."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: dict[int, list[tuple[int, str]]] = defaultdict(list)
        self.links: list[str] = []
        self.widths: dict[int, float] = {}

    def _put(self, r: int, c: int, body: str, style: str, t: str = "") -> None:
        s = STYLES[style]
        attrs = f' r="{col_letter(c)}{r}"' + (f' s="{s}"' if s else "") + (f' t="{t}"' if t else "")
        self.rows[r].append((c, f"<c{attrs}>{body}</c>"))

    def number(self, r: int, c: int, v: float, style: str = "plain") -> None:
        self._put(r, c, f"<v>{float(v)!r}</v>", style)

    def grid(self, top: int, left: int, values: np.ndarray, style: str = "plain") -> None:
        """A [rows, cols] block of numbers, one XML fragment per row (the fast path)."""
        s = STYLES[style]
        cols = [col_letter(left + j) for j in range(values.shape[1])]
        for i, row in enumerate(values.tolist()):
            r = top + i
            self.rows[r].append(
                (left, "".join(f'<c r="{c}{r}" s="{s}"><v>{v!r}</v></c>' for c, v in zip(cols, row)))
            )

    def text(self, r: int, c: int, s: str, style: str = "plain") -> None:
        self._put(r, c, f'<is><t xml:space="preserve">{escape(s)}</t></is>', style, "inlineStr")

    def formula(self, r: int, c: int, f: str, style: str = "computed") -> None:
        """A live formula (text without the leading '=')."""
        self._put(r, c, f"<f>{escape(f)}</f>", style)

    def empty(self, r: int, c: int, style: str) -> None:
        self._put(r, c, "", style)

    def link(self, r: int, c: int, s: str, location: str) -> None:
        """Text that jumps to `location` ('sheet'!A1) inside the workbook."""
        self.text(r, c, s, "link")
        ref = f"{col_letter(c)}{r}"
        self.links.append(f'<hyperlink ref="{ref}" location={quoteattr(location)} display={quoteattr(s)}/>')

    def xml(self) -> str:
        parts = [f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<worksheet {_NS} {_NS_R}>']
        if self.widths:
            parts.append("<cols>")
            parts += [f'<col min="{c}" max="{c}" width="{w}" customWidth="1"/>' for c, w in sorted(self.widths.items())]
            parts.append("</cols>")
        parts.append("<sheetData>")
        for r in sorted(self.rows):
            cells = self.rows[r]
            cells.sort(key=lambda x: x[0])
            parts.append(f'<row r="{r}">' + "".join(x[1] for x in cells) + "</row>")
        parts.append("</sheetData>")
        if self.links:
            parts.append("<hyperlinks>" + "".join(self.links) + "</hyperlinks>")
        parts.append("</worksheet>")
        return "".join(parts)


def _styles() -> str:
    fills = "".join(
        f'<fill><patternFill patternType="solid"><fgColor rgb="{rgb}"/><bgColor indexed="64"/></patternFill></fill>'
        for rgb in FILLS.values()
    )
    xf = '<xf numFmtId="0" fontId="{f}" fillId="{i}" borderId="0" xfId="0"{a}/>'
    xfs = [xf.format(f=0, i=0, a="")]
    xfs += [xf.format(f=0, i=i + 2, a=' applyFill="1"') for i in range(len(FILLS))]
    xfs += [xf.format(f=1, i=0, a=' applyFont="1"'), xf.format(f=2, i=0, a=' applyFont="1"'),
            xf.format(f=3, i=0, a=' applyFont="1"'), xf.format(f=4, i=0, a=' applyFont="1"')]
    return (
        f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<styleSheet {_NS}>'
        '<fonts count="5"><font><sz val="11"/><name val="Calibri"/></font>'
        '<font><b/><sz val="14"/><name val="Calibri"/></font>'
        '<font><b/><sz val="11"/><name val="Calibri"/></font>'
        '<font><u/><sz val="11"/><color rgb="FF0563C1"/><name val="Calibri"/></font>'
        '<font><i/><sz val="10"/><color rgb="FF595959"/><name val="Calibri"/></font></fonts>'
        f'<fills count="{len(FILLS) + 2}"><fill><patternFill patternType="none"/></fill>'
        f'<fill><patternFill patternType="gray125"/></fill>{fills}</fills>'
        '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
        '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
        f'<cellXfs count="{len(xfs)}">{"".join(xfs)}</cellXfs>'
        '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
        "</styleSheet>"
    )


class Book:
    """Worksheets in order, defined names, and `save` to one .xlsx zip."""

    def __init__(self) -> None:
        self.sheets: list[XSheet] = []
        self.names: dict[str, str] = {}

    def sheet(self, title: str) -> XSheet:
        ws = XSheet(title)
        self.sheets.append(ws)
        return ws

    def define(self, name: str, ref: str) -> None:
        self.names[name] = ref

    def save(self, path: str | Path, compresslevel: int = 1) -> None:
        n = len(self.sheets)
        ct = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/styles.xml" ContentType="application/'
            'vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
            + "".join(
                f'<Override PartName="/xl/worksheets/sheet{i + 1}.xml" ContentType="application/'
                'vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
                for i in range(n)
            )
            + "</Types>"
        )
        rels = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            f'<Relationship Id="rId1" Type="{_REL}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
        )
        wb_rels = (
            '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            + "".join(
                f'<Relationship Id="rId{i + 1}" Type="{_REL}/worksheet" Target="worksheets/sheet{i + 1}.xml"/>'
                for i in range(n)
            )
            + f'<Relationship Id="rId{n + 1}" Type="{_REL}/styles" Target="styles.xml"/></Relationships>'
        )
        sheets = "".join(
            f'<sheet name={quoteattr(ws.title)} sheetId="{i + 1}" r:id="rId{i + 1}"/>'
            for i, ws in enumerate(self.sheets)
        )
        names = "".join(f"<definedName name={quoteattr(k)}>{escape(v)}</definedName>" for k, v in self.names.items())
        wb = (
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<workbook {_NS} {_NS_R}>'
            f"<sheets>{sheets}</sheets>"
            + (f"<definedNames>{names}</definedNames>" if names else "")
            + '<calcPr calcId="191029" fullCalcOnLoad="1"/></workbook>'
        )
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=compresslevel) as z:
            z.writestr("[Content_Types].xml", ct)
            z.writestr("_rels/.rels", rels)
            z.writestr("xl/workbook.xml", wb)
            z.writestr("xl/_rels/workbook.xml.rels", wb_rels)
            z.writestr("xl/styles.xml", _styles())
            for i, ws in enumerate(self.sheets):
                z.writestr(f"xl/worksheets/sheet{i + 1}.xml", ws.xml())
