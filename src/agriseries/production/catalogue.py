"""The product catalogue: the products that exist (the ``products`` table), what the
scheduler plans from and what the distribution publishes from.

One row per product (id, level, tile, dates, path, STAC item), indexed on level, tile and
dates, so that "what exists for tile T between these dates" takes milliseconds with tens of
thousands of products. The catalogue can always be rebuilt from the store on disk
(:func:`rescan`). :func:`load_catalogue` gives the scheduler the in-memory
:class:`~agriseries.production.plan.Catalogue` of the levels a site's stages read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa

from ..core.errors import AgriseriesError, ConfigurationError, CorruptItemError
from ..core.ids import Level, ProductId
from .database import METADATA, Database, from_timestamp, naive_utc
from .outbox import enqueue, outbox_table
from .records import ProductRecord

if TYPE_CHECKING:
    from .plan import Catalogue
    from .site import Site

__all__ = ["ProductCatalogue", "load_catalogue", "products_table", "rescan"]

UTC = dt.UTC

products_table = sa.Table(
    "products", METADATA,
    sa.Column("product_id", sa.String(200), primary_key=True),
    sa.Column("level", sa.String(8), nullable=False),
    sa.Column("tile", sa.String(16), nullable=False),
    sa.Column("start_time", sa.DateTime, nullable=False),  # naive UTC
    sa.Column("end_time", sa.DateTime, nullable=False),
    sa.Column("path", sa.Text, nullable=False),
    sa.Column("item", sa.JSON(none_as_null=True)),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_products_level_tile_start", "level", "tile", "start_time"),
    sa.Index("ix_products_tile_start", "tile", "start_time"),
)

_P = products_table.c


def _row_to_product(r: Mapping[str, Any], with_item: bool) -> ProductRecord:
    return ProductRecord(
        product_id=r["product_id"], level=r["level"], tile=r["tile"],
        start=r["start_time"].replace(tzinfo=UTC), end=r["end_time"].replace(tzinfo=UTC),
        path=r["path"], item=r["item"] if with_item else None,
        created_at=from_timestamp(r["created_at"]),
    )


class ProductCatalogue(Database):
    """The catalogue of the products that exist (the ``products`` table).

    Parameters
    ----------
    url, statement_timeout_s, connect_timeout_s
        The database (:class:`~agriseries.production.database.Database`).
    """

    TABLES: ClassVar[tuple[sa.Table, ...]] = (products_table, outbox_table)

    # -- product catalogue ---------------------------------------------------------------

    @staticmethod
    def _product_values(rec: ProductRecord, now: float) -> dict[str, Any]:
        try:
            level = Level(rec.level).value
        except ValueError as e:
            raise ConfigurationError(f"product {rec.product_id}: level {rec.level!r}: expected one "
                                     f"of {[lv.value for lv in Level]}") from e
        start, end = naive_utc(rec.start), naive_utc(rec.end)
        if end < start:
            raise ConfigurationError(f"product {rec.product_id}: end {rec.end} is before start "
                                     f"{rec.start}")
        return {"product_id": str(rec.product_id), "level": level, "tile": rec.tile,
                "start_time": start, "end_time": end, "path": str(rec.path), "item": rec.item,
                "created_at": now}

    def add_product(self, product_id: str | ProductId, path: str | Path, *,
                    level: Level | str | None = None, tile: str | None = None,
                    start: dt.datetime | None = None, end: dt.datetime | None = None,
                    item: Mapping[str, Any] | None = None) -> ProductRecord:
        """Record a product in the catalogue (or update it: same id, new path or item).

        Level, tile and dates default to what an agriseries product id says
        (:class:`~agriseries.core.ids.ProductId`); give them for other ids.

        Parameters
        ----------
        product_id
            The product id.
        path
            Where the product is (STAC item file, folder or URL).
        level, tile, start, end
            Override or supply the parts of the id; ``end`` defaults to ``start``.
        item
            The STAC item (a dict), stored as JSON.
        """
        rec = ProductRecord.from_id(product_id, path, level=level, tile=tile, start=start,
                                    end=end, item=item)
        self.add_products([rec])
        return rec

    def add_products(self, records: Iterable[ProductRecord]) -> int:
        """Record many products in one transaction (insert or update by id).

        Every product that is new or whose STAC item changed is also written into the
        publication outbox (:mod:`agriseries.production.outbox`), in the same transaction.

        Returns
        -------
        int
            Number of records written.
        """
        recs = list(records)
        if not recs:
            return 0
        with self.transaction(f"add {len(recs)} product(s)", write=True) as conn:
            now = self._now(conn)
            rows = [self._product_values(r, now) for r in recs]
            rows = list({r["product_id"]: r for r in rows}.values())
            before: dict[str, Any] = {}
            ids = [r["product_id"] for r in rows]
            for i in range(0, len(ids), 500):
                before.update(conn.execute(sa.select(_P.product_id, _P.item).where(
                    _P.product_id.in_(ids[i:i + 500]))).all())
            changed = [r["product_id"] for r in rows
                       if r["product_id"] not in before or before[r["product_id"]] != r["item"]]
            stmt = self._insert(products_table)
            stmt = stmt.on_conflict_do_update(
                index_elements=["product_id"],
                set_={c: stmt.excluded[c] for c in
                      ("level", "tile", "start_time", "end_time", "path", "item", "created_at")},
            )
            conn.execute(stmt, rows)
            enqueue(conn, self._insert, changed, "publish", now)
        return len(rows)

    def products(self, level: Level | str | None = None, tile: str | None = None,
                 start: dt.datetime | dt.date | None = None,
                 end: dt.datetime | dt.date | None = None, *,
                 with_items: bool = False) -> list[ProductRecord]:
        """Products of a level and tile whose dates overlap ``[start, end]``, oldest first.

        As :meth:`agriseries.io.store.ProductStore.items`: dates are inclusive, and an
        ``end`` at midnight (or a date) means the whole of that day.

        Parameters
        ----------
        level, tile
            Filters (``None``: any).
        start, end
            Period (``None``: open).
        with_items
            Also return the stored STAC items (slower for many products).
        """
        cols = list(products_table.c) if with_items else [
            c for c in products_table.c if c.name != "item"]
        q = sa.select(*cols)
        if level is not None:
            q = q.where(_P.level == (level.value if isinstance(level, Level) else str(level)))
        if tile is not None:
            q = q.where(_P.tile == tile)
        if start is not None:
            q = q.where(_P.end_time >= naive_utc(start))
        if end is not None:
            e = naive_utc(end)
            if e.time() == dt.time(0):
                e = e + dt.timedelta(days=1) - dt.timedelta(microseconds=1)
            q = q.where(_P.start_time <= e)
        q = q.order_by(_P.start_time, _P.product_id)
        with self.transaction("query products", write=False) as conn:
            rows = conn.execute(q).mappings().all()
        return [_row_to_product({**r, "item": r.get("item")}, with_items) for r in rows]

    def has_product(self, product_id: str | ProductId) -> bool:
        """Whether the catalogue holds this product."""
        with self.transaction("look up product", write=False) as conn:
            q = sa.select(_P.product_id).where(_P.product_id == str(product_id))
            return conn.execute(q).first() is not None

    def remove_product(self, product_id: str | ProductId) -> bool:
        """Remove a product from the catalogue (and, in the same transaction, queue its
        removal from the distribution catalogue); ``True`` if it was there."""
        with self.transaction("remove product", write=True) as conn:
            res = conn.execute(sa.delete(products_table)
                               .where(_P.product_id == str(product_id)))
            if res.rowcount > 0:
                enqueue(conn, self._insert, [str(product_id)], "remove", self._now(conn))
            return res.rowcount > 0


# ------------------------------------------------------------------ catalogue and store


def rescan(job_store: ProductCatalogue, product_store, *, full: bool = False) -> tuple[int, int]:
    """Bring the catalogue in line with the STAC items on disk.

    Products on disk but not in the catalogue are added (with their items); catalogue
    rows whose product is no longer on disk are removed, and so are those whose item was
    rewritten since and no longer reads (a corrupt item: the product is made again); a
    rewritten item that reads updates its row. ``full`` re-reads and rewrites every item (to
    rebuild the catalogue from disk). A product whose item cannot be read is skipped with a
    warning naming the file (``agriseries store check`` reports it).

    Returns
    -------
    (added, removed)
    """
    from ..io.store import log, read_item

    on_disk = {p.stem: p for p in product_store.item_files()}
    rows = {r.product_id: r for r in job_store.products()}
    known = set(rows)
    todo = sorted(on_disk) if full else sorted(set(on_disk) - known)
    # an item rewritten since its row was recorded (by hand, a repair, a tool outside the
    # production, a disk fault) is read again: a corrupt one loses its row, so that the
    # production sees the product as missing instead of made
    changed = [] if full else sorted(pid for pid in set(on_disk) & known
                                     if _changed_since(on_disk[pid], rows[pid].created_at))
    records = []
    corrupt: list[str] = []
    for pid in changed:
        try:
            item = read_item(on_disk[pid])
            records.append(ProductRecord.from_id(pid, on_disk[pid],
                                                 item=item.to_dict(transform_hrefs=False)))
        except FileNotFoundError:
            continue
        except (CorruptItemError, OSError, ValueError, AgriseriesError) as e:
            log.warning("skipped %s (the production catalogue's row is removed: the product "
                        "is made again)", e)
            corrupt.append(pid)
    n_changed = len(records)
    for pid in todo:
        try:
            item = read_item(on_disk[pid])
            records.append(ProductRecord.from_id(pid, on_disk[pid],
                                                 item=item.to_dict(transform_hrefs=False)))
        except FileNotFoundError:
            continue  # being replaced: next time
        except CorruptItemError as e:
            log.warning("skipped %s", e)
        except (OSError, ValueError, AgriseriesError) as e:
            log.warning("skipped %s: not an agriseries product (%s)", on_disk[pid], e)
    for i in range(0, len(records), 500):
        job_store.add_products(records[i:i + 500])
    gone = sorted((known - set(on_disk)) | set(corrupt))
    for pid in gone:
        job_store.remove_product(pid)
    return len(records) - n_changed, len(gone)


def _changed_since(path: Path, recorded: dt.datetime | None) -> bool:
    """Whether an item file was modified after its catalogue row was written (with a second
    of slack for file systems with coarse times)."""
    if recorded is None:
        return False
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return False
    when = recorded if recorded.tzinfo else recorded.replace(tzinfo=dt.timezone.utc)
    return mtime > when.timestamp() + 1.0


def load_catalogue(job_store: ProductCatalogue, site: Site) -> Catalogue:
    """The catalogue the scheduler needs: the records of the site's tiles of the levels the
    site's enabled stages read (``Stage.reads``), with their STAC items for the levels whose
    items a plan needs (``Stage.reads_items``: the inputs an L3A product was made from)."""
    from .plan import Catalogue
    from .stages import STAGES

    levels: dict[str, bool] = {}
    for stage in STAGES.values():
        if stage.plan is None or not stage.enabled(site):
            continue
        for lv in stage.reads:
            levels[lv] = levels.get(lv, False) or lv in stage.reads_items
    recs: list[ProductRecord] = []
    tiles = site.tiles
    for tile in tiles if len(tiles) <= 20 else [None]:
        for lv, with_items in levels.items():
            recs += job_store.products(level=lv, tile=tile, with_items=with_items)
    if len(tiles) > 20:
        keep = set(tiles)
        recs = [r for r in recs if r.tile in keep]
    return Catalogue(recs)
