"""agriseries' SMAC against openEO's SMAC on openEO's Sentinel-2 test rasters.

The rasters ($AGRISERIES_RAW_DATA/smac_reference, see its SOURCE.txt; GitHub
Open-EO/openeo-geotrellis-extensions, Apache-2.0) are a 512 x 1024 px, 10 m piece of a
Sentinel-2A image over Belgium (2019-04-11): TOA reflectance x 1e4 of B02, B03, B04 and
B08, the sun and view angles, and openEO's SMAC surface reflectance. openEO ran SMAC with
ozone 0.33 cm, 1013 hPa, water vapour 0.3 g/cm2 and the CAMS aerosol optical thickness of
the day, which its iCOR debug raster stores as 100 x AOT truncated: 14. It stored
``int(1e4 * r_surf)`` in uint16, so its few negative results are wrapped around (decoded
here).

This script runs :func:`agriseries.l2a.smac.smac_inverse` on the full rasters with the same
inputs (AOT 0.14, the packaged Coef_S2A_CONT_*.dat files), truncates the result as openEO
did, prints a Markdown table of the difference (DN = reflectance x 1e4) per band and writes
docs/img/smac_reference.png (histograms of the differences).

The second block of the table explains the B03/B04/B08 offset: the same run with the
Sentinel-2A coefficients as O. Hagolle first distributed them (docs/l2a.md "Sentinel-2A coefficients",
from rfernand387/SL2PD, whose aerosol phase coefficients are rounded to 3 digits; the
full-precision phase coefficients of the packaged files are put back) reproduces openEO's
B03/B04/B08 to 0-1 DN. openEO's reference rasters were made with that earlier coefficient
set; the files openEO ships today (and agriseries with them) are a later fit.

    .venv/bin/python docs/smac_reference.py
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import rasterio

from agriseries.l2a.smac import coefficients_for, smac_inverse

#: Upstream copies, in the folder named by AGRISERIES_RAW_DATA (see tests/data/README.md).
SRC = Path(os.environ.get("AGRISERIES_RAW_DATA", "raw_data")) / "smac_reference"
OUT = Path(__file__).parent / "img" / "smac_reference.png"
BANDS = ("B02", "B03", "B04", "B08")

#: S2A continental coefficients as first distributed (from rfernand387/SL2PD), file order.
EARLY_S2A = {
    "B03": "-0.000757 0.901893 -0.098738 0.998703 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 "
           "0.044563 0.202436 -0.078108 0.034958 1.10863 -0.209645 -0.082273 -0.222335 "
           "0.090966 0.077198 2.75e-07 0.979534 0.891461 0.636605 6.76 -0.189 0.00206 "
           "-1.01e-05 1.88e-08 -0.004518 -0.01694 -0.015909 -0.003421 -0.000955 -0.004412 "
           "0.024958 -0.008637 -0.036165 -0.036997 -0.011815",
    "B04": "-0.003462 0.768631 -0.049992 0.998946 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 "
           "0.025311 0.205083 -0.078741 0.018581 1.098114 -0.187508 -0.044991 -0.187552 "
           "0.04535 0.041199 3.00e-07 0.80075 0.88434 0.631871 6.75 -0.188 0.00203 "
           "-9.85e-06 1.83e-08 -0.001556 -0.00967 -0.011026 -0.003233 -0.000199 -0.004652 "
           "0.026417 -0.006787 -0.035332 -0.044693 -0.017605",
    "B08": "-0.028164 0.585874 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 "
           "0.011608 0.170964 -0.06546 0.008658 1.076842 -0.163897 -0.020681 -0.141903 "
           "0.018476 0.017587 5.00e-08 0.602717 0.84852 0.631986 6.57 -0.180 0.00192 "
           "-9.16e-06 1.66e-08 -0.0002 -0.004329 -0.006422 -0.002748 -0.000027 -0.003161 "
           "0.02967 -0.003942 -0.029385 -0.048574 -0.026212",
}
PHASE = ("a0P", "a1P", "a2P", "a3P", "a4P")


def _read(name: str) -> np.ndarray:
    with rasterio.open(SRC / name) as src:
        return src.read(1)


def _early_coefficients(band: str):
    packaged = coefficients_for("S2A", band)
    values = [float(v) for v in EARLY_S2A[band].split()]
    names = [f.name for f in dataclasses.fields(packaged) if f.name != "source"]
    early = dict(zip(names, values, strict=True))
    early.update({k: getattr(packaged, k) for k in PHASE})
    return dataclasses.replace(packaged, **early, source=f"SL2PD S2A {band}")


def differences() -> dict[str, dict[str, np.ndarray]]:
    """Per band, the DN differences ours - openEO's for the packaged and the early files."""
    aot = _read("ref_check_icor_S2_AOT.tif") / 100.0
    angles = [_read(f"ref_input_S2_{a}.tif").astype(np.float64)
              for a in ("sunZenithAngles", "sunAzimuthAngles", "viewZenithMean",
                        "viewAzimuthMean")]
    out: dict[str, dict[str, np.ndarray]] = {}
    for band in BANDS:
        toa = _read(f"ref_input_S2_{band}.tif") / 1e4
        ref = _read(f"ref_check_smac_S2_{band}.tif").astype(np.int64)
        ref = np.where(ref > 32767, ref - 65536, ref)
        sets = {"packaged": coefficients_for("S2A", band)}
        if band in EARLY_S2A:
            sets["early"] = _early_coefficients(band)
        out[band] = {}
        for key, coefs in sets.items():
            ours = smac_inverse(toa, coefs, *angles, pressure=1013.0, aot550=aot, uo3=0.33,
                                uh2o=0.3)
            out[band][key] = (np.trunc(ours * 1e4) - ref).ravel()
    return out


def table(diffs) -> str:
    header = ("| band | coefficients | median diff (DN) | median abs diff (DN) "
              "| p95 abs diff (DN) | equal pixels | abs diff < 25 DN |")
    rows = [header, "|---|---|---|---|---|---|---|"]
    for band, sets in diffs.items():
        for key, d in sets.items():
            label = "packaged (Coef_S2A_CONT)" if key == "packaged" else "early S2A set (SL2PD)"
            a = np.abs(d)
            rows.append(f"| {band} | {label} | {np.median(d):+.0f} | {np.median(a):.0f} | "
                        f"{np.percentile(a, 95):.0f} | {np.mean(d == 0):.1%} | "
                        f"{np.mean(a < 25):.2%} |")
    return "\n".join(rows)


def figure(diffs) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(diffs), figsize=(13, 3.2), sharey=True)
    bins = np.arange(-10.5, 25.5, 1.0)
    for ax, (band, sets) in zip(axes, diffs.items(), strict=True):
        ax.hist(np.clip(sets["packaged"], -10, 25), bins=bins, color="tab:blue",
                label="packaged coefficients")
        if "early" in sets:
            ax.hist(np.clip(sets["early"], -10, 25), bins=bins, color="tab:orange", alpha=0.6,
                    label="early S2A set")
        ax.set_title(f"{band}: agriseries - openEO")
        ax.set_xlabel("difference (reflectance x 1e4)")
        ax.set_yscale("log")
    axes[0].set_ylabel("pixels (of 524 288)")
    axes[-1].legend(fontsize=8)
    fig.tight_layout()
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=90)


def main() -> None:
    diffs = differences()
    print(table(diffs))
    figure(diffs)
    print(f"\nwrote {OUT}")


if __name__ == "__main__":
    main()
