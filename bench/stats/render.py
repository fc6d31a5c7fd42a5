"""Write a table three ways: CSV (the numbers), Markdown and LaTeX booktabs (for reading).

A `Table` carries its numbers (`data`, written to CSV unrounded) and its reading form
(`display`: formatted text, the same rows in the same order), optionally split into sections
(one per setting, say) and with cells to set in bold (the best of a column).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bench.io import write_csv, write_text

LATEX_SYMBOLS = {"β": r"$\beta$", "τ": r"$\tau$", "μ": r"$\mu$", "≥": r"$\geq$", "≤": r"$\leq$", "±": r"$\pm$", "–": "--", "—": "---", "×": r"$\times$"}
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}"}


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    section: str | None = None  # a display column whose value heads a section instead of a column
    bold: pd.DataFrame | None = None  # same shape as display: True where the cell is set in bold
    notes: list[str] = field(default_factory=list)


def fmt(value, digits: int = 2, percent: bool = False) -> str:
    """A number for reading: '81.23' (percent scale) or '0.8123'; '–' when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{100 * value:.{digits}f}" if percent else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def fmt_ci(mean, low, high, percent: bool = True, digits: int = 2) -> str:
    """'81.23 [80.10, 82.30]'; the mean alone when there is no interval."""
    text = fmt(mean, digits, percent)
    if pd.isna(low) or pd.isna(high):
        return text
    return f"{text} [{fmt(low, digits, percent)}, {fmt(high, digits, percent)}]"


def fmt_p(p) -> str:
    if pd.isna(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def sections(table: Table) -> list[tuple[str | None, pd.DataFrame, pd.DataFrame | None]]:
    """(heading, display rows, bold rows) per section, in row order."""
    if table.section is None:
        return [(None, table.display, table.bold)]
    out = []
    for heading in table.display[table.section].drop_duplicates():
        rows = table.display[table.section] == heading
        out.append((heading, table.display[rows].drop(columns=table.section), None if table.bold is None else table.bold[rows].drop(columns=table.section)))
    return out


def markdown(table: Table) -> str:
    lines = [f"## {table.title}", ""]
    for heading, rows, bold in sections(table):
        if heading is not None:
            lines += [f"**{heading}**", ""]
        lines.append("| " + " | ".join(map(str, rows.columns)) + " |")
        lines.append("|" + "---|" * len(rows.columns))
        for i in range(len(rows)):
            cells = [str(v).replace("|", "\\|") for v in rows.iloc[i]]
            if bold is not None:
                cells = [f"**{c}**" if b else c for c, b in zip(cells, bold.iloc[i])]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [f"_{note}_" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def latex_text(value) -> str:
    text = "".join(LATEX_SPECIAL.get(ch, ch) for ch in str(value))
    return "".join(LATEX_SYMBOLS.get(ch, ch) for ch in text)


def latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); sections become spanning rows."""
    parts = sections(table)
    columns = parts[0][1].columns
    lines = [f"% {table.title} (fedrank)", r"\begin{tabular}{" + "l" * len(columns) + "}", r"\toprule",
             " & ".join(latex_text(c) for c in columns) + r" \\", r"\midrule"]
    for index, (heading, rows, bold) in enumerate(parts):
        if heading is not None:
            if index:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{len(columns)}}}{{l}}{{\emph{{{latex_text(heading)}}}}} \\")
        for i in range(len(rows)):
            cells = [latex_text(v) for v in rows.iloc[i]]
            if bold is not None:
                cells = [rf"\textbf{{{c}}}" if b else c for c, b in zip(cells, bold.iloc[i])]
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def write_table(table: Table, folder: Path) -> list[Path]:
    """tables/<name>.csv, .md and .tex, each written atomically."""
    paths = [folder / f"{table.name}.{ext}" for ext in ("csv", "md", "tex")]
    write_csv(paths[0], table.data)
    write_text(paths[1], markdown(table))
    write_text(paths[2], latex(table))
    return paths
