"""Acquisition as a production stage, and crash safety of a fetch, against the loopback replay
server (no internet).

A site whose ``acquire:`` section points at the replay server (:mod:`agriseries.acquire.replay`:
recorded Earth Search and Planetary Computer catalogues plus the real T29UNU Sentinel-2 L2A
sample served as COGs) is run with ``agriseries.production.runner.run`` on a real Dask
LocalCluster: it searches, fetches the site's window into the inbox, ingests it and makes
the L3A and L3B products, with no inbox filled by hand. The kill -9 trials run the real
``agriseries acquire`` command as a subprocess and kill it mid-download.

Sockets: this module may connect to 127.0.0.1 only (pytest-socket).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agriseries.acquire.catalog import Acquisition, Selection, search
from agriseries.acquire.layout import MANIFEST, manifest_ok
from agriseries.acquire.providers import get_provider
from agriseries.acquire.replay import S2_SAMPLE, ReplayServer
from agriseries.acquire.verify import check_checksum
from agriseries.core.errors import ConfigurationError
from agriseries.production.jobstore import JobState
from agriseries.production.runner import run
from agriseries.production.site import load_site, site_from_dict
from agriseries.production.stages import STAGES
from agriseries.production.stages.acquire import AcquireParams, site_bands

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

#: About 3 x 3 km inside the T29UNU sample (lon/lat).
POLYGON = {"type": "Polygon", "coordinates": [[[-8.30, 52.50], [-8.25, 52.50], [-8.25, 52.53],
                                               [-8.30, 52.53], [-8.30, 52.50]]]}
TODAY = dt.date(2022, 12, 1)
L2A = "L2A_S2A_T29UNU_20221005T115411_SEN2COR"


# samples, srv (the replay server): tests/conftest.py


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1", memory_limit="2GiB") as lc, Client(lc) as client:
        yield client


def endpoints(server: ReplayServer) -> dict:
    return {"earth-search": {"url": server.api_url("earth-search")},
            "planetary-computer": {"url": server.api_url("planetary-computer"),
                                   "token_url": server.api_url("planetary-computer") + "/token"}}


def site_dict(tmp: Path, server: ReplayServer, **acquire) -> dict:
    return {"name": "acquire-test", "area": {"geometry": POLYGON},
            "season": {"start": "2022-10-01", "end": "2022-10-31"},
            "products": {"L3B": {"sensors": ["S2"], "variables": ["LAI"]}},
            "acquire": {"providers": ["earth-search", "planetary-computer"],
                        "endpoints": endpoints(server), "read_timeout_s": 2, "attempts": 2,
                        **acquire},
            # settle_s stays at its default (60 s): a fetched entry is complete, never waits
            "inbox": {"path": str(tmp / "inbox")},
            "store": str(tmp / "store"),
            "database": {"statement_timeout_s": 5, "lease_s": 60, "retry_s": 30},
            "retries": {"backoff_s": 3600}}


def write_site(tmp: Path, d: dict):
    path = tmp / "site.yaml"
    path.write_text(yaml.safe_dump(d))
    return load_site(path)


def file_requests(server: ReplayServer) -> list[dict]:
    return [r for r in server.log if "/files/" in r["path"]]


# ---------------------------------------------------------------------------- end to end


def test_run_searches_fetches_ingests_and_produces_then_fetches_nothing_twice(
        srv, samples, tmp_path, cluster):
    site = write_site(tmp_path, site_dict(tmp_path, srv))
    assert not site.inbox.path.exists()  # nobody fills the inbox: the acquisition does
    rep = run(site, client=cluster, today=TODAY)
    assert rep.exit_code == 0, (rep.failed, rep.notes)
    assert set(rep.made) == {L2A, "L3B_S2A_T29UNU_20221005T115411_AGS",
                             "L3A_S2_T29UNU_20221001-20221031_AGS"}
    entry = site.inbox.path / S2_SAMPLE
    assert manifest_ok(entry)
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["provider"] == "earth-search" and manifest["windowed"]
    # only the window of the bands the products read (and SCL) was moved, not the files
    served = sum(r["bytes"] for r in file_requests(srv) if r["path"].endswith(".tif"))
    full = sum(p.stat().st_size for p in samples["s2"].rglob("*.tif"))
    assert 0 < served < full / 3
    bands = {p.name.split("_")[-2] for p in entry.rglob("*.tif")}
    assert bands == {"B02", "B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12", "SCL", "AOT"}
    assert "B01" not in bands  # no product reads the aerosol band
    js = site.job_store()
    try:
        (job,) = js.jobs(processor="acquire")
        assert job.state is JobState.DONE and job.inputs == ("S2A_L2A_T29UNU_20221005_R023",)
        assert job.outputs == (S2_SAMPLE,)
        (ingest,) = js.jobs(processor="ingest")
        assert ingest.state is JobState.DONE and ingest.params["allow_missing_bands"]
    finally:
        js.close()
    # the L2A product covers the site's window, not the tile
    from agriseries.io.store import ProductStore

    item = ProductStore(site.store).item(L2A)
    from odc.geo.geom import Geometry

    assert Geometry(item.geometry, "EPSG:4326").to_crs("EPSG:32629").area < 30e6
    # a second run searches again, fetches nothing, makes nothing
    n_files = len(file_requests(srv))
    rep2 = run(site, client=cluster, today=TODAY)
    assert rep2.exit_code == 0 and rep2.made == [] and rep2.submitted == 0
    assert len(file_requests(srv)) == n_files
    assert any("0 new" in n for n in rep2.notes)


def test_a_provider_down_uses_the_next_and_all_down_keeps_producing_with_exit_code_1(
        srv, tmp_path, cluster):
    srv.apis["earth-search"].down = True
    site = write_site(tmp_path, site_dict(tmp_path, srv))
    rep = run(site, client=cluster, today=TODAY)
    assert rep.exit_code == 0, rep.failed
    assert any("acquisition search at earth-search failed" in n for n in rep.notes)
    manifest = json.loads((site.inbox.path / S2_SAMPLE / MANIFEST).read_text())
    assert manifest["provider"] == "planetary-computer"
    assert L2A in rep.made
    # every provider down: the run says so (exit code 1) and still produces from the inbox
    srv.apis["planetary-computer"].down = True
    site2 = write_site(tmp_path, {**site_dict(tmp_path, srv),
                                  "products": {"L3B": {"enabled": False},
                                               "L3A": {"enabled": False}}})
    rep2 = run(site2, client=cluster, today=TODAY)
    assert rep2.exit_code == 1
    (f,) = rep2.failed
    assert f["processor"] == "acquire" and "every provider failed" in f["message"]


def test_a_fetch_that_fails_everywhere_is_a_failed_job_and_a_non_zero_exit(
        srv, tmp_path, cluster):
    # the product metadata refused at both providers (as many times as they are tried)
    mtd = f"{S2_SAMPLE}/MTD_MSIL2A.xml"
    srv.inject(f"s2/{mtd}", *["503"] * 4)
    site = write_site(tmp_path, site_dict(tmp_path, srv, providers=["earth-search"]))
    rep = run(site, client=cluster, today=TODAY)
    assert rep.exit_code == 1
    (f,) = rep.failed
    assert f["processor"] == "acquire" and f["error_type"] == "DownloadError"
    assert "HTTP 503" in f["message"] and f["state"] == "failed"
    assert not any(site.inbox.path.iterdir())  # nothing half-fetched in the inbox
    assert rep.made == []


def test_watch_fetches_an_acquisition_when_it_is_published(srv, tmp_path, cluster):
    import threading

    es = srv.apis["earth-search"]
    sample = [i for i in es.items if i["id"] == "S2A_T29UNU_20221005T115411_L2A"]
    es.items[:] = [i for i in es.items if i not in sample]  # not published yet
    site = write_site(tmp_path, site_dict(tmp_path, srv, providers=["earth-search"]))
    stop = threading.Event()
    events = []
    out = {}
    runner = threading.Thread(target=lambda: out.setdefault("report", run(
        site, client=cluster, today=TODAY, watch=True, poll_s=1.0, stop=stop,
        on_event=events.append)))
    runner.start()
    try:
        t0 = time.monotonic()
        while not any("acquisition search: 0 acquisition(s) found" in str(e.detail)
                      for e in events):
            assert runner.is_alive() and time.monotonic() - t0 < 60, "no first search"
            time.sleep(0.1)
        es.items.extend(sample)  # the provider publishes it: the next poll fetches it
        store = site.product_store()
        while not store.exists("L3B_S2A_T29UNU_20221005T115411_AGS"):
            assert runner.is_alive() and time.monotonic() - t0 < 180, "not produced"
            time.sleep(0.2)
    finally:
        stop.set()
        runner.join(60)
    rep = out["report"]
    assert rep.stopped == "signal" and rep.failed == []
    assert {L2A, "L3B_S2A_T29UNU_20221005T115411_AGS"} <= set(rep.made)
    assert [d["processor"] for d in rep.done].count("acquire") == 1


# ---------------------------------------------------------------------------- the site file


def test_site_acquire_section_is_validated(tmp_path):
    base = {"name": "s", "area": {"tiles": ["T31UDS"]},
            "season": {"start": "2018-03-01", "end": "2018-10-31"},
            "inbox": str(tmp_path / "inbox"), "store": str(tmp_path / "store")}
    s = site_from_dict({**base, "acquire": {}})
    assert s.acquire.providers == ["earth-search", "planetary-computer", "usgs"]
    assert STAGES["acquire"].enabled(s) and s.area_geometry() is None
    with pytest.raises(ConfigurationError, match=r"acquire.providers.*expected some of"):
        site_from_dict({**base, "acquire": {"providers": ["esa-hub"]}})
    with pytest.raises(ConfigurationError, match=r"acquire.bands"):
        site_from_dict({**base, "acquire": {"bands": ["B13"]}})
    with pytest.raises(ConfigurationError, match=r"acquire.level.*l2a.source: agriseries"):
        site_from_dict({**base, "acquire": {"level": "L1C"}})
    with pytest.raises(ConfigurationError, match=r"acquire.endpoints"):
        site_from_dict({**base, "acquire": {"endpoints": {"nowhere": {"url": "http://x"}}}})
    assert not STAGES["acquire"].enabled(site_from_dict(base))


def test_the_bands_fetched_are_those_the_products_read(tmp_path):
    from agriseries.biophysical.networks import S2_10M_INPUTS, S2_20M_INPUTS
    from agriseries.composite.processor import R1_BANDS, R2_BANDS
    from agriseries.crop.features import BANDS
    from agriseries.production.stages.crop import CROP_BANDS
    from agriseries.production.stages.l3a import BANDS as L3A_BANDS
    from agriseries.production.stages.l3b import BANDS as L3B_BANDS

    # the stage table's band lists are the processors' own
    assert set(L3A_BANDS) == set(R1_BANDS + R2_BANDS)
    assert L3B_BANDS[20] == tuple(b for b in S2_20M_INPUTS if b.startswith("B"))
    assert L3B_BANDS[10] == tuple(b for b in S2_10M_INPUTS if b.startswith("B"))
    assert CROP_BANDS == BANDS
    base = {"name": "s", "area": {"tiles": ["T31UDS"]},
            "season": {"start": "2018-03-01", "end": "2018-10-31"},
            "inbox": str(tmp_path / "inbox"), "store": str(tmp_path / "store"), "acquire": {}}
    only_l3b10 = site_from_dict({**base, "products": {"L3A": {"enabled": False},
                                                      "L3B": {"resolution": 10}}})
    assert site_bands(only_l3b10) == ("B03", "B04", "B08", "SCL")
    named = site_from_dict({**base, "acquire": {"bands": ["b04", "B08"]}})
    assert site_bands(named) == ("B04", "B08")
    l1c = site_from_dict({**base, "l2a": {"source": "agriseries"},
                          "acquire": {"level": "L1C"}})
    assert site_bands(l1c) is None  # the L2A processor reads every band


def test_acquisition_record_round_trip_through_the_job_parameters(srv):
    s = Selection(dt.date(2022, 10, 1), dt.date(2022, 10, 31), tiles=("T29UNU",))
    provs = [get_provider(n, endpoints(srv)[n]) for n in ("earth-search", "planetary-computer")]
    (a,) = search(s, provs).acquisitions
    assert a.alternatives
    p = AcquireParams(acquisition=a.to_record(), inbox="/x")
    back = Acquisition.from_record(AcquireParams.from_json(json.loads(json.dumps(
        p.to_json()))).acquisition)
    assert back.to_dict() == a.to_dict() and back.rank == a.rank
    assert back.item.to_dict() == a.item.to_dict()
    assert [x.item.id for x in back.alternatives] == [x.item.id for x in a.alternatives]
    with pytest.raises(ConfigurationError, match="acquisition record"):
        Acquisition.from_record({"id": "x"})


# ---------------------------------------------------------------------------- kill -9


def _acquire_cmd(srv: ReplayServer, store: Path) -> subprocess.Popen:
    env = {**os.environ, "AGRISERIES_EARTH_SEARCH_URL": srv.api_url("earth-search"),
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen(
        [sys.executable, "-m", "agriseries.cli", "acquire", "--tile", "T29UNU",
         "--from", "2022-10-01", "--to", "2022-10-31", "--provider", "earth-search",
         "--store", str(store), "--mode", "whole", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True)


def test_kill_9_mid_download_then_rerun_resumes_fetches_nothing_twice(srv, samples, tmp_path):
    """Ten trials: the real ``agriseries acquire`` is killed (SIGKILL) at a random point
    of a throttled whole-file fetch (13 files); a last run completes it. No partial file is
    ever in the inbox, every file ends verified against its checksum, a file completed
    before a kill is never requested again, and an interrupted one is resumed with Range."""
    rng = random.Random(1234)
    srv.throttle_bps = 4e5  # about 4 s of transfer for the whole acquisition (1.6 MB)
    store = tmp_path / "store"
    inbox = store / "inbox"
    entry = inbox / S2_SAMPLE
    staging = store / ".inbox.partial"
    completed: set[str] = set()  # files fully sent before the kill (their final name exists)
    resumed = killed = 0
    for trial in range(10):
        n_before = len(srv.log)
        proc = _acquire_cmd(srv, store)
        # wait for the first file request of this trial, then kill at a random point
        t0 = time.monotonic()
        while (not any("/files/" in r["path"] for r in srv.log[n_before:])
               and proc.poll() is None and time.monotonic() - t0 < 60):
            time.sleep(0.02)
        time.sleep(rng.uniform(0.05, 0.35))
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.communicate(timeout=30)
        # never a partial entry in the inbox: it is whole, with its manifest, or absent
        if inbox.exists():
            for p in inbox.iterdir():
                assert p.name == S2_SAMPLE and manifest_ok(p), f"trial {trial}: {p}"
        new = srv.log[n_before:]
        for r in new:
            name = r["path"].rsplit("/", 1)[-1]
            assert name not in completed, f"trial {trial}: {name} fetched twice"
            if r["range"] and not r["range"].startswith("bytes=0-"):
                resumed += 1
        if entry.exists():
            break
        completed |= {p.name for p in staging.rglob("*") if p.is_file()
                      and not p.name.endswith((".part", ".tmp"))}
    proc = _acquire_cmd(srv, store)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    res = json.loads(out)["results"]
    assert [r["status"] for r in res] in (["fetched"], ["skipped"])
    assert manifest_ok(entry) and not list(staging.rglob("*.part"))
    # every file verified: the checksum the item gives matches what is in the inbox
    (item,) = [i for i in srv.apis["earth-search"].items if i["id"].endswith("T29UNU_20221005T115411_L2A")]
    checked = 0
    for a in item["assets"].values():
        name = a["href"].rsplit("/", 1)[-1]
        found = list(entry.rglob(name))
        if found and a.get("file:checksum"):
            check_checksum(found[0], a["file:checksum"])
            checked += 1
    assert checked >= 10
    requested = {r["path"].rsplit("/", 1)[-1] for r in file_requests(srv)}
    assert completed and completed <= requested  # the check above compared the right names
    assert killed == 10  # every trial was killed mid-download
    assert resumed >= 3  # downloads were resumed where the killed ones stopped
    # the job store knows it: one acquire job, done, the entry as its output
    from agriseries.production.jobstore import JobStore

    with JobStore(f"sqlite:///{store / 'jobs.sqlite'}") as js:
        (job,) = js.jobs(processor="acquire")
        assert job.state is JobState.DONE and job.outputs == (S2_SAMPLE,)


PRODUCTS = (L2A, "L3A_S2_T29UNU_20221001-20221031_AGS", "L3B_S2A_T29UNU_20221005T115411_AGS")


def _run_cmd(site) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.Popen([sys.executable, "-m", "agriseries.production.cli", "run",
                             str(site.source)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def _kill_group(proc: subprocess.Popen) -> bool:
    """SIGKILL the runner and its Dask worker processes; True if it was still running."""
    alive = proc.poll() is None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)
    return alive


def test_run_killed_with_sigkill_at_random_points_then_reruns_produce_everything_once(
        srv, samples, tmp_path, cluster):
    """``agriseries run`` (a real process with its own Dask worker; ``acquire: {mode:
    whole}``, throttled) is killed with SIGKILL, with its worker, ten times at random points:
    a random delay after an event of the run (its start, its search, its first file request,
    an ingest job running, a product job running), the events chosen so that the kills fall
    in every phase: twice in the download, then start-up, search, ingest, production (L2A,
    L3A, L3B) and, once all is made, idle runs. After each kill: the inbox holds whole entries only,
    nothing partial; the run fetched no file a previous run had completed, and resumed each
    interrupted one with ``Range`` from the bytes on disk; no job that was done ran again and
    no product written before was written again. A last run finishes: every product made,
    each by one done job, every fetched file matching its checksum."""
    from agriseries.io.store import ProductStore

    rng = random.Random(20261202)
    srv.throttle_bps = 8e5  # about 2 s for the 1.6 MB of the acquisition
    d = site_dict(tmp_path, srv, providers=["earth-search"], mode="whole")
    d["engine"] = {"n_workers": 1, "memory_limit": "2GiB"}
    site = write_site(tmp_path, d)
    inbox, staging = site.inbox.path, tmp_path / ".inbox.partial"
    store = ProductStore(site.store)

    def files_on_disk() -> tuple[set[str], dict[str, int]]:
        complete = {p.name for root in (staging, inbox) if root.exists()
                    for p in root.rglob("*") if p.is_file()
                    and not p.name.endswith((".part", ".tmp")) and p.name != MANIFEST}
        parts = {p.name[:-5]: p.stat().st_size for p in staging.rglob("*.part")} \
            if staging.exists() else {}
        return complete, parts

    def job_snapshot() -> dict[str, tuple]:
        js = site.job_store()
        try:
            return {j.key: (j.processor, j.attempts, j.finished_at, j.outputs)
                    for j in js.jobs(JobState.DONE)}
        finally:
            js.close()

    watcher = None  # one connection to watch the runner's jobs (opened once the runner made it)

    def claims() -> set[tuple[str, str, int]]:
        """(processor, key, attempt) of the running jobs (an attempt is a claim)."""
        nonlocal watcher
        if watcher is None:
            watcher = site.job_store()
        return {(j.processor, j.key, j.attempts) for j in watcher.jobs(JobState.RUNNING)}

    def running(processors) -> bool:  # a job claimed by this run (not one a killed run left)
        return any(p in processors if processors else p not in ("acquire", "ingest")
                   for p, _, _ in claims() - stale)

    # the moments of the kills: each a random delay after an event of the run (the event
    # is waited for; a run that ends first is not killed and the next moment is tried)
    events = {
        "start-up": (lambda n0: True, 3.0),
        "search": (lambda n0: len(srv.log) > n0, 0.5),
        "fetch": (lambda n0: any("/files/" in r["path"] for r in srv.log[n0:]), 1.5),
        "ingest": (lambda n0: running({"ingest"}), 1.0),
        "production": (lambda n0: running(None), 2.5),
    }
    plan = ["fetch", "fetch", "start-up", "search", "ingest", "production", "production",
            "start-up", "search", "production", "start-up", "search", "start-up", "search"]
    done_before: dict[str, tuple] = {}
    written: dict[str, int] = {}  # product -> mtime of its item when first seen
    phases, resumed, kills = [], 0, 0
    for trial, moment in enumerate(plan):
        if kills == 10:
            break
        complete, parts = files_on_disk()
        n0, stale = len(srv.log), claims()
        proc = _run_cmd(site)
        t0 = time.monotonic()
        happened, delay = events[moment]
        while proc.poll() is None and not happened(n0):
            assert time.monotonic() - t0 < 120, f"trial {trial}: no {moment}"
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, delay))
        at = time.monotonic() - t0
        killed = _kill_group(proc)
        kills += killed
        new = srv.log[n0:]
        names = [r["path"].rsplit("/", 1)[-1] for r in new if "/files/" in r["path"]]
        done_now = job_snapshot()
        phases.append(f"{moment} +{at:.1f}s" if killed else f"{moment}: run ended first")
        # 1. the inbox holds whole, verified entries only
        for e in inbox.iterdir() if inbox.exists() else ():
            assert e.name == S2_SAMPLE and manifest_ok(e), f"trial {trial}: partial {e}"
            assert not [p for p in e.rglob("*") if p.name.endswith((".part", ".tmp"))]
        # 2. nothing fetched twice; an interrupted download resumed from the bytes on disk
        assert not set(names) & complete, f"trial {trial}: fetched again {set(names) & complete}"
        for name, n in parts.items():
            reqs = [r for r in new if r["path"].endswith("/" + name)]
            if reqs and n:
                assert reqs[0]["range"] == f"bytes={n}-", (trial, name, n, reqs[0]["range"])
                resumed += 1
        # 3. a done job never runs again; a product written is never written again
        for key, snap in done_before.items():
            assert done_now.get(key) == snap, f"trial {trial}: done job {key[:12]} ran again"
        done_before = done_now
        for p in PRODUCTS:
            if store.exists(p):
                m = store.item_path(p).stat().st_mtime_ns
                assert written.setdefault(p, m) == m, f"trial {trial}: {p} written again"
    if watcher is not None:
        watcher.close()
    assert kills == 10, phases
    assert resumed >= 1, phases  # at least one download went on where a killed one stopped
    # the last run finishes the work
    rep = run(site, client=cluster, today=TODAY)
    assert rep.exit_code == 0, (rep.failed, rep.notes, phases)
    for p in PRODUCTS:
        assert store.exists(p), (p, phases)
        m = store.item_path(p).stat().st_mtime_ns
        assert written.setdefault(p, m) == m, f"{p} written again by the last run"
    js = site.job_store()
    try:
        assert not js.jobs([JobState.QUEUED, JobState.RUNNING, JobState.FAILED,
                            JobState.QUARANTINED])
        made = [o for j in js.jobs(JobState.DONE) for o in (j.outputs or ())]
        assert sorted(made) == sorted(set(made)) and set(PRODUCTS) <= set(made)
        (acq,) = js.jobs(processor="acquire")
        assert acq.state is JobState.DONE and acq.outputs == (S2_SAMPLE,)
    finally:
        js.close()
    # every fetched file is the provider's: its checksum matches
    (item,) = [i for i in srv.apis["earth-search"].items
               if i["id"].endswith("T29UNU_20221005T115411_L2A")]
    checked = 0
    for a in item["assets"].values():
        found = list((inbox / S2_SAMPLE).rglob(a["href"].rsplit("/", 1)[-1]))
        if found and a.get("file:checksum"):
            check_checksum(found[0], a["file:checksum"])
            checked += 1
    assert checked >= 10
    print("kill points:", phases, "resumed downloads:", resumed)
