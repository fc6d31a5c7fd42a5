"""`fedrank data describe` and `fedrank data prepare`: cards, heatmaps, errors, and every real dataset."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from PIL import Image

from bench.cli import main
from imagegen import save, smooth_image


def describe(capsys, *args) -> tuple[int, str, str]:
    code = main(["data", "describe", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_card_with_a_partition_writes_json_and_heatmap(tmp_path, capsys):
    code, out, _ = describe(capsys, "synthetic", "--partition", "dirichlet", "--set", "partition.clients=4", "--seed", "2", "--out", str(tmp_path))
    assert code == 0
    card = json.loads((tmp_path / "synthetic-dirichlet-card.json").read_text())
    assert card["images"] == 480 and card["class_counts"]["all"] == [120] * 4
    assert card["split"]["train_pool"] + card["split"]["global_test"] == 480 and card["groups"]["straddling_split"] == 0
    clients = card["partition"]["clients"]
    assert len(clients) == 4 and card["partition"]["seed"] == 2
    assert sum(sum(c["class_counts"]) for c in clients) == card["split"]["train_pool"]
    assert "partition dirichlet (seed 2): 4 clients" in out and "class0" in out
    with Image.open(tmp_path / "synthetic-dirichlet-clients.png") as png:
        assert png.format == "PNG" and png.size[0] > 300


def test_card_without_partition(tmp_path, capsys):
    code, out, _ = describe(capsys, "digits", "--out", str(tmp_path))
    assert code == 0 and "digits: 1,797 images" in out and "duplicates: not checked" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-card.json"]


def test_bad_input_is_one_line_with_exit_code_2(tmp_path, capsys):
    code, _, err = describe(capsys, "msld", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "out"))
    assert code == 2 and err.count("\n") == 1 and err.startswith("fedrank: error: config key 'data.root'")
    code, _, err = describe(capsys, "digits", "--partition", "natural", "--out", str(tmp_path / "out"))
    assert code == 2 and "natural partitions need each image's acquisition centre" in err
    assert not (tmp_path / "out").exists()


def test_prepare_builds_the_cache_once(tmp_path, capsys, caplog):
    caplog.set_level(logging.INFO)
    rng = np.random.default_rng(0)
    for cls in ("Monkey Pox", "Others"):
        for i in range(3):
            save(smooth_image(rng), tmp_path / "msld" / cls / f"{i}.jpg")
    args = ["data", "prepare", "msld", "--root", str(tmp_path / "msld"), "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "data.image_size=16"]
    assert main(args) == 0 and len(list((tmp_path / "cache").glob("msld-16px-*.npy"))) == 1
    caplog.clear()
    assert main(args) == 0 and "building" not in caplog.text and "msld ready: 6 images at 16 px" in caplog.text


REAL = {
    "ham10000": ["--root", "{data}/ham10000_200x150", "--partition", "natural", "--set", "data.image_size=32"],
    "isic2019": ["--root", "{data}/isic2019_subset", "--partition", "natural", "--set", "data.image_size=16",
                 "--set", "data.sites_file={data}/isic2019_labels/flamby_train_test_split.csv", "--set", "partition.min_samples=2"],
    "msld": ["--root", "{data}/monkeypox_msld_v1", "--partition", "dirichlet", "--set", "partition.clients=2"],
}


@pytest.mark.shared_data
@pytest.mark.parametrize("dataset", sorted(REAL))
def test_describe_every_real_dataset(shared_data, real_cache, tmp_path, capsys, dataset):
    args = [a.format(data=shared_data) for a in REAL[dataset]]
    code, out, _ = describe(capsys, dataset, *args, "--set", f"data.cache_dir={real_cache}", "--out", str(tmp_path))
    assert code == 0 and "groups:" in out and "duplicates:" in out
    card = json.loads(next(tmp_path.glob("*-card.json")).read_text())
    assert sum(c["train"] + c["local_test"] for c in card["partition"]["clients"]) > 0
    assert next(tmp_path.glob("*-clients.png")).stat().st_size > 1000
