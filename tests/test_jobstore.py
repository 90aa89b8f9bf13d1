"""The job store against real databases and real faults, on SQLite and on PostgreSQL.

Every test runs twice: on an SQLite file and on a real PostgreSQL server started by the
session (tests/conftest.py: ``postgres_server``). Concurrency and crashes use real
processes (multiprocessing, spawn): two runners claiming at once, a runner killed with
SIGKILL while it holds a lease, another process holding a database lock.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import multiprocessing as mp
import sqlite3
import time
import traceback

import pytest
import sqlalchemy as sa

from agriseries.core.errors import (
    ConfigurationError,
    JobStoreTimeout,
    LeaseLost,
    StoreError,
)
from agriseries.core.ids import Level, ProductId
from agriseries.production.jobstore import (
    Job,
    JobState,
    JobStore,
    ProductRecord,
    job_key,
    params_hash,
)

SPAWN = mp.get_context("spawn")
UTC = dt.UTC


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh database: an SQLite file, or a new database on the session's PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'site' / 'jobs.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture()
def open_store(store_url):
    """Open JobStores on the test's database; all closed at the end."""
    opened: list[JobStore] = []

    def _open(**kw) -> JobStore:
        s = JobStore(store_url, **kw)
        opened.append(s)
        return s

    yield _open
    for s in opened:
        s.close()


def _sleep_until(when: dt.datetime, margin: float = 0.2) -> None:
    time.sleep(max(0.0, (when - dt.datetime.now(UTC)).total_seconds()) + margin)


# ------------------------------------------------------------- processes (spawned)


def _claim_loop(url: str, worker_id: str, barrier, out_q) -> None:
    """A runner: claim and complete until nothing is left; report the keys it claimed."""
    try:
        store = JobStore(url, statement_timeout_s=20, lease_s=120)
        barrier.wait(60)
        got = []
        while True:
            jobs = store.claim(worker_id, limit=1 + len(got) % 3)
            if not jobs:
                break
            for j in jobs:
                got.append(j.key)
                time.sleep(0.004)  # the work: the database is free meanwhile
                store.complete(j, [f"{worker_id}-{j.key[:8]}"])
        store.close()
        out_q.put((worker_id, got))
    except Exception:  # noqa: BLE001 -- report, so that the parent fails with the child's traceback
        out_q.put((worker_id, traceback.format_exc()))


def _claim_and_hang(url: str, worker_id: str, lease_s: float, out_q) -> None:
    """A runner that claims jobs, reports them, then hangs (to be killed with SIGKILL)."""
    try:
        store = JobStore(url, lease_s=lease_s)
        out_q.put([(j.key, j.lease_expires_at) for j in store.claim(worker_id, limit=5)])
    except Exception:  # noqa: BLE001
        out_q.put(traceback.format_exc())
    time.sleep(600)


def _hold_lock(url: str, backend: str, locked, release) -> None:
    """Another process holding a lock on the whole jobs table until told to release it."""
    if backend == "sqlite":
        con = sqlite3.connect(sa.make_url(url).database, isolation_level=None)
        con.execute("BEGIN EXCLUSIVE")
        locked.set()
        release.wait(60)
        con.execute("COMMIT")
        con.close()
    else:
        engine = sa.create_engine(url)
        with engine.connect() as conn:
            conn.exec_driver_sql("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
            locked.set()
            release.wait(60)
            conn.rollback()
        engine.dispose()


# ------------------------------------------------------------------------- tests


@dataclasses.dataclass(frozen=True)
class _Params:
    window_days: int = 30
    bands: tuple[str, ...] = ("B04", "B08")


def test_submit_is_idempotent(open_store):
    store = open_store()
    inputs = ["L2A_S2A_T31UDS_20180703T104021_SEN2COR", "L2A_S2B_T31UDS_20180708T104019_SEN2COR"]
    a = store.submit("composite", inputs, {"window": 30, "weights": [1, 0.5]}, tile="T31UDS")
    # same work: inputs in another order (and repeated), parameter keys in another order
    b = store.submit("composite", inputs[::-1] + inputs[:1], {"weights": (1, 0.5), "window": 30},
                     tile="T31UDS", priority=9)
    assert b.key == a.key == job_key("composite", inputs, {"window": 30, "weights": [1, 0.5]},
                                     "T31UDS")
    assert b.priority == 0 and b.created_at == a.created_at  # the stored job, unchanged
    assert a.state is JobState.QUEUED and a.inputs == tuple(sorted(inputs))
    # different parameters, tile or processor: different jobs
    keys = {a.key,
            store.submit("composite", inputs, {"window": 31, "weights": [1, 0.5]}, tile="T31UDS").key,
            store.submit("composite", inputs, {"window": 30, "weights": [1, 0.5]}, tile="T31UCS").key,
            store.submit("biophysical", inputs, {"window": 30, "weights": [1, 0.5]},
                         tile="T31UDS").key}
    assert len(keys) == 4
    assert store.counts()["queued"] == 4
    # a dataclass and the equivalent mapping are the same parameters
    d = store.submit("lai", inputs[:1], _Params(), tile="T31UDS")
    assert d.params == {"window_days": 30, "bands": ["B04", "B08"]}
    assert store.submit("lai", inputs[:1], {"bands": ["B04", "B08"], "window_days": 30},
                        tile="T31UDS").key == d.key
    assert params_hash(_Params()) == params_hash({"window_days": 30, "bands": ["B04", "B08"]})

    # a done job stays done when submitted again
    (job,) = store.claim("runner-1", limit=1, processors=["lai"])
    store.complete(job, ["L3B_S2A_T31UDS_20180703T104021_AGS"])
    again = store.submit("lai", inputs[:1], _Params(), tile="T31UDS")
    assert again.state is JobState.DONE and again.outputs == ("L3B_S2A_T31UDS_20180703T104021_AGS",)
    assert store.claim("runner-1", processors=["lai"]) == []

    # parameters or inputs that cannot be a key: clear errors
    with pytest.raises(ConfigurationError, match="JSON"):
        store.submit("composite", inputs, {"model": object()})
    with pytest.raises(ConfigurationError, match="JSON"):
        store.submit("composite", inputs, {"threshold": math.nan})
    with pytest.raises(ConfigurationError, match="single id"):
        store.submit("composite", inputs[0], {})
    assert store.counts()["queued"] == 4


def test_claim_exclusive_between_two_processes(open_store, store_url):
    store = open_store()
    keys = {store.submit("l2a", [f"L1C_S2A_T31UDS_2018{m:02d}{d:02d}T104021_ESA"], {"n": 1},
                         tile="T31UDS", priority=d % 3).key
            for m in range(1, 9) for d in range(1, 26)}
    assert len(keys) == 200
    barrier = SPAWN.Barrier(3)
    out_q = SPAWN.Queue()
    procs = [SPAWN.Process(target=_claim_loop, args=(store_url, f"runner-{i}", barrier, out_q))
             for i in (1, 2)]
    for p in procs:
        p.start()
    try:
        barrier.wait(120)  # both runners are connected: go
        results = dict(out_q.get(timeout=120) for _ in procs)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    for worker, got in results.items():
        assert isinstance(got, list), f"{worker} failed:\n{got}"
    claimed = results["runner-1"] + results["runner-2"]
    assert len(claimed) == len(set(claimed)) == 200  # every job claimed exactly once
    assert set(claimed) == keys
    assert results["runner-1"] and results["runner-2"]  # both runners really competed
    done = store.jobs(JobState.DONE)
    assert len(done) == 200 and all(j.attempts == 1 for j in done)
    owner = {k: w for w, got in results.items() for k in got}
    assert all(j.outputs == (f"{owner[j.key]}-{j.key[:8]}",) for j in done)
    assert store.counts() == {"queued": 0, "running": 0, "done": 200, "failed": 0,
                              "quarantined": 0}


def test_lease_of_killed_runner_expires_and_job_is_reclaimed(open_store, store_url):
    store = open_store(lease_s=3.0)
    a = store.submit("l2a", ["L1C_S2A_T31UDS_20180703T104021_ESA"], {}, tile="T31UDS", priority=1)
    poison = store.submit("l2a", ["L1C_S2A_T31UDS_20180708T104019_ESA"], {}, tile="T31UDS",
                          max_attempts=1)
    out_q = SPAWN.Queue()
    p = SPAWN.Process(target=_claim_and_hang, args=(store_url, "doomed", 3.0, out_q))
    p.start()
    try:
        claimed = out_q.get(timeout=60)
        assert isinstance(claimed, list), claimed
        p.kill()  # SIGKILL: no cleanup, the lease stays in the database
        p.join(30)
    finally:
        if p.is_alive():
            p.kill()
    assert p.exitcode == -9
    assert {k for k, _ in claimed} == {a.key, poison.key}
    running = {j.key: j for j in store.jobs(JobState.RUNNING)}
    assert running[a.key].lease_owner == "doomed" and running[a.key].attempts == 1
    assert store.claim("rescuer") == []  # the lease still holds
    _sleep_until(max(t for _, t in claimed))
    got = store.claim("rescuer", limit=5)
    assert [j.key for j in got] == [a.key]  # taken over...
    assert got[0].lease_owner == "rescuer" and got[0].attempts == 2
    lost = store.get(poison.key)  # ...while the job that used its last attempt is quarantined
    assert lost.state is JobState.QUARANTINED and "doomed" in lost.error
    assert "expired" in lost.error
    done = store.complete(got[0], ["L2A_S2A_T31UDS_20180703T104021_AGS"])
    assert done.state is JobState.DONE
    assert store.counts() == {"queued": 0, "running": 0, "done": 1, "failed": 0, "quarantined": 1}


def test_heartbeat_keeps_the_lease_and_a_lost_lease_is_refused(open_store):
    a = open_store(lease_s=1.5)
    b = open_store(lease_s=1.5)  # a second runner, its own connections
    job = a.submit("classify", ["L3A_S2_T31UDS_20180701-20180731_AGS"], {"trees": 100},
                   tile="T31UDS")
    (ja,) = a.claim("runner-a")
    assert ja.state is JobState.RUNNING and ja.key == job.key
    time.sleep(0.3)
    ja2 = a.heartbeat(ja, "runner-a")
    assert ja2.lease_expires_at > ja.lease_expires_at and ja2.heartbeat_at > ja.heartbeat_at
    assert b.claim("runner-b") == []
    with pytest.raises(LeaseLost, match="runner-x"):
        a.heartbeat(ja2, "runner-x")  # not the owner

    _sleep_until(ja2.lease_expires_at)  # runner-a stalls past its lease
    (jb,) = b.claim("runner-b")
    assert jb.key == job.key and jb.attempts == 2
    for call in (lambda: a.heartbeat(ja2, "runner-a"),
                 lambda: a.complete(ja2, ["L4B_S2_T31UDS_20180101-20181231_AGS"]),
                 lambda: a.fail(ja2, "too late")):
        with pytest.raises(LeaseLost, match="runner-b"):
            call()
    assert b.heartbeat(jb, "runner-b").lease_owner == "runner-b"
    done = b.complete(jb, ["L4B_S2_T31UDS_20180101-20181231_AGS"])
    assert done.state is JobState.DONE and done.lease_owner is None
    with pytest.raises(LeaseLost, match="done"):
        b.complete(jb, ["again"])  # never recorded done twice
    assert a.get(job.key).outputs == ("L4B_S2_T31UDS_20180101-20181231_AGS",)


def _parse_count(text: str) -> int:
    return int(text)


def test_retry_with_backoff_then_quarantine_keeps_the_traceback(open_store):
    store = open_store(backoff_s=0.5, max_attempts=3)
    job = store.submit("l2a", ["L1C_S2A_T31UDS_20180703T104021_ESA"], {}, tile="T31UDS")
    for attempt, backoff in ((1, 0.5), (2, 1.0)):
        (j,) = store.claim("runner")
        assert j.attempts == attempt
        try:
            _parse_count("twelve")
        except ValueError as e:
            failed = store.fail(j, e)
        assert failed.state is JobState.FAILED and failed.lease_owner is None
        assert (failed.next_try_at - failed.finished_at).total_seconds() == pytest.approx(
            backoff, abs=2e-3)
        assert store.claim("runner") == []  # not before its backoff
        _sleep_until(failed.next_try_at, margin=0.05)
    (j,) = store.claim("runner")
    assert j.attempts == 3
    try:
        _parse_count("thirteen")
    except ValueError as e:
        q = store.fail(j, e)
    assert q.state is JobState.QUARANTINED and q.next_try_at is None
    assert q.error == "ValueError: invalid literal for int() with base 10: 'thirteen'"
    assert "_parse_count" in q.traceback and "Traceback" in q.traceback
    assert store.claim("runner") == []  # quarantined: never claimed again by itself
    assert [x.key for x in store.jobs("quarantined")] == [job.key]
    assert store.counts()["quarantined"] == 1

    with pytest.raises(ConfigurationError, match="no job"):
        store.retry_quarantined("0" * 64)
    back = store.retry_quarantined(job.key)
    assert back.state is JobState.QUEUED and back.attempts == 0
    assert back.traceback == q.traceback  # kept until the next attempt ends
    with pytest.raises(ConfigurationError, match="only a quarantined job"):
        store.retry_quarantined(job.key)
    (j,) = store.claim("runner")
    assert j.attempts == 1
    # a runner stopping cleanly gives the job back without spending an attempt
    released = store.release(j)
    assert released.state is JobState.QUEUED and released.attempts == 0
    (j,) = store.claim("runner")
    assert store.complete(j, []).state is JobState.DONE


def test_lock_held_by_another_process_times_out_then_recovers(open_store, store_url, request):
    backend = "sqlite" if store_url.startswith("sqlite") else "postgresql"
    bound = 1.0
    store = open_store(statement_timeout_s=bound)
    store.submit("l2a", ["L1C_S2A_T31UDS_20180703T104021_ESA"], {}, tile="T31UDS")
    locked, release = SPAWN.Event(), SPAWN.Event()
    holder = SPAWN.Process(target=_hold_lock, args=(store_url, backend, locked, release))
    holder.start()
    try:
        assert locked.wait(60), "the lock-holding process did not start"
        for call, op in ((lambda: store.claim("runner"), "claim"),
                         (lambda: store.submit("l2a", ["L1C_S2B_T31UDS_20180708T104019_ESA"], {}),
                          "submit")):
            t0 = time.monotonic()
            with pytest.raises(JobStoreTimeout) as err:
                call()
            elapsed = time.monotonic() - t0
            assert 0.8 * bound < elapsed < bound + 2.0, elapsed  # waited the bound, not forever
            msg = str(err.value)
            assert op in msg and "lock" in msg and store.url in msg and "timed out" in msg
        if backend == "sqlite":  # WAL: readers do not wait for a writer's lock
            assert store.counts()["queued"] == 1
    finally:
        release.set()
        holder.join(30)
        if holder.is_alive():
            holder.kill()
    assert holder.exitcode == 0
    # the lock is gone: the same store works again, nothing was half-written
    assert store.counts()["queued"] == 1
    (j,) = store.claim("runner")
    assert store.complete(j, ["out"]).state is JobState.DONE


def test_a_statement_running_too_long_is_cancelled(open_store, store_url):
    store = open_store(statement_timeout_s=0.5)
    if store_url.startswith("sqlite"):  # never ends: SQLite interrupts it at the deadline
        slow = ("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) "
                "SELECT count(*) FROM c")
    else:
        slow = "SELECT pg_sleep(30)"
    t0 = time.monotonic()
    with (pytest.raises(JobStoreTimeout, match="ran past the limit 0.5 s"),
          store.transaction("slow probe", write=False) as conn):
        conn.exec_driver_sql(slow).all()
    assert time.monotonic() - t0 < 0.5 + 2.0
    assert store.submit("l2a", ["x"], {}).state is JobState.QUEUED  # still usable


def test_product_catalogue_queries(open_store):
    store = open_store()
    utc = UTC
    records = []
    for tile in ("T31UDS", "T31UCS", "T29UNU"):
        for k in range(40):  # an acquisition every 5 days
            t = dt.datetime(2018, 3, 1, 10, 40, 21, tzinfo=utc) + dt.timedelta(days=5 * k)
            pid = ProductId(Level.L2A, "S2A" if k % 2 else "S2B", tile, t, "SEN2COR")
            records.append(ProductRecord.from_id(pid, f"/store/L2A/{tile}/{pid}.json",
                                                 item={"id": str(pid), "k": k}))
        for month in range(3, 10):  # monthly composites
            start = dt.datetime(2018, month, 1, tzinfo=utc)
            end = dt.datetime(2018, month + 1, 1, tzinfo=utc) - dt.timedelta(days=1)
            pid = ProductId(Level.L3A, "S2L8", tile, start, "AGS", end)
            records.append(ProductRecord.from_id(str(pid), f"/store/L3A/{tile}/{pid}.json"))
    assert store.add_products(records) == len(records) == 3 * 47

    def expected(level, tile, start, end):  # the same question, answered by brute force
        if end.time() == dt.time(0):
            end = end + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
        return [r.product_id for r in sorted(records, key=lambda r: (r.start, r.product_id))
                if r.level == level and r.tile == tile and r.end >= start and r.start <= end]

    for level, tile, start, end in (
            ("L2A", "T31UDS", dt.datetime(2018, 5, 1, tzinfo=utc), dt.datetime(2018, 5, 31, tzinfo=utc)),
            ("L2A", "T29UNU", dt.datetime(2018, 3, 1, 12, tzinfo=utc), dt.datetime(2018, 3, 6, tzinfo=utc)),
            ("L3A", "T31UCS", dt.datetime(2018, 6, 15, tzinfo=utc), dt.datetime(2018, 7, 1, tzinfo=utc)),
            ("L3A", "T31UDS", dt.datetime(2019, 1, 1, tzinfo=utc), dt.datetime(2019, 2, 1, tzinfo=utc))):
        got = store.products(level, tile, start, end)
        assert [p.product_id for p in got] == expected(level, tile, start, end)
    may = store.products("L2A", "T31UDS", dt.date(2018, 5, 1), dt.date(2018, 5, 31))
    assert len(may) == 6 and all(p.item is None for p in may)
    june = store.products(Level.L3A, "T31UCS", dt.date(2018, 6, 30), dt.date(2018, 6, 30))
    assert [p.product_id for p in june] == ["L3A_S2L8_T31UCS_20180601-20180630_AGS"]
    assert june[0].end == dt.datetime(2018, 6, 30, tzinfo=utc)
    withitems = store.products("L2A", "T29UNU", dt.date(2018, 3, 1), dt.date(2018, 3, 1),
                               with_items=True)
    assert [p.item["k"] for p in withitems] == [0]
    assert len(store.products(tile="T31UDS")) == 47 and len(store.products()) == 141

    pid = records[0].product_id
    assert store.has_product(pid) and not store.has_product("L2A_S2A_T31UDS_20180301T000000_X1")
    store.add_product(pid, "/moved/there.json")  # same id again: updated, not duplicated
    assert len(store.products()) == 141
    assert [p.path for p in store.products() if p.product_id == pid] == ["/moved/there.json"]
    assert store.remove_product(pid) and not store.has_product(pid)
    # an id that is not an agriseries id needs its level, tile and dates
    with pytest.raises(ConfigurationError, match="level, tile and start"):
        store.add_product("S2A_MSIL2A_20180703T104021_N0208_R008_T31UDS_20180703T135000",
                          "/in/x.SAFE")
    rec = store.add_product("S2A_MSIL2A_20180703T104021_N0208_R008_T31UDS_20180703T135000",
                            "/in/x.SAFE", level="L2A", tile="T31UDS",
                            start=dt.datetime(2018, 7, 3, 10, 40, 21))
    assert store.has_product(rec.product_id)
    with pytest.raises(ConfigurationError, match="level 'L9Z'"):
        store.add_product("x", "/y", level="L9Z", tile="T31UDS", start=dt.datetime(2018, 1, 1))


def test_listing_and_processor_filter(open_store):
    store = open_store()
    for i in range(3):
        store.submit("l2a", [f"L1C_S2A_T31UDS_2018070{i + 1}T104021_ESA"], {}, tile="T31UDS")
    store.submit("composite", ["a", "b"], {"window": 30}, tile="T31UCS", priority=5)
    assert [j.processor for j in store.claim("r", limit=10, processors=["composite"])] == ["composite"]
    assert len(store.jobs(processor="l2a")) == 3 and len(store.jobs(tile="T31UCS")) == 1
    assert len(store.jobs(["queued", JobState.RUNNING])) == 4
    assert store.counts("l2a") == {"queued": 3, "running": 0, "done": 0, "failed": 0,
                                   "quarantined": 0}
    first = store.jobs(limit=1)[0]
    assert isinstance(first, Job) and first.processor == "l2a"
    with pytest.raises(ConfigurationError, match="job state"):
        store.jobs("sleeping")
    with pytest.raises(ConfigurationError, match="limit"):
        store.claim("r", limit=0)


def test_clear_errors_for_bad_urls_and_databases(tmp_path, postgres_server):
    for url in ("mysql://u@h/db", "sqlite:///:memory:", "postgresql+psycopg2://u@h/db"):
        with pytest.raises(ConfigurationError, match="job store URL"):
            JobStore(url)
    with pytest.raises(ConfigurationError, match="statement_timeout_s"):
        JobStore(tmp_path / "a.db", statement_timeout_s=0)
    # a file that is not an SQLite database
    bad = tmp_path / "jobs.db"
    bad.write_bytes(b"agriseries job store? no: a text file\n" * 200)
    with pytest.raises(StoreError, match="jobs.db.*open"):
        JobStore(bad)
    # no server behind the socket: fails at once, naming the database
    empty = tmp_path / "no-server"
    empty.mkdir()
    t0 = time.monotonic()
    with pytest.raises(StoreError, match="no-server") as err:
        JobStore(f"postgresql+psycopg://agriseries@/jobs?host={empty}&port=5999",
                 connect_timeout_s=2)
    assert time.monotonic() - t0 < 5 and "open" in str(err.value)
    # a path is an SQLite file; postgresql:// means psycopg 3
    with JobStore(tmp_path / "sub" / "j.db") as s:
        assert s.backend == "sqlite" and (tmp_path / "sub" / "j.db").is_file()
    url = postgres_server.create_database().replace("postgresql+psycopg://", "postgresql://")
    with JobStore(url) as s:
        assert s.backend == "postgresql" and s.counts()["queued"] == 0
