"""The publisher: drains the production's publication outbox into the catalogue.

Production writes one outbox row per product change, in the transaction that records the
product (:mod:`agriseries.production.outbox`); it never waits for the catalogue. The
publisher runs on its own (``agriseries publish SITE.yaml [--follow]``) and, batch by batch:

1. reads the oldest due rows of the outbox (a short read transaction of the production
   database, bounded by its statement timeout),
2. reads the products' STAC items from the production catalogue (same),
3. applies the latest change of each product to the catalogue backend, **outside** any
   production transaction and within ``timeout_s`` (a catalogue that hangs makes the call
   fail, it never holds a production lock),
4. deletes exactly the rows it applied, or records the failure so the rows wait an
   exponential backoff before the next attempt.

A crash between 3 and 4 applies the same rows again: publishing is an upsert by item id
and removal is idempotent, so the catalogue still holds each product once.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable

import sqlalchemy as sa

from ..core.errors import AgriseriesError, StoreError
from ..production.catalogue import ProductCatalogue, products_table
from ..production.outbox import Outbox
from .items import PublishError, published_item

__all__ = ["PublishReport", "Publisher"]


@dataclasses.dataclass
class PublishReport:
    """What a publisher pass did.

    Attributes
    ----------
    published, removed
        Items written into / removed from the catalogue.
    rejected
        Products that cannot be published (``(id, message)``; their rows are dropped, the
        message says why).
    failures
        Failed batches (catalogue down or too slow): their messages.
    backlog
        Rows left in the outbox.
    """

    published: int = 0
    removed: int = 0
    rejected: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)
    backlog: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class Publisher:
    """Drains the outbox of a production database into a catalogue backend.

    Parameters
    ----------
    database_url
        The production database (the site's job store).
    backend
        The catalogue (:func:`~agriseries.distribution.catalog.open_backend`).
    store_root
        The product store the products are in.
    timeout_s
        Time limit of one catalogue call (a batch).
    statement_timeout_s
        Time limit of every production database call.
    backoff_s, backoff_max_s
        Wait before retrying a failed batch, doubled at each failure, capped.
    """

    def __init__(self, database_url: str, backend, store_root: str | Path, *,
                 timeout_s: float = 30.0, statement_timeout_s: float = 10.0,
                 backoff_s: float = 2.0, backoff_max_s: float = 300.0) -> None:
        self.outbox = Outbox(database_url, statement_timeout_s=statement_timeout_s,
                             backoff_s=backoff_s, backoff_max_s=backoff_max_s)
        self.catalogue = ProductCatalogue(database_url, statement_timeout_s=statement_timeout_s)
        self.backend = backend
        self.store_root = Path(store_root)
        self.timeout_s = timeout_s
        # one thread runs the catalogue calls: a call that hangs past timeout_s is left
        # behind (its thread stays blocked) and the next batch gets a new thread
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def _items(self, ids: list[str]) -> dict[str, tuple[str, dict]]:
        out: dict[str, tuple[str, dict]] = {}
        with self.catalogue.transaction("read the items to publish", write=False) as conn:
            for i in range(0, len(ids), 500):
                q = sa.select(products_table.c.product_id, products_table.c.path,
                              products_table.c.item).where(
                    products_table.c.product_id.in_(ids[i:i + 500]))
                for pid, path, item in conn.execute(q):
                    out[pid] = (path, item)
        return out

    def _call(self, fn: Callable[[], None]) -> None:
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, "agriseries-publish")
        fut = self._pool.submit(fn)
        try:
            fut.result(timeout=self.timeout_s)
        except concurrent.futures.TimeoutError:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
            raise StoreError(f"catalogue call did not finish within {self.timeout_s:g} s "
                             "(catalogue down or hanging); will retry") from None

    def run_once(self, batch: int = 500, report: PublishReport | None = None, *,
                 waiting_too: bool = False, defer: bool = False) -> PublishReport:
        """One batch: read, apply, acknowledge (``waiting_too``: also the rows still waiting
        the backoff of an earlier failure; ``defer``: a backend that rewrites files
        (geoparquet) only records the changes, :meth:`flush` writes them). Raises nothing
        for a catalogue failure (it is recorded in the report and in the outbox);
        production database errors raise :class:`~agriseries.core.errors.StoreError`."""
        report = report or PublishReport()
        entries = self.outbox.due(batch, waiting_too=waiting_too)
        if not entries:
            return report
        latest = {e.product_id: e for e in entries}  # the last change of each product wins
        items = self._items([p for p, e in latest.items() if e.op == "publish"])
        upserts, removes, rejected = [], [], []
        for pid, e in latest.items():
            if e.op == "publish" and pid in items:
                path, item = items[pid]
                try:
                    if not item:
                        raise PublishError(f"product {pid}: the catalogue has no STAC item")
                    # the item was just read from the database: no copy needed
                    upserts.append(published_item(item, path, self.store_root,
                                                  copy_item=False))
                except (PublishError, KeyError, TypeError, ValueError) as exc:
                    rejected.append((pid, str(exc)))
            else:  # removed, or removed again since it was recorded
                removes.append(pid)
        seqs = [e.seq for e in entries]
        if defer and hasattr(self.backend, "flush"):
            def apply() -> None:
                self.backend.apply(upserts, removes, self.store_root, defer=True)
        else:
            def apply() -> None:
                self.backend.apply(upserts, removes, self.store_root)
        try:
            self._call(apply)
        except (AgriseriesError, OSError, TimeoutError, RuntimeError, ValueError) as exc:
            msg = f"{type(exc).__name__}: {exc}"
            report.failures.append(msg)
            self.outbox.failed(seqs, msg)
            return report
        self.outbox.done(seqs)
        report.published += len(upserts)
        report.removed += len(removes)
        report.rejected += rejected
        return report

    def requeue_all(self) -> int:
        """Queue every product of the production catalogue for publication again (to fill a
        new or rebuilt catalogue); the number queued."""
        from ..production.outbox import enqueue

        with self.catalogue.transaction("queue every product", write=True) as conn:
            ids = [r[0] for r in conn.execute(sa.select(products_table.c.product_id)
                                              .order_by(products_table.c.product_id))]
            enqueue(conn, self.catalogue._insert, ids, "publish", self.catalogue._now(conn))
        return len(ids)

    def flush(self, report: PublishReport | None = None) -> PublishReport:
        """Have the backend write what deferred batches recorded (geoparquet: rewrite the
        files of the collections they changed), within ``timeout_s``; a failure is recorded
        in the report (the changes stay recorded: the next flush writes them)."""
        report = report or PublishReport()
        flush = getattr(self.backend, "flush", None)
        if flush is None:
            return report
        try:
            self._call(lambda: flush(self.store_root))
        except (AgriseriesError, OSError, TimeoutError, RuntimeError, ValueError) as exc:
            report.failures.append(f"writing the catalogue files: {type(exc).__name__}: {exc}")
        return report

    def drain(self, batch: int = 500, *, max_batches: int | None = None,
              waiting_too: bool = False, flush_s: float = 60.0) -> PublishReport:
        """Batches until the outbox has nothing due (or a batch fails); ``waiting_too``:
        rows waiting the backoff of an earlier failure are tried now too.

        A backend that rewrites whole files per change (geoparquet) gets deferred batches
        and one :meth:`flush` at the end, and one whenever ``flush_s`` seconds (or three
        times the last flush's duration, if longer) have passed since the last: a backlog
        costs one rewrite per collection, not one per batch, and what was published is
        visible after at most that long."""
        report = PublishReport()
        n = 0
        last, took = time.monotonic(), 0.0
        while max_batches is None or n < max_batches:
            before = (report.published, report.removed, len(report.rejected),
                      len(report.failures))
            self.run_once(batch, report, waiting_too=waiting_too, defer=True)
            n += 1
            after = (report.published, report.removed, len(report.rejected),
                     len(report.failures))
            if after == before or len(report.failures) > before[3]:
                break
            if time.monotonic() - last >= max(flush_s, 3 * took):
                t = time.monotonic()
                self.flush(report)
                last, took = time.monotonic(), time.monotonic() - t
        self.flush(report)
        report.backlog = int(self.outbox.backlog()["pending"])
        return report

    def follow(self, *, poll_s: float = 2.0, batch: int = 500,
               stop: threading.Event | None = None,
               on_report: Callable[[PublishReport], None] | None = None) -> None:
        """Drain, wait ``poll_s``, drain again... until ``stop`` is set. A production
        database that cannot be read is waited for (and reported), not fatal."""
        stop = stop or threading.Event()
        while not stop.is_set():
            try:
                rep = self.drain(batch)
            except StoreError as exc:
                rep = PublishReport(failures=[f"production database: {exc}"])
            if on_report and (rep.published or rep.removed or rep.rejected or rep.failures):
                on_report(rep)
            stop.wait(poll_s)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.outbox.close()
        self.catalogue.close()
        self.backend.close()
