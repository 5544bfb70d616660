"""What the side-by-side benchmark measures: CPU seconds and peak memory of processes (from
/proc), the lag between source and target sampled every 100 ms, when the target equals the source,
and pgbench throughput."""
import bisect
import os
import re
import subprocess
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")
CHEAP_SUM = "SELECT coalesce(sum(hits), 0)::text || '/' || coalesce(sum(quantity), 0)::text FROM bench_item"
CHECKSUM = ("SELECT count(*)::text || '/' || coalesce(sum(hashtext(ROW(id, k, code, title, quantity, hits, unit_price, "
            "weight_kg, active, due_on, created_at, updated_at)::text)::bigint), 0)::text FROM bench_item")


def _stat(pid):
    """(ppid, own cpu seconds, reaped children's cpu seconds) of a live process, or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK, (int(fields[13]) + int(fields[14])) / TICK


def _all_pids():
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def tree_cpu(roots):
    """CPU seconds of the processes roots and all their live descendants, plus what their reaped
    children used (a postmaster reaps every backend, so a cluster's total includes exited ones)."""
    stats = {pid: s for pid in _all_pids() if (s := _stat(pid))}
    children = {}
    for pid, (ppid, _, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    total, todo, seen = 0.0, list(roots), set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        _, own, reaped = stats[pid]
        total += own + reaped
        todo += children.get(pid, [])
    return total


def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except FileNotFoundError:
        return ""


def pids_matching(pattern):
    return [pid for pid in _all_pids() if re.search(pattern, cmdline(pid))]


def memory_kb(pid, field="VmHWM"):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except FileNotFoundError:
        pass
    return 0


def machine_cpu():
    """CPU seconds the whole machine spent busy (all processes, this benchmark's and others')."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / TICK


class CPU:
    """CPU seconds per role between start() and stop(); roles maps a name to a function giving
    the root pids to account (looked up at each snapshot, so restarted processes count)."""

    def __init__(self, roles):
        self.roles = roles
        self.retired = {}  # CPU of processes of a role that were stopped between snapshots

    def snapshot(self):
        snap = {name: tree_cpu(pids()) for name, pids in self.roles.items()}
        snap["whole machine"] = machine_cpu()
        return snap

    def start(self):
        self.retired = {name: 0.0 for name in list(self.roles) + ["whole machine"]}
        self.begin = self.snapshot()

    def retire(self, name, pids):
        """Call just before stopping the processes pids of role name: keeps what they used."""
        self.retired[name] += tree_cpu(pids)

    def stop(self):
        end = self.snapshot()
        return {name: round(end[name] + self.retired[name] - self.begin[name], 2) for name in end}


class LagSampler(threading.Thread):
    """Every 100 ms: the newest tick the source has handed out and the newest one visible on the
    target (max(hits), served by an index on the target only). Lag of a sample = its time minus the
    time the source first reached the target's newest value."""

    def __init__(self, source, target, db, base):
        super().__init__(daemon=True)
        self.src, self.tgt, self.base = source.connect(db), target.connect(db), base
        self.samples, self.running = [], True

    def run(self):
        with self.src.cursor() as s, self.tgt.cursor() as t:
            while self.running:
                now = time.monotonic()
                s.execute("SELECT last_value FROM tick")
                src = s.fetchone()[0]
                t.execute("SELECT max(hits) FROM bench_item")
                tgt = t.fetchone()[0] or 0
                self.samples.append((now, src, tgt))
                time.sleep(max(0.0, 0.1 - (time.monotonic() - now)))

    def finish(self):
        self.running = False
        self.join()
        self.src.close()
        self.tgt.close()

    def lags(self, t0):
        """[(seconds since t0, lag in seconds)] for every sample."""
        times = [s[0] for s in self.samples]
        sources = [s[1] for s in self.samples]
        out = []
        for now, _, tgt in self.samples:
            j = bisect.bisect_left(sources, max(tgt, self.base))
            first = times[min(j, len(times) - 1)]
            out.append((round(now - t0, 3), round(max(0.0, now - first), 3)))
        return out


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100 * (len(v) - 1))))]


def wait_equal(source, target, db, timeout, gate=True):
    """Waits until the target holds what the source holds; returns the monotonic time it first
    did, or None. The sums and the checksum read the whole table (tens of ms each, on the target's
    cores), so: with gate, first until the target's newest tick (its index) reaches the source's,
    polled every 100 ms; then the cheap sums, polled every 100 ms at first and every 5 % of the
    time waited so far later; when they match, the checksum of all twelve columns."""
    want_cheap = source.execute(db, CHEAP_SUM)[0]
    want_full = source.execute(db, CHECKSUM)[0]
    newest = source.execute(db, "SELECT coalesce(max(hits), 0) FROM bench_item")[0]
    conn = target.connect(db)
    started = time.monotonic()
    end = started + timeout
    try:
        with conn.cursor() as cur:
            while gate and time.monotonic() < end:
                cur.execute("SELECT coalesce(max(hits), 0) FROM bench_item")
                if cur.fetchone()[0] >= newest:
                    break
                time.sleep(0.1)
            while time.monotonic() < end:
                cur.execute(CHEAP_SUM)
                if cur.fetchone()[0] == want_cheap:
                    at = time.monotonic()
                    cur.execute(CHECKSUM)
                    if cur.fetchone()[0] == want_full:
                        return at
                time.sleep(max(0.1, 0.05 * (time.monotonic() - started)))
    finally:
        conn.close()
    return None


def pgbench(cluster, db, script, transactions, clients=2):
    """Runs transactions single-row UPDATE transactions from clients clients; returns (tps, seconds)."""
    args = ["pgbench", "-n", "-h", "127.0.0.1", "-p", str(cluster.port), "-U", "postgres", "-c", str(clients),
            "-j", str(clients), "-t", str(transactions // clients), "-f", script, db]
    started = time.monotonic()
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    elapsed = time.monotonic() - started
    tps = float(re.search(r"tps = ([0-9.]+)", out).group(1))
    return tps, elapsed
