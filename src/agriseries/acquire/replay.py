"""A loopback STAC API and file server that replays recorded provider responses.

For tests, benchmarks and the demo (no internet): :class:`ReplayServer` answers STAC API
requests (landing page, conformance, collections, ``/search`` by GET and POST with
``collections``, ``intersects``/``bbox``, ``datetime``, ``query`` on ``eo:cloud_cover``,
``limit`` and paging by a ``next`` link) from real recorded items, serves files with HTTP
``Range`` support, and plays each provider's authorisation (Planetary Computer SAS token
endpoint, CDSE-style OAuth2 password / refresh grants with expiring bearer tokens, an API
key header). Faults are queued per file path (:meth:`ReplayServer.inject`): ``drop``
(connection closed mid-body), ``500``/``502``/``503``, ``429`` (with ``Retry-After``),
``stall`` (headers, then silence), ``html200`` (a 200 whose body is an HTML error page),
``htmlmid`` (an HTML page in the middle of the data, then the connection closed), ``htmlin``
(an HTML page written over the middle of the data, the answer otherwise whole and well framed),
``short`` (``Content-Length`` longer than the body), ``corrupt`` (one byte changed: a checksum
mismatch), ``401`` (the token refused once), ``302`` (a redirect to the same file at
``/files/...``, the server's unguarded path).

Every request is logged in :attr:`ReplayServer.log` (method, path, range, status, bytes
sent, the grant of an OAuth2 token request) for the tests and the benchmarks to count.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import secrets
import threading
import time
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qs, urlencode, urlsplit

__all__ = ["ReplayApi", "ReplayServer"]

_CONFORMANCE = [
    "https://api.stacspec.org/v1.0.0/core",
    "https://api.stacspec.org/v1.0.0/item-search",
    "https://api.stacspec.org/v1.0.0/item-search#query",
    "https://api.stacspec.org/v1.0.0/ogcapi-features",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
]


@dataclass
class ReplayApi:
    """One provider's recorded catalogue."""

    items: list[dict]
    """Recorded STAC items (their asset hrefs already pointing at this server)."""
    collections: dict[str, dict] = field(default_factory=dict)
    """Recorded collection documents by id (a minimal one is made for others)."""
    auth: str = "none"
    """``none``, ``sas``, ``oauth2`` or ``apikey`` (guards its files; ``apikey`` and
    ``oauth2`` guard the search too)."""
    users: dict[str, str] = field(default_factory=dict)
    """OAuth2 user -> password."""
    apikey: str | None = None
    """The API key accepted (``auth: apikey``)."""
    token_lifetime_s: float = 600.0
    """Lifetime of the bearer / SAS tokens handed out."""
    down: bool = False
    """Answer 503 to everything (a provider down)."""


def _intersects(item: dict, geom: dict | None) -> bool:
    if geom is None:
        return True
    from shapely.geometry import shape

    try:
        return shape(item["geometry"]).intersects(shape(geom))
    except (KeyError, ValueError, TypeError):
        return False


def _in_dates(item: dict, interval: str | None) -> bool:
    if not interval:
        return True
    # STAC API item search: an item with start_datetime/end_datetime matches when that
    # range meets the interval (GEODES' ``datetime`` is the publication), else its datetime
    p = item.get("properties", {})

    def parse(v: str) -> dt.datetime:
        d = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
        return d if d.tzinfo else d.replace(tzinfo=dt.timezone.utc)

    if p.get("start_datetime") and p.get("end_datetime"):
        first, last = parse(p["start_datetime"]), parse(p["end_datetime"])
    elif p.get("datetime"):
        first = last = parse(p["datetime"])
    else:
        return False
    parts = interval.split("/")
    lo = parts[0] if parts[0] not in ("", "..") else None
    hi = parts[-1] if len(parts) > 1 and parts[-1] not in ("", "..") else None
    if lo and last < parse(lo):
        return False
    if hi and first > parse(hi):
        return False
    return True


def _query_ok(item: dict, query: dict | None) -> bool:
    if not query:
        return True
    p = item.get("properties", {})
    for prop, ops in query.items():
        v = p.get(prop)
        if v is None:
            return False
        for op, ref in ops.items():
            if (op == "lte" and not v <= ref) or (op == "gte" and not v >= ref) or \
                    (op == "lt" and not v < ref) or (op == "gt" and not v > ref) or \
                    (op == "eq" and v != ref):
                return False
    return True


class _QuietServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print the clients' dropped connections."""

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class ReplayServer:
    """The loopback server (see the module docstring). Use as a context manager."""

    #: Seconds a "stall" fault holds the socket silent before the rest of the body.
    STALL_S = 5.0

    def __init__(self, files_root: str | Path | None = None) -> None:
        self.files_root = Path(files_root) if files_root else None
        self.apis: dict[str, ReplayApi] = {}
        self.faults: dict[str, list[str]] = {}
        self.log: list[dict] = []
        self.stall_s = self.STALL_S
        self.throttle_bps: float | None = None
        self.retry_after_s = 1
        self._tokens: dict[str, float] = {}
        self._refresh: dict[str, str] = {}
        self._lock = threading.Lock()
        self.httpd = _QuietServer(("127.0.0.1", 0), _ReplayHandler)
        self.httpd.replay = self  # what the handler answers from
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    # ------------------------------------------------------------------ set-up
    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def api_url(self, name: str) -> str:
        """Root of the STAC API ``name``."""
        return f"{self.url}/{name}"

    def file_url(self, rel: str) -> str:
        """URL of a file under ``files_root``."""
        return f"{self.url}/files/{rel}"

    def add_api(self, name: str, api: ReplayApi) -> None:
        """Serve ``api`` under ``/<name>``."""
        self.apis[name] = api

    def inject(self, rel: str, *faults: str) -> None:
        """Queue faults for the next requests of file ``rel`` (one per request)."""
        with self._lock:
            self.faults.setdefault(rel, []).extend(faults)

    def expire_tokens(self) -> None:
        """Make every bearer token handed out so far invalid (an expired session)."""
        with self._lock:
            self._tokens.clear()

    def start(self) -> ReplayServer:
        """Start serving in a thread."""
        self.thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ReplayServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def requests(self, prefix: str = "") -> list[dict]:
        """Logged requests whose path starts with ``prefix``."""
        return [r for r in self.log if r["path"].startswith(prefix)]


class _ReplayHandler(BaseHTTPRequestHandler):
    """The requests of a :class:`ReplayServer` (``self.replay``): STAC API, tokens, files and
    their faults."""

    @property
    def replay(self) -> ReplayServer:
        return self.server.replay  # type: ignore[attr-defined]

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    def _record(self, status: int, sent: int) -> dict:
        rec = {"method": self.command, "path": urlsplit(self.path).path,
               "range": self.headers.get("Range"), "status": status,
               "bytes": sent, "time": time.monotonic(),
               "grant": getattr(self, "_grant", None)}  # OAuth2 token requests
        with self.replay._lock:
            self.replay.log.append(rec)
        return rec

    def _send(self, status: int, body: bytes = b"", ctype: str = "application/json",
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        rec = self._record(status, 0)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
            rec["bytes"] = len(body)

    def _json(self, doc, status: int = 200) -> None:
        self._send(status, json.dumps(doc).encode(), "application/geo+json"
                   if doc.get("type") == "FeatureCollection" else "application/json")

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        self._route(None)

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            body = json.loads(raw or b"{}")
        else:
            body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        self._route(body)

    def _route(self, body) -> None:
        try:
            parts = urlsplit(self.path)
            segs = [s for s in parts.path.split("/") if s]
            qs = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if segs and segs[0] == "files":
                return self._file("/".join(segs[1:]), qs, None)
            if not segs or segs[0] not in self.replay.apis:
                return self._json({"code": "NotFound"}, 404)
            name, api = segs[0], self.replay.apis[segs[0]]
            if api.down:
                return self._send(503, b"<html><body>Service Unavailable</body></html>",
                                  "text/html")
            rest = segs[1:]
            base = self.replay.api_url(name)
            if rest[:1] == ["token"]:
                return self._sas_token(api, rest[1:])
            if rest[:1] == ["oauth"]:
                return self._oauth(api, body or {})
            if rest[:1] == ["files"]:
                return self._file("/".join(rest[1:]), qs, api)
            if api.auth in ("apikey",) and not self._authorised(api, qs):
                return self._json({"code": "Unauthorized"}, 401)
            if not rest:
                return self._json(self._landing(name, base))
            if rest == ["conformance"]:
                return self._json({"conformsTo": _CONFORMANCE})
            if rest == ["collections"]:
                return self._json({"collections": [self._collection(api, c, base)
                                                   for c in self._cids(api)],
                                   "links": []})
            if rest[0] == "collections" and len(rest) == 2:
                if rest[1] not in self._cids(api):
                    return self._json({"code": "NotFound"}, 404)
                return self._json(self._collection(api, rest[1], base))
            if rest == ["search"]:
                return self._search(api, base, body if body is not None else qs,
                                    body is not None)
            return self._json({"code": "NotFound"}, 404)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # -- STAC API
    def _cids(self, api: ReplayApi) -> list[str]:
        return sorted({i.get("collection") for i in api.items if i.get("collection")}
                      | set(api.collections))

    def _collection(self, api: ReplayApi, cid: str, base: str) -> dict:
        doc = copy.deepcopy(api.collections.get(cid) or {
            "type": "Collection", "stac_version": "1.0.0", "id": cid,
            "description": f"{cid} (replayed)", "license": "proprietary",
            "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                       "temporal": {"interval": [[None, None]]}}})
        doc["links"] = [{"rel": "self", "href": f"{base}/collections/{cid}"},
                        {"rel": "root", "href": f"{base}/"},
                        {"rel": "items", "href": f"{base}/collections/{cid}/items"}]
        return doc

    def _landing(self, name: str, base: str) -> dict:
        return {"type": "Catalog", "stac_version": "1.0.0", "id": name,
                "description": f"{name} (replayed from recorded responses)",
                "conformsTo": _CONFORMANCE,
                "links": [{"rel": "self", "href": f"{base}/"},
                          {"rel": "root", "href": f"{base}/"},
                          {"rel": "conformance", "href": f"{base}/conformance"},
                          {"rel": "data", "href": f"{base}/collections"},
                          {"rel": "search", "href": f"{base}/search", "method": "GET",
                           "type": "application/geo+json"},
                          {"rel": "search", "href": f"{base}/search", "method": "POST",
                           "type": "application/geo+json"}]}

    def _search(self, api: ReplayApi, base: str, params: dict, post: bool) -> None:
        colls = params.get("collections")
        if isinstance(colls, str):
            colls = colls.split(",")
        geom = params.get("intersects")
        if isinstance(geom, str):
            geom = json.loads(geom)
        bbox = params.get("bbox")
        if bbox is not None and geom is None:
            if isinstance(bbox, str):
                bbox = [float(v) for v in bbox.split(",")]
            w, s, e, n = bbox
            geom = {"type": "Polygon",
                    "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
        query = params.get("query")
        if isinstance(query, str):
            query = json.loads(query)
        limit = int(params.get("limit") or 10)
        start = int(params.get("token") or 0)
        hits = [i for i in api.items
                if (not colls or i.get("collection") in colls)
                and _intersects(i, geom) and _in_dates(i, params.get("datetime"))
                and _query_ok(i, query)]
        page = hits[start:start + limit]
        links = []
        if start + limit < len(hits):
            if post:
                nb = {k: v for k, v in params.items() if k != "token"}
                links.append({"rel": "next", "href": f"{base}/search", "method": "POST",
                              "body": {**nb, "token": str(start + limit)}, "merge": False})
            else:
                q = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v)
                     for k, v in params.items() if k != "token"}
                q["token"] = str(start + limit)
                links.append({"rel": "next", "href": f"{base}/search?{urlencode(q)}",
                              "method": "GET"})
        self._json({"type": "FeatureCollection", "features": page, "links": links,
                    "numberMatched": len(hits), "numberReturned": len(page),
                    "context": {"returned": len(page), "matched": len(hits),
                                "limit": limit}})

    # -- authorisation
    def _authorised(self, api: ReplayApi, qs: dict) -> bool:
        if api.auth == "apikey":
            return self.headers.get("X-API-Key") == api.apikey
        if api.auth == "oauth2":
            h = self.headers.get("Authorization", "")
            tok = h[7:] if h.startswith("Bearer ") else None
            with self.replay._lock:
                exp = self.replay._tokens.get(tok or "")
            return exp is not None and exp > time.monotonic()
        if api.auth == "sas":
            with self.replay._lock:
                exp = self.replay._tokens.get(qs.get("sig", ""))
            return exp is not None and exp > time.monotonic()
        return True

    def _new_token(self, api: ReplayApi) -> str:
        tok = secrets.token_hex(12)
        with self.replay._lock:
            self.replay._tokens[tok] = time.monotonic() + api.token_lifetime_s
        return tok

    def _sas_token(self, api: ReplayApi, rest: list[str]) -> None:
        tok = self._new_token(api)
        expiry = dt.datetime.now(dt.timezone.utc) + dt.timedelta(
            seconds=api.token_lifetime_s)
        self._json({"msft:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "token": f"st=2026-01-01&se=2026-12-31&sp=rl&sv=2021-06-08&sig={tok}"})

    def _oauth(self, api: ReplayApi, form: dict) -> None:
        grant = self._grant = form.get("grant_type")
        ok = False
        if grant == "password":
            ok = api.users.get(form.get("username", "")) == form.get("password") and \
                form.get("username") in api.users
        elif grant == "refresh_token":
            with self.replay._lock:
                ok = form.get("refresh_token") in self.replay._refresh
        if not ok:
            return self._json({"error": "invalid_grant"}, 401)
        tok = self._new_token(api)
        ref = secrets.token_hex(12)
        with self.replay._lock:
            self.replay._refresh[ref] = tok
        self._json({"access_token": tok, "expires_in": api.token_lifetime_s,
                    "refresh_token": ref, "token_type": "Bearer"})

    # -- files
    def _file(self, rel: str, qs: dict, api: ReplayApi | None) -> None:
        with self.replay._lock:
            queue = self.replay.faults.get(rel) or []
            fault = queue.pop(0) if queue else None
        if api is not None and (fault == "401" or not self._authorised(api, qs)):
            return self._send(401 if api.auth != "sas" else 403,
                              b'{"detail": "Expired signature or token"}')
        path = (self.replay.files_root / rel) if self.replay.files_root else None
        if path is None or not path.is_file():
            return self._send(404, b"<html><body>404 Not Found</body></html>",
                              "text/html")
        if fault in ("500", "502", "503"):
            return self._send(int(fault), b"<html><body>Bad Gateway</body></html>",
                              "text/html")
        if fault == "302":  # to the same file under another path of this server
            return self._send(302, b"", headers={"Location": "/files/" + rel})
        if fault == "429":
            return self._send(429, b'{"message": "Too Many Requests"}',
                              headers={"Retry-After": str(self.replay.retry_after_s)})
        if fault == "html200":
            page = (b"<!DOCTYPE html><html><head><title>Error</title></head><body>"
                    b"Quota exceeded, try again later</body></html>")
            return self._send(200, page, "application/octet-stream")
        data = path.read_bytes()
        if fault == "htmlin":
            page = b"<html><head><title>504 Gateway Time-out</title></head></html>"
            mid = len(data) // 2
            data = data[:mid] + page + data[mid + len(page):]
        if fault == "corrupt":
            data = data[:len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + \
                data[len(data) // 2 + 1:]
        total = len(data)
        start, end = 0, total - 1
        status = 200
        rng = self.headers.get("Range")
        if rng and ("," in rng or not rng.startswith("bytes=")):
            # one range per request (like many object stores); clients fall back
            return self._send(416, b"", headers={"Content-Range": f"bytes */{total}"})
        if rng and rng.startswith("bytes="):
            a, _, b = rng[6:].partition("-")
            if a == "":
                start = max(0, total - int(b))
            else:
                start = int(a)
                end = min(int(b), total - 1) if b else total - 1
            if start >= total:
                return self._send(416, b"", headers={"Content-Range": f"bytes */{total}"})
            status = 206
        body = data[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", f'"{total:x}-{int(path.stat().st_mtime)}"')
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{total}")
        cut = len(body)
        if fault in ("drop", "short", "htmlmid", "stall"):
            cut = len(body) // 2
        self.send_header("Content-Length", str(len(body)))
        if fault == "drop":
            self.send_header("Connection", "close")
        self.end_headers()
        rec = self._record(status, 0)
        if self.command == "HEAD":
            return
        sent = 0
        try:
            if fault == "htmlmid":
                self.wfile.write(body[:cut])
                page = b"<html><head><title>502 Bad Gateway</title></head></html>"
                self.wfile.write(page)
                sent = cut + len(page)
                self.close_connection = True
            elif fault == "stall":
                self.wfile.write(body[:cut])
                self.wfile.flush()
                sent = rec["bytes"] = cut
                time.sleep(self.replay.stall_s)
                self.close_connection = True
            else:
                step = 1 << 16
                for i in range(0, cut, step):
                    self.wfile.write(body[i:min(i + step, cut)])
                    sent = rec["bytes"] = min(i + step, cut)
                    if self.replay.throttle_bps:
                        time.sleep(step / self.replay.throttle_bps)
                if cut < len(body):
                    self.close_connection = True
        finally:
            rec["bytes"] = sent


def rewrite_hrefs(item: dict, mapping: Callable[[str, dict], str | None]) -> dict:
    """A copy of ``item`` whose asset hrefs are ``mapping(key, asset)`` (assets for which it
    returns ``None`` are dropped)."""
    out = copy.deepcopy(item)
    assets = {}
    for k, a in out.get("assets", {}).items():
        href = mapping(k, a)
        if href is not None:
            a["href"] = href
            assets[k] = a
    out["assets"] = assets
    return out


__all__ += ["rewrite_hrefs"]


# ---------------------------------------------------------------------------------------
# the sample catalogue: real recorded items + the real product samples of tests/data

S2_SAMPLE = "S2A_MSIL2A_20221005T115411_N0400_R023_T29UNU_20221005T164454.SAFE"
LANDSAT_SAMPLE = "LC08_L2SP_008059_20191201_20200825_02_T1"
#: The MUSCATE (MAJA) L2A sample of tests/data/muscate served by the GEODES catalogue.
MUSCATE_SAMPLE = "SENTINEL2A_20170203-071245-541_L2A_T38KPD_C_V1-0"
#: The API key the replayed GEODES catalogue accepts.
GEODES_KEY = "replay-geodes-key"


def multihash_sha256(path: Path) -> str:
    """The sha256 multihash of a file (hex), as STAC ``file:checksum`` writes it."""
    import hashlib

    h = hashlib.sha256(path.read_bytes()).hexdigest()
    return "1220" + h


def build_samples(data_dir: str | Path, out_dir: str | Path) -> dict[str, Path]:
    """Lay out the files the sample catalogue serves, under ``out_dir``:

    * ``s2/<SAFE>/...``: the bundled Sentinel-2 L2A sample (T29UNU) with its JP2 bands
      re-encoded as cloud-optimised GeoTIFFs (same pixels and georeferencing) and its real
      ``MTD_MSIL2A.xml`` / ``MTD_TL.xml``, as a COG provider serves them;
    * ``landsat/<id>/...``: the bundled Landsat 8 C2 L2 sample files as they are;
    * ``archives/<SAFE>.zip``: the same SAFE as a zip, as an archive provider serves it;
    * ``archives/<MUSCATE>.zip``: the MUSCATE (MAJA) L2A sample of T38KPD zipped, as GEODES
      serves THEIA products.
    """
    import shutil

    import rasterio
    from rasterio.shutil import copy as rio_copy

    data_dir, out_dir = Path(data_dir), Path(out_dir)
    safe = data_dir / "safe" / S2_SAMPLE
    s2 = out_dir / "s2" / S2_SAMPLE
    if not (s2 / "MTD_MSIL2A.xml").exists():
        for src in safe.rglob("*"):
            if not src.is_file():
                continue
            rel = src.relative_to(safe)
            dest = s2 / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if src.suffix.lower() == ".jp2" and "IMG_DATA" in rel.parts:
                with rasterio.Env(GDAL_NUM_THREADS="1"):
                    rio_copy(str(src), str(dest.with_suffix(".tif")), driver="COG",
                             compress="DEFLATE", blocksize=64, overview_resampling="nearest")
            else:
                shutil.copyfile(src, dest)
    ls = out_dir / "landsat" / LANDSAT_SAMPLE
    if not ls.exists():
        shutil.copytree(data_dir / "landsat" / LANDSAT_SAMPLE, ls)
    arch = out_dir / "archives" / (S2_SAMPLE.removesuffix(".SAFE") + ".zip")
    if not arch.exists():
        _zip_folder(safe, S2_SAMPLE, arch)
    muscate = data_dir / "muscate" / "S2_MAJA" / "T38KPD" / MUSCATE_SAMPLE
    march = out_dir / "archives" / f"{MUSCATE_SAMPLE}.zip"
    if not march.exists():
        _zip_folder(muscate, MUSCATE_SAMPLE, march)
    return {"s2": s2, "landsat": ls, "archive": arch, "muscate": march,
            "muscate_dir": muscate}


def _zip_folder(folder: Path, name: str, archive: Path) -> None:
    """``archive``: the files of ``folder`` under the top folder ``name``, stored (the way
    providers zip products), written under a temporary name and renamed when complete."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    tmp = archive.with_suffix(".tmp")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as z:
        for src in sorted(folder.rglob("*")):
            if src.is_file():
                z.write(src, f"{name}/{src.relative_to(folder).as_posix()}")
    tmp.replace(archive)


def _s2_sample_item(template: dict, s2: Path, base: str, prefix: str) -> dict:
    """An Earth Search ``sentinel-2-c1-l2a`` item describing the S2 sample: the recorded item
    ``template``'s structure and fields, with the sample's identity, footprint and files."""
    import rasterio
    from lxml import etree
    from odc.geo.geom import box

    item = copy.deepcopy(template)
    mtd = etree.parse(str(s2 / "MTD_MSIL2A.xml"))
    tl_path = next(s2.glob("GRANULE/*/MTD_TL.xml"))
    start = mtd.findtext(".//PRODUCT_START_TIME")
    cloud = float(mtd.findtext(".//Cloud_Coverage_Assessment"))
    img = {p.stem.split("_")[-2]: p for p in s2.glob("GRANULE/*/IMG_DATA/R60m/*.tif")}
    img["SCL"] = next(s2.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.tif"))
    with rasterio.open(img["B04"]) as src:
        fp = box(*src.bounds, crs=str(src.crs)).to_crs("EPSG:4326")
        epsg = src.crs.to_epsg()
    common = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04",
              "rededge1": "B05", "rededge2": "B06", "rededge3": "B07", "nir": "B08",
              "nir08": "B8A", "nir09": "B09", "swir16": "B11", "swir22": "B12", "scl": "SCL",
              "aot": "AOT"}
    assets = {}
    for key, a in item["assets"].items():
        if key in common and common[key] in img:
            f = img[common[key]]
            with rasterio.open(f) as src:
                a = {**a, "href": f"{base}/{prefix}/{f.relative_to(s2.parent).as_posix()}",
                     "proj:shape": [src.height, src.width],
                     "proj:transform": list(src.transform)[:6], "gsd": abs(src.transform.a),
                     "file:size": f.stat().st_size, "file:checksum": multihash_sha256(f)}
            if "raster:bands" in a:
                a["raster:bands"] = [{**a["raster:bands"][0],
                                      "spatial_resolution": abs(src.transform.a)}]
            assets[key] = a
        elif key in ("product_metadata", "granule_metadata"):
            f = s2 / "MTD_MSIL2A.xml" if key == "product_metadata" else tl_path
            assets[key] = {**a, "href": f"{base}/{prefix}/{f.relative_to(s2.parent).as_posix()}",
                           "file:size": f.stat().st_size, "file:checksum": multihash_sha256(f)}
    item["assets"] = assets
    item["id"] = "S2A_T29UNU_20221005T115411_L2A"
    item["geometry"] = fp.json
    item["bbox"] = list(fp.boundingbox)
    p = item["properties"]
    p.update({"datetime": start.replace(".000Z", "Z") if start.endswith(".000Z") else start,
              "eo:cloud_cover": cloud, "s2:product_uri": S2_SAMPLE,
              "s2:processing_baseline": "04.00", "grid:code": "MGRS-29UNU",
              "mgrs:utm_zone": 29, "mgrs:latitude_band": "U", "mgrs:grid_square": "NU",
              "proj:epsg": epsg, "platform": "sentinel-2a",
              "earthsearch:s3_path": None, "s2:granule_id": tl_path.parent.name})
    p = {k: v for k, v in p.items() if v is not None}
    item["properties"] = p
    item["links"] = [lk for lk in item.get("links", []) if lk.get("rel") in ("license",)]
    # the storage extension describes the recorded S3 buckets, not this server
    item["stac_extensions"] = [e for e in item.get("stac_extensions", []) if "storage" not in e]
    for a in item["assets"].values():
        for k in [k for k in a if k.startswith("storage:")]:
            del a[k]
    return item


def sample_apis(data_dir: str | Path, samples: dict[str, Path], server: ReplayServer
                ) -> dict[str, ReplayApi]:
    """The replayed catalogues over the sample files (see :func:`build_samples`):

    * ``earth-search``: the recorded Earth Search items (sentinel-2-l2a, -c1-l2a, -l1c,
      landsat-c2-l2, asset hrefs left as recorded) plus the S2 sample item;
    * ``planetary-computer``: the 13 recorded Planetary Computer items of tile 35MNM
      (SAS-signed assets) plus the S2 sample as a Planetary Computer item (signed);
    * ``usgs``: the recorded USGS STAC item of the Landsat sample, its hrefs on this server;
    * ``cdse``: the S2 sample as a zipped SAFE behind OAuth2 (user ``demo``/``demo``);
    * ``geodes``: the recorded GEODES item (PEPS_S2_L1C, T14ULD; its archive is not served)
      plus the MUSCATE sample of T38KPD as a GEODES item of MUSCATE_SENTINEL2_SENTINEL2_L2A
      (the recorded item's structure: asset keyed by file name, size and MD5 in its
      description, ``start_datetime`` the sensing time), search and files behind the API key
      :data:`GEODES_KEY` (header ``X-API-Key``).
    """
    data = Path(data_dir) / "acquire"
    base = server.url
    apis: dict[str, ReplayApi] = {}

    def items(name: str) -> list[dict]:
        return json.loads((data / name).read_text())["features"]

    es_c1 = items("earth-search_v1_sentinel-2-c1-l2a.json")
    s2_item = _s2_sample_item(es_c1[0], samples["s2"], base, "files/s2")
    apis["earth-search"] = ReplayApi(
        items=items("earth-search_v1_sentinel-2-l2a.json") + es_c1
        + items("earth-search_v1_sentinel-2-l1c.json")
        + items("earth-search_v1_landsat-c2-l2.json") + [s2_item])
    pc = items("planetary-computer_sentinel-2-l2a_35MNM.geojson")
    pc_sample = copy.deepcopy(s2_item)
    pc_sample["assets"] = {({"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04",
                             "rededge1": "B05", "rededge2": "B06", "rededge3": "B07",
                             "nir08": "B8A", "nir09": "B09", "swir16": "B11", "swir22": "B12",
                             "scl": "SCL", "aot": "AOT", "product_metadata": "product-metadata",
                             "granule_metadata": "granule-metadata"}[k]):
                           {**a, "href": a["href"].replace(f"{base}/files/",
                                                           f"{base}/planetary-computer/files/")}
                           for k, a in s2_item["assets"].items()}
    pc_sample["id"] = "S2A_MSIL2A_20221005T115411_R023_T29UNU_20221005T164454"
    pc_sample["collection"] = "sentinel-2-l2a"
    pc_sample["properties"] = {**pc_sample["properties"], "s2:mgrs_tile": "29UNU"}
    apis["planetary-computer"] = ReplayApi(items=pc + [pc_sample], auth="sas")
    ls_item = json.loads((samples["landsat"] / f"{LANDSAT_SAMPLE}_SR_stac.json").read_text())
    ls_item = rewrite_hrefs(ls_item, lambda k, a: (
        f"{base}/files/landsat/{LANDSAT_SAMPLE}/{Path(urlsplit(a['href']).path).name}"
        if a["href"].endswith((".TIF", ".txt", ".xml", ".json")) and k != "index"
        # the bundled sample was trimmed upstream: only the files it has are listed
        and (samples["landsat"] / Path(urlsplit(a["href"]).path).name).exists() else None))
    # USGS splits a Level-2 scene into an SR item and an ST item; the Landsat reader wants
    # the surface temperature band too: the ST item's ST_B10 asset joins the SR item
    st = json.loads((samples["landsat"] / f"{LANDSAT_SAMPLE}_ST_stac.json").read_text())
    for k, a in st["assets"].items():
        if a["href"].endswith("_ST_B10.TIF"):
            ls_item["assets"][k] = {**a, "href": f"{base}/files/landsat/{LANDSAT_SAMPLE}/"
                                    f"{Path(urlsplit(a['href']).path).name}"}
    ls_item["collection"] = "landsat-c2l2-sr"
    ls_item["properties"]["platform"] = "landsat-8"
    apis["usgs"] = ReplayApi(items=[ls_item])
    arch = samples["archive"]
    cd_item = copy.deepcopy(s2_item)
    cd_item["id"] = S2_SAMPLE.removesuffix(".SAFE")
    cd_item["collection"] = "sentinel-2-l2a"
    cd_item["properties"] = {**cd_item["properties"], "s2:mgrs_tile": "29UNU"}
    cd_item["assets"] = {"Product": {
        "href": f"{base}/cdse/files/archives/{arch.name}", "type": "application/zip",
        "roles": ["data", "archive"], "title": "Zipped product",
        "file:size": arch.stat().st_size, "file:checksum": multihash_sha256(arch)}}
    apis["cdse"] = ReplayApi(items=[cd_item], auth="oauth2", users={"demo": "demo"})
    peps = items("geodes_PEPS_S2_L1C_search.json")
    apis["geodes"] = ReplayApi(items=peps + [_geodes_muscate_item(
        peps[0], samples["muscate"], samples["muscate_dir"], f"{base}/geodes/files/archives")],
        auth="apikey", apikey=GEODES_KEY)
    for name, api in apis.items():
        server.add_api(name, api)
    server.files_root = samples["s2"].parent.parent
    return apis


def _geodes_muscate_item(template: dict, archive: Path, folder: Path, base: str) -> dict:
    """A GEODES item for the zipped MUSCATE sample, shaped as the recorded one."""
    import hashlib

    import rasterio
    from lxml import etree
    from rasterio.warp import transform_bounds

    mtd = etree.parse(str(next(folder.glob("*_MTD_ALL.xml"))))

    def text(tag: str) -> str:
        return mtd.findtext(f".//{tag}").strip()

    with rasterio.open(next(folder.glob("*_FRE_STACK.tif"))) as src:
        w, s, e, n = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    item = {k: copy.deepcopy(v) for k, v in template.items()
            if k in ("stac_version", "stac_extensions", "type", "links")}
    sensed = text("ACQUISITION_DATE")
    cloud = mtd.find(".//QUALITY_INDEX[@name='CloudPercent']")
    item.update({
        "id": f"URN:FEATURE:DATA:gdh:{md5[:8]}-{md5[8:12]}-{md5[12:16]}-{md5[16:20]}-"
              f"{md5[20:]}:V1",
        "collection": "MUSCATE_SENTINEL2_SENTINEL2_L2A",
        "bbox": [w, s, e, n],
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n],
                                                         [w, s]]]},
        "properties": {
            "grid:code": text("GEOGRAPHICAL_ZONE"), "platform": "S2A", "instrument": "MSI",
            "identifier": text("PRODUCT_ID"), "processing:level": "L2A",
            "start_datetime": sensed, "end_datetime": sensed,
            "datetime": text("PRODUCTION_DATE"),  # GEODES: publication, not sensing
            **({"eo:cloud_cover": float(cloud.text)} if cloud is not None else {}),
        },
        "assets": {archive.name: {
            "href": f"{base}/{archive.name}", "title": archive.name, "type": "application/zip",
            "roles": ["data"],
            "description": f"File size: {archive.stat().st_size} bytes\n\nIs reference: "
                           f"false\n\nIs online: true\n\nDatatype: RAWDATA\n\n"
                           f"Checksum MD5: {md5}"}},
    })
    return item


__all__ += ["build_samples", "multihash_sha256", "sample_apis"]
