"""The records of the production database, as plain frozen dataclasses (no database code):
a job (:class:`Job`, its :class:`JobState`), a product of the catalogue
(:class:`ProductRecord`), and the identity of a job (:func:`job_key`).

Pure: the scheduler builds and compares these without opening any database.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError
from ..core.ids import Level, ProductId

__all__ = ["Job", "JobState", "ProductRecord", "job_key", "params_hash"]

UTC = dt.UTC
KEY_VERSION = "agriseries-job-v1"
"""Version tag hashed into every job key (a change of the key scheme gives new keys)."""


class JobState(str, enum.Enum):
    """The states of a job."""

    QUEUED = "queued"  #: waiting to be claimed
    RUNNING = "running"  #: claimed by a runner, which holds a lease on it
    DONE = "done"  #: completed; its outputs are recorded
    FAILED = "failed"  #: an attempt failed; it will be claimable again after its backoff
    QUARANTINED = "quarantined"  #: failed ``max_attempts`` times; waits for an operator


@dataclasses.dataclass(frozen=True)
class Job:
    """A job as stored (a snapshot: the database row when it was read).

    Attributes
    ----------
    key
        Identity of the job: :func:`job_key` of processor, tile, inputs and parameters.
    processor
        Name of the processor (the stage function) that runs it.
    tile
        Sentinel-2 tile id the job works on, or ``None``.
    inputs
        Input product ids, sorted, without duplicates.
    params
        Parameters, as canonical JSON (what :func:`params_hash` hashed).
    state
        A :class:`JobState`.
    priority
        Higher runs first.
    attempts
        Number of claims so far (the current attempt when running).
    max_attempts
        Attempts allowed before quarantine.
    outputs
        Product ids the job made (set by :meth:`JobStore.complete`), else ``None``.
    lease_owner, lease_expires_at, heartbeat_at
        The runner holding the lease, until when, and its last heartbeat (running jobs).
    next_try_at
        Earliest time the job can be claimed (backoff after a failure).
    error, traceback
        Last error message and Python traceback (failed, quarantined jobs).
    created_at, updated_at, started_at, finished_at
        Bookkeeping times (UTC).
    """

    key: str
    processor: str
    tile: str | None
    inputs: tuple[str, ...]
    params: dict[str, Any]
    state: JobState
    priority: int
    attempts: int
    max_attempts: int
    outputs: tuple[str, ...] | None
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    next_try_at: dt.datetime | None
    error: str | None
    traceback: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None

    def __str__(self) -> str:
        where = f" {self.tile}" if self.tile else ""
        return f"job {self.key[:12]} ({self.processor}{where}, {self.state.value})"


@dataclasses.dataclass(frozen=True)
class ProductRecord:
    """A product in the catalogue.

    Attributes
    ----------
    product_id
        The product id (see :mod:`agriseries.core.ids`).
    level
        Product level code (``L2A``, ``L3A``...).
    tile
        Sentinel-2 tile id.
    start, end
        Acquisition time, or first and last day of the period (UTC); ``end == start`` for
        an acquisition.
    path
        Where the product is (its STAC item file or folder, a local path or an fsspec URL).
    item
        The STAC item as a dict, when stored and asked for.
    created_at
        When the record was (last) written.
    """

    product_id: str
    level: str
    tile: str
    start: dt.datetime
    end: dt.datetime
    path: str
    item: dict[str, Any] | None = None
    created_at: dt.datetime | None = None

    @classmethod
    def from_id(cls, product_id: str | ProductId, path: str | Path, *,
                level: Level | str | None = None, tile: str | None = None,
                start: dt.datetime | None = None, end: dt.datetime | None = None,
                item: Mapping[str, Any] | None = None) -> ProductRecord:
        """A record whose level, tile and dates default to what the product id says.

        Parameters
        ----------
        product_id
            An agriseries product id (:class:`~agriseries.core.ids.ProductId` or its
            text), or any other id when ``level``, ``tile`` and ``start`` are given.
        path
            Where the product is.
        level, tile, start, end
            Override or supply the parts of the id; ``end`` defaults to the period's end,
            else to ``start``.
        item
            The STAC item.

        Raises
        ------
        ConfigurationError
            If the id is not an agriseries id and level, tile or start is missing.
        """
        pid = product_id if isinstance(product_id, ProductId) else None
        if pid is None:
            try:
                pid = ProductId.parse(str(product_id))
            except ConfigurationError:
                pid = None
        level = level if level is not None else (pid.level if pid else None)
        tile = tile or (pid.tile if pid else None)
        start = start or (pid.start if pid else None)
        end = end or (pid.end if pid and pid.end else None) or start
        if level is None or tile is None or start is None:
            raise ConfigurationError(
                f"product {product_id}: not an agriseries product id, so level, tile and start "
                "must be given")
        return cls(str(product_id), level.value if isinstance(level, Level) else str(level),
                   tile, start, end, str(path), dict(item) if item is not None else None)


# --------------------------------------------------------------------------------- keys


def json_default(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} value {value!r} is not JSON-serialisable")


def canonical_params(params: Any) -> dict[str, Any]:
    """Parameters as a plain JSON dict: a mapping, a dataclass or a pydantic model."""
    if params is None:
        obj: Any = {}
    elif dataclasses.is_dataclass(params) and not isinstance(params, type):
        obj = dataclasses.asdict(params)
    elif hasattr(params, "model_dump"):
        obj = params.model_dump(mode="json")
    elif isinstance(params, Mapping):
        obj = dict(params)
    else:
        raise ConfigurationError(
            f"job parameters {params!r}: expected a mapping, a dataclass or a pydantic model"
        )
    try:
        text = json.dumps(obj, sort_keys=True, allow_nan=False, default=json_default)
    except (TypeError, ValueError) as e:
        raise ConfigurationError(f"job parameters cannot be stored as JSON: {e}") from e
    return json.loads(text)


def canonical_text(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def params_hash(params: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of job parameters.

    Parameters
    ----------
    params
        A mapping, a (frozen) dataclass or a pydantic model; ``None`` means no parameters.
        Key order does not matter; tuples and lists are the same; dates are ISO strings.

    Raises
    ------
    ConfigurationError
        If the parameters cannot be written as JSON (an object, NaN...).
    """
    return hashlib.sha256(canonical_text(canonical_params(params)).encode()).hexdigest()


def canonical_inputs(inputs: Iterable[str | ProductId]) -> tuple[str, ...]:
    if isinstance(inputs, (str, bytes, ProductId)):
        raise ConfigurationError(
            f"job inputs {inputs!r}: expected a sequence of product ids, not a single id"
        )
    out = set()
    for i in inputs:
        if not isinstance(i, (str, ProductId)) or not str(i):
            raise ConfigurationError(f"job input {i!r}: expected a product id (a string)")
        out.add(str(i))
    return tuple(sorted(out))


def check_processor(processor: str) -> str:
    if not isinstance(processor, str) or not (0 < len(processor) <= 64):
        raise ConfigurationError(f"processor {processor!r}: expected a name of 1-64 characters")
    return processor


def job_key(processor: str, inputs: Iterable[str | ProductId], params: Any = None,
            tile: str | None = None) -> str:
    """The identity of a job: SHA-256 (hex) of processor, tile, sorted inputs and parameters.

    The same work submitted twice (inputs in another order, parameter keys in another
    order) has the same key; a different parameter value or input gives another key. The
    tile is part of the key because one input (a Landsat scene) can feed several tiles.

    Parameters
    ----------
    processor
        Processor name.
    inputs
        Input product ids (order and duplicates do not matter).
    params
        Parameters (see :func:`params_hash`).
    tile
        Tile id, or ``None``.
    """
    parts = [KEY_VERSION, check_processor(processor), tile, list(canonical_inputs(inputs)),
             params_hash(params)]
    return hashlib.sha256(canonical_text(parts).encode()).hexdigest()


