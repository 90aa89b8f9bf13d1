"""Shared test fixtures. Test data lives in tests/data (see its README for origins).

Sets AGRISERIES_STAC_SCHEMAS so that every item written is checked against its extensions.
Also a real PostgreSQL server for the job-store tests (``postgres_server``, ``postgres_url``).
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import random
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"

# Every STAC item the store writes in the tests (in this process and in the Dask workers, which
# inherit the environment) is validated against the core schema and the schema of every
# extension it declares, offline (agriseries.core.stac.stac_schema_errors).
os.environ["AGRISERIES_STAC_SCHEMAS"] = str(DATA / "stac_schemas")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The folder of real test data."""
    return DATA


WC_TAIL = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"


@pytest.fixture(scope="session")
def wc_patch():
    """The WorldCereal Flanders patch, read once: its S2 L2A series (10 m and 20 m files
    merged, in memory), land cover ``LC`` and crop type ``CT`` labels (LPIS)."""
    import xarray as xr

    from agriseries.crop.features import merge_resolutions
    from agriseries.io.timeseries import read_timeseries

    wc = DATA / "worldcereal"
    ds = merge_resolutions(read_timeseries(wc / f"S2_L2A_10m_{WC_TAIL}"),
                           read_timeseries(wc / f"S2_L2A_20m_{WC_TAIL}")).compute()
    with xr.open_dataset(wc / f"OUTPUT_POLY-110_10m_{WC_TAIL}") as lab:
        lc, ct = lab["LC"].values, lab["CT"].values
    return ds, lc, ct


@pytest.fixture(scope="session")
def wc_season_features(wc_patch):
    """The crop features (docs/crop.md, "Features") of the patch over the 2018 season: the
    extractor and the ``(feature, y, x)`` array."""
    from agriseries.crop.features import (
        SeriesFeatures,
        SeriesParams,
        feature_map,
        season_dates,
    )

    ex = SeriesFeatures(season_dates("2018-03-01", "2018-10-31"), SeriesParams(chunk=32))
    return ex, feature_map(wc_patch[0], ex).values


# ------------------------------------------------------------------ PostgreSQL, for real
#
# The job-store tests run against a real PostgreSQL server that the test session starts
# itself: initdb into a temporary folder, postgres listening on 127.0.0.1 (a free port) and
# on a UNIX socket in that folder, a fresh database per test, stopped and deleted at the
# end. The tests connect over the UNIX socket (``?host=<folder>`` in the URL): pytest runs
# with --disable-socket --allow-unix-socket, and a private socket folder cannot collide
# with another server. The server binaries come from Debian's postgresql package, which
# .ci/run installs when absent; without them the PostgreSQL tests FAIL (they do not skip).
# postgres refuses to run as root: as root, the server runs as the `postgres` system user
# (or `nobody`) through runuser (or su).

def _postgres_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl: PATH first, then Debian's /usr/lib/postgresql/N/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    for initdb in reversed(candidates):
        bindir = Path(initdb).parent
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


class PostgresServer:
    """A throw-away PostgreSQL server in a temporary folder (see the comment above)."""

    user = "agriseries"

    def __init__(self, durable: bool = False) -> None:
        self.durable = durable
        bindir = _postgres_bindir()
        if bindir is None:
            pytest.fail(
                "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH nor in "
                "/usr/lib/postgresql/*/bin: install Debian's 'postgresql' package "
                "(.ci/run does: apt-get install -y postgresql). The job-store tests need a real "
                "PostgreSQL server.", pytrace=False)
        self.bindir = bindir
        self.run_as = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    continue
                self.run_as = name
                break
            else:
                pytest.fail("running as root and no 'postgres' or 'nobody' user to run the "
                            "PostgreSQL server as (postgres refuses to run as root)", pytrace=False)
        # /tmp, not pytest's tmp_path (0700 folders the server's user could not enter)
        self.root = Path(tempfile.mkdtemp(prefix="agriseries-pg-", dir="/tmp" if self.run_as else None))
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port: int | None = None
        self._dbs = itertools.count()

    def _cmd(self, *args: str) -> list[str]:
        if self.run_as is None:
            return list(args)
        if shutil.which("runuser"):
            return ["runuser", "-u", self.run_as, "--", *args]
        return ["su", "-s", "/bin/sh", self.run_as, "-c", shlex.join(args)]

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        return subprocess.run(self._cmd(*args), capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=self.root, check=False)

    def _pg_start(self, port: int) -> subprocess.CompletedProcess:
        # fast and not crash-safe by default (fsync, synchronous commit and full page writes
        # off); durable=True keeps a commit once acknowledged when the server is killed
        # (the OS does not crash in a test: fsync may stay off)
        lossy = "" if self.durable else "-c synchronous_commit=off -c full_page_writes=off "
        opts = (f"-p {port} -c listen_addresses=127.0.0.1 "
                f"-c unix_socket_directories='{self.root}' -c fsync=off "
                f"{lossy}-c max_connections=60 -c shared_buffers=16MB")
        return self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                         "-w", "-t", "60", "-o", opts, "start", timeout=90)

    def start(self) -> None:
        res = self._run(str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                        "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        if res.returncode != 0:
            pytest.fail(f"initdb failed ({self.bindir}): {res.stdout}\n{res.stderr}", pytrace=False)
        last = ""
        for _ in range(8):  # a random free port; another server may hold the one we picked
            port = random.randint(20000, 60000)
            res = self._pg_start(port)
            if res.returncode == 0:
                self.port = port
                return
            last = self.log.read_text() if self.log.exists() else res.stderr
            if "could not bind" not in last and "already in use" not in last:
                break
        pytest.fail(f"the PostgreSQL server did not start ({self.bindir}/pg_ctl):\n{res.stderr}\n"
                    f"{last[-2000:]}", pytrace=False)

    def pids(self) -> list[int]:
        """The server's processes: the postmaster and its children (from /proc)."""
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:  # the parent pid
                kids.append(int(stat.parent.name))
        return [pid, *kids]

    def kill(self) -> None:
        """``kill -9`` every process of the server (a crash: no shutdown, open connections
        cut); :meth:`restart` brings it back on the same port with the same data."""
        import signal

        procs = self.pids()
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while any(Path(f"/proc/{p}").exists() and "Z" not in _proc_state(p) for p in procs):
            if time.monotonic() > deadline:
                raise RuntimeError(f"the PostgreSQL server processes {procs} did not die")
            time.sleep(0.05)

    def restart(self) -> None:
        """Start the server again on its port after :meth:`kill` (crash recovery runs)."""
        res = self._pg_start(self.port)
        if res.returncode != 0:
            raise RuntimeError(f"the PostgreSQL server did not restart: {res.stderr}\n"
                               f"{self.log.read_text()[-2000:]}")

    def url(self, dbname: str) -> str:
        """SQLAlchemy URL of a database, over the UNIX socket."""
        return f"postgresql+psycopg://{self.user}@/{dbname}?host={self.root}&port={self.port}"

    def create_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = f"test_{next(self._dbs)}"
        with psycopg.connect(host=str(self.root), port=self.port, user=self.user,
                             dbname="postgres", autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.port is not None:
            res = self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast",
                            "-w", "-t", "30", "stop", timeout=60)
            if res.returncode != 0:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "-t", "30", "stop", timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server for the whole session (fails if the binaries are absent)."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """URL of a fresh, empty PostgreSQL database (SQLAlchemy, psycopg 3, UNIX socket)."""
    return postgres_server.create_database()


# ------------------------------------------------------------------ the acquisition replay server
#
# tests/test_acquire*.py run against agriseries.acquire.replay.ReplayServer on 127.0.0.1: the
# recorded provider catalogues of tests/data/acquire plus the real product samples of tests/data
# served as files. The served samples (COGs, zipped SAFE, Landsat) are built once per session;
# each test gets a fresh server. A module sets how long a "stall" fault holds the socket by
# overriding the ``replay_stall_s`` fixture.

@pytest.fixture(scope="session")
def samples(tmp_path_factory):
    """The product samples the replay server serves (agriseries.acquire.replay.build_samples)."""
    from agriseries.acquire.replay import build_samples

    return build_samples(DATA, tmp_path_factory.mktemp("served"))


@pytest.fixture()
def replay_stall_s() -> float:
    """Seconds a stalled answer of the replay server holds the socket (its default)."""
    from agriseries.acquire.replay import ReplayServer

    return ReplayServer.STALL_S


@pytest.fixture()
def srv(samples, replay_stall_s):
    """A fresh replay server with the recorded and sample provider APIs, stopped after the test."""
    from agriseries.acquire.replay import ReplayServer, sample_apis

    with ReplayServer() as server:
        sample_apis(DATA, samples, server)
        server.stall_s = replay_stall_s
        yield server
