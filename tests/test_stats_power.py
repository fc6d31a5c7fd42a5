"""The power table: noncentral-t power against statsmodels, the pooled spread by hand, and the
rows that cannot be planned from."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.power import TTestPower

from bench.stats.power import MAX_SEEDS, POWER, detectable_effect, pooled_spread, power_table, seeds_needed, t_power
from bench.stats.settings import resolve_stats


@pytest.mark.parametrize("n, alpha", [(3, 0.05), (5, 0.05), (10, 0.05), (30, 0.05), (5, 0.05 / 6), (10, 0.05 / 6), (30, 0.05 / 6)])
def test_power_equals_statsmodels(n, alpha):
    d = detectable_effect(n, alpha)
    assert d == pytest.approx(TTestPower().solve_power(nobs=n, alpha=alpha, power=POWER), rel=1e-6)
    for effect in (0.3, 1.0, d):
        assert float(t_power(effect, n, alpha)) == pytest.approx(TTestPower().power(effect, n, alpha), rel=1e-9)


@pytest.mark.parametrize("effect", [0.2, 0.5, 1.0, 2.0])
def test_seeds_needed_is_statsmodels_rounded_up(effect):
    alpha = 0.05 / 6
    assert seeds_needed(effect, alpha) == math.ceil(TTestPower().solve_power(effect_size=effect, alpha=alpha, power=POWER))


def test_far_tails_do_not_break_the_search():
    # n = 3 at alpha / 6: scipy's noncentral t is NaN in the far lower tail (statsmodels' solver
    # then stops at the wrong root); the power at the answer is still exactly 0.8
    d = detectable_effect(3, 0.05 / 6)
    assert float(t_power(d, 3, 0.05 / 6)) == pytest.approx(POWER) and np.isnan(seeds_needed(0.01, 0.05))


def test_pooled_spread_hand_worked():
    # setting s1: 1, 2, 3 (variance 1, 2 df); s2: 2, 4 (variance 2, 1 df): pooled variance
    # (2 x 1 + 1 x 2) / 3 = 4/3, SD 1.1547; seeds: the median of 3 and 2, rounded down
    diffs = pd.DataFrame({"method": "A", "block": ["s1"] * 3 + ["s2"] * 2, "diff": [1.0, 2, 3, 2, 4]})
    row = pooled_spread(diffs).iloc[0]
    assert (row["settings"], row["seeds"], row["df"]) == (2, 2, 3) and row["sd"] == pytest.approx(math.sqrt(4 / 3))


def scored(values: dict[str, list[list[float]]]) -> pd.DataFrame:
    """Completed runs: method -> per setting, one score per seed."""
    rows = [{"study": "all", "setting": f"s{b}", "block": f"s{b}", "method": method, "seed": seed, "run_id": f"{method}-{b}-{seed}", "value": v}
            for method, blocks in values.items() for b, seeds in enumerate(blocks) for seed, v in enumerate(seeds)]
    return pd.DataFrame(rows)


def test_power_table_per_method_and_its_degenerate_rows():
    control = [[0.70, 0.72, 0.69, 0.71], [0.60, 0.63, 0.61, 0.62]]
    values = {"FedAvg": control,
              "Noisy": [[0.71, 0.74, 0.68, 0.73], [0.62, 0.62, 0.63, 0.61]],
              "Shift": [[(v * 3 - 0.06) / 3 for v in block] for block in control],  # -0.02 on every seed, up to rounding
              "Tiny": [[v + d for v, d in zip(block, (0.0001, -0.0001, 0.0002, 0.0))] for block in control]}
    settings = resolve_stats({})
    table = power_table(scored(values), "FedAvg", settings).set_index("method")
    family = len(values) - 1
    assert set(table.index) == set(values) - {"FedAvg"} and (table["alpha_holm"] == settings["alpha"] / family).all()
    noisy = table.loc["Noisy"]
    diffs = np.array(values["Noisy"]) - np.array(control)
    sd = math.sqrt(diffs.var(axis=1, ddof=1).mean())  # two settings of 4 seeds: equal weights
    assert noisy["sd"] == pytest.approx(sd) and noisy["seeds"] == 4 and noisy["df"] == 6
    assert noisy["detectable"] == pytest.approx(detectable_effect(4, settings["alpha"] / family) * sd)
    assert noisy["seeds_needed"] == seeds_needed(0.01 / sd, settings["alpha"] / family) and noisy["note"] == ""
    assert table.loc["Shift", "note"].startswith("constant difference: no test") and np.isnan(table.loc["Shift", ["detectable", "seeds_needed"]].astype(float)).all()
    assert table.loc["Tiny", "seeds_needed"] == 2  # a spread of 0.01 pp detects 1 pp with the fewest seeds
    one_seed = power_table(scored({"FedAvg": [[0.7], [0.6]], "A": [[0.71], [0.65]]}), "FedAvg", settings)
    assert one_seed["note"].tolist() == ["one paired seed per setting: no spread to plan from"]
    assert power_table(scored({"A": [[0.7]]}), "FedAvg", settings).empty


def test_more_seeds_than_the_search_covers_are_said_so():
    values = {"FedAvg": [[0.5, 0.5, 0.5]], "Wild": [[0.1, 0.9, 0.5]]}  # SD 0.4 against a 1 pp difference
    row = power_table(scored(values), "FedAvg", resolve_stats({})).iloc[0]
    assert np.isnan(row["seeds_needed"]) and row["note"] == f"more than {MAX_SEEDS} seeds"
