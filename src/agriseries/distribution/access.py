"""Who may see what: the one access check of every route that reveals a product.

The STAC API (search, collections, items), the asset downloads, the basket and the web
portal's tiles, pixel series, quicklooks and map layers all decide through one
:class:`Access` object:

* **reading** (search, browse, the portal's pictures and values): open when search is public
  (``ServiceSettings.public_search``); otherwise a user is needed: no credential, an unknown,
  forged or revoked token is a 401, a revoked user a 403 (:meth:`Access.reader`);
* **downloading** a file: always a user (API token, single sign-on JWT or signed URL;
  :meth:`Access.downloader`);
* a product exists for a request only when it is **published**: it is looked up in the
  catalogue by id (:meth:`Access.item`, :meth:`Access.item_by_id`), never in the store, so an
  unknown or unpublished product is a 404 before any file of the store is opened;
* a **file** is one asset of a published item: the store-relative path the publisher wrote
  for it, opened component by component below the store root without following links
  (:func:`~.assets.open_in_store`); ``..``, an absolute path, a link or anything but a
  regular file is a 404 (:meth:`Access.open`, :meth:`Access.path`).

The credential is checked before the catalogue is asked, so a request without the right to
read learns nothing about which products exist. Downloads (``/assets``, the basket) ask the
catalogue at every request: a withdrawn product is a 404 as soon as the catalogue has dropped
it. The portal's look-ups by product id (:meth:`Access.item_by_id`: a map asks dozens of
tiles of one product a second, and a catalogue search costs each of them tens of
milliseconds) are remembered, but only while the catalogue has not changed: on the embedded
catalogue the product is remembered with the identity (inode, modification time, size) of
its collection's file as it was before the look-up, and a hit whose file has been replaced
or removed since (a withdrawal, a republication) is looked up again; a pgstac catalogue has
no such cheap mark, so nothing is remembered there. ``ServiceSettings.collections_reload_s``
(2 s by default; 0: never remember) bounds how long an entry lives anyway.
"""

from __future__ import annotations

import collections
import os
import secrets
import threading
import time
import urllib.parse
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool

from .accounts import User
from .assets import NotServable, open_in_store
from .items import store_path_of

__all__ = ["Access", "NotPublished", "INTERNAL_HEADER"]

INTERNAL_HEADER = "x-agriseries-internal"
MAX_SEARCH = 100_000
SIZE_CACHE = 200_000  # file sizes remembered (Access.size), about 40 MB at most


class NotPublished(HTTPException):
    """A product or file that is not published (answered 404, with the reason)."""

    def __init__(self, detail: str) -> None:
        super().__init__(404, detail)


class Access:
    """The service's access rules (see the module docstring).

    Parameters
    ----------
    settings
        The :class:`~.settings.ServiceSettings` (``public_search``, ``store``).
    auth
        The :class:`~.auth.Authenticator` of the service.
    internal_get, internal_post
        Calls of the service's own STAC API that bypass the reading check (the check is
        made by the caller, before).
    internal_key
        The secret header value that marks those internal calls.
    """

    def __init__(self, settings, auth, internal_get, internal_post, internal_key: str) -> None:
        self.settings = settings
        self.auth = auth
        self.internal_get = internal_get
        self.internal_post = internal_post
        self.internal_key = internal_key
        self.root = os.path.abspath(settings.store)
        self.ttl_s = float(getattr(settings, "collections_reload_s", 0) or 0)
        self._found: collections.OrderedDict[str, tuple[float, dict, tuple]] = \
            collections.OrderedDict()
        self._lock = threading.Lock()
        self._sizes: collections.OrderedDict[tuple, int] = collections.OrderedDict()
        self._folder = (Path(settings.catalog_folder) if getattr(settings, "backend", None)
                        == "geoparquet" and self.ttl_s > 0 else None)

    # ------------------------------------------------------------------ who

    def is_internal(self, request) -> bool:
        key = request.headers.get(INTERNAL_HEADER, "")
        return bool(key) and secrets.compare_digest(key, self.internal_key)

    async def reader(self, request) -> User | None:
        """The user allowed to read (search, browse, look at a product), ``None`` when search
        is public; raises :class:`~.accounts.AccountError` (401/403) otherwise."""
        if self.settings.public_search or self.is_internal(request):
            return None
        return await self.auth.user(request)

    async def downloader(self, request) -> User:
        """The user of a download (a credential is always needed; signed URLs too)."""
        return await self.auth.download_user(request)

    # ------------------------------------------------------------------ what

    async def published(self, collection_id: str, item_id: str) -> dict | None:
        """The published item ``collection_id/item_id`` (store-relative hrefs), or ``None``."""
        q = urllib.parse.quote
        r = await self.internal_get(f"/collections/{q(collection_id, safe='')}/items/"
                                    f"{q(item_id, safe='')}")
        if r.status_code != 200:
            return None
        doc = r.json()
        return doc if doc.get("id") == item_id else None

    async def item(self, collection_id: str, item_id: str) -> dict:
        """As :meth:`published`; raises :class:`NotPublished` (404)."""
        doc = await self.published(collection_id, item_id)
        if doc is None:
            raise NotPublished(f"no published item {collection_id}/{item_id}")
        return doc

    async def item_by_id(self, item_id: str) -> dict:
        """The published item of a product id, whatever its collection; raises
        :class:`NotPublished` (404) for an unknown or unpublished one."""
        if not item_id or len(item_id) > 300 or any(c in item_id for c in "/\\\x00"):
            raise NotPublished(f"{item_id!r} is not the id of a published product")
        now = time.monotonic()
        with self._lock:
            hit = self._found.get(item_id)
        if hit is not None and now - hit[0] < self.ttl_s and \
                self._file_mark(hit[1].get("collection")) == hit[2]:
            return hit[1]
        marks = self._file_marks()  # before the look-up: a change meanwhile is seen next time
        r = await self.internal_post("/search", {"ids": [item_id], "limit": 2})
        if r.status_code == 200:
            for f in r.json().get("features", []):
                if f.get("id") == item_id:
                    mark = marks.get(f.get("collection"))
                    if mark is not None:
                        with self._lock:
                            self._found[item_id] = (now, f, mark)
                            self._found.move_to_end(item_id)
                            while len(self._found) > 1024:
                                self._found.popitem(last=False)
                    return f
        raise NotPublished(f"product {item_id} is not published")

    def _file_marks(self) -> dict[str, tuple]:
        """Collection -> mark (:meth:`_mark`) of its file in the embedded catalogue (empty
        for pgstac, or when nothing is remembered): taken before a look-up, whose collection
        is not known yet."""
        if self._folder is None:
            return {}
        out = {}
        try:
            with os.scandir(self._folder) as it:
                for e in it:
                    if e.name.endswith(".parquet") and not e.name.startswith("."):
                        out[e.name[:-len(".parquet")]] = self._mark(
                            e.stat(follow_symlinks=False))
        except OSError:
            return {}
        return out

    def _file_mark(self, collection: str | None) -> tuple | None:
        """The mark of one collection's file now (``None``: no such file, or pgstac)."""
        if self._folder is None or not collection or "/" in collection or \
                collection.startswith("."):
            return None
        try:
            return self._mark(os.stat(self._folder / f"{collection}.parquet",
                                      follow_symlinks=False))
        except OSError:
            return None

    @staticmethod
    def _mark(st: os.stat_result) -> tuple:
        """What tells one version of a collection's file from another: the publisher never
        writes a file in place, it writes a new one (a new inode while the old one is still
        there) and renames it over the old, so the inode changes at every change; the
        modification time (ns) and the size are there too, should an inode number be
        reused after the old file is gone."""
        return st.st_ino, st.st_dev, st.st_mtime_ns, st.st_size

    async def search(self, body: dict[str, Any], limit: int = MAX_SEARCH) -> list[dict]:
        """Every published item a STAC search finds (all pages; store-relative hrefs).

        Raises
        ------
        HTTPException
            The search is refused (its status and reason), or finds more than ``limit``.
        """
        search = {k: v for k, v in body.items() if k not in ("limit", "token", "offset")}
        search["limit"] = 500
        out: list[dict] = []
        page: dict | None = search
        while page is not None:
            r = await self.internal_post("/search", page)
            if r.status_code != 200:
                try:
                    detail = r.json()
                except ValueError:
                    detail = r.text
                raise HTTPException(r.status_code if 400 <= r.status_code < 500 else 502,
                                    f"search failed: {detail}")
            doc = r.json()
            out += doc.get("features", [])
            if len(out) > limit:
                raise HTTPException(400, f"the search finds more than {limit} items: narrow "
                                         "it (dates, area, collection)")
            nxt = [ln for ln in doc.get("links", []) if ln.get("rel") == "next"]
            page = nxt[0].get("body") if nxt and nxt[0].get("method", "GET") == "POST" else None
            if page is not None and nxt[0].get("merge"):
                page = {**search, **page}
            if nxt and page is None:
                raise HTTPException(502, "search paging: expected a POST next link")
        return out

    async def published_many(self, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
        """The published items of many ``(collection, id)`` pairs, with one catalogue search
        per collection and 500 ids (not one look-up per item); unpublished ones are left
        out."""
        by_coll: dict[str, list[str]] = {}
        for c, i in dict.fromkeys(pairs):
            by_coll.setdefault(c, []).append(i)
        out: dict[tuple[str, str], dict] = {}
        for c, ids in sorted(by_coll.items()):
            for k in range(0, len(ids), 500):
                chunk = ids[k:k + 500]
                try:
                    found = await self.search({"collections": [c], "ids": chunk})
                except HTTPException as e:
                    if 400 <= e.status_code < 500:  # a collection the catalogue refuses
                        continue
                    raise
                for f in found:
                    if f.get("collection") == c and f.get("id") in chunk:
                        out[(c, f["id"])] = f
        return out

    # ------------------------------------------------------------------ files

    def rel_path(self, item: dict, key: str) -> PurePosixPath:
        """The store-relative path of asset ``key`` of a published item (404 if none)."""
        asset = (item.get("assets") or {}).get(key)
        rel = store_path_of(asset) if isinstance(asset, dict) else None
        if rel is None:
            raise NotPublished(f"no file {key!r} in the published item {item.get('id')}")
        return rel

    def open(self, item: dict, key: str) -> tuple[int, int, PurePosixPath]:
        """Open the file of asset ``key`` of a published item: ``(fd, size, rel)``; raises
        :class:`NotPublished` (404) when it is not a regular file below the store root
        reached without links."""
        rel = self.rel_path(item, key)
        try:
            fd, size = open_in_store(self.root, rel)
        except NotServable:
            raise NotPublished(f"file {key!r} of {item.get('id')} is not in the store") from None
        return fd, size, rel

    def size(self, item: dict, key: str) -> int:
        """The size of the file of asset ``key`` of a published item, without opening it
        each time: the asset's ``file:size`` when the item has one, else the size found by
        :meth:`open` the first time, remembered for that file of that version of the item
        (its ``processing:datetime``: a reprocessed product is a new version). Raises
        :class:`NotPublished` as :meth:`open` does. Downloads still open the file with every
        check (:meth:`open`); a file removed from the store since is a 404 there."""
        asset = (item.get("assets") or {}).get(key)
        declared = asset.get("file:size") if isinstance(asset, dict) else None
        if isinstance(declared, int) and not isinstance(declared, bool) and declared >= 0:
            self.rel_path(item, key)
            return declared
        rel = self.rel_path(item, key)
        props = item.get("properties") or {}
        ck = (rel.as_posix(), str(item.get("id")), str(props.get("processing:datetime")),
              str(props.get("updated")))
        with self._lock:
            hit = self._sizes.get(ck)
            if hit is not None:
                self._sizes.move_to_end(ck)
                return hit
        fd, size, _ = self.open(item, key)
        os.close(fd)
        with self._lock:
            self._sizes[ck] = size
            while len(self._sizes) > SIZE_CACHE:
                self._sizes.popitem(last=False)
        return size

    def path(self, item: dict, key: str) -> Path:
        """The checked absolute path of asset ``key`` of a published item (as :meth:`open`,
        for readers that open the file themselves: GDAL)."""
        fd, _, rel = self.open(item, key)
        os.close(fd)
        return Path(self.root, *rel.parts)

    async def apath(self, item: dict, key: str) -> Path:
        return await run_in_threadpool(self.path, item, key)
