"""The stage contract: what every product level gives the production.

A :class:`Stage` is a small frozen record with the same members for every level (ingest,
L2A, L3A, L3B, L4A, L4B, and the stages later issues add): its ``level``, a pure ``plan``
from the site, the catalogue and the date to the jobs due, the ``make`` that runs one job
(the processor), its typed parameter class, its claim priority, whether its product is
made once, whether it waits for the ingest, which site settings it takes and which
catalogue levels its plan reads. The registry (:mod:`agriseries.production.stages`) is a
table of them; the scheduler, the runner, the status and the site checks read only it.

What every stage would otherwise repeat is done once by the shared driver
(:func:`agriseries.production.tasks.run_job`): decoding the job's parameters, the expected
product ids (``outputs``), the exists guard (outputs already made from exactly the job's
inputs, or made once), reading the input items once, the product entries (item + path)
that the runner writes into the catalogue, and turning errors into failure records. The
atomic write and the lineage in the STAC item are the product store's
(:meth:`agriseries.io.store.ProductStore.write_product`), which every processor writes
through.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ...core.errors import FailureRecord

if TYPE_CHECKING:
    from ..plan import Catalogue, JobSpec, Waiting
    from ..site import Site

__all__ = ["Plan", "Stage", "StageContext", "StageOutput"]

#: ``plan(site, catalogue, today) -> (jobs due, products waiting)``.
Plan = Callable[["Site", "Catalogue", dt.date], tuple[list["JobSpec"], list["Waiting"]]]


@dataclasses.dataclass(frozen=True)
class StageContext:
    """What ``make`` gets besides its inputs and parameters.

    Attributes
    ----------
    store
        The product store (:class:`~agriseries.io.store.ProductStore`) it writes to.
    key
        The job's key (for messages).
    tile
        The job's tile, or ``None``.
    input_ids
        The job's inputs, as named in the job (product ids, inbox tokens).
    outputs
        The product ids the job is expected to make (``Stage.outputs``), when known.
    """

    store: Any
    key: str
    tile: str | None
    input_ids: tuple[str, ...]
    outputs: tuple[str, ...] = ()


@dataclasses.dataclass
class StageOutput:
    """What ``make`` returns.

    Attributes
    ----------
    products
        ``(product id, made)`` for every product of the job (``made`` False: it was there).
    removed
        Products the job removed from the store (superseded by its product).
    notes
        Remarks for the run report.
    failures
        Inputs that could not be made (the others were): they make the run's exit code
        non-zero.
    inbox
        Entries the job put into the site's inbox (``acquire``): complete, so the next
        look at the inbox plans their ingest at once.
    """

    products: list[tuple[str, bool]] = dataclasses.field(default_factory=list)
    removed: list[str] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    failures: list[FailureRecord] = dataclasses.field(default_factory=list)
    inbox: list[str] = dataclasses.field(default_factory=list)


def _always(site: Site) -> bool:
    return True


@dataclasses.dataclass(frozen=True)
class Stage:
    """One product level of the production (one entry of the stage table).

    Attributes
    ----------
    level
        The level it makes, also the job's processor name (``L3A``...).
    params
        Its typed parameter class: a frozen dataclass with ``to_json`` / ``from_json``
        (:class:`~agriseries.core.params.JsonParams`); the job store holds ``to_json()``.
    make
        ``make(context, inputs, params) -> StageOutput``: runs one job. ``inputs`` are the
        STAC items of exactly the job's inputs, read once by the driver (the raw input
        names when ``inputs_in_store`` is False).
    plan
        ``plan(site, catalogue, today) -> (jobs, waiting)``: pure (ids and dates from
        :mod:`agriseries.core`, no numba, dask or store import); ``None`` for a stage whose
        jobs come from elsewhere (``ingest``: the inbox scan).
    priority
        Claim order: higher is claimed first.
    made_once
        Its product is made once and kept (an in-season map): a job for a product another
        live job is making is not submitted, and an existing product is never remade.
    wait_for_ingest
        Its plan waits while ingest jobs are queued or running.
    enabled
        ``enabled(site)``: whether the site wants this level.
    site_settings
        The site file sections its plan and parameters take (``products.L3A``).
    reads
        Levels of the catalogue its plan looks at.
    reads_items
        Levels whose STAC items (not only ids and dates) its plan needs.
    outputs
        ``outputs(tile, input_ids, params) -> product ids``: the products a job makes,
        derived from the job alone (:mod:`agriseries.core.ids`), or ``None`` when only the
        processor knows (ingest).
    inputs_in_store
        The job's inputs are product ids of the store (given to ``make`` as STAC items).
    bands
        ``bands(site) -> Sentinel-2 bands`` (ESA names) its products read from the L2A
        inputs, or ``None`` (it reads none): what the acquisition fetches.
    description
        One line for people.
    """

    level: str
    params: type
    make: Callable[[StageContext, Sequence[Any], Any], StageOutput]
    plan: Plan | None = None
    priority: int = 0
    made_once: bool = False
    wait_for_ingest: bool = False
    enabled: Callable[[Site], bool] = _always
    site_settings: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    reads_items: tuple[str, ...] = ()
    outputs: Callable[[str | None, tuple[str, ...], Any], tuple[str, ...]] | None = None
    inputs_in_store: bool = True
    bands: Callable[[Site], tuple[str, ...]] | None = None
    description: str = ""
