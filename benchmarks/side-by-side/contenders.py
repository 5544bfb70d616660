"""The contenders: native logical replication, FleetSync (one shore, one vessel, both directions)
and Bucardo. Each sets up its two clusters and offers runs: a source, a target, how to pause and
resume replication, which processes are its own (for CPU) and their peak memory."""
import os
import signal
import subprocess
import time

from measure import memory_kb, pids_matching, tree_cpu, wait_equal
from pg import Cluster

HERE = os.path.dirname(os.path.abspath(__file__))
TABLE_SQL = os.path.join(HERE, "..", "bench-table.sql")


def make_clusters(work, prefix, rows, target_rows=0):
    """A source holding the table (rows rows) and a database 'plain' with the same table for the
    baseline, and a target holding the table with target_rows rows; tick sequences on both."""
    source, target = Cluster(work, f"{prefix}-a"), Cluster(work, f"{prefix}-b")
    for cluster, n in ((source, rows), (target, target_rows)):
        cluster.start()
        for db in ("bench", "plain"):
            cluster.execute("postgres", f"CREATE DATABASE {db}")
            cluster.psql_file(db, TABLE_SQL, rows=n if db == "bench" else rows)
            cluster.execute(db, "CREATE SEQUENCE tick")
    return source, target


def target_index(target, source):
    """max(hits) on the target, sampled every 100 ms, comes from an index the source does not have."""
    source.execute("bench", "DROP INDEX IF EXISTS bench_item_hits")
    target.execute("bench", "CREATE INDEX IF NOT EXISTS bench_item_hits ON bench_item (hits)")
    for c in (source, target):
        c.execute("bench", "VACUUM ANALYZE bench_item")


class Run:
    """One direction of one contender."""

    def __init__(self, name, source, target, pause, resume, roles, memory):
        self.name, self.source, self.target = name, source, target
        self.pause, self.resume, self.roles, self.memory = pause, resume, roles, memory

    def prepare(self):
        target_index(self.target, self.source)


class Native:
    label = "native logical replication"

    def __init__(self, work, rows):
        self.source, self.target = make_clusters(work, "native", rows)
        self.source.execute("bench", "CREATE PUBLICATION pub FOR TABLE bench_item")
        self.target.execute("bench", f"CREATE SUBSCRIPTION sub CONNECTION '{self.source.dsn('bench')}' PUBLICATION pub")
        if wait_equal(self.source, self.target, "bench", 300) is None:
            raise RuntimeError("native logical replication: the initial copy did not finish in 300 s")

    def runs(self):
        def pause(cpu):
            self.target.execute("bench", "ALTER SUBSCRIPTION sub DISABLE")
            while self.target.execute("bench", "SELECT count(pid) FROM pg_stat_subscription")[0]:
                time.sleep(0.05)

        def resume():
            self.target.execute("bench", "ALTER SUBSCRIPTION sub ENABLE")

        roles = {
            "walsender": lambda: pids_matching(r"^postgres: .*walsender"),
            "apply worker": lambda: pids_matching(r"^postgres: .*logical replication (apply )?worker"),
        }
        return [Run(self.label, self.source, self.target, pause, resume, roles, lambda: {})]

    def stop(self):
        for c in (self.source, self.target):
            c.stop()
