"""Publication as a stage of ``agriseries run`` (site section ``publish``).

When the site enables it, the run starts a publisher (:class:`~.publisher.Publisher`) in a
thread of its own beside the production loop. The thread opens the catalogue, drains the
outbox every ``poll_s`` seconds, and keeps going when the catalogue is down or hangs: every
catalogue call is bounded by ``timeout_s`` and a failed batch waits its backoff in the
outbox. Production never waits for it: products and their outbox rows are written by the
runner whatever the publisher does, and the publisher only reads the production database
through its own short, time-limited transactions.

When production is done, the run asks the thread for one last drain and waits for it at
most ``timeout_s`` (plus the production database's statement timeout); what is still in the
outbox then is reported (``RunReport.publication``, ``agriseries status``) and published by
the next run or by ``agriseries publish``.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from ..core.errors import AgriseriesError

__all__ = ["PublishStage"]


class PublishStage:
    """The publisher thread of a run (``start()``, then ``finish()``)."""

    def __init__(self, site) -> None:
        self.site = site
        self.conf = site.publish
        self.published = 0
        self.removed = 0
        self.rejected: list[tuple[str, str]] = []
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agriseries-publish",
                                        daemon=True)
        self._pub = None

    def _open(self):
        from .catalog import open_backend
        from .publisher import Publisher
        from .settings import ServiceSettings

        c = self.conf
        settings = ServiceSettings(store=self.site.store,
                                   backend="pgstac" if c.catalog_dsn else "geoparquet",
                                   catalog_dsn=c.catalog_dsn, catalog_dir=c.catalog_dir)
        backend = open_backend(settings, timeout_s=c.timeout_s)
        return Publisher(self.site.database_url, backend, self.site.store,
                         timeout_s=c.timeout_s,
                         statement_timeout_s=self.site.database.statement_timeout_s)

    def _pass(self, last: bool) -> None:
        if self._pub is None:
            self._pub = self._open()
        rep = self._pub.drain(waiting_too=last)  # the last pass: every row, backoff or not
        self.published += rep.published
        self.removed += rep.removed
        self.rejected += rep.rejected
        self.failures += rep.failures

    def _main(self) -> None:
        last = False
        while True:
            try:
                self._pass(last)
            except (AgriseriesError, OSError, RuntimeError, ValueError) as exc:
                # catalogue unreachable when opened, production database unreadable: noted,
                # tried again at the next pass
                self.failures.append(f"{type(exc).__name__}: {exc}")
            if last:
                return
            if self._stop.wait(self.conf.poll_s):
                last = True  # production is done: one last drain

    def start(self) -> PublishStage:
        self._thread.start()
        return self

    def finish(self) -> dict[str, Any]:
        """Ask for the last drain, wait for it (bounded), and say what was published and
        what is left in the outbox."""
        from ..production.outbox import Outbox

        self._stop.set()
        limit = self.conf.timeout_s + self.site.database.statement_timeout_s + 5
        t0 = time.monotonic()
        self._thread.join(limit)
        if self._thread.is_alive():
            self.failures.append(f"the last publication pass did not end within {limit:g} s "
                                 "(catalogue hanging); left to the next run")
        elif self._pub is not None:
            self._pub.close()
        backlog: dict[str, Any] = {}
        try:
            ob = Outbox(self.site.database_url,
                        statement_timeout_s=self.site.database.statement_timeout_s)
            try:
                backlog = ob.backlog()
            finally:
                ob.close()
        except AgriseriesError as exc:
            self.failures.append(f"publication backlog not read: {exc}")
        return {"published": self.published, "removed": self.removed,
                "rejected": [list(r) for r in self.rejected],
                "failures": self.failures[-5:], "failed_passes": len(self.failures),
                "backlog": int(backlog.get("pending", -1)) if backlog else None,
                "final_wait_s": round(time.monotonic() - t0, 2)}
