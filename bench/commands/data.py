"""`fedrank data describe` and `fedrank data prepare`: data cards, and the decode cache built ahead of jobs."""

from __future__ import annotations

import argparse
import logging
import textwrap
from pathlib import Path

log = logging.getLogger("fedrank")


def data_overrides(args: argparse.Namespace) -> list[str]:
    """The command-line options as config overrides, applied after --config: the dataset, scheme and
    seed before --set, --root after it (a `--set data=NAME` replaces the whole data section)."""
    sets = [f"data.name={args.dataset}"]
    if getattr(args, "partition", None):
        sets.append(f"partition.scheme={args.partition}")
    if getattr(args, "seed", None) is not None:
        sets.append(f"seed={args.seed}")
    return sets + args.set + ([f"data.root={args.root}"] if args.root else [])


def cmd_describe(args: argparse.Namespace) -> int:
    from bench.config import load_config
    from bench.data import load_dataset
    from bench.data.card import client_heatmap, describe_dataset, partition_summary, render_card
    from bench.data.split import global_split
    from bench.engine.setup import partition_dataset
    from bench.io import write_json

    cfg = load_config(args.config, data_overrides(args))
    data = cfg["data"]
    dataset = load_dataset(data)
    pool, test = global_split(dataset, data["test_fraction"], data["split_seed"])
    partition = None
    if args.partition:
        part = partition_dataset(dataset, pool, test, cfg)
        partition = partition_summary(dataset, part, args.partition, cfg["seed"])
    card = describe_dataset(dataset, pool, test, {"test_fraction": data["test_fraction"], "split_seed": data["split_seed"]}, partition)
    print(render_card(card))
    out = Path(args.out)
    stem = f"{dataset.name}-{args.partition}" if args.partition else dataset.name
    write_json(out / f"{stem}-card.json", card)
    if partition is not None:
        client_heatmap(card, out / f"{stem}-clients.png")
        print(f"\nwrote {out / f'{stem}-card.json'} and {out / f'{stem}-clients.png'}")
    else:
        print(f"\nwrote {out / f'{stem}-card.json'}")
    return 0


def cmd_prepare(args: argparse.Namespace) -> int:
    from bench.config import load_config
    from bench.data import load_dataset

    cfg = load_config(args.config, data_overrides(args))
    dataset = load_dataset(cfg["data"])
    log.info("%s ready: %d images at %d px, cached under %s", dataset.name, len(dataset.labels), dataset.image_size, cfg["data"]["cache_dir"])
    return 0


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dataset", help="dataset name (see `fedrank datasets`)")
    parser.add_argument("--root", help="the dataset's folder (medmnist: its .npz file); same as --set data.root=...")
    parser.add_argument("--config", "-c", help="YAML run config whose data/partition sections to use (the dataset argument wins)")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE",
                        help="override any config key, e.g. --set data.image_size=224 --set data.sites_file=split.csv; repeatable")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser(
        "data", help="describe datasets (data cards) and build their caches",
        description="Look at a dataset before training on it: `describe` prints its data card (class counts, split, "
                    "groups, duplicates, centres, clients); `prepare` decodes it into the cache once, ahead of a study's jobs.",
    )
    commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    describe = commands.add_parser(
        "describe",
        help="print a data card: class counts, split sizes, groups, duplicates, centres, clients",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.dedent("""\
            Load a dataset as a run would (decoding it into the cache on first use) and print its
            card: class counts in the training pool and the global test set, how images are grouped
            (patients, lesions, copies) and whether a group straddles the split, the duplicates
            found, the acquisition centres, and with --partition the clients' class counts.
            Writes <out>/<dataset>[-<scheme>]-card.json and, with --partition, a clients x classes
            heatmap <out>/<dataset>-<scheme>-clients.png."""),
        epilog=textwrap.dedent("""\
            examples:
              fedrank data describe msld --root $FEDRANK_DATA_ROOT/monkeypox_msld_v1
              fedrank data describe ham10000 --root $FEDRANK_DATA_ROOT/ham10000_200x150 --partition natural
              fedrank data describe isic2019 --root $FEDRANK_DATA_ROOT/isic2019_subset --partition natural \\
                  --set data.sites_file=$FEDRANK_DATA_ROOT/isic2019_labels/flamby_train_test_split.csv \\
                  --set partition.min_samples=1     # show even a centre too small to train on
              fedrank data describe ham10000 --root ... --partition dirichlet --set partition.beta=0.1 --set partition.clients=10"""),
    )
    add_common(describe)
    describe.add_argument("--partition", "-p", choices=["dirichlet", "iid", "pathological", "quantity", "natural"],
                          help="also partition the training pool with this scheme (other partition.* keys via --set)")
    describe.add_argument("--seed", type=int, help="run seed of the partition (default: the config's, 0)")
    describe.add_argument("--out", "-o", default="reports/data", help="folder for the card JSON and heatmap (default: %(default)s)")
    describe.set_defaults(func=cmd_describe)

    prepare = commands.add_parser(
        "prepare",
        help="decode a dataset into the cache now (run once before launching many jobs)",
        description="Decode and checksum a dataset into data.cache_dir, so that the jobs of a study only load it. "
                    "Safe to repeat: a valid cache is verified and kept.",
    )
    add_common(prepare)
    prepare.set_defaults(func=cmd_prepare)
