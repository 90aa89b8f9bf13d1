"""Acquisition: find and fetch every Sentinel-2 and Landsat 8/9 acquisition of a site.

* :mod:`~agriseries.acquire.providers`: the provider registry (Earth Search, Planetary
  Computer, Copernicus Data Space, CNES GEODES, USGS), endpoints and credentials;
* :mod:`~agriseries.acquire.catalog`: STAC search (pystac-client) and provider-neutral
  acquisition ids, duplicates merged;
* :mod:`~agriseries.acquire.http`: provider sessions (httpx for API calls, urllib3 for file
  bodies) with timeouts, token handling, tenacity retries, resumable verified downloads;
* :mod:`~agriseries.acquire.windowed`: only the site's pixels, by windowed COG reads;
* :mod:`~agriseries.acquire.layout`: the inbox entry of an acquisition (the provider's own
  product layout, read by the existing readers);
* :mod:`~agriseries.acquire.fetch`: the job-store driven, crash-safe fetch into the inbox;
* :mod:`~agriseries.acquire.verify`: checksums, error pages, open checks.

httpx, urllib3, pystac-client and tenacity come with the ``acquire`` extra.
"""

from __future__ import annotations

__all__ = ["Acquisition", "FetchOptions", "Fetcher", "Selection", "acquire", "search"]


def __getattr__(name: str):
    if name in ("Acquisition", "Selection", "search"):
        from . import catalog

        return getattr(catalog, name)
    if name in ("FetchOptions", "Fetcher", "acquire"):
        from . import fetch

        return getattr(fetch, name)
    raise AttributeError(name)
