"""Bucardo 5 (Debian's `bucardo` package) as a contender: its own database 'bucardo' in the target
cluster (`bucardo install`), a one-way sync source → target of the table, the target filled by
the sync's first run (onetimecopy), paused with `bucardo pause` and resumed with `bucardo resume`."""
import os
import signal
import subprocess
import time

from contenders import Run, make_clusters
from measure import memory_kb, pids_matching, wait_equal

BUCARDO = r"^Bucardo "


class Bucardo:
    label = "Bucardo"

    def __init__(self, work, rows):
        self.dir = os.path.join(work, "bucardo")
        os.makedirs(os.path.join(self.dir, "run"))
        os.makedirs(os.path.join(self.dir, "log"))
        self.started = False
        self.source, self.target = make_clusters(work, "bucardo", rows)
        t = self.target
        self._cli("install", "--batch", "--dbhost", "127.0.0.1", "--dbport", str(t.port), "--dbuser", "postgres",
                  "--dbname", "postgres", "--pid-dir", f"{self.dir}/run", connect=False)
        self._cli("add", "db", "src", "dbname=bench", "host=127.0.0.1", f"port={self.source.port}", "user=postgres")
        self._cli("add", "db", "tgt", "dbname=bench", "host=127.0.0.1", f"port={t.port}", "user=postgres")
        self._cli("add", "table", "public.bench_item", "db=src", "relgroup=g")
        self._cli("add", "sync", "s", "relgroup=g", "dbs=src:source,tgt:target", "onetimecopy=2")
        self._cli("set", f"piddir={self.dir}/run")
        self._cli("start", "--log-destination", f"{self.dir}/log")
        self.started = True
        if wait_equal(self.source, self.target, "bench", 300) is None:
            raise RuntimeError(f"Bucardo: the first copy did not finish in 300 s; log: {self._log_tail()}")

    def _cli(self, *args, connect=True):
        base = ["bucardo", "--no-bucardorc"]
        if connect:
            base += ["--db-host", "127.0.0.1", "--db-port", str(self.target.port), "--db-user", "bucardo", "--db-name", "bucardo"]
        out = subprocess.run(base + list(args), capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"bucardo {' '.join(args)} failed ({out.returncode}): {out.stdout[-1500:]}{out.stderr[-1500:]}")
        return out.stdout

    def _log_tail(self):
        try:
            return open(f"{self.dir}/log/log.bucardo").read()[-1500:]
        except FileNotFoundError:
            return "(no log)"

    def pids(self):
        return pids_matching(BUCARDO)

    def memory(self):
        return {"Bucardo (all its processes)": sum(memory_kb(p) for p in self.pids()) / 1024}

    def runs(self):
        def pause(cpu):
            self._cli("pause", "s")

        def resume():
            self._cli("resume", "s")

        return [Run(self.label, self.source, self.target, pause, resume, {"Bucardo (all its processes)": self.pids}, self.memory)]

    def stop(self):
        if self.started:
            try:
                self._cli("stop")
            except Exception:
                pass
            for _ in range(50):
                if not self.pids():
                    break
                time.sleep(0.1)
            for pid in self.pids():  # our own daemon, if it did not stop by itself
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for c in (self.source, self.target):
            c.stop()
