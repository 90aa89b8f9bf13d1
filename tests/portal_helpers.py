"""Shared by the portal tests: a product store of every level made by the production from
real data, and a real HTTP server on loopback.

The store is made once per test session (about a minute): the production runs the
WorldCereal Flanders patch of tests/data/production/inbox (8 Sentinel-2 L2A dates and one
Landsat 8 date of June-July 2018, tile T31UDS) with the WorldCereal parcels of
tests/data/crop as in-situ data, so it holds L2A, L3A (June, July), L3B (LAI, FAPAR, FCOVER
of each Sentinel-2 date), L4A and L4B; the season profile of the L3B variables is then
made by ``biophysical_series`` and recorded in the production database. ``publish()`` puts
the products into the service's catalogue (``agriseries publish``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from serve_helpers import ServeProcess  # noqa: E402

DATA = Path(__file__).parent / "data"
INBOX = DATA / "production" / "inbox"
PARCELS = DATA / "crop" / "worldcereal_parcels.gpkg"
TILE = "T31UDS"
L3A_JUNE = "L3A_S2L8_T31UDS_20180601-20180630_AGS"
L4B = "L4B_S2_T31UDS_20180601-20180731_AGS"
L4A = "L4A_S2_T31UDS_20180601-20180731_AGS"
SEASON = "L3B_S2_T31UDS_20180601-20180731_AGS"

_made: dict = {}
_lock = threading.Lock()


def product_store(tmp_path_factory) -> Path:
    """The folder of the store (made on first use, then shared; the site is
    ``site_of_store()``)."""
    with _lock:
        if "store" in _made:
            return _made["store"]
        import yaml

        from agriseries.biophysical.processor import biophysical_series
        from agriseries.production.runner import run
        from agriseries.production.site import load_site

        root = tmp_path_factory.mktemp("portal_store")
        inbox = root / "inbox"
        inbox.mkdir()
        for f in INBOX.glob("*.nc"):
            shutil.copy2(f, inbox / f.name)
        site_file = root / "site.yaml"
        site_file.write_text(yaml.safe_dump({
            "name": "portal-test", "area": {"tiles": [TILE]},
            "season": {"start": "2018-06-01", "end": "2018-07-31"},
            "in_situ": str(PARCELS),
            "products": {"L3A": {"schedule": "monthly"},
                         "L3B": {"sensors": ["S2"], "variables": ["LAI", "FAPAR", "FCOVER"]},
                         "L4A": {"enabled": True},
                         "L4B": {"enabled": True, "class_field": "CT", "exclude_codes": [0],
                                 "crop_mask": True}},
            "inbox": {"path": str(inbox), "settle_s": 0},
            "store": str(root / "store"),
            "engine": {"n_workers": 1, "memory_limit": "2GiB"}}))
        site = load_site(site_file)
        report = run(site, today=dt.date(2018, 8, 15))
        assert report.exit_code == 0, report.failed
        store = site.product_store()
        biophysical_series(store, TILE, dt.datetime(2018, 6, 1), dt.datetime(2018, 7, 31),
                           variables=("LAI", "FAPAR", "FCOVER"))
        # the season product, made outside a run, recorded as the runner's next pass would
        # (so that it is in the publication outbox too)
        from agriseries.production.catalogue import rescan

        js = site.job_store()
        try:
            assert rescan(js, store) == (1, 0)
        finally:
            js.close()
        _made["store"] = root / "store"
        _made["site"] = site
        return _made["store"]


def publish() -> None:
    """``agriseries publish`` of the site of :func:`product_store` (its outbox into the
    embedded catalogue of the service; nothing to do the second time)."""
    cli("publish", str(_made["site"].source), "--json")


def site_of_store():
    """The production site that made :func:`product_store`'s store."""
    return _made["site"]


class LoopbackServer:
    """A uvicorn server of an ASGI app on 127.0.0.1 (a free port), in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                     lifespan="on")
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        t0 = time.monotonic()
        while not self.server.started:
            if time.monotonic() - t0 > 30 or not self.thread.is_alive():
                raise RuntimeError("the loopback server did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


class Service(ServeProcess):
    """``agriseries serve SITE.yaml`` in its own process on a loopback port (the way a user
    runs it); ``url`` once started (``with Service(site_file) as svc``)."""

    def __init__(self, site_file: Path, *args: str) -> None:
        self.site_file = Path(site_file)
        super().__init__([str(self.site_file)], *args, log_dir=self.site_file.parent,
                         ready_path="/portal/api/config")


def cli(*args: str) -> str:
    """Run ``agriseries ARGS`` in a process; its standard output (fails on an error)."""
    res = subprocess.run([sys.executable, "-m", "agriseries.cli", *args], capture_output=True,
                         text=True, timeout=300)
    if res.returncode != 0:
        raise AssertionError(f"agriseries {' '.join(args)}: {res.returncode}\n{res.stdout}\n"
                             f"{res.stderr}")
    return res.stdout


@contextlib.contextmanager
def serve(app):
    with LoopbackServer(app) as url:
        yield url
