"""The service's own routes beside the STAC API: asset downloads and the account page."""

from __future__ import annotations

import mimetypes
import os

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .accounts import AccountError, Accounts, DownloadSlots, User
from .assets import NotServable, open_in_store, parse_range, stream_fd
from .items import store_path_of

__all__ = ["account_router", "asset_router", "start_download"]


async def start_download(accounts: Accounts, slots: DownloadSlots, user: User, nbytes: int):
    """Check the quota and take a download slot; returns the function that ends the
    download (counts the bytes sent and frees the slot)."""
    await run_in_threadpool(accounts.check_quota, user, nbytes)
    slots.acquire(user)
    done = [False]

    def finish(sent: int) -> None:
        if done[0]:
            return
        done[0] = True
        slots.release(user)
        try:
            accounts.add_usage(user.name, sent)
        except Exception:  # noqa: BLE001 -- a usage row lost is better than a crash here
            pass

    return finish


def asset_router(settings, auth, accounts: Accounts, slots: DownloadSlots, published_item):
    router = APIRouter(tags=["Downloads"])
    root = os.path.abspath(settings.store)

    @router.api_route("/assets/{collection_id}/{item_id}/{asset_key}", methods=["GET", "HEAD"],
                      summary="Download one file of a published item (HTTP Range supported)",
                      responses={206: {"description": "Part of the file"},
                                 401: {"description": "No or bad credentials"},
                                 404: {"description": "No such published file"},
                                 416: {"description": "Range outside the file"},
                                 429: {"description": "Quota or concurrency limit"}})
    async def get_asset(collection_id: str, item_id: str, asset_key: str, request: Request):
        user = await auth.download_user(request)
        item = await published_item(collection_id, item_id)
        asset = (item or {}).get("assets", {}).get(asset_key)
        rel = store_path_of(asset) if isinstance(asset, dict) else None
        if rel is None:
            raise HTTPException(404, f"no file {asset_key!r} in a published item "
                                     f"{collection_id}/{item_id}")
        try:
            fd, size = await run_in_threadpool(open_in_store, root, rel)
        except NotServable:
            raise HTTPException(404, f"file {asset_key!r} of {collection_id}/{item_id} is not "
                                     "in the store") from None
        try:
            rng = parse_range(request.headers.get("range"), size)
        except ValueError:
            os.close(fd)
            raise HTTPException(416, f"range {request.headers.get('range')!r} outside a file of "
                                     f"{size} bytes", headers={"Content-Range": f"bytes */{size}"})
        start, end = rng if rng else (0, size - 1)
        length = max(0, end - start + 1)
        headers = {"Accept-Ranges": "bytes", "Content-Length": str(length),
                   "Content-Disposition": f'attachment; filename="{rel.name}"'}
        if rng:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        mtype = asset.get("type") or mimetypes.guess_type(rel.name)[0] or \
            "application/octet-stream"
        status = 206 if rng else 200
        if request.method == "HEAD":
            os.close(fd)
            return StreamingResponse(iter(()), status_code=status, headers=headers,
                                     media_type=mtype)
        try:
            finish = await start_download(accounts, slots, user, length)
        except BaseException:
            os.close(fd)
            raise
        return StreamingResponse(stream_fd(fd, start, end, finish), status_code=status,
                                 headers=headers, media_type=mtype)

    return router


def account_router(auth, accounts: Accounts, slots: DownloadSlots):
    router = APIRouter(tags=["Account"])

    @router.get("/account", summary="Who the token is, and what is left of its quota")
    async def account(request: Request):
        user = await auth.user(request)
        used = await run_in_threadpool(accounts.used_today, user.name)
        return {"user": user.name, "origin": user.origin,
                "quota_bytes_per_day": user.quota_bytes_per_day, "bytes_today": used,
                "max_concurrent_downloads": user.max_concurrent,
                "active_downloads": slots.active(user.name)}

    return router


__all__ += ["AccountError"]
