"""Write a table three ways: CSV (the numbers), Markdown and LaTeX booktabs (for reading).

A `Table` carries its numbers (`data`, written to CSV unrounded) and its reading form
(`display`: formatted text, the same rows in the same order), optionally split into sections
(one per setting, say) and with cells to set in bold (the best of a column).
"""

from __future__ import annotations

import math
import re
import textwrap
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from bench.io import write_csv, write_text

PERCENT_METRICS = ("accuracy", "balanced_accuracy", "precision", "recall", "f1")
LATEX_SYMBOLS = {"β": r"$\beta$", "τ": r"$\tau$", "μ": r"$\mu$", "≥": r"$\geq$", "≤": r"$\leq$", "±": r"$\pm$", "–": "--", "—": "---", "×": r"$\times$"}
LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                 "<": r"\textless{}", ">": r"\textgreater{}"}


def heading(study: str, setting: str) -> str:
    """How a setting is named in titles: 'main: ham10000, beta=0.5' (the study left out when all)."""
    return setting if study == "all" else f"{study}: {setting}"


def is_percent(metric: str) -> bool:
    """Shown in % (a derived score as its metric: worst_client_balanced_accuracy in %)."""
    from bench.stats.scores import base_metric

    metric = base_metric(metric)
    return metric in PERCENT_METRICS or metric.startswith(("recall/", "specificity/")) or metric == "melanoma_sensitivity"


@dataclass
class Table:
    name: str  # file stem under tables/
    title: str
    data: pd.DataFrame
    display: pd.DataFrame
    section: str | None = None  # a display column whose value heads a section instead of a column
    bold: pd.DataFrame | None = None  # same shape as display: True where the cell is set in bold
    notes: list[str] = field(default_factory=list)
    about: str = ""  # what one row and each column are, for the caption and the LaTeX header

    @property
    def caption(self) -> str:
        return " ".join([f"{self.title}.", self.about, *self.notes]).replace("  ", " ").strip()


def plural(count: int, noun: str, many: str | None = None) -> str:
    """'1 setting', '2 settings' (`many` for an irregular plural: plural(2, "study", "studies"))."""
    return f"{count} {noun if count == 1 else many or noun + 's'}"


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


def p_text(p) -> str:
    """'p = 0.050' or 'p < 0.001', for sentences."""
    shown = fmt_p(p)
    return f"p {shown[0]} {shown[1:]}" if shown.startswith("<") else f"p = {shown}"


@dataclass
class Section:
    heading: str | None
    columns: list[str]
    rows: list[list[str]]  # cell texts
    bold: list[list[bool]]


def sections(table: Table) -> list[Section]:
    """The table's rows as text, split into sections in row order (one if none)."""
    display = table.display.drop(columns=[table.section] if table.section else [])
    cells = display.astype(str).to_numpy().tolist()
    bold = (table.bold[display.columns].to_numpy(bool) if table.bold is not None else np.zeros(display.shape, bool)).tolist()
    if table.section is None:
        return [Section(None, list(display.columns), cells, bold)]
    groups = pd.Series(range(len(display))).groupby(table.display[table.section].to_numpy(), sort=False)
    return [Section(heading, list(display.columns), [cells[i] for i in index], [bold[i] for i in index]) for heading, index in groups]


NUMBER = re.compile(r"^[-–+<>≤≥~]?\s*[\d.,∞]+")


def numeric_columns(parts: list[Section]) -> list[bool]:
    """Per column: every filled cell starts with a number ('81.2 [80.1, 82.3]', '<0.001', '12%',
    '2/3') and holds no word: set right-aligned so that digits line up."""
    columns = len(parts[0].columns)
    cells = [[row[i] for part in parts for row in part.rows if row[i] not in ("–", "")] for i in range(columns)]
    return [bool(c) and all(NUMBER.match(x) and not re.search(r"[A-Za-z]{2,}", x) for x in c) for c in cells]


def markdown(table: Table) -> str:
    lines = [f"## {table.title}", ""]
    parts = sections(table)
    rule = "|" + "".join("---:|" if numeric else "---|" for numeric in numeric_columns(parts))
    for part in parts:
        if part.heading is not None:
            lines += [f"**{part.heading}**", ""]
        lines += ["| " + " | ".join(part.columns) + " |", rule]
        for cells, bold in zip(part.rows, part.bold):
            lines.append("| " + " | ".join(f"**{c}**" if b else c for c, b in zip((c.replace("|", "\\|") for c in cells), bold)) + " |")
        lines.append("")
    lines += [f"_{note}_" for note in table.notes]
    return "\n".join(lines).rstrip() + "\n"


def html(table: Table) -> str:
    """The table as an HTML fragment (escaped; numbers right-aligned), e.g. for the HTML report's first page."""
    parts = sections(table)
    align = ["right" if numeric else "left" for numeric in numeric_columns(parts)]
    out = [f"<h3>{escape(table.title)}</h3>"]
    for part in parts:
        if part.heading is not None:
            out.append(f"<p><b>{escape(str(part.heading))}</b></p>")
        head = "".join(f'<th style="text-align:{a}">{escape(c)}</th>' for c, a in zip(part.columns, align))
        body = "".join("<tr>" + "".join(f'<td style="text-align:{a}">{"<b>" + escape(c) + "</b>" if b else escape(c)}</td>'
                                        for c, b, a in zip(cells, bold, align)) + "</tr>" for cells, bold in zip(part.rows, part.bold))
        out.append(f'<table class="fedrank"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
    out += [f"<p><small>{escape(note)}</small></p>" for note in table.notes]
    return "\n".join(out) + "\n"


LATEX = str.maketrans({**LATEX_SPECIAL, **LATEX_SYMBOLS})


def latex_text(value) -> str:
    return str(value).translate(LATEX)


def latex(table: Table) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); sections become spanning rows."""
    parts = sections(table)
    width = len(parts[0].columns)
    align = "".join("r" if numeric else "l" for numeric in numeric_columns(parts))
    lines = [f"% {table.title} (fedrank)", *(f"% {line}" for line in textwrap.wrap(table.about, 96)),
             r"\begin{tabular}{" + align + "}", r"\toprule",
             " & ".join(latex_text(c) for c in parts[0].columns) + r" \\", r"\midrule"]
    for index, part in enumerate(parts):
        if part.heading is not None:
            if index:
                lines.append(r"\midrule")
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\emph{{{latex_text(part.heading)}}}}} \\")
        for cells, bold in zip(part.rows, part.bold):
            lines.append(" & ".join(rf"\textbf{{{c}}}" if b else c for c, b in zip(map(latex_text, cells), bold)) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    lines += [f"% {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


TABLE_STYLE = ("body{font-family:sans-serif;font-size:0.85rem}table{border-collapse:collapse}"
               "td,th{padding:0.2rem 0.5rem;border-bottom:1px solid #ddd;vertical-align:top}")


def html_page(table: Table) -> str:
    """The table as a page of its own: what a browser shows for it in the HTML report (it shows a CSV as nothing)."""
    return (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{escape(table.title)}</title><style>{TABLE_STYLE}</style></head>'
            f"<body>\n{html(table)}<p><small>{escape(table.about)}</small></p>\n</body></html>\n")


def write_table(table: Table, folder: Path) -> dict[Path, str]:
    """tables/<name>.csv, .md, .tex and .html, each written atomically; returns path -> caption."""
    paths = [folder / f"{table.name}.{ext}" for ext in ("csv", "md", "tex", "html")]
    write_csv(paths[0], table.data)
    write_text(paths[1], markdown(table))
    write_text(paths[2], latex(table))
    write_text(paths[3], html_page(table))
    return dict.fromkeys(paths, table.caption)
