"""What every method must do, as checks that name the hooks at fault (tests/test_conformance.py
runs them for every registered method; `fedrank check-method` for one):

- hyper-parameters: declared with `hparam`, in the schema, their defaults round-trip through JSON;
- runs: two rounds on `synthetic`, with full and with partial participation (some clients
  dropping out or straggling), complete with finite metrics in the headline scope;
- resume: a crash at round 2 resumes to bit-identical metrics (so the run is deterministic and
  all state lives where the engine checkpoints it);
- state: two rounds change the global state or some client's state;
- bytes: the bytes counted follow who took part; training rows only for reporting clients;
- learns: after `LEARNING_ROUNDS` rounds on an easy synthetic task the headline balanced
  accuracy beats chance by `LEARNING_MARGIN`, or the mean training loss falls by
  `LOSS_DROP`; a method not meant to learn there says why in its `not_learning` class variable.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import torch

from bench.engine.paths import RunPaths
from bench.testing import needs, tiny_config

PARTICIPATION = {
    # every client takes part
    "full": {},
    # 6 clients, half of them sampled per round, some dropping out or straggling
    "partial": {"partition__clients": 6, "partition__min_samples": 8, "train__participation": 0.5, "train__dropout": 0.25, "train__stragglers": 0.5},
}
LEARNING_ROUNDS = 4
LEARNING_MARGIN = 0.15  # over chance (1 / classes) in balanced accuracy
LOSS_DROP = 0.1  # or the last round's mean training loss is at least 10% below the first round's


class SimulatedFailure(RuntimeError):
    """The crash the resume check injects at the start of a round."""


def require(condition: bool, message: str) -> None:
    """A check's assertion (kept under `python -O`, unlike assert)."""
    if not condition:
        raise AssertionError(message)


def conformance_config(method: str, participation: str) -> dict:
    """Two short rounds on synthetic data, with a public split (for methods that distil on one) and
    what the method needs beyond that (`Method.test_setting`)."""
    return tiny_config(method=method, train__rounds=2, data__public_fraction=0.2, runtime__keep_checkpoint=True, **needs(method),
                       **PARTICIPATION[participation])


def learning_config(method: str) -> dict:
    """The easy task of the learning check: 3 clients of synthetic prototypes, a few rounds."""
    return tiny_config(method=method, train__rounds=LEARNING_ROUNDS, data__public_fraction=0.2, **needs(method))


# ---- checks ---------------------------------------------------------------------------------
def check_hyper_parameters_are_in_the_schema(name: str) -> None:
    from bench.methods import registry, resolve_method_config

    cls = registry()[name]
    resolved = resolve_method_config({"name": name})
    require(set(resolved) - {"name"} == set(cls.hparams()), f"{name}: the schema's keys differ from the declared hyper-parameters")
    require(cls(**{k: v for k, v in resolved.items() if k != "name"}).config() == resolved, f"{name}: defaults do not round-trip through JSON")
    for f in dataclasses.fields(cls):
        require(f.name in cls.hparams() or not f.init, f"{name}.{f.name}: a field set at construction must be declared with hparam()")
    require(bool(cls.summary()), f"{name}: the class docstring's first line is its summary in `fedrank methods`")


def check_run_completes(name: str, cfg: dict, folder: Path) -> dict:
    """Run `cfg` into `folder`: it completes, with finite metrics in its headline scope."""
    from bench.engine.run import execute

    record = execute(cfg, folder, show_progress=False)
    metrics = pd.read_parquet(RunPaths(folder).metrics)
    if record["status"] == "diverged":
        r = record["diverged_round"]
        train = metrics[(metrics["scope"] == "train") & (metrics["round"] == r)]["value"]
        culprit = "its training loss" if not train.map(math.isfinite).all() else "the aggregated state (or a state in fed.to_clients)"
        raise AssertionError(f"{name}: the run diverged in round {r}: {culprit} is not finite")
    require(record["status"] == "completed", f"{name}: the run ended {record['status']}")
    scored = metrics[metrics["scope"].isin(["global", "personal", "local"])]
    require(len(scored) > 0 and scored["value"].map(math.isfinite).all(), f"{name}: non-finite or no evaluation metrics")
    require(record["headline_scope"] in set(scored["scope"]), f"{name}: no metrics in its headline scope {record['headline_scope']}")
    return record


@contextlib.contextmanager
def crashing_at(round: int):
    """Make the round loop fail at the start of `round` (a node failure)."""
    import bench.engine.run as engine_run

    real = engine_run.play_round

    def crash(exp, progress, *beat):
        if exp.fed.round == round:
            raise SimulatedFailure("simulated node failure")
        return real(exp, progress, *beat)

    engine_run.play_round = crash
    try:
        yield
    finally:
        engine_run.play_round = real


def check_resume_is_exact(name: str, cfg: dict, straight: Path, folder: Path, crash_round: int = 2) -> dict:
    """Run `cfg` with a failure at the start of `crash_round`, restart it: it resumes there and ends
    with exactly the metrics of the straight run in `straight`. Returns the resumed run's record."""
    from bench.engine.run import execute

    paths = RunPaths(folder)
    with crashing_at(crash_round):
        try:
            execute(cfg, folder, show_progress=False)
        except SimulatedFailure:
            pass
        else:
            raise AssertionError(f"{name}: the run did not reach round {crash_round}")
    failed = json.loads(paths.record.read_text())
    require(failed["status"] == "failed" and "simulated node failure" in failed["error"], f"{name}: the failed run's record does not say so")
    require(paths.checkpoint.exists(), f"{name}: no checkpoint after round {crash_round - 1}")
    record = execute(cfg, folder, show_progress=False)
    require(record["status"] == "completed" and record["resumed_from_round"] == crash_round, f"{name}: the restart did not resume at round {crash_round}")
    try:
        pd.testing.assert_frame_equal(pd.read_parquet(RunPaths(straight).metrics), pd.read_parquet(paths.metrics), check_exact=True)
    except AssertionError as err:
        raise AssertionError(f"{name}: the resumed run's metrics differ from the straight run's "
                             f"(state outside fed.server / client.state / extra models, or an unseeded random draw): {str(err).splitlines()[0]}") from None
    return record


def check_state_changed(name: str, cfg: dict, folder: Path) -> None:
    from bench.engine.setup import build_experiment

    initial = build_experiment(cfg, torch.device("cpu")).fed.global_state
    saved = torch.load(RunPaths(folder).checkpoint, weights_only=True)
    moved = not torch.equal(saved["global_state"], initial) or bool(saved["to_clients"]) or any(state for state in saved["clients"])
    require(moved, f"{name}: two rounds changed neither the global state nor any client's state")


def check_bytes_follow_participation(name: str, folder: Path) -> None:
    paths = RunPaths(folder)
    metrics, diagnostics = pd.read_parquet(paths.metrics), pd.read_parquet(paths.diagnostics)
    record = json.loads(paths.record.read_text())
    comm = metrics[metrics["scope"] == "comm"].pivot(index="round", columns="metric", values="value")
    require(bool((comm["bytes"] == comm["bytes_down"] + comm["bytes_up"]).all() and (comm >= 0).all().all()), f"{name}: negative bytes or down + up != total")
    require(record["communication"]["sent_bytes"] == comm["bytes"].sum(), f"{name}: the record's sent bytes differ from the metrics'")
    took_part = diagnostics[diagnostics["name"] == "participation/took_part"].groupby("round")["value"].sum()
    reported = diagnostics[diagnostics["name"] == "participation/reported"]
    require(bool((comm["clients"] == reported.groupby("round")["value"].sum()).all()), f"{name}: the clients counted differ from those that reported")
    require(bool((comm.loc[took_part.index[took_part == 0], "bytes"] == 0).all()), f"{name}: bytes counted in a round nobody took part in")
    trained = set(map(tuple, metrics[metrics["scope"] == "train"][["round", "client"]].astype(int).to_numpy()))
    require(trained == set(map(tuple, reported[reported["value"] == 1][["round", "client"]].astype(int).to_numpy())),
            f"{name}: training-loss rows for clients that did not report")


def learning_verdict(record: dict, metrics: pd.DataFrame) -> tuple[bool, str]:
    """Whether the run learned: headline balanced accuracy over chance by the margin, or the
    mean training loss fell by LOSS_DROP from the first round to the last."""
    chance = 1 / len(record["data"]["classes"])
    last = metrics["round"].max()
    headline = metrics[(metrics["scope"] == record["headline_scope"]) & metrics["client"].isna() & (metrics["metric"] == "balanced_accuracy")
                       & (metrics["round"] == last)]["value"]
    score = float(headline.iloc[0]) if len(headline) else math.nan
    train = metrics[metrics["scope"] == "train"].groupby("round")["value"].mean()
    first, final = float(train.iloc[0]), float(train.iloc[-1])
    learned = score >= chance + LEARNING_MARGIN or final <= (1 - LOSS_DROP) * first
    return learned, (f"{record['headline_scope']} balanced accuracy {score:.3f} after {last} rounds (chance {chance:.3f}, needs {chance + LEARNING_MARGIN:.3f}); "
                     f"mean training loss {first:.3f} -> {final:.3f} (needs a {LOSS_DROP:.0%} drop)")


def check_learns(name: str, folder: Path) -> str:
    """The learning check; returns its summary line (or the method's reason for not learning)."""
    from bench.methods import registry

    reason = registry()[name].not_learning
    if reason:
        return f"not expected to learn here: {reason}"
    record = check_run_completes(name, learning_config(name), folder)
    learned, summary = learning_verdict(record, pd.read_parquet(RunPaths(folder).metrics))
    require(learned, f"{name} does not learn the easy synthetic task: {summary}")
    return summary


def check_method(name: str, participation: str, folder: Path) -> None:
    """The run checks for one participation setting (pytest's entry point)."""
    folder = Path(folder)
    cfg = conformance_config(name, participation)
    check_run_completes(name, cfg, folder / "straight")
    check_resume_is_exact(name, cfg, folder / "straight", folder / "resumed")
    check_state_changed(name, cfg, folder / "resumed")
    check_bytes_follow_participation(name, folder / "resumed")


# ---- the suite with a verdict per check (fedrank check-method) ------------------------------
@dataclass
class Outcome:
    check: str
    hooks: str  # where to look when it fails
    passed: bool | None  # None: not run (a check it depends on failed)
    detail: str = ""


def run_suite(name: str, folder: Path) -> list[Outcome]:
    """Every check on method `name`, in order, each caught so the next ones still run."""
    outcomes: list[Outcome] = []

    def attempt(check: str, hooks: str, action: Callable[[], object], needs: tuple[str, ...] = ()) -> None:
        if any(o.check in needs and not o.passed for o in outcomes):
            outcomes.append(Outcome(check, hooks, None, "not run: " + ", ".join(needs) + " failed"))
            return
        try:
            detail = action()
        except Exception as err:  # noqa: BLE001 - a method's own bug is a failed check, not a crash of the checker
            kind = "" if isinstance(err, AssertionError) else f"{type(err).__name__}: "
            outcomes.append(Outcome(check, hooks, False, kind + str(err).splitlines()[0] if str(err) else kind))
        else:
            outcomes.append(Outcome(check, hooks, True, detail if isinstance(detail, str) else ""))

    attempt("hyper-parameters", "hparam() declarations and the class docstring", lambda: check_hyper_parameters_are_in_the_schema(name))
    for participation in PARTICIPATION:
        cfg, root = conformance_config(name, participation), Path(folder) / participation
        run = f"runs ({participation})"
        attempt(run, "train, upload, aggregate, global_model/client_model", lambda: check_run_completes(name, cfg, root / "straight") and None)
        attempt(f"resume ({participation})", "setup, prepare: state belongs in fed.server, client.state, extra models",
                lambda: check_resume_is_exact(name, cfg, root / "straight", root / "resumed") and None, (run,))
        attempt(f"state changes ({participation})", "train, aggregate, keep", lambda: check_state_changed(name, cfg, root / "straight"), (run,))
        attempt(f"bytes ({participation})", "download_bytes, upload_bytes, select_clients",
                lambda: check_bytes_follow_participation(name, root / "straight"), (run,))
    attempt("learns", "train, client_loss/local_loss, aggregate (or set not_learning with the reason)",
            lambda: check_learns(name, Path(folder) / "learning"))
    return outcomes


def check_privacy_mode(name: str, mode: str, tmp_path: Path) -> None:
    """One round under `mode` (bench/engine/privacy.py) either runs, with finite metrics and the
    mode's privacy rows, or stops with a one-line reason; a method whose run shows a refusal declares
    it, so `fedrank run` refuses it before writing anything; the committed table agrees."""
    from bench.cli import main
    from bench.compatibility import compatibility
    from bench.engine.privacy import probe, refusal
    from bench.methods import registry

    outcome = probe(name, mode, tmp_path / "probe")
    declared = refusal(registry()[name], mode)
    if outcome is True:
        require(mode == "sample_dp" or declared is None, f"{name}: declares it cannot run under {mode} ({declared}), but it does")
        metrics = pd.read_parquet(RunPaths(tmp_path / "probe").metrics)
        require(metrics["value"].map(math.isfinite).all(), f"{name} under {mode}: non-finite metrics")
        if mode != "secure_aggregation":
            require((metrics["scope"] == "privacy").any(), f"{name} under {mode}: no epsilon in metrics.parquet")
    else:
        require("\n" not in outcome and name in outcome, f"{name} under {mode}: the refusal is not one line naming the method: {outcome!r}")
        require(declared is not None, f"{name}: running it under {mode} shows: {outcome}; declare that on the method")
    if declared is not None:
        out = tmp_path / "refused"
        cfg = conformance_config(name, "full")
        cfg["privacy"][mode] = {"clip": 1.0, "noise_multiplier": 1.0} if mode != "secure_aggregation" else True
        require(main(["run", "--config-json", json.dumps(cfg), "--out", str(out), "--quiet"]) == 2, f"{name}: a refused run did not exit 2")
        require(not out.exists(), f"{name}: a refused run wrote {out}")
    require(compatibility().get(name, {}).get(mode) == (outcome is True and declared is None),
            f"{name}: bench/methods/privacy_compatibility.json is stale; run python -m bench.engine.privacy")
