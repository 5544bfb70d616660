"""Throwaway PostgreSQL 15 clusters for the side-by-side benchmark.

Each cluster is made with initdb in its own temporary directory, run as the postgres OS user
(through runuser when this script runs as root) on a free loopback port with the settings the
peers were measured with (fsync off, synchronous_commit off), and stopped by stop()."""
import os
import socket
import subprocess
import time

import psycopg2

PGBIN = "/usr/lib/postgresql/15/bin"
SETTINGS = [
    "listen_addresses=127.0.0.1", "fsync=off", "synchronous_commit=off", "full_page_writes=off",
    "shared_buffers=256MB", "max_wal_size=4GB", "checkpoint_timeout=30min", "wal_level=logical",
    "max_replication_slots=10", "max_wal_senders=10", "max_connections=100", "wal_retrieve_retry_interval=100ms",
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def as_postgres(args):
    return (["runuser", "-u", "postgres", "--"] + args) if os.getuid() == 0 else args


class Cluster:
    def __init__(self, work, name):
        self.name = name
        self.dir = os.path.join(work, name)
        self.port = free_port()
        self.started = False

    def start(self, extra=()):
        subprocess.run(as_postgres([f"{PGBIN}/initdb", "-D", self.dir, "-U", "postgres", "-A", "trust", "--no-sync"]),
                       check=True, stdout=subprocess.DEVNULL)
        options = " ".join(f"-c {s}" for s in list(SETTINGS) + list(extra))
        subprocess.run(as_postgres([f"{PGBIN}/pg_ctl", "-D", self.dir, "-o", f"-p {self.port} -k {self.dir} {options}",
                                    "-l", f"{self.dir}.log", "-w", "start"]), check=True, stdout=subprocess.DEVNULL)
        self.started = True

    def stop(self):
        if self.started:
            subprocess.run(as_postgres([f"{PGBIN}/pg_ctl", "-D", self.dir, "-m", "immediate", "stop"]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.started = False

    def postmaster_pid(self):
        with open(os.path.join(self.dir, "postmaster.pid")) as f:
            return int(f.readline())

    def dsn(self, db):
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def url(self, db):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def connect(self, db):
        conn = psycopg2.connect(self.dsn(db))
        conn.autocommit = True
        return conn

    def execute(self, db, sql, args=None):
        """Runs sql in its own connection; returns the first row of the last statement, if any."""
        conn = self.connect(db)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchone() if cur.description else None
        finally:
            conn.close()

    def psql_file(self, db, path, **variables):
        args = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-d", db]
        for k, v in variables.items():
            args += ["-v", f"{k}={v}"]
        subprocess.run(args + ["-f", path], check=True, stdout=subprocess.DEVNULL)


def wait_for(predicate, timeout, step=0.1):
    """Polls predicate every step seconds; returns the time it first held, or None at timeout."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return time.monotonic()
        time.sleep(step)
    return None
