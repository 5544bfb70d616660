"""FleetSync as a contender: a shore and a vessel on their own clusters, set up as
scripts/exchange-demo.sh does (init, keygen, enroll, the vessel pins the shore's identity), the
shore running `fleetsync serve` and the vessel the `fleetsync run` daemon; every exchange sealed.
The shore's table is onboarded to the vessel by a first `fleetsync sync` (not measured)."""
import os
import shutil
import signal
import subprocess
import time

from contenders import Run, make_clusters
from measure import memory_kb, wait_equal
from pg import free_port

TABLE = """
[[table]]
name = "bench_item"
route = "broadcast"
default_owner = "shared"
"""


class FleetSync:
    label = "FleetSync"

    def __init__(self, work, rows, binary, batch_events=1000, interval=1, max_batch_events=None, vessel_settings=()):
        self.bin, self.work = binary, os.path.join(work, "fleetsync")
        os.makedirs(self.work)
        self.shore, self.vessel = make_clusters(work, "fleetsync", rows)
        self.http_port = free_port()
        limits = f"\n[limits]\nbatch_events = {batch_events}\n"
        if max_batch_events:  # the ceiling of adaptive batches (default: the product's)
            limits += f"max_batch_events = {max_batch_events}\n"
        self.shore_toml = self._write("shore.toml", f"""
[node]
role = "shore"
id = "shore"
[database]
url = "{self.shore.url('bench')}"
[shore]
listen = "127.0.0.1:{self.http_port}"
[keys]
directory = "{self.work}/keys-shore"
{limits}{TABLE}""")
        extra = "\n".join(vessel_settings)  # e.g. read_ahead = false
        self.vessel_toml = self._write("vessel.toml", f"""
[node]
role = "vessel"
id = "aurora"
[database]
url = "{self.vessel.url('bench')}"
[vessel]
shore_url = "http://127.0.0.1:{self.http_port}"
interval_seconds = {interval}
wake_on_change = true
shore_identity = "{self.work}/shore-identity.pub"
{extra}
[keys]
directory = "{self.work}/keys-aurora"
{limits}{TABLE}""")
        for toml in (self.shore_toml, self.vessel_toml):
            self._cli("init", "--config", toml)
            self._cli("keygen", "--config", toml)
        shutil.copy(f"{self.work}/keys-shore/identity.pub", f"{self.work}/shore-identity.pub")
        self._cli("enroll", "--config", self.shore_toml, "--vessel", "aurora", "--identity", f"{self.work}/keys-aurora/identity.pub")
        self.serve = self._spawn("serve", self.shore_toml, "warning")
        log = f"{self.work}/serve.log"
        for _ in range(100):
            if "listening" in open(log).read():
                break
            time.sleep(0.1)
        else:
            raise RuntimeError(f"fleetsync serve did not start listening: {open(log).read()[-2000:]}")
        started = time.monotonic()
        self._cli("sync", "--config", self.vessel_toml)
        print(f"    onboarding {rows} rows to the vessel (fleetsync sync): {time.monotonic() - started:.1f} s", flush=True)
        if wait_equal(self.shore, self.vessel, "bench", 60) is None:
            raise RuntimeError("FleetSync: the vessel does not hold the shore's rows after onboarding")
        self.daemon, self.daemon_peak_kb, self.daemons = None, 0, 0
        self._start_daemon()

    def _write(self, name, text):
        path = os.path.join(self.work, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def _cli(self, *args):
        out = subprocess.run([self.bin, *args], capture_output=True, text=True)
        if out.returncode != 0:
            raise RuntimeError(f"fleetsync {' '.join(args)} failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr[-1500:]}")
        return out.stdout

    def _spawn(self, command, toml, level):
        log = open(f"{self.work}/{command}.log", "a")
        env = dict(os.environ, FLEETSYNC_LOG_LEVEL=level)
        return subprocess.Popen([self.bin, command, "--config", toml], stdout=log, stderr=subprocess.STDOUT, env=env)

    def _start_daemon(self):
        self.daemon = self._spawn("run", self.vessel_toml, "info")
        self.daemons += 1

    def _stop_daemon(self, cpu=None):
        if cpu is not None:
            cpu.retire("fleetsync run (vessel)", [self.daemon.pid])
        self.daemon_peak_kb = max(self.daemon_peak_kb, memory_kb(self.daemon.pid))
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(timeout=60)

    def exchanges(self):
        """Exchanges the daemons logged so far."""
        return open(f"{self.work}/run.log").read().count("exchange done")

    def memory(self):
        return {"fleetsync serve (shore)": memory_kb(self.serve.pid) / 1024,
                "fleetsync run (vessel)": max(self.daemon_peak_kb, memory_kb(self.daemon.pid)) / 1024}

    def runs(self):
        roles = {"fleetsync serve (shore)": lambda: [self.serve.pid],
                 "fleetsync run (vessel)": lambda: [self.daemon.pid]}
        return [Run(f"{self.label} shore → vessel", self.shore, self.vessel, self._stop_daemon, self._start_daemon, roles, self.memory),
                Run(f"{self.label} vessel → shore", self.vessel, self.shore, self._stop_daemon, self._start_daemon, roles, self.memory)]

    def idle(self, exchanges, timeout, log=print):
        """Lets the daemon exchange with nothing to send (resident memory logged every 100
        exchanges); returns (exchanges counted, seconds, resident MB at the start and at the end,
        peak MB of this daemon)."""
        first, started, reported = self.exchanges(), time.monotonic(), 0
        rss0 = memory_kb(self.daemon.pid, "VmRSS") / 1024
        while self.exchanges() - first < exchanges and time.monotonic() - started < timeout:
            done = self.exchanges() - first
            if done >= reported + 100:
                reported = done - done % 100
                log(f"    after {done} idle exchanges ({time.monotonic() - started:.0f} s): resident {memory_kb(self.daemon.pid, 'VmRSS') / 1024:.1f} MB")
            time.sleep(1)
        return (self.exchanges() - first, round(time.monotonic() - started), round(rss0, 1),
                round(memory_kb(self.daemon.pid, "VmRSS") / 1024, 1), round(memory_kb(self.daemon.pid) / 1024, 1))

    def stop(self):
        for p in (self.daemon, self.serve):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        for c in (self.shore, self.vessel):
            c.stop()
