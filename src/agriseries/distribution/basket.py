"""The basket: what a user collects to download, kept in the service database (it survives
a restart of the service).

Routes (all need a user):

* ``GET /basket``: the items in it;
* ``POST /basket/items`` ``{"items": [{"collection": C, "id": I}, ...]}``: add items;
* ``POST /basket/search`` with a STAC search body (``collections``, ``bbox`` or
  ``intersects``, ``datetime``, ``filter`` such as ``eo:cloud_cover < 20``...): add
  **every** item the search finds, all pages, in one call -- a whole time series;
* ``DELETE /basket/items/<collection>/<id>``, ``DELETE /basket``: remove one, empty it;
* ``GET /basket/archive.zip[?assets=B04,B08]``: everything as one ZIP archive, streamed
  as it is written (entries stored, not recompressed: COGs are compressed already; the
  memory used is a few chunks whatever the size; ZIP64 for large files), with each item's
  JSON beside its files;
* ``GET /basket/files.txt[?assets=...]``: one signed download URL per line, for
  ``wget -c -i`` or ``aria2c -c -i`` (which resume with HTTP Range);
  ``GET /basket/files`` the same list as JSON with names and sizes,
  ``GET /basket/files.meta4`` as a Metalink 4 file (names, sizes, URLs: ``aria2c -M``);
* ``POST /basket/links``: short-lived signed URLs of the archive and of the list
  (:data:`LINK_TTL_S`), which need no header: a web page hands them to the browser as a
  plain download (streamed to disk, never held in the page's memory).

The archive and the list take a bearer credential or such a signed URL.
"""

from __future__ import annotations

import io
import json
import os
import queue
import threading
import time
import urllib.parse
import zipfile
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import anyio
import sqlalchemy as sa
from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from .accounts import Accounts, DownloadSlots, User, basket_table
from .assets import CHUNK, open_in_store
from .items import served_item, store_path_of

__all__ = ["basket_router", "basket_table"]

MAX_SERIES = 100_000
LINK_TTL_S = 300  # lifetime of the signed archive / list URLs of POST /basket/links
ZIP_CHUNK = 64 * 1024  # the archive is sent in pieces of this size, at most 8 waiting


def _add(accounts: Accounts, user: str, pairs: list[tuple[str, str]]) -> int:
    if not pairs:
        return 0
    now = time.time()
    with accounts.transaction("add to basket", write=True) as conn:
        stmt = accounts._insert(basket_table).on_conflict_do_nothing()
        rows = [{"user_name": user, "collection": c, "item_id": i, "added_at": now}
                for c, i in dict.fromkeys(pairs)]
        before = conn.execute(sa.select(sa.func.count()).select_from(basket_table)
                              .where(basket_table.c.user_name == user)).scalar_one()
        for k in range(0, len(rows), 500):
            conn.execute(stmt, rows[k:k + 500])
        after = conn.execute(sa.select(sa.func.count()).select_from(basket_table)
                             .where(basket_table.c.user_name == user)).scalar_one()
    return int(after - before)


def _list(accounts: Accounts, user: str) -> list[dict[str, Any]]:
    with accounts.transaction("read basket", write=False) as conn:
        rows = conn.execute(sa.select(basket_table.c.collection, basket_table.c.item_id,
                                      basket_table.c.added_at)
                            .where(basket_table.c.user_name == user)
                            .order_by(basket_table.c.collection, basket_table.c.item_id)).all()
    return [{"collection": c, "id": i,
             "added": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))} for c, i, t in rows]


def _remove(accounts: Accounts, user: str, collection: str | None = None,
            item_id: str | None = None) -> int:
    with accounts.transaction("remove from basket", write=True) as conn:
        q = sa.delete(basket_table).where(basket_table.c.user_name == user)
        if collection is not None:
            q = q.where(basket_table.c.collection == collection, basket_table.c.item_id == item_id)
        return int(conn.execute(q).rowcount)


class _QueueWriter(io.RawIOBase):
    """A write-only, unseekable file whose bytes go into a bounded queue."""

    def __init__(self, q: queue.Queue, cancelled: threading.Event) -> None:
        self.q, self.cancelled = q, cancelled
        self.buf = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        self.buf.extend(b)
        if len(self.buf) >= ZIP_CHUNK:
            self._push(bytes(self.buf))
            self.buf.clear()
        return len(b)

    def _push(self, data: bytes) -> None:
        while True:
            if self.cancelled.is_set():
                raise OSError("download cancelled by the client")
            try:
                self.q.put(data, timeout=0.5)
                return
            except queue.Full:
                continue

    def flush(self) -> None:
        if self.buf:
            self._push(bytes(self.buf))
            self.buf.clear()


def _zip_producer(entries: list[dict[str, Any]], root: str, q: queue.Queue,
                  cancelled: threading.Event) -> None:
    sink = _QueueWriter(q, cancelled)
    try:
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
            for e in entries:
                if "data" in e:
                    zf.writestr(e["name"], e["data"])
                    continue
                fd, size = open_in_store(root, e["path"])
                try:
                    zi = zipfile.ZipInfo(e["name"], time.gmtime(os.fstat(fd).st_mtime)[:6])
                    zi.compress_type = zipfile.ZIP_STORED
                    zi.file_size = size
                    with zf.open(zi, "w", force_zip64=size > 2**31) as w:
                        pos = 0
                        while pos < size:
                            data = os.pread(fd, min(CHUNK, size - pos), pos)
                            if not data:
                                raise OSError(f"{e['path']}: file shrank while being sent")
                            w.write(data)
                            pos += len(data)
                finally:
                    os.close(fd)
        sink.flush()
        sink._push(b"")  # end of the archive
    except BaseException as exc:  # noqa: BLE001 -- the consumer raises it
        if not cancelled.is_set():
            try:
                q.put(exc, timeout=5)
            except queue.Full:
                pass


def metalink(files: list[dict[str, Any]]) -> bytes:
    """A Metalink 4 document (RFC 5854) of ``files`` (``name``, ``size``, ``url``, and
    ``checksum``: a STAC ``file:checksum`` multihash, written as the file's SHA-256 when it
    is one): what ``aria2c -M`` downloads, resumes and checks."""
    from xml.etree import ElementTree as ET

    ns = "urn:ietf:params:xml:ns:metalink"
    ET.register_namespace("", ns)
    root = ET.Element(f"{{{ns}}}metalink")
    ET.SubElement(root, f"{{{ns}}}generator").text = "agriseries"
    ET.SubElement(root, f"{{{ns}}}published").text = time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for f in files:
        el = ET.SubElement(root, f"{{{ns}}}file", name=f["name"])
        ET.SubElement(el, f"{{{ns}}}size").text = str(int(f["size"]))
        mh = f.get("checksum")
        if isinstance(mh, str) and mh.startswith("1220") and len(mh) == 68:  # sha2-256
            ET.SubElement(el, f"{{{ns}}}hash", type="sha-256").text = mh[4:]
        ET.SubElement(el, f"{{{ns}}}url").text = f["url"]
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def basket_router(settings, auth, accounts: Accounts, slots: DownloadSlots, access):
    """The basket routes; what is published and which files may be read is decided by
    :class:`~.access.Access`."""
    router = APIRouter(prefix="/basket", tags=["Basket"])
    root = access.root

    async def _files(request: Request, user: User, assets: str | None,
                     opened: bool = False) -> list[dict[str, Any]]:
        """Every file of the basket: collection, id, key, path, name, size, item. The items
        are looked up in the catalogue in batches (:meth:`~.access.Access.published_many`:
        only published ones), the sizes come from :meth:`~.access.Access.size` (the item's
        ``file:size`` or a size remembered per file and item version), so a list of a large
        basket opens no file; ``opened``: open each one now (the archive, which reads them
        all anyway, leaves out what it could not open)."""
        keys = {k.strip() for k in assets.split(",") if k.strip()} if assets else None
        entries = await run_in_threadpool(_list, accounts, user.name)
        items = await access.published_many([(e["collection"], e["id"]) for e in entries])

        def sizes() -> list[dict[str, Any]]:
            out = []
            for entry in entries:
                item = items.get((entry["collection"], entry["id"]))
                if item is None:
                    continue  # unpublished since it was added
                for key, a in sorted(item.get("assets", {}).items()):
                    rel = store_path_of(a) if isinstance(a, dict) else None
                    if rel is None or (keys is not None and key not in keys):
                        continue
                    try:
                        if opened:
                            fd, size, rel = access.open(item, key)
                            os.close(fd)
                        else:
                            size = access.size(item, key)
                    except HTTPException:
                        continue
                    out.append({"collection": entry["collection"], "id": entry["id"],
                                "key": key, "path": rel,
                                "name": f"{entry['collection']}/{entry['id']}/{rel.name}",
                                "size": size, "item": item})
            return out

        return await run_in_threadpool(sizes)

    @router.get("", summary="The items in the basket")
    async def list_basket(request: Request):
        user = await auth.user(request)
        items = await run_in_threadpool(_list, accounts, user.name)
        return {"user": user.name, "count": len(items), "items": items}

    @router.post("/items", summary="Add items by id")
    async def add_items(request: Request, body: dict = Body(..., examples=[
            {"items": [{"collection": "agriseries-l2a", "id": "L2A_..."}]}])):
        user = await auth.user(request)
        items = body.get("items")
        if not isinstance(items, list) or not all(
                isinstance(x, dict) and isinstance(x.get("collection"), str)
                and isinstance(x.get("id"), str) for x in items):
            raise HTTPException(400, "expected {\"items\": [{\"collection\": ..., \"id\": ...}]}")
        found, missing = [], []
        known = await access.published_many([(x["collection"], x["id"]) for x in items])
        for x in items:
            if (x["collection"], x["id"]) in known:
                found.append((x["collection"], x["id"]))
            else:
                missing.append(x)
        added = await run_in_threadpool(_add, accounts, user.name, found)
        return {"added": added, "missing": missing}

    @router.post("/search", summary="Add every item a STAC search finds (a whole time series)")
    async def add_search(request: Request, body: dict = Body(..., examples=[
            {"collections": ["agriseries-l2a"], "datetime": "2018-06-01T00:00:00Z/2018-07-31T23:59:59Z",
             "bbox": [3.0, 50.8, 3.1, 50.9],
             "filter": {"op": "<", "args": [{"property": "eo:cloud_cover"}, 20]}}])):
        user = await auth.user(request)
        found = await access.search(body, limit=MAX_SERIES)
        pairs = [(f.get("collection"), f.get("id")) for f in found]
        pairs = [(c, i) for c, i in pairs if c and i]
        added = await run_in_threadpool(_add, accounts, user.name, pairs)
        return {"matched": len(pairs), "added": added}

    @router.delete("/items/{collection_id}/{item_id}", summary="Remove an item")
    async def remove_item(collection_id: str, item_id: str, request: Request):
        user = await auth.user(request)
        n = await run_in_threadpool(_remove, accounts, user.name, collection_id, item_id)
        if not n:
            raise HTTPException(404, f"{collection_id}/{item_id} is not in the basket")
        return {"removed": n}

    @router.delete("", summary="Empty the basket")
    async def clear(request: Request):
        user = await auth.user(request)
        return {"removed": await run_in_threadpool(_remove, accounts, user.name)}

    def _signed(request: Request, user: User, f: dict[str, Any], expires: int) -> str:
        q = urllib.parse.quote
        base = str(request.base_url).rstrip("/")
        url = f"{base}/assets/{q(f['collection'], safe='')}/{q(f['id'], safe='')}/{q(f['key'], safe='')}"
        path = urllib.parse.urlparse(url).path
        sig = accounts.sign(user.name, path, expires)
        return f"{url}?" + urllib.parse.urlencode({"user": user.name, "expires": expires,
                                                   "signature": sig})

    @router.get("/files", summary="The basket's files with signed download URLs (JSON)")
    async def files_json(request: Request, assets: str | None = None):
        user = await auth.user(request)
        exp = int(time.time()) + settings.signed_url_ttl_s
        files = await _files(request, user, assets)
        return {"count": len(files), "bytes": sum(f["size"] for f in files),
                "files": [{"name": f["name"], "size": f["size"], "collection": f["collection"],
                           "id": f["id"], "asset": f["key"],
                           "url": _signed(request, user, f, exp)} for f in files]}

    @router.post("/links", summary="Short-lived signed URLs of the archive and the list")
    async def links(request: Request):
        user = await auth.user(request)
        exp = int(time.time()) + LINK_TTL_S
        base = str(request.base_url).rstrip("/")
        out = {"expires": exp}
        for name, route in (("archive", "archive.zip"), ("list", "files.txt"),
                            ("metalink", "files.meta4")):
            url = f"{base}/basket/{route}"
            sig = accounts.sign(user.name, urllib.parse.urlparse(url).path, exp)
            out[name] = f"{url}?" + urllib.parse.urlencode({"user": user.name, "expires": exp,
                                                           "signature": sig})
        return out

    @router.get("/files.txt", summary="Signed download URLs, one per line (wget -c -i)",
                response_class=PlainTextResponse)
    async def files_txt(request: Request, assets: str | None = None):
        user = await access.downloader(request)
        exp = int(time.time()) + settings.signed_url_ttl_s
        files = await _files(request, user, assets)
        return PlainTextResponse("".join(_signed(request, user, f, exp) + "\n" for f in files),
                                 headers={"Content-Disposition":
                                          f'attachment; filename="basket-{user.name}.txt"'})

    @router.get("/files.meta4", summary="The download list as a Metalink 4 file (aria2c -M)",
                response_class=Response)
    async def files_metalink(request: Request, assets: str | None = None):
        user = await access.downloader(request)
        exp = int(time.time()) + settings.signed_url_ttl_s
        files = await _files(request, user, assets)
        doc = metalink([{"name": f["name"], "size": f["size"],
                         "url": _signed(request, user, f, exp),
                         "checksum": (f["item"]["assets"][f["key"]] or {}).get("file:checksum")}
                        for f in files])
        return Response(doc, media_type="application/metalink4+xml", headers={
            "Content-Disposition": f'attachment; filename="basket-{user.name}.meta4"'})

    @router.get("/archive.zip", summary="The whole basket as one streamed ZIP archive")
    async def archive(request: Request, assets: str | None = None):
        user = await access.downloader(request)
        files = await _files(request, user, assets, opened=True)
        base = str(request.base_url).rstrip("/")
        entries: list[dict[str, Any]] = []
        seen = set()
        for f in files:
            if (f["collection"], f["id"]) not in seen:
                seen.add((f["collection"], f["id"]))
                doc = served_item(json.loads(json.dumps(f["item"])), base)
                entries.append({"name": f"{f['collection']}/{f['id']}/{f['id']}.json",
                                "data": json.dumps(doc, indent=1).encode()})
            entries.append(f)
        if not files:
            raise HTTPException(404, "the basket has no file to download")
        total = sum(f["size"] for f in files)
        from .routes import start_download

        finish = await start_download(accounts, slots, user, total)
        q: queue.Queue = queue.Queue(maxsize=8)
        cancelled = threading.Event()
        threading.Thread(target=_zip_producer, args=(entries, root, q, cancelled),
                         name="agriseries-zip", daemon=True).start()

        async def body() -> AsyncIterator[bytes]:
            sent = 0
            try:
                while True:
                    data = await anyio.to_thread.run_sync(lambda: q.get(timeout=120))
                    if isinstance(data, BaseException):
                        raise data
                    if not data:
                        break
                    sent += len(data)
                    yield data
            finally:
                cancelled.set()
                finish(sent)

        return StreamingResponse(body(), media_type="application/zip", headers={
            "Content-Disposition": f'attachment; filename="basket-{user.name}.zip"'})

    return router
