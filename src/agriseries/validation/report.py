"""Validation report files: JSON, Markdown, self-contained HTML and a confusion-matrix picture.

:func:`write_report` writes, for an output stem ``out/crop_type_2018``:

``crop_type_2018.json``
    :meth:`AccuracyReport.to_dict` (NaN written as ``null``);
``crop_type_2018_confusion.png``
    the confusion matrix (rows = map, columns = reference, docs/validation.md):
    the counts written in the cells, colours from the row-normalised matrix (the share
    of each map class going to each reference class; the diagonal is the user's
    accuracy), class names on both axes; matplotlib with the Agg backend (no display);
``crop_type_2018.md``
    summary (n, OA, kappa, macro F1), per-class table (UA, PA, F1, commission and
    omission errors), the matrix with its margins, the area-adjusted estimates with
    95 % confidence intervals (Olofsson et al. 2014) when present, notes; the picture
    is linked by its file name;
``crop_type_2018.html``
    the same content in one file, the picture embedded as base64.

Each file is written to a temporary name and renamed, so a crash leaves no half file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path

import numpy as np

from ..io.durable import atomic_write
from .metrics import AccuracyReport

__all__ = ["confusion_figure_png", "report_html", "report_markdown", "write_report"]


# ----------------------------------------------------------------------------- formatting

def _f(x, digits: int = 3) -> str:
    if x is None:
        return "–"
    x = float(x)
    return "–" if not math.isfinite(x) else f"{x:.{digits}f}"


def _pm(v, ci, digits: int = 3) -> str:
    if v is None or not math.isfinite(float(v)):
        return "–"
    return f"{_f(v, digits)} ± {_f(ci, digits)}"


def _area(v, digits: int = 1) -> str:
    if v is None or not math.isfinite(float(v)):
        return "–"
    return f"{float(v):,.{digits}f}"


def _area_factor(report: AccuracyReport) -> tuple[float, str]:
    """Areas shown in hectares when the map unit is m², else in the map unit."""
    aa = report.area_adjusted
    if aa is not None and aa.area_unit == "m²":
        return 1e-4, "ha"
    return 1.0, aa.area_unit if aa is not None else ""


def _tables(report: AccuracyReport) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables as (title, header, rows) of text, shared by Markdown and HTML."""
    names = report.class_names
    tables = []
    summary = [["samples (n)", f"{report.n:,}"],
               ["overall accuracy (OA)", _f(report.oa)],
               ["Cohen's kappa", _f(report.kappa)],
               ["macro F1", _f(report.macro_f1)]]
    aa = report.area_adjusted
    if aa is not None:
        summary.append(["area-adjusted OA (± 95 % CI)", _pm(aa.oa, aa.oa_ci)])
    tables.append(("Summary", ["figure", "value"], summary))

    rows = []
    for c in report.per_class():
        rows.append([str(c["name"]), str(c["label"]), f"{c['n_map']:,}",
                     f"{c['n_reference']:,}", _f(c["ua"]), _f(c["pa"]), _f(c["f1"]),
                     _f(c["commission"]), _f(c["omission"])])
    tables.append(("Per class", ["class", "code", "n map", "n reference", "UA", "PA", "F1",
                                 "commission", "omission"], rows))

    m = report.matrix
    head = ["map \\ reference"] + list(names) + ["total"]
    rows = [[names[i]] + [f"{v:,}" for v in m[i]] + [f"{m[i].sum():,}"] for i in range(len(names))]
    rows.append(["total"] + [f"{v:,}" for v in m.sum(axis=0)] + [f"{m.sum():,}"])
    tables.append(("Confusion matrix (counts; rows = map, columns = reference)", head, rows))

    if aa is not None:
        k, unit = _area_factor(report)
        rows = []
        for i, name in enumerate(names):
            rows.append([name, _area(aa.mapped_area[i] * k), _f(aa.weights[i], 4),
                         _area(aa.area[i] * k), _area(aa.area_ci[i] * k),
                         _pm(aa.ua[i], aa.ua_ci[i]), _pm(aa.pa[i], aa.pa_ci[i])])
        tables.append((
            f"Area-adjusted estimates (Olofsson et al. 2014; areas in {unit}, ± = 95 % CI)",
            ["class", "mapped area", "W", "estimated area", "± 95 % CI", "UA", "PA"], rows))
        prop = aa.proportions
        head = ["map \\ reference"] + list(names) + ["total"]
        rows = [[names[i]] + [_f(v, 4) for v in prop[i]] + [_f(np.nansum(prop[i]), 4)
                                                          if np.isfinite(prop[i]).any() else "–"]
                for i in range(len(names))]
        rows.append(["total"] + [_f(v, 4) for v in aa.area_proportion] + [
            _f(float(np.nansum(aa.area_proportion)), 4)])
        tables.append(("Estimated area proportions p̂_ij", head, rows))
    return tables


_LEGEND = ("UA = user's accuracy (1 − commission error), PA = producer's accuracy "
           "(1 − omission error). Area-adjusted figures: stratified estimator of Olofsson "
           "et al. (2014), Remote Sens. Environ. 148:42–57, 95 % CI = ± 1.96 SE. Kappa is "
           "reported for comparison with earlier work only.")


def _notes(report: AccuracyReport) -> list[str]:
    notes = list(report.notes)
    if report.area_adjusted is not None:
        notes += report.area_adjusted.notes
    return notes


# ----------------------------------------------------------------------------- picture

def confusion_figure_png(report: AccuracyReport, title: str | None = None) -> bytes:
    """PNG bytes of the confusion matrix: counts in the cells, colours = row shares.

    Parameters
    ----------
    report
        The report to draw.
    title
        Figure title.

    Returns
    -------
    bytes
        A PNG image (matplotlib, Agg backend; no display needed).
    """
    from ..core.errors import optional_import

    FigureCanvasAgg = optional_import("matplotlib.backends.backend_agg",
                                      "validation").FigureCanvasAgg
    from matplotlib.figure import Figure

    m = report.matrix
    q = m.shape[0]
    rows = m.sum(axis=1, keepdims=True).astype(float)
    share = np.zeros(m.shape, float)
    np.divide(m, rows, out=share, where=rows > 0)
    size = min(max(4.0, 0.6 * q + 2.0), 22.0)
    fig = Figure(figsize=(size + 1.0, size), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    cbar.set_label("share of the map class (row)")
    fontsize = max(5.0, min(11.0, 110.0 / max(q, 1)))
    for i in range(q):
        for j in range(q):
            ax.text(j, i, f"{m[i, j]:,}", ha="center", va="center", fontsize=fontsize,
                    color="white" if share[i, j] > 0.55 else "black")
    ax.set_xticks(range(q))
    ax.set_yticks(range(q))
    ax.set_xticklabels(report.class_names, rotation=45, ha="right", fontsize=fontsize)
    ax.set_yticklabels(report.class_names, fontsize=fontsize)
    ax.set_xlabel("reference class")
    ax.set_ylabel("map class")
    ax.set_title(title or f"OA {_f(report.oa)}  kappa {_f(report.kappa)}  n {report.n:,}",
                 fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight", pad_inches=0.15)
    return buf.getvalue()


# ----------------------------------------------------------------------------- documents

#: Metadata shown at the top of the Markdown and HTML reports; ``split`` says which samples
#: were held out (docs/validation.md, "Splits by polygon").
_META_KEYS = ("map", "reference", "class_field", "strata", "split")


def report_markdown(report: AccuracyReport, title: str = "Validation report",
                    image_name: str | None = None) -> str:
    """The report as Markdown (the picture linked as ``image_name`` when given)."""
    def esc(s: str) -> str:
        return str(s).replace("|", "\\|")

    out = [f"# {title}", ""]
    meta = report.metadata
    for key in _META_KEYS:
        if meta.get(key):
            out.append(f"- {key.replace('_', ' ')}: `{meta[key]}`")
    if any(meta.get(k) for k in _META_KEYS):
        out.append("")
    for name, head, rows in _tables(report):
        out += [f"## {name}", "", "| " + " | ".join(esc(h) for h in head) + " |",
                "|" + "|".join("---" if k == 0 else "---:" for k in range(len(head))) + "|"]
        out += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
        out.append("")
    if image_name:
        out += [f"![confusion matrix]({image_name})", ""]
    notes = _notes(report)
    if notes:
        out += ["## Notes", ""] + [f"- {n}" for n in notes] + [""]
    out += [_LEGEND, ""]
    return "\n".join(out)


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:72em;color:#222}
table{border-collapse:collapse;margin:0.5em 0 1.5em}th,td{border:1px solid #bbb;padding:3px 8px}
td{text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eef}
code{background:#f4f4f4;padding:0 3px}img{max-width:100%}"""


def report_html(report: AccuracyReport, title: str = "Validation report",
                png: bytes | None = None) -> str:
    """The report as one self-contained HTML page (the PNG embedded as base64)."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>{e(title)}</title><style>{_CSS}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
    meta = report.metadata
    items = [f"<li>{e(k.replace('_', ' '))}: <code>{e(str(meta[k]))}</code></li>"
             for k in _META_KEYS if meta.get(k)]
    if items:
        parts.append("<ul>" + "".join(items) + "</ul>")
    for name, head, rows in _tables(report):
        parts.append(f"<h2>{e(name)}</h2><table><tr>"
                     + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>")
        parts += ["<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows]
        parts.append("</table>")
    if png:
        parts.append('<h2>Confusion matrix</h2><img alt="confusion matrix" '
                     f'src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">')
    notes = _notes(report)
    if notes:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li>{e(n)}</li>" for n in notes)
                     + "</ul>")
    parts.append(f"<p>{e(_LEGEND)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(report: AccuracyReport, out_stem, title: str = "Validation report"
                 ) -> dict[str, Path]:
    """Write the JSON, Markdown, HTML and PNG files of a validation report.

    Parameters
    ----------
    report
        From :func:`~agriseries.validation.metrics.accuracy_report` or
        :func:`~agriseries.validation.maps.validate_map`.
    out_stem
        Output path without suffix (``out/l4b_2018`` gives ``out/l4b_2018.json`` ...);
        its folder is created if needed.
    title
        Title of the documents and the picture.

    Returns
    -------
    dict[str, pathlib.Path]
        Keys ``json``, ``md``, ``html``, ``png``.
    """
    stem = Path(out_stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {"json": stem.with_name(stem.name + ".json"),
             "md": stem.with_name(stem.name + ".md"),
             "html": stem.with_name(stem.name + ".html"),
             "png": stem.with_name(stem.name + "_confusion.png")}
    png = confusion_figure_png(report, title)
    doc = report.to_dict()
    doc["title"] = title
    atomic_write(paths["json"], (json.dumps(doc, indent=2, ensure_ascii=False,
                                             allow_nan=False) + "\n").encode("utf-8"))
    atomic_write(paths["png"], png)
    atomic_write(paths["md"], report_markdown(report, title, paths["png"].name).encode("utf-8"))
    atomic_write(paths["html"], report_html(report, title, png).encode("utf-8"))
    return paths
