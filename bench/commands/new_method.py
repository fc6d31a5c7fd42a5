"""`fedrank new-method NAME`: write the skeleton of a method module that already runs, resumes and
passes the conformance suite, for the author to fill in. `fedrank check-method PATH_OR_NAME`: run
that suite (bench.testing.conformance) on one method, a line per check naming the hooks at fault,
with its hyper-parameter schema and its byte accounting."""

from __future__ import annotations

import argparse
import json
import keyword
import re
import tempfile
from pathlib import Path

TEMPLATE = '''"""{title} (authors, venue year): what it changes about FedAvg, in one sentence.

Update equations (the paper's numbering), one per line, e.g.
  Delta_t = sum_i p_i (y_i - x_t)           the clients' sample-weighted mean update
  x_{{t+1}} = x_t + eta Delta_t              the server step (eta = 1 is FedAvg)
Write where a detail comes from when the paper leaves it open (the authors' code, a benchmark).
Hooks used: aggregate. Every equation gets a test against hand-computed values (bench.testing
builds the federation: README, "Authoring a method").
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.methods import Method, hparam, register


@register
@dataclass(kw_only=True)
class {cls}(Method):
    """{title}: FedAvg with a server learning rate (replace with what the method does)."""

    name = "{name}"
    mean_of_updates = True  # its server needs only the clients' mean update (privacy modes); else say why it needs more
    server_lr: float = hparam(1.0, "server learning rate eta (1 = FedAvg)", exclusiveMinimum=0)

    def aggregate(self, fed, updates):
        mean = self.weighted_mean(updates)
        stepped = fed.global_state + self.server_lr * (mean - fed.global_state)
        # trainable tensors take the step; buffers (BatchNorm statistics) are averaged
        return self.shared_only(fed, torch.where(fed.trainable, stepped, mean))
'''

NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def class_name(name: str) -> str:
    """fed_new -> FedNew."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def cmd_new_method(args: argparse.Namespace) -> int:
    import bench
    from bench.errors import UserError
    from bench.listings import method_names

    name = args.name
    if not NAME.match(name) or keyword.iskeyword(name):
        raise UserError(f"method name '{name}': use lower-case letters, digits and underscores, starting with a letter (e.g. fedfoo)")
    if name in method_names():
        raise UserError(f"method name '{name}' is taken (see `fedrank methods`); choose another")
    out = Path(args.out) if args.out else Path(bench.__file__).parent / "methods" / f"{name}.py"
    if out.exists():
        raise UserError(f"{out} exists; choose another name or --out")
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    out.write_text(TEMPLATE.format(name=name, cls=class_name(name), title=class_name(name)))
    print(f"wrote {out}: method '{name}'. Fill in its docstring, hyper-parameters and hooks (bench/methods/base.py), then run "
          f"`fedrank check-method {out}`; it is then in `fedrank methods` and in every study with `methods: all` "
          f"(outside bench/methods/, put its folder on FEDRANK_METHODS_PATH or a workflow config's methods_path).")
    return 0


def methods_to_check(target: str) -> list[str]:
    """The method names a check-method argument means: those a .py file registers, or one name."""
    from bench.errors import UserError
    from bench.methods import load_method_file, registry

    if target.endswith(".py") or Path(target).is_file():
        if not Path(target).is_file():
            raise UserError(f"{target}: no such method file")
        names = load_method_file(target)
        if not names:
            raise UserError(f"{target} registers no method; decorate a Method subclass with @register (see `fedrank new-method`)")
        return names
    if target not in registry():
        raise UserError(f"unknown method '{target}': give a registered name (see `fedrank methods`) or the path of a method file")
    return [target]


def describe_hyper_parameters(name: str) -> list[str]:
    from bench.methods import registry

    props = registry()[name].hparam_schema()["properties"]
    lines = []
    for hp, schema in props.items():
        if hp == "name":
            continue
        bounds = {k: v for k, v in schema.items() if k not in ("type", "default", "description", "items")}
        lines.append(f"  {hp}: {schema.get('type')} = {json.dumps(schema['default'])}" + (f" {json.dumps(bounds)}" if bounds else "")
                     + f"  ({schema['description']})")
    return lines or ["  (none)"]


def byte_accounting(folder: Path) -> str:
    """Bytes per round of the full-participation conformance run, against the full state's."""
    import pandas as pd

    from bench.engine.paths import RunPaths

    paths = RunPaths(folder)
    if not paths.record.is_file():
        return "bytes: not measured (the run failed)"
    record = json.loads(paths.record.read_text())
    metrics = pd.read_parquet(paths.metrics)
    comm = metrics[metrics["scope"] == "comm"].pivot(index="round", columns="metric", values="value").mean()
    if comm.empty:
        return f"bytes: not measured (the run {record['status']} before a round finished)"
    return (f"bytes per round, {len(record['data']['clients'])} clients all taking part: down {comm['bytes_down']:,.0f}, up {comm['bytes_up']:,.0f} "
            f"(the full state both ways for every client: {record['communication']['full_state_bytes_per_round']:,})")


def cmd_check_method(args: argparse.Namespace) -> int:
    import logging

    quiet = logging.getLogger("fedrank")
    level, failed = quiet.level, 0
    quiet.setLevel(logging.WARNING)  # the suite's runs log every round; the verdicts are the output
    try:
        for name in methods_to_check(args.target):
            failed += check_one(name)
    finally:
        quiet.setLevel(level)  # for whatever runs next in this process
    return 1 if failed else 0


def check_one(name: str) -> int:
    """Print the conformance checks of method `name`; returns how many did not pass."""
    from bench.methods import method_source
    from bench.testing.conformance import run_suite

    source = method_source(name)
    package = source["package"]
    print(f"method {name}: {source['file']} (sha256 {str(source['sha256'])[:12]}, "
          f"{'package ' + package['name'] + ' ' + str(package['version']) if package else 'no package'})")
    print("hyper-parameters:", *describe_hyper_parameters(name), sep="\n")
    with tempfile.TemporaryDirectory(prefix="fedrank-check-") as work:
        outcomes = run_suite(name, Path(work))
        for o in outcomes:
            verdict = {True: "PASS", False: "FAIL", None: "SKIP"}[o.passed]
            print(f"{verdict} {o.check}" + (f" [look at: {o.hooks}]" if o.passed is False else "") + (f": {o.detail}" if o.detail else ""))
        print(byte_accounting(Path(work) / "full" / "straight"))
    bad = sum(o.passed is not True for o in outcomes)
    print(f"{name}: {len(outcomes) - bad} of {len(outcomes)} checks passed")
    return bad


def add_parsers(sub: argparse._SubParsersAction) -> None:
    new = sub.add_parser(
        "new-method",
        help="write the skeleton of a new method module",
        description="Write bench/methods/NAME.py: a registered method (FedAvg with a server learning rate) that runs, resumes and "
                    "passes the conformance suite, with the places to fill in marked. Nothing else needs editing: the registry finds it.",
    )
    new.add_argument("name", help="the method's registry name, e.g. fedfoo (lower case, digits, underscores)")
    new.add_argument("--out", help="write here instead of bench/methods/NAME.py (its folder must then be on FEDRANK_METHODS_PATH or methods_path)")
    new.set_defaults(func=cmd_new_method)
    check = sub.add_parser(
        "check-method",
        help="run the conformance suite on one method (about a minute on 2 cores)",
        description="Run the conformance suite (bench.testing.conformance) on one method: hyper-parameter schema; two rounds with full "
                    "and partial participation that finish with finite metrics, resume bit-identically, change state and count bytes "
                    "by who took part; and the learning check. One line per check, naming the hooks to look at when it fails; exit 1 "
                    "if any fails. Also prints the hyper-parameter schema, where the code comes from and the bytes sent per round.",
    )
    check.add_argument("target", metavar="PATH_OR_NAME", help="a registered method name, or the path of a method file (imported, then checked)")
    check.set_defaults(func=cmd_check_method)
