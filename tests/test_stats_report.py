"""`fedrank report | stats | tables | plots | rank` end to end on synthetic studies."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.stats.synthetic import PAPER_GRID_METHODS, write_study

QUICK = ["--quiet", "--set", "bootstrap.resamples=999", "--set", "figures.formats=[png, pdf]"]


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """Two datasets, a beta sweep, a tau sweep, a failed and a diverged run, a foreign folder,
    and a study manifest in which one run belongs to two studies."""
    root = tmp_path_factory.mktemp("study")
    runs, members = root / "runs", []
    common = {"train.rounds": [8], "seed": [0, 1, 2]}
    for name, grid, fates in (
        ("main", {**common, "data.name": ["ham10000", "isic2019"], "method": PAPER_GRID_METHODS}, {"failed": 0.05, "diverged": 0.05}),
        ("beta", {**common, "data.name": ["ham10000"], "partition.beta": [0.1, 0.5], "method": PAPER_GRID_METHODS}, {}),
        ("tau", {**common, "data.name": ["ham10000"], "method": ["fedavg", "fedprox", *({"name": "fedlsc", "tau": t} for t in (0.1, 0.2, 1.0))]}, {}),
    ):
        members += [(name, p.parent.name) for p in write_study(runs, grid, **fates)]
    (runs / "killed").mkdir()
    with open(root / "studies.csv", "w", newline="") as f:
        csv.writer(f).writerows([("study", "run_id"), *members])
    return root


def report(*args: str) -> int:
    return main([*args[:1], *QUICK, *args[1:]])


def test_report_writes_every_table_and_figure(study, tmp_path):
    out = tmp_path / "reports"
    assert report("report", "--runs", str(study / "runs"), "--studies", str(study / "studies.csv"), "--out", str(out), "--set", "metric=balanced_accuracy",
                  "--set", "targets.ham10000.value=0.7", "--set", "targets.isic2019.value=0.7") == 0
    for name in ("main_comparison", "communication", "significance", "ablation_beta", "ablation_dataset", "sensitivity_fedlsc_tau",
                 "sensitivity_fedlsc_per", "leaderboard", "pairwise", "control", "power", "runs"):
        for ext in ("csv", "html", "md", "tex"):
            assert (out / "tables" / f"{name}.{ext}").stat().st_size > 100, f"{name}.{ext}"
    tex = (out / "tables" / "main_comparison.tex").read_text()
    assert r"\toprule" in tex and r"\bottomrule" in tex and r"FedLSC Per=1\%" in tex and r"\textbf{" in tex
    assert not (out / "tables" / "ablation_clients.csv").exists()  # no clients sweep in these results
    figures = {p.relative_to(out / "figures").parts[0] for p in (out / "figures").rglob("*.png")}
    assert figures >= {"convergence", "rounds_to_target", "cd_diagram.png", "heatmap_beta", "heatmap_dataset", "sensitivity_fedlsc_tau.png",
                       "layer_similarity", "partitions"}
    assert len(list((out / "figures").rglob("*.pdf"))) == len(list((out / "figures").rglob("*.png")))
    assert (out / "convergence.png").stat().st_size > 20_000
    front = (out / "results.md").read_text()
    assert "## Leaderboard" in front and "killed: no run.json" in front and "| FedLSC Per=1% |" in front
    assert "| verdict vs FedAvg | p Holm vs FedAvg |" in front and "| control |" in front  # every method marked against the control
    assert "Student's t interval below" in front
    board_rows = [line for line in front.splitlines() if "| FedLSC Per=1% |" in line or "| FedAvg |" in line]
    assert any("| personal (mean over clients) |" in r for r in board_rows) and any("| global |" in r for r in board_rows)
    assert "1 settings" not in front and "1 studies" not in front
    table = pd.read_csv(out / "results.csv")
    assert {"study", "setting", "method", "label", "seeds", "completed", "failed", "accuracy", "accuracy_ci_low"} <= set(table.columns)
    tidy = pd.read_parquet(out / "results.parquet", columns=["study", "run_id", "status"])
    assert set(tidy["study"]) == {"main", "beta", "tau"} and "failed" in set(tidy["status"])
    manifest = json.loads((out / "report.json").read_text())
    assert manifest["settings"]["targets"]["ham10000"]["value"] == 0.7 and "tables/leaderboard.md" in manifest["outputs"]["tables"]
    paired = pd.read_parquet(out / "stats" / "paired.parquet")
    assert {"p_t_holm", "p_wilcoxon_holm", "effect_dz", "note"} <= set(paired.columns)
    assert paired["note"].str.contains("cannot go below 0.25").any()  # 3 seeds: said explicitly
    assert set(paired["ci_method"]) <= {"t", "n<2"}  # at most 3 seeds: too few for the bootstrap
    control = pd.read_parquet(out / "stats" / "control.parquet").set_index("method")
    board = pd.read_parquet(out / "stats" / "leaderboard.parquet")
    assert control.loc["FedAvg", "decision"] == "control" and set(control.index) == set(board["method"])
    assert set(control["decision"]) <= {"control", "better", "equivalent", "worse", "undecided"}
    np.testing.assert_allclose(control[["p_worse", "p_equivalent", "p_better"]].dropna().sum(axis=1), 1.0)
    power = pd.read_parquet(out / "stats" / "power.parquet")
    assert set(power["method"]) == set(board["method"]) - {"FedAvg"} and (power["alpha_holm"] == 0.05 / len(power)).all()

    # every table and figure has a caption saying what was computed; names safe for LaTeX and URLs
    captions = json.loads((out / "report.json").read_text())["captions"]
    shown = [p.relative_to(out).as_posix() for p in out.rglob("*") if p.suffix in (".csv", ".png") and "stats" not in p.parts]
    assert len(shown) > 20 and set(shown) <= set(captions)
    for path in shown:
        assert "Protocol: a global test set held out" in captions[path] and "3 seeds (0-2)" in captions[path], path
    curves = [text for path, text in captions.items() if path.startswith("figures/convergence/")]
    assert curves and all("balanced accuracy per communication round" in c and "Shaded: the 95% Student t interval over seeds (too few seeds for a bootstrap interval)" in c
                          for c in curves)
    assert "FedLSC Per=1%" in captions["tables/main_comparison.csv"] and "fedlsc (per=0.01)" not in captions["tables/main_comparison.csv"]
    assert captions["figures/sensitivity_fedlsc_tau.png"].startswith("Sensitivity of FedLSC to tau")
    for path in (out / "figures").rglob("*.*"):
        assert re.fullmatch(r"[A-Za-z0-9_-]+\.(png|pdf)", path.name), path.name  # safe in \includegraphics and in URLs


def test_reports_are_reproducible_and_stale_outputs_removed(study, tmp_path):
    out = tmp_path / "reports"
    args = ("tables", "--runs", str(study / "runs"), "--studies", str(study / "studies.csv"), "--out", str(out))
    assert report(*args) == 0
    first = pd.read_csv(out / "tables" / "significance.csv")
    assert report(*args) == 0
    pd.testing.assert_frame_equal(first, pd.read_csv(out / "tables" / "significance.csv"))
    (out / "tables" / "mine.md").write_text("not fedrank's")
    only_main = study / "main_only.csv"
    rows = [r for r in csv.reader(open(study / "studies.csv")) if r[0] in ("study", "main")]
    with open(only_main, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    assert report("tables", "--runs", str(study / "runs"), "--studies", str(only_main), "--out", str(out)) == 0
    assert not (out / "tables" / "ablation_beta.md").exists() and not (out / "tables" / "sensitivity_fedlsc_tau.csv").exists()
    assert (out / "tables" / "mine.md").exists() and (out / "tables" / "ablation_dataset.md").exists()


def test_rank_prints_the_leaderboard(study, tmp_path, capsys):
    out = tmp_path / "rank"
    assert report("rank", "--runs", str(study / "runs"), "--out", str(out), "--set", "metric=balanced_accuracy") == 0
    printed = capsys.readouterr().out
    assert "Leaderboard (balanced accuracy)" in printed and "Friedman chi2" in printed
    assert sorted(p.name for p in (out / "tables").iterdir()) == [f"{n}.{e}" for n in ("leaderboard", "pairwise") for e in ("csv", "html", "md", "tex")]
    assert (out / "figures" / "cd_diagram.png").is_file()


def test_a_single_method_without_references_or_targets_degrades_gracefully(tmp_path, caplog):
    write_study(tmp_path / "runs", {"data.name": ["msid"], "method": [{"name": "fedlsc", "tau": 0.5}], "seed": [0, 1], "train.rounds": [4]})
    out = tmp_path / "out"
    with caplog.at_level("INFO"):  # not --quiet: the skips are progress messages
        assert main(["report", *QUICK[1:], "--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    assert (out / "results.md").is_file() and (out / "tables" / "main_comparison.md").is_file() and (out / "convergence.png").is_file()
    assert not (out / "tables" / "significance.csv").exists() and not (out / "figures" / "cd_diagram.png").exists()
    assert "skipping tables/significance" in caplog.text and "no rounds_to_target" in caplog.text


@pytest.mark.parametrize("args, message", [
    (["--runs", "/nonexistent/runs"], "results folder /nonexistent/runs not found"),
    (["--set", "alpha=3"], "stats.alpha"),
    (["--stats-config", "/nonexistent.yaml"], "not found"),
    (["--studies", "/nonexistent.csv"], "study manifest"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, message):
    write_study(tmp_path / "runs", {"method": ["fedavg"], "seed": [0], "train.rounds": [2]})
    code = main(["stats", "--quiet", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("fedrank: error:") and message in err and "\n" not in err
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_an_empty_results_folder_is_an_error(tmp_path, capsys):
    (tmp_path / "runs").mkdir()
    assert main(["report", "--quiet", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    assert "no run records" in capsys.readouterr().err


def test_paper_methods_keep_their_colour_whatever_else_is_present(tmp_path):
    from bench.stats.collect import load_results
    from bench.stats.figures.style import PALETTE, MethodStyle
    from bench.stats.settings import resolve_stats

    settings = resolve_stats({})
    write_study(tmp_path / "a", {"method": PAPER_GRID_METHODS, "seed": [0], "train.rounds": [2]})
    write_study(tmp_path / "b", {"method": ["fedprox", *({"name": "fedlsc", "tau": t} for t in (0.1, 0.2, 1.0))], "seed": [0], "train.rounds": [2]})
    full = MethodStyle(load_results(tmp_path / "a", settings, progress=False), settings["paper_names"])
    sweep_results = load_results(tmp_path / "b", settings, progress=False)
    sweep = MethodStyle(sweep_results, settings["paper_names"])
    assert sweep.color("FedProx") == full.color("FedProx") and sweep.color("FedLSC Per=1%") == full.color("FedLSC Per=1%")
    colours = [sweep.color(m) for m in sweep_results.methods] + [full.color(m) for m in ("Local-only", "FedAvg", "FedLSC Per=0%", "FedAvg-FC", "FedProx-FC")]
    assert len(set(colours)) == len(colours) and set(colours) <= set(PALETTE)


def cielab(colour: str) -> np.ndarray:
    """sRGB hex -> CIELAB (D65), the textbook formulas."""
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    linear = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ linear / [0.95047, 1.0, 1.08883]
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_the_paper_methods_colours_are_far_apart():
    """Their convergence bands overlap: FedProx, FedProx-FC, FedLSC Per=1% and FedAvg-FC were four oranges and pinks."""
    from bench.stats.figures.style import PALETTE
    from bench.stats.settings import resolve_stats

    first = PALETTE[:len(resolve_stats({})["paper_names"])]
    assert min(np.linalg.norm(cielab(a) - cielab(b)) for a, b in itertools.combinations(first, 2)) >= 40


def test_latex_and_markdown_escape_what_they_must():
    from bench.stats.render import Table, latex, markdown

    table = Table("t", "T", pd.DataFrame(), pd.DataFrame({"method": ["FedLSC Per=1%"], "β": ["a|b_c & <0.001"]}))
    tex, md = latex(table), markdown(table)
    assert r"FedLSC Per=1\%" in tex and r"a|b\_c \& \textless{}0.001" in tex and r"$\beta$" in tex
    assert r"a\|b_c & <0.001" in md


def test_numeric_columns_are_right_aligned_and_the_header_says_what_a_row_is():
    from bench.stats.render import Table, latex, markdown

    display = pd.DataFrame({"method": ["FedAvg", "FedProx"], "accuracy": ["81.20 [80.10, 82.30]", "–"], "p": ["<0.001", "0.250"],
                            "MB": ["2.29", "12.5%"], "runs": ["3 completed", "2 completed, 1 failed"], "reached": ["2/3", "not reached (0/3)"]})
    tex = latex(Table("t", "T", pd.DataFrame(), display, about="One row per method."))
    assert "\\begin{tabular}{lrrrll}" in tex and tex.startswith("% T (fedrank)\n% One row per method.\n")
    assert "|---|---:|---:|---:|---|---|" in markdown(Table("t", "T", pd.DataFrame(), display))


def test_one_seed_has_no_bands_or_intervals_and_coinciding_curves_are_said_so(tmp_path):
    from bench.stats.synthetic import record_metrics_sha256

    paths = write_study(tmp_path / "runs", {"method": ["fedavg", "fedprox", "local"], "seed": [0], "train.rounds": [6]})
    by_method = {json.loads(p.read_text())["method"]["name"]: p.parent for p in paths}
    fedprox = pd.read_parquet(by_method["fedavg"] / "metrics.parquet").assign(run_id=by_method["fedprox"].name)  # FedProx's curve = FedAvg's
    fedprox.to_parquet(by_method["fedprox"] / "metrics.parquet", index=False)
    record_metrics_sha256(by_method["fedprox"] / "run.json")
    out = tmp_path / "out"
    assert report("report", "--runs", str(tmp_path / "runs"), "--out", str(out)) == 0
    captions = json.loads((out / "report.json").read_text())["captions"]
    (curve,) = [text for path, text in captions.items() if path.startswith("figures/convergence/") and path.endswith(".png")]
    assert "No bands: each method has a single completed seed" in curve and "bootstrap" not in curve
    assert "Curves that coincide (never more than a line width apart): FedAvg and FedProx" in curve
    assert "[no interval (one value per seed)]" in captions["tables/main_comparison.csv"]


def test_an_unknown_headline_metric_is_a_one_line_error(tmp_path, capsys):
    write_study(tmp_path / "runs", {"method": ["fedavg"], "seed": [0], "train.rounds": [2]})
    assert main(["tables", "--quiet", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--set", "metric=auc"]) == 2
    assert "stats.metric 'auc' is not in the runs' metrics; choose one of: accuracy" in capsys.readouterr().err


@pytest.mark.parametrize("status, stop", [("completed", None), ("failed", 0), ("diverged", 1)])
def test_a_report_group_of_one_run_whatever_its_fate(tmp_path, status, stop):
    # The workflow reports each study x dataset x setting group on its own: often one run.
    from bench.stats.synthetic import grid_configs, write_run

    path = write_run(tmp_path / "runs", grid_configs({"method": ["fedavg"], "seed": [0], "train.rounds": [2]})[0], status, stop)
    out = tmp_path / "out"
    assert main(["report", "--quiet", "--out", str(out), str(path)]) == 0
    table = pd.read_csv(out / "results.csv")
    assert table["statuses"].tolist() == [f"1 {status}"] and table["method"].tolist() == ["FedAvg"]
    caption = json.loads((out / "report.json").read_text())["captions"]["convergence.png"]  # always drawn: the HTML report shows it
    assert ("no completed run has an evaluated round" in caption) == (status != "completed")


def test_a_null_setting_value_is_a_column_of_its_own_in_ablations(tmp_path):
    """samples_per_client: null (as many as fit) is swept like any value, not shown as 'not run'."""
    from bench.stats.report import produce
    from bench.stats.settings import resolve_stats

    write_study(tmp_path / "runs", {"method": ["fedavg"], "seed": [0, 1], "partition.scheme": ["fixed"], "partition.samples_per_client": [25, None]})
    settings = resolve_stats({"sweeps": [{"key": "partition.samples_per_client", "name": "samples_per_client", "title": "images per client"}]})
    produce(tmp_path / "runs", tmp_path / "out", settings, None, ("tables",), progress=False)
    table = (tmp_path / "out" / "tables" / "ablation_samples_per_client.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| FedAvg"))
    assert "images per client=none" in table and "–" not in row


def test_a_change_of_scored_model_breaks_the_sensitivity_line():
    """FedLSC Per = 0 is scored on the global model, Per = 1% on the clients' own: not one curve."""
    import matplotlib.pyplot as plt

    from bench.stats.figures.curves import join_same_scope

    fig, ax = plt.subplots()
    join_same_scope(ax, np.arange(4), np.array([0.5, 0.6, 0.7, 0.8]), np.array(["global", "personal", "personal", "personal"]))
    drawn = [(list(line.get_xdata()), line.get_linestyle()) for line in ax.get_lines()]
    plt.close(fig)
    assert drawn == [([0], "-"), ([1, 2, 3], "--")]
