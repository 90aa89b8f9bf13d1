"""Benchmark: the portal's tile endpoint on a full-tile L3A, against plain rio-tiler calls.

Input: an L3A product of the full tile T31UDS (``--size`` px at 10 m, 10980 by default) whose
B02, B03 and B04 are the real WorldCereal Flanders 10 m chips of one clear date
(tests/data/worldcereal) tiled over the tile, written by the product store as COGs with
overviews like any product. Writing it is set-up, not measured.

The product is published into the service's embedded catalogue (as ``agriseries publish``
does), and the service is the distribution's application (``create_app``: the portal
mounted, every tile request through the access check: a catalogue look-up of the product,
its files checked below the store root), served by uvicorn on loopback in a thread of this
process.

Measured in one run, on the same tiles (``--per-zoom`` random WebMercatorQuad tiles over the
product at each zoom of ``--zooms``, 8-14 by default, fixed seed):

* ``endpoint``: ``GET /portal/tiles/item/tiles/WebMercatorQuad/{z}/{x}/{y}.png`` with the true
  colour layer's parameters (3 assets, 2-98 % stretch) over loopback HTTP;
* ``rio-tiler``: the same tile made by a plain rio-tiler ``STACReader`` on the product's STAC
  item file (``tile`` of the 3 assets, ``rescale``, ``render`` PNG), without HTTP, FastAPI
  or access check: the floor of any tiler;

first one request at a time, then with ``--clients`` concurrent clients (threads, each its
own HTTP connection; the rio-tiler baseline with as many threads), every tile asked once.
A second pass of the endpoint with ``If-None-Match`` (the ETag of the first answer) gives the
cost of a revalidated tile (304).

Corner tiles of the WGS 84 bounding box that miss the UTM footprint (404) are left out.

Printed: tiles per second, p50 and p95 per tile of each, per zoom and overall, and the ratios.

    .venv/bin/python benchmarks/bench_portal_tiles.py [--size 10980] [--per-zoom 20]
        [--clients 4] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
TILE = "T31UDS"


def make_l3a(store_dir: Path, size: int) -> str:
    import dask.array as da
    from odc.geo.geobox import GeoBox

    from agriseries.core.bands import bands_of
    from agriseries.core.grid import tile_geobox
    from agriseries.core.ids import Level, ProductId
    from agriseries.io.store import Layer, ProductStore
    from agriseries.io.timeseries import read_timeseries

    s10 = read_timeseries(next((ROOT / "tests" / "data" / "worldcereal").glob("S2_L2A_10m_*.nc")))
    one = s10.sel(time="2018-06-23").isel(time=0) if "time" in s10.dims else s10
    full = tile_geobox(TILE, 10)
    gb = GeoBox((size, size), full.affine, full.crs)
    table = bands_of("S2A")

    def tiled(block, chip, block_info=None):
        (r0, r1), (c0, c1) = block_info[0]["array-location"]
        return chip[np.ix_(np.arange(r0, r1) % chip.shape[0], np.arange(c0, c1) % chip.shape[1])]

    layers = []
    for name in ("B02", "B03", "B04"):
        chip = one[name].values
        arr = da.zeros((size, size), dtype=chip.dtype, chunks=2048).map_blocks(
            tiled, chip, dtype=chip.dtype)
        layers.append(Layer(name, arr, gb, "reflectance", band=table.get(name)))
    pid = ProductId(Level.L3A, "S2A", TILE, dt.datetime(2018, 6, 1, tzinfo=dt.timezone.utc),
                    "AGS", dt.datetime(2018, 6, 30, tzinfo=dt.timezone.utc))
    store = ProductStore(store_dir)
    store.write_product(pid, layers, footprint=gb.extent, sensors=["S2A"], inputs=[],
                        parameters={"size": size}, lineage="benchmark input tiled from a real date")
    return str(pid)


def tiles_of(bbox, zooms, per_zoom: int, seed: int = 0):
    import morecantile

    tms = morecantile.tms.get("WebMercatorQuad")
    rng = np.random.default_rng(seed)
    out = []
    for z in zooms:
        ts = list(tms.tiles(*bbox, [z]))
        pick = rng.choice(len(ts), size=min(per_zoom, len(ts)), replace=False)
        out += [ts[i] for i in sorted(pick)]
    return out


def stats(times: list[float]) -> dict:
    a = np.asarray(times)
    return {"n": len(a), "tiles_per_s": round(len(a) / a.sum(), 1),
            "p50_ms": round(float(np.percentile(a, 50)) * 1000, 1),
            "p95_ms": round(float(np.percentile(a, 95)) * 1000, 1)}


def timed_parallel(fn, jobs: list, clients: int) -> tuple[float, list[float]]:
    """Run ``fn(job)`` over ``jobs`` with ``clients`` threads; (wall time, per-job times)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(job):
        s = time.perf_counter()
        fn(job)
        return time.perf_counter() - s

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        times = list(pool.map(one, jobs))
    return time.perf_counter() - t0, times


def main(argv=None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=10980)
    ap.add_argument("--per-zoom", type=int, default=20)
    ap.add_argument("--zooms", default="8-14")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    lo, hi = (int(v) for v in a.zooms.split("-"))
    zooms = list(range(lo, hi + 1))

    import threading
    import warnings

    import httpx
    from portal_helpers import serve
    from rio_tiler.io import STACReader

    from agriseries.core.ids import ProductId
    from agriseries.distribution.app import create_app
    from agriseries.distribution.catalog import open_backend
    from agriseries.distribution.items import published_item
    from agriseries.distribution.settings import ServiceSettings
    from agriseries.io.store import ProductStore

    warnings.filterwarnings("ignore", module="rio_tiler")  # raster:bands without statistics
    with tempfile.TemporaryDirectory(prefix="bench_portal_") as tmp:
        t0 = time.perf_counter()
        pid = make_l3a(Path(tmp), a.size)
        settings = ServiceSettings(store=Path(tmp))
        item_path = ProductStore(tmp).item_path(ProductId.parse(pid))
        backend = open_backend(settings)
        backend.apply([published_item(json.loads(item_path.read_text()), item_path, tmp)], [],
                      tmp)
        backend.close()
        setup = time.perf_counter() - t0

        app = create_app(settings)
        local = threading.local()
        with serve(app) as url:
            def client() -> httpx.Client:
                if not hasattr(local, "c"):
                    local.c = httpx.Client(base_url=url, timeout=120)
                return local.c

            info = client().get("/portal/api/layers", params={"item": pid}).json()
            layer = next(lay for lay in info["layers"] if lay["kind"] == "rgb")
            rescale = [tuple(r) for r in layer["rescale"]]

            def url_of(t) -> str:
                return layer["tiles"].replace("{z}", str(t.z)).replace("{x}", str(t.x)) \
                    .replace("{y}", str(t.y))

            etags: dict = {}
            inside = []
            for t in tiles_of(info["bbox"], zooms, a.per_zoom):
                r = client().get(url_of(t))  # warm-up, and leave out the corner tiles
                assert r.status_code in (200, 404), r.text
                if r.status_code == 200:
                    inside.append(t)
                    etags[t] = r.headers.get("etag")

            def endpoint(t) -> None:
                r = client().get(url_of(t))
                assert r.status_code == 200 and r.content[:4] == b"\x89PNG", r.text

            def revalidate(t) -> None:
                r = client().get(url_of(t), headers={"If-None-Match": etags[t]})
                assert r.status_code == 304, r.status_code

            def plain(t) -> None:
                with STACReader(str(item_path)) as src:
                    img = src.tile(t.x, t.y, t.z, assets=layer["assets"])
                img.rescale(in_range=rescale)
                img.render(img_format="PNG")

            res: dict = {"endpoint": {}, "rio-tiler": {}}
            for t in inside:  # one at a time, the two alternating
                for name, fn in (("endpoint", endpoint), ("rio-tiler", plain)):
                    s = time.perf_counter()
                    fn(t)
                    res[name].setdefault(t.z, []).append(time.perf_counter() - s)
            conc = {}
            for name, fn in (("endpoint", endpoint), ("rio-tiler", plain)):
                wall, times = timed_parallel(fn, inside, a.clients)
                conc[name] = {**stats(times), "tiles_per_s": round(len(times) / wall, 1)}
            reval = None
            if all(etags.get(t) for t in inside):
                wall, times = timed_parallel(revalidate, inside, 1)
                reval = {**stats(times), "tiles_per_s": round(len(times) / wall, 1)}
        app.state.accounts.close()
    out = {"size": a.size, "setup_s": round(setup, 1), "tiles": len(inside), "per_zoom": {},
           "all": {}, "clients": a.clients, "concurrent": conc, "revalidated": reval}
    for name, per in res.items():
        for z, ts in per.items():
            out["per_zoom"].setdefault(str(z), {})[name] = stats(ts)
        out["all"][name] = stats([v for ts in per.values() for v in ts])
    e, p = out["all"]["endpoint"], out["all"]["rio-tiler"]
    out["ratio_tiles_per_s"] = round(e["tiles_per_s"] / p["tiles_per_s"], 2)
    out["ratio_p95"] = round(e["p95_ms"] / p["p95_ms"], 2)
    ce, cp = conc["endpoint"], conc["rio-tiler"]
    out["concurrent_ratio_tiles_per_s"] = round(ce["tiles_per_s"] / cp["tiles_per_s"], 2)
    out["concurrent_ratio_p95"] = round(ce["p95_ms"] / cp["p95_ms"], 2)
    if a.json:
        print(json.dumps(out, indent=1))
        return
    print(f"full-tile L3A {a.size} px, set-up {out['setup_s']} s, {len(inside)} tiles")
    print(f"{'zoom':>5} {'endpoint tiles/s':>17} {'p95 ms':>8} {'rio-tiler tiles/s':>18} {'p95 ms':>8}")
    for z, d in out["per_zoom"].items():
        print(f"{z:>5} {d['endpoint']['tiles_per_s']:>17} {d['endpoint']['p95_ms']:>8} "
              f"{d['rio-tiler']['tiles_per_s']:>18} {d['rio-tiler']['p95_ms']:>8}")
    print(f"  all {e['tiles_per_s']:>17} {e['p95_ms']:>8} {p['tiles_per_s']:>18} {p['p95_ms']:>8}")
    print(f"endpoint / rio-tiler: tiles/s x{out['ratio_tiles_per_s']}, p95 x{out['ratio_p95']}")
    print(f"{a.clients} concurrent clients: endpoint {ce['tiles_per_s']} tiles/s, p95 "
          f"{ce['p95_ms']} ms; rio-tiler {cp['tiles_per_s']} tiles/s, p95 {cp['p95_ms']} ms; "
          f"x{out['concurrent_ratio_tiles_per_s']} tiles/s, p95 x{out['concurrent_ratio_p95']}")
    if reval:
        print(f"revalidated (If-None-Match -> 304): {reval['tiles_per_s']} tiles/s, p95 "
              f"{reval['p95_ms']} ms")


if __name__ == "__main__":
    main()
