"""The production runner with real components and real faults.

Real data: three weeks of the WorldCereal Flanders 2018 patch (tests/data/production/inbox,
made by make_small.py there: 8 Sentinel-2 L2A dates as 10 m + 20 m NetCDF series, 1 Landsat 8
date), which ingest onto tile T31UDS and give two monthly syntheses (June, July) and one L3B
product per Sentinel-2 date.

Real engine: a dask.distributed LocalCluster with 2 worker processes (one per module, and one
started by ``run`` itself in the end-to-end test); the runner also runs as a separate process
(``python -m agriseries.production.cli run``) for the kill -9, lock and --watch tests.

Sockets: pytest runs with ``--disable-socket --allow-unix-socket``; Dask talks TCP on the
loopback, so this module is marked ``allow_hosts(["127.0.0.1"])`` (pytest-socket): sockets may
connect to 127.0.0.1 only.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import xarray as xr
import yaml
from click.testing import CliRunner

from agriseries.biophysical.processor import l3b_id
from agriseries.composite.processor import l3a_id
from agriseries.core.ids import Level, ProductId
from agriseries.io.store import ProductStore
from agriseries.production.cli import cli
from agriseries.production.jobstore import JobState, JobStore
from agriseries.production.runner import run, status
from agriseries.production.site import TEMPLATE, load_site, site_from_dict

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

REPO = Path(__file__).parent.parent
INBOX = Path(__file__).parent / "data" / "production" / "inbox"
S2_FILES = sorted(INBOX.glob("S2_L2A_*m_*.nc"))
L8_FILE = next(INBOX.glob("L8_SR_*.nc"))


def _dates(path: Path) -> list[dt.datetime]:
    with xr.open_dataset(path) as ds:
        return [dt.datetime.fromisoformat(str(t)[:19]) for t in ds["timestamp"].values]


S2_DATES = _dates(S2_FILES[0])
L8_DATES = sorted(set(_dates(L8_FILE)))
JUNE = (dt.date(2018, 6, 1), dt.date(2018, 6, 30))
JULY = (dt.date(2018, 7, 1), dt.date(2018, 7, 31))


def site_dict(tmp: Path, **over) -> dict:
    d = {"name": "flanders-test", "area": {"tiles": ["T31UDS"]},
         "season": {"start": "2018-06-01", "end": "2018-07-31"},
         "products": {"L3B": {"sensors": ["S2"], "variables": ["LAI"]}},
         "inbox": {"path": str(tmp / "inbox"), "settle_s": 0},
         "store": str(tmp / "store"),
         "database": {"statement_timeout_s": 5, "lease_s": 60, "retry_s": 30},
         "engine": {"n_workers": 2, "memory_limit": "2GiB"},
         "retries": {"backoff_s": 3600}}
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) and isinstance(d.get(k), dict) else v
    return d


def make_inbox(tmp: Path, files=(*S2_FILES, L8_FILE), broken: bool = False) -> Path:
    inbox = tmp / "inbox"
    inbox.mkdir(exist_ok=True)
    for f in files:
        shutil.copy2(f, inbox / f.name)
    if broken:  # a download cut short: the first 60 kB of a real file
        (inbox / "S2_L2A_10m_broken.nc").write_bytes(S2_FILES[0].read_bytes()[:60_000])
    return inbox


def write_site(tmp: Path, d: dict) -> Path:
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(d))
    return path


def expected_products() -> set[str]:
    out = {f"L2A_S2A_T31UDS_{t:%Y%m%dT%H%M%S}_SEN2COR" for t in S2_DATES}
    out |= {f"L2A_L8_T31UDS_{t:%Y%m%dT%H%M%S}_LASRC" for t in L8_DATES}
    out |= {str(l3b_id(p)) for p in out if "_S2A_" in p}
    out |= {str(l3a_id("T31UDS", *m, ["S2A", "L8"])) for m in (JUNE, JULY)}
    return out


def product_folders(store: Path) -> dict[str, Path]:
    """Every folder of the final product tree (complete or not)."""
    return {p.name: p for lv in Level for p in store.glob(f"{lv.value}/T*/*/*") if p.is_dir()}


def assert_store_whole(site) -> dict[str, float]:
    """Every product folder complete (its STAC item written last), catalogue == disk;
    returns the item modification times."""
    from stac_offline import assert_valid_stac, store_stac_files

    folders = product_folders(site.store)
    for pid, folder in folders.items():
        assert (folder / f"{pid}.json").is_file(), f"half-written product {folder}"
    assert_valid_stac(*store_stac_files(site.store))  # core + every declared extension
    js = site.job_store()
    try:
        assert {r.product_id for r in js.products()} == set(folders)
    finally:
        js.close()
    return {pid: (f / f"{pid}.json").stat().st_mtime_ns for pid, f in folders.items()}


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster with 2 worker processes, shared by the tests of this module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1", memory_limit="2GiB") as lc, Client(lc) as client:
        yield client


def _run_cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "agriseries.production.cli", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _reap(proc: subprocess.Popen) -> None:
    """Kill what is left of a runner's process group (its workers), whatever happened."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.communicate(timeout=10)
    except (subprocess.TimeoutExpired, ValueError):
        pass


def _wait(cond, timeout: float, what: str, proc: subprocess.Popen | None = None):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        got = cond()
        if got:
            return got
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the runner exited ({proc.returncode}) while waiting for {what}:\n"
                        f"{out}\n{err[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


# ------------------------------------------------------------------------- end to end


def test_demo_site_end_to_end_twice_with_a_corrupt_input(tmp_path, capfd):
    make_inbox(tmp_path, broken=True)
    site = site_from_dict(site_dict(tmp_path))
    first = run(site)  # its own LocalCluster of 2 worker processes
    # the workers' log lines (Dask's "Compute Failed" with the escaped traceback) stay off
    # the terminal: the failure is in the report and the job's record
    assert "Compute Failed" not in capfd.readouterr().err
    # the truncated file failed with a clear error naming it; everything else was made
    assert first.exit_code == 1 and len(first.failed) == 1, first.failed
    bad = first.failed[0]
    assert bad["processor"] == "ingest" and bad["state"] == "failed"
    assert "S2_L2A_10m_broken.nc" in bad["error"] and "truncated or corrupt" in bad["error"]
    assert first.error is None and first.stopped is None
    want = expected_products()
    mtimes = assert_store_whole(site)
    assert set(mtimes) == want
    assert sorted(first.made) == sorted(want)  # each product made once
    # the July synthesis was made from every L2A date of its window (Jun 23 .. Aug 8)
    july = str(l3a_id("T31UDS", *JULY, ["S2A", "L8"]))
    item = site.product_store().item(july)
    used = set(item.properties["agriseries:inputs"]) | {
        s["id"] for s in item.properties["agriseries:synthesis"]["skipped"]}
    assert used == {p for p in want if p.startswith("L2A_")
                    and ProductId.parse(p).start >= dt.datetime(2018, 6, 23, tzinfo=dt.UTC)}
    # jobs ran in parallel on both workers
    assert len({d["worker"] for d in first.done}) == 2
    # run again: nothing new, nothing recomputed
    second = run(site)
    assert (second.submitted, second.done, second.made, second.failed) == (0, [], [], [])
    assert second.exit_code == 0
    assert assert_store_whole(site) == mtimes
    st = status(site)
    assert st.counts["ingest"]["done"] == 2 and st.counts["ingest"]["failed"] == 1
    assert st.counts["L3A"]["done"] == 2 and st.counts["L3B"]["done"] == len(S2_DATES)
    assert st.products == {"L2A": len(S2_DATES) + len(L8_DATES), "L3A": 2,
                           "L3B": len(S2_DATES)}
    assert st.due == 0 and st.running == []
    assert len(st.problems) == 1 and "S2_L2A_10m_broken.nc" in st.problems[0]["error"]


# ------------------------------------------------------------------------------ faults


def test_a_worker_killed_mid_job_is_retried_on_another(tmp_path, cluster):
    make_inbox(tmp_path)
    off = {"enabled": False}
    run(site_from_dict(site_dict(tmp_path, products={"L3A": off, "L3B": off})), client=cluster)
    site = site_from_dict(site_dict(tmp_path, products={"L3B": off}))
    out = []
    t = threading.Thread(target=lambda: out.append(run(site, client=cluster)))
    t.start()
    try:
        def l3a_processing(dask_scheduler):
            return {str(k): ts.processing_on.address for k, ts in dask_scheduler.tasks.items()
                    if str(k).startswith("agriseries-L3A") and ts.state == "processing"}

        running = _wait(lambda: cluster.run_on_scheduler(l3a_processing), 60, "an L3A task")
        key, address = min(running.items())
        pid = cluster.run(os.getpid, workers=[address])[address]
        time.sleep(0.3)  # in the middle of the synthesis (it takes seconds)
        os.kill(pid, signal.SIGKILL)
    finally:
        t.join(240)
    assert not t.is_alive()
    report = out[0]
    assert report.failed == [] and report.exit_code == 0
    job_prefix = key.split("-")[2]
    killed = [d for d in report.done if d["key"].startswith(job_prefix)]
    assert len(killed) == 1 and killed[0]["processor"] == "L3A"
    assert int(killed[0]["worker"].rsplit(":", 1)[1]) != pid  # finished by another process
    js = site.job_store()
    try:
        job = js.get(killed[0]["key"])
        assert job.state is JobState.DONE and job.attempts == 1  # Dask retried, not the runner
    finally:
        js.close()
    assert {p for p in assert_store_whole(site) if p.startswith("L3A")} == {
        str(l3a_id("T31UDS", *m, ["S2A", "L8"])) for m in (JUNE, JULY)}
    _wait(lambda: len(cluster.nthreads()) == 2, 60, "the nanny to restart the worker")


def test_runner_killed_with_sigkill_mid_job_then_rerun(tmp_path, cluster):
    make_inbox(tmp_path)
    site_file = write_site(tmp_path, site_dict(tmp_path))
    site = load_site(site_file)
    proc = _run_cli("run", site_file)
    try:
        db = site.store / "jobs.sqlite"
        _wait(db.exists, 60, "the job database", proc)
        js = JobStore(db, statement_timeout_s=5)

        def mid_job():
            jobs = js.jobs()
            done = [j for j in jobs if j.state is JobState.DONE and j.processor == "L3B"]
            running = [j for j in jobs if j.state is JobState.RUNNING]
            return bool(done and running)

        _wait(mid_job, 120, "a job running after an L3B was done", proc)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        # its worker processes notice their parent is gone and exit
        gone = False
        for _ in range(100):
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                gone = True
                break
            time.sleep(0.1)
        assert gone, "worker processes outlived the killed runner"
    finally:
        _reap(proc)
    before = {j.key: (j.attempts, j.finished_at) for j in js.jobs(JobState.DONE)}
    interrupted = {j.key for j in js.jobs(JobState.RUNNING)}
    assert interrupted
    js.close()
    # whatever was being written is not in the product tree: whole products only
    from stac_offline import assert_valid_stac, store_stac_files

    folders = product_folders(site.store)
    for pid, folder in folders.items():
        assert (folder / f"{pid}.json").is_file(), f"half-written product {folder}"
    assert_valid_stac(*store_stac_files(site.store))  # core + every declared extension
    made_before = {pid: (f / f"{pid}.json").stat().st_mtime_ns for pid, f in folders.items()}
    assert made_before

    report = run(site, client=cluster)  # the same machine: the dead runner's jobs are taken
    assert report.failed == [] and report.exit_code == 0
    assert sum("is gone; job taken over" in n for n in report.notes) == len(interrupted)
    after = assert_store_whole(site)
    assert set(after) == expected_products()  # every product, once
    for pid, mtime in made_before.items():  # nothing that was complete was made again
        assert after[pid] == mtime, f"{pid} was rewritten"
    assert not set(report.made) & set(made_before)
    js = site.job_store()
    try:
        for j in js.jobs():
            assert j.state is JobState.DONE, j
            assert j.attempts == 1  # the interrupted attempt was released, not counted
            if j.key in before:
                assert (j.attempts, j.finished_at) == before[j.key]
    finally:
        js.close()
    # leftovers of the interrupted write (outside the product tree) go once they are old
    leftovers = list((site.store / ".tmp").iterdir()) if (site.store / ".tmp").is_dir() else []
    old = time.time() - 2 * 86400
    for p in leftovers:
        for q in [p, *p.rglob("*")]:
            os.utime(q, (old, old))
    third = run(site, client=cluster)
    assert third.made == [] and third.done == []
    assert not (site.store / ".tmp").is_dir() or not any((site.store / ".tmp").iterdir())
    assert (sum(f"removed {len(leftovers)} leftover" in n for n in third.notes)
            == (1 if leftovers else 0))


def test_a_failing_job_is_retried_after_its_backoff_then_quarantined(tmp_path, cluster):
    """The Landsat series carries no view angles: its L3B fails every time, with a clear
    error; retried after the backoff, then quarantined with its traceback, then left alone."""
    make_inbox(tmp_path, files=[L8_FILE])
    path = write_site(tmp_path, site_dict(tmp_path, products={"L3A": {"enabled": False},
                                                              "L3B": {"sensors": ["L8"]}},
                                          retries={"max_attempts": 2, "backoff_s": 1}))
    site = load_site(path)
    first = run(site, client=cluster)
    assert first.exit_code == 1 and [f["state"] for f in first.failed] == ["failed"]
    err = first.failed[0]["error"]
    assert err.startswith("InputProductError: ") and "L2A_L8_T31UDS_20180701" in err
    assert "view_zenith" in err and "not in the product" in err
    time.sleep(1.5)  # the backoff
    second = run(site, client=cluster)
    assert [(f["state"], f["attempts"]) for f in second.failed] == [("quarantined", 2)]
    third = run(site, client=cluster)
    assert (third.submitted, third.done, third.failed, third.exit_code) == (0, [], [], 0)
    js = site.job_store()
    try:
        (job,) = js.jobs(JobState.QUARANTINED)
        assert job.processor == "L3B" and "compute_variables" in job.traceback
    finally:
        js.close()
    assert [p["state"] for p in status(site).problems] == ["quarantined"]

    # `agriseries retry` puts it back (attempts reset): the next run tries it once more
    from agriseries.cli import main

    runner = CliRunner()
    res = runner.invoke(main, ["status", str(path)])
    assert res.exit_code == 0 and job.key[:12] in res.stdout, res.output
    res = runner.invoke(main, ["retry", str(path)])
    assert res.exit_code == 2 and "--all" in res.output  # neither keys nor --all
    res = runner.invoke(main, ["retry", str(path), "ffffffffffff"])
    assert res.exit_code == 2 and "no job of flanders-test" in res.output, res.output
    res = runner.invoke(main, ["retry", str(path), job.key[:12]])
    assert res.exit_code == 0, res.output
    assert "was quarantined after 2 attempt(s) (InputProductError" in res.stdout
    (back,) = js_jobs(site, JobState.QUEUED)
    assert (back.key, back.attempts) == (job.key, 0)
    fourth = run(site, client=cluster)
    assert [(f["state"], f["attempts"]) for f in fourth.failed] == [("failed", 1)]
    res = runner.invoke(main, ["retry", str(path), "--all", "--json"])  # no backoff to wait
    assert res.exit_code == 0 and [r["key"] for r in json.loads(res.stdout)] == [job.key]
    res = runner.invoke(main, ["retry", str(path), "--all", "--processor", "L3A"])
    assert res.exit_code == 3 and "no failed or quarantined L3A job" in res.output, res.output


def test_a_product_removed_by_hand_is_remade_after_retry_of_its_done_job(tmp_path, cluster):
    """A done job whose product was removed (`agriseries store remove --site`) is not
    remade by itself: the run says so and names the job; `agriseries retry SITE JOB` puts
    it back and the next run makes that product again, and nothing else."""
    from agriseries.cli import main

    make_inbox(tmp_path, files=S2_FILES)
    path = write_site(tmp_path, site_dict(tmp_path, products={"L3B": {"enabled": False}}))
    site = load_site(path)
    first = run(site, client=cluster)
    assert first.exit_code == 0, first.failed
    june = str(l3a_id("T31UDS", *JUNE, ["S2A"]))
    assert june in first.made
    runner = CliRunner()
    res = runner.invoke(main, ["store", "remove", str(site.store), june, "--site", str(path)])
    assert res.exit_code == 0, res.output
    second = run(site, client=cluster)
    assert second.made == []
    (job,) = [j for j in js_jobs(site, JobState.DONE) if june in (j.outputs or ())]
    assert any(f"agriseries retry SITE {job.key[:12]}" in n for n in second.notes), second.notes
    res = runner.invoke(main, ["retry", str(path), job.key[:12]])
    assert res.exit_code == 0 and "was done after 1 attempt(s)" in res.stdout, res.output
    third = run(site, client=cluster)
    assert third.made == [june] and third.exit_code == 0
    assert june in {it.id for it in ProductStore(site.store).items(Level.L3A)}


def js_jobs(site, state=None):
    js = site.job_store()
    try:
        return js.jobs(state)
    finally:
        js.close()


_LOCKER = """
import sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
c.execute("BEGIN IMMEDIATE")  # the write lock, as a runner of another site tool would hold it
c.execute("UPDATE jobs SET priority = priority")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
c.execute("COMMIT")
"""


def hold_lock(db: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the SQLite write lock for ``seconds``."""
    proc = subprocess.Popen([sys.executable, "-c", _LOCKER, str(db), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def end_lock(proc: subprocess.Popen, kill: bool = True) -> None:
    if kill:
        proc.kill()
    proc.wait(60)
    proc.stdout.close()


def test_a_database_lock_held_by_another_process_stops_the_run_cleanly(tmp_path):
    make_inbox(tmp_path, files=[L8_FILE])
    d = site_dict(tmp_path, database={"statement_timeout_s": 1, "retry_s": 2})
    site_file = write_site(tmp_path, d)
    db = load_site(site_file).store / "jobs.sqlite"
    JobStore(db).close()  # the database exists (WAL); now someone holds its write lock
    locker = hold_lock(db, 120)
    try:
        t0 = time.monotonic()
        res = subprocess.run([sys.executable, "-m", "agriseries.production.cli", "run",
                              str(site_file)], capture_output=True, text=True, timeout=120,
                             check=False)
        elapsed = time.monotonic() - t0
    finally:
        end_lock(locker)
    assert res.returncode == 1, res.stderr
    err = " ".join(res.stderr.split())
    assert "timed out" in err and "lock held by another connection or process" in err, err
    assert str(db) in err
    assert elapsed < 60  # bounded: statement timeout and retry_s, never a hang
    js = JobStore(db)
    try:
        assert js.jobs(JobState.RUNNING) == []  # nothing left leased
    finally:
        js.close()


def test_a_lock_held_for_a_while_mid_run_is_waited_out(tmp_path, cluster):
    make_inbox(tmp_path, files=[L8_FILE])
    off = {"enabled": False}
    site = site_from_dict(site_dict(tmp_path, products={"L3A": off, "L3B": off},
                                    database={"statement_timeout_s": 1, "retry_s": 60}))
    lockers = []

    def on_event(ev):
        if ev.kind == "done" and not lockers:
            lockers.append(hold_lock(site.store / "jobs.sqlite", 3))

    try:
        report = run(site, client=cluster, on_event=on_event)
    finally:
        for p in lockers:
            end_lock(p, kill=False)
    assert lockers and report.exit_code == 0 and report.stopped is None
    assert len(report.done) == 1
    # the next write (a claim) timed out while the lock was held, and was retried
    assert any(n.startswith("job store unavailable") and "timed out" in n for n in report.notes)
    assert any(n.startswith("job store back") for n in report.notes)
    assert set(assert_store_whole(site)) == {f"L2A_L8_T31UDS_{t:%Y%m%dT%H%M%S}_LASRC"
                                             for t in L8_DATES}


def test_a_lock_that_stays_stops_the_run_cleanly_mid_run(tmp_path, cluster):
    make_inbox(tmp_path)
    site = site_from_dict(site_dict(tmp_path, database={"statement_timeout_s": 1,
                                                        "retry_s": 2, "lease_s": 5}))
    db = site.store / "jobs.sqlite"
    lockers = []

    def on_event(ev):
        if ev.kind == "done" and not lockers:
            lockers.append(hold_lock(db, 120))

    t0 = time.monotonic()
    try:
        report = run(site, client=cluster, on_event=on_event)
        elapsed = time.monotonic() - t0
    finally:
        for p in lockers:
            end_lock(p)
    assert report.stopped == "database" and report.exit_code == 1
    assert "lock held by another connection or process" in report.error
    assert "gave up" in report.error and "database.retry_s" in report.error
    assert elapsed < 90
    # whole products only (a cancelled task may still have finished writing its products
    # after the stop: the disk can be ahead of the catalogue, which the next run rescans)
    for pid, folder in product_folders(site.store).items():
        assert (folder / f"{pid}.json").is_file(), f"half-written product {folder}"
    # the lock gone, the next run takes over (the leases expired) and finishes the work
    time.sleep(5)
    again = run(site, client=cluster)
    assert again.exit_code == 0, again.failed
    assert set(assert_store_whole(site)) == expected_products()


_PG_LOCKER = """
import sys, time
import sqlalchemy as sa
engine = sa.create_engine(sys.argv[1])
with engine.connect() as conn:
    conn.exec_driver_sql("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.rollback()
"""


def test_postgresql_job_store_and_a_held_table_lock(tmp_path, cluster, postgres_url):
    """The same runner on PostgreSQL (one URL setting); a table lock held by another
    process makes every call time out (lock_timeout): the run stops cleanly, bounded."""
    make_inbox(tmp_path, files=[L8_FILE])
    off = {"enabled": False}
    site = site_from_dict(site_dict(tmp_path, products={"L3A": off, "L3B": off},
                                    database={"url": postgres_url, "statement_timeout_s": 1,
                                              "retry_s": 2}))
    JobStore(postgres_url).close()  # the tables exist
    locker = subprocess.Popen([sys.executable, "-c", _PG_LOCKER, postgres_url, "120"],
                              stdout=subprocess.PIPE, text=True)
    assert locker.stdout.readline().strip() == "locked"
    t0 = time.monotonic()
    try:
        report = run(site, client=cluster)
        elapsed = time.monotonic() - t0
    finally:
        end_lock(locker)
    assert report.stopped == "database" and report.exit_code == 1
    assert "PostgreSQL" in report.error and "lock" in report.error, report.error
    assert elapsed < 60
    again = run(site, client=cluster)
    assert again.exit_code == 0 and len(again.done) == 1
    assert set(assert_store_whole(site)) == {f"L2A_L8_T31UDS_{t:%Y%m%dT%H%M%S}_LASRC"
                                             for t in L8_DATES}


def test_watch_picks_up_new_inputs_and_stops_on_sigterm(tmp_path, cluster):
    inbox = make_inbox(tmp_path, files=[L8_FILE])
    site_file = write_site(tmp_path, site_dict(tmp_path, products={"L3A": {"enabled": False}}))
    site = load_site(site_file)
    proc = _run_cli("run", site_file, "--watch", "--poll", "1", "--scheduler",
                    cluster.scheduler.address)
    try:
        db = site.store / "jobs.sqlite"
        _wait(db.exists, 60, "the job database", proc)
        js = JobStore(db, statement_timeout_s=5)
        _wait(lambda: len(js.products(level="L2A")) == 1, 120, "the Landsat date", proc)
        for f in S2_FILES:  # arrive as a download would: a hidden name, then renamed
            shutil.copy2(f, inbox / f".{f.name}.part")
            os.rename(inbox / f".{f.name}.part", inbox / f.name)
        _wait(lambda: len(js.products(level="L3B")) == len(S2_DATES), 120,
              "the L3B products of the new dates", proc)
        js.close()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        _reap(proc)
    assert proc.returncode == 0, err
    assert "stopped by a signal" in out
    js = site.job_store()
    try:
        assert js.jobs(JobState.RUNNING) == [] and js.counts()["done"] == 2 + len(S2_DATES)
    finally:
        js.close()


# ----------------------------------------------------------------------------------- CLI


def test_cli_template_check_run_status(tmp_path, cluster, monkeypatch):
    from agriseries.production.site import PENDING_LEVELS

    # no level is pending today (L4A / L4B are made): a made-up reason shows the notices
    monkeypatch.setitem(PENDING_LEVELS, "L4B", "the crop type is away (test)")
    runner = CliRunner()
    res = runner.invoke(cli, ["site", "template"])
    assert res.exit_code == 0 and res.output == TEMPLATE
    make_inbox(tmp_path, files=[L8_FILE])
    off = {"enabled": False}
    parcels = Path(__file__).parent / "data" / "crop" / "worldcereal_parcels.gpkg"
    site_file = write_site(tmp_path, site_dict(
        tmp_path, in_situ=str(parcels),
        products={"L3A": off, "L3B": off, "L4B": {"enabled": True, "class_field": "CT"}}))
    res = runner.invoke(cli, ["site", "check", str(site_file)])
    assert res.exit_code == 0 and "T31UDS" in res.output and "2018-06, 2018-07" in res.output
    address = cluster.scheduler.address
    res = runner.invoke(cli, ["run", str(site_file), "--scheduler", address, "--json"])
    assert res.exit_code == 0, res.output
    assert '"exit_code": 0' in res.stdout and "L2A_L8_T31UDS_20180701" in res.stdout
    assert "the crop type is away (test)" in res.stderr  # L4B asked for, pending
    res = runner.invoke(cli, ["status", str(site_file)])
    assert res.exit_code == 0 and "ingest" in res.output and "L2A" in res.output
    # a wrong site file: exit 1, the file and field named
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**site_dict(tmp_path), "season": {"start": "2018-06-01"}}))
    res = runner.invoke(cli, ["run", str(bad)])
    assert res.exit_code == 1 and "bad.yaml" in res.stderr and "field 'season.end'" in res.stderr
    # no inbox: exit 1 with the field named
    gone = write_site(tmp_path, site_dict(tmp_path, inbox={"path": str(tmp_path / "nope")}))
    res = runner.invoke(cli, ["run", str(gone), "--scheduler", address])
    assert res.exit_code == 1 and "field 'inbox.path'" in res.stderr and "nope" in res.stderr


def test_commands_plug_into_the_main_cli_and_the_demo_site_is_valid():
    from agriseries.cli import main
    from agriseries.production import cli as production_cli

    for cmd in (production_cli.site, production_cli.run, production_cli.status):
        main.add_command(cmd)
    res = CliRunner().invoke(main, ["site", "template"])
    assert res.exit_code == 0 and res.output == TEMPLATE
    demo = load_site(REPO / "sites" / "demo.yaml")
    assert demo.tiles == ["T31UDS"] and demo.inbox.path == INBOX.absolute()
    assert demo.store == (REPO / "build" / "demo-production").absolute()


def test_a_site_that_makes_its_own_l2a_from_l1c(tmp_path, cluster):
    """``l2a: {source: agriseries}``: the L1C products of the store are made into L2A (one
    job per tile, date order, backward initialisation), then L3B runs on them."""
    from test_l2a import SLOVENIA, slovenia_store

    slovenia_store(tmp_path / "store")  # 5 real L1C dates, as ingest leaves them
    (tmp_path / "inbox").mkdir()
    site = site_from_dict(site_dict(
        tmp_path, area={"tiles": ["T33TVL"]}, season={"start": "2015-07-01", "end": "2015-09-30"},
        products={"L3A": {"enabled": False}}, l2a={"source": "agriseries", "resolution": 20}))
    first = run(site, client=cluster)
    assert first.exit_code == 0, first.failed
    l2a_ids = {f"L2A_S2A_T33TVL_{s.replace('-', '').replace(':', '')}_AGS" for s in SLOVENIA}
    assert l2a_ids | {str(l3b_id(p)) for p in l2a_ids} == set(first.made)
    st = status(site)
    assert st.counts["L2A"]["done"] == 1 and st.counts["L3B"]["done"] == 5
    item = site.product_store().item(min(l2a_ids))
    assert item.properties["agriseries:l2a_mode"] == "backward"
    second = run(site, client=cluster)
    assert (second.submitted, second.made, second.failed) == (0, [], [])


# ------------------------------------------------------------------- crop maps (L4A/L4B)


def test_crop_mask_and_crop_type_in_the_production(tmp_path, cluster):
    """L4A / L4B in ``run``: the in-season crop mask of each date that has come (the WorldCereal
    parcels of tests/data/crop as in-situ data), made once; the crop type masked with the
    latest crop mask, after it."""
    parcels = Path(__file__).parent / "data" / "crop" / "worldcereal_parcels.gpkg"
    make_inbox(tmp_path)
    off = {"enabled": False}
    site = site_from_dict(site_dict(
        tmp_path, in_situ=str(parcels),
        products={"L3A": off, "L3B": off, "L4A": {"enabled": True, "start": "2018-06-30"},
                  "L4B": {"enabled": True, "class_field": "CT", "exclude_codes": [0],
                          "crop_mask": True}}))
    june = "L4A_S2_T31UDS_20180601-20180630_AGS"  # the crop processor's ids
    july = "L4A_S2_T31UDS_20180601-20180731_AGS"
    l4b = "L4B_S2_T31UDS_20180601-20180731_AGS"
    s2 = sorted(f"L2A_S2A_T31UDS_{t:%Y%m%dT%H%M%S}_SEN2COR" for t in S2_DATES)
    # on Jul 15: the crop mask of Jun 30 only (5 Sentinel-2 dates); July's waits for its day
    first = run(site, client=cluster, today=dt.date(2018, 7, 15))
    assert first.exit_code == 0, first.failed
    assert {p for p in first.made if p.startswith("L4")} == {june}
    assert any(w.level == "L4A" and w.what == "2018-07-31" for w in first.waiting)
    store = site.product_store()
    item = store.item(june)
    assert item.properties["agriseries:until"] == "2018-06-30"
    assert sorted(item.properties["agriseries:inputs"]) == [p for p in s2 if p[15:23] <= "20180630"]
    assert {"crop_mask", "confidence", "model", "validation_json"} <= set(item.assets)
    # a job for July's crop mask planned when only 5 dates were in (as if the others had
    # come in later): the scheduler now plans it from 8 dates (another job key), but a crop
    # map is made once, so the runner does not submit a second job for it
    from agriseries.production.jobstore import ProductRecord
    from agriseries.production.scheduler import Catalogue, l4a_rule

    early = Catalogue([ProductRecord.from_id(p, "/") for p in s2[:5]])
    (old,) = [j for j in l4a_rule(site, early, dt.date(2018, 8, 1))[0] if j.outputs == (july,)]
    js = site.job_store()
    try:
        js.submit(old.processor, old.inputs, dict(old.params), tile=old.tile,
                  priority=old.priority)
    finally:
        js.close()
    # on Aug 1: July's crop mask (by that job, from all 8 dates: it reads the store when it
    # runs), then the crop type masked with it
    second = run(site, client=cluster, today=dt.date(2018, 8, 1))
    assert second.exit_code == 0, second.failed
    assert sorted(second.made) == sorted([july, l4b])
    assert [d["key"] for d in second.done if d["processor"] == "L4A"] == [old.key]
    assert sorted(store.item(july).properties["agriseries:inputs"]) == s2
    typ = store.item(l4b)
    assert typ.properties["agriseries:parameters"]["source"]["crop_mask"] == july
    assert typ.properties["agriseries:parameters"]["class_field"] == "CT"
    order = {d["outputs"][0]: i for i, d in enumerate(second.done)}
    assert order[july] < order[l4b]
    assert any(n.startswith(f"{july}: OA ") for n in second.notes), second.notes
    # again: nothing due, nothing remade; the catalogue holds the crop maps
    third = run(site, client=cluster, today=dt.date(2018, 9, 1))
    assert (third.submitted, third.made, third.failed) == (0, [], [])
    st = status(site, today=dt.date(2018, 9, 1))
    assert st.products["L4A"] == 2 and st.products["L4B"] == 1 and st.due == 0
    assert st.counts["L4A"]["done"] == 2 and st.counts["L4B"]["done"] == 1
    assert_store_whole(site)


@pytest.mark.parametrize("signame,code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_run_stopped_by_ctrl_c_or_sigterm_exits_128_plus_n_and_the_next_run_finishes(
        tmp_path, cluster, signame, code):
    make_inbox(tmp_path)
    site_file = write_site(tmp_path, site_dict(tmp_path))
    site = load_site(site_file)
    proc = _run_cli("run", site_file, "--scheduler", cluster.scheduler.address)
    try:
        _wait(lambda: any(site.store.glob("L2A/*/*/*/*.json")), 120, "a first product", proc)
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=120)
    finally:
        _reap(proc)
    if proc.returncode == 0 and "stopped by a signal" not in out:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == code, (out, err)
    assert "stopped by a signal" in out and "Traceback" not in err
    again = run(site, client=cluster)
    assert again.exit_code == 0, again.failed
    assert set(assert_store_whole(site)) == expected_products()


# ----------------------------------------------------------- site-level crop maps, two tiles

WC = Path(__file__).parent / "data" / "worldcereal"


def _series_copy(src: Path, dst: Path, span: tuple[str, str], step: int, shift_days: int = 0
                 ) -> int:
    """Copy a WorldCereal NetCDF series keeping one date in ``step`` of ``span`` (first and
    last day), every pixel, variable and attribute unchanged, the timestamps moved by
    ``shift_days``; returns the dates kept."""
    import netCDF4
    import numpy as np

    with netCDF4.Dataset(src) as a, netCDF4.Dataset(dst, "w", format="NETCDF4") as b:
        t = a["timestamp"]
        times = netCDF4.num2date(t[:], t.units, t.calendar, only_use_cftime_datetimes=False)
        days = np.array([np.datetime64(x.isoformat(), "D") for x in times])
        keep = np.flatnonzero((days >= np.datetime64(span[0])) & (days <= np.datetime64(span[1])))
        keep = keep[::step]
        b.setncatts({k: a.getncattr(k) for k in a.ncattrs()})
        for name, dim in a.dimensions.items():
            b.createDimension(name, keep.size if name == "timestamp" else len(dim))
        for name, var in a.variables.items():
            fill = var.getncattr("_FillValue") if "_FillValue" in var.ncattrs() else None
            out = b.createVariable(name, var.dtype, var.dimensions, fill_value=fill, zlib=True)
            out.setncatts({k: var.getncattr(k) for k in var.ncattrs() if k != "_FillValue"})
            var.set_auto_maskandscale(False)
            out.set_auto_maskandscale(False)
            data = var[...]
            if "timestamp" in var.dimensions:
                data = np.take(data, keep, axis=var.dimensions.index("timestamp"))
            if name == "timestamp" and shift_days:  # in the file's own units
                base = dt.datetime(2000, 1, 1)
                delta = netCDF4.date2num(base + dt.timedelta(days=shift_days), t.units,
                                         t.calendar) - netCDF4.date2num(base, t.units, t.calendar)
                data = (data + delta).astype(var.dtype)
            out[...] = data
    return int(keep.size)


def _merged_parcels(dst: Path) -> Path:
    """The in-situ polygons of both tiles in one file (the 2019 parcel ids + 1000)."""
    import numpy as np
    from pyogrio.raw import read, write

    geoms, fields, names, crs = [], None, None, None
    for path, offset in ((Path(__file__).parent / "data" / "crop" / "worldcereal_parcels.gpkg", 0),
                         (Path(__file__).parent / "data" / "crop" / "worldcereal_parcels_2019.gpkg",
                          1000)):
        meta, _, geom, data = read(path)
        names, crs = list(meta["fields"]), meta["crs"]
        data = [np.asarray(d) + (offset if n == "parcel" else 0) for n, d in zip(names, data)]
        geoms.append(geom)
        fields = data if fields is None else [np.concatenate([a, b]) for a, b in zip(fields, data)]
    write(dst, np.concatenate(geoms), fields, names, crs=crs, geometry_type="Unknown",
          layer="parcels", driver="GPKG")
    return dst


def _asset_geobox(store, item, key):
    import rasterio
    from odc.geo.geobox import GeoBox

    href = item.assets[key].href
    path = Path(href) if Path(href).is_absolute() else store.item_path(item.id).parent / href
    with rasterio.open(path) as src:
        return GeoBox(src.shape, src.transform, src.crs)


def test_site_level_crop_maps_on_two_tiles(tmp_path, cluster):
    """``agriseries run SITE.yaml`` on a two-tile site with ``site_model: true``: one crop
    mask model and one crop type model (masked with the crop masks), each trained on the
    in-situ parcels of **both** tiles, map both tiles, in one job each; each tile's map is
    validated on the parcels the model did not train on (in-season site maps: planned per
    map date, tests/test_scheduler.py).

    Real data: the WorldCereal Flanders patches of tests/data/worldcereal (one date in three):
    tile 31UDS (10 m + 20 m files, LPIS 2018) and tile 31UES (its 20 m file, LPIS 2019). The
    31UES series is of 2019: its timestamps are moved back 365 days so that both tiles are in
    the site's one 2018 season (the site model reads its features by day of the season, so
    this is the same as a second tile of that season; pixels, labels and the day of the
    season of each date are unchanged). ``feature_set: 20m``: the bands both tiles have."""
    import numpy as np

    from agriseries.crop.samples import rasterize_polygons, read_polygons
    from agriseries.crop.site import load_site_model

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    t18 = "00002806639B424A_32631_2017-08-01_2018-11-30.nc"
    for res in ("10m", "20m"):
        assert _series_copy(WC / f"S2_L2A_{res}_{t18}", inbox / f"S2_L2A_{res}_{t18}",
                            ("2018-03-01", "2018-10-31"), 3) == 24
    t19 = "S2_L2A_20m_000028085BF08E7E_32631_2018-08-01_2019-11-30.nc"
    assert _series_copy(WC / "2019" / t19, inbox / t19, ("2019-03-01", "2019-10-31"), 3,
                        shift_days=-365) == 24
    parcels = _merged_parcels(tmp_path / "parcels.gpkg")
    site_file = write_site(tmp_path, site_dict(
        tmp_path, name="flanders-two-tiles", area={"tiles": ["T31UDS", "T31UES"]},
        season={"start": "2018-03-01", "end": "2018-10-31"}, in_situ=str(parcels),
        products={"L3A": {"enabled": False}, "L3B": {"enabled": False},
                  "L4A": {"enabled": True, "start": "2018-10-01", "site_model": True,
                          "feature_set": "20m"},
                  "L4B": {"enabled": True, "class_field": "CT", "exclude_codes": [0],
                          "crop_mask": True, "site_model": True, "feature_set": "20m"}}))
    res = CliRunner().invoke(cli, ["run", str(site_file), "--scheduler",
                                   cluster.scheduler.address, "--json"])
    assert res.exit_code == 0, (res.output, res.stderr)
    site = load_site(site_file)
    store = site.product_store()
    maps = {f"{lv}_S2_{t}_20180301-{d}_AGS" for t in ("T31UDS", "T31UES")
            for lv, d in (("L4A", "20181031"), ("L4B", "20181031"))}
    assert maps <= {p.name for p in store.root.glob("L4*/*/*/*")}
    js = site.job_store()
    try:
        crop_jobs = [j for j in js.jobs() if j.processor in ("L4A", "L4B")]
    finally:
        js.close()
    # one job per map date for the whole site, not one per tile
    assert sorted((j.processor, j.tile) for j in crop_jobs) == [("L4A", None), ("L4B", None)]
    polys = read_polygons(parcels, "CROP")
    for lv, day in (("L4A", "20181031"), ("L4B", "20181031")):
        model_file = store.root / "site-models" / f"{lv}_flanders-two-tiles_20180301-{day}.joblib"
        model = load_site_model(model_file)  # the model the job trained, kept for --model
        assert [u["tile"] for u in model.units] == ["T31UDS", "T31UES"]
        assert all(u["training_pixels"] > 100 for u in model.units)  # both tiles train it
        trained = np.isin(polys.ids, model.training_polygons[str(parcels.resolve())])
        for tile in ("T31UDS", "T31UES"):
            item = store.item(f"{lv}_S2_{tile}_20180301-{day}_AGS")
            p = item.properties
            assert p["agriseries:site_model"]["units"] == model.units  # one model, both tiles
            assert p["agriseries:parameters"]["source"]["site_model"] == str(model_file)
            # validated on the pixels of this tile's parcels the model did not train on
            index = rasterize_polygons(polys, _asset_geobox(store, item, "crop_mask" if lv ==
                                                            "L4A" else "crop_type"))
            held = index[index >= 0]
            held = held[~trained[held]]
            if lv == "L4B":  # only the crop type parcels (CT > 0) the model knows
                ct = read_polygons(parcels, "CT").values
                held = held[np.isin(ct[held], model.classifier.classes) & (ct[held] != 0)]
            v = p["agriseries:validation"]
            assert v["n"] == held.size > 0, (lv, tile)
            assert "did not train on" in v["split"] and 0 <= v["oa"] <= 1
    typ = store.item("L4B_S2_T31UES_20180301-20181031_AGS")
    assert typ.properties["agriseries:parameters"]["source"]["crop_mask"] == \
        "L4A_S2_T31UES_20180301-20181031_AGS"
    assert_store_whole(site)
    again = CliRunner().invoke(cli, ["run", str(site_file), "--scheduler",
                                     cluster.scheduler.address, "--json"])
    assert again.exit_code == 0
    rep = json.loads(again.stdout)
    assert rep["made"] == [] and rep["failed"] == []
