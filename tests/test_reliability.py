"""The reliability catalogue: every bad input, corruption and interruption fedrank is known to
meet, each run through the CLI as a user would. An error ends in exactly one line
`fedrank: error: ...` with exit code 2 and changes nothing on disk; a recovery exits 0, says
what it did in a log line and ends with outputs that read back. No case leaves a temporary
file or an empty folder behind. `pytest tests/test_reliability.py -q` prints the count."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
import torch
import yaml

from bench.cli import main
from bench.io import TMP_MARK
from conftest import tiny_config
from test_ham10000 import make_ham
from test_isic2019 import make_isic, make_split

Setup = Callable[[Path, Path], list[str]]  # (empty case folder, a finished run to copy) -> argv; "{case}" in it: the case folder
TINY = tiny_config(train__rounds=2)
OTHER_SEED = "seed=1"


@dataclass
class Case:
    setup: Setup | list[str]
    error: str | None = None  # the one line's pattern; None: the command recovers (exit 0)
    log: str | None = None  # what a recovery says it did
    check: Callable[[Path, Path], None] | None = None  # the state after the command (case folder, the finished run)


# ---- setups -----------------------------------------------------------------------------------
def set_options(sets: tuple[str, ...] | list[str]) -> list[str]:
    return [option for assignment in sets for option in ("--set", assignment)]


def resolved(*sets: str) -> list[str]:
    """`fedrank run --print-config` with these overrides: the config is checked, nothing runs."""
    return ["run", "--print-config", *set_options(sets)]


def run(*sets: str, out: str = "run", cfg: dict = TINY) -> Setup:
    """`fedrank run` of the tiny config with overrides into <case>/<out>."""

    def argv(tmp: Path, finished: Path) -> list[str]:
        return ["run", "--quiet", "--config-json", json.dumps(cfg), "--out", str(tmp / out), *set_options(sets)]

    return argv


def then(prepare: Callable[[Path], object], command: Setup) -> Setup:
    """`prepare(<case folder>)`, then `command`."""

    def argv(tmp: Path, finished: Path) -> list[str]:
        prepare(tmp)
        return command(tmp, finished)

    return argv


def finished_run(*damage: Callable[[Path], object], command: Setup = run()) -> Setup:
    """A copy of a finished run (checkpoint kept) at <case>/run, damaged, then `command`."""

    def argv(tmp: Path, finished: Path) -> list[str]:
        shutil.copytree(finished, tmp / "run")
        for hurt in damage:
            hurt(tmp / "run")
        return command(tmp, finished)

    return argv


def remove(*names: str) -> Callable[[Path], None]:
    return lambda folder: [(folder / name).unlink() for name in names]


def truncate(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes((folder / name).read_bytes()[: (folder / name).stat().st_size // 2])


def scramble(name: str, data: bytes = bytes(range(256)) * 8) -> Callable[[Path], None]:
    return lambda folder: (folder / name).write_bytes(data)


KILLED = remove("run.json", "metrics.parquet", "diagnostics.parquet")  # what a run killed after its last checkpoint leaves
FINISHED = remove("checkpoint.pt")  # what a finished run leaves


def write(name: str, content: str | bytes | Callable[[Path], object]) -> Callable[[Path], Path]:
    """Write a file under the case folder (text, bytes, or a torch object saved by `content(path)`)."""

    def make(tmp: Path) -> Path:
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            content(path)
        return path

    return make


def config_file(content: str | bytes) -> Setup:
    """`fedrank run --print-config` of a config file with this content."""
    return then(write("c.yaml", content), lambda tmp, finished: ["run", "--print-config", "--config", str(tmp / "c.yaml")])


def weights(content: bytes | Callable[[Path], object], *model: str) -> Setup:
    """A run of the tiny config (or `model` overrides) with this weights file."""
    return then(write("w.pt", content), run(*model, "model.weights={case}/w.pt"))


def state_of(arch: str) -> Callable[[Path], None]:
    import timm

    return lambda path: torch.save(timm.create_model(arch).state_dict(), path)


def small_cnn_state(**options) -> Callable[[Path], None]:
    from bench.models import build_model, resolve_model_config

    return lambda path: torch.save(build_model(resolve_model_config({"name": "small_cnn", **options}), 4, 3, 8).state_dict(), path)


def edit_csv(name: str, edit: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    """Rewrite the lines of a dataset CSV (header first) under <case>/data."""

    def change(tmp: Path) -> None:
        path = tmp / "data" / name
        path.write_bytes("\n".join(edit(path.read_bytes().decode("utf-8-sig").splitlines())).encode() + b"\n")

    return change


def prepare_data(*edits: Callable[[Path], object], dataset: str = "ham10000", sets: tuple[str, ...] = ()) -> Setup:
    """`fedrank data prepare` of a generated HAM10000 (or ISIC 2019) folder after `edits`."""

    def argv(tmp: Path, finished: Path) -> list[str]:
        (make_ham if dataset == "ham10000" else make_isic)(tmp / "data")
        for edit in edits:
            edit(tmp)
        return ["data", "prepare", dataset, "--root", str(tmp / "data"), *set_options([f"data.cache_dir={tmp / 'cache'}", "data.image_size=8", *sets])]

    return argv


def prepared_twice(*damage: Callable[[Path], object], dataset: str = "ham10000") -> Setup:
    """A dataset prepared once, its cache damaged, then prepared again."""

    def argv(tmp: Path, finished: Path) -> list[str]:
        command = prepare_data(dataset=dataset)(tmp, finished)
        assert main(command) == 0
        for hurt in damage:
            hurt(tmp)
        return command

    return argv


def cache_file(pattern: str) -> Callable[[Path], None]:
    return lambda tmp: next((tmp / "cache").glob(pattern)).write_bytes(b"")


def workflow(config: dict, *args: str) -> Setup:
    return then(write("workflow.yaml", yaml.safe_dump(config)), lambda tmp, finished: ["plan", str(tmp / "workflow.yaml"), *args])


def study(**top) -> dict:
    return {"studies": {"s": {"datasets": ["synthetic"], "methods": ["fedavg"]}}, **top}


def no_runs(tmp: Path) -> Path:
    (tmp / "runs").mkdir()
    return tmp / "runs"


def runs_folder(tmp: Path, damage: Callable[[Path], object] = lambda folder: None) -> Path:
    from bench.stats.synthetic import write_study

    (path,) = write_study(tmp / "runs", {"method": ["fedavg"], "seed": [0], "train.rounds": [2]})
    damage(path.parent)
    return tmp / "runs"


def stats(*args: str, runs: Callable[[Path], Path] = runs_folder) -> Setup:
    return lambda tmp, finished: ["stats", "--quiet", "--runs", str(runs(tmp)), "--out", str(tmp / "out"), *args]


def failed_run(*sets: str) -> Callable[[Path], object]:
    """A run of these overrides recorded as failed under the workflow (bad input found at run time) at <case>/run."""
    return lambda tmp: main([*run(*sets)(tmp, tmp), "--attempt", "1/3"])


def metrics_table(edit: Callable[[object], object]) -> Callable[[Path], None]:
    """Rewrite a run folder's metrics.parquet with `edit(table)`, keeping its Arrow schema."""
    import pyarrow.parquet as pq

    def change(folder: Path) -> None:
        path = folder / "metrics.parquet"
        pq.write_table(edit(pq.read_table(path)), path)

    return change


def as_run(other: str) -> Callable[[object], object]:
    """A metrics table relabelled as another run's rows."""
    import pyarrow as pa

    return lambda table: table.set_column(0, "run_id", pa.array([other] * table.num_rows).dictionary_encode().cast(table.schema.field("run_id").type))


def before_round(last: int) -> Callable[[object], object]:
    import pyarrow.compute as pc

    return lambda table: table.filter(pc.less(table["round"], last))


def doubled_values(table):
    import pyarrow.compute as pc

    return table.set_column(table.schema.get_field_index("value"), "value", pc.multiply(table["value"], 2.0))


def data_root_after_set(tmp: Path, finished: Path) -> list[str]:
    """`fedrank data prepare ham10000 --root R --set data=ham10000 ...`: the --set replaces the data section."""
    make_ham(tmp / "data")
    return ["data", "prepare", "ham10000", "--root", str(tmp / "data"), *set_options(["data=ham10000", f"data.cache_dir={tmp / 'cache'}", "data.image_size=8"])]


# ---- checks ---------------------------------------------------------------------------------------
def no_checkpoint_left(tmp: Path, finished: Path) -> None:
    assert not (tmp / "run" / "checkpoint.pt").exists() and json.loads((tmp / "run" / "run.json").read_text())["status"] == "completed"


def same_as_uninterrupted(tmp: Path, finished: Path) -> None:
    """The redone (or resumed) run ends with exactly the metrics of the uninterrupted one."""
    no_checkpoint_left(tmp, finished)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp / "run" / "metrics.parquet"), pd.read_parquet(finished / "metrics.parquet"), check_exact=True)
    pd.read_parquet(tmp / "run" / "diagnostics.parquet")


def report_written(tmp: Path, finished: Path) -> None:
    assert len(pd.read_parquet(tmp / "out" / "results.parquet")) > 0


# ---- the catalogue --------------------------------------------------------------------------------
CASES: dict[str, Case] = {
    # run configs: keys, bounds, types, YAML
    "config: value out of bounds": Case(resolved("partition.beta=-1"), r"config key 'partition.beta'"),
    "config: unknown key": Case(resolved("train.lr_stepp=3"), r"config key 'train'.*valid keys"),
    "config: unknown method": Case(resolved("method=nope"), r"unknown method 'nope'"),
    "config: method name with a typo": Case(resolved("method=fedprx"), r"unknown method 'fedprx' \(did you mean fedprox"),
    "config: a method that needs a public split, without one": Case(resolved("method=feddf"), r"method feddf needs a public split .*\(.*feddf.*\)"),
    "config: unknown client architecture": Case(resolved("method=fedmd", "data.public_fraction=0.1", "method.architectures=[nope]"),
                                                r"method fedmd gives client 0 a model it cannot build: config key 'model.name': unknown model 'nope'"),
    "config: unknown method hyper-parameter": Case(resolved("method.tau=5"), r"config key 'method'.*'tau' was unexpected"),
    "config: unknown dataset": Case(resolved("data=nope"), r"unknown dataset 'nope'"),
    "config: unknown model": Case(resolved("model=nope"), r"unknown model 'nope'"),
    "config: unknown timm model": Case(resolved("model=timm:not_a_model"), r"timm has no model 'not_a_model'"),
    "config: dataset without its root": Case(resolved("data=ham10000"), r"config key 'data.root'"),
    "config: data root that does not exist": Case(resolved("data=ham10000", "data.root=/nonexistent/ham"), r"/nonexistent/ham does not exist"),
    "config: weights file that does not exist": Case(resolved("model.weights=/nonexistent/w.pth"), r"never downloads"),
    "config: NaN learning rate": Case(resolved("train.lr=.nan"), r"config key 'train.lr': nan is not a finite number"),
    "config: NaN temperature": Case(resolved("method=fedlsc", "method.tau=.nan"), r"config key 'method.tau': nan is not a finite"),
    "config: infinite temperature": Case(resolved("method=fedlsc", "method.tau=.inf"), r"config key 'method.tau': inf is not a finite"),
    "config: NaN in --config-json": Case(["run", "--print-config", "--config-json", '{"train": {"lr": NaN}}'], r"config key 'train.lr': nan is not a finite"),
    "config: 1e10 read as text by YAML": Case(resolved("train.lr=1e10"), r"config key 'train.lr'.*write 10000000000\.0"),
    "config: 1e3 rounds read as text by YAML": Case(resolved("train.rounds=1e3"), r"config key 'train.rounds'.*write 1000\)"),
    "config: a section set to a number": Case(resolved("train=5"), r"config key 'train': 5 is not of type 'object'"),
    "config: a value used as a section": Case(resolved("seed=1", "seed.x=1"), r"config key 'seed.x': 'seed' is a value"),
    "config: --set without =": Case(resolved("seed"), r"expected key=value"),
    "config: --set value that is not YAML": Case(resolved("train.lr=[1"), r"--set 'train.lr=\[1': the value is not valid YAML"),
    "config: --set value with a repeated key": Case(resolved("train={lr: 1, lr: 2}"), r"key 'lr' is given twice"),
    "config: unknown device": Case(resolved("runtime.device=tpu"), r"config key 'runtime.device'"),
    "config file: missing": Case(["run", "--config", "{case}/missing.yaml"], r"missing.yaml not found"),
    "config file: not YAML": Case(config_file("train: [1\n"), r"c.yaml line 2 is not valid YAML"),
    "config file: random bytes": Case(config_file(bytes(range(256))), r"c.yaml is not valid YAML"),
    "config file: a list, not a mapping": Case(config_file("- 1\n"), r"must hold a mapping"),
    "config file: a key given twice": Case(config_file("train:\n  lr: 0.1\n  lr: 0.2\n"), r"c.yaml line 3 is not valid YAML: fix it \(key 'lr' is given twice in one mapping"),
    "--config-json: not JSON": Case(["run", "--config-json", "{oops"], r"--config-json is not valid JSON"),
    "--config-json: not an object": Case(["run", "--config-json", "[1]"], r"must be a JSON object"),
    "--attempt: malformed": Case(["run", "--print-config", "--attempt", "1-3"], r"--attempt '1-3': expected N/M"),
    # runs: where they write, on what, with which weights
    "run: --out is a file": Case(then(write("afile", "x"), run(out="afile")), r"output folder .*afile: .*afile is a file, not a folder"),
    "run: --out under a file": Case(then(write("afile", "x"), run(out="afile/run")), r"output folder .*afile/run: .*afile is a file, not a folder"),
    "run: --out not writable": Case(run(out="/proc/fedrank-test/run"), r"output folder /proc/fedrank-test/run: cannot write in /proc"),
    "run: CUDA device this machine lacks": Case(run(f"runtime.device=cuda:{torch.cuda.device_count()}"), r"config key 'runtime.device': cuda:\d+ is not available here"),
    "run: too many clients for the data": Case(run("partition.clients=40"), r"config key 'partition.clients'"),
    "run: --out name too long for the filesystem": Case(run(out="x" * 300), r"output folder .*: the name 'x+\.\.\.' has 300 bytes, more than the \d+"),
    "run: participation count above the client count": Case(run("train.participation=5"), r"config key 'train.participation': 5 clients per round, but the partition has 3"),
    "run: a grouped test share the split cannot honour": Case(run("data.test_fraction=0.97"), r"config key 'data.test_fraction': 0.97 cannot be honoured .*choose 0.5 \(1 in 2\)"),
    "run: validation leaves a client one training image": Case(run("partition.scheme=fixed", "partition.samples_per_client=4", "partition.min_samples=1", "partition.local_test_fraction=0.5",
                                                                   "partition.val_fraction=0.5"), r"partition: client\(s\) 0 \(1\), .* keep fewer than 2 training images"),
    "run: FedPer keeping every layer personal": Case(run("method=fedper", "method.layers=3"), r"config key 'method.layers': 3 personalization layers, but this model has 3 weight layers"),
    "run: a method that needs a public split, without one": Case(run("method=fedmd"), r"method fedmd needs a public split"),
    "run: a public split too small to hold an image": Case(run("method=fedmd", "data.public_fraction=0.001"), r"method fedmd needs a public split, but data.public_fraction=0.001 leaves it empty"),
    "run: stale lock of a killed run": Case(then(write("run/run.lock", "host gone pid 4194304\n"), run()), log=r"recovered the lock of host gone pid 4194304, which no longer runs",
                                            check=same_as_uninterrupted),
    "run: a failed run of another config in the folder": Case(then(failed_run("partition.clients=40"), run()), log=r"replacing the failed run synthetic-fedavg-s0-\w+ of another configuration",
                                                              check=same_as_uninterrupted),
    "weights: random bytes": Case(weights(bytes(range(256)) * 4), r"w.pt is not a readable weights file \(UnpicklingError\)"),
    "weights: empty file": Case(weights(b""), r"w.pt is not a readable weights file \(EOFError\)"),
    "weights: no state dict": Case(weights(lambda path: torch.save([1, 2], path)), r"w.pt holds no state dict"),
    "weights: small_cnn of other widths": Case(weights(small_cnn_state(widths=[4, 8])), r"does not fit this model \(\d+ mis-shaped key\(s\): body.0.weight"),
    "weights: timm file of another architecture": Case(weights(state_of("test_efficientnet"), "model=timm:test_resnet"),
                                                        r"does not fit this model \(\d+ missing key\(s\): .*; \d+ unexpected key\(s\): "),
    # run folders: finished, killed, damaged, foreign
    "finished run: checkpoint left behind": Case(finished_run(), log=r"removing the checkpoint of the finished run", check=no_checkpoint_left),
    "finished run: metrics.parquet deleted": Case(finished_run(FINISHED, remove("metrics.parquet")), log=r"metrics.parquet is missing: running it again", check=same_as_uninterrupted),
    "finished run: metrics.parquet corrupt": Case(finished_run(FINISHED, scramble("metrics.parquet")), log=r"metrics.parquet is unreadable", check=same_as_uninterrupted),
    "finished run: diagnostics.parquet truncated": Case(finished_run(FINISHED, truncate("diagnostics.parquet")), log=r"diagnostics.parquet is unreadable", check=same_as_uninterrupted),
    "finished run: metrics deleted, checkpoint kept": Case(finished_run(remove("metrics.parquet")), log=r"metrics.parquet is missing", check=same_as_uninterrupted),
    "finished run: run.json truncated": Case(finished_run(FINISHED, truncate("run.json")), log=r"run.json is unreadable \(JSONDecodeError\)", check=same_as_uninterrupted),
    "finished run: metrics.parquet of another run": Case(finished_run(FINISHED, metrics_table(as_run("synthetic-fedavg-s1-0000000000"))),
                                                         log=r"run.json says completed but its metrics.parquet holds the rows of run synthetic-fedavg-s1-0000000000: running it again",
                                                         check=same_as_uninterrupted),
    "finished run: metrics.parquet without its last round": Case(finished_run(FINISHED, metrics_table(before_round(2))), log=r"lacks round\(s\) 2: running it again",
                                                                 check=same_as_uninterrupted),
    "finished run: another config into its folder": Case(finished_run(command=run(OTHER_SEED)), r"holds run synthetic-fedavg-s0-\w+ of another configuration"),
    "finished run: another config, under the workflow": Case(finished_run(command=lambda tmp, f: [*run(OTHER_SEED)(tmp, f), "--attempt", "1/3"]), r"of another configuration"),
    "killed run: checkpoint truncated": Case(finished_run(KILLED, truncate("checkpoint.pt")), log=r"checkpoint .* is unreadable .*restarts from round 1", check=same_as_uninterrupted),
    "killed run: checkpoint of random bytes": Case(finished_run(KILLED, scramble("checkpoint.pt")), log=r"is unreadable .*restarts from round 1", check=same_as_uninterrupted),
    "killed run: checkpoint empty": Case(finished_run(KILLED, scramble("checkpoint.pt", b"")), log=r"is unreadable .*restarts from round 1", check=same_as_uninterrupted),
    "killed run: checkpoint of another config": Case(finished_run(KILLED, command=run(OTHER_SEED)), r"checkpoint.pt belongs to a different configuration"),
    # datasets: label files and the decode cache
    "data: metadata CSV missing": Case(prepare_data(lambda tmp: (tmp / "data" / "HAM10000_metadata.csv").unlink()), r"HAM10000_metadata.csv not found"),
    "data: metadata CSV with a header only": Case(prepare_data(edit_csv("HAM10000_metadata.csv", lambda lines: lines[:1])), r"HAM10000_metadata.csv has a header but no rows"),
    "data: a column missing": Case(prepare_data(edit_csv("HAM10000_metadata.csv", lambda lines: [lines[0].replace("dx,", "diagnosis,", 1), *lines[1:]])), r"missing column\(s\) \['dx'\]"),
    "data: a label outside the classes": Case(prepare_data(edit_csv("HAM10000_metadata.csv", lambda lines: [*lines[:4], lines[4].replace(",df,", ",melanoma,"), *lines[5:]])), r"row 5: dx 'melanoma'"),
    "data: a row repeated": Case(prepare_data(edit_csv("HAM10000_metadata.csv", lambda lines: [*lines, lines[3]])), r"rows 4, 23 all list image_id ISIC_0024308 \(1 image"),
    "data: an image listed with two labels": Case(prepare_data(edit_csv("HAM10000_metadata.csv", lambda lines: [*lines, lines[3].replace(",bkl,", ",mel,")])), r"rows 4, 23 all list image_id ISIC_0024308"),
    "data: an image listed with two lesions": Case(prepare_data(edit_csv("HAM10000_metadata.csv", lambda lines: [*lines, lines[3].replace("HAM_0000001", "HAM_0000099")])), r"rows 4, 23 all list image_id"),
    "data: an image listed with and without extension": Case(prepare_data(edit_csv("HAM10000_metadata.csv", lambda lines: [*lines, lines[3].replace("ISIC_0024308,", "ISIC_0024308.jpg,")])), r"rows 4, 23 all list image_id ISIC_0024308"),
    "data: an image in two centres": Case(prepare_data(write("data/HAM10000_metadata_dataverse.csv", "image_id,dataset\nISIC_0024306,rosendahl\nISIC_0024306,vidir_modern\n")), r"dataverse.csv rows 2, 3 all list image_id ISIC_0024306"),
    "data: images missing": Case(prepare_data(lambda tmp: next((tmp / "data").glob("*/ISIC_0024310.jpg")).unlink()), r"1 image\(s\) listed in HAM10000_metadata.csv are missing"),
    "data: an image that does not decode": Case(prepare_data(lambda tmp: next((tmp / "data").glob("*/ISIC_0024310.jpg")).write_bytes(b"not a jpeg")), r"cannot decode image .*ISIC_0024310.jpg"),
    "data: ISIC one-hot row with two labels": Case(prepare_data(edit_csv("ISIC_2019_Training_GroundTruth.csv", lambda lines: [*lines[:5], lines[5].split(",")[0] + ",1,1,0,0,0,0,0,0,0", *lines[6:]]), dataset="isic2019"),
                                                   r"row 6 \(image ISIC_0000004\): 2 labels set"),
    "data: ISIC ground truth row repeated": Case(prepare_data(edit_csv("ISIC_2019_Training_GroundTruth.csv", lambda lines: [*lines, lines[2]]), dataset="isic2019"), r"GroundTruth.csv rows 3, 26 all list image ISIC_0000001"),
    "data: ISIC image with two lesions": Case(prepare_data(edit_csv("ISIC_2019_Training_Metadata.csv", lambda lines: [*lines, lines[2].replace("IL_0000000", "IL_0000042")]), dataset="isic2019"), r"Metadata.csv rows 3, 26 all list image ISIC_0000001"),
    "data: FLamby split listing an image twice": Case(prepare_data(lambda tmp: make_split(tmp / "split.csv"), edit_csv("../split.csv", lambda lines: [*lines, lines[1]]), dataset="isic2019",
                                                          sets=("data.sites_file={case}/split.csv",)),
                                                      r"split.csv rows 2, 25 all list image ISIC_0000000"),
    "data: FLamby split naming none of the images": Case(prepare_data(write("split.csv", "image,center,fold\nISIC_9999999,1,train\n"), dataset="isic2019", sets=("data.sites_file={case}/split.csv",)),
                                                          r"isic2019: no images left to load from data.root"),
    "data: --set data=NAME with --root": Case(data_root_after_set, log=r"ham10000 ready: 21 images"),
    "data: empty cache array": Case(prepared_twice(cache_file("*.npy")), log=r"cache .*\.npy is unreadable .*rebuilding it"),
    "data: empty cache manifest": Case(prepared_twice(cache_file("ham10000-*.json")), log=r"cache .*\.npy is unreadable .*rebuilding it"),
    "data: empty source index": Case(prepared_twice(cache_file("sources/*.json")), log=r"checksumming 21 source file"),
    # statistics and reports
    "report: results folder missing": Case(stats(runs=lambda tmp: tmp / "nowhere"), r"results folder .*nowhere not found"),
    "report: no runs in the results folder": Case(stats(runs=no_runs), r"no run records in"),
    "report: a named run.json or folder that does not exist": Case(lambda tmp, finished: ["stats", "--quiet", str(tmp / "nowhere"), "--out", str(tmp / "out")],
                                                                   r"nowhere does not exist; name run.json files or run folders, or pass --runs DIR"),
    "report: a bad statistics setting": Case(stats("--set", "alpha=3"), r"stats.alpha"),
    "report: study manifest missing": Case(stats("--studies", "{case}/nowhere.csv"), r"study manifest .*nowhere.csv not found"),
    "report: unknown headline metric": Case(stats("--set", "metric=auc"), r"stats.metric 'auc' is not in the runs' metrics"),
    "report: a run without metrics.parquet": Case(stats(runs=lambda tmp: runs_folder(tmp, remove("metrics.parquet"))), log=r"runs/[\w-]+/metrics.parquet: missing; its run has no metrics",
                                                  check=report_written),
    "report: a run with a corrupt run.json": Case(stats(runs=lambda tmp: runs_folder(tmp, truncate("run.json"))), r"no run records in"),
    "report: a run with another run's metrics.parquet": Case(stats(runs=lambda tmp: runs_folder(tmp, metrics_table(as_run("synthetic-fedavg-s1-0000000000")))),
                                                             log=r"run [\w-]+ .*: its metrics.parquet holds the rows of run synthetic-fedavg-s1-0000000000; its metrics are not scored",
                                                             check=report_written),
    "report: a run whose metrics.parquet lacks its last round": Case(stats(runs=lambda tmp: runs_folder(tmp, metrics_table(before_round(2)))),
                                                                     log=r"it completed 2 rounds \(evaluated every 1\) but its metrics.parquet lacks round\(s\) 2; its metrics are not scored",
                                                                     check=report_written),
    "report: a run whose metrics.parquet was changed": Case(stats(runs=lambda tmp: runs_folder(tmp, metrics_table(doubled_values))),
                                                            log=r"its metrics.parquet is not the file its run.json recorded \(SHA-256 differs\)", check=report_written),
    # workflow configs: what reaches shell commands
    "workflow: results folder with ;": Case(workflow(study(results="runs;touch pwned;")), r"config key 'results': 'runs;touch pwned;' does not match"),
    "workflow: results folder with $()": Case(workflow(study(results="runs$(touch pwned)")), r"config key 'results'.*no shell characters"),
    "workflow: results folder with backticks": Case(workflow(study(results="runs`touch pwned`")), r"config key 'results'"),
    "workflow: reports folder with ;": Case(workflow(study(reports="reports; touch pwned")), r"config key 'reports'"),
    "workflow: dataset named with $()": Case(workflow({"datasets": {"x$(touch pwned)": {"data": {"name": "synthetic"}}}, **study()}), r"config key 'datasets': 'x\$\(touch pwned\)' does not match"),
    "workflow: study dataset with backticks": Case(workflow({"studies": {"s": {"datasets": ["`touch pwned`"]}}}), r"config key 'studies.s.datasets.0'"),
    "workflow: a key given twice": Case(then(write("w.yaml", "seeds: 1\nseeds: 2\nstudies: {s: {datasets: [synthetic]}}\n"), lambda tmp, f: ["plan", str(tmp / "w.yaml")]), r"line 2 .*key 'seeds' is given twice"),
    "workflow: unknown study selected": Case(workflow(study(run_studies=["nope"])), r"config key 'run_studies': unknown study 'nope'"),
    "workflow: NaN in a grid": Case(workflow({"studies": {"s": {"datasets": ["synthetic"], "methods": ["fedlsc"], "grid": {"method.tau": [float("nan")]}}}}),
                                    r"config key 'studies.s.grid.method.tau.0': nan is not a finite"),
    "workflow: method name with a typo": Case(workflow({"studies": {"s": {"datasets": ["synthetic"], "methods": ["fedprx"]}}}), r"unknown method 'fedprx' \(did you mean fedprox"),
    "workflow: methods that need a public split, without one": Case(workflow({"studies": {"s": {"datasets": ["synthetic"], "methods": "all"}}}),
                                                                    r"studies.s \(synthetic, \w+\): method \w+ needs a public split .*leave out the methods that need it"),
    "workflow: results folder not writable": Case(workflow(study(results="/proc/fedrank-test/runs")), r"config key 'results': /proc/fedrank-test/runs: cannot write in /proc"),
    "workflow: --config-of an unknown run": Case(workflow(study(), "--config-of", "nope"), r"--config-of 'nope': no such run"),
}


# ---- the test -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny run with its checkpoint kept, copied by the cases that need a run folder."""
    folder = tmp_path_factory.mktemp("finished") / "run"
    assert main(run("runtime.keep_checkpoint=true")(folder.parent, folder)) == 0
    return folder


def tree(root: Path) -> dict[str, tuple[int, int] | None]:
    """Every file (size, mtime) and folder (None) under `root`, but the decode cache's checksum
    index: a complete record of the source files, kept even when decoding them fails."""
    paths = [p for p in root.rglob("*") if p.relative_to(root).parts[:2] not in (("cache",), ("cache", "sources"))]
    return {str(p.relative_to(root)): None if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns) for p in paths}


def leftovers(root: Path) -> list[str]:
    """Temporaries and empty folders: what an interrupted or failed command must not leave."""
    return [str(p) for p in root.rglob("*") if TMP_MARK in p.name or p.name.startswith(".fedrank-") or (p.is_dir() and not any(p.iterdir()))]


@pytest.mark.parametrize("name", CASES)
def test_reliability_case(name, finished, tmp_path, monkeypatch, capsys, caplog):
    case = CASES[name]
    monkeypatch.chdir(tmp_path)  # anything written by relative default paths stays in the case folder
    argv = case.setup(tmp_path, finished) if callable(case.setup) else case.setup
    argv = [a.replace("{case}", str(tmp_path)) for a in argv]
    before, empty_before = tree(tmp_path), leftovers(tmp_path)
    capsys.readouterr()
    caplog.clear()
    caplog.set_level(logging.INFO)
    code = main(argv)
    err = capsys.readouterr().err
    if case.error:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("fedrank: error: "), err
        assert re.search(case.error, lines[0]), lines[0]
        assert tree(tmp_path) == before, "an error must leave the files as they were"
        assert not re.search(r"round \d+/\d+", caplog.text), "bad input must stop before training"
    else:
        assert code == 0 and not err.strip(), err
        assert re.search(case.log, caplog.text), caplog.text
    if case.check:
        case.check(tmp_path, finished)
    assert leftovers(tmp_path) == empty_before


# ---- interruptions, concurrency and what a run records ---------------------------------------------
HOLD_LOCK = "import sys; from pathlib import Path; from bench.engine.lock import run_folder_lock\n" \
            "with run_folder_lock(Path(sys.argv[1])):\n    print('held', flush=True); sys.stdin.read()"


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fedrank: error: "), lines
    return lines[0]


def test_a_folder_held_by_a_live_process_stops_a_second_run_naming_the_holder(tmp_path, capsys):
    import socket
    import subprocess
    import sys

    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(tmp_path)
        assert main(run(OTHER_SEED)(tmp_path, tmp_path)) == 2
        line = one_error_line(capsys)
        assert f"is in use by a run of host {socket.gethostname()} pid {holder.pid}" in line
        assert tree(tmp_path) == before
        assert main([*run(OTHER_SEED)(tmp_path, tmp_path), "--attempt", "3/3"]) == 2  # not recorded as the run's failure
        assert tree(tmp_path) == before
    finally:
        holder.communicate("")
    assert not (folder / "run.lock").exists()


def test_two_runs_started_at_once_on_one_folder_leave_exactly_one_run(tmp_path):
    """Different configs into one --out at the same moment: one runs, the other stops with one line
    (the folder in use, or holding the other's finished run), never both reporting success."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    procs = [subprocess.Popen([sys.executable, "-m", "bench", *run(f"seed={seed}")(tmp_path, tmp_path)[:-2], "--out", str(out), "--set", f"seed={seed}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}) for seed in (0, 1)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    (winner,) = [seed for seed, (code, _) in enumerate(results) if code == 0]
    (err,) = [err for code, err in results if code == 2]
    assert re.search(r"fedrank: error: .*(is in use by a run of host \S+ pid \d+|holds run \S+ of another configuration)", err.strip().splitlines()[-1]), err
    assert json.loads((out / "run.json").read_text())["seed"] == winner
    assert pd.read_parquet(out / "metrics.parquet")["run_id"].eq(json.loads((out / "run.json").read_text())["run_id"]).all()


def stop_in_round(monkeypatch, round: int, error: BaseException | None) -> None:
    """From round `round` on, checkpoints are written to /dev/full (a real ENOSPC, as on a full
    disk) when `error` is None; else `error` is raised as the round starts (Ctrl-C)."""
    import bench.engine.run as engine_run
    import bench.io

    if error is None:
        if not Path("/dev/full").exists():
            pytest.skip("no /dev/full on this machine to fill a disk with")
        checkpoints = iter(range(1, 1000))

        def full_from_round(path, mode="r", *args, **kwargs):
            if "checkpoint.pt" in str(path) and next(checkpoints) >= round:
                path = "/dev/full"
            return open(path, mode, *args, **kwargs)

        monkeypatch.setattr(bench.io, "open", full_from_round, raising=False)
        return
    real_play = engine_run.play_round

    def play(exp, progress, *beat):
        if exp.fed.round == round:
            raise error
        return real_play(exp, progress, *beat)

    monkeypatch.setattr(engine_run, "play_round", play)


@pytest.mark.parametrize("error, code, message", [
    (None, 2, r"no space left on /\S* \(No space left on device\) while writing .*; free space and rerun the same command to resume from round 2"),
    (KeyboardInterrupt(), 130, r"interrupted: .* keeps its checkpoint; run the same command again to resume from round 2"),
])
def test_a_full_disk_or_ctrl_c_stops_in_one_line_and_the_same_command_resumes(error, code, message, finished, tmp_path, monkeypatch, capsys):
    command = run()(tmp_path, finished)
    with monkeypatch.context() as patch:
        stop_in_round(patch, 2, error)
        assert main([*command, "--attempt", "3/3"]) == code  # the workflow's last attempt does not record it as failed
    assert re.search(message, one_error_line(capsys))
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt"]  # round 1's checkpoint, nothing half-written
    assert main(command) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumed_from_round"] == 2
    same_as_uninterrupted(tmp_path, finished)


def test_a_finished_run_records_the_sha256_of_its_metrics(finished):
    from bench.io import file_sha256

    assert json.loads((finished / "run.json").read_text())["metrics_sha256"] == file_sha256(finished / "metrics.parquet")


def test_16_bit_greyscale_is_scaled_to_8_bits_and_32_bit_pixels_are_refused(tmp_path):
    import numpy as np
    from PIL import Image

    from bench.data.preprocess import decode_image, fingerprint_file
    from bench.errors import UserError

    ramp = np.repeat(np.linspace(0, 65535, 64).astype(np.uint16)[None], 64, axis=0)
    Image.fromarray(ramp).save(tmp_path / "ramp16.png")
    pixels = decode_image(str(tmp_path / "ramp16.png"), 8)
    assert pixels.shape == (3, 8, 8) and pixels.min() < 32 and pixels.max() > 223 and abs(pixels.mean() - 127.5) < 8  # a ramp, not white
    Image.fromarray(np.full((8, 8), 65535, dtype=np.uint16)).save(tmp_path / "white16.png")
    Image.fromarray(np.full((8, 8), 0, dtype=np.uint16)).save(tmp_path / "black16.png")
    hashes = [fingerprint_file(str(tmp_path / name), perceptual=True)[1] for name in ("ramp16.png", "white16.png")]
    assert (hashes[0] != hashes[1]).any()  # not all near-duplicates of a white image
    assert decode_image(str(tmp_path / "black16.png"), 8).max() == 0 and decode_image(str(tmp_path / "white16.png"), 8).min() == 255
    Image.fromarray(np.ones((8, 8), dtype=np.float32)).save(tmp_path / "float.tif")
    with pytest.raises(UserError, match=r"image .*float.tif has F mode pixels"):
        decode_image(str(tmp_path / "float.tif"), 8)


def test_every_requirement_a_method_declares_is_defined_and_checked():
    from bench.methods import registry
    from bench.methods.requirements import REQUIREMENTS

    declared = {key for cls in registry().values() for key in cls.requires}
    assert declared and declared <= set(REQUIREMENTS)


def test_the_default_workflow_profile_reruns_incomplete_jobs_and_the_readme_says_so():
    """A Snakemake killed with -9 leaves incomplete outputs; runs resume from their checkpoints, so
    rerunning them is safe, and a plain rerun must not stop with IncompleteFilesException."""
    from conftest import REPO

    assert yaml.safe_load((REPO / "profiles" / "default" / "config.yaml").read_text())["rerun-incomplete"] is True
    robustness = (REPO / "README.md").read_text().split("**Robustness.**")[1].split("\n\n")[0]
    assert "--rerun-incomplete" in robustness and "flock" in robustness


def test_the_workflow_start_finds_untrusted_runs_and_rechecks_only_what_changed(finished, tmp_path, monkeypatch):
    """`bench.verified`: a run whose outputs do not verify loses its run.json (so Snakemake reruns
    it); a run that verified is remembered by its files' size and mtime, and re-read only once
    one of them changes."""
    import bench.verified as verified

    results = tmp_path / "runs"
    for name in ("good", "cut", "gone", "failed"):
        shutil.copytree(finished, results / name)
    (results / "cut" / "metrics.parquet").write_bytes((finished / "metrics.parquet").read_bytes()[:-100])
    (results / "gone" / "diagnostics.parquet").unlink()
    (results / "failed" / "run.json").write_text(json.dumps({"status": "failed"}))
    (results / "unrun").mkdir()
    names = ["good", "cut", "gone", "failed", "unrun"]
    assert verified.untrusted_runs(results, names) == {
        "cut": "run.json says completed but metrics.parquet is unreadable (ArrowInvalid)",
        "gone": "run.json says completed but diagnostics.parquet is missing"}
    checked, check = [], verified.run_problem
    monkeypatch.setattr(verified, "run_problem", lambda folder: checked.append(folder.name) or check(folder))
    assert verified.untrusted_runs(results, names).keys() == {"cut", "gone"} and checked == ["cut", "gone"]  # good and failed remembered
    checked.clear()
    (results / "good" / "metrics.parquet").write_bytes((results / "good" / "metrics.parquet").read_bytes())
    os.utime(results / "good" / "metrics.parquet", ns=(1, 1))
    assert verified.untrusted_runs(results, ["good"]) == {} and checked == ["good"]
    monkeypatch.undo()
    assert verified.reject_untrusted(results, names) == ["cut", "gone"]
    assert not (results / "cut" / "run.json").exists() and (results / "good" / "run.json").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MB tmpfs mounted for the test, to fill for real (needs the right to mount: root)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(disk)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({mounted.stderr.strip() or mounted.returncode}); the /dev/full case covers a full disk")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill_up(disk: Path) -> Path:
    filler = disk / "filler"
    with open(filler, "wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass
    return filler


@pytest.mark.parametrize("fills_before, then", [("play_round", "resume from round 2"), ("write_outputs", r"write its outputs \(every round is trained\)")])
def test_a_disk_that_really_fills_stops_in_one_line_and_the_run_resumes_once_space_is_freed(fills_before, then, finished, small_disk, monkeypatch, capsys):
    """On a real filesystem, filled up at round 2 or just before the final outputs: one line,
    the last checkpoint kept, nothing half-written; freeing space and rerunning ends as if never stopped."""
    import bench.engine.run as engine_run

    command, filled = run()(small_disk, finished), []
    real = getattr(engine_run, fills_before)

    def filling(*args):
        if not filled and (fills_before == "write_outputs" or args[0].fed.round == 2):
            filled.append(fill_up(small_disk))
        return real(*args)

    with monkeypatch.context() as patch:
        patch.setattr(engine_run, fills_before, filling)
        assert main([*command, "--attempt", "3/3"]) == 2
    assert re.search(rf"no space left on {small_disk} .*; free space and rerun the same command to {then}$", one_error_line(capsys))
    assert sorted(p.name for p in (small_disk / "run").iterdir()) == ["checkpoint.pt"]
    filled[0].unlink()
    assert main(command) == 0
    same_as_uninterrupted(small_disk, finished)


def test_a_report_of_a_named_results_folder_or_run_folder_reads_their_runs(tmp_path):
    """`fedrank report DIR` is what people type for `--runs DIR`: a results folder's runs, or a run folder's one."""
    runs = runs_folder(tmp_path)
    (run_dir,) = runs.iterdir()
    for given in (runs, run_dir):
        assert main(["stats", "--quiet", str(given), "--out", str(tmp_path / "out")]) == 0
        assert set(pd.read_parquet(tmp_path / "out" / "results.parquet")["run_id"]) == {run_dir.name}
