"""`fedrank new-method NAME`: write the skeleton of a method module that already runs, resumes and
passes the conformance suite (tests/test_conformance.py), for the author to fill in."""

from __future__ import annotations

import argparse
import keyword
import re
from pathlib import Path

TEMPLATE = '''"""{title} (authors, venue year): what it changes about FedAvg, in one sentence.

Update equations (the paper's numbering), one per line, e.g.
  Delta_t = sum_i p_i (y_i - x_t)           the clients' sample-weighted mean update
  x_{{t+1}} = x_t + eta Delta_t              the server step (eta = 1 is FedAvg)
Write where a detail comes from when the paper leaves it open (the authors' code, a benchmark).
Hooks used: aggregate. Every equation gets a test against hand-computed values.
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
          f"`pytest tests/test_conformance.py -k {name}`; it is then in `fedrank methods` and in every study with `methods: all`.")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    new = sub.add_parser(
        "new-method",
        help="write the skeleton of a new method module",
        description="Write bench/methods/NAME.py: a registered method (FedAvg with a server learning rate) that runs, resumes and "
                    "passes the conformance suite, with the places to fill in marked. Nothing else needs editing: the registry finds it.",
    )
    new.add_argument("name", help="the method's registry name, e.g. fedfoo (lower case, digits, underscores)")
    new.add_argument("--out", help="write here instead of bench/methods/NAME.py (the file must then be on the methods path to be found)")
    new.set_defaults(func=cmd_new_method)
