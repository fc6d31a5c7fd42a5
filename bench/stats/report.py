"""Write the outputs of `fedrank stats | tables | plots | rank | report` into one folder.

    <out>/results.parquet/           the tidy table (study x run x round x scope, a column per
                                     metric): one Parquet file per study x dataset x method
    <out>/stats/*.parquet, *.json    every statistic, unrounded (summaries, paired tests, ...)
    <out>/tables/<name>.csv|md|tex   the paper's tables and the leaderboard
    <out>/figures/<kind>/...png|pdf  every figure
    <out>/results.md, results.csv, convergence.png   the report a reader opens first
    <out>/report.json                what was read, skipped and written, with which settings,
                                     and the caption of every table and figure

What was read of each run is kept in the user's cache, one folder per output folder
($FEDRANK_CACHE_DIR/reports/<hash of <out>>, bench.stats.run_cache): a refresh reads only the
runs added or changed since. Not under <out>: a command that fails leaves its output folder as it
was, and the report's folder holds the report only.

Every file is written atomically. report.json remembers what each part wrote, so a rerun that
no longer produces a file (a sweep left the results, say) deletes it instead of leaving a stale
figure that looks current; files fedrank did not write are never touched.
"""

from __future__ import annotations

import base64
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from html import escape
from pathlib import Path

import bench
from bench.io import write_csv, write_json, write_parquet, write_text
from bench.stats.analysis import Analysis, analyse
from bench.stats.captions import intervals_rule
from bench.stats.collect import load_results
from bench.stats.render import Table, html, markdown, plural, write_table
from bench.stats.selection import rule_text
from bench.stats.summaries import summary_metrics
from bench.stats.tables import all_tables, leaderboard_table, main_comparison, noted, pairwise_table
from bench.stats.tidy import write_tidy_folder

log = logging.getLogger(__name__)
MANIFEST = "report.json"


def run_cache_folder(out: Path) -> Path:
    """Where the per-run summaries of the reports written to `out` are kept."""
    import hashlib

    from bench.plan_cache import cache_root

    return cache_root() / "reports" / hashlib.sha256(str(out.resolve()).encode()).hexdigest()[:16]


def load(source: Path | list[Path], settings: dict, studies: Path | None, progress: bool = True, cache: Path | None = None) -> Analysis:
    """Collect the runs (reading only those `cache` lacks) and compute every statistic."""
    results = load_results(source, settings, studies, progress, cache)
    log.info("%d runs (%s) in %d settings, %d methods", results.runs["run_id"].nunique(),
             ", ".join(f"{n} {s}" for s, n in results.runs.drop_duplicates("run_id")["status"].value_counts().items()),
             results.runs[["study", "setting"]].drop_duplicates().shape[0], len(results.methods))
    return analyse(results, settings)


# ---- parts ----------------------------------------------------------------------------------
def write_stats(analysis: Analysis, out: Path) -> dict[Path, str]:
    """The tidy table and every statistic as Parquet (lists of seeds as text); no captions."""
    folder = out / "stats"
    paths, rows = write_tidy_folder(out / "results.parquet", analysis.results)
    log.info("tidy results table: %d files under %s, %d rows written now", len(paths), out / "results.parquet", rows)
    frames = {
        "summary": analysis.summary, "paired": analysis.paired, "rounds_to_target": analysis.rounds_to_target,
        "run_targets": analysis.targets, "communication": analysis.mb_per_round, "leaderboard": analysis.ranking.leaderboard,
        "pairwise": analysis.ranking.pairwise, "block_scores": analysis.ranking.scores.reset_index(), "block_ranks": analysis.ranking.ranks.reset_index(),
        "control": analysis.ranking.control, "power": analysis.power,
    }
    for name, frame in frames.items():
        paths.append(folder / f"{name}.parquet")
        write_parquet(paths[-1], frame.reset_index(drop=True))
    paths.append(folder / "friedman.json")
    write_json(paths[-1], {**analysis.ranking.friedman, "notes": analysis.ranking.notes})
    return dict.fromkeys(paths, "")


def write_tables(tables: list[Table], out: Path) -> dict[Path, str]:
    return {path: caption for table in tables for path, caption in write_table(table, out / "tables").items()}


def write_figures(analysis: Analysis, out: Path, progress: bool = True, only: tuple[str, ...] | None = None) -> dict[Path, str]:
    from bench.stats.figures import all_figures

    return all_figures(analysis, out / "figures", progress, only)


def write_front_page(analysis: Analysis, out: Path, written: dict[str, dict[Path, str]]) -> dict[Path, str]:
    """results.md (the report), results.csv (per setting and method) and convergence.png."""
    from bench.stats.figures import style
    from bench.stats.figures.curves import convergence_overview

    summary = main_comparison(analysis, summary_metrics(analysis.settings))[0]
    write_csv(out / "results.csv", summary.data)
    write_text(out / "results.md", front_page(analysis, summary, written, out))
    caption = (f"Results per setting and method, the numbers of the report's front page (results.md): {summary.caption.split('. ', 1)[1]} "
               "In the CSV: for each metric its mean, ci_low, ci_high and n (fractions 0-1), and the runs by status.")
    paths = {out / "results.csv": caption, out / "results.md": "The report's front page: notes, leaderboard, results per setting, links."}
    with style.figure_style():
        paths.update(convergence_overview(analysis, style.MethodStyle(analysis.results, analysis.settings["paper_names"]), out / "convergence.png"))
    figures = {**written.get("figures", {}), **written.get("rank_figures", {}), **paths}
    shown = [(path, figures[path]) for path in (out / "figures" / "cd_diagram.png", out / "convergence.png") if path in figures]
    write_text(out / FRONT_HTML, front_html(analysis, summary, shown))
    paths[out / FRONT_HTML] = ("The first page of the results: what was run, the leaderboard (its notes: the tests and their rules), the "
                               "critical-difference diagram, the convergence overview and the results per setting (results.md as a page).")
    return paths


FRONT_HTML = "front.html"  # embedded in the HTML report's first page by workflows/report/workflow.rst
# Snakemake's first page centres a narrow description (max-w-lg) vertically: a long one would be
# cut off at the top, out of reach. Top-aligned and wide enough for the leaderboard instead.
FRONT_STYLE = ("<style>.h-screen.overflow-auto.items-center{align-items:flex-start}.prose.max-w-lg{max-width:64rem}"
               "table.fedrank{font-size:0.8rem}table.fedrank td,table.fedrank th{padding:0.15rem 0.4rem}</style>")


def front_html(analysis: Analysis, summary: Table, figures: list[tuple[Path, str]]) -> str:
    """The HTML report's first page: the leaderboard as a table, the CD diagram and the convergence
    overview (images inlined: the report is one self-contained file), then the results per setting."""
    parts = [FRONT_STYLE, *(f"<p>{escape(line).replace('**', '')}</p>" for line in headline(analysis))]
    board = leaderboard_table(analysis)
    parts += [html(board[0])] if board else ["<p>Nothing to rank: no method has a completed run in a shared block.</p>"]
    for path, caption in figures:
        data = base64.b64encode(path.read_bytes()).decode()
        parts.append(f'<figure><img src="data:image/png;base64,{data}" style="max-width:100%" alt="{escape(path.name)}">'
                     f"<figcaption><small>{escape(caption)}</small></figcaption></figure>")
    parts.append(html(summary).replace(escape(summary.title), "Results per setting", 1))
    return "\n".join(parts) + "\n"


def headline(analysis: Analysis) -> list[str]:
    """What was run and how it is scored: the first lines of both front pages."""
    results, settings = analysis.results, analysis.settings
    runs = results.runs.drop_duplicates("run_id")
    return [
        f"{plural(len(runs), 'run')} ({', '.join(f'{n} {s}' for s, n in runs['status'].value_counts().items())}) in "
        f"{plural(len(results.runs[['study', 'setting']].drop_duplicates()), 'setting')} of "
        f"{plural(results.runs['study'].nunique(), 'study', 'studies')}; {plural(len(results.methods), 'method')}. "
        f"fedrank {bench.__version__}.",
        f"Headline metric: **{settings['metric']}** at {rule_text(settings)} (stats.selection={settings['selection']}); intervals: {intervals_rule(settings)}; "
        f"alpha = {settings['alpha']:g}.",
    ]


def front_page(analysis: Analysis, summary: Table, written: dict[str, dict[Path, str]], out: Path) -> str:
    results = analysis.results
    lines = ["# fedrank report", "", *[part for line in headline(analysis) for part in (line, "")]]
    notes = results.problems + analysis.notes + analysis.ranking.notes
    if notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    lines.append(markdown(leaderboard_table(analysis)[0]) if not analysis.ranking.leaderboard.empty else "")
    lines.append(markdown(summary).replace(f"## {summary.title}", "## Results per setting", 1))
    files = sorted(p.relative_to(out) for part in ("tables", "figures") for p in written.get(part, []) if p.suffix in (".md", ".png"))
    if files:
        lines += ["## Tables and figures", "", *file_links(files), ""]
    return "\n".join(lines)


def file_links(files: list[Path], most: int = 8) -> list[str]:
    """Markdown links to each file; a folder of more than `most` files is one link with a count."""
    folders: dict[str, list[Path]] = {}
    for path in files:
        folders.setdefault(path.parent.as_posix(), []).append(path)
    links = []
    for folder, paths in folders.items():
        if len(paths) > most and folder not in (".", "tables", "figures"):
            links.append(f"- [{folder}/]({folder}/) ({len(paths)} files, e.g. [{paths[0].name}]({paths[0].as_posix()}))")
        else:
            links += [f"- [{p.as_posix()}]({p.as_posix()})" for p in paths]
    return links


# ---- bookkeeping ----------------------------------------------------------------------------
def previous_outputs(out: Path) -> dict:
    try:
        return json.loads((out / MANIFEST).read_text()).get("outputs", {})
    except (OSError, json.JSONDecodeError):
        return {}


def captions(out: Path, analysis: Analysis, written: dict[str, dict[Path, str]]) -> dict[str, str]:
    """Relative path -> caption (ending with the runs' protocol) of every table and figure."""
    from bench.stats.captions import protocol

    text = protocol(analysis.results, analysis.settings)
    return {path.relative_to(out).as_posix(): f"{caption} {text}" for part in written.values() for path, caption in part.items() if caption}


def record(out: Path, analysis: Analysis, written: dict[str, dict[Path, str]], source, studies: Path | None) -> Path:
    """report.json: inputs, settings, problems, timings, every file written per part and every
    caption; files a part wrote last time but not now are deleted (stale)."""
    outputs = previous_outputs(out)
    for part, paths in written.items():
        now = {p.relative_to(out).as_posix() for p in paths}
        for stale in set(outputs.get(part, [])) - now:
            if not (out / stale).is_dir():  # results.parquet was a file before it was a folder
                (out / stale).unlink(missing_ok=True)
                log.info("removed stale %s", stale)
        outputs[part] = sorted(now)
    runs = analysis.results.runs.drop_duplicates("run_id")
    manifest = {
        "fedrank": bench.__version__,
        "source": [str(p) for p in source] if isinstance(source, list) else str(source),
        "studies": str(studies) if studies else None,
        "runs": {str(k): int(v) for k, v in runs["status"].value_counts().items()},
        "missing_runs": analysis.results.missing.to_dict("records"),
        "problems": analysis.results.problems,
        "references": analysis.references,
        "settings": analysis.settings,
        "timings_s": {k: round(v, 3) for k, v in analysis.timings.items()},
        "outputs": outputs,
        "captions": captions(out, analysis, written),
    }
    write_json(out / MANIFEST, manifest)
    return out / MANIFEST


def produce(source, out: Path, settings: dict, studies: Path | None, parts: tuple[str, ...], progress: bool = True) -> dict[str, dict[Path, str]]:
    """Run the pipeline for the requested parts; returns the files written per part."""
    analysis = load(source, settings, studies, progress, run_cache_folder(out))
    written = write_outputs(analysis, out, parts, progress)
    record(out, analysis, written, source, studies)
    if "rank" in parts:
        print_leaderboard(analysis)
    return written


def write_outputs(analysis: Analysis, out: Path, parts: tuple[str, ...], progress: bool = True) -> dict[str, dict[Path, str]]:
    """Every output `parts` asks for; the Parquet files are written in a background thread
    (Arrow releases the GIL) while the tables and figures are made."""
    with ThreadPoolExecutor(1) as background:
        stats = background.submit(write_stats, analysis, out) if "stats" in parts else None
        written = write_readable(analysis, out, parts, progress)
        if stats is not None:
            written["stats"] = stats.result()
    return written


def write_readable(analysis: Analysis, out: Path, parts: tuple[str, ...], progress: bool) -> dict[str, dict[Path, str]]:
    """Tables, figures and the front page, as far as `parts` asks for them."""
    written: dict[str, dict[Path, str]] = {}
    if "tables" in parts:
        written["tables"] = write_tables(all_tables(analysis), out)
    elif "rank" in parts:
        written["rank_tables"] = write_tables(noted(leaderboard_table(analysis) + pairwise_table(analysis), analysis.settings), out)
    if "figures" in parts:
        written["figures"] = write_figures(analysis, out, progress)
    elif "rank" in parts:
        written["rank_figures"] = write_figures(analysis, out, progress, only=("cd_diagram",))
    if "report" in parts:
        written["report"] = write_front_page(analysis, out, written)
    return written


def print_leaderboard(analysis: Analysis) -> None:
    tables = leaderboard_table(analysis)
    if tables:
        print(markdown(tables[0]))

