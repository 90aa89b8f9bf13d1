"""The ``acquire`` stage: the site's new acquisitions fetched from the providers into its inbox.

Its jobs come from a catalogue search, not from the product catalogue (as the ``ingest``
jobs come from the inbox scan): on every look at the inbox (each ``engine.poll_s`` with
``--watch``), :func:`acquisition_jobs` searches the providers of the site's ``acquire:``
section, in the site's order of preference, for the acquisitions of its tiles from the
season start to today (:func:`agriseries.acquire.catalog.search`: duplicates across
providers and processing baselines merged) and gives one job per acquisition that has no
``acquire`` job yet and is not in the inbox already. A job is keyed by the provider-neutral
acquisition id (its only input) and carries what the fetch needs (the STAC items of the
acquisition and of its alternatives, the bands, the area, the endpoints), so a worker
fetches without searching again.

``make`` fetches the acquisition into the inbox (:class:`agriseries.acquire.fetch.Fetcher`:
only the site's area and the bands its products read for COG providers, whole archives
otherwise; resumed, verified, renamed into the inbox in one step). The job's output is the
inbox entry's name; the runner's next look at the inbox plans its ingest at once (a fetched
entry is complete: it does not wait ``inbox.settle_s``). A provider that fails the search is
reported and the others are used; a fetch that fails at the first provider is tried at the
next one that has the acquisition, and a job that fails at all of them is retried with the
job store's backoff, then quarantined, like any other job.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any, Literal

from ...core.params import JsonParams
from ..plan import JobSpec
from .base import Stage, StageContext, StageOutput

if TYPE_CHECKING:
    from ..site import Site

__all__ = ["PRIORITY", "STAGE", "AcquireParams", "SearchOutcome", "acquisition_jobs",
           "acquire_params", "make", "site_bands"]

#: Claim order: before the ingest (fetching feeds it).
PRIORITY = 40

#: Sentinel-2 bands every Sentinel-2 L2A acquisition brings besides those the products read.
_ALWAYS = ("SCL",)


@dataclasses.dataclass(frozen=True)
class AcquireParams(JsonParams):
    """Parameters of an ``acquire`` job (one acquisition).

    Attributes
    ----------
    acquisition
        The acquisition and its alternatives, as :meth:`Acquisition.to_record
        <agriseries.acquire.catalog.Acquisition.to_record>` wrote it.
    inbox
        The inbox folder the entry goes to.
    mode
        ``auto``: the provider's own (COG windows, archives whole); ``window``: only the
        area's pixels; ``whole``: whole files.
    bands
        Sentinel-2 bands to fetch (ESA names); ``None``: every band of the level.
    require_bands
        A band of ``bands`` the acquisition lacks fails the fetch (bands the site named);
        ``False``: left out (bands the site's products could use).
    area
        The area to cut windows to (GeoJSON geometry, lon/lat); ``None``: whole files.
    snap_m
        Windows are snapped outwards to this lattice (m).
    endpoints
        Provider endpoints moved from their defaults (``url``, ``token_url`` by provider).
    read_timeout_s
        Longest silence of a socket before a request is abandoned.
    attempts
        Tries of one request or download before it fails.
    """

    acquisition: dict[str, Any] = dataclasses.field(default_factory=dict)
    inbox: str = ""
    mode: Literal["auto", "window", "whole"] = "auto"
    bands: tuple[str, ...] | None = None
    require_bands: bool = False
    area: dict[str, Any] | None = None
    snap_m: float = 60.0
    endpoints: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)
    read_timeout_s: float = 60.0
    attempts: int = 6


def site_bands(site: Site) -> tuple[str, ...] | None:
    """The Sentinel-2 bands to fetch for a site: those of its ``acquire.bands``, else those
    the products it asks for read (``Stage.bands`` of every enabled stage) with the scene
    classification; ``None`` (every band) for L1C, which the L2A processor needs whole."""
    from . import STAGES

    a = site.acquire
    if a is None:
        return None
    if a.bands is not None:
        return tuple(a.bands)
    if a.level == "L1C":
        return None
    wanted: list[str] = []
    for stage in STAGES.values():
        if stage.bands is not None and stage.enabled(site):
            wanted += stage.bands(site)
    if not wanted:
        return None
    order = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
             "B11", "B12", "SCL", "AOT")
    return tuple(sorted(set(wanted) | set(_ALWAYS), key=order.index))


def acquire_params(site: Site, record: dict[str, Any]) -> AcquireParams:
    """The parameters of the ``acquire`` job of one acquisition of ``site``."""
    a = site.acquire
    assert a is not None
    area = site.area_geometry()
    return AcquireParams(
        acquisition=record, inbox=str(site.inbox.path), mode=a.mode, bands=site_bands(site),
        require_bands=a.bands is not None,
        area=area.json if area is not None else None, snap_m=a.snap_m,
        endpoints={k: v.model_dump(exclude_none=True) for k, v in a.endpoints.items()},
        read_timeout_s=a.read_timeout_s, attempts=a.attempts)


@dataclasses.dataclass
class SearchOutcome:
    """What :func:`acquisition_jobs` found.

    Attributes
    ----------
    jobs
        The jobs of the new acquisitions.
    found
        Acquisitions the search returned.
    present
        Acquisitions already in the inbox (no job).
    failures
        Providers whose search failed: name -> error.
    requests
        HTTP requests the search made.
    """

    jobs: list[JobSpec] = dataclasses.field(default_factory=list)
    found: int = 0
    present: int = 0
    failures: dict[str, str] = dataclasses.field(default_factory=dict)
    requests: int = 0


def acquisition_jobs(site: Site, today: dt.date, known: Collection[str]) -> SearchOutcome:
    """Search the site's providers and plan an ``acquire`` job for every acquisition that
    has no job yet (``known``: the acquisition ids of the existing ``acquire`` jobs) and is
    not in the inbox (module docstring)."""
    from ...acquire.catalog import Selection, search
    from ...acquire.fetch import Fetcher
    from ...acquire.http import HttpSettings
    from ...acquire.providers import get_provider

    a = site.acquire
    assert a is not None
    out = SearchOutcome()
    end = min(today, site.season.end)
    if end < site.season.start:
        return out
    settings = HttpSettings(read_timeout_s=a.read_timeout_s, attempts=a.attempts)
    eps = {k: v.model_dump(exclude_none=True) for k, v in a.endpoints.items()}
    providers = [get_provider(n, eps.get(n)) for n in a.providers]
    sel = Selection(start=site.season.start, end=end, tiles=tuple(site.tiles),
                    area=site.area_geometry(), level=a.level,
                    sensors=tuple(a.sensors or ("S2", "L8", "L9")), max_cloud=a.max_cloud)

    res = search(sel, providers, settings=settings)  # API keys (GEODES): search sends them
    out.failures, out.requests, out.found = dict(res.failures), res.requests, len(res.acquisitions)
    if not res.acquisitions:
        return out
    with Fetcher(site.inbox.path, endpoints=eps) as fetcher:
        for acq in res.acquisitions:
            if acq.id in known:
                continue
            if fetcher.present(acq) is not None:
                out.present += 1
                continue
            params = acquire_params(site, acq.to_record())
            out.jobs.append(JobSpec("acquire", acq.tile, (acq.id,), params.to_json(),
                                    priority=PRIORITY,
                                    reason=f"new acquisition at {acq.provider}"))
    return out


def make(ctx: StageContext, inputs: Sequence[str], params: AcquireParams) -> StageOutput:
    """Fetch the job's acquisition into the inbox (module docstring).

    Raises
    ------
    JobError
        It could not be fetched from any provider that has it (every provider's reason).
    """
    from odc.geo.geom import Geometry

    from ...acquire.catalog import Acquisition
    from ...acquire.fetch import FetchOptions, Fetcher
    from ...acquire.http import HttpSettings
    from ..tasks import JobError

    acq = Acquisition.from_record(params.acquisition)
    options = FetchOptions(mode=params.mode, bands=params.bands,
                           require_bands=params.require_bands, snap_m=params.snap_m,
                           area=Geometry(params.area, "EPSG:4326") if params.area else None)
    settings = HttpSettings(read_timeout_s=params.read_timeout_s, attempts=params.attempts)
    with Fetcher(params.inbox, options, settings=settings, endpoints=params.endpoints) as f:
        entry = f.present(acq)
        if entry is not None:
            return StageOutput(inbox=[entry.name],
                               notes=[f"{acq.id}: already in the inbox as {entry.name}"])
        r = f.fetch(acq)
    if r.status != "fetched" or r.entry is None:
        raise JobError(f"{r.error_type or 'DownloadError'}: {acq.id}: {r.error}", r.traceback)
    name = r.entry.rsplit("/", 1)[-1]
    return StageOutput(inbox=[name], notes=[f"{acq.id}: fetched from {r.provider} into the "
                                            f"inbox as {name} ({r.files} file(s), "
                                            f"{r.bytes} bytes)"])


STAGE = Stage(
    level="acquire", params=AcquireParams, make=make, plan=None, priority=PRIORITY,
    enabled=lambda site: site.acquire is not None and site.acquire.enabled,
    site_settings=("acquire", "area", "season", "inbox"), inputs_in_store=False,
    description="New acquisitions of the site fetched from the providers into the inbox")
