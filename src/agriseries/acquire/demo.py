"""The acquisition demo of ``make demo``: a site that fills its own inbox, with no internet.

``python -m agriseries.acquire.demo [--data tests/data] [--work build/demo-acquire]`` starts
the loopback replay server (:mod:`agriseries.acquire.replay`: the recorded Earth Search and
Planetary Computer catalogues, and the bundled T29UNU Sentinel-2 L2A sample served as COGs),
writes a site file whose ``acquire:`` section points at it (a 3 x 3 km field area in tile
T29UNU, October 2022), and runs the production twice: the first run searches, fetches only
the field's window of the bands the products read, ingests it and makes the L2A, L3A and L3B
products; the second finds nothing new. It prints what each run did and exits with the
first run's exit code.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
from pathlib import Path

import yaml

__all__ = ["demo_site", "main"]

#: The field area of the demo (lon/lat), inside the T29UNU sample.
FIELD = {"type": "Polygon", "coordinates": [[[-8.30, 52.50], [-8.25, 52.50], [-8.25, 52.53],
                                             [-8.30, 52.53], [-8.30, 52.50]]]}


def demo_site(work: Path, server) -> dict:
    """The demo's site (as the YAML's dict) for a running replay server."""
    pc = server.api_url("planetary-computer")
    return {
        "name": "demo-acquire",
        "area": {"geometry": FIELD},
        "season": {"start": "2022-10-01", "end": "2022-10-31"},
        "products": {"L3B": {"sensors": ["S2"], "variables": ["LAI", "FAPAR", "FCOVER"]}},
        "acquire": {"providers": ["earth-search", "planetary-computer"],
                    "endpoints": {"earth-search": {"url": server.api_url("earth-search")},
                                  "planetary-computer": {"url": pc, "token_url": f"{pc}/token"}},
                    "read_timeout_s": 10, "attempts": 3},
        "inbox": {"path": str(work / "inbox")},
        "store": str(work / "store"),
        "engine": {"n_workers": 2, "memory_limit": "2GiB"},
    }


def main(argv: list[str] | None = None) -> int:
    """Run the demo (module docstring); returns the first run's exit code."""
    from ..production.runner import run
    from ..production.site import load_site
    from .replay import ReplayServer, build_samples, sample_apis

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("tests/data"),
                    help="the bundled test data (samples and recorded catalogues)")
    ap.add_argument("--work", type=Path, default=Path("build/demo-acquire"),
                    help="where the site, its inbox and its store go (emptied first)")
    args = ap.parse_args(argv)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    samples = build_samples(args.data, args.work / "served")
    with ReplayServer() as server:
        sample_apis(args.data, samples, server)
        site_file = args.work / "site.yaml"
        site_file.write_text(yaml.safe_dump(demo_site(args.work.absolute(), server)))
        site = load_site(site_file)
        codes = []
        for n in (1, 2):
            report = run(site, today=dt.date(2022, 12, 1))
            fetched = [d for d in report.done if d["processor"] == "acquire"]
            print(f"run {n}: {len(fetched)} acquisition(s) fetched, {len(report.made)} "
                  f"product(s) made, {len(report.failed)} failure(s), exit code "
                  f"{report.exit_code}")
            for d in fetched:
                print(f"  fetched {', '.join(d['outputs'])}")
            for pid in report.made:
                print(f"  made    {pid}")
            for f in report.failed:
                print(f"  failed  {f}")
            codes.append(report.exit_code)
        moved = sum(r["bytes"] for r in server.log if "/files/" in r["path"])
        full = sum(p.stat().st_size for p in samples["s2"].rglob("*.tif"))
        print(f"bytes moved from the replayed provider: {moved / 1e3:.0f} kB "
              f"(the sample's band files: {full / 1e3:.0f} kB)")
    return codes[0]


if __name__ == "__main__":
    sys.exit(main())
