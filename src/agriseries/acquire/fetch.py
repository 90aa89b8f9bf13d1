"""Fetch acquisitions into the inbox: idempotent, crash-safe, verified.

Each acquisition is a job of the job store (processor ``acquire``, keyed by its
provider-neutral id), so a second run skips what a first one fetched, and two runs never
fetch the same acquisition at once. Its files are built in a staging folder beside the
inbox (``.<inbox name>.partial/<acquisition id>/``, on the same file system) and the
finished entry is renamed into the inbox in one step, after every file was verified:

* COG providers, ``window`` mode: the product's metadata files whole, then each needed
  band cut to the site's area (:mod:`agriseries.acquire.windowed`), in the provider's own
  layout (:mod:`agriseries.acquire.layout`);
* ``whole`` mode: the product archive (SAFE zip) or every needed band file whole, resumed
  with ``Range`` and verified (size, ``file:checksum``, opens) by
  :meth:`~agriseries.acquire.http.ProviderSession.download`.

``kill -9`` at any point: the inbox holds complete entries only (the rename is atomic);
the staging folder keeps the files already complete and the ``.part`` of the one in flight,
so the next run resumes there and fetches nothing twice. A job left ``running`` by a dead
process of this host is given back at the start of the next run.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import socket
import traceback as tb
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Literal

from odc.geo.geom import Geometry

from ..core.errors import (
    AgriseriesError,
    DownloadError,
    FailureRecord,
    VerificationError,
    WithFailure,
)
from ..io.durable import fsync_path, fsync_tree
from .catalog import Acquisition, archive_key
from .http import HttpSettings, ProviderSession
from .layout import (
    MANIFEST,
    PlannedFile,
    basename,
    landsat_files,
    manifest_ok,
    s2_band_files,
    write_manifest,
)
from .providers import Provider, get_provider
from .verify import check_opens
from .windowed import read_window

__all__ = ["MANIFEST", "PROCESSOR", "FetchOptions", "FetchResult", "Fetcher", "acquire",
           "staging_root", "worker_id"]

#: The job-store processor name of acquisition jobs.
PROCESSOR = "acquire"

#: Sentinel-2 bands of each level (ESA names) fetched when the site names none.
S2_BANDS = {
    "L2A": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12"),
    "L1C": ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11",
            "B12"),
}
#: Layers fetched with the bands: the Sen2Cor scene classification (the mask) and AOT.
S2_QUALITY = {"L2A": ("SCL", "AOT"), "L1C": ()}
#: Bands an item of each level cannot lack (when they are among those fetched): the L2A's
#: scene classification (its mask); the bands the L2A processor's cloud tests need from an
#: L1C (blue, green, red, NIR, SWIR 1.6 um: ``agriseries.l2a.processor.REQUIRED_SCENE_BANDS``).
#: An item without one fails its fetch, so that the acquisition's next provider is tried,
#: rather than being fetched to fail later.
S2_NEEDED = {"L2A": ("SCL",), "L1C": ("B02", "B03", "B04", "B08", "B11")}


@dataclass(frozen=True)
class FetchOptions:
    """How acquisitions are fetched."""

    mode: Literal["auto", "window", "whole"] = "auto"
    """``auto``: the provider's own (COG providers by window, archives whole); ``window``:
    only the site's pixels; ``whole``: whole files."""
    bands: tuple[str, ...] | None = None
    """Sentinel-2 bands to fetch (ESA names); default every band of the level."""
    require_bands: bool = True
    """A band of ``bands`` the item lacks fails the fetch; ``False``: it is left out (the
    bands a site's products could use, fetched when the provider has them)."""
    area: Geometry | None = None
    """The area to cut windows to (any CRS); default the whole file."""
    snap_m: float = 60.0
    """Windows are snapped outwards to this lattice (m), common to the 10/20/60 m bands."""


@dataclass
class FetchResult(WithFailure):
    """What happened to one acquisition.

    ``failure`` (a :class:`~agriseries.core.errors.FailureRecord`) says why it failed
    (every provider's reason); ``error`` and ``traceback`` read it.
    """

    id: str
    status: str  # "fetched" | "skipped" | "failed"
    provider: str | None = None
    entry: str | None = None
    bytes: int = 0
    files: int = 0
    failure: FailureRecord | None = None

    def to_dict(self) -> dict:
        """JSON-friendly form (with ``error`` and ``error_type``, without the traceback)."""
        return {"id": self.id, "status": self.status, "provider": self.provider,
                "entry": self.entry, "bytes": self.bytes, "files": self.files,
                "error": self.error, "error_type": self.error_type}


def staging_root(inbox: Path) -> Path:
    """The staging folder of an inbox (a hidden sibling, same file system)."""
    inbox = Path(inbox)
    return inbox.parent / f".{inbox.name}.partial"


def _entry_name(acq: Acquisition, provider: Provider, whole_archive: bool) -> str:
    item = acq.item
    coll = provider.collection(acq.collection)
    if whole_archive:
        href = item.assets[archive_key(item, coll)].href
        name = basename(href)
        if name.lower().endswith(".zip"):
            return name
        return item.id.removesuffix(".SAFE") + ".zip"
    if acq.sensor.startswith("S2"):
        uri = item.properties.get("s2:product_uri")
        return uri if uri else f"{item.id}.SAFE"
    pid, _, _ = landsat_files({k: a.to_dict() for k, a in item.assets.items()})
    return pid


def _checksum(asset) -> str | None:
    """``file:checksum``, else the MD5 GEODES writes in the asset description (as a
    multihash)."""
    cs = asset.extra_fields.get("file:checksum")
    if cs:
        return cs
    m = re.search(r"Checksum MD5: ([0-9a-fA-F]{32})", asset.description or "")
    return f"d50110{m.group(1).lower()}" if m else None


class Fetcher:
    """Fetches acquisitions (see the module docstring); one :class:`ProviderSession` per
    provider, reused."""

    def __init__(self, inbox: str | Path, options: FetchOptions | None = None,
                 settings: HttpSettings | None = None,
                 endpoints: dict[str, dict[str, str]] | None = None,
                 on_bytes: Callable[[int], None] | None = None,
                 on_file: Callable[[str], None] | None = None) -> None:
        self.inbox = Path(inbox)
        self.staging = staging_root(self.inbox)
        self.options = options or FetchOptions()
        self.settings = settings or HttpSettings()
        self.endpoints = endpoints or {}
        self.on_bytes = on_bytes
        self.on_file = on_file
        self._sessions: dict[str, ProviderSession] = {}

    def session(self, name: str) -> ProviderSession:
        """The session of provider ``name``."""
        if name not in self._sessions:
            self._sessions[name] = ProviderSession(get_provider(name, self.endpoints.get(name)),
                                                   self.settings)
        return self._sessions[name]

    def close(self) -> None:
        """Close every session."""
        for s in self._sessions.values():
            s.close()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------
    def planned_entry(self, acq: Acquisition) -> str:
        """The inbox entry name ``acq`` will get."""
        prov = self.session(acq.provider).provider
        return _entry_name(acq, prov, self._whole_archive(acq, prov))

    def _whole_archive(self, acq: Acquisition, prov: Provider) -> bool:
        coll = prov.collection(acq.collection)
        return bool(archive_key(acq.item, coll)
                    and (prov.mode == "whole" or self.options.mode == "whole")
                    and self.options.mode != "window")

    def job_params(self, acq: Acquisition) -> dict:
        """The job-store parameters of the ``acquire`` job of ``acq``: what a production
        worker needs to fetch it as this fetcher would
        (:class:`~agriseries.production.stages.acquire.AcquireParams`, as JSON)."""
        from ..production.stages.acquire import AcquireParams

        o = self.options
        return AcquireParams(
            acquisition=acq.to_record(), inbox=str(self.inbox), mode=o.mode, bands=o.bands,
            require_bands=o.require_bands,
            area=o.area.to_crs("EPSG:4326").json if o.area is not None else None,
            snap_m=o.snap_m, endpoints=self.endpoints,
            read_timeout_s=self.settings.read_timeout_s,
            attempts=self.settings.attempts).to_json()

    def present(self, acq: Acquisition) -> Path | None:
        """The inbox entry of ``acq`` (or an alternative of it) when complete: a folder whose
        manifest lists its files with their sizes, or an archive whose directory reads (its
        bytes were verified when it was fetched; its members' CRCs are not read again at
        every look, which for a 1 GB SAFE zip would read it all at each poll of a watch)."""
        for a in (acq, *acq.alternatives):
            try:
                p = self.inbox / self.planned_entry(a)
            except (AgriseriesError, KeyError):
                continue
            if p.is_dir() and manifest_ok(p):
                return p
            if p.is_file():
                try:
                    check_opens(p, deep=False)
                    return p
                except VerificationError:
                    continue
        return None

    def fetch(self, acq: Acquisition) -> FetchResult:
        """Fetch ``acq`` from its provider, or from the next alternative when that fails."""
        errors = []
        for a in (acq, *acq.alternatives):
            try:
                entry, nbytes, nfiles = self._fetch_one(a)
                return FetchResult(acq.id, "fetched", a.provider, str(entry), nbytes, nfiles)
            except AgriseriesError as e:
                errors.append((a.provider, e, tb.format_exc()))
            except OSError as e:
                errors.append((a.provider, DownloadError(f"{type(e).__name__}: {e}"),
                               tb.format_exc()))
        msg = "; ".join(f"{p}: {e}" for p, e, _ in errors)
        last = errors[-1][1]  # named by its public class (AuthenticationError...), not a helper's
        kind = (type(last).__name__ if len(errors) == 1
                and type(last).__module__ == AgriseriesError.__module__ else "DownloadError")
        return FetchResult(acq.id, "failed", acq.provider,
                           failure=FailureRecord(acq.id, kind, msg, errors[-1][2], acq.id))

    def _fetch_one(self, acq: Acquisition) -> tuple[Path, int, int]:
        s = self.session(acq.provider)
        prov = s.provider
        whole_archive = self._whole_archive(acq, prov)
        name = _entry_name(acq, prov, whole_archive)
        stage = self.staging / acq.id
        stage.mkdir(parents=True, exist_ok=True)
        self.inbox.mkdir(parents=True, exist_ok=True)
        if whole_archive:
            asset = acq.item.assets[archive_key(acq.item, prov.collection(acq.collection))]
            dest = stage / name
            n = 0
            if not dest.exists():
                n = s.download(s.sign(asset.href, acq.collection), dest, size=acq.size,
                               checksum=_checksum(asset), on_bytes=self.on_bytes)
            if self.on_file:
                self.on_file(name)
            _commit(dest, self.inbox / name)
            shutil.rmtree(stage, ignore_errors=True)
            return self.inbox / name, n, 1
        folder = stage / name
        plan = self._plan(acq, s, folder)
        nbytes = 0
        window = self.options.mode != "whole"
        for f in plan:
            dest = folder / f.rel
            if dest.exists():
                continue  # complete from an earlier run (written by rename)
            href = s.sign(f.href, acq.collection)
            if f.windowed and window:
                nbytes += read_window(href, dest, self.options.area, settings=self.settings,
                                      headers=s.headers(), snap_m=self.options.snap_m)
                check_opens(dest)
            else:
                nbytes += s.download(href, dest, size=f.size, checksum=f.checksum,
                                     on_bytes=self.on_bytes)
            if self.on_file:
                self.on_file(f.rel)
        write_manifest(folder, {"acquisition": acq.id, "provider": acq.provider,
                                "collection": acq.collection, "item": acq.item.id,
                                "windowed": window,
                                "fetched": dt.datetime.now(dt.timezone.utc).isoformat()})
        final = self.inbox / name
        if final.exists():  # a stale, unverified entry (never made by agriseries): replace it
            shutil.rmtree(final) if final.is_dir() else final.unlink()
        _commit(folder, final)
        shutil.rmtree(stage, ignore_errors=True)
        return final, nbytes, len(plan)

    def _plan(self, acq: Acquisition, s: ProviderSession, folder: Path) -> list[PlannedFile]:
        """The files of an entry; metadata files are fetched here (they say where the
        bands go)."""
        prov = s.provider
        coll = prov.collection(acq.collection)
        assets = acq.item.assets
        if acq.sensor.startswith("S2"):
            keys = [k for k in coll.metadata_assets if k in assets]
            if len(keys) < 2:
                raise DownloadError(f"item {acq.item.id} of {prov.name}: needs the product and "
                                    f"granule metadata assets {coll.metadata_assets}, has "
                                    f"{sorted(assets)}")
            mtd_asset, tl_asset = assets[keys[0]], assets[keys[1]]
            mtd_name = basename(mtd_asset.href)
            if not mtd_name.upper().startswith("MTD_MSIL"):
                mtd_name = f"MTD_MSIL{acq.level[1:]}.xml"
            mtd_path = folder / mtd_name
            if not mtd_path.exists():
                s.download(s.sign(mtd_asset.href, acq.collection), mtd_path,
                           size=mtd_asset.extra_fields.get("file:size"),
                           checksum=mtd_asset.extra_fields.get("file:checksum"))
            wanted = list(self.options.bands or S2_BANDS[acq.level]) + list(S2_QUALITY[acq.level])
            bands = {}
            for b in wanted:
                key = prov.s2_bands.get(b, b)
                if key not in assets:
                    needed = b in S2_NEEDED[acq.level]
                    if not needed and not (self.options.bands and b in self.options.bands
                                           and self.options.require_bands):
                        continue  # a band the item lacks and nobody asked for by name
                    why = ""
                    if needed and acq.level == "L1C":
                        why = (" (the L2A processor's cloud tests need "
                               f"{', '.join(S2_NEEDED['L1C'])})")
                    raise DownloadError(f"item {acq.item.id} of {prov.name}: no asset {key!r} "
                                        f"for band {b}{why}")
                a = assets[key]
                gsd = a.extra_fields.get("gsd")
                rb = a.extra_fields.get("raster:bands") or [{}]
                res = gsd or rb[0].get("spatial_resolution")
                bands[b] = (a.href, int(res) if res else None)
            granule, rels = s2_band_files(mtd_path.read_bytes(), mtd_asset.href, bands)
            plan = [PlannedFile(f"GRANULE/{granule}/MTD_TL.xml", tl_asset.href, False,
                                tl_asset.extra_fields.get("file:size"),
                                tl_asset.extra_fields.get("file:checksum"))]
            for b, rel in rels.items():
                a = assets[prov.s2_bands.get(b, b)]
                plan.append(PlannedFile(rel, a.href, True, a.extra_fields.get("file:size"),
                                        a.extra_fields.get("file:checksum")))
            return plan
        pid, mtl, layers = landsat_files({k: a.to_dict() for k, a in assets.items()})
        by_href = {a.href: a for a in assets.values()}
        plan = []
        for name, href in mtl:
            a = by_href[href]
            plan.append(PlannedFile(name, href, False, a.extra_fields.get("file:size"),
                                    a.extra_fields.get("file:checksum")))
        for name, href in layers:
            a = by_href[href]
            plan.append(PlannedFile(name, href, True, a.extra_fields.get("file:size"),
                                    a.extra_fields.get("file:checksum")))
        return plan


def _commit(src: Path, dest: Path) -> None:
    """Rename the finished entry ``src`` (a file, or a folder) to ``dest`` in the inbox, its
    bytes on disk first: every file and folder of it is fsynced, then the rename, then the
    inbox folder, so that after a power cut the inbox holds the whole entry or nothing of it
    (a ``kill -9`` needs none of this: the rename alone is atomic). The one place a fetch
    waits for the disk: the downloads themselves do not fsync (as curl does not)."""
    fsync_tree(src)
    os.replace(src, dest)
    fsync_path(dest.parent)


def worker_id() -> str:
    """This process's name as a job-store lease owner: ``acquire@host:pid``."""
    return f"acquire@{socket.gethostname()}:{os.getpid()}"


def _dead_local_owner(owner: str | None) -> bool:
    if not owner or not owner.startswith(f"acquire@{socket.gethostname()}:"):
        return False
    try:
        pid = int(owner.rsplit(":", 1)[1])
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def acquire(acquisitions: Iterable[Acquisition], fetcher: Fetcher, jobs=None, *,
            on_result: Callable[[FetchResult], None] | None = None) -> list[FetchResult]:
    """Fetch every acquisition not already in the inbox; one result each.

    Parameters
    ----------
    acquisitions
        From :func:`agriseries.acquire.catalog.search`.
    fetcher
        Where to and how.
    jobs
        A :class:`~agriseries.production.jobstore.JobStore`: each acquisition is a job
        there (``acquire``, keyed by its id); ``None`` fetches without recording.
    on_result
        Called after each acquisition.
    """
    from ..production.jobstore import JobState

    acqs = {a.id: a for a in acquisitions}
    results: list[FetchResult] = []

    def done(r: FetchResult) -> None:
        results.append(r)
        if on_result:
            on_result(r)

    todo: list[Acquisition] = []
    for a in acqs.values():
        entry = fetcher.present(a)
        if entry is not None:
            if jobs is not None:
                job = jobs.submit(PROCESSOR, [a.id], fetcher.job_params(a), tile=a.tile)
                if job.state != JobState.DONE:
                    _finish(jobs, job, [entry.name])
            done(FetchResult(a.id, "skipped", a.provider, str(entry)))
        else:
            todo.append(a)
    if jobs is None:
        for a in todo:
            done(fetcher.fetch(a))
        return results
    me = worker_id()
    keys = {}
    for a in todo:
        job = jobs.submit(PROCESSOR, [a.id], fetcher.job_params(a), tile=a.tile)
        if job.state == JobState.QUARANTINED:
            job = jobs.retry_quarantined(job.key)
        keys[job.key] = a
    for j in jobs.jobs(JobState.RUNNING, processor=PROCESSOR):
        if j.key in keys and _dead_local_owner(j.lease_owner):
            jobs.release(j)  # its runner was killed: take the job back now
    claimed = jobs.claim(me, limit=max(1, len(keys)), processors=[PROCESSOR]) if keys else []
    for j in claimed:
        if j.key not in keys:
            jobs.release(j)
    claimed = [j for j in claimed if j.key in keys]
    got = {j.key for j in claimed}
    for key, a in keys.items():
        if key not in got:
            job = jobs.get(key)
            state = job.state.value if job else "?"
            why = (f"job {key[:12]} is {state} (held by "
                   f"{job.lease_owner if job else '?'}); not fetched now")
            done(FetchResult(a.id, "failed", a.provider,
                             failure=FailureRecord(a.id, "JobStoreConflict", why, id=key)))
    for j in claimed:
        a = keys[j.key]
        r = fetcher.fetch(a)
        if r.status == "fetched":
            _finish(jobs, j, [Path(r.entry).name])
        else:
            jobs.fail(j, r.error or "failed", r.traceback)
        done(r)
    return results


def _finish(jobs, job, outputs: list[str]) -> None:
    from ..production.jobstore import JobState

    if job.state == JobState.RUNNING:
        jobs.complete(job, outputs)
        return
    # a job that is not ours to complete (queued / failed): claim it, then complete it
    for j in jobs.claim(worker_id(), limit=50, processors=[PROCESSOR]):
        if j.key == job.key:
            jobs.complete(j, outputs)
        else:
            jobs.release(j)

