"""The three workloads, run on one direction of one contender:

stream  100,000 single-row UPDATE transactions from two pgbench clients while replication runs;
        the same on the source cluster's 'plain' database (no capture, no publication) first,
        for the source throughput ratio; lag sampled every 100 ms.
bulk    one transaction updating every row.
drain   replication paused, 100,000 single-row UPDATE transactions, replication resumed: the time
        until the target equals the source gives the drain rate."""
import os
import re
import signal
import subprocess
import time

from measure import CPU, LagSampler, percentile, pgbench, wait_equal

CLUSTERS = ("source postgres", "target postgres")


def update_script(work, rows):
    path = os.path.join(work, "update.sql")
    with open(path, "w") as f:
        f.write(f"\\set k random(1, {rows})\nUPDATE bench_item SET hits = nextval('tick') WHERE k = :k;\n")
    return path


def start_profile(directory, name):
    """perf record, system wide with call graphs, until stop_profile (only with --perf)."""
    if not directory:
        return None
    path = os.path.join(directory, re.sub(r"[^a-z]+", "-", name.lower()).strip("-") + ".perf.data")
    return path, subprocess.Popen(["perf", "record", "-a", "-g", "-F", "499", "-o", path],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_profile(profile, log):
    if not profile:
        return
    path, process = profile
    process.send_signal(signal.SIGINT)
    process.wait()
    for sort, lines in (("comm", 25), ("comm,dso,sym", 80)):
        out = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "-g", "none", "--percent-limit", "0.5",
                              "--sort", sort], capture_output=True, text=True).stdout
        text = "\n".join(l for l in out.splitlines() if l.strip() and not l.startswith("#"))
        with open(path.replace(".perf.data", f".{sort.replace(',', '-')}.txt"), "w") as f:
            f.write(out)
        log(f"    profile by {sort} ({path}):\n" + "\n".join(text.splitlines()[:lines]))


TOP_STATEMENTS = """SELECT calls, round(total_exec_time)::bigint, round((total_exec_time / calls)::numeric, 3), rows,
  regexp_replace(left(query, 160), '\\s+', ' ', 'g') FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 8"""


TABLES = """SELECT schemaname || '.' || relname, pg_size_pretty(pg_total_relation_size(relid)), n_live_tup, n_dead_tup,
  autovacuum_count, seq_scan, seq_tup_read FROM pg_stat_user_tables ORDER BY pg_total_relation_size(relid) DESC LIMIT 8"""


def statements(clusters, reset, log):
    """With --perf: the statements that took the most time on each cluster (pg_stat_statements)."""
    for role, cluster in clusters:
        cluster.execute("bench", "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if reset:
            cluster.execute("bench", "SELECT pg_stat_statements_reset()")
            continue
        conn = cluster.connect("bench")
        with conn.cursor() as cur:
            cur.execute(TOP_STATEMENTS)
            log(f"    {role}: statements by total time (calls, total ms, mean ms, rows, statement):")
            for row in cur.fetchall():
                log("      " + " | ".join(str(v) for v in row))
            cur.execute(TABLES)
            log(f"    {role}: tables (name, size, live rows, dead rows, autovacuums, seq scans, rows read by them):")
            for row in cur.fetchall():
                log("      " + " | ".join(str(v) for v in row))
        conn.close()


WORKLOADS = ("stream", "bulk", "drain")


def run_workloads(run, rows, transactions, script, timeout, log, perf=None, workloads=WORKLOADS, repeat=1):
    """The workloads named in workloads, in the order stream, bulk, drain; bulk repeat times
    (its figures are then the median run's, the faster of the middle two for an even count;
    every run's time in bulk_runs)."""
    src, tgt = run.source, run.target
    roles = {"source postgres": lambda: [src.postmaster_pid()], "target postgres": lambda: [tgt.postmaster_pid()]}
    roles.update(run.roles)
    cpu = CPU(roles)
    run.prepare()
    r = {"name": run.name}
    if "stream" in workloads:
        stream(run, r, cpu, transactions, script, timeout, log, perf)
    if "bulk" in workloads:
        runs = [bulk(run, cpu, rows, timeout, log, perf, i, repeat) for i in range(repeat)]
        done = sorted((b for b in runs if b["bulk_seconds"] is not None), key=lambda b: b["bulk_seconds"])
        r.update(done[(len(done) - 1) // 2] if done else runs[-1])
        r["bulk_runs"] = [b["bulk_seconds"] for b in runs]
        if repeat > 1:
            log(f"    one {rows}-row transaction, {repeat} runs: {r['bulk_runs']} s ({'median' if repeat % 2 else 'lower middle'} {r['bulk_seconds']} s)")
    if "drain" in workloads:
        drain(run, r, cpu, transactions, script, timeout, log)
    r["memory_mb"] = {k: round(v, 1) for k, v in run.memory().items()}
    if r["memory_mb"]:
        log(f"    peak memory (VmHWM): {r['memory_mb']}")
    return r


def stream(run, r, cpu, transactions, script, timeout, log, perf):
    src, tgt = run.source, run.target
    plain_tps, _ = pgbench(src, "plain", script, transactions)
    top = max(src.execute("bench", "SELECT coalesce(max(hits), 0) FROM bench_item")[0],
              tgt.execute("bench", "SELECT coalesce(max(hits), 0) FROM bench_item")[0]) + 1
    src.execute("bench", "SELECT setval('tick', %s)", (top,))
    sampler = LagSampler(src, tgt, "bench", top)
    sampler.start()
    time.sleep(0.3)
    if perf:
        statements((("source", src), ("target", tgt)), True, log)
    cpu.start()
    profile = start_profile(perf, run.name)
    t0 = time.monotonic()
    tps, _ = pgbench(src, "bench", script, transactions)
    writers_done = time.monotonic()
    equal = wait_equal(src, tgt, "bench", timeout)
    stop_profile(profile, log)
    if perf:
        statements((("source", src), ("target", tgt)), False, log)
    r["stream_cpu"] = cpu.stop()
    time.sleep(0.3)
    sampler.finish()
    end = equal or time.monotonic()
    lags = [(t, lag) for t, lag in sampler.lags(t0) if t <= end - t0]
    during = [lag for t, lag in lags if t >= 0]
    r.update(plain_tps=round(plain_tps), source_tps=round(tps), source_ratio=round(tps / plain_tps, 3),
             stream_seconds=round(end - t0, 2), caught_up=equal is not None,
             after_writers_seconds=round(end - writers_done, 2),
             end_to_end=round(transactions / (end - t0)) if equal else None,
             lag_p50=percentile(during, 50), lag_p99=percentile(during, 99), lag_max=max(during, default=None),
             lags=lags)
    log(f"    stream: plain {plain_tps:.0f} tps, with replication {tps:.0f} tps ({r['source_ratio']:.2f}); "
        f"target equal {r['after_writers_seconds']} s after the writers stopped; end to end {r['end_to_end']} changes/s; "
        f"lag p50 {r['lag_p50']} s, p99 {r['lag_p99']} s; CPU {r['stream_cpu']}")


def bulk(run, cpu, rows, timeout, log, perf, i, repeat):
    """One transaction updating every row; with --perf, profiled and its statements listed."""
    src, tgt = run.source, run.target
    name = f"{run.name} bulk" + (f" {i + 1}" if repeat > 1 else "")
    if perf:
        statements((("source", src), ("target", tgt)), True, log)
    cpu.start()
    profile = start_profile(perf, name)
    t0 = time.monotonic()
    src.execute("bench", "UPDATE bench_item SET quantity = quantity + 1")
    committed = time.monotonic()
    equal = wait_equal(src, tgt, "bench", timeout, gate=False)
    b = {"bulk_cpu": cpu.stop()}
    stop_profile(profile, log)
    if perf:
        statements((("source", src), ("target", tgt)), False, log)
    b.update(bulk_statement_seconds=round(committed - t0, 2), bulk_caught_up=equal is not None,
             bulk_seconds=round(equal - t0, 2) if equal else None)
    log(f"    one {rows}-row transaction: committed in {b['bulk_statement_seconds']} s, on the target after "
        f"{b['bulk_seconds']} s; CPU {b['bulk_cpu']}")
    return b


def drain(run, r, cpu, transactions, script, timeout, log):
    src, tgt = run.source, run.target
    cpu.start()
    run.pause(cpu)
    # The writers while nothing syncs: for FleetSync the capture trigger alone, for native the
    # WAL it writes anyway. Against the stream's plain run: what capture costs the source by itself.
    paused_tps, _ = pgbench(src, "bench", script, transactions)
    paused_cpu = cpu.stop()
    r["paused_tps"] = round(paused_tps)
    cpu.start()
    t0 = time.monotonic()
    run.resume()
    equal = wait_equal(src, tgt, "bench", timeout)
    r["drain_cpu"] = cpu.stop()
    r["drain_write_cpu"] = paused_cpu
    r.update(drain_caught_up=equal is not None, drain_seconds=round(equal - t0, 2) if equal else None,
             drain_rate=round(transactions / (equal - t0)) if equal else None)
    log(f"    drain of {transactions} changes: {r['drain_seconds']} s, {r['drain_rate']} changes/s; CPU {r['drain_cpu']}")
