"""HTML for notebooks: the tables and texts that objects show through `_repr_html_`.

Pure functions of their arguments; everything is escaped.

>>> "<caption>top cells</caption>" in table("top cells", ["cell", "score"], [["ln_f.var[5]", "-3.789"]])
True
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

__all__ = ["preformatted", "table"]

_STYLE = "border-collapse:collapse;font-family:monospace;font-size:12px"


def table(caption: str, header: Sequence[str], rows: Sequence[Sequence[Any]], note: str = "") -> str:
    """An HTML table: a caption, a header row, rows of cells (numbers right-aligned)."""
    def cell(v: Any, tag: str) -> str:
        align = "right" if isinstance(v, (int, float)) or _numeric(v) else "left"
        return f'<{tag} style="text-align:{align};padding:1px 6px">{html.escape(str(v))}</{tag}>'

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(v, "td") for v in row) + "</tr>" for row in rows)
    foot = f"<p style='font-size:11px'>{html.escape(note)}</p>" if note else ""
    return (f'<table class="dfgpt" style="{_STYLE}"><caption>{html.escape(caption)}</caption>'
            f'<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{foot}')


def preformatted(text: str) -> str:
    """A text (a summary, a receipt) as it prints in a terminal."""
    return f'<pre class="dfgpt" style="font-size:12px">{html.escape(text)}</pre>'


def _numeric(v: Any) -> bool:
    try:
        float(str(v).replace(",", ""))
    except ValueError:
        return False
    return True
