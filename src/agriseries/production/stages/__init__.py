"""The stage table: one entry per product level the production makes.

:data:`STAGES` maps a level (the job's processor name) to its
:class:`~agriseries.production.stages.base.Stage`. The scheduler plans with the ``plan`` of
every enabled stage, the runner claims the jobs of the registered stages and runs them
through the shared driver (:func:`agriseries.production.tasks.run_job`), which calls the
stage's ``make``. Adding a level is one module (its parameter class, ``plan`` and ``make``)
and one :func:`register` call; see ``docs/architecture.md``.

The built-in stages: ``acquire`` (:mod:`.acquire`), ``ingest`` (:mod:`.ingest`), ``L2A`` (:mod:`.l2a`), ``L3A`` (:mod:`.l3a`),
``L3B`` (:mod:`.l3b`), ``L4A`` (:mod:`.l4a`), ``L4B`` (:mod:`.l4b`).
"""

from __future__ import annotations

from ...core.errors import ConfigurationError
from .base import Plan, Stage, StageContext, StageOutput

__all__ = ["STAGES", "Plan", "Stage", "StageContext", "StageOutput", "get", "register",
           "unregister"]

#: The stage table: level -> :class:`Stage`, in registration order.
STAGES: dict[str, Stage] = {}


def register(stage: Stage, *, replace: bool = False) -> Stage:
    """Add a stage to the table (``replace``: over an existing one of the same level).

    Raises
    ------
    ConfigurationError
        A stage of that level is registered already (and ``replace`` is False).
    """
    if not isinstance(stage, Stage):
        raise ConfigurationError(f"{stage!r}: expected a Stage")
    if stage.level in STAGES and not replace:
        raise ConfigurationError(f"a stage {stage.level!r} is registered already")
    STAGES[stage.level] = stage
    return stage


def unregister(level: str) -> Stage | None:
    """Remove a stage from the table; returns it (``None`` if there was none)."""
    return STAGES.pop(level, None)


def get(level: str) -> Stage:
    """The stage of a level.

    Raises
    ------
    ConfigurationError
        No stage of that level (the message lists the known ones).
    """
    try:
        return STAGES[level]
    except KeyError:
        raise ConfigurationError(f"unknown stage {level!r} (known: {', '.join(STAGES)})") from None


def _register_builtins() -> None:
    from . import acquire, ingest, l2a, l3a, l3b, l4a, l4b

    for module in (acquire, ingest, l2a, l3a, l3b, l4a, l4b):
        register(module.STAGE)


_register_builtins()
