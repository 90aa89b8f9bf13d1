"""The embedded catalogue: stac-geoparquet files queried through DuckDB.

Why this backend: it is a maintained stac-fastapi backend (stac-fastapi-geoparquet, by
the stac-utils developers) that needs no database server, so one laptop serves a full STAC
API (item search with bbox / datetime / intersects / ids, sort, fields, CQL2 filter,
paging) from files; DuckDB reads them column by column, so a search over 100,000 items
reads only the columns it filters on.

Layout of the catalogue folder (written by the publisher only)::

    CATALOG/
      index.sqlite            the published items (id, collection, JSON): what the files hold
      <collection>.parquet    one stac-geoparquet file per collection (rustac, by
                              :func:`write_items`): the items in datetime order, in row
                              groups of ROW_GROUP_ITEMS
      collections.json        the collections, each with its parquet file as an asset
      duckdb-extensions/      the DuckDB extensions DuckDB loads (from PyPI wheels)

A change rewrites the parquet file of every collection it touches into a temporary name
and renames it into place, then the collection list: a search that runs meanwhile reads
the old file (it holds it open) or the new one, never half a file. The service re-reads
the collection list every ``collections_reload_s`` seconds; it reads the parquet files at
every search, so a published item is searchable as soon as its file is renamed.

Rewriting a collection's file costs the whole collection, so a publisher draining a backlog
batch by batch would rewrite it once per batch (quadratic in the backlog). It defers the
rewrites instead (``apply(..., defer=True)``: the index changes, and the collections it
touched are marked ``stale`` in the same transaction) and calls :meth:`flush` at the end
of its drain and now and then during a long one (:meth:`Publisher.drain
<agriseries.distribution.publisher.Publisher.drain>`): each collection is rewritten once
for the whole backlog. A flush that fails or is killed leaves the marks, and the next one
rewrites them.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import importlib
import json
import os
import platform
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from ...core.errors import OptionalDependencyError, StoreError
from ...io.durable import atomic_write, fsync_path
from ..items import level_collection

__all__ = ["GeoparquetCatalog", "create_api", "duckdb_client", "duckdb_like",
           "property_kinds", "write_items"]

GEOPARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
#: The DuckDB extensions rustac loads, shipped as PyPI wheels (no download at run time).
EXTENSIONS = ("spatial", "icu", "parquet")


def _platform() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        machine, machine)
    system = {"darwin": "osx"}.get(platform.system().lower(), platform.system().lower())
    return f"{system}_{arch}"


def extension_directory(folder: Path) -> Path:
    """A DuckDB extension directory holding the extensions of the ``duckdb-extension-*``
    wheels (links to their files), laid out as DuckDB looks for them."""
    target = None
    for name in EXTENSIONS:
        try:
            mod = importlib.import_module(f"duckdb_extension_{name}")
        except ImportError as e:
            raise OptionalDependencyError(f"duckdb_extension_{name}", "server") from e
        files = sorted(Path(mod.__file__).parent.rglob(f"{name}.duckdb_extension"))
        if not files:
            raise OptionalDependencyError(f"duckdb_extension_{name}", "server")
        src = files[0]
        version = src.parent.name  # extensions/v1.5.1/<name>.duckdb_extension
        if target is None:
            target = folder / version / _platform()
            target.mkdir(parents=True, exist_ok=True)
        link = target / src.name
        if not link.exists():
            tmp = link.with_name(f".{link.name}.{uuid.uuid4().hex[:8]}")
            os.symlink(src, tmp)
            os.replace(tmp, link)
    return folder


def duckdb_client(folder: Path):
    """A rustac DuckDB client that loads its extensions from ``folder`` (no network)."""
    try:
        import rustac
    except ImportError as e:
        raise OptionalDependencyError("rustac", "server") from e
    return rustac.DuckdbClient(extension_directory=str(extension_directory(folder)),
                               install_extensions=False)


#: Items per parquet row group. DuckDB skips the row groups whose statistics (min/max of
#: each column) exclude a search's datetime range, so the files are written in datetime
#: order; smaller groups prune finer but cost more per group read (a whole page of each of
#: the ~200 nested asset columns is decoded) and a larger footer (benchmarks.md,
#: "Distribution": 1,000 was slower than 10,000 at 100,000 items).
ROW_GROUP_ITEMS = 10_000
#: Items rustac converts at a time (what a write holds in memory besides one row group).
PIECE_ITEMS = 1000


def _merge_geo(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """GeoParquet ``geo`` metadata of two pieces: geometry types and bbox united."""
    if old is None:
        return new
    for name, col in new.get("columns", {}).items():
        mine = old.setdefault("columns", {}).setdefault(name, col)
        if mine is col:
            continue
        mine["geometry_types"] = sorted(set(mine.get("geometry_types", [])) |
                                        set(col.get("geometry_types", [])))
        a, b = mine.get("bbox"), col.get("bbox")
        if a and b:
            mine["bbox"] = [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]
    return old


async def rustac_write(path: Path, items: list[dict[str, Any]]) -> None:
    import rustac

    await rustac.write(str(path), items, format="geoparquet")


def write_items(path: str | Path, items, *, row_group_items: int = ROW_GROUP_ITEMS,
                piece_items: int = PIECE_ITEMS) -> int:
    """Write the STAC items of the iterable ``items`` (in its order) as one stac-geoparquet
    file ``path``, flushed to disk, in row groups of ``row_group_items``; the number of
    items.

    rustac converts ``piece_items`` items at a time into a piece file (next to ``path``);
    the pieces' schemas are united (an item that lacks a property or an asset has nulls
    there, as in rustac's own write of all the items at once) and the pieces copied into
    ``path``, so memory holds a piece and a row group whatever the number of items."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    pieces_dir = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.pieces")
    pieces_dir.mkdir()
    try:
        files: list[Path] = []
        n = 0
        it = iter(items)
        while True:
            chunk = [x for _, x in zip(range(piece_items), it, strict=False)]
            if not chunk:
                break
            f = pieces_dir / f"{len(files):06d}.parquet"
            asyncio.run(rustac_write(f, chunk))
            files.append(f)
            n += len(chunk)
            del chunk
        if not files:
            raise ValueError(f"{path}: no item to write")
        schemas, kv = [], {}
        geo = None
        for f in files:
            schemas.append(pq.read_schema(f).remove_metadata())
            for k, v in (pq.read_metadata(f).metadata or {}).items():
                if k == b"geo":
                    geo = _merge_geo(geo, json.loads(v))
                elif k != b"ARROW:schema":
                    kv.setdefault(k, v)
        schema = schemas[0]
        if any(s != schema for s in schemas[1:]):
            schema = pa.unify_schemas(schemas, promote_options="permissive")
        if geo is not None:
            kv[b"geo"] = json.dumps(geo).encode()
        schema = schema.with_metadata(kv)
        with pq.ParquetWriter(path, schema, compression="zstd") as w:
            rest = schema.empty_table()
            for f in files:
                t = pq.read_table(f).replace_schema_metadata(kv)
                if t.schema != schema:
                    t = pa.concat_tables([schema.empty_table(), t],
                                         promote_options="permissive").cast(schema)
                rest = pa.concat_tables([rest, t])
                while rest.num_rows >= row_group_items:
                    w.write_table(rest.slice(0, row_group_items))
                    rest = rest.slice(row_group_items)
            if rest.num_rows:
                w.write_table(rest)
        fsync_path(path)
        return n
    finally:
        for f in pieces_dir.glob("*"):
            f.unlink()
        pieces_dir.rmdir()


class GeoparquetCatalog:
    """The publisher's face of the embedded catalogue (see the module docstring).

    Parameters
    ----------
    folder
        The catalogue folder (created).
    timeout_s
        Time limit of a lock wait on the index (another publisher writing).
    """

    def __init__(self, folder: str | Path, *, timeout_s: float = 30.0) -> None:
        self.folder = Path(folder)
        self.timeout_s = timeout_s
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"catalogue folder {self.folder}: cannot create it: {e}") from e
        self._lock = threading.Lock()
        with self._db() as db:
            db.execute("CREATE TABLE IF NOT EXISTS items (id TEXT PRIMARY KEY, collection TEXT "
                       "NOT NULL, item TEXT NOT NULL, updated_at REAL NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS ix_items_collection ON items (collection)")
            # collections changed in the index and not yet in their files (a deferred apply)
            db.execute("CREATE TABLE IF NOT EXISTS stale (collection TEXT PRIMARY KEY)")
        if not (self.folder / "collections.json").exists():
            atomic_write(self.folder / "collections.json", b"[]")

    def _db(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.folder / "index.sqlite", timeout=self.timeout_s,
                             isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return _Closing(db)

    def apply(self, upserts: list[dict[str, Any]], removes: list[str], store_root=None, *,
              defer: bool = False) -> None:
        """Publish ``upserts`` (published items) and unpublish the ids ``removes``.

        The index changes in one transaction, which also marks the collections it touches
        as to be rewritten; then those collections' files are rewritten (:meth:`flush`),
        unless ``defer``: a publisher draining a backlog defers them and flushes once at the
        end (or now and then), instead of rewriting a whole collection per batch."""
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                touched = set()
                for pid in removes:
                    for (c,) in db.execute("SELECT collection FROM items WHERE id = ?", (pid,)):
                        touched.add(c)
                    db.execute("DELETE FROM items WHERE id = ?", (pid,))
                now = time.time()
                for it in upserts:
                    for (c,) in db.execute("SELECT collection FROM items WHERE id = ?",
                                           (it["id"],)):
                        touched.add(c)
                    touched.add(it["collection"])
                    db.execute("INSERT INTO items (id, collection, item, updated_at) VALUES "
                               "(?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET collection = "
                               "excluded.collection, item = excluded.item, updated_at = "
                               "excluded.updated_at",
                               (it["id"], it["collection"], json.dumps(it), now))
                db.executemany("INSERT OR IGNORE INTO stale (collection) VALUES (?)",
                               [(c,) for c in sorted(touched)])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        if not defer:
            self.flush(store_root)

    def pending(self) -> list[str]:
        """The collections whose files do not show the index yet (deferred changes)."""
        with self._db() as db:
            return [c for (c,) in db.execute("SELECT collection FROM stale ORDER BY 1")]

    def flush(self, store_root=None) -> list[str]:
        """Rewrite the files of the collections changed since their last rewrite, and the
        collection list; the collections rewritten. Each file is replaced whole (see the
        module docstring); the marks are cleared in the transaction that holds the index
        meanwhile, so a flush that fails or is killed is done again by the next one."""
        with self._lock, self._db() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                stale = {c for (c,) in db.execute("SELECT collection FROM stale")}
                names = {c for (c,) in db.execute("SELECT DISTINCT collection FROM items")}
                listed = self._listed()
                stale |= names - set(listed)  # a collection list older than the index
                stale |= set(listed) - names
                if not stale:
                    db.execute("ROLLBACK")
                    return []
                for c in sorted(stale):
                    # datetime order: row groups of disjoint date ranges (ROW_GROUP_ITEMS)
                    items = [json.loads(s) for (s,) in db.execute(
                        "SELECT item FROM items WHERE collection = ? ORDER BY "
                        "json_extract(item, '$.properties.datetime'), id", (c,))]
                    self._write_parquet(c, items)
                    if items:
                        col = level_collection(c, items, store_root)
                        col["assets"] = {"data": {"href": f"./{c}.parquet",
                                                  "type": GEOPARQUET_MEDIA_TYPE,
                                                  "roles": ["data"]}}
                        listed[c] = col
                    else:
                        listed.pop(c, None)
                atomic_write(self.folder / "collections.json",
                              json.dumps([listed[c] for c in sorted(listed)]).encode())
                db.execute("DELETE FROM stale")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return sorted(stale)

    def _listed(self) -> dict[str, dict[str, Any]]:
        """The collection list as written (an unreadable one: empty, so rewritten whole)."""
        try:
            cols = json.loads((self.folder / "collections.json").read_text())
            return {c["id"]: c for c in cols}
        except (OSError, ValueError, TypeError, KeyError):
            return {}

    def _write_parquet(self, collection: str, items: list[dict[str, Any]]) -> None:
        path = self.folder / f"{collection}.parquet"
        if not items:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            write_items(tmp, items)
            os.replace(tmp, path)
            fsync_path(path.parent)
        finally:
            tmp.unlink(missing_ok=True)

    def count(self) -> int:
        """Number of published items."""
        with self._db() as db:
            return int(db.execute("SELECT count(*) FROM items").fetchone()[0])

    def ids(self) -> set[str]:
        """The published item ids."""
        with self._db() as db:
            return {r[0] for r in db.execute("SELECT id FROM items")}

    def close(self) -> None:
        pass


class _Closing:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        return self.db

    def __exit__(self, *exc) -> None:
        self.db.close()


def _kind(t) -> str:
    """What a parquet column of arrow type ``t`` holds, in :mod:`..query`'s words."""
    import pyarrow as pa

    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return "array"
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "number"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return "datetime"
    return "other"


_KINDS: dict[str, tuple[tuple, dict[str, str]]] = {}


def _file_kinds(path: Path) -> dict[str, str]:
    """The kinds of the columns of one collection's file (remembered while the file is the
    same: the publisher replaces a file, never writes it in place)."""
    import pyarrow.parquet as pq

    try:
        st = path.stat()
    except OSError:
        return {}
    mark = (st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size)
    got = _KINDS.get(str(path))
    if got is not None and got[0] == mark:
        return got[1]
    try:
        schema = pq.read_schema(path)
    except (OSError, ValueError):  # replaced meanwhile: not remembered
        return {}
    kinds = {f.name: _kind(f.type) for f in schema}
    _KINDS[str(path)] = (mark, kinds)
    return kinds


def property_kinds(folder: str | Path, collections: list[str] | None = None) -> dict[str, str]:
    """What each property of the collections' files holds (``"array"``, ``"string"``,
    ``"number"``, ``"boolean"``, ``"datetime"``, ``"other"``; ``collections`` ``None``: every
    collection of the catalogue folder), for the query extension
    (:func:`agriseries.distribution.query.query_filter`): stac-geoparquet keeps each property
    as a column, whose type DuckDB compares by. A property of two kinds in two files is
    left out (not known)."""
    folder = Path(folder)
    if collections is None:
        paths = sorted(folder.glob("*.parquet"))
    else:
        paths = [folder / f"{c}.parquet" for c in collections
                 if c and "/" not in c and not c.startswith(".")]
    out: dict[str, str] = {}
    mixed: set[str] = set()
    for path in paths:
        for name, kind in _file_kinds(path).items():
            if out.setdefault(name, kind) != kind:
                mixed.add(name)
    for name in mixed:
        out.pop(name)
    return out


def duckdb_like(expr: Any) -> Any:
    """A CQL2-JSON expression whose LIKE patterns with an escape (``\\``, CQL2's escape
    character) are DuckDB's ``like_escape(value, pattern, '\\')``: rustac writes a CQL2
    LIKE as DuckDB's LIKE, which has no escape character, so ``a\\_b`` matched only a
    backslash (pgstac's PostgreSQL LIKE escapes with it)."""
    if isinstance(expr, list):
        return [duckdb_like(x) for x in expr]
    if not isinstance(expr, dict):
        return expr
    out = {k: duckdb_like(v) for k, v in expr.items()}
    args = out.get("args")
    if out.get("op") == "like" and isinstance(args, list) and len(args) == 2:
        pat = args[1]
        if isinstance(pat, dict) and pat.get("op") == "casei" and pat.get("args"):
            pat = pat["args"][0]
        if isinstance(pat, str) and "\\" in pat:
            out = {"op": "like_escape", "args": [*args, "\\"]}
    return out


class _EscapingClient:
    """The rustac DuckDB client, its searches' filters given :func:`duckdb_like` (the
    search's links keep the filter as asked)."""

    def __init__(self, client) -> None:
        self.client = client

    def search(self, href, **kwargs):
        if kwargs.get("filter") is not None:
            f = kwargs["filter"]
            if isinstance(f, str) and f.lstrip().startswith("{"):
                f = json.loads(f)
            kwargs["filter"] = duckdb_like(f)
        return self.client.search(href, **kwargs)

    def __getattr__(self, name):
        return getattr(self.client, name)


#: DuckDB errors that come from what the request asked (an unknown field, a bad filter).
_CLIENT_ERRORS = ("Binder Error", "Parser Error", "Conversion Error", "Invalid Input Error",
                  "Not implemented Error", "cql2", "Catalog Error")


def _sort_field(spec: str) -> str:
    """A GET ``sortby`` term (``[+-]name``) with the ``properties.`` prefix stripped."""
    spec = spec.strip()
    sign = spec[0] if spec[:1] in ("+", "-") else ""
    return sign + spec[len(sign):].strip().removeprefix("properties.")


def _get_value(v: Any) -> str:
    """A search value in its GET form (paging links)."""
    if isinstance(v, dict):
        return json.dumps(v)
    if isinstance(v, (list, tuple)):
        return ",".join(str(x) for x in v)
    return str(v)


def _link_body(search_dict: dict) -> dict:
    """The search as a paging link carries it: rustac's ``include`` / ``exclude`` keys
    (if any) given back as the API's ``fields`` object."""
    body = json.loads(json.dumps(search_dict, default=str))
    projection = {k: v for k in ("include", "exclude") if (v := body.pop(k, None))}
    if projection:
        body["fields"] = projection
    return body


def _client_class():
    """stac-fastapi-geoparquet's client, with five fixes: ``properties.`` prefixes in
    ``sortby`` (the STAC API form, POST and GET) are stripped for DuckDB; a sorted search
    over several collections is one query over all their files, so the sort is over the
    whole answer (the upstream client searches one collection after the other); a CQL2
    filter is parsed first (a malformed one is a 400 instead of being ignored or a 500);
    a CQL2 LIKE pattern's escapes are DuckDB's too (:func:`duckdb_like`); and DuckDB errors
    caused by the request are 400s naming the problem."""
    import cql2
    import rustac
    from fastapi import HTTPException
    from stac_fastapi.geoparquet.client import Client

    class AgriseriesClient(Client):
        def get_search(self, *args, **kwargs):
            try:
                return super().get_search(*args, **kwargs)
            except json.JSONDecodeError as exc:  # the intersects parameter is not JSON
                raise HTTPException(400, f"a search parameter is not valid JSON: {exc}") \
                    from None

        def _sorted_search(self, request, url, search, collections, kwargs):
            """One DuckDB query over the files of every collection searched (they are in
            one folder), sorted and paged as a whole; ``None`` when that cannot be done."""
            hrefs = request.state.hrefs
            folders = {os.path.dirname(hrefs[c]) for c in collections}
            if len(folders) != 1 or "://" in next(iter(folders)):
                return None
            search_dict = search.model_dump(exclude_none=True, by_alias=True)
            search_dict.update({k: v for k, v in kwargs.items() if v is not None})
            search_dict.pop("filter_crs", None)
            fields = search_dict.pop("fields", None)
            if fields and (not isinstance(fields, dict) or fields.get("include")
                           or fields.get("exclude")):
                return None  # the service applies fields itself (app.ServedItems)
            if filter_expr := search_dict.pop("filter_expr", None):
                search_dict["filter"] = filter_expr
            if filter_lang := search_dict.pop("filter_lang", None):
                search_dict["filter-lang"] = filter_lang
            if "filter" not in search_dict:
                search_dict.pop("filter-lang", None)
            limit = search.limit or 10
            offset = search_dict.pop("offset", 0) or 0
            query = {k: v for k, v in search_dict.items()
                     if k not in ("collections", "limit", "offset")}
            # ties (an L2A date and its L3B products) broken by id: pages do not overlap
            sortby = list(query.get("sortby") or [])
            if sortby and all(isinstance(x, str) for x in sortby):
                query["sortby"] = [*sortby, "id"]
            elif sortby and all(isinstance(x, dict) for x in sortby):
                query["sortby"] = [*sortby, {"field": "id", "direction": "asc"}]
            found = request.state.client.search(
                os.path.join(next(iter(folders)), "*.parquet"), collections=list(collections),
                limit=limit, offset=offset, **query)
            items = [self.item_with_links(it, request, it["collection"]) for it in found]
            public = _link_body(search_dict)
            public["collections"] = list(collections)
            nxt = ({**public, "limit": limit, "offset": offset + len(items)}
                   if len(items) >= limit else None)
            root = {"href": str(request.url_for("Landing Page")), "rel": "root",
                    "type": "application/json"}
            links = [root]
            if request.method == "GET":
                links.append({"href": str(request.url), "rel": "self",
                              "type": "application/geo+json", "method": "GET"})
                if nxt:
                    import urllib.parse

                    q = {k: _get_value(v) for k, v in nxt.items() if v not in (None, "", [])}
                    if "filter" in q:
                        q["filter-lang"] = "cql2-json"
                    links.append({"href": f"{url}?{urllib.parse.urlencode(q)}", "rel": "next",
                                  "type": "application/geo+json", "method": "GET"})
            else:
                links.append({"href": str(request.url), "rel": "self",
                              "type": "application/geo+json", "method": "POST", "body": public})
                if nxt:
                    links.append({"href": url, "rel": "next", "type": "application/geo+json",
                                  "method": "POST", "body": nxt})
            return {"type": "FeatureCollection", "features": items, "links": links}

        def search(self, *, request, url, search, **kwargs):
            # the service serves query as a filter (app.ServedItems); none reaches here
            if kwargs.get("query") is not None or getattr(search, "query", None) is not None:
                raise HTTPException(400, "query is served by the service's middleware")
            kwargs.pop("query", None)
            if not isinstance(request.state.client, _EscapingClient):
                request.state.client = _EscapingClient(request.state.client)
            for sb in getattr(search, "sortby", None) or []:
                if isinstance(getattr(sb, "field", None), str):
                    sb.field = sb.field.removeprefix("properties.")
            if isinstance(kwargs.get("sortby"), list):  # GET: ["-properties.datetime", ...]
                kwargs["sortby"] = [_sort_field(s) if isinstance(s, str) else s
                                    for s in kwargs["sortby"]]
            expr = kwargs.get("filter_expr")
            if expr is None:
                expr = getattr(search, "filter_expr", None)
            if expr is not None:
                try:
                    e = cql2.Expr(json.loads(expr) if isinstance(expr, str) and
                                  expr.lstrip().startswith("{") else expr)
                    e.validate()
                    parsed = e.to_json()
                except Exception as exc:  # noqa: BLE001 -- cql2 raises plain Exceptions
                    raise HTTPException(400, f"invalid CQL2 filter {expr!r}: {exc}") from None
                if "filter_expr" in kwargs:
                    kwargs["filter_expr"] = parsed
                    kwargs["filter_lang"] = "cql2-json"
                else:
                    search.filter_expr = parsed
                    if hasattr(search, "filter_lang"):
                        search.filter_lang = "cql2-json"
            try:
                hrefs = request.state.hrefs
                collections = [c for c in (search.collections or list(hrefs)) if c in hrefs]
                if (kwargs.get("sortby") or getattr(search, "sortby", None)) and \
                        len(collections) > 1:
                    out = self._sorted_search(request, url, search, collections, kwargs)
                    if out is not None:
                        return out
                return super().search(request=request, url=url, search=search, **kwargs)
            except rustac.RustacError as exc:
                msg = str(exc)
                if any(m in msg for m in _CLIENT_ERRORS):
                    raise HTTPException(400, f"search cannot be run: {msg.splitlines()[0]}") \
                        from None
                raise

    return AgriseriesClient


def create_api(settings, *, middlewares=(), route_dependencies=()):
    """The stac-fastapi application (a ``StacApi``) over the embedded catalogue, with the
    service's middlewares inside stac-fastapi's own (compression, CORS, proxy headers)."""
    try:
        from fastapi import FastAPI
        from stac_fastapi.api.app import StacApi
        from stac_fastapi.api.middleware import ProxyHeaderMiddleware
        from stac_fastapi.api.models import (
            ItemCollectionUri,
            create_get_request_model,
            create_post_request_model,
        )
        from stac_fastapi.extensions.core import QueryExtension
        from stac_fastapi.extensions.core.query import QueryConformanceClasses
        from stac_fastapi.geoparquet import api as gp_api
        from stac_fastapi.geoparquet.models import EXTENSIONS
        from stac_fastapi.geoparquet.search import FixedSearchGetRequest
        from stac_fastapi.geoparquet.settings import Settings
        from stac_fastapi.types.search import BaseSearchPostRequest
        from starlette.middleware import Middleware
        from starlette.middleware.cors import CORSMiddleware
    except ImportError as e:
        raise OptionalDependencyError(e.name or "stac_fastapi.geoparquet", "server") from e
    folder = settings.catalog_folder
    GeoparquetCatalog(folder)  # the folder, its index and an empty collection list
    gp_settings = Settings(
        stac_fastapi_title=settings.title, stac_fastapi_landing_id="agriseries",
        stac_fastapi_description=f"{settings.title}: products of the agriseries production",
        stac_fastapi_collections_href=str((folder / "collections.json").absolute()),
        stac_fastapi_collections_reload_seconds=settings.collections_reload_s,
    )
    client = duckdb_client(folder / "duckdb-extensions")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        # the collection list is loaded before the first request, then re-read by the
        # middleware every collections_reload_s (stac-fastapi-geoparquet's own)
        raw = await gp_api.load_collections(gp_settings)
        app.state.collections, app.state.hrefs = gp_api._parse_collections(raw, gp_settings)
        app.state.client = client
        app.state.collections_last_updated = datetime.datetime.now()
        yield

    app = FastAPI(lifespan=lifespan, openapi_url=gp_settings.openapi_url,
                  docs_url=gp_settings.docs_url, redoc_url=None)
    app.middleware("http")(gp_api.make_collections_middleware(gp_settings, []))
    # the query extension: declared and documented here, served by the service's middleware
    # (app.ServedItems turns it into a CQL2 filter before this client sees the request)
    extensions = [*EXTENSIONS, QueryExtension(conformance_classes=[
        QueryConformanceClasses.SEARCH, QueryConformanceClasses.ITEMS])]
    return StacApi(
        settings=gp_settings, client=_client_class()(), app=app,
        search_get_request_model=create_get_request_model(
            base_model=FixedSearchGetRequest, extensions=extensions),
        search_post_request_model=create_post_request_model(
            base_model=BaseSearchPostRequest, extensions=extensions),
        items_get_request_model=create_get_request_model(
            base_model=ItemCollectionUri, extensions=extensions), extensions=extensions,
        middlewares=[*middlewares, Middleware(CORSMiddleware, allow_origins=["*"],
                                              allow_methods=["OPTIONS", "POST", "GET"],
                                              allow_headers=["Content-Type", "Authorization"],
                                              max_age=600),
                     Middleware(ProxyHeaderMiddleware)],
        route_dependencies=list(route_dependencies),
    )
