"""Mounting the portal on the distribution service's FastAPI application.

:func:`mount_portal` adds, under ``settings.prefix`` (``/portal``):

* ``/`` (and ``/`` of the service, for a browser asking for HTML): the page;
* ``/static/...``: the page's files (OpenLayers vendored, no other host needed);
* ``/api/config``: what the page needs to start (title, basemap, where the STAC API is);
* ``/api/layers?item=<id>``: how a product can be drawn (:func:`~.products.layers_of`),
  with the tile URL templates of each layer;
* ``/api/series?lon=&lat=&level=[&tile=&start=&end=&format=csv]``: a pixel's time series
  (:func:`~.series.pixel_series`);
* ``/api/quicklook?item=<id>``: a product's quicklook PNG (the result list's pictures);
* ``/api/status``: the production state of the site (``agriseries status``), when the
  service was started with one;
* ``/tiles/cog/...``, ``/tiles/item/...``: titiler-core tile endpoints (:mod:`.tiles`).
"""



import datetime as dt
import json
import urllib.parse
from pathlib import Path
from typing import Any

from ..core.errors import ConfigurationError, OptionalDependencyError, StoreError
from .settings import PortalSettings

__all__ = ["mount_portal", "STATIC"]

STATIC = Path(__file__).parent / "static"


def _imports() -> None:
    try:
        import fastapi  # noqa: F401
        import rio_tiler  # noqa: F401
        import titiler.core  # noqa: F401
    except ImportError as e:
        raise OptionalDependencyError(e.name or "titiler.core", "server") from e


def _day(text: str | None, what: str, end: bool = False) -> dt.datetime | None:
    if not text:
        return None
    try:
        d = dt.date.fromisoformat(text[:10])
    except ValueError:
        raise ConfigurationError(f"{what} {text!r}: expected a date YYYY-MM-DD") from None
    t = dt.time(23, 59, 59) if end else dt.time(0)
    return dt.datetime.combine(d, t, dt.timezone.utc)


def mount_portal(app, service_settings: Any, portal: "PortalSettings | None" = None, *,
                 access: Any, site: Any = None):
    """Mount the portal (see the module docstring) on ``app``, the service's FastAPI
    application, serving its published products.

    Every route that shows something of a product (layers, tiles and the other tiler
    routes, pixel series, quicklooks) and the operator page follow the service's access
    rules, ``access`` (:class:`~agriseries.distribution.access.Access`): the credential a
    search needs, a published product, files of its published item only.

    Parameters
    ----------
    app
        A FastAPI application (the distribution service's, or any other).
    service_settings
        The service's settings (``public_search`` is told to the page).
    portal
        The portal's own settings (:class:`~.settings.PortalSettings`).
    access
        The service's :class:`~agriseries.distribution.access.Access`.
    site
        The production site (:func:`~agriseries.production.site.load_site`) whose state the
        operator page shows (else ``app.state.agriseries_site`` when a request comes); without
        one the page says there is none.

    Returns
    -------
    The application.

    Raises
    ------
    OptionalDependencyError
        ``agriseries[server]`` is not installed.
    """
    _imports()
    from fastapi import APIRouter, HTTPException, Query, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from rio_tiler.errors import (InvalidAssetName, InvalidBandName, InvalidColorFormat,
                                  InvalidExpression, MissingAssets, MissingBands,
                                  TileOutsideBounds)
    from rasterio.errors import RasterioError
    from starlette.concurrency import run_in_threadpool
    from titiler.core.errors import (BadRequestError, TileNotFoundError,
                                     add_exception_handlers)

    from .products import Products, layers_of
    from .series import check_request, pixel_series, search_body, to_csv
    from .tiles import CACHE_CONTROL, CachingHeaders, NotModified, preview_png, stretch, \
        tile_routers

    ps = portal or PortalSettings()
    prefix = ps.prefix
    products = Products(access)
    router = APIRouter(prefix=prefix, tags=["Portal"])

    discovered: dict = {}

    async def _oidc() -> dict | None:
        """The page's single sign-on: the issuer's endpoints, from its discovery document
        (fetched by the service, with a time limit, once it answers)."""
        issuer = getattr(service_settings, "oidc_issuer", None)
        client_id = getattr(service_settings, "oidc_client_id", None)
        if not issuer or not client_id:
            return None
        if not discovered:
            import httpx

            url = issuer.rstrip("/") + "/.well-known/openid-configuration"
            try:
                async with httpx.AsyncClient(timeout=10) as client:
                    r = await client.get(url)
                r.raise_for_status()
                doc = r.json()
            except (httpx.HTTPError, ValueError) as e:
                return {"error": f"the single sign-on issuer cannot be reached ({url}: {e})"}
            if doc.get("issuer", "").rstrip("/") != issuer.rstrip("/"):
                return {"error": f"{url} names the issuer {doc.get('issuer')!r}, not {issuer!r}"}
            if "S256" not in doc.get("code_challenge_methods_supported", ["S256"]):
                return {"error": f"the issuer {issuer} does not support PKCE with S256"}
            discovered.update({k: doc.get(k) for k in ("authorization_endpoint",
                                                       "token_endpoint",
                                                       "end_session_endpoint")})
        return {"issuer": issuer, "client_id": client_id, "scope": "openid", **discovered}

    @router.get("/api/config", summary="What the portal page needs to start")
    async def config(request: Request):
        return {"title": ps.title, "prefix": prefix, "basemap_url": ps.basemap_url,
                "basemap_attribution": ps.basemap_attribution,
                "stac": str(request.base_url).rstrip("/") + "/",
                "public_search": bool(getattr(service_settings, "public_search", True)),
                "oidc": await _oidc()}

    def _tiles(request: Request, path: str, query: list[tuple[str, str]]) -> str:
        base = str(request.base_url).rstrip("/") + prefix
        return (f"{base}{path}/tiles/WebMercatorQuad/{{z}}/{{x}}/{{y}}.png?"
                + urllib.parse.urlencode(query))

    @router.get("/api/layers", summary="How a product can be drawn on the map")
    async def layers(request: Request, item: str = Query(description="Product id")):
        product = await products.get(request, item)

        def build():
            out = []
            for layer in layers_of(product.item, lambda k: products.path(product, k)):
                q: list[tuple[str, str]] = [("item", item)]
                if layer["kind"] == "rgb":
                    paths = [products.path(product, a) for a in layer["assets"]]
                    layer["rescale"] = [list(r) for r in stretch(paths)]
                    q += [("assets", a) for a in layer["assets"]]
                    q += [("rescale", f"{lo},{hi}") for lo, hi in layer["rescale"]]
                    layer["tiles"] = _tiles(request, "/tiles/item", q)
                elif layer["kind"] == "ramp":
                    lo, hi = layer["range"]
                    q += [("asset", layer["asset"]), ("colormap_name", layer["ramp"]),
                          ("rescale", f"{lo},{hi}")]
                    layer["tiles"] = _tiles(request, "/tiles/cog", q)
                elif layer["kind"] == "classes":
                    q += [("asset", layer["asset"])]
                    layer["tiles"] = _tiles(request, "/tiles/cog", q)
                else:  # maskbits: the page adds algorithm_params={"bits": N}; read
                    # through the item reader, which ignores the COG's own colour table
                    q += [("assets", layer["asset"]), ("algorithm", "maskbits")]
                    layer["tiles"] = _tiles(request, "/tiles/item", q)
                out.append(layer)
            return {"item": product.id, "bbox": product.item.bbox, "layers": out}

        try:
            return await run_in_threadpool(build)
        except (RasterioError, OSError) as e:
            raise HTTPException(500, f"the files of {item} cannot be read: {e}") from None

    @router.get("/api/series", summary="The time series of the pixel holding a point")
    async def series(request: Request,
                     lon: float = Query(description="Longitude (degrees, WGS 84)"),
                     lat: float = Query(description="Latitude (degrees, WGS 84)"),
                     level: str = Query("L2A", description="L2A, L3A or L3B"),
                     tile: str | None = Query(None, description="Only this tile (T31UDS)"),
                     start: str | None = Query(None, description="First day, YYYY-MM-DD"),
                     end: str | None = Query(None, description="Last day, YYYY-MM-DD"),
                     format: str = Query("json", pattern="^(json|csv)$",
                                         description="json or csv")):
        await access.reader(request)
        try:
            lv = check_request(level, lon, lat)
            body = search_body(lv, lon, lat, tile=tile, start=_day(start, "start"),
                               end=_day(end, "end", True))
        except ConfigurationError as e:
            raise HTTPException(400, str(e)) from None
        found = [products.product(doc) for doc in await access.search(body, limit=20_000)]
        try:
            s = await run_in_threadpool(pixel_series, found, lv.value, lon, lat, products.path)
        except StoreError as e:
            raise HTTPException(503, str(e)) from None
        except (RasterioError, OSError) as e:
            raise HTTPException(500, f"a file of the series cannot be read: {e}") from None
        if format == "csv":
            name = f"agriseries_{s.level}_{lon:.5f}_{lat:.5f}.csv"
            return Response(to_csv(s), media_type="text/csv; charset=utf-8",
                            headers={"Content-Disposition": f'attachment; filename="{name}"'})
        return JSONResponse(s.to_dict())

    @router.get("/api/quicklook", summary="The quicklook picture of a product")
    async def quicklook(request: Request, item: str = Query(description="Product id")):
        product = await products.get(request, item)

        def find():
            it = product.item
            key = next((k for k, a in it.assets.items() if "overview" in (a.roles or [])
                        or "thumbnail" in (a.roles or [])), None)
            if key is not None:
                return products.path(product, key), it.assets[key].media_type or "image/png"
            layer = next(iter(layers_of(it, lambda k: products.path(product, k))), None)
            if layer is None:  # no quicklook: the first map layer
                raise HTTPException(404, f"product {item} has no quicklook and no map layer")
            if layer["kind"] == "rgb":
                layer["rescale"] = stretch([products.path(product, a) for a in layer["assets"]])
            return preview_png(products, layer, product), "image/png"

        try:
            found, mtype = await run_in_threadpool(find)
        except (RasterioError, OSError) as e:
            raise HTTPException(500, f"the files of {item} cannot be read: {e}") from None
        headers = {"Cache-Control": CACHE_CONTROL}
        if isinstance(found, bytes):
            return Response(found, media_type=mtype, headers=headers)
        return FileResponse(found, media_type=mtype, headers=headers)

    @router.get("/api/status", summary="The production state of the site (agriseries status)")
    async def production_state(request: Request):
        await access.reader(request)
        the_site = site or getattr(request.app.state, "agriseries_site", None)
        if the_site is None:
            raise HTTPException(404, "this service was started without a site file: no "
                                     "production state to show (agriseries serve SITE.yaml)")
        from ..production.status import status

        try:
            st = await run_in_threadpool(status, the_site)
        except StoreError as e:
            raise HTTPException(503, f"the production state cannot be read: {e}") from None
        return JSONResponse(json.loads(json.dumps(st.to_dict(), default=str)))

    page_html = (STATIC / "index.html").read_text().replace("__PREFIX__", prefix)

    @router.get("/", include_in_schema=False)
    def page():
        return HTMLResponse(page_html, headers={"Cache-Control": "no-cache"})

    cog, item = tile_routers(products, prefix)
    app.include_router(router)
    app.include_router(cog.router, prefix=f"{prefix}/tiles/cog", tags=["Portal tiles"])
    app.include_router(item.router, prefix=f"{prefix}/tiles/item", tags=["Portal tiles"])
    app.mount(f"{prefix}/static", StaticFiles(directory=STATIC), name="portal-static")
    add_exception_handlers(app, {
        BadRequestError: 400, TileOutsideBounds: 404, TileNotFoundError: 404,
        MissingBands: 400, MissingAssets: 400, InvalidColorFormat: 400, InvalidAssetName: 404,
        InvalidBandName: 404, InvalidExpression: 400})
    @app.exception_handler(NotModified)
    async def _not_modified(request: Request, exc: NotModified):
        return Response(status_code=304, headers={"ETag": exc.etag,
                                                  "Cache-Control": CACHE_CONTROL})

    app.add_middleware(CachingHeaders, prefix=f"{prefix}/tiles/")
    app.add_middleware(_BrowserRoot, page=page_html.encode())
    app.state.portal_settings = ps
    return app


class _BrowserRoot:
    """ASGI middleware: ``GET /`` from a browser (``Accept: text/html``, no ``f=json``) gets
    the portal page; every other request of ``/`` (STAC clients) the STAC landing page."""

    def __init__(self, app, page: bytes) -> None:
        self.app = app
        self.page = page

    async def __call__(self, scope, receive, send) -> None:
        if (scope["type"] == "http" and scope.get("path") in ("/", "")
                and scope.get("method") in ("GET", "HEAD")):
            headers = dict(scope.get("headers") or [])
            accept = headers.get(b"accept", b"").decode().lower()
            query = urllib.parse.parse_qs(scope.get("query_string", b"").decode())
            if "text/html" in accept and query.get("f", [""])[0] != "json":
                await send({"type": "http.response.start", "status": 200,
                            "headers": [(b"content-type", b"text/html; charset=utf-8"),
                                        (b"content-length", str(len(self.page)).encode()),
                                        (b"cache-control", b"no-cache")]})
                await send({"type": "http.response.body",
                            "body": b"" if scope["method"] == "HEAD" else self.page})
                return
        await self.app(scope, receive, send)
