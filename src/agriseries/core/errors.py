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


class DownloadError(AgriseriesError, OSError):
    """A download from a provider failed."""


class OptionalDependencyError(AgriseriesError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(
            f"the optional module {module!r} is not installed: pip install 'agriseries[{extra}]'"
        )
