"""Terminal output shared by the command-line modules.

* :data:`out` (stdout) and :data:`err` (stderr) are rich consoles that never wrap a line
  when they do not write to a terminal: a table piped into ``grep`` or a file keeps each
  product id on one line;
* :func:`progress_bar` shows a bar on stderr counting a unit of work (products, dates,
  blocks) only when stderr is a terminal; elsewhere it does nothing; :func:`task_progress`
  counts the dask tasks inside one product (long syntheses, series, crop maps);
* :func:`install_store_warnings` prints the store's warnings (a corrupt item skipped) as one
  ``warning:`` line each on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Callable, Iterator

from rich.console import Console

#: Width of a console that does not write to a terminal: wide enough for any line.
UNWRAPPED_WIDTH = 100_000


class _Console(Console):
    """A rich console as wide as its terminal, and never wrapping when it writes elsewhere
    (decided at each print: click's test runner and shell pipes swap the streams)."""

    @property
    def size(self):  # type: ignore[override]
        dims = Console.size.fget(self)
        if self.is_terminal:
            return dims
        return type(dims)(UNWRAPPED_WIDTH, dims.height)

    @size.setter
    def size(self, new_size) -> None:
        Console.size.fset(self, new_size)


#: Standard output (results).
out: Console = _Console()
#: Standard error (progress, warnings, errors).
err: Console = _Console(stderr=True)


@contextlib.contextmanager
def progress_bar(label: str, total: int | None, unit: str, *,
                 disable: bool = False) -> Iterator[Callable[[str], None]]:
    """A progress bar on stderr counting ``total`` units; yields ``tick(description)``, to
    call once per unit done. Silent when stderr is not a terminal or ``disable``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = err
    enabled = console.is_terminal and not disable
    with Progress(TextColumn(f"[bold]{label}[/bold] {{task.description}}"), BarColumn(),
                  MofNCompleteColumn(), TextColumn(unit + "s"), TimeElapsedColumn(),
                  console=console, transient=True, disable=not enabled) as progress:
        task = progress.add_task("", total=total)

        def tick(description: str = "") -> None:
            progress.update(task, advance=1, description=description[:72])

        yield tick


@contextlib.contextmanager
def task_progress(label: str, *, disable: bool = False) -> Iterator[None]:
    """A progress bar on stderr for the work inside one product: the dask tasks (block
    reads, block computations, block writes, each file's compression) done out of those of
    the graph being computed, for every computation on the local scheduler while in the
    block (a product made in several computations shows each in turn). Silent when stderr is
    not a terminal or ``disable``. Costs one counter update per task."""
    import threading

    from dask.callbacks import Callback
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    if disable or not err.is_terminal:
        yield
        return
    with Progress(TextColumn(f"[bold]{label}[/bold]"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("tasks"), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("", total=None)
        lock = threading.Lock()
        state = {"done": 0}

        def start_state(dsk, st):
            with lock:
                state["done"] = 0
                total = len(st.get("ready", ())) + len(st.get("waiting", ())) + \
                    len(st.get("finished", ()))
                bar.update(task, total=total or None, completed=0)

        def posttask(key, result, dsk, st, worker_id):
            with lock:
                state["done"] += 1
                bar.update(task, completed=state["done"])

        with Callback(start_state=start_state, posttask=posttask):
            yield


def sensor_families(value: str | None) -> tuple[str, ...] | None:
    """``"S2, l8"`` -> ``("S2", "L8")``: the ``--sensors`` option, checked against the sensors
    agriseries knows (a ``click.BadParameter``, exit code 2, for ``S3``)."""
    import click

    from .core.bands import SENSORS

    if value is None:
        return None
    names = tuple(v.strip().upper() for v in value.split(",") if v.strip())
    known = sorted(set(SENSORS) | {"S2", "L"})
    bad = [n for n in names if not any(s == n or s.startswith(n) for s in SENSORS)]
    if bad or not names:
        raise click.BadParameter(f"unknown sensor(s) {', '.join(bad) or repr(value)}: expected "
                                 f"some of {', '.join(k for k in known if k != 'L')} "
                                 "(S2 = every Sentinel-2 unit), comma-separated")
    return names


def _click_param_type():
    import click

    class TileType(click.ParamType):
        """A Sentinel-2 tile id (``T31UDS`` or ``31UDS``), checked before any work: a wrong one
        is a usage error (exit code 2) naming it; the value is the tile's name (``T31UDS``)."""

        name = "TILE"

        def convert(self, value, param, ctx):
            from .core.errors import ConfigurationError
            from .core.grid import parse_tile

            try:
                return parse_tile(value).name
            except ConfigurationError as exc:
                self.fail(str(exc), param, ctx)

    return TileType()


#: The click type of the ``--tile`` options (see ``TileType``).
TILE = _click_param_type()


def usage_check(check, *args, param_hint: str | None = None):
    """Run a check of the processor's on command-line values before any work: its
    ``ConfigurationError`` becomes a usage error (exit code 2) with the same message."""
    import click

    from .core.errors import ConfigurationError

    try:
        return check(*args)
    except ConfigurationError as exc:
        if param_hint:
            raise click.BadParameter(str(exc), param_hint=param_hint) from None
        raise click.UsageError(str(exc)) from None


class _WarningLine(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            from rich.markup import escape

            err.print(f"[yellow]warning:[/yellow] {escape(record.getMessage())}",
                      highlight=False)
        except Exception:  # noqa: BLE001 -- a warning must never break the command
            self.handleError(record)


def install_store_warnings() -> None:
    """Print the warnings of logger ``agriseries.store`` on stderr (once per process)."""
    logger = logging.getLogger("agriseries.store")
    if not any(isinstance(h, _WarningLine) for h in logger.handlers):
        logger.addHandler(_WarningLine(logging.WARNING))
        logger.propagate = False


__all__ = ["err", "install_store_warnings", "out", "progress_bar", "sensor_families", "TILE",
           "task_progress",
           "UNWRAPPED_WIDTH", "usage_check"]
