"""The README's method table, generated from the registry (fedrank's own methods: those of the
`bench.methods` package), so it cannot fall out of date; a test checks the README holds it.

    python -m bench.method_table README.md      # rewrite the block in place
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

BEGIN = "<!-- method table: generated from the registry by `python -m bench.method_table README.md` -->"
END = "<!-- end of method table -->"


def cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown() -> str:
    from bench.methods import registry

    rows = ["| name | what it does | hyper-parameters (defaults) | paper recipe |", "|---|---|---|---|"]
    for name, cls in registry().items():
        if not cls.__module__.startswith("bench.methods."):
            continue
        summary = cls.summary().split(": ", 1)[-1]
        hparams = ", ".join(f"{hp} {json.dumps(schema['default'])}" for hp, schema in cls.hparam_schema()["properties"].items() if hp != "name")
        recipe = ", ".join(f"{k.removeprefix('train.')} {v}" for k, v in cls.recipe.settings.items()) if cls.recipe else ""
        rows.append(f"| `{name}` | {cell(summary)} | {cell(hparams) or '-'} | {cell(recipe) or '-'} |")
    return "\n".join(rows) + "\n"


def readme_block() -> str:
    return f"{BEGIN}\n\n{markdown()}\n{END}"


def main(path: str) -> None:
    file = Path(path)
    text = file.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    file.write_text(text[:start] + readme_block() + text[end:])


if __name__ == "__main__":
    main(sys.argv[1])
