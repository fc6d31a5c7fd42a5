"""The package's schemas and data dictionary, as YAML files."""

from __future__ import annotations

from importlib import resources

import yaml

# libyaml's parser reads the schemas about 8 times faster than PyYAML's Python one (0.15 s of every
# run's start-up); both read the same values (test). PyYAML built without libyaml falls back.
SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_schema(name: str):
    """The YAML file `name` of this folder, as Python values."""
    return yaml.load(resources.files(__name__).joinpath(name).read_text(), Loader=SafeLoader)
