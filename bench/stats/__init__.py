"""Statistics, paper tables, figures and automatic ranking of a results folder.

By concept, in pipeline order:

    settings    the statistics settings (bench/schemas/stats.schema.yaml)
    collect     run directories -> runs table (one row per study membership) + metrics
    tidy        the tidy results table, written as Parquet
    scores      each run's headline curve and final scores
    bootstrap   BCa bootstrap CIs of means, batched
    summaries   per setting and method: mean, CI, run counts
    significance, paired    paired t, exact Wilcoxon, Holm; every method vs the references
    target      rounds and MB to a target, runs that never reach it censored
    ranking     Friedman, Nemenyi CD, pairwise Wilcoxon, leaderboard
    sweeps      the ablations present in the results (beta, clients, tau, per, ...)
    analysis    all of the above, computed once
    tables, render, figures    the outputs;  report: writes everything into one folder
    synthetic   run directories in the engine's format without training (tests, benchmark)
"""
