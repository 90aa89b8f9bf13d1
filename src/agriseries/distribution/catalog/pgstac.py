"""The centre's catalogue: pgstac on PostgreSQL + PostGIS, served by stac-fastapi-pgstac.

* the publisher writes with psycopg: the pgstac schema is created or migrated by
  pypgstac when the catalogue is opened (``pypgstac.migrate``: the role needs the right to
  create the ``postgis``, ``btree_gist`` and ``unaccent`` extensions the first time), items
  go in in bulk (dehydrated in Python as pypgstac's loader does, ``COPY`` into a temporary
  table, the rows of the same ids replaced: publishing twice keeps one copy; see
  :meth:`PgstacCatalog._load_items`),
  collections with ``pgstac.upsert_collection`` (their extent grown to the new items);
  every connection has a connect timeout, TCP keepalives and a ``statement_timeout``;
* the service hydrates the items itself (``ServiceSettings.pgstac_hydrate``, ``api`` by
  default: stac-fastapi-pgstac asks pgstac for the stored rows and merges each with its
  collection's base item in Python, 7.4 instead of 183 ms for pgstac's SQL hydration of a
  page; the same bytes served);
* the service reads through an asyncpg pool with the same time limits (``command_timeout``
  on the client side, ``statement_timeout`` on the server side), so a hung catalogue makes
  searches fail with 503 instead of hanging the service.
"""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from ...core.errors import OptionalDependencyError, StoreError
from ..items import extent_of, level_collection

__all__ = ["PgstacCatalog", "create_api"]


def _merge_extent(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    if not old:
        return new
    try:
        a, b = old["spatial"]["bbox"][0], new["spatial"]["bbox"][0]
        bbox = [[min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]]
        ta, tb = old["temporal"]["interval"][0], new["temporal"]["interval"][0]
        t0 = min(t for t in (ta[0], tb[0]) if t) if (ta[0] or tb[0]) else None
        t1 = max(t for t in (ta[1], tb[1]) if t) if (ta[1] or tb[1]) else None
        return {"spatial": {"bbox": bbox}, "temporal": {"interval": [[t0, t1]]}}
    except (KeyError, IndexError, TypeError):
        return new


def _libpq_dsn(dsn: str) -> str:
    """``postgresql+psycopg://`` (SQLAlchemy form) -> ``postgresql://`` (libpq form)."""
    for prefix in ("postgresql+psycopg://", "postgres+psycopg://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix):]
    return dsn


class PgstacCatalog:
    """The publisher's face of a pgstac catalogue.

    Parameters
    ----------
    dsn
        libpq URL of the catalogue database (``postgresql://user@host:5432/db``).
    timeout_s
        Time limit of a statement (server side) and of opening a connection.
    migrate
        Create or migrate the pgstac schema when opening (idempotent).
    """

    def __init__(self, dsn: str, *, timeout_s: float = 30.0, migrate: bool = True) -> None:
        try:
            import psycopg  # noqa: F401
        except ImportError as e:
            raise OptionalDependencyError("psycopg", "server") from e
        self.dsn = _libpq_dsn(dsn)
        self.timeout_s = float(timeout_s)
        self._conn = None
        if migrate:
            self.migrate()

    def _kwargs(self) -> dict[str, Any]:
        ms = max(1, int(self.timeout_s * 1000))
        return {"connect_timeout": max(2, math.ceil(self.timeout_s)),
                # synchronous_commit on whatever the server's default: the outbox row
                # is deleted once the catalogue's commit returns, so that commit must
                # survive a crash of the catalogue server
                "options": f"-c statement_timeout={ms} -c lock_timeout={ms} "
                           "-c synchronous_commit=on -c search_path=pgstac,public",
                "application_name": "agriseries-publisher", "keepalives": 1,
                "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}

    def _connect(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            try:
                self._conn = psycopg.connect(self.dsn, autocommit=False, **self._kwargs())
            except psycopg.Error as e:
                raise StoreError(f"pgstac catalogue {self._safe_dsn()}: cannot connect: "
                                 f"{' '.join(str(e).split())[:300]}") from e
        return self._conn

    def _safe_dsn(self) -> str:
        import re

        return re.sub(r"://([^:@/]*):[^@/]*@", r"://\1:***@", self.dsn)

    @contextlib.contextmanager
    def _tx(self, what: str):
        import psycopg

        conn = self._connect()
        try:
            with conn.transaction():
                with conn.cursor() as cur:
                    yield cur
        except psycopg.Error as e:
            with contextlib.suppress(Exception):
                conn.close()
            self._conn = None
            raise StoreError(f"pgstac catalogue {self._safe_dsn()}: {what} failed: "
                             f"{' '.join(str(e).split())[:300]}") from e

    def migrate(self) -> str:
        """Create or bring the pgstac schema to the version pypgstac ships; the version."""
        try:
            from pypgstac.db import PgstacDB
            from pypgstac.migrate import Migrate
        except ImportError as e:
            raise OptionalDependencyError("pypgstac", "server") from e
        import psycopg

        try:
            with psycopg.connect(self.dsn, autocommit=True, **{
                    k: v for k, v in self._kwargs().items() if k != "options"}) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")
            db = PgstacDB(dsn=self.dsn)
            try:
                return Migrate(db).run_migration()
            finally:
                db.close()
        except psycopg.Error as e:
            raise StoreError(f"pgstac catalogue {self._safe_dsn()}: migration failed: "
                             f"{' '.join(str(e).split())[:300]}") from e

    def apply(self, upserts: list[dict[str, Any]], removes: list[str], store_root=None) -> None:
        """Publish ``upserts`` and unpublish ``removes`` in one transaction (every statement
        under the session's ``statement_timeout``)."""
        latest: dict[str, dict[str, Any]] = {}
        for it in upserts:  # one row per id: the last one wins
            latest.pop(it["id"], None)
            latest[it["id"]] = it
        upserts = list(latest.values())
        by_coll: dict[str, list[dict[str, Any]]] = {}
        for it in upserts:
            by_coll.setdefault(it["collection"], []).append(it)
        with self._tx(f"publish {len(upserts)} item(s), remove {len(removes)}") as cur:
            for cid, items in sorted(by_coll.items()):
                cur.execute("SELECT content FROM pgstac.collections WHERE id = %s", (cid,))
                row = cur.fetchone()
                col = level_collection(cid, items, store_root)
                col["extent"] = _merge_extent(row[0].get("extent") if row else None, extent_of(items))
                cur.execute("SELECT pgstac.upsert_collection(%s::jsonb)", (json.dumps(col),))
            if upserts:
                self._load_items(cur, upserts)
            if removes:
                cur.execute("DELETE FROM pgstac.items WHERE id = ANY(%s)", (list(removes),))

    def _load_items(self, cur, items: list[dict[str, Any]]) -> None:
        """Upsert ``items`` (distinct ids) in bulk, in the caller's transaction.

        ``pgstac.upsert_items`` dehydrates every item in PL/pgSQL (its content minus the
        collection's ``item_assets``, recursively, and several times per item): about 90 ms
        per published item here, all of a batch's time. This does what pypgstac's loader does
        instead: the items are dehydrated in Python (:func:`pypgstac.hydration.dehydrate`,
        the loader's own), copied with ``COPY`` into a temporary table, the partitions they
        fall in are made or widened with ``pgstac.check_partition``, and the rows replace
        those of the same ids in one ``DELETE`` + ``INSERT``; geometry and datetimes come
        from pgstac's own ``stac_geom`` / ``stac_datetime`` / ``stac_end_datetime``.
        """
        try:
            from pypgstac.hydration import dehydrate
        except ImportError as e:
            raise OptionalDependencyError("pypgstac", "server") from e
        cids = sorted({it["collection"] for it in items})
        cur.execute("SELECT id, base_item FROM pgstac.collections WHERE id = ANY(%s)", (cids,))
        bases = dict(cur.fetchall())
        cur.execute("CREATE TEMP TABLE agriseries_publish (id text NOT NULL, collection text "
                    "NOT NULL, core jsonb NOT NULL, content jsonb NOT NULL) ON COMMIT DROP")
        with cur.copy("COPY agriseries_publish (id, collection, core, content) FROM STDIN") as cp:
            for it in items:
                props = it.get("properties") or {}
                core = {k: it[k] for k in ("geometry", "bbox") if it.get(k) is not None}
                core["properties"] = {k: props[k] for k in
                                      ("datetime", "start_datetime", "end_datetime") if k in props}
                content = dehydrate(bases.get(it["collection"]) or {}, it)
                for k in ("id", "collection", "geometry"):
                    content.pop(k, None)
                cp.write_row((it["id"], it["collection"], json.dumps(core), json.dumps(content)))
        # the partitions (one per collection, or per year / month of a collection whose
        # partition_trunc says so) made, and their datetime constraints widened
        cur.execute("""
            WITH r AS (
                SELECT s.collection, stac_datetime(s.core) AS dt, stac_end_datetime(s.core) AS edt,
                       CASE WHEN c.partition_trunc IS NULL THEN NULL
                            ELSE date_trunc(c.partition_trunc, stac_datetime(s.core)) END AS part
                FROM agriseries_publish s JOIN pgstac.collections c ON c.id = s.collection),
            p AS (
                SELECT collection, part, tstzrange(min(dt), max(dt), '[]') AS dtr,
                       tstzrange(min(edt), max(edt), '[]') AS edtr
                FROM r GROUP BY collection, part ORDER BY collection, part)
            SELECT pgstac.check_partition(collection, dtr, edtr) FROM p""")
        cur.execute("DELETE FROM pgstac.items i USING agriseries_publish s WHERE i.id = s.id")
        cur.execute("""
            INSERT INTO pgstac.items (id, geometry, collection, datetime, end_datetime, content)
            SELECT id, stac_geom(core), collection, stac_datetime(core), stac_end_datetime(core),
                   content
            FROM agriseries_publish""")

    def count(self) -> int:
        with self._tx("count items") as cur:
            cur.execute("SELECT count(*) FROM pgstac.items")
            return int(cur.fetchone()[0])

    def ids(self) -> set[str]:
        with self._tx("list items") as cur:
            cur.execute("SELECT id FROM pgstac.items")
            return {r[0] for r in cur.fetchall()}

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None


def _jsonb_key(key: str) -> tuple[int, bytes]:
    """PostgreSQL's order of a ``jsonb`` object's keys: shorter first, then byte order."""
    b = key.encode()
    return len(b), b


def _jsonb_ordered(value: Any) -> Any:
    """``value`` with every object's keys in ``jsonb`` order (lists kept in their order)."""
    if isinstance(value, dict):
        return {k: _jsonb_ordered(value[k]) for k in sorted(value, key=_jsonb_key)}
    if isinstance(value, list):
        return [_jsonb_ordered(v) for v in value]
    return value


def _as_pgstac_hydrates(item: dict[str, Any]) -> dict[str, Any]:
    """An item hydrated in the service with its keys where pgstac's SQL hydration puts
    them, so that the bytes served do not depend on where the hydration ran: pgstac answers
    ``jsonb`` (every object's keys in its order); the service's hydration appends what the
    collection gives after the item's own keys. ``links`` is made by stac-fastapi in either
    case (kept as it is, and last when it came last: no stored links)."""
    links_last = bool(item) and next(reversed(item)) == "links"
    out = {k: (item[k] if k == "links" else _jsonb_ordered(item[k]))
           for k in sorted((k for k in item if not (links_last and k == "links")),
                           key=_jsonb_key)}
    if links_last:
        out["links"] = item["links"]
    return out


def _client_class():
    """stac-fastapi-pgstac's client, with malformed requests (a CQL2 text filter that does
    not parse, a geometry pgstac refuses) answered 400 with the parser's message instead of
    500, and a hung or lost catalogue answered 503."""
    import asyncio

    import asyncpg
    from fastapi import HTTPException
    from stac_fastapi.pgstac.core import CoreCrudClient

    def _call(fn):
        async def wrapped(self, *args, **kwargs):
            try:
                return await fn(self, *args, **kwargs)
            except (asyncpg.DataError, asyncpg.SyntaxOrAccessError,
                    asyncpg.exceptions.RaiseError) as exc:
                raise HTTPException(400, f"search cannot be run: {exc}") from None
            except json.JSONDecodeError as exc:  # intersects/query/filter not JSON (orjson's too)
                raise HTTPException(400, f"a search parameter is not valid JSON: {exc}") \
                    from None
            except (asyncio.TimeoutError, OSError, asyncpg.PostgresConnectionError,
                    asyncpg.QueryCanceledError, asyncpg.InterfaceError) as exc:
                raise HTTPException(503, f"the catalogue database does not answer: "
                                         f"{type(exc).__name__}: {exc}",
                                    headers={"Retry-After": "30"}) from None
        return wrapped

    class AgriseriesCoreClient(CoreCrudClient):
        async def _search_base(self, search_request, request):
            found = await super()._search_base(search_request, request)
            if request.app.state.settings.use_api_hydrate:
                found["features"] = [_as_pgstac_hydrates(f) if isinstance(f, dict) else f
                                     for f in found.get("features") or []]
            return found

        def _clean_search_args(self, *args, **kwargs):
            try:
                return super()._clean_search_args(*args, **kwargs)
            except HTTPException:
                raise
            except Exception as exc:  # noqa: BLE001 -- cql2 raises plain Exceptions
                raise HTTPException(400, f"invalid search: {exc}") from None

    for name in ("get_search", "post_search", "item_collection", "get_item",
                 "all_collections", "get_collection"):
        setattr(AgriseriesCoreClient, name, _call(getattr(CoreCrudClient, name)))
    return AgriseriesCoreClient


def create_api(settings, *, middlewares=(), route_dependencies=()):
    """The stac-fastapi-pgstac application over the catalogue ``settings.catalog_dsn``."""
    try:
        import asyncpg
        from fastapi import APIRouter, FastAPI
        from stac_fastapi.api.app import StacApi
        from stac_fastapi.api.middleware import ProxyHeaderMiddleware
        from stac_fastapi.api.models import (
            ItemCollectionUri,
            JSONResponse,
            create_get_request_model,
            create_post_request_model,
            create_request_model,
        )
        from stac_fastapi.extensions.core import (
            FieldsExtension,
            ItemCollectionFilterExtension,
            QueryExtension,
            SearchFilterExtension,
            SortExtension,
            TokenPaginationExtension,
        )
        from stac_fastapi.extensions.core.fields import FieldsConformanceClasses
        from stac_fastapi.extensions.core.query import QueryConformanceClasses
        from stac_fastapi.extensions.core.sort import SortConformanceClasses
        from stac_fastapi.pgstac.config import Settings
        from stac_fastapi.pgstac.core import health_check
        from stac_fastapi.pgstac.db import con_init, get_connection
        from stac_fastapi.pgstac.extensions.filter import FiltersClient
        from stac_fastapi.pgstac.types.search import PgstacSearch
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware
    except ImportError as e:
        raise OptionalDependencyError(e.name or "stac_fastapi.pgstac", "server") from e

    dsn = _libpq_dsn(settings.catalog_dsn)
    pg_settings = Settings(
        stac_fastapi_title=settings.title, stac_fastapi_landing_id="agriseries",
        stac_fastapi_description=f"{settings.title}: products of the agriseries production",
        pguser="unused", pgpassword="unused", pghost="unused", pgport=5432,
        pgdatabase="unused",
        # the items hydrated in Python (hydraters) rather than in pgstac's PL/pgSQL
        use_api_hydrate=getattr(settings, "pgstac_hydrate", "api") == "api")
    # the query extension: declared and documented here, served by the service's middleware
    # (app.ServedItems turns it into a CQL2 filter before this client sees the request:
    # stac-fastapi-pgstac's own compared numbers as text and refused neq, startsWith,
    # endsWith, contains and in)
    search_extensions = [QueryExtension(), SortExtension(),
                         FieldsExtension(),
                         SearchFilterExtension(client=FiltersClient()),
                         TokenPaginationExtension()]
    item_extensions = [QueryExtension(conformance_classes=[QueryConformanceClasses.ITEMS]),
                       SortExtension(conformance_classes=[SortConformanceClasses.ITEMS]),
                       FieldsExtension(conformance_classes=[FieldsConformanceClasses.ITEMS]),
                       ItemCollectionFilterExtension(client=FiltersClient()),
                       TokenPaginationExtension()]
    post_model = create_post_request_model(search_extensions, base_model=PgstacSearch)
    get_model = create_get_request_model(search_extensions)
    items_model = create_request_model(model_name="ItemCollectionUri",
                                       base_model=ItemCollectionUri,
                                       extensions=item_extensions, request_type="GET")
    timeout = settings.statement_timeout_s

    @contextlib.asynccontextmanager
    async def lifespan(app):
        ms = max(1, int(timeout * 1000))
        app.state.readpool = await asyncpg.create_pool(
            dsn, min_size=1, max_size=10, init=con_init, command_timeout=timeout,
            timeout=timeout, server_settings={"search_path": "pgstac,public",
                                              "application_name": "agriseries-serve",
                                              "statement_timeout": str(ms)})
        app.state.get_connection = get_connection
        try:
            yield
        finally:
            await app.state.readpool.close()

    app = FastAPI(openapi_url=pg_settings.openapi_url, docs_url=pg_settings.docs_url,
                  redoc_url=None, title=settings.title, lifespan=lifespan)
    return StacApi(
        app=app, router=APIRouter(), settings=pg_settings,
        extensions=[*search_extensions, *item_extensions],
        client=_client_class()(pgstac_search_model=post_model), response_class=JSONResponse,
        items_get_request_model=items_model, search_get_request_model=get_model,
        search_post_request_model=post_model,
        middlewares=[*middlewares,
                     Middleware(CORSMiddleware, allow_origins=["*"],
                                allow_methods=["OPTIONS", "POST", "GET"],
                                allow_headers=["Content-Type", "Authorization"], max_age=600),
                     Middleware(ProxyHeaderMiddleware)],
        health_check=health_check, route_dependencies=list(route_dependencies),
    )
