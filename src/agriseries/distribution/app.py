"""The distribution service: one FastAPI application (:func:`create_app`).

* the **STAC API** of stac-fastapi over the chosen catalogue backend
  (:mod:`agriseries.distribution.catalog`): landing page, conformance, collections,
  items, item search (bbox, datetime, intersects, ids, sort, fields, query, CQL2 filter,
  paging);
* **assets** at ``/assets/<collection>/<item>/<key>`` (:mod:`.assets`): what the served
  items' asset hrefs point at; need a user (token, single sign-on JWT or signed URL);
* **accounts** (:mod:`.accounts`): ``GET /account`` says who the token is and what is
  left of its quota;
* the **basket** (:mod:`.basket`): ``/basket`` routes.

The application takes a :class:`~.settings.ServiceSettings` and can be mounted in another
ASGI application (``parent.mount("/stac", create_app(settings))``). It never writes the
catalogue: the publisher does.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from ..core.errors import OptionalDependencyError
from .settings import ServiceSettings

try:
    from fastapi import Request
except ImportError:  # create_app names the extra
    Request = None  # type: ignore[assignment,misc]

__all__ = ["create_app"]

from .access import INTERNAL_HEADER  # noqa: E402  (the marker of the service's own calls)


def _imports():
    try:
        import fastapi  # noqa: F401
        import httpx  # noqa: F401
        import stac_fastapi.api  # noqa: F401
    except ImportError as e:
        raise OptionalDependencyError(e.name or "fastapi", "server") from e


class ServedItems:
    """ASGI middleware: turns the published items of STAC responses (``/search``,
    ``/collections/<c>/items[/<id>]``) into served ones
    (:func:`~agriseries.distribution.items.served_item`: download URLs, no null fields),
    and applies the fields extension itself (:mod:`.fields`): ``fields`` is taken out of the
    request before the backend sees it and applied to the whole items it answers, so both
    backends answer alike (``application/geo+json``). A ``POST /search`` whose
    ``collections`` or ``ids`` is one string (``"a"`` or ``"a,b"``, the GET form) is read as
    the list it names. The query extension is served here too (:mod:`.query`): ``query`` is
    replaced by the equivalent CQL2-JSON ``filter`` (ANDed with the request's own), so
    neither backend sees it; the answer's links carry the request's ``query`` and ``filter``
    again. Internal calls of the service itself (asset look-ups, the basket's searches) get
    the published items, their ``query`` translated all the same.

    ``property_kinds(collections)`` (optional): what the catalogue says the properties of
    those collections (``None``: all) hold, for :func:`~.query.query_filter`."""

    #: a search body larger than this is refused (413) before it is parsed
    MAX_BODY = 16 << 20

    def __init__(self, app, internal_key: str = "", property_kinds=None) -> None:
        self.app = app
        self.internal_key = internal_key
        self.property_kinds = property_kinds

    @staticmethod
    def _wanted(path: str) -> bool:
        parts = [p for p in path.split("/") if p]
        return (parts[-1:] == ["search"]) or ("collections" in parts and "items" in parts)

    @staticmethod
    def _searches(path: str) -> bool:
        """A route that answers a FeatureCollection (search, a collection's items)."""
        parts = [p for p in path.split("/") if p]
        return parts[-1:] in (["search"], ["items"])

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or not self._wanted(scope.get("path", "")):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        key = headers.get(INTERNAL_HEADER.encode(), b"").decode()
        internal = bool(key and self.internal_key and
                        secrets.compare_digest(key, self.internal_key))
        fields = restore = None
        if self._searches(scope.get("path", "")):
            from .fields import FieldsError
            from .query import QueryError

            try:
                scope, receive, fields, restore = await self._take_params(scope, receive,
                                                                          internal)
            except (FieldsError, QueryError) as exc:
                await _json_error(send, 400, "BadRequest", str(exc))
                return
            except _TooLarge as exc:
                await _json_error(send, 413, "PayloadTooLarge", str(exc))
                return
        if internal:
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] = {}
        body = bytearray()

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if message.get("more_body"):
                    return
                head, out = self._rewrite(scope, start, bytes(body), fields, restore)
                await send(head)
                await send({"type": "http.response.body", "body": out})
                return
            await send(message)

        await self.app(scope, receive, capture)

    async def _filter_of(self, query, scope, collections) -> dict | None:
        """The CQL2-JSON filter of a request's ``query`` value (GET text or POST value)."""
        from starlette.concurrency import run_in_threadpool

        from .query import parse_query, query_filter

        q = parse_query(query)
        if not q:
            return None
        parts = [p for p in scope.get("path", "").split("/") if p]
        if parts[-1:] == ["items"] and len(parts) >= 3 and parts[-3] == "collections":
            collections = [parts[-2]]
        kinds = None
        if self.property_kinds is not None:
            kinds = await run_in_threadpool(self.property_kinds, collections or None)
        return query_filter(q, kinds)

    async def _take_params(self, scope, receive, internal: bool):
        """The request without its ``fields`` (internal calls keep theirs) and with its
        ``query`` made part of its ``filter`` (and with POST ``collections``/``ids`` strings
        made lists): ``(scope, receive, Fields or None, what to put back in the answer's
        links or None)``."""
        import urllib.parse

        from .fields import parse_get, parse_post
        from .query import QueryError, and_filters, filter_as_json

        method = scope.get("method", "GET").upper()
        if method == "GET":
            params = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"),
                                            keep_blank_values=True)
            fields = restore = None
            changed = False
            values = [v for k, v in params if k == "fields"]
            if values and not internal:
                fields = parse_get(",".join(values))
                params = [(k, v) for k, v in params if k != "fields"]
                changed = True
            queries = [v for k, v in params if k == "query"]
            if queries:
                if len(queries) > 1:
                    raise QueryError(f"query given {len(queries)} times: expected one JSON "
                                     "object")
                colls = [c.strip() for k, v in params if k == "collections"
                         for c in v.split(",") if c.strip()]
                flt = await self._filter_of(queries[0], scope, colls)
                own = [v for k, v in params if k == "filter"]
                langs = [v for k, v in params if k == "filter-lang"]
                restore = {"query": queries[0], "filter": own[-1] if own else None,
                           "filter-lang": langs[-1] if langs else None}
                params = [(k, v) for k, v in params if k != "query"]
                if flt is not None:
                    mine = filter_as_json(own[-1], langs[-1] if langs else None) \
                        if own and own[-1].strip() else None
                    params = [(k, v) for k, v in params if k not in ("filter", "filter-lang")]
                    params += [("filter", json.dumps(and_filters(mine, flt))),
                               ("filter-lang", "cql2-json")]
                changed = True
            if changed:
                scope = {**scope,
                         "query_string": urllib.parse.urlencode(params).encode("latin-1")}
            return scope, receive, fields, restore
        if method != "POST":
            return scope, receive, None, None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return scope, receive, None, None
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.MAX_BODY:
                raise _TooLarge(f"a search body of more than {self.MAX_BODY} bytes")
            if not message.get("more_body"):
                break
        raw = b"".join(chunks)
        fields = restore = None
        try:
            doc = json.loads(raw) if raw.strip() else None
        except ValueError:
            doc = None  # the backend says what is wrong with it
        if isinstance(doc, dict):
            changed = False
            if "fields" in doc and not internal:
                fields = parse_post(doc.pop("fields"))
                changed = True
            for k in ("collections", "ids"):
                if isinstance(doc.get(k), str):
                    doc[k] = [x.strip() for x in doc[k].split(",") if x.strip()]
                    changed = True
            if "query" in doc:
                query = doc.pop("query")
                changed = True
                if query is not None:
                    colls = doc.get("collections")
                    flt = await self._filter_of(
                        query, scope, colls if isinstance(colls, list) else None)
                    lang_key = "filter-lang" if "filter-lang" in doc else "filter_lang"
                    restore = {"query": query, "filter": doc.get("filter"),
                               "filter-lang": doc.get(lang_key)}
                    if flt is not None:
                        own = doc.get("filter")
                        mine = None if own is None or own == "" else filter_as_json(
                            own, doc.get(lang_key) or ("cql2-json" if isinstance(own, dict)
                                                        else None))
                        doc.pop("filter_lang", None)
                        doc["filter"] = and_filters(mine, flt)
                        doc["filter-lang"] = "cql2-json"
            if changed:
                raw = json.dumps(doc).encode()
        hdrs = [(k, v) for k, v in scope.get("headers") or [] if k.lower() != b"content-length"]
        hdrs.append((b"content-length", str(len(raw)).encode()))
        scope = {**scope, "headers": hdrs}
        sent = [False]

        async def replay():
            if not sent[0]:
                sent[0] = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        return scope, replay, fields, restore

    def _rewrite(self, scope, start: dict, body: bytes, fields=None,
                 restore: dict | None = None) -> tuple[dict, bytes]:
        from .fields import select
        from .items import served_item

        hdrs = [(k, v) for k, v in start.get("headers", [])]
        ctype = dict(hdrs).get(b"content-type", b"").decode()
        enc = dict(hdrs).get(b"content-encoding")
        out = body
        if start.get("status") == 200 and "json" in ctype and not enc:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if isinstance(doc, dict):
                base = _base_url(scope)
                kind = doc.get("type")
                feats = doc.get("features") if kind == "FeatureCollection" else (
                    [doc] if kind == "Feature" else [])
                for f in feats or []:
                    if isinstance(f, dict):
                        served_item(f, base)
                if fields is not None and kind == "FeatureCollection":
                    doc["features"] = [select(f, fields) if isinstance(f, dict) else f
                                       for f in doc.get("features") or []]
                    _links_with_fields(doc, fields)
                if restore is not None and kind == "FeatureCollection":
                    _links_with_query(doc, restore)
                if kind in ("FeatureCollection", "Feature"):
                    hdrs = [(k, v) for k, v in hdrs if k.lower() != b"content-type"]
                    hdrs.append((b"content-type", b"application/geo+json"))
                out = json.dumps(doc, separators=(",", ":")).encode()
        hdrs = [(k, v) for k, v in hdrs if k.lower() != b"content-length"]
        hdrs.append((b"content-length", str(len(out)).encode()))
        return {**start, "headers": hdrs}, out


class _TooLarge(Exception):
    pass


async def _json_error(send, status: int, code: str, description: str) -> None:
    body = json.dumps({"code": code, "description": description}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _links_with_fields(doc: dict, fields) -> None:
    """The ``fields`` of the request put back into the answer's self and paging links (the
    backend saw the request without them)."""
    import urllib.parse

    for link in doc.get("links") or []:
        if not isinstance(link, dict) or link.get("rel") not in ("self", "next", "prev",
                                                                  "previous"):
            continue
        if isinstance(link.get("body"), dict):
            link["body"]["fields"] = fields.post_value()
        elif str(link.get("method", "GET")).upper() == "GET" and link.get("href"):
            u = urllib.parse.urlsplit(link["href"])
            q = [(k, v) for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True)
                 if k != "fields"]
            q.append(("fields", fields.get_value()))
            link["href"] = urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


def _links_with_query(doc: dict, restore: dict) -> None:
    """The request's own ``query``, ``filter`` and ``filter-lang`` put back into the
    answer's self and paging links (the backend saw the filter they make together)."""
    import urllib.parse

    for link in doc.get("links") or []:
        if not isinstance(link, dict) or link.get("rel") not in ("self", "next", "prev",
                                                                  "previous"):
            continue
        if isinstance(link.get("body"), dict):
            b = link["body"]
            for k in ("filter", "filter-lang", "filter_lang"):
                b.pop(k, None)
            b.update({k: v for k, v in restore.items() if v is not None})
        elif str(link.get("method", "GET")).upper() == "GET" and link.get("href"):
            u = urllib.parse.urlsplit(link["href"])
            q = [(k, v) for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True)
                 if k not in ("query", "filter", "filter-lang")]
            q += [(k, v if isinstance(v, str) else json.dumps(v))
                  for k, v in restore.items() if v is not None]
            link["href"] = urllib.parse.urlunsplit(u._replace(query=urllib.parse.urlencode(q)))


def _base_url(scope) -> str:
    """The service's own URL (scheme, host, mount point) for a request."""
    headers = dict(scope.get("headers") or [])
    host = headers.get(b"host", b"").decode() or "{}:{}".format(*(scope.get("server") or
                                                               ("127.0.0.1", 80)))
    root = scope.get("root_path", "")
    return f"{scope.get('scheme', 'http')}://{host}{root}"


def create_app(settings: ServiceSettings):
    """The FastAPI application of the service (see the module docstring).

    Raises
    ------
    OptionalDependencyError
        ``agriseries[server]`` is not installed.
    """
    _imports()
    import httpx
    from fastapi import Depends, FastAPI
    from fastapi.responses import JSONResponse
    from starlette.middleware import Middleware

    from .accounts import AccountError, Accounts, DownloadSlots
    from .auth import Authenticator

    internal_key = secrets.token_urlsafe(24)
    accounts = Accounts(settings.service_db_url, quota_bytes_per_day=settings.quota_bytes_per_day,
                        max_concurrent=settings.max_concurrent_downloads,
                        statement_timeout_s=settings.statement_timeout_s)
    auth = Authenticator(settings, accounts)
    slots = DownloadSlots()

    # the service's own STAC API, past the reading check (``app`` is made below)
    async def internal_get(path: str, params: dict | None = None) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agriseries.internal",
                                     timeout=settings.statement_timeout_s * 3) as client:
            return await client.get(path, params=params, headers={INTERNAL_HEADER: internal_key})

    async def internal_post(path: str, body: dict) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agriseries.internal",
                                     timeout=settings.statement_timeout_s * 3) as client:
            return await client.post(path, json=body, headers={INTERNAL_HEADER: internal_key})

    from .access import Access

    access = Access(settings, auth, internal_get, internal_post, internal_key)

    async def search_user(request: Request):
        """STAC routes: the reading rule of :class:`~.access.Access`."""
        if "/_mgmt/" in request.url.path:
            return None
        return await access.reader(request)

    if settings.backend == "pgstac":
        from .catalog.pgstac import create_api

        kinds = None  # pgstac's JSON has no fixed types (agriseries.distribution.query)
    else:
        import functools

        from .catalog.geoparquet import create_api, property_kinds

        kinds = functools.partial(property_kinds, settings.catalog_folder)
    middlewares = [Middleware(ServedItems, internal_key=internal_key, property_kinds=kinds)]
    api = create_api(settings, middlewares=middlewares,
                     route_dependencies=[([{"path": "*", "method": "*"}],
                                          [Depends(search_user)])])
    app: FastAPI = api.app
    app.state.agriseries_settings = settings
    app.state.accounts = accounts
    app.state.download_slots = slots

    @app.exception_handler(AccountError)
    async def _account_error(request: Request, exc: AccountError):
        headers = {}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="agriseries", error="invalid_token"'
        if exc.retry_after is not None:
            headers["Retry-After"] = str(exc.retry_after)
        return JSONResponse({"code": {401: "Unauthorized", 403: "Forbidden",
                                      429: "TooManyRequests"}.get(exc.status, "Error"),
                             "description": str(exc)}, status_code=exc.status, headers=headers)

    from ..core.errors import StoreError

    @app.exception_handler(StoreError)
    async def _store_error(request: Request, exc: StoreError):
        return JSONResponse({"code": "ServiceUnavailable", "description": str(exc)},
                            status_code=503, headers={"Retry-After": "30"})

    app.state.internal_get = internal_get
    app.state.internal_post = internal_post
    app.state.published_item = access.published
    app.state.access = access

    from .routes import asset_router, account_router
    from .basket import basket_router

    app.include_router(asset_router(access, accounts, slots))
    app.include_router(account_router(auth, accounts, slots))
    app.include_router(basket_router(settings, auth, accounts, slots, access))
    from ..portal import mount_portal

    mount_portal(app, settings, access=access)  # the web page at / (docs/portal.md)
    return app
