"""Side-by-side benchmark driver (see benchmarks/side-by-side.sh for the command and settings)."""
import argparse
import json
import os
import platform
import sys
sys.dont_write_bytecode = True
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from contenders import Native  # noqa: E402
from fleetsync import FleetSync  # noqa: E402
import report  # noqa: E402
from workloads import WORKLOADS, run_workloads, update_script  # noqa: E402


def log(message):
    print(message, flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="10,000 rows and transactions instead of 100,000")
    p.add_argument("--only", default="native,fleetsync,bucardo", help="comma-separated contenders")
    p.add_argument("--bin", required=True, help="the fleetsync binary")
    p.add_argument("--out", required=True, help="directory for results.json, results.md and lag.png")
    p.add_argument("--idle", type=int, default=None, help="idle exchanges of the vessel daemon to measure memory after")
    p.add_argument("--batch-events", type=int, default=1000)
    p.add_argument("--max-batch-events", type=int, default=None, help="FleetSync's [limits] max_batch_events (default: the product's)")
    p.add_argument("--vessel-setting", action="append", default=[], help="an extra line for the FleetSync vessel's [vessel] section, e.g. 'read_ahead = false' (repeatable)")
    p.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE",
                   help="an extra server setting for every cluster (repeatable), e.g. jit=off")
    p.add_argument("--workloads", default="stream,bulk,drain", help="comma-separated workloads to run: stream, bulk, drain")
    p.add_argument("--repeat", type=int, default=1, help="run the bulk workload this many times (its median reported)")
    p.add_argument("--perf", action="store_true", help="profile each stream with perf (system wide; slows it: figures not comparable)")
    a = p.parse_args()
    workloads = a.workloads.split(",")
    if not workloads or any(w not in WORKLOADS for w in workloads):
        p.error(f"--workloads takes a comma-separated list of {', '.join(WORKLOADS)}, not {a.workloads!r}")
    if a.repeat < 1:
        p.error("--repeat takes a count of at least 1")
    rows = transactions = 10_000 if a.quick else 100_000
    import pg
    pg.SETTINGS += a.pg_setting
    if a.perf:
        pg.SETTINGS += ["shared_preload_libraries=pg_stat_statements,auto_explain", "pg_stat_statements.track=all",
                        "auto_explain.log_min_duration=100ms", "auto_explain.log_analyze=on", "auto_explain.log_nested_statements=on"]
    idle_exchanges = a.idle if a.idle is not None else (20 if a.quick else 120)
    timeout = 120 if a.quick else 180  # per wait for the target; Bucardo has needed minutes
    only = a.only.split(",")
    os.makedirs(a.out, exist_ok=True)
    work = tempfile.mkdtemp(prefix="fleetsync-side-by-side-")
    os.chmod(work, 0o777)
    script = update_script(work, rows)
    log(f"==> {rows:,} rows, {transactions:,} transactions per workload, {os.cpu_count()} cores, {platform.node()}; work dir {work}")
    log(f"    server settings: {' '.join(pg.SETTINGS)}")
    results, idle, notes = [], None, []
    factories = {
        "native": lambda: Native(work, rows),
        "fleetsync": lambda: FleetSync(work, rows, a.bin, batch_events=a.batch_events, max_batch_events=a.max_batch_events, vessel_settings=a.vessel_setting),
        "bucardo": lambda: __import__("bucardo").Bucardo(work, rows),
    }
    for name in only:
        log(f"==> {name}: setting up two clusters")
        contender = None
        started = time.monotonic()
        try:
            contender = factories[name]()
            for run in contender.runs():
                log(f"==> {run.name}")
                results.append(run_workloads(run, rows, transactions, script, timeout, log, a.out if a.perf else None,
                                             workloads, a.repeat))
            if name == "fleetsync" and idle_exchanges > 0:
                log(f"==> FleetSync vessel daemon idle for {idle_exchanges} exchanges")
                idle = contender.idle(idle_exchanges, timeout=idle_exchanges * 3 + 60, log=log)
                log(f"    {idle[0]} exchanges in {idle[1]} s: resident {idle[2]} MB → {idle[3]} MB, peak {idle[4]} MB")
        except Exception as e:  # one contender failing must not lose the others' figures
            log(f"!!! {name} failed: {e}")
            notes.append(f"{name} failed: {e}")
        finally:
            if contender is not None:
                contender.stop()
            if a.perf:  # the clusters' logs hold auto_explain's plans of statements over 100 ms
                os.system(f"cp {work}/*.log {a.out}/ 2>/dev/null")
                os.system(f"for f in {work}/*/*.log; do cp $f {a.out}/$(basename $(dirname $f))-$(basename $f); done 2>/dev/null")
        log(f"    ({name}: {time.monotonic() - started:.0f} s in all)")
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"rows": rows, "transactions": transactions, "results": results, "idle": idle, "notes": notes}, f, indent=1)
    figures = report.figures_table(results)
    targets = report.targets_table(results, idle)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(figures + "\n\n" + targets + "\n" + "".join(f"\n- {n}" for n in notes) + "\n")
    if any("lags" in r for r in results):
        report.chart(results, os.path.join(a.out, "lag.png"), transactions)
    log("\n" + figures + "\n\nFleetSync against the issue's targets (ratios to native logical replication in this run):\n\n" + targets)
    for n in notes:
        log(f"- {n}")
    log(f"\nresults: {a.out}/results.md, results.json, lag.png")
    os.system(f"rm -rf {work}")


if __name__ == "__main__":
    main()
