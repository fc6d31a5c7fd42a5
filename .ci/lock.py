"""Pin the tested environment: requirements.lock and the workflow's conda environment.

    python .ci/lock.py        # in the environment the tests just passed in

requirements.lock holds name==version of every distribution `pip install -e ".[test]"` brings
(this checkout's pyproject.toml, followed through the installed packages' own requirements);
workflows/envs/fedrank.yaml holds this Python and, as pip packages, the same pins without the
test extra. CI installs the lock (`pip install -c requirements.lock -e ".[test]"`), so the
environment the tests pass in is the one the lock names.
"""

from __future__ import annotations

import platform
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parent.parent
LOCK = REPO / "requirements.lock"
CONDA_ENV = REPO / "workflows" / "envs" / "fedrank.yaml"
TEST_EXTRA = "test"
OPTIONAL_EXTRAS = ("flower",)  # features that need more packages (method flower): locked too, so their tests run on pinned versions
LOCKED_EXTRAS = (TEST_EXTRA, *OPTIONAL_EXTRAS)


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements(extras: tuple[str, ...] = ()) -> list[str]:
    """This checkout's dependencies, plus those of the given extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return project["dependencies"] + [r for extra in extras for r in project["optional-dependencies"][extra]]


def closure(requirements: list[str]) -> set[str]:
    """Every distribution the requirements pull in, transitively, with the extras they name and
    the environment markers evaluated here (canonical names)."""
    found: set[tuple[str, frozenset]] = set()
    todo = [Requirement(r) for r in requirements]
    while todo:
        req = todo.pop()
        key = (canonical(req.name), frozenset(req.extras))
        if key in found or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        found.add(key)
        for text in metadata.requires(req.name) or []:
            child = Requirement(text)
            if child.marker is None or any(child.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                child.marker = None
                todo.append(child)
    return {name for name, _ in found}


def pins(names: set[str]) -> list[str]:
    """'name==version' of each installed distribution, sorted."""
    return sorted(f"{metadata.metadata(n)['Name']}=={metadata.version(n)}" for n in names if n != "fedrank")


def lock_text() -> str:
    return (f"# The tested environment of fedrank (pip install -e \".[{','.join(LOCKED_EXTRAS)}]\" and all it pulls in) on Python "
            f"{platform.python_version()}, {sys.platform}.\n# Written by .ci/lock.py; CI installs it: pip install -c requirements.lock -e \".[test]\"\n"
            + "\n".join(pins(closure(project_requirements(LOCKED_EXTRAS)))) + "\n")


def conda_env_text() -> str:
    packages = "\n".join(f"      - {pin}" for pin in pins(closure(project_requirements())))
    return f"""# The software every rule needs, for `snakemake --software-deployment-method conda` (Snakemake
# builds it once under .snakemake/conda): Python from conda-forge, then every package at the
# version of the tested environment (requirements.lock, without the test extra); the post-deploy
# script adds this checkout of fedrank without resolving anything. Written by .ci/lock.py.
channels:
  - conda-forge
  - nodefaults
dependencies:
  - python ={platform.python_version()}
  - pip
  - pip:
{packages}
"""


if __name__ == "__main__":
    LOCK.write_text(lock_text())
    CONDA_ENV.write_text(conda_env_text())
    print(f"wrote {LOCK.relative_to(REPO)} and {CONDA_ENV.relative_to(REPO)}")
