"""The error hierarchy of agriseries.

Every error raised on purpose derives from :class:`AgriseriesError`; the subclasses
also inherit the builtin they refine, so ``except ValueError`` keeps working for
callers that do not know agriseries. Messages name the file or value at fault and
what was expected.
"""

from __future__ import annotations

from pathlib import Path


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


class OptionalDependencyError(AgriseriesError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"the optional module {module!r} is not installed: pip install 'agriseries[{extra}]'"
        )
