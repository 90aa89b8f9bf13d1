"""The production runner: inbox -> catalogue -> schedule -> jobs on Dask -> catalogue.

:func:`run` does, for one site, what Sen2Agri's orchestrator did, with a Dask cluster as
the engine and the job store (:mod:`agriseries.production.jobstore`) as the memory:

1. **inbox**: list the entries of the site's inbox folder (files and folders matching its
   patterns, left alone while they are still being written), skip those already seen (an
   ingest job lists each entry as ``inbox:<name>@<size>-<mtime>`` among its inputs, so a
   changed entry is ingested again and an unchanged one never twice), read the metadata
   of the new ones to plan their ingest jobs (:func:`~agriseries.production.scheduler.ingest_jobs`);
2. **catalogue**: bring the job store's product table in line with the store on disk (the
   STAC items; :func:`rescan`), so that the catalogue can always be rebuilt from disk;
3. **schedule**: the pure rules of :mod:`agriseries.production.scheduler` give the jobs
   due; each is submitted to the job store under its key (processor, tile, inputs,
   parameters: submitting it twice is harmless, a done job stays done);
4. **execute**: claimable jobs are claimed (leased to this runner), each becomes **one Dask
   task** on the cluster (jobs of different tiles and dates run in parallel on the workers;
   a job's own dask chunks run on its worker's threads, or with ``engine.chunks: cluster``
   are spread over the whole cluster); the runner -- not the workers, which never touch
   the database -- keeps the leases alive with heartbeats (a thread of its own), and when
   a task ends registers its products in the catalogue and marks the job done, or records
   the failure (retried with an exponential backoff, quarantined after
   ``max_attempts``); a job still leased to the runner that it no longer tracks (a task
   the cluster lost) is released and run again;
5. after jobs completed, back to 3 (an ingested date makes its L3B due, a crop mask made
   the crop type masked with it) until nothing is due; ``--watch`` then waits ``poll_s`` and starts again at 1, until SIGINT / SIGTERM.

Crash safety (docs/production.md): a product is written into ``STORE/.tmp`` and
renamed into place (:meth:`~agriseries.io.store.ProductStore.write_product`), then
registered, then its job is marked done. A runner killed at any moment leaves whole
products or none in the store; its leased jobs are taken over when their lease expires
(or at once by the next runner on the same machine, which sees the process is gone), and a
processor that finds its product already in the store (made from the same inputs)
returns it without computing it again. A worker process that dies mid-job is replaced by
Dask and the task runs again on a live worker. Every database call is bounded in time;
a call that keeps failing for ``database.retry_s`` stops the run cleanly (jobs released,
cluster closed, a clear error and exit code 1) instead of hanging.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fnmatch
import hashlib
import os
import shutil
import signal
import socket
import threading
import time
import traceback as _tb
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path
from typing import Any

from ..core.errors import (
    AgriseriesError,
    ConfigurationError,
    JobStoreTimeout,
    LeaseLost,
    StoreError,
)
from ..core.ids import Level, ProductId
from .jobstore import Job, JobState, JobStore, ProductRecord
from .scheduler import (
    MADE_ONCE,
    Catalogue,
    InboxEntry,
    JobSpec,
    Waiting,
    ingest_jobs,
    schedule,
)
from .site import Site

__all__ = [
    "PROCESSORS",
    "DatabaseUnavailable",
    "JobError",
    "RunEvent",
    "RunReport",
    "SiteStatus",
    "TaskResult",
    "TaskSpec",
    "clean_tmp",
    "execute_task",
    "inspect_entry",
    "load_catalogue",
    "rescan",
    "run",
    "scan_inbox",
    "status",
]

UTC = dt.UTC


class JobError(AgriseriesError, RuntimeError):
    """A processor reported a failure (its message names the input at fault).

    ``detail`` holds the traceback of the error; ``transient`` says that the job did not
    fail on its own account: the cluster lost some of its chunks (a worker died), and it is
    run again without counting an attempt.
    """

    def __init__(self, message: str, detail: str | None = None,
                 transient: bool = False) -> None:
        super().__init__(message, detail, transient)
        self.message = message
        self.detail = detail
        self.transient = transient

    def __str__(self) -> str:
        return self.message


class DatabaseUnavailable(JobStoreTimeout):
    """The job store kept failing for longer than ``database.retry_s``: the run stops."""


# ------------------------------------------------------------------ tasks (on the workers)


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a worker needs to run one job (no database access needed).

    Attributes
    ----------
    processor
        Key in :data:`PROCESSORS`.
    key
        The job key (for messages).
    tile
        The tile, or ``None``.
    inputs
        The job's inputs (product ids, inbox tokens).
    params
        The job's parameters.
    store_root
        The product store folder.
    chunks
        ``worker``: the job's dask chunks run on its worker's own threads; ``cluster``: on
        the whole cluster.
    """

    processor: str
    key: str
    tile: str | None
    inputs: tuple[str, ...]
    params: dict[str, Any]
    store_root: str
    chunks: str = "worker"


@dataclasses.dataclass
class TaskResult:
    """What a job produced.

    Attributes
    ----------
    products
        One dict per product: ``id``, ``path`` (its STAC item file), ``item`` (the STAC
        item as a dict) and ``made`` (``False``: it was already in the store).
    removed
        Products the job removed from the store (superseded L3A products).
    notes
        Remarks for the report.
    seconds
        Time spent in the processor.
    worker
        Host and process that ran it.
    """

    products: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    worker: str = ""


def _product_entry(store, pid: str, made: bool) -> dict[str, Any]:
    item = store.item(pid)
    return {"id": pid, "path": str(store.item_path(pid)), "item": item.to_dict(), "made": made}


def _run_ingest(store, spec: TaskSpec) -> TaskResult:
    """Ingest inbox entries (:func:`agriseries.io.ingest.ingest`)."""
    from ..io.ingest import ingest

    p = spec.params
    if p.get("ignored"):
        return TaskResult(notes=[f"{', '.join(spec.inputs)}: not ingested, {p['ignored']}"])
    results = ingest(list(p["paths"]), store, tile=p.get("tile"),
                     allow_missing_bands=bool(p.get("allow_missing_bands")))
    failed = [r for r in results if r.status == "failed"]
    if failed:
        msg = "; ".join(f"{r.error_type or 'Error'}: {r.error or r.path}" for r in failed)
        raise JobError(msg, "\n".join(r.traceback or "" for r in failed) or None)
    out = TaskResult()
    for r in results:
        for pid in r.products:
            out.products.append(_product_entry(store, pid, r.status == "ingested"))
    return out


def _considered(item) -> frozenset[str]:
    from .scheduler import considered_inputs

    rec = ProductRecord.from_id(item.id, "", item=item.to_dict())
    return considered_inputs(rec) or frozenset()


def _remove_product(store, pid: str) -> None:
    """Remove a product folder atomically (renamed into ``.tmp``, then deleted)."""
    folder = store.product_dir(pid)
    trash = store.root / ".tmp" / f"{pid}.removed.{uuid.uuid4().hex[:8]}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.rename(folder, trash)
    shutil.rmtree(trash, ignore_errors=True)


def _run_l3a(store, spec: TaskSpec) -> TaskResult:
    """The monthly synthesis (:func:`agriseries.composite.composite`).

    A product of the tile and month already made from exactly the job's inputs is returned
    as is (a job resumed after a crash does not compute it again); one made from other
    inputs is replaced, and a product of the same month with another id (another sensor
    set) is removed once the new one is written.
    """
    from ..composite import WaspParams, composite, parse_period

    p = spec.params
    start, end = parse_period(p["period"])
    utc = lambda d: dt.datetime.combine(d, dt.time(), UTC)
    existing = [it for it in store.items(level=Level.L3A, tile=spec.tile, start=utc(start),
                                         end=utc(end))
                if (pid := ProductId.parse(it.id)).end is not None
                and pid.start.date() == start and pid.end.date() == end]
    for it in existing:
        if _considered(it) == frozenset(spec.inputs):
            return TaskResult(products=[_product_entry(store, it.id, False)],
                              notes=[f"{it.id} already made from these inputs"])
    sensors = tuple(p["sensors"]) if p.get("sensors") else None
    res = composite(store, spec.tile, p["period"], sensors=sensors,
                    params=WaspParams(half_period=int(p["half_period"])),
                    overwrite=bool(existing))
    out = TaskResult(products=[_product_entry(store, res.product, res.made)])
    if res.skipped:
        out.notes.append(f"{res.product}: {len(res.skipped)} input(s) skipped: "
                         + "; ".join(s["error"] for s in res.skipped))
    for it in existing:
        if it.id != res.product:
            _remove_product(store, it.id)
            out.removed.append(it.id)
    return out


def _run_l3b(store, spec: TaskSpec) -> TaskResult:
    """The biophysical variables of one L2A product
    (:func:`agriseries.biophysical.processor.biophysical_product`)."""
    from ..biophysical.processor import BiophysicalParams, biophysical_product

    p = spec.params
    params = BiophysicalParams(variables=tuple(p["variables"]), resolution=int(p["resolution"]))
    pid, made = biophysical_product(store, store.item(spec.inputs[0]), params)
    return TaskResult(products=[_product_entry(store, pid, made)])


def _run_l2a(store, spec: TaskSpec) -> TaskResult:
    """The L2A of a tile's pending L1C products, in date order
    (:func:`agriseries.l2a.processor.l2a`). An L1C that cannot be made is a note, not a job
    failure: the others are made and recorded."""
    from ..l2a.processor import L2AParams, l2a

    p = spec.params
    dates = [ProductId.parse(i).start for i in spec.inputs]
    params = L2AParams(resolution=float(p["resolution"]), altitude=float(p["altitude"]),
                       dem=p.get("dem"), backward_dates=int(p["backward_dates"]))
    res = l2a(store, spec.tile, min(dates), max(dates), params=params)
    out = TaskResult()
    for pid in dict.fromkeys(res.written + res.skipped):
        out.products.append(_product_entry(store, pid, pid in res.written))
    out.notes += [f"{pid}: no L2A: {msg}" for pid, msg in res.failed.items()]
    return out


def _crop_result(store, spec: TaskSpec, res) -> TaskResult:
    """The task result of a crop map, checked against the id the scheduler expected."""
    want = spec.params.get("product")
    if want and res.product != want:
        raise JobError(f"the crop processor made {res.product}, the scheduler expected {want} "
                       "(season or date changed?)")
    out = TaskResult(products=[_product_entry(store, res.product, res.made)])
    if res.made:
        out.notes.append(f"{res.product}: OA {res.oa:.3f}, kappa {res.kappa:.3f}, macro F1 "
                         f"{res.macro_f1:.3f} on {res.n_validation} validation pixels, data up "
                         f"to {res.last_date_used}")
    else:
        out.notes.append(f"{res.product} already in the store: kept (made once)")
    return out


def _run_l4a(store, spec: TaskSpec) -> TaskResult:
    """A crop mask up to the job's date (:func:`agriseries.crop.processor.cropmask`), with
    the in-situ polygons or the reference map; an existing product is kept as is."""
    from ..crop.nolabels import NoInsituParams
    from ..crop.processor import CropMaskParams, cropmask

    p = spec.params
    values = tuple(int(v) for v in p["crop_values"])
    params = CropMaskParams(class_field=str(p["class_field"]), crop_values=values,
                            no_insitu=NoInsituParams(
                                crop_values=values,
                                ignore_values=tuple(int(v) for v in p.get("ignore_values") or ())))
    season0, season1 = p["season"]
    res = cropmask(store, spec.tile, season0, season1, insitu=p.get("insitu"),
                   reference_map=p.get("reference_map"), until=p["until"], params=params)
    return _crop_result(store, spec, res)


def _run_l4b(store, spec: TaskSpec) -> TaskResult:
    """A crop type map up to the job's date (:func:`agriseries.crop.processor.croptype`),
    masked with the job's crop mask when it names one; an existing product is kept."""
    from ..crop.processor import CropTypeParams, croptype

    p = spec.params
    params = CropTypeParams(class_field=str(p["class_field"]),
                            exclude_codes=tuple(int(v) for v in p.get("exclude_codes") or ()))
    season0, season1 = p["season"]
    res = croptype(store, spec.tile, season0, season1, insitu=p["insitu"],
                   crop_mask=p.get("crop_mask"), until=p["until"], params=params)
    return _crop_result(store, spec, res)


#: The processors a job can name: ``(ProductStore, TaskSpec) -> TaskResult``.
PROCESSORS: dict[str, Callable[[Any, TaskSpec], TaskResult]] = {
    "ingest": _run_ingest,
    "L2A": _run_l2a,
    "L3A": _run_l3a,
    "L3B": _run_l3b,
    "L4A": _run_l4a,
    "L4B": _run_l4b,
}


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def execute_task(spec: TaskSpec) -> TaskResult:
    """Run one job (on a Dask worker, or in this process); raises what the processor raises.

    With ``spec.chunks == "cluster"`` and on a Dask worker, the job's own dask graphs
    (reading and computing chunks) are computed by the whole cluster through a client of
    the job's own, and the task leaves the worker's thread pool while it waits for them
    (:func:`distributed.secede`). Otherwise they run on this process's threads.
    """
    from ..io.store import ProductStore

    fn = PROCESSORS.get(spec.processor)
    if fn is None:
        raise ConfigurationError(f"job {spec.key[:12]}: unknown processor {spec.processor!r} "
                                 f"(known: {', '.join(PROCESSORS)})")
    store = ProductStore(spec.store_root)
    t0 = time.perf_counter()
    try:
        out = _execute(fn, store, spec)
    except JobError:
        raise
    except Exception as e:  # noqa: BLE001 -- any processor error becomes the job's error
        # sent back to the runner as a JobError: some exceptions do not survive pickling
        # (those whose __init__ takes other arguments than their message)
        raise JobError(f"{type(e).__name__}: {e}", "".join(_tb.format_exception(e)),
                       transient=_lost_to_the_cluster(e)) from None
    out.seconds = time.perf_counter() - t0
    out.worker = f"{socket.gethostname()}:{os.getpid()}"
    return out


def _lost_to_the_cluster(exc: BaseException | None) -> bool:
    """Whether an error comes from chunks the cluster lost or cancelled (a worker died, a
    connection closed) rather than from the job itself."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        mod = type(exc).__module__ or ""
        if mod.startswith("distributed") and type(exc).__name__ in (
                "FutureCancelledError", "CommClosedError", "FutureLostError"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _execute(fn, store, spec: TaskSpec) -> TaskResult:
    if spec.chunks == "cluster" and _in_dask_worker():
        import dask
        from distributed import Client, get_worker, rejoin, secede

        # A client of its own (not the worker's shared one): two jobs running on one worker
        # often build the same chunk keys (the same input read onto the same grid), and
        # their graphs must be counted apart on the scheduler.
        worker = get_worker()
        secede()  # leave the worker's thread pool while the cluster computes the chunks
        try:
            with Client(worker.scheduler.address, security=worker.security, timeout="60s",
                        set_as_default=False, name=f"job-{spec.key[:12]}") as c, \
                    dask.config.set(scheduler=c):
                out = fn(store, spec)
        finally:
            rejoin()
    else:
        import dask

        threads = None
        if _in_dask_worker():  # the worker's own threads, not every core of the machine
            from distributed import get_worker

            threads = get_worker().state.nthreads
        with dask.config.set(scheduler="threads", num_workers=threads):
            out = fn(store, spec)
    return out


# ----------------------------------------------------------------------------- inbox


def _fingerprint(path: Path) -> tuple[str, float]:
    """``size-mtime`` of a file, ``Nf-size-mtime`` of a folder (its files), and the latest
    modification time (seconds)."""
    st = path.stat()
    if not path.is_dir():
        return f"{st.st_size}-{st.st_mtime_ns}", st.st_mtime
    n, size, latest = 0, 0, st.st_mtime_ns
    for root, _dirs, files in os.walk(path):
        for f in files:
            s = os.stat(os.path.join(root, f))
            n, size, latest = n + 1, size + s.st_size, max(latest, s.st_mtime_ns)
    return f"{n}f-{size}-{latest}", latest / 1e9


def scan_inbox(site: Site, now: float | None = None) -> tuple[list[tuple[Path, str]], list[str]]:
    """The entries of the site's inbox that are ready: ``(path, token)`` pairs, and the
    names of those still arriving (modified less than ``settle_s`` ago).

    Raises
    ------
    ConfigurationError
        The inbox folder does not exist.
    """
    root = site.inbox.path
    if not root.is_dir():
        raise ConfigurationError(f"{site.where('inbox.path')}: inbox folder {root} does not "
                                 "exist")
    now = time.time() if now is None else now
    ready, arriving = [], []
    for p in sorted(root.iterdir()):
        name = p.name
        if not any(fnmatch.fnmatch(name, pat) for pat in site.inbox.include):
            continue
        if any(fnmatch.fnmatch(name, pat) for pat in site.inbox.exclude):
            continue
        try:
            fp, latest = _fingerprint(p)
        except OSError:
            continue  # removed while we looked
        if now - latest < site.inbox.settle_s:
            arriving.append(name)
            continue
        ready.append((p.absolute(), f"inbox:{name}@{fp}"))
    return ready, arriving


def inspect_entry(path: Path, token: str, allow_missing_bands: bool = False) -> InboxEntry:
    """Read an inbox entry's metadata to plan its ingest (what it is, which tiles).

    Never raises: an entry that cannot be read is returned as ``unreadable`` with the
    reader's error (its ingest job then fails with that error).
    """
    from ..core.grid import parse_tile, tiles_for_geometry
    from ..io.detect import find_reader

    try:
        reader = find_reader(path)
        if reader.kind == "product":
            product = reader.read(str(path), allow_missing_bands=allow_missing_bands)
            if product.tile:
                return InboxEntry(str(path), token, "product", (parse_tile(product.tile).name,),
                                  on_tile_grid=True)
            if product.footprint is None:
                return InboxEntry(str(path), token, "unreadable",
                                  error=f"{path}: the product has no footprint")
            tiles = tuple(t.name for t in tiles_for_geometry(product.footprint))
            return InboxEntry(str(path), token, "product", tiles)
        ds = reader.read(str(path))
        try:
            sig = repr((ds["sensor"].values.tolist(), ds["time"].values.tolist(),
                        str(ds.odc.geobox.crs)))
        finally:
            ds.close()
        return InboxEntry(str(path), token, "series",
                          group=hashlib.sha256(sig.encode()).hexdigest()[:16])
    except Exception as e:  # noqa: BLE001 -- recorded; the ingest job reports it
        return InboxEntry(str(path), token, "unreadable", error=f"{type(e).__name__}: {e}")


# --------------------------------------------------------------------------- catalogue

#: Leftovers in ``STORE/.tmp`` untouched for this long (a write interrupted by a crash) are
#: deleted when a run starts; younger ones may belong to a write in progress and are left.
TMP_MAX_AGE_S = 24 * 3600.0


def clean_tmp(store_root: str | Path, older_than_s: float = TMP_MAX_AGE_S) -> list[str]:
    """Delete the leftovers of interrupted writes in ``STORE/.tmp`` (never the product tree).

    Returns
    -------
    list of str
        The names removed.
    """
    tmp = Path(store_root) / ".tmp"
    if not tmp.is_dir():
        return []
    limit = time.time() - older_than_s
    removed = []
    for entry in sorted(tmp.iterdir()):
        try:
            latest = entry.lstat().st_mtime
            if entry.is_dir() and not entry.is_symlink():
                for root, _dirs, files in os.walk(entry):
                    for f in files:
                        latest = max(latest, os.lstat(os.path.join(root, f)).st_mtime)
            if latest < limit:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
                removed.append(entry.name)
        except FileNotFoundError:
            continue  # finished (renamed away) while we looked
    return removed


def _item_files(store_root: Path) -> dict[str, Path]:
    out = {}
    for lv in Level:
        for path in store_root.glob(f"{lv.value}/T*/[0-9]*/*/*.json"):
            if path.stem == path.parent.name:
                out[path.stem] = path
    return out


def rescan(job_store: JobStore, product_store, *, full: bool = False) -> tuple[int, int]:
    """Bring the catalogue in line with the STAC items on disk.

    Products on disk but not in the catalogue are added (with their items); catalogue
    rows whose product is no longer on disk are removed. ``full`` re-reads and rewrites
    every item (to rebuild the catalogue from disk).

    Returns
    -------
    (added, removed)
    """
    import pystac

    on_disk = _item_files(Path(product_store.root))
    known = {r.product_id for r in job_store.products()}
    todo = sorted(on_disk) if full else sorted(set(on_disk) - known)
    records = []
    for pid in todo:
        try:
            item = pystac.Item.from_file(str(on_disk[pid]))
            records.append(ProductRecord.from_id(pid, on_disk[pid], item=item.to_dict()))
        except (OSError, ValueError, AgriseriesError):
            continue  # being replaced or not an agriseries item: next time
    for i in range(0, len(records), 500):
        job_store.add_products(records[i:i + 500])
    gone = sorted(known - set(on_disk))
    for pid in gone:
        job_store.remove_product(pid)
    return len(records), len(gone)


def load_catalogue(job_store: JobStore, site: Site) -> Catalogue:
    """The catalogue the scheduler needs: L2A and L3B records of the site's tiles (and L1C
    when the site makes its own L2A; L4A and L4B when the site makes crop maps, so that a
    map made is not due again), and L3A records with their STAC items (the inputs they
    were made from)."""
    recs: list[ProductRecord] = []
    tiles = site.tiles
    levels = (Level.L1C, Level.L2A, Level.L3B) if site.l2a.source == "agriseries" \
        else (Level.L2A, Level.L3B)
    crop = site.products
    if crop.L4A.enabled or (crop.L4B.enabled and crop.L4B.crop_mask):
        levels += (Level.L4A,)
    if crop.L4B.enabled:
        levels += (Level.L4B,)
    for tile in tiles if len(tiles) <= 20 else [None]:
        for lv in levels:
            recs += job_store.products(level=lv, tile=tile)
        recs += job_store.products(level=Level.L3A, tile=tile, with_items=True)
    if len(tiles) > 20:
        keep = set(tiles)
        recs = [r for r in recs if r.tile in keep]
    return Catalogue(recs)


# ------------------------------------------------------------------------------ report


@dataclasses.dataclass(frozen=True)
class RunEvent:
    """Something that happened during a run (for progress displays).

    ``kind``: ``planned`` (``detail`` = number of new jobs), ``started``, ``done``,
    ``failed``, ``released``, ``note``.
    """

    kind: str
    processor: str | None = None
    tile: str | None = None
    key: str | None = None
    detail: Any = None


@dataclasses.dataclass
class RunReport:
    """What a run did.

    Attributes
    ----------
    site, runner
        The site name and this runner's id (host:pid:site:token).
    passes
        Planning passes.
    submitted
        New jobs submitted to the job store.
    done
        Jobs completed: key, processor, tile, outputs, made (products written),
        seconds, worker.
    failed
        Failed attempts: key, processor, tile, state (failed or quarantined), attempts,
        error, next_try_at.
    made
        Products written in this run.
    removed
        Products removed (superseded).
    notes, notices
        Remarks (lease lost, database retries...) and what the site asks that cannot be
        done yet.
    waiting
        Products waiting on inputs (last planning pass).
    arriving
        Inbox entries still being written (last pass).
    stopped
        ``None`` (finished), ``signal`` or ``database``.
    error
        The error that stopped the run.
    """

    site: str
    runner: str
    passes: int = 0
    submitted: int = 0
    done: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    failed: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    made: list[str] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    notices: list[str] = dataclasses.field(default_factory=list)
    waiting: list[Waiting] = dataclasses.field(default_factory=list)
    arriving: list[str] = dataclasses.field(default_factory=list)
    stopped: str | None = None
    error: str | None = None

    @property
    def exit_code(self) -> int:
        """0: all went well; 1: a job failed or the run stopped on an error."""
        return 1 if (self.failed or self.error) else 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        d = dataclasses.asdict(self)
        d["exit_code"] = self.exit_code
        return d


# ------------------------------------------------------------------------------ engine


@contextmanager
def _engine(site: Site, scheduler: str | None, scheduler_file: str | Path | None,
            n_workers: int | None, client) -> Iterator[Any]:
    if client is not None:
        yield client
        return
    try:
        from distributed import Client, LocalCluster
    except ImportError as e:  # pragma: no cover - distributed is a dependency
        from ..core.errors import OptionalDependencyError

        raise OptionalDependencyError("distributed", "cluster") from e
    address = scheduler or site.engine.scheduler
    sfile = scheduler_file or site.engine.scheduler_file
    if address or sfile:
        where = address or f"the scheduler file {sfile}"
        try:
            c = (Client(address, timeout="30s") if address
                 else Client(scheduler_file=str(sfile), timeout="30s"))
        except (OSError, TimeoutError) as e:
            raise ConfigurationError(f"cannot reach the Dask scheduler at {where} within 30 s: "
                                     f"{e}") from e
        try:
            yield c
        finally:
            c.close(timeout=10)
        return
    e = site.engine
    cluster = LocalCluster(n_workers=n_workers or e.n_workers,
                           threads_per_worker=e.threads_per_worker, processes=True,
                           memory_limit=e.memory_limit, dashboard_address=":0",
                           host="127.0.0.1")
    c = Client(cluster)
    try:
        yield c
    finally:
        with suppress(Exception):
            c.close(timeout=10)
        with suppress(Exception):
            cluster.close(timeout=20)


# ------------------------------------------------------------------------------ runner


def _owner_process(owner: str | None) -> tuple[str, int] | None:
    parts = (owner or "").split(":")
    if len(parts) >= 2 and parts[1].isdigit():
        return parts[0], int(parts[1])
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _Runner:
    """One run of one site (see :func:`run`)."""

    def __init__(self, site: Site, js: JobStore, engine: Callable[[], Any], *, watch: bool,
                 poll_s: float, today: dt.date | None,
                 on_event: Callable[[RunEvent], None] | None, stop: threading.Event,
                 local_slots: int | None) -> None:
        self.site = site
        self.js = js
        self.engine = engine
        self.client = None
        self.local_slots = local_slots
        self.store = site.product_store()
        self.watch = watch
        self.poll_s = poll_s
        self.today = today
        self.on_event = on_event or (lambda ev: None)
        self.stop = stop
        self.id = f"{socket.gethostname()}:{os.getpid()}:{site.name}:{uuid.uuid4().hex[:6]}"
        self.report = RunReport(site.name, self.id)
        self.running: dict[Any, Job] = {}  # future -> job (snapshot with the current lease)
        self.lock = threading.Lock()  # guards running / lost (the heartbeat thread)
        self.lost: set[Any] = set()  # futures whose lease the heartbeat found taken over
        self.orphans: dict[str, int] = {}
        self.transient: dict[str, int] = {}
        self.seen_tokens: set[str] | None = None
        self.warned_done: set[str] = set()

    # -- database calls, bounded and retried -----------------------------------------

    def db(self, what: str, fn: Callable, *args, **kwargs):
        """Call the job store; retry timeouts and errors for ``database.retry_s``, then
        raise :class:`DatabaseUnavailable`. LeaseLost and ConfigurationError pass through."""
        deadline = time.monotonic() + self.site.database.retry_s
        pause, retried = 0.25, False
        while True:
            try:
                out = fn(*args, **kwargs)
                if retried:
                    self.note(f"job store back: {what} succeeded after retries")
                return out
            except (LeaseLost, ConfigurationError):
                raise
            except StoreError as e:
                if time.monotonic() + pause > deadline or self.stop.is_set():
                    raise DatabaseUnavailable(
                        f"{e} -- gave up {what} after retrying for "
                        f"{self.site.database.retry_s:g} s (database.retry_s)") from e
                if not retried:
                    self.note(f"job store unavailable during {what}, retrying: {e}")
                retried = True
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

    def note(self, text: str) -> None:
        self.report.notes.append(text)
        self.on_event(RunEvent("note", detail=text))

    # -- planning --------------------------------------------------------------------

    def take_over_dead_runners(self) -> None:
        """Release the jobs leased by runners of this machine whose process is gone."""
        host = socket.gethostname()
        for job in self.db("list running jobs", self.js.jobs, JobState.RUNNING):
            who = _owner_process(job.lease_owner)
            if who and who[0] == host and who[1] != os.getpid() and not _alive(who[1]):
                with suppress(LeaseLost):
                    self.db("release a dead runner's job", self.js.release, job)
                    self.note(f"{job}: its runner {job.lease_owner} is gone; job taken over")

    def plan_inbox(self) -> list[JobSpec]:
        try:
            ready, arriving = scan_inbox(self.site)
        except ConfigurationError as e:  # the inbox went away (a network mount...): wait
            self.note(f"{e}; looking again at the next pass")
            return []
        self.report.arriving = arriving
        if self.seen_tokens is None:
            self.seen_tokens = {t for j in self.db("list ingest jobs", self.js.jobs,
                                                   processor="ingest") for t in j.inputs}
        new = [(p, t) for p, t in ready if t not in self.seen_tokens]
        entries = [inspect_entry(p, t, self.site.inbox.allow_missing_bands) for p, t in new]
        return ingest_jobs(self.site, entries)

    def plan(self, sync_catalogue: bool) -> int:
        """One planning pass; returns the number of new jobs submitted."""
        self.report.passes += 1
        specs = self.plan_inbox()
        if sync_catalogue:
            added, removed = self.db("rescan the catalogue", rescan, self.js, self.store)
            if added or removed:
                self.note(f"catalogue brought in line with the store: {added} product(s) "
                          f"added, {removed} removed")
        cat = self.db("load the catalogue", load_catalogue, self.js, self.site)
        active = {j.key: j for j in self.db("list active jobs", self.js.jobs,
                                            [JobState.QUEUED, JobState.RUNNING,
                                             JobState.FAILED, JobState.QUARANTINED])}
        pending = bool(specs) or any(
            j.processor == "ingest" and j.state in (JobState.QUEUED, JobState.RUNNING)
            for j in active.values())
        today = self.today or dt.datetime.now(UTC).date()
        sched = schedule(self.site, cat, today, ingest_pending=pending)
        self.report.waiting = sched.waiting
        self.report.notices = sched.notices
        specs += sched.jobs
        # a crop map is made once: a job of the same product queued, running or waiting to
        # retry (it reads the store when it runs, so it uses the late inputs too) is enough
        making = {(j.processor, j.params.get("product")) for j in active.values()
                  if j.processor in MADE_ONCE and j.state is not JobState.QUARANTINED}
        n_new = 0
        for spec in specs:
            if spec.key in active:
                continue
            if spec.processor in MADE_ONCE and (spec.processor,
                                                spec.params.get("product")) in making:
                continue  # another job (made from fewer inputs) is making this product
            job = self.db(f"submit {spec.processor}", self.js.submit, spec.processor,
                          spec.inputs, dict(spec.params), tile=spec.tile,
                          priority=spec.priority)
            if spec.processor == "ingest" and self.seen_tokens is not None:
                self.seen_tokens.update(spec.inputs)
            if job.state is JobState.DONE:
                if job.key not in self.warned_done and spec.processor != "ingest":
                    self.warned_done.add(job.key)
                    self.note(f"{job} is done but its product(s) {', '.join(spec.outputs)} "
                              "are not in the store (removed by hand?); not remade -- "
                              "delete the job to remake it")
                continue
            if job.attempts == 0 and job.state is JobState.QUEUED:
                n_new += 1
        self.report.submitted += n_new
        self.on_event(RunEvent("planned", detail=n_new))
        return n_new

    # -- execution -------------------------------------------------------------------

    def capacity(self) -> int:
        """Jobs to run at once: the cluster's threads (a LocalCluster not started yet: the
        threads it will have)."""
        if self.client is None:
            if self.local_slots is not None:
                return self.local_slots
            self.client = self.engine()
        try:
            return max(1, sum(self.client.nthreads().values()))
        except Exception:  # noqa: BLE001 -- no worker yet
            return 1

    def claim_and_submit(self) -> int:
        free = self.capacity() - len(self.running)
        if free <= 0 or self.stop.is_set():
            return 0
        jobs = self.db("claim jobs", self.js.claim, self.id, limit=free,
                       processors=list(PROCESSORS))
        if jobs and self.client is None:  # the cluster starts when there is work
            try:
                self.client = self.engine()
            except BaseException:
                for job in jobs:
                    with suppress(LeaseLost, StoreError):
                        self.js.release(job)
                raise
        for job in jobs:
            spec = TaskSpec(job.processor, job.key, job.tile, tuple(job.inputs),
                            dict(job.params), str(self.site.store), self.site.engine.chunks)
            fut = self.client.submit(
                execute_task, spec, pure=False, priority=job.priority,
                key=f"agriseries-{job.processor}-{job.key[:12]}-a{job.attempts}-"
                    f"{uuid.uuid4().hex[:6]}")
            with self.lock:
                self.running[fut] = job
            self.on_event(RunEvent("started", job.processor, job.tile, job.key,
                                   job.attempts))
        return len(jobs)

    def finish(self, fut) -> bool:
        """Record the end of a task; True if products changed."""
        with self.lock:
            job = self.running.pop(fut)
        if fut.status == "finished":
            res: TaskResult = fut.result()
            res.products = list({p["id"]: p for p in res.products}.values())
            recs = [ProductRecord.from_id(p["id"], p["path"], item=p["item"])
                    for p in res.products]
            if recs:
                self.db("register products", self.js.add_products, recs)
            for pid in res.removed:
                self.db("unregister a removed product", self.js.remove_product, pid)
            made = list(dict.fromkeys(p["id"] for p in res.products if p["made"]))
            self.report.made += made
            self.report.removed += res.removed
            for n in res.notes:
                self.note(n)
            try:
                self.db("complete a job", self.js.complete, job,
                        [p["id"] for p in res.products])
            except LeaseLost as e:
                self.note(str(e))
                return bool(recs)
            self.report.done.append({"key": job.key, "processor": job.processor,
                                     "tile": job.tile, "outputs": [p["id"] for p in res.products],
                                     "made": made, "seconds": round(res.seconds, 3),
                                     "worker": res.worker})
            self.on_event(RunEvent("done", job.processor, job.tile, job.key, made))
            return True
        if fut.status == "cancelled":
            with suppress(LeaseLost):
                self.db("release a job", self.js.release, job)
            return False
        exc = fut.exception()
        if isinstance(exc, JobError) and exc.transient:
            n = self.transient[job.key] = self.transient.get(job.key, 0) + 1
            if n <= 3:
                with suppress(LeaseLost):
                    self.db("release a job", self.js.release, job)
                    self.note(f"{job}: the cluster lost some of its chunks ({exc.message}); "
                              "run again")
                return False
        tb = getattr(exc, "detail", None)
        if not tb:
            tb_obj = fut.traceback()
            tb = "".join(_tb.format_exception(type(exc), exc, tb_obj))
        error: str | BaseException = exc.message if isinstance(exc, JobError) else exc
        if type(exc).__name__ == "KilledWorker":
            error = (f"the worker running it died every time it was tried ({exc}); "
                     "too little memory for the job?")
        try:
            failed = self.db("record a failure", self.js.fail, job, error, tb)
        except LeaseLost as e:
            self.note(str(e))
            return False
        self.report.failed.append({
            "key": job.key, "processor": job.processor, "tile": job.tile,
            "state": failed.state.value, "attempts": failed.attempts,
            "error": failed.error, "next_try_at": failed.next_try_at.isoformat()
            if failed.next_try_at else None})
        self.on_event(RunEvent("failed", job.processor, job.tile, job.key, failed.error))
        return False

    def heartbeat(self) -> None:
        """Extend the leases of the running jobs (called by the heartbeat thread)."""
        with self.lock:
            items = list(self.running.items())
        for fut, job in items:
            try:
                new = self.js.heartbeat(job, self.id)
            except LeaseLost as e:
                with self.lock:
                    if fut not in self.running:
                        continue  # it ended meanwhile (done, failed): nothing to drop
                    self.lost.add(fut)
                self.note(str(e))
                continue
            except StoreError as e:  # the next heartbeat tries again
                self.note(f"heartbeat of {job} failed: {e}")
                return
            with self.lock:
                if fut in self.running:
                    self.running[fut] = new

    def _heartbeats(self, every: float, done: threading.Event) -> None:
        """The heartbeat thread: leases stay alive whatever the main loop is waiting on."""
        while not done.wait(every):
            try:
                self.heartbeat()
            except Exception as e:  # noqa: BLE001 -- never let the thread die silently
                self.note(f"heartbeat failed: {type(e).__name__}: {e}")

    def drop_lost(self) -> None:
        """Stop tracking the jobs whose lease another runner took over."""
        with self.lock:
            lost, self.lost = self.lost, set()
            for fut in lost:
                self.running.pop(fut, None)
        for fut in lost:
            fut.cancel()

    def release_orphans(self) -> bool:
        """Jobs leased to this runner that it no longer tracks (a task the cluster lost
        track of) are released to be run again; True if there were any."""
        with self.lock:
            tracked = {j.key for j in self.running.values()}
        found = False
        for job in self.db("list running jobs", self.js.jobs, JobState.RUNNING):
            if job.lease_owner != self.id or job.key in tracked:
                continue
            found = True
            n = self.orphans[job.key] = self.orphans.get(job.key, 0) + 1
            try:
                if n <= 2:
                    self.db("release a job", self.js.release, job)
                    self.note(f"{job} was leased to this runner but no longer tracked: "
                              "released to run again")
                else:
                    self.db("record a failure", self.js.fail, job,
                            "the cluster lost track of this job's task several times")
            except LeaseLost:
                pass
        return found

    def release_all(self) -> None:
        with self.lock:
            futs = list(self.running)
        if futs and self.client is not None:
            with suppress(Exception):
                self.client.cancel(futs)
        for fut in futs:
            with self.lock:
                job = self.running.pop(fut)
            try:
                self.js.release(job)
                self.on_event(RunEvent("released", job.processor, job.tile, job.key))
            except (LeaseLost, StoreError) as e:  # its lease will expire
                self.note(f"could not release {job} ({e}); its lease will expire")

    def loop(self) -> None:
        hb_done = threading.Event()
        hb = threading.Thread(target=self._heartbeats, name="agriseries-heartbeats",
                              args=(max(0.5, self.site.database.lease_s / 3), hb_done),
                              daemon=True)
        hb.start()
        try:
            self._loop()
        finally:
            hb_done.set()
            hb.join(self.site.database.statement_timeout_s + 5)

    def _loop(self) -> None:
        from distributed import wait

        replan_every = 5.0
        next_poll = 0.0
        last_plan = -1e9
        dirty = True
        self.take_over_dead_runners()
        gone = clean_tmp(self.site.store)
        if gone:
            self.note(f"removed {len(gone)} leftover(s) of interrupted writes from "
                      f"{self.site.store / '.tmp'}")
        while not self.stop.is_set():
            now = time.monotonic()
            poll_due = now >= next_poll
            if poll_due or (dirty and (not self.running or now - last_plan >= replan_every)):
                self.plan(sync_catalogue=poll_due)
                dirty = False
                last_plan = time.monotonic()
                if poll_due:
                    next_poll = last_plan + (self.poll_s if self.watch else 1e12)
            self.drop_lost()
            claimed = self.claim_and_submit()
            if not self.running:
                if dirty:
                    continue
                if self.release_orphans():
                    continue
                if not self.watch:
                    return
                self.stop.wait(max(0.0, next_poll - time.monotonic()))
                continue
            if claimed == 0:
                with self.lock:
                    futs = list(self.running)
                try:
                    wait(futs, timeout=0.5, return_when="FIRST_COMPLETED")
                except TimeoutError:
                    pass  # nothing ended within the half second: signals, lost leases
                for fut in futs:
                    if fut.status in ("finished", "error", "cancelled") and fut in self.running:
                        dirty |= self.finish(fut)
                del futs


@contextmanager
def _signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT / SIGTERM set ``stop`` (main thread only) for the duration of the run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {}

    def handler(signum, frame):
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        old[sig] = signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def run(site: Site, *, watch: bool = False, poll_s: float | None = None,
        scheduler: str | None = None, scheduler_file: str | Path | None = None,
        n_workers: int | None = None, client=None, today: dt.date | None = None,
        on_event: Callable[[RunEvent], None] | None = None,
        stop: threading.Event | None = None) -> RunReport:
    """Run the production of a site: ingest, schedule, execute, record (module docstring).

    Parameters
    ----------
    site
        The site (:func:`~agriseries.production.site.load_site`).
    watch
        Keep running: look at the inbox again every ``poll_s`` seconds, until SIGINT,
        SIGTERM or ``stop``.
    poll_s
        Seconds between two looks at the inbox (default: ``engine.poll_s``).
    scheduler, scheduler_file
        An existing Dask cluster (address ``tcp://host:port`` or scheduler file); default
        the site's, else a LocalCluster of ``engine.n_workers`` processes.
    n_workers
        LocalCluster size (default: ``engine.n_workers``).
    client
        A ``distributed.Client`` to use (the caller closes it).
    today
        The current date for the schedule (default: today, UTC).
    on_event
        Called with a :class:`RunEvent` at each step (progress displays).
    stop
        Set it to stop the run cleanly (running jobs are released, not failed).

    Returns
    -------
    RunReport
        What was done; ``exit_code`` 1 when a job failed or the run stopped on an error.
        A job store that stays unavailable for ``database.retry_s`` stops the run with
        ``stopped == "database"`` and the error (it never hangs).

    Raises
    ------
    ConfigurationError
        The inbox is missing, the Dask scheduler cannot be reached.
    """
    stop = stop or threading.Event()
    report = RunReport(site.name, "")
    try:
        js = site.job_store()
    except StoreError as e:
        report.stopped, report.error = "database", str(e)
        return report
    try:
        scan_inbox(site)  # a missing inbox is a configuration error: say it before starting
        external = bool(client is not None or scheduler or scheduler_file
                        or site.engine.scheduler or site.engine.scheduler_file)
        with ExitStack() as stack:
            stack.enter_context(_signals(stop))

            def engine():
                return stack.enter_context(_engine(site, scheduler, scheduler_file, n_workers,
                                                   client))

            slots = None if external else ((n_workers or site.engine.n_workers)
                                           * site.engine.threads_per_worker)
            runner = _Runner(site, js, engine, watch=watch, poll_s=poll_s or site.engine.poll_s,
                             today=today, on_event=on_event, stop=stop, local_slots=slots)
            report = runner.report
            try:
                runner.loop()
                if stop.is_set():
                    report.stopped = "signal"
            except DatabaseUnavailable as e:
                report.stopped, report.error = "database", str(e)
            finally:
                runner.release_all()
    finally:
        js.close()
    return report


# ------------------------------------------------------------------------------ status


@dataclasses.dataclass
class SiteStatus:
    """The production state of a site (:func:`status`).

    Attributes
    ----------
    site
        Site name.
    counts
        Jobs per processor and state.
    problems
        Failed and quarantined jobs: key, processor, tile, state, attempts, error,
        next_try_at.
    running
        Running jobs: key, processor, tile, runner, heartbeat, lease expiry.
    products
        Products in the catalogue per level (site tiles).
    due
        Jobs the scheduler finds due that are not in the job store yet.
    waiting
        Products waiting on inputs.
    notices
        What the site asks that cannot be done yet.
    """

    site: str
    counts: dict[str, dict[str, int]]
    problems: list[dict[str, Any]]
    running: list[dict[str, Any]]
    products: dict[str, int]
    due: int
    waiting: list[Waiting]
    notices: list[str]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)


def _iso(d: dt.datetime | None) -> str | None:
    return d.isoformat() if d else None


def status(site: Site, today: dt.date | None = None) -> SiteStatus:
    """Jobs by state (with errors), products made, what is due and waiting; read-only.

    Raises
    ------
    JobStoreTimeout, StoreError
        The job store cannot be read within its time limit.
    """
    js = site.job_store()
    try:
        jobs = js.jobs()
        cat = load_catalogue(js, site)
        tiles = set(site.tiles)
        products: dict[str, int] = {}
        for lv in Level:
            n = sum(1 for r in js.products(level=lv) if r.tile in tiles)
            if n:
                products[lv.value] = n
    finally:
        js.close()
    counts: dict[str, dict[str, int]] = {}
    for j in jobs:
        counts.setdefault(j.processor, {s.value: 0 for s in JobState})[j.state.value] += 1
    problems = [{"key": j.key, "processor": j.processor, "tile": j.tile,
                 "state": j.state.value, "attempts": j.attempts, "error": j.error,
                 "next_try_at": _iso(j.next_try_at)}
                for j in jobs if j.state in (JobState.FAILED, JobState.QUARANTINED)]
    running = [{"key": j.key, "processor": j.processor, "tile": j.tile,
                "runner": j.lease_owner, "heartbeat": _iso(j.heartbeat_at),
                "lease_expires_at": _iso(j.lease_expires_at)}
               for j in jobs if j.state is JobState.RUNNING]
    pending = any(j.processor == "ingest" and j.state in (JobState.QUEUED, JobState.RUNNING)
                  for j in jobs)
    sched = schedule(site, cat, today or dt.datetime.now(UTC).date(), ingest_pending=pending)
    known = {j.key for j in jobs}
    due = sum(1 for s in sched.jobs if s.key not in known)
    return SiteStatus(site.name, counts, problems, running, products, due, sched.waiting,
                      sched.notices)
