"""The publication outbox: what the distribution catalogue still has to learn.

Every change of the product catalogue (:mod:`agriseries.production.catalogue`) writes one
row into the ``publish_outbox`` table **in the same transaction** as the change itself: a
product recorded (``publish``) or removed (``remove``). Production never talks to the
distribution catalogue; a separate publisher (:mod:`agriseries.distribution.publisher`,
``agriseries publish``) reads the outbox, applies it to the catalogue with a time limit
on every call, and deletes the rows it applied. So a dead or hanging catalogue only makes
the outbox grow, and when the catalogue is back every change is applied: publishing is an
upsert by product id, so a row applied twice (publisher killed between applying and
deleting) still leaves one copy of the product in the catalogue.

Rows are keyed by a sequence number (the order of the changes); the publisher applies
only the latest change of each product in a batch, and deletes exactly the rows it read
(a row written meanwhile for the same product stays for the next batch).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable
from typing import ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .database import METADATA, Database

__all__ = ["Outbox", "OutboxEntry", "backlog", "enqueue", "outbox_table"]

UTC = dt.UTC

outbox_table = sa.Table(
    "publish_outbox", METADATA,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("product_id", sa.String(200), nullable=False),
    sa.Column("op", sa.String(8), nullable=False),  # publish | remove
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_try_at", sa.Double, nullable=False, default=0.0),
    sa.Column("error", sa.Text),
    sa.Index("ix_publish_outbox_next", "next_try_at", "seq"),
)

_O = outbox_table.c
OPS = ("publish", "remove")


@dataclasses.dataclass(frozen=True)
class OutboxEntry:
    """One change to publish.

    Attributes
    ----------
    seq
        Its place in the order of changes.
    product_id
        The product.
    op
        ``publish`` (the product was recorded or rewritten) or ``remove``.
    created_at
        When production recorded the change.
    attempts
        Failed attempts to apply it so far.
    error
        The last failure.
    """

    seq: int
    product_id: str
    op: str
    created_at: dt.datetime
    attempts: int
    error: str | None


def enqueue(conn: Connection, insert, product_ids: Iterable[str], op: str, now: float) -> None:
    """Write outbox rows inside the caller's transaction (``insert``: the dialect's insert)."""
    if op not in OPS:
        raise ValueError(f"outbox op {op!r}: expected one of {OPS}")
    rows = [{"product_id": str(p), "op": op, "created_at": now, "attempts": 0,
             "next_try_at": 0.0, "error": None} for p in product_ids]
    if rows:
        conn.execute(insert(outbox_table), rows)


class Outbox(Database):
    """The publication outbox of a production database (read and emptied by the publisher).

    Parameters
    ----------
    url, statement_timeout_s, connect_timeout_s
        The production database (:class:`~agriseries.production.database.Database`).
    backoff_s, backoff_max_s
        A batch that failed is retried after ``backoff_s * 2 ** (attempts - 1)`` seconds,
        at most ``backoff_max_s``.
    """

    TABLES: ClassVar[tuple[sa.Table, ...]] = (outbox_table,)

    def __init__(self, url, *, statement_timeout_s: float = 30.0, connect_timeout_s: float = 10.0,
                 backoff_s: float = 2.0, backoff_max_s: float = 300.0) -> None:
        super().__init__(url, statement_timeout_s=statement_timeout_s,
                         connect_timeout_s=connect_timeout_s)
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)

    def due(self, limit: int = 500, *, waiting_too: bool = False) -> list[OutboxEntry]:
        """The oldest changes whose backoff has passed (``waiting_too``: every change, also
        those still waiting their backoff: an operator's "publish now"), in order."""
        with self.transaction("read the publication outbox", write=False) as conn:
            now = self._now(conn)
            q = sa.select(outbox_table)
            if not waiting_too:
                q = q.where(_O.next_try_at <= now)
            rows = conn.execute(q.order_by(_O.seq).limit(limit)).mappings().all()
        return [OutboxEntry(r["seq"], r["product_id"], r["op"],
                            dt.datetime.fromtimestamp(r["created_at"], UTC), r["attempts"],
                            r["error"]) for r in rows]

    def done(self, seqs: Iterable[int]) -> int:
        """Delete the rows applied to the catalogue; the number deleted."""
        seqs = list(seqs)
        n = 0
        with self.transaction("acknowledge published products", write=True) as conn:
            for i in range(0, len(seqs), 500):
                n += conn.execute(sa.delete(outbox_table)
                                  .where(_O.seq.in_(seqs[i:i + 500]))).rowcount
        return n

    def failed(self, seqs: Iterable[int], error: str) -> None:
        """Record a failed attempt; the rows wait for their backoff before the next one."""
        seqs = list(seqs)
        with self.transaction("record a publication failure", write=True) as conn:
            now = self._now(conn)
            for i in range(0, len(seqs), 500):
                part = seqs[i:i + 500]
                rows = conn.execute(sa.select(_O.seq, _O.attempts)
                                    .where(_O.seq.in_(part))).all()
                for seq, attempts in rows:
                    wait = min(self.backoff_max_s, self.backoff_s * 2 ** attempts)
                    conn.execute(sa.update(outbox_table).where(_O.seq == seq).values(
                        attempts=attempts + 1, next_try_at=now + wait, error=error[:2000]))

    def backlog(self) -> dict[str, int | float | str | None]:
        """The publication backlog (:func:`backlog`)."""
        return backlog(self)


def backlog(db: Database) -> dict[str, int | float | str | None]:
    """Size of the publication backlog of a production database: ``pending`` rows,
    ``failing`` (those whose last attempt failed), the age in seconds of the oldest row
    (``oldest_s``, ``None`` when empty) and the last error."""
    with db.transaction("count the publication outbox", write=False) as conn:
        now = db._now(conn)
        n, oldest, failing = conn.execute(sa.select(
            sa.func.count(), sa.func.min(_O.created_at), sa.func.count(_O.error))).one()
        err = conn.execute(sa.select(_O.error).where(_O.error.is_not(None))
                           .order_by(_O.seq.desc()).limit(1)).scalar()
    return {"pending": int(n), "failing": int(failing),
            "oldest_s": None if oldest is None else round(now - oldest, 1), "last_error": err}
