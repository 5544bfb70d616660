"""The side-by-side benchmark's tables (markdown, printed) and lag chart (PNG)."""


def fmt(v, unit="", digits=0):
    if v is None:
        return "—"
    return f"{v:,.{digits}f}{unit}"


def figures_table(results):
    rows = [
        ("source throughput while syncing ÷ without", lambda r: f"{r['source_ratio']:.2f} ({fmt(r['source_tps'])} / {fmt(r['plain_tps'])} tps)"),
        ("source throughput with replication paused (capture alone) ÷ without", lambda r: f"{r['paused_tps'] / r['plain_tps']:.2f} ({fmt(r['paused_tps'])} / {fmt(r['plain_tps'])} tps)"),
        ("end to end, single-row UPDATE transactions", lambda r: fmt(r["end_to_end"], " changes/s")),
        ("target equals source, after the writers stop", lambda r: fmt(r["after_writers_seconds"], " s", 2)),
        ("lag during the stream, p50 / p99 / max", lambda r: f"{fmt(r['lag_p50'], ' s', 2)} / {fmt(r['lag_p99'], ' s', 2)} / {fmt(r['lag_max'], ' s', 2)}"),
        ("one transaction updating every row, until the target has it", lambda r: f"{fmt(r['bulk_seconds'], ' s', 2)} (commit {fmt(r['bulk_statement_seconds'], ' s', 2)})"),
        ("drain of the backlog", lambda r: f"{fmt(r['drain_rate'], ' changes/s')} ({fmt(r['drain_seconds'], ' s', 1)})"),
        ("CPU s during the stream, all processes but pgbench", lambda r: f"{total(r['stream_cpu']):.1f}"),
        ("CPU s during the stream, per process (walsender and apply worker are part of their cluster's)", lambda r: ", ".join(f"{k} {v:.1f}" for k, v in r["stream_cpu"].items())),
        ("CPU s, bulk / drain, all processes", lambda r: f"{cpu_total(r, 'bulk_cpu')} / {cpu_total(r, 'drain_cpu')}"),
        ("peak memory of the sync processes (VmHWM)", lambda r: ", ".join(f"{k} {v:.0f} MB" for k, v in r["memory_mb"].items()) or "(inside the servers)"),
    ]
    out = ["| figure | " + " | ".join(r["name"] for r in results) + " |", "|---" * (len(results) + 1) + "|"]
    for label, f in rows:
        out.append(f"| {label} | " + " | ".join(cell(f, r) for r in results) + " |")
    return "\n".join(out)


def cell(f, r):
    """A figure of r, or — when its workload did not run (--workloads)."""
    try:
        return f(r)
    except KeyError:
        return "—"


def cpu_total(r, key):
    return f"{total(r[key]):.1f}" if key in r else "—"


def total(cpu):
    # walsender and apply worker run inside the clusters: already counted in their totals
    return sum(v for k, v in cpu.items() if k not in ("walsender", "apply worker", "whole machine"))


def verdict(value, target, higher_is_better, unit=""):
    if value is None:
        return "not measured"
    ok = value >= target if higher_is_better else value <= target
    if ok:
        return "**met**"
    factor = target / value if higher_is_better else value / target
    return f"**missed** by {abs(value - target):.2f}{unit} (×{factor:.1f} to go)"


def targets_table(results, idle):
    native = next((r for r in results if r["name"].startswith("native")), None)
    out = ["| target | " + " | ".join(f"{r['name']}" for r in results if r["name"].startswith("FleetSync")) + " |",
           "|---" * (1 + sum(r["name"].startswith("FleetSync") for r in results)) + "|"]

    def ratio(a, b):
        return round(a / b, 2) if a is not None and b else None

    checks = [
        ("end to end ≥ 0.8× native", lambda r: (ratio(r["end_to_end"], native and native["end_to_end"]), 0.8, True, "×")),
        ("one 100,000-row transaction ≤ 2× native's time", lambda r: (ratio(r["bulk_seconds"], native and native["bulk_seconds"]), 2.0, False, "×")),
        ("drain ≥ 0.5× native's rate", lambda r: (ratio(r["drain_rate"], native and native["drain_rate"]), 0.5, True, "×")),
        ("source throughput ratio ≥ native's", lambda r: (r["source_ratio"], native and native["source_ratio"], True, "")),
        ("p99 lag during the stream ≤ 2 s", lambda r: (r["lag_p99"], 2.0, False, " s")),
        ("vessel daemon peak memory ≤ 64 MB", lambda r: (r["memory_mb"].get("fleetsync run (vessel)"), 64, False, " MB")),
    ]
    for label, f in checks:
        cells = []
        for r in results:
            if not r["name"].startswith("FleetSync"):
                continue
            try:
                value, target, higher, unit = f(r)
            except KeyError:  # its workload did not run (--workloads)
                cells.append("not run")
                continue
            value = None if value is None else round(value, 2)
            if target is None or value is None:
                cells.append(f"{value} (no native figure)")
                continue
            shown = "—" if value is None else f"{value}{unit}" if unit != "×" else f"{value}×"
            cells.append(f"{shown} — {verdict(value, target, higher, '' if unit == '×' else unit)}")
        if any(c != "not run" for c in cells):
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    if idle:
        n, seconds, rss0, rss, peak = idle
        cells = f"{rss} MB resident after {n} idle exchanges in {seconds} s (at their start {rss0} MB) — {verdict(rss, 32, False, ' MB')}"
        if n < 1000:
            cells += f"; only {n} of the target's 1,000 exchanges in this run"
        out.append(f"| vessel daemon ≤ 32 MB idle after 1,000 exchanges | {cells} | |")
    return "\n".join(out)


def chart(results, path, transactions):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.6), dpi=80)
    for r in results:
        xs = [t for t, _ in r["lags"]]
        ys = [max(lag, 0.05) for _, lag in r["lags"]]  # log scale: below the 100 ms sampling step shown as 0.05
        ax.plot(xs, ys, label=r["name"], linewidth=1.2)
    ax.set_xlabel(f"seconds since the writers started ({transactions:,} single-row UPDATE transactions, 2 clients)")
    ax.set_yscale("log")
    ax.set_ylabel("lag (s, log scale)")
    ax.set_title("Lag of the target behind the source during the stream")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
