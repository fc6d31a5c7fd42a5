"""Start-up: listings read back without torch, torch._dynamo only when compiling, the stored
global split, digits without scikit-learn, and the start-up time in run.json. Same outputs
as before, bit for bit; how long each takes is benchmarks/bench_overheads.py's to report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch._dynamo  # the real module in this process: the reference the stand-in is checked against

import bench.listings as listings
from bench.cli import main
from bench.commands.run import cmd_datasets, cmd_methods, cmd_models
from bench.data import load_dataset
from bench.data.split import computed_split, global_split, store_splits
from bench.engine.run import RunPaths, execute
from conftest import REPO, tiny_config


def python(code: str, tmp_path, **env) -> str:
    """Run `code` in a fresh interpreter with this checkout first on the path; its stdout."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env}
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=environment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("name, command, options", [("methods", cmd_methods, []), ("methods", cmd_methods, ["--json"]),
                                                    ("models", cmd_models, []), ("datasets", cmd_datasets, [])])
def test_a_listing_is_read_back_while_the_sources_are_unchanged(name, command, options, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FEDRANK_CACHE_DIR", str(tmp_path))
    assert main([name, *options]) == 0
    rendered = capsys.readouterr().out
    assert command(type("Args", (), {"json": bool(options)})()) == 0
    assert capsys.readouterr().out == rendered  # what the registries print today
    (stored,) = (tmp_path / "listings").glob(f"{name}-*.txt")
    stored.write_text("stored text\n")
    main([name, *options])
    assert capsys.readouterr().out == "stored text\n"  # read back, not rendered
    monkeypatch.setattr(listings, "code_fingerprint", lambda: [("bench/methods/new.py", 1, 1)])
    main([name, *options])
    assert capsys.readouterr().out == rendered  # a changed source: rendered afresh


@pytest.mark.slow
def test_listings_and_new_method_import_no_torch_once_stored(tmp_path):
    cache = str(tmp_path / "cache")
    run_all = """
        import sys
        from bench.cli import main
        for argv in (["methods"], ["methods", "--json"], ["models"], ["datasets"], ["new-method", "fedavg"], ["new-method", "fedzz", "--out", "fedzz.py"]):
            main(argv)
    """
    python(run_all, tmp_path, FEDRANK_CACHE_DIR=cache)
    (tmp_path / "fedzz.py").unlink()
    out = python(textwrap.dedent(run_all) + "print('torch imported:', 'torch' in sys.modules)", tmp_path, FEDRANK_CACHE_DIR=cache)
    assert out.rstrip().endswith("torch imported: False") and (tmp_path / "fedzz.py").is_file()


@pytest.mark.slow
def test_an_uncompiled_run_never_loads_dynamo_and_trains_exactly_as_with_it(tmp_path):
    cfg = tiny_config(train__rounds=2)
    execute(cfg, tmp_path / "with_dynamo", show_progress=False)
    out = python(f"""
        import sys, torch
        from bench.engine.run import execute
        from bench.engine.dynamo import DynamoUntilNeeded
        execute({cfg!r}, "stand_in", show_progress=False)
        print(type(sys.modules["torch._dynamo"]) is DynamoUntilNeeded)
    """, tmp_path)
    assert out.strip() == "True"
    metrics = [pd.read_parquet(RunPaths(tmp_path / folder).metrics) for folder in ("with_dynamo", "stand_in")]
    pd.testing.assert_frame_equal(*metrics, check_exact=True)


def test_the_stand_in_hands_over_to_the_real_dynamo_for_anything_else(tmp_path):
    out = python("""
        import sys, torch
        from bench.engine.dynamo import DynamoUntilNeeded, defer_dynamo
        defer_dynamo()
        import torch._dynamo.config  # a submodule: the real package is loaded first
        real = sys.modules["torch._dynamo"]
        double = torch.compile(lambda x: 2 * x, backend="eager")
        print(type(real) is not DynamoUntilNeeded, torch._dynamo is real, double(torch.ones(2)).tolist())
    """, tmp_path)
    assert out.split() == ["True", "True", "[2.0,", "2.0]"]


def test_the_global_split_is_stored_and_read_back(tmp_path, monkeypatch):
    data = tiny_config(data__name="digits", data__image_size=8)["data"]
    dataset = load_dataset(data)
    expected = computed_split(dataset, 0.2, 3)
    for stored_before in (False, True):  # computed, stored once its run is built, then read back
        train, test = global_split(dataset, 0.2, 3, tmp_path)
        assert bool(list(tmp_path.glob("splits/*"))) == stored_before
        store_splits()
        np.testing.assert_array_equal(train, expected[0])
        np.testing.assert_array_equal(test, expected[1])
    (stored,) = (tmp_path / "splits").glob("digits-*.npz")
    monkeypatch.setattr("bench.data.split.computed_split", lambda *a: pytest.fail("computed again"))
    global_split(dataset, 0.2, 3, tmp_path)
    monkeypatch.undo()
    np.testing.assert_array_equal(global_split(dataset, 0.2, 4, tmp_path)[1], computed_split(dataset, 0.2, 4)[1])
    store_splits()
    assert len(list((tmp_path / "splits").glob("*.npz"))) == 2  # another seed, another key
    stored.write_bytes(b"truncated")
    np.testing.assert_array_equal(global_split(dataset, 0.2, 3, tmp_path)[1], expected[1])  # unreadable: computed again


def test_digits_are_read_as_scikit_learn_loads_them():
    from sklearn.datasets import load_digits

    from bench.data.sources.digits import read_digits

    images, labels = read_digits()
    reference = load_digits()
    np.testing.assert_array_equal(images, reference.images)
    np.testing.assert_array_equal(labels, reference.target)


def test_the_record_holds_the_start_up_time(tmp_path):
    record = execute(tiny_config(train__rounds=1), tmp_path / "run", show_progress=False)
    stored = json.loads(RunPaths(tmp_path / "run").record.read_text())
    assert stored["timing"]["startup_seconds"] == record["timing"]["startup_seconds"] > 0


def test_the_statistics_read_the_method_defaults_the_registry_declares(tmp_path, monkeypatch):
    from bench.methods import registry
    from bench.methods.base import plain
    from bench.stats.collect import method_defaults

    monkeypatch.setenv("FEDRANK_CACHE_DIR", str(tmp_path))
    declared = {name: {"name": name, **{k: plain(f.default) for k, f in cls.hparams().items()}} for name, cls in registry().items()}
    for _ in range(2):  # rendered and stored, then read back
        assert method_defaults() == declared


@pytest.mark.skipif(not hasattr(__import__("yaml"), "CSafeLoader"), reason="PyYAML built without libyaml: the schemas are read by the Python parser")
@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "bench" / "schemas").glob("*.yaml")))
def test_the_schemas_read_the_same_with_libyaml_as_with_the_python_parser(name):
    import yaml

    from bench.schemas import read_schema

    assert read_schema(name) == yaml.safe_load((REPO / "bench" / "schemas" / name).read_text())


def test_search_values_are_checked_as_jsonschema_validate_checks_them():
    import jsonschema

    from bench.search import violation

    bounded = {"type": "number", "minimum": 0, "exclusiveMaximum": 1}
    cases = [(0.5, bounded), (1, bounded), (-0.1, bounded), ("0.5", bounded), (2, {"enum": [1, 3]}), (3, {"enum": [1, 3]}),
             ([8, 16], {"type": "array", "items": {"type": "integer", "minimum": 1}}), ([8, 0], {"type": "array", "items": {"type": "integer", "minimum": 1}})]
    for value, schema in cases:
        try:
            jsonschema.validate(value, schema)
            expected = None
        except jsonschema.ValidationError as exc:
            expected = exc.message
        found = violation(value, {**schema, "default": 0.5, "description": "what it is", "x-search": ["uniform", [0, 1]]})
        assert (found and found.message) == expected, (value, schema)
    assert sum(violation(v, s) is None for v, s in cases) == 3  # valid and invalid values both checked
    with pytest.raises(jsonschema.SchemaError):  # the schema itself is still checked
        violation(1, {"type": "a number"})


OPTIONAL_HEAVY = ("scipy", "sklearn", "timm", "torchvision", "matplotlib", "seaborn", "numba", "bench.stats")


@pytest.mark.parametrize("argv, lazy", [
    (["--print-config"], OPTIONAL_HEAVY + ("pandas", "bench.engine.run")),  # resolving a config reads no table
    (["--quiet"], OPTIONAL_HEAVY),  # a synthetic run: pandas only for the tables it writes
])
def test_a_synthetic_run_imports_nothing_it_does_not_use(argv, lazy, tmp_path):
    """As every job of a study after the first, which stored the dataset's split (computing it imports scikit-learn)."""
    for out in ("first", "later"):
        printed = python(f"""
            import sys
            from bench.cli import main
            assert main(["run", "--set", "data.name=synthetic", "--set", "train.rounds=1", "--out", {out!r}, *{argv!r}]) == 0
            print("imported:", sorted(name for name in {lazy!r} if name in sys.modules))
        """, tmp_path, FEDRANK_CACHE_DIR=str(tmp_path / "cache"))
    assert printed.rstrip().splitlines()[-1] == "imported: []"


def test_collection_waits_for_the_imports_leaves_them_out_and_is_restored_even_on_error():
    import gc

    from bench.commands.run import ImportsOutOfCollection

    assert gc.isenabled() and gc.get_freeze_count() == 0
    with pytest.raises(RuntimeError):
        with ImportsOutOfCollection() as collection:
            assert not gc.isenabled() and gc.get_freeze_count() == 0  # importing
            collection.imported()
            assert gc.isenabled() and gc.get_freeze_count() > 0  # training: the imports left out
            raise RuntimeError("training failed")
    assert gc.isenabled() and gc.get_freeze_count() == 0  # everything collectable again
    with ImportsOutOfCollection():  # --print-config: ends before the engine is imported
        assert not gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    gc.freeze()
    try:
        with ImportsOutOfCollection() as collection:
            collection.imported()
        assert not gc.isenabled() and gc.get_freeze_count() > 0  # another caller's settings left as they were
    finally:
        gc.unfreeze()
        gc.enable()
