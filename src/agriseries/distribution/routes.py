"""The service's own routes beside the STAC API: asset downloads and the account page."""

from __future__ import annotations

import mimetypes
import os

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from .accounts import AccountError, Accounts, DownloadSlots, User
from .assets import parse_range, stream_fd

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


def asset_router(access, accounts: Accounts, slots: DownloadSlots):
    """The download route; every check is :class:`~.access.Access`'s (a user, a published
    item, one of its files reached below the store root without links)."""
    router = APIRouter(tags=["Downloads"])

    @router.api_route("/assets/{collection_id}/{item_id}/{asset_key}", methods=["GET", "HEAD"],
                      summary="Download one file of a published item (HTTP Range supported)",
                      responses={206: {"description": "Part of the file"},
                                 401: {"description": "No or bad credentials"},
                                 404: {"description": "No such published file"},
                                 416: {"description": "Range outside the file"},
                                 429: {"description": "Quota or concurrency limit"}})
    async def get_asset(collection_id: str, item_id: str, asset_key: str, request: Request):
        user = await access.downloader(request)
        item = await access.item(collection_id, item_id)
        fd, size, rel = await run_in_threadpool(access.open, item, asset_key)
        asset = item["assets"][asset_key]
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
