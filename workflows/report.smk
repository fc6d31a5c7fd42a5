# Results table and convergence plot over the runs of this config.


rule report:
    input:
        expand(f"{RESULTS}/{{run}}/run.json", run=sorted(RUNS)),
    output:
        table=f"{REPORTS}/results.md",
        csv=f"{REPORTS}/results.csv",
        plot=f"{REPORTS}/convergence.png",
    log:
        f"{REPORTS}/report.log",
    shell:
        "fedrank report --out {REPORTS} {input} 2> {log}"
