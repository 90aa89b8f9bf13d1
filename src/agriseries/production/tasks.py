"""Jobs as tasks on the workers, and the shared driver every stage runs through.

A worker gets a :class:`TaskSpec` (what the job store says of one job, no database access
needed) and returns a :class:`TaskResult`. :func:`execute_task` sets up the job's dask
scheduler (its worker's threads) and calls :func:`run_job`, the
driver that does for every stage (:mod:`agriseries.production.stages`) what each would
otherwise repeat:

1. the job's parameters, from JSON to the stage's typed parameter class;
2. the product ids the job makes (``Stage.outputs``);
3. the exists guard: when every one of those products is in the store, made from exactly
   the job's inputs (the inputs and skipped inputs its STAC item lists) -- or the stage's
   products are made once -- they are returned as they are, so that a job run again after
   a crash never computes them twice;
4. the job's input items, read once from the store and handed to the stage's ``make``;
5. the product entries (id, STAC item, path) the runner writes into the catalogue;
6. any error, as a :class:`JobError` carrying its traceback (some exceptions do not survive
   pickling from a worker), marked ``transient`` when the cluster lost the job's chunks.

The products themselves are written atomically, with their lineage, by the product store
(:meth:`~agriseries.io.store.ProductStore.write_product`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import traceback as tb_format
from typing import Any

from ..core.errors import AgriseriesError, FailureRecord
from .stages import Stage, StageContext, get

__all__ = ["JobError", "TaskResult", "TaskSpec", "execute_task", "lost_to_the_cluster",
           "run_job"]


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


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a worker needs to run one job (no database access needed).

    Attributes
    ----------
    processor
        The stage (:data:`~agriseries.production.stages.STAGES` key).
    key
        The job key (for messages).
    tile
        The tile, or ``None``.
    inputs
        The job's inputs (product ids, inbox tokens).
    params
        The job's parameters (JSON of the stage's parameter class).
    store_root
        The product store folder.
    """

    processor: str
    key: str
    tile: str | None
    inputs: tuple[str, ...]
    params: dict[str, Any]
    store_root: str


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
    failures
        Inputs that could not be made while the others were (the job is done; the run's
        exit code says something failed).
    inbox
        Entries the job put into the site's inbox (``acquire`` jobs).
    seconds
        Time spent in the processor.
    worker
        Host and process that ran it.
    """

    products: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    failures: list[FailureRecord] = dataclasses.field(default_factory=list)
    inbox: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    worker: str = ""


def _product_entry(store, pid: str, made: bool) -> dict[str, Any]:
    item = store.item(pid)
    return {"id": pid, "path": str(store.item_path(pid)),
            "item": item.to_dict(transform_hrefs=False), "made": made}


def _made_from(item) -> frozenset[str]:
    """The inputs a product's STAC item says it was made from (used and skipped)."""
    props = item.properties or {}
    used = set(props.get("agriseries:inputs") or [])
    for s in (props.get("agriseries:synthesis") or {}).get("skipped") or []:
        if isinstance(s, dict) and (s.get("id") or s.get("input")):
            used.add(s.get("id") or s.get("input"))
    return frozenset(used)


def _already_made(stage: Stage, store, inputs: tuple[str, ...],
                  outputs: tuple[str, ...], job_params: str) -> list[str] | None:
    """The job's products when they are all in the store, made from exactly its inputs and
    with its parameters (or made once); else ``None``. A product that does not say which
    job parameters made it (made before they were recorded, or outside the production)
    is judged by its inputs alone."""
    if not outputs or not all(store.exists(pid) for pid in outputs):
        return None
    if stage.made_once:
        return list(outputs)
    made_from: set[str] = set()
    for pid in outputs:
        try:
            item = store.item(pid)
        except (OSError, ValueError, AgriseriesError):
            return None  # unreadable: made again
        made_from |= _made_from(item)
        job = item.properties.get("agriseries:job") or {}
        if job.get("params_hash") not in (None, job_params):
            return None  # the site's settings changed: made again (see run_job)
    return list(outputs) if made_from == set(inputs) else None


def run_job(stage: Stage, store, spec: TaskSpec) -> TaskResult:
    """Run one job of a stage (the shared driver: see the module docstring).

    When the job's products are in the store made with other parameters (the site's
    settings changed), the processor refuses to return them (``ProductExistsError``): the
    driver removes them and makes them again, once, and says so in the job's notes. The
    site file is the truth of the production; the job key includes its parameters, so the
    remade products are not made a third time.
    """
    from ..core.errors import ProductExistsError
    from .records import params_hash

    params = stage.params.from_json(spec.params)
    job_params = params_hash(spec.params)
    outputs = tuple(stage.outputs(spec.tile, spec.inputs, params)) if stage.outputs else ()
    done = _already_made(stage, store, spec.inputs, outputs, job_params)
    if done is not None:
        what = "made once: kept" if stage.made_once else "already made from these inputs"
        return TaskResult(products=[_product_entry(store, pid, False) for pid in done],
                          notes=[f"{', '.join(done)} {what}"])
    inputs = [store.item(i) for i in spec.inputs] if stage.inputs_in_store else list(spec.inputs)
    ctx = StageContext(store, spec.key, spec.tile, spec.inputs, outputs)
    store.extra_properties = {"agriseries:job": {"stage": stage.level, "key": spec.key,
                                                 "params_hash": job_params}}
    notes: list[str] = []
    try:
        out = stage.make(ctx, inputs, params)
    except ProductExistsError as e:
        stale = [pid for pid in outputs if store.exists(pid)]
        if not stale:
            raise
        for pid in stale:
            store.remove_product(pid)
        notes.append(f"{', '.join(stale)} made again with the site's parameters ({e})")
        out = stage.make(ctx, inputs, params)
    finally:
        store.extra_properties = {}
    out.notes[:0] = notes
    seen: dict[str, bool] = {}
    for pid, made in out.products:
        seen[pid] = seen.get(pid, False) or made
    return TaskResult(products=[_product_entry(store, pid, made) for pid, made in seen.items()],
                      removed=list(out.removed), notes=list(out.notes),
                      failures=list(out.failures), inbox=list(out.inbox))


def _in_dask_worker() -> bool:
    try:
        from distributed import get_worker

        get_worker()
        return True
    except (ImportError, ValueError):
        return False


def execute_task(spec: TaskSpec, stage: Stage | None = None) -> TaskResult:
    """Run one job (on a Dask worker, or in this process); raises :class:`JobError`.

    ``stage`` is the job's stage (default: the table's entry for ``spec.processor``); the
    runner sends it with the task, so that a stage registered by a plug-in in the runner's
    process runs on workers that never imported the plug-in.

    The job's own dask graphs (reading and computing chunks) run on this process's threads:
    on a Dask worker, as many as the worker has. (Spreading them over the whole cluster,
    ``engine.chunks: cluster``, was removed: measured, it made no job faster;
    docs/benchmarks.md.)
    """
    from ..io.store import ProductStore

    stage = stage or get(spec.processor)
    store = ProductStore(spec.store_root, catalog_updates=False)  # the runner rewrites it
    t0 = time.perf_counter()
    try:
        out = _execute(stage, store, spec)
    except JobError:
        raise
    except Exception as e:  # noqa: BLE001 -- any processor error becomes the job's error
        # sent back to the runner as a JobError: some exceptions do not survive pickling
        # (those whose __init__ takes other arguments than their message)
        raise JobError(f"{type(e).__name__}: {e}", "".join(tb_format.format_exception(e)),
                       transient=lost_to_the_cluster(e)) from None
    out.seconds = time.perf_counter() - t0
    out.worker = f"{socket.gethostname()}:{os.getpid()}"
    return out


def lost_to_the_cluster(exc: BaseException | None) -> bool:
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


def _execute(stage: Stage, store, spec: TaskSpec) -> TaskResult:
    import dask

    threads = None
    if _in_dask_worker():  # the worker's own threads, not every core of the machine
        from distributed import get_worker

        threads = get_worker().state.nthreads
    with dask.config.set(scheduler="threads", num_workers=threads):
        return run_job(stage, store, spec)
