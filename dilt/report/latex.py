"""LaTeX helpers shared by every table: escaping, mean +- std cells, booktabs tables."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
            "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}",
            "^": r"\textasciicircum{}"}
_ESC_RE = re.compile("|".join(re.escape(k) for k in _ESCAPES))


def escape(text: object) -> str:
    """Escape LaTeX's special characters in ``text``."""
    return _ESC_RE.sub(lambda m: _ESCAPES[m.group(0)], str(text))


def mean_std(values: Iterable[float], scale: float = 100.0, digits: int = 1) -> str:
    """``mean \\pm std`` of ``values`` times ``scale`` (sample std, ddof=1; mean alone for one
    value; an en dash for none)."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=float) * scale
    if v.size == 0:
        return "--"
    if v.size == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} $\\pm$ {v.std(ddof=1):.{digits}f}"


def booktabs_table(df: pd.DataFrame, caption: str, label: str, *,
                   column_format: str | None = None, escape_cells: bool = True,
                   raw_columns: Sequence[str] = (), notes: str | None = None) -> str:
    """A complete ``table`` environment with booktabs rules.

    Headers and cells are escaped unless a column is listed in ``raw_columns`` (cells already
    written in LaTeX, such as :func:`mean_std` output) or ``escape_cells`` is False.
    """
    cols = list(df.columns)
    fmt = column_format or ("l" * 1 + "r" * (len(cols) - 1))
    head = " & ".join(escape(c) for c in cols) + r" \\"
    lines = [r"\begin{table}[t]", r"\centering", r"\small", rf"\caption{{{caption}}}",
             rf"\label{{{label}}}", rf"\begin{{tabular}}{{{fmt}}}", r"\toprule", head, r"\midrule"]
    for _, row in df.iterrows():
        cells = [str(row[c]) if (c in raw_columns or not escape_cells) else escape(row[c])
                 for c in cols]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if notes:
        lines.append(rf"\par\smallskip\footnotesize {notes}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def empty_table(caption: str, label: str, message: str) -> str:
    """A placeholder table that says plainly why there is no data (the suite ran no such job)."""
    return (r"\begin{table}[t]" "\n" r"\centering" "\n" rf"\caption{{{caption}}}" "\n"
            rf"\label{{{label}}}" "\n" rf"\emph{{{escape(message)}}}" "\n" r"\end{table}" "\n")
