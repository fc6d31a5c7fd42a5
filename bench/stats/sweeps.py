"""Find the sweeps in a results set: the paper's ablations, whatever grid produced them.

A setting sweep is a set of settings of one study that differ only in one config field (beta,
clients, local epochs, dataset); a hyper-parameter sweep is a set of treatments of one method in
one setting that differ only in one hyper-parameter (FedLSC's tau or per). Nothing is declared:
whatever the results contain is found, and an absent sweep is simply not there.
"""

from __future__ import annotations

import json

import pandas as pd

from bench.stats.collect import Results, format_value, set_by_dataset, setting_part, short_names


def setting_table(results: Results) -> pd.DataFrame:
    """One row per study and setting with its config values."""
    columns = ["study", "setting", "setting_order", *results.setting_columns]
    return results.runs.drop_duplicates(["study", "setting"])[columns].reset_index(drop=True)


def setting_sweep(results: Results, summary: pd.DataFrame, key: str, metric: str, null_is_value: bool = True) -> pd.DataFrame:
    """Summary rows of `metric` for settings that differ only in `key` from at least one other
    setting of their study; `context` names what they share. Empty when there is no sweep. A
    null setting (samples_per_client: as many as fit) is the value "none" unless `null_is_value`
    is False (no held-out centre is not a held-out centre)."""
    if key not in results.setting_columns:
        return pd.DataFrame()
    settings = setting_table(results)
    others = fixed_columns(results, settings, [key])
    names = short_names(results.setting_columns)
    settings["context"] = [context_text(row, others, names) for _, row in settings.iterrows()]
    if null_is_value and settings[key].isna().any():
        settings[key] = settings[key].astype(object).where(settings[key].notna(), "none")
    settings = settings[settings.groupby("context")[key].transform("nunique") > 1]
    if settings.empty:
        return pd.DataFrame()
    rows = summary[summary["metric"] == metric].drop(columns=results.setting_columns, errors="ignore")
    return settings.merge(rows, on=["study", "setting", "setting_order"]).rename(columns={key: "value"}).assign(key=key)


FREQUENCY_KEYS = ("train.local_epochs", "train.rounds")


def frequency_sweep(results: Results, summary: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Summary rows of `metric` for settings of one study that differ only in local epochs E
    and rounds T at one budget T x E (communication frequency); `value` is E, `budget` T x E."""
    if not set(FREQUENCY_KEYS) <= set(results.setting_columns):
        return pd.DataFrame()
    settings = setting_table(results)
    others = fixed_columns(results, settings, list(FREQUENCY_KEYS))
    names = short_names(results.setting_columns)
    settings["budget"] = settings["train.local_epochs"] * settings["train.rounds"]
    settings["context"] = [f"{context_text(row, others, names)}, budget T x E = {row['budget']:g}" for _, row in settings.iterrows()]
    settings = settings[settings.groupby("context")["train.local_epochs"].transform("nunique") > 1]
    if settings.empty:
        return pd.DataFrame()
    rows = summary[summary["metric"] == metric].drop(columns=results.setting_columns, errors="ignore")
    return settings.merge(rows, on=["study", "setting", "setting_order"]).rename(columns={"train.local_epochs": "value"}).assign(key="train.local_epochs")


def fixed_columns(results: Results, settings: pd.DataFrame, swept: list[str]) -> list[str]:
    """The setting fields a sweep over `swept` keeps fixed, as its context names them: without
    those the dataset's name already says (unless the dataset itself is swept)."""
    hidden = set() if "data.name" in swept else set_by_dataset(settings, results.setting_columns)
    return [c for c in results.setting_columns if c not in swept and c not in hidden]


def context_text(row: pd.Series, columns: list[str], names: dict[str, str]) -> str:
    """'main: ham10000, clients=3' for the fields a sweep keeps fixed."""
    fixed = ", ".join(part for part in (setting_part(c, row[c], names) for c in columns) if part)
    return f"{row['study']}: {fixed}" if row["study"] != "all" else fixed


def treatment_table(results: Results) -> pd.DataFrame:
    """One row per study, setting and treatment with its method name and hyper-parameters."""
    rows = results.runs.drop_duplicates(["study", "setting", "method"])
    configs = rows["method_config"].map(json.loads)
    return rows[["study", "setting", "setting_order", "method", "method_order"]].assign(config=configs.to_numpy()).reset_index(drop=True)


def others_text(config: dict, hparam: str) -> str:
    """'mu=0.001, tau=0.2': the hyper-parameters a sweep over `hparam` keeps fixed."""
    return ", ".join(f"{k}={format_value(v)}" for k, v in sorted(config.items()) if k not in ("name", hparam))


def sweep_value(value):
    """A hyper-parameter's value as a table column: a list or mapping (MDH-FL's client
    architectures) as its text, which pandas can group and sort."""
    return format_value(value) if isinstance(value, (list, tuple, dict)) else value


def hparam_sweeps(results: Results, summary: pd.DataFrame, metric: str) -> dict[tuple[str, str], pd.DataFrame]:
    """Per (method name, hyper-parameter): summary rows of `metric` for treatments of one
    setting that differ only in that hyper-parameter, with `fixed` naming the others."""
    treatments = treatment_table(results)
    rows = summary[summary["metric"] == metric]
    found: dict[tuple[str, str], pd.DataFrame] = {}
    for name, group in treatments.groupby(treatments["config"].map(lambda c: c["name"])):
        for hparam in sorted({k for c in group["config"] for k in c if k != "name"}):
            frame = group.assign(value=[sweep_value(c.get(hparam)) for c in group["config"]], fixed=[others_text(c, hparam) for c in group["config"]])
            swept = frame.assign(text=frame["value"].astype(str)).groupby(["study", "setting", "fixed"])["text"].transform("nunique") > 1
            scored = frame[swept].drop(columns="config").merge(rows.drop(columns=["setting_order", "method_order"]), on=["study", "setting", "method"])
            if len(scored):
                found[(name, hparam)] = scored
    return found
