"""``engine.chunks: cluster``: one job's blocks computed by the whole cluster.

Real engine: a dask.distributed LocalCluster of 2 worker processes (1 thread each) on the
loopback. Real data: the three weeks of the WorldCereal Flanders 2018 patch of the
production tests (tests/data/production/inbox: 8 Sentinel-2 L2A dates, 1 Landsat 8 date).

* The production run with ``chunks: cluster`` makes the products the run with ``chunks:
  worker`` makes, pixel for pixel, and the chunk tasks of each L3A job ran on both workers
  (as the scheduler recorded them, not as the setting says).
* The graphs an L3A synthesis sends the scheduler carry no pixels: the 20 m masks the
  coarse pass computed and the coarse fields are scattered to the workers once and named by
  key, and each row of the write sends only the tasks of that row. Measured with
  distributed's own count of the bytes it sends (its "large graph" warning, at a threshold
  of 0 bytes), on a grid of 2 x 2 blocks of 512 px at 10 m around the patch; the products
  equal those of the local scheduler.

Sockets: Dask talks TCP on the loopback, so the module is marked ``allow_hosts``.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import warnings
from pathlib import Path

import dask
import numpy as np
import pytest
import rasterio

pytestmark = pytest.mark.allow_hosts(["127.0.0.1"])

INBOX = Path(__file__).parent / "data" / "production" / "inbox"


class _WhereTasksRan:
    """A scheduler plugin: the client that submitted each task and the worker that ran it."""

    name = "where-tasks-ran"

    def __init__(self):
        self.client_of: dict = {}
        self.ran: list[tuple] = []

    def update_graph(self, scheduler, *, client, keys, tasks, **kwargs):
        for k in tasks:
            self.client_of.setdefault(k, client)

    def transition(self, key, start, finish, *args, **kwargs):
        if start == "processing" and finish == "memory":
            self.ran.append((key, kwargs.get("worker")))


@pytest.fixture(scope="module")
def cluster():
    from distributed import Client, LocalCluster
    from distributed.diagnostics.plugin import SchedulerPlugin

    plugin = type("WhereTasksRan", (_WhereTasksRan, SchedulerPlugin), {})()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      host="127.0.0.1", memory_limit="2GiB") as lc, Client(lc) as client:
        lc.scheduler.add_plugin(plugin)
        yield client, plugin


def _site(tmp: Path, chunks: str):
    from agriseries.production.site import site_from_dict

    inbox = tmp / "inbox"
    inbox.mkdir(parents=True)
    for f in INBOX.glob("*.nc"):
        shutil.copy2(f, inbox / f.name)
    return site_from_dict({
        "name": f"chunks-{chunks}", "area": {"tiles": ["T31UDS"]},
        "season": {"start": "2018-06-01", "end": "2018-07-31"},
        "products": {"L3B": {"sensors": ["S2"], "variables": ["LAI"]}},
        "inbox": {"path": str(inbox), "settle_s": 0}, "store": str(tmp / "store"),
        "database": {"statement_timeout_s": 5, "lease_s": 60, "retry_s": 30},
        "engine": {"chunks": chunks}})


def _pixels(folder: Path) -> dict[str, np.ndarray]:
    out = {}
    for f in sorted(folder.rglob("*.tif")):
        with rasterio.open(f) as src:
            out[str(f.relative_to(folder))] = src.read()
    return out


def test_cluster_chunks_make_the_same_products_with_blocks_on_both_workers(tmp_path, cluster):
    from agriseries.production.runner import run

    client, plugin = cluster
    workers = set(client.nthreads())
    assert len(workers) == 2
    reports = {}
    for mode in ("worker", "cluster"):
        site = _site(tmp_path / mode, mode)
        start = len(plugin.ran)
        reports[mode] = run(site, client=client, today=dt.date(2018, 9, 1))
        assert reports[mode].exit_code == 0, reports[mode].failed
        ran = plugin.ran[start:]
        l3a = [d["key"] for d in reports[mode].done if d["processor"] == "L3A"]
        assert len(l3a) == 2  # June and July
        for key in l3a:
            # a job's own client is named after its key (production.tasks)
            mine = [(k, w) for k, w in ran if f"job-{key[:12]}" in plugin.client_of.get(k, "")]
            if mode == "worker":
                assert mine == []  # computed on the job's worker's threads: nothing submitted
                continue
            blocks = {w for k, w in mine if str(k[0] if isinstance(k, tuple) else k)
                      .startswith("wasp-composite-")}
            assert len([k for k, _ in mine if str(k[0]).startswith("wasp-composite-")]) == 2
            assert {w for _, w in mine} == workers, (key, len(mine), blocks)
    made = {m: sorted(r.made) for m, r in reports.items()}
    assert made["worker"] == made["cluster"] and any(p.startswith("L3A_") for p in made["worker"])
    a, b = (_pixels(tmp_path / m / "store") for m in ("worker", "cluster"))
    assert sorted(a) == sorted(b) and any("L3A" in k for k in a) and any("L3B" in k for k in a)
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _wide_synthesis(store, size: int, chunk: int):
    """The lazy synthesis of the store's L2A dates (June 2018) on a 20 m grid of ``size``
    px around the patch (reads past the files are no data), ``chunk`` px blocks at 10 m."""
    from odc.geo.geom import Geometry

    from agriseries.composite import WaspParams
    from agriseries.composite.processor import (
        R1_BANDS,
        R2_BANDS,
        CompositeGrids,
        acquisition_from_product,
        merge_passes,
        synthesize,
    )
    from agriseries.core.grid import snap_to_tile, tile_geobox

    items = list(store.items(level="L2A"))
    t20 = tile_geobox("T31UDS", 20)
    patch = snap_to_tile(t20, Geometry(items[0].geometry, "EPSG:4326").to_crs(t20.crs))
    r0 = int(round((patch.affine.f - t20.affine.f) / t20.affine.e)) - 8
    c0 = int(round((patch.affine.c - t20.affine.c) / t20.affine.a)) - 8
    grids = CompositeGrids.from_grid(t20[r0:r0 + size, c0:c0 + size], (10, 20))
    acqs = [acquisition_from_product(store.open(it), grids,
                                     {10: R1_BANDS, 20: R2_BANDS + ("B02",)},
                                     {10: chunk, 20: chunk // 2}) for it in items]
    acqs, _ = merge_passes(acqs)
    out, _ = synthesize(acqs, dt.date(2018, 6, 15), grids, {10: R1_BANDS, 20: R2_BANDS},
                        {20: ("B02",)}, WaspParams(chunks=chunk))
    return out, grids, len(acqs)


def _write(out, grids, folder: Path) -> None:
    from agriseries.io.cog import CogJob, write_cogs

    folder.mkdir()
    write_cogs([CogJob(folder / f"{v}_{res}m.tif", ds[v].data, grids.fine[res])
                for res, ds in out.items() for v in ds.data_vars])


def test_l3a_graphs_sent_to_the_cluster_carry_no_pixels(tmp_path, cluster):
    from agriseries.io.ingest import ingest
    from agriseries.io.store import ProductStore

    client, _ = cluster
    store = ProductStore(tmp_path / "store")
    assert all(r.status == "ingested" for r in ingest(sorted(INBOX.glob("*.nc")), store))
    size, chunk = 512, 512  # 20 m grid of 512 px: 2 x 2 blocks of 512 px at 10 m, 256 at 20 m
    with dask.config.set(scheduler="threads"):
        out, grids, dates = _wide_synthesis(store, size, chunk)
        _write(out, grids, tmp_path / "local")
    sizes = []
    with dask.config.set({"scheduler": client,
                          "distributed.admin.large-graph-warning-threshold": "0B"}), \
            warnings.catch_warnings(record=True) as seen:
        warnings.filterwarnings("always", message="Sending large graph", category=UserWarning)
        out, grids, _ = _wide_synthesis(store, size, chunk)
        _write(out, grids, tmp_path / "cluster")
    units = {"B": 1, "kiB": 2**10, "MiB": 2**20, "GiB": 2**30}
    for w in seen:
        m = re.search(r"Sending large graph of size ([\d.]+) (\w+)", str(w.message))
        assert m, w.message
        sizes.append(float(m[1]) * units[m[2]])
    # the coarse pass (one graph), then one per row of blocks (2 rows)
    assert len(sizes) == 3, sizes
    # one row of the held 20 m masks alone (every date, 256 x 512 px, uint8) weighs more than
    # any graph sent: they are on the workers, not in the graphs (before, each row sent
    # the masks of the whole grid and the coarse windows: 3.4 MiB here)
    row_of_masks = dates * (chunk // 2) * size
    assert max(sizes) < row_of_masks, (sizes, row_of_masks)
    a, b = _pixels(tmp_path / "local"), _pixels(tmp_path / "cluster")
    assert len(a) == 2 * 3 + 4 + 6
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # the scattered data goes with the graphs that held it
    del out, grids
    import gc
    import time

    def scattered(dask_scheduler):
        return [k for k in dask_scheduler.tasks if str(k).startswith("ndarray-")]

    t0 = time.monotonic()
    while (left := client.run_on_scheduler(scattered)) and time.monotonic() - t0 < 10:
        gc.collect()
        time.sleep(0.1)
    assert left == []


def test_two_syntheses_sharing_dates_never_give_a_key_two_definitions(tmp_path, cluster):
    """Two L3A months share five dates, read onto the same grid: the same keys. While one
    job's row holds a read of a shared date in memory (here: persisted, unoptimised, as a
    row graph is), the other job's synthesis, through a client of its own with the jobs'
    settings (``CLUSTER_JOB_CONFIG``), must not define those keys another way (before, its
    coarse pass was optimised, which made the read's ``getitem`` an alias of a fused
    ``read-getitem``: the scheduler kept the first definition and warned "Detected
    different `run_spec`" for each). The product is the one the local scheduler makes."""
    import logging

    from distributed import Client, wait
    from odc.geo.geom import Geometry

    from agriseries.composite import composite
    from agriseries.composite.processor import (
        R1_BANDS,
        R2_BANDS,
        CompositeGrids,
        acquisition_from_product,
    )
    from agriseries.io.ingest import ingest
    from agriseries.io.store import ProductStore
    from agriseries.production.tasks import CLUSTER_JOB_CONFIG

    client, _ = cluster
    store = ProductStore(tmp_path / "store")
    assert all(r.status == "ingested" for r in ingest(sorted(INBOX.glob("*.nc")), store))
    items = list(store.items(level="L2A"))
    july = [it for it in items if it.datetime.date() >= dt.date(2018, 6, 23)]
    shared = min(july, key=lambda it: it.datetime)  # in June's window and in July's
    # the grids and blocks the processor uses (composite(): default WaspParams)
    grids = CompositeGrids.for_tile("T31UDS", [Geometry(it.geometry, "EPSG:4326")
                                               for it in items])
    acq = acquisition_from_product(store.open(shared), grids,
                                   {10: R1_BANDS, 20: R2_BANDS + ("B02",)}, {10: 1024, 20: 512})
    reads = [acq.layers[r][v].data for r in (10, 20) for v in acq.layers[r].data_vars]

    class Seen(logging.Handler):
        def __init__(self):
            super().__init__()
            self.messages = []

        def emit(self, record):
            self.messages.append(record.getMessage())

    seen = Seen()
    logging.getLogger("distributed.scheduler").addHandler(seen)
    try:
        with Client(client.scheduler.address, set_as_default=False) as first:
            held = first.persist(reads, optimize_graph=False)
            wait(held)
            with Client(client.scheduler.address, set_as_default=False) as second, \
                    second.as_current(), dask.config.set(CLUSTER_JOB_CONFIG):
                composite(store, "T31UDS", "2018-07", update_catalog=False)
            del held
    finally:
        logging.getLogger("distributed.scheduler").removeHandler(seen)
    assert [m for m in seen.messages if "different `run_spec`" in m] == []
    on_cluster = _pixels(store.root / "L3A")
    with dask.config.set(scheduler="threads"):
        composite(store, "T31UDS", "2018-07", overwrite=True, update_catalog=False)
    local = _pixels(store.root / "L3A")
    assert sorted(on_cluster) == sorted(local) and len(local) == 17
    for name in local:
        np.testing.assert_array_equal(on_cluster[name], local[name], err_msg=name)
