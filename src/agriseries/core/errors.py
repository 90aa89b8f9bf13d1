"""The error hierarchy of agriseries.

Every error raised on purpose derives from :class:`AgriseriesError`; the subclasses
also inherit the builtin they refine, so ``except ValueError`` keeps working for
callers that do not know agriseries. Messages name the file or value at fault and
what was expected.
"""

from __future__ import annotations

import dataclasses
import importlib
import traceback as _traceback
from pathlib import Path
from typing import Any


class AgriseriesError(Exception):
    """Root of every error agriseries raises on purpose."""


class InputProductError(AgriseriesError, ValueError):
    """An input product cannot be used: unknown layout, corrupt or missing file, bad metadata.

    Parameters
    ----------
    path
        The product (or file inside it) at fault.
    problem
        What is wrong and what was expected.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __reduce__(self):
        # picklable, so that the error crosses from a Dask worker process intact
        return (type(self), (self.path, self.problem))


class UnknownProductError(InputProductError):
    """The path is not a product layout any reader knows."""


class MissingBandError(InputProductError):
    """A band (or mask) the product should hold is absent from the metadata or the disk."""


class CorruptProductError(InputProductError):
    """A file is truncated or unreadable, or the metadata cannot be parsed."""


class EmptyIntersectionError(InputProductError):
    """The product does not overlap the requested tile or area."""


class ConfigurationError(AgriseriesError, ValueError):
    """A parameter or setting has a wrong value."""


class StoreError(AgriseriesError, OSError):
    """The product store cannot be read or written."""


class StoreWriteError(StoreError):
    """The product store cannot be written: no space left, quota exceeded, read-only file
    system, permission denied, a path that is a file. The message names the store (or the
    file) and the cause in one line; batch commands stop on it, since every further product
    would fail the same way (the products already written stay whole)."""


class AlreadyStoredError(StoreError, FileExistsError):
    """A product is written without ``overwrite`` while it is in the store: another process
    (a second ingest of the same input) wrote it first."""


class ProductExistsError(StoreError, FileExistsError):
    """The product asked for is in the store, made with other parameters or from other
    inputs than asked: the message lists what differs; ``--overwrite`` remakes it."""


class CorruptItemError(StoreError, ValueError):
    """A stored product's STAC item cannot be read: truncated or invalid JSON, not an item
    of this product, or missing a field every item has (``datetime``...).

    Commands that read the store skip such a product with a warning naming the file
    (``agriseries store check`` finds them, ``agriseries store repair`` quarantines them).

    Parameters
    ----------
    path
        The item file.
    problem
        What is wrong with it.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")

    def __str__(self) -> str:  # OSError's own __str__ would print the args tuple
        return f"{self.path}: {self.problem}"

    def __reduce__(self):
        return (type(self), (self.path, self.problem))


class JobStoreTimeout(StoreError, TimeoutError):
    """A job-store database call did not finish within its time limit.

    Raised instead of waiting forever when another connection or process holds a lock
    (SQLite ``busy_timeout``, PostgreSQL ``lock_timeout``) or a statement runs too long
    (PostgreSQL ``statement_timeout``, an interrupt on SQLite). The message names the
    database and the operation. The database is left unchanged by the failed call, so the
    caller can retry it later or stop cleanly.
    """


class LeaseLost(AgriseriesError, RuntimeError):
    """A runner reported on a job whose lease it no longer holds.

    Its lease expired and another runner claimed the job (or it was quarantined); the
    runner must drop its work on that job without recording outputs.
    """


class DownloadError(AgriseriesError, OSError):
    """A download from a provider failed."""


#: The extras of the distribution (pyproject.toml ``[project.optional-dependencies]``) that
#: :class:`OptionalDependencyError` may name.
EXTRAS = ("postgres", "cluster", "crop", "validation", "server", "acquire", "compare", "test")


class OptionalDependencyError(AgriseriesError, ImportError):
    """An optional dependency is missing; the message names the extra to install.

    Parameters
    ----------
    module
        The module that could not be imported.
    extra
        The extra of :data:`EXTRAS` that installs it.
    """

    def __init__(self, module: str, extra: str) -> None:
        if extra not in EXTRAS:
            raise ValueError(f"no extra {extra!r} (extras: {', '.join(EXTRAS)})")
        self.module, self.extra = module, extra
        super().__init__(
            f"the optional module {module!r} is not installed: pip install 'agriseries[{extra}]'"
        )

    def __reduce__(self):
        return (type(self), (self.module, self.extra))


def optional_import(module: str, extra: str):
    """Import an optional dependency, or raise :class:`OptionalDependencyError` naming the
    extra that installs it (``optional_import("sklearn.ensemble", "crop")``)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise OptionalDependencyError(module.split(".")[0], extra) from e


#: Exit code of a command or run in which every input was processed.
EXIT_OK = 0
#: Exit code when some input failed (the rest was processed) or a run stopped on an error.
EXIT_FAILED = 1
#: Exit code of a wrong usage (unknown option, bad value: click's own).
EXIT_USAGE = 2
#: Exit code when there was nothing to do: no input matched what was asked (no product of
#: the tile in the date range, nothing to process), so nothing was made.
EXIT_NOTHING = 3
#: Exit code of a command stopped by Ctrl-C (SIGINT), as a shell reports it (128 + 2).
EXIT_INTERRUPTED = 130
#: Exit code of a command stopped by SIGTERM (``kill``, a service manager, a batch
#: scheduler's time limit), as a shell reports it (128 + 15).
EXIT_TERMINATED = 143


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by the command line's SIGTERM handler: the work stops
    and is cleaned up as for Ctrl-C (a ``KeyboardInterrupt``: the half-written product is
    removed, the ones already written are whole), and the command exits with
    :data:`EXIT_TERMINATED`."""

    signum = 15


def exit_code_of_signal(signum: int | None) -> int:
    """The exit code of a command stopped by signal ``signum``: 128 + its number, as a shell
    reports a process killed by it (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum) if signum else EXIT_INTERRUPTED


class NothingToDoError(AgriseriesError, LookupError):
    """Nothing matched what was asked (no L2A product of the tile in the date range, an
    empty inbox): nothing was made. Commands exit with :data:`EXIT_NOTHING`."""


@dataclasses.dataclass(frozen=True)
class FailureRecord:
    """One input that could not be processed, in batch work (one record, the rest goes on).

    Every result type that reports failures uses it (ingest results, L2A and L3B results,
    the inputs a synthesis skipped, the production run report).

    Attributes
    ----------
    input
        What failed: an input product id, a path, a job key.
    error_type
        The exception's class name (``CorruptProductError``...).
    message
        The error message (names the file or value and what was expected).
    traceback
        The Python traceback, when there is one.
    id
        The product that could not be made (when known), or the job's key.
    """

    input: str
    error_type: str
    message: str
    traceback: str | None = None
    id: str | None = None

    @classmethod
    def from_exception(cls, input: str, exc: BaseException, *, id: str | None = None,
                       with_traceback: bool = True) -> FailureRecord:
        """The record of an exception raised while processing ``input``."""
        tb = "".join(_traceback.format_exception(exc)) if with_traceback else None
        return cls(str(input), type(exc).__name__, str(exc), tb, id)

    def __str__(self) -> str:
        return f"{self.input}: {self.error_type}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailureRecord:
        """The inverse of :meth:`to_dict`."""
        return cls(**{f.name: data.get(f.name) for f in dataclasses.fields(cls)})


class WithFailure:
    """Mixin of the per-input result records (ingest, L3B): their ``failure``
    (:class:`FailureRecord` or ``None``) read as ``error``, ``error_type`` and
    ``traceback``."""

    failure: FailureRecord | None

    @property
    def error(self) -> str | None:
        """The failure's message."""
        return self.failure.message if self.failure else None

    @property
    def error_type(self) -> str | None:
        """The failure's error class name."""
        return self.failure.error_type if self.failure else None

    @property
    def traceback(self) -> str | None:
        """The failure's traceback."""
        return self.failure.traceback if self.failure else None


@dataclasses.dataclass(frozen=True)
class JobFailure(FailureRecord):
    """A failure of a production run: the :class:`FailureRecord` and the job it happened in.

    It also reads like the mapping the run report's JSON holds (``f["state"]``,
    ``f.get("tile")``).

    Attributes
    ----------
    key, processor, tile
        The job's key, stage and tile (``None`` for a failure outside a job: the
        acquisition search).
    state
        The job's state after it: ``failed`` (retried after its backoff), ``quarantined``,
        or ``done`` (an input failed in a job that made the others).
    attempts
        Attempts of the job so far.
    error
        ``Type: message``, as the job store records it.
    next_try_at
        When a failed job is tried again (ISO time), or ``None``.
    """

    key: str | None = None
    processor: str | None = None
    tile: str | None = None
    state: str | None = None
    attempts: int = 0
    error: str | None = None
    next_try_at: str | None = None

    def __getitem__(self, name: str) -> Any:
        if name not in self.keys():
            raise KeyError(name)
        return getattr(self, name)

    def get(self, name: str, default: Any = None) -> Any:
        """``self[name]``, or ``default``."""
        return getattr(self, name) if name in self.keys() else default

    def keys(self) -> tuple[str, ...]:
        """The field names."""
        return tuple(f.name for f in dataclasses.fields(self))


def exit_code(failures: int | bool, error: bool = False) -> int:
    """The exit code of a batch command: :data:`EXIT_FAILED` when an input failed or the
    work stopped on an error, else :data:`EXIT_OK`."""
    return EXIT_FAILED if (failures or error) else EXIT_OK

class VerificationError(DownloadError):
    """A downloaded file failed its check (checksum, size, an error page instead of data,
    a raster or archive that does not open); it is deleted, never ingested."""


class AuthenticationError(DownloadError, PermissionError):
    """A provider refused the credentials (or none were found); the message names the
    provider and where credentials are read from, never the credentials themselves."""


class ProviderUnavailableError(DownloadError, ConnectionError):
    """A provider's catalogue or download service cannot be reached or keeps failing."""
