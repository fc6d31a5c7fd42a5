"""The README's quick start on a fresh machine: its install line (`pip install -e .`, no extras)
must bring every package that the package, the demo workflow and `snakemake --report` import."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement

from conftest import REPO

# The sitecustomize of every Python process the test starts: packages that the quick-start install
# would not bring are hidden (an optional import of one fails as on a fresh machine, a needed one
# breaks the run), and the top-level modules each process imported are recorded.
SITECUSTOMIZE = textwrap.dedent("""\
    import atexit, os, sys
    _log = os.environ["FEDRANK_IMPORT_LOG"]
    _hidden = set(open(os.path.join(_log, "hidden.txt")).read().split())

    class _NotInstalled:
        def find_spec(self, name, path=None, target=None):
            if "." not in name and name in _hidden:
                raise ModuleNotFoundError(f"No module named {name!r} (hidden: `pip install -e .` does not install it)", name=name)
            return None

    sys.meta_path.insert(0, _NotInstalled())
    _startup = {name.split(".")[0] for name in sys.modules}

    def _record():
        names = {name.split(".")[0] for name in list(sys.modules)} - _startup
        with open(os.path.join(_log, f"imports-{os.getpid()}.txt"), "w") as out:
            out.write("\\n".join(sorted(names)))

    atexit.register(_record)
""")


def load_lock_tool():
    """.ci/lock.py, which pins the tested environment (and knows what an install pulls in)."""
    spec = importlib.util.spec_from_file_location("lock", REPO / ".ci" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = load_lock_tool()
canonical, closure = LOCK.canonical, LOCK.closure


def quick_start_install() -> list[str]:
    """The requirements `pip install -e .` of the README's first command installs: this
    checkout's dependencies, with the extras the README's line asks for (none)."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", readme, re.S).group(1)
    assert "pip install -e . " in block and "snakemake --cores all" in block, block
    return LOCK.project_requirements()


def distributions_of(modules: set[str]) -> set[str]:
    """The distributions providing these top-level modules (stdlib and unknown names left out)."""
    providers = metadata.packages_distributions()
    return {canonical(dist) for m in modules - set(sys.stdlib_module_names) for dist in providers.get(m, [])}


def test_every_package_the_code_imports_is_a_declared_dependency():
    """...of the quick-start install, or of an optional extra (imported where it is used, with a
    one-line error naming the extra when it is missing: method flower)."""
    modules = set()
    for path in (REPO / "bench").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                modules.add(node.module.split(".")[0])
    declared = {canonical(Requirement(r).name) for r in quick_start_install() + LOCK.project_requirements(LOCK.OPTIONAL_EXTRAS)}
    assert distributions_of(modules) - {"fedrank"} <= declared


def hidden_modules(allowed: set[str]) -> set[str]:
    """Top-level modules installed here by distributions outside `allowed` (and by no other)."""
    providers = metadata.packages_distributions()
    return {module for module, dists in providers.items() if not {canonical(d) for d in dists} & allowed and module not in ("bench",)}


@pytest.mark.slow
def test_the_quick_start_install_runs_the_demo_and_its_html_report(tmp_path):
    """The demo workflow (configs/default.yaml with 2 methods, 1 seed, 2 rounds) and
    `snakemake --report`, with every package the quick-start install would not bring hidden from
    every Python process: they must succeed, and what they imported must all be installed."""
    config = yaml.safe_load((REPO / "configs" / "default.yaml").read_text())
    config.update(seeds=1, results=str(tmp_path / "runs"), reports=str(tmp_path / "reports"))
    config["base"]["train"]["rounds"] = 2
    for study in config["studies"].values():
        study.update(methods=["fedavg", "fedlsc"], grid={})  # every method module is imported whichever run
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config))
    installed = closure(quick_start_install()) | {"fedrank"}
    log = tmp_path / "imports"
    log.mkdir()
    (log / "hidden.txt").write_text("\n".join(sorted(hidden_modules(installed))))
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {**os.environ, "FEDRANK_IMPORT_LOG": str(log), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path / "site"), os.environ.get("PYTHONPATH")]))}
    for args in (["--cores", "2"], ["--report", str(tmp_path / "report.html")]):
        proc = subprocess.run([sys.executable, "-m", "snakemake", *args, "--configfile", str(tmp_path / "demo.yaml")], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
    imported = set().union(*(set(p.read_text().split()) for p in log.glob("imports-*.txt")))
    assert {"torch", "matplotlib", "pygments"} <= imported  # training, figures, the HTML report (sklearn only where a split is not stored yet)
    assert distributions_of(imported) <= installed


def pinned(lines) -> dict[str, str]:
    return {canonical(name): version for name, version in (line.strip().lstrip("- ").split("==") for line in lines if "==" in line)}


def test_the_lock_pins_the_whole_install_and_the_conda_env_the_same_versions():
    lock = pinned(LOCK.LOCK.read_text().splitlines())
    assert set(lock) == closure(LOCK.project_requirements(LOCK.LOCKED_EXTRAS)) - {"fedrank"}, "run: python .ci/lock.py"
    env = yaml.safe_load(LOCK.CONDA_ENV.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pinned(pip) == {name: lock[name] for name in closure(LOCK.project_requirements()) - {"fedrank"}}
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python "))
    assert f"on Python {python.split('=')[1]}," in LOCK.LOCK.read_text().splitlines()[0]
    post_deploy = (REPO / "workflows" / "envs" / "fedrank.post-deploy.sh").read_text()
    assert "pip install --no-deps" in post_deploy  # the checkout only: nothing unpinned is resolved
