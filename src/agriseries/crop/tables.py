"""Samples tables as training input: labelled points with their time series or features.

Besides polygons on a tile, crop classifiers are often trained from **tables of labelled
samples** (WorldCereal's extractions and training tables). :func:`read_samples_table`
reads the two layouts into a :class:`SamplesTable` (features, labels, groups) that
:func:`agriseries.crop.classifier.train_classifier` and
:func:`agriseries.validation.cross_validate` take as they are:

* **long** (one row per sample and date, WorldCereal's point extractions): a sample id
  column (``sample_id``), a date column (``timestamp``) and band columns (``S2-L2A-B03``
  ..., or plain ``B03``...) in DN = reflectance x 10000 with ``nodata`` (65535) for a
  missing observation. Per sample the band series is gap-filled linearly over the dates
  (:func:`agriseries.crop.features.gapfill_linear`; a band never observed for any sample
  is dropped) and the features are those of docs/crop.md "Features" per date: the band
  reflectances, NDVI, NDWI and brightness when B03, B04, B08 and B11 are there. The
  group of a sample is the sample itself (one point per field);
* **wide** (one row per sample): every numeric column that is not a label, group or
  coordinate column is a feature (WorldCereal's ``training_df_LC``: 152 features).

The label column is given (``ewoc_code``, ``OUTPUT``, ``CT``...); :func:`cropland_labels`
recodes WorldCereal land-cover codes to cropland / other (``ewoc_code`` 11xxxxxxxx =
temporary crops; ``OUTPUT`` 11 = annual cropland) and drops the samples WorldCereal marks
to ignore.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ConfigurationError, InputProductError, optional_import
from ..core.masks import MaskBit
from .features import gapfill_linear, index_features

__all__ = ["SamplesTable", "cropland_labels", "read_samples_table"]

#: Columns of WorldCereal tables that are neither features nor labels.
_META = {"sample_id", "timestamp", "feature_index", "ref_id", "geometry", "tile", "h3_l3_cell",
         "start_date", "end_date", "year", "valid_time", "lat", "lon", "pixelids",
         "location_id", "split", "aez_groupid", "aez_zoneid", "extract", "irrigation_status",
         "quality_score_lc", "quality_score_ct", "WORLDCOVER-LABEL-10m", "POTAPOV-LABEL-10m",
         "IRR", "CT", "OUTPUT", "ewoc_code", "LC"}
#: WorldCereal ``ewoc_code`` land-cover groups that mean "do not use" (legend LANDCOVER10).
_EWOC_IGNORE = (1000000000, 1600000000, 1110000000, 1206000000)


@dataclass
class SamplesTable:
    """Labelled samples read from a table.

    Attributes
    ----------
    X
        ``(n, n_features)`` float32 features.
    names
        Feature names.
    columns
        Label-like columns kept as they are (``ewoc_code``, ``OUTPUT``, ``CT``...), by name.
    groups
        ``(n,)`` int64 group ids >= 1 (the sample, or the ``group_column`` given).
    sample_ids
        The sample id of each row.
    layout
        ``long`` or ``wide``.
    path
        The file read.
    dates
        The dates of a long table (``datetime64[D]``).
    """

    X: np.ndarray
    names: list[str]
    columns: dict[str, np.ndarray]
    groups: np.ndarray
    sample_ids: np.ndarray
    layout: str
    path: str
    dates: np.ndarray = field(default_factory=lambda: np.array([], "datetime64[D]"))

    def column(self, name: str) -> np.ndarray:
        """A label column, or :class:`InputProductError` naming the columns there are."""
        if name not in self.columns:
            raise InputProductError(self.path, f"no column {name!r} (label columns: "
                                               f"{', '.join(sorted(self.columns)) or 'none'})")
        return self.columns[name]


def _band_name(col: str) -> str | None:
    tail = col.rsplit("-", 1)[-1]
    if col.startswith(("S2-L2A-", "S2-")) or col == tail:
        if tail in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"):
            return tail
    return None


def _read_frame(path: Path):
    optional_import("pyarrow", "crop")
    import pandas as pd

    if not path.exists():
        raise InputProductError(path, "no such samples table")
    try:
        if path.is_dir():  # a partitioned dataset: read its parquet files one by one
            files = sorted(path.rglob("*.parquet"))
            if not files:
                raise InputProductError(path, "a folder without .parquet files")
            return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        if path.suffix.lower() in (".csv", ".gz"):
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except InputProductError:
        raise
    except Exception as exc:  # pyarrow / pandas raise many kinds
        raise InputProductError(path, f"cannot be read as a samples table ({exc})") from exc


def read_samples_table(path: str | Path, *, group_column: str | None = None,
                       nodata: int = 65535, scale: float = 1e-4) -> SamplesTable:
    """Read a long or wide samples table (Parquet file or partitioned folder, or CSV).

    Parameters
    ----------
    path
        The table.
    group_column
        The column grouping the samples for the cross-validation (``location_id``...);
        default: each sample its own group (long tables: one point per field).
    nodata
        Band value of a missing observation (long tables).
    scale
        DN to reflectance (long tables).

    Raises
    ------
    InputProductError
        The file cannot be read, has no feature, or lacks ``group_column``.
    """
    p = Path(path)
    df = _read_frame(p)
    if group_column is not None and group_column not in df.columns:
        raise InputProductError(p, f"no column {group_column!r} to group the samples")
    long = "timestamp" in df.columns and "sample_id" in df.columns
    if long:
        return _long(df, p, group_column, nodata, scale)
    names = [c for c in df.columns if c not in _META and c != group_column
             and not str(c).startswith("biome") and np.issubdtype(df[c].dtype, np.number)]
    if not names:
        raise InputProductError(p, "no numeric feature column")
    X = df[names].to_numpy(np.float32)
    cols = {c: df[c].to_numpy() for c in ("OUTPUT", "CT", "LC", "ewoc_code") if c in df.columns}
    ids = (df["sample_id"].to_numpy() if "sample_id" in df.columns
           else np.arange(len(df)).astype(str))
    groups = _groups(df[group_column].to_numpy() if group_column else ids)
    return SamplesTable(X, [str(n) for n in names], cols, groups, ids, "wide", str(p))


def _groups(values) -> np.ndarray:
    return np.unique(np.asarray(values).astype(str), return_inverse=True)[1].astype(np.int64) + 1


def _long(df, p: Path, group_column, nodata, scale) -> SamplesTable:
    bands = {}
    for c in df.columns:
        b = _band_name(str(c))
        if b is not None:
            bands[b] = c
    if not bands:
        raise InputProductError(p, "a long table (sample_id, timestamp) without band columns "
                                   "(S2-L2A-B03 ... or B03 ...)")
    df = df.sort_values(["sample_id", "timestamp"])
    ids = np.unique(df["sample_id"].to_numpy().astype(str))
    dates = np.unique(df["timestamp"].to_numpy().astype("datetime64[D]"))
    si = np.searchsorted(ids, df["sample_id"].to_numpy().astype(str))
    ti = np.searchsorted(dates, df["timestamp"].to_numpy().astype("datetime64[D]"))
    order = [b for b in ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
             if b in bands]
    cube = np.full((len(order), dates.size, ids.size), np.nan, np.float32)
    for k, b in enumerate(order):
        v = df[bands[b]].to_numpy().astype(np.float64)
        v = np.where(v == nodata, np.nan, v * scale)
        cube[k, ti, si] = v
    seen = np.isfinite(cube).any(axis=(1, 2))
    if not seen.any():
        raise InputProductError(p, "every band value is no data")
    order = [b for b, s in zip(order, seen) if s]
    cube = cube[seen]
    mask = np.where(np.isfinite(cube).all(axis=0), 0, int(MaskBit.NODATA)).astype(np.uint8)
    filled = gapfill_linear(cube, mask, dates, dates)  # (band, date, sample)
    per = {b: filled[k] for k, b in enumerate(order)}
    feats, names = [], []
    have_idx = all(b in per for b in ("B03", "B04", "B08", "B11"))
    idx = index_features(per) if have_idx else {}
    tags = [np.datetime_as_string(d).replace("-", "") for d in dates]
    for t, tag in enumerate(tags):
        for b in order:
            feats.append(per[b][t])
            names.append(f"{b}_{tag}")
        for k in ("NDVI", "NDWI", "BRIGHTNESS"):
            if k in idx:
                feats.append(idx[k][t])
                names.append(f"{k}_{tag}")
    X = np.stack(feats, axis=1).astype(np.float32)
    first = df.groupby("sample_id", sort=True).first()
    cols = {c: first[c].to_numpy() for c in ("ewoc_code", "OUTPUT", "CT", "LC")
            if c in first.columns}
    groups = _groups(first[group_column].to_numpy() if group_column else ids)
    return SamplesTable(X, names, cols, groups, ids, "long", str(p), dates)


def cropland_labels(table: SamplesTable, column: str, crop_values=None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Cropland (1) / other (0) labels from a label column, and the rows to keep.

    ``ewoc_code``: 1 for the temporary crops (codes 11xxxxxxxx), WorldCereal's "ignore"
    groups left out; any other column: 1 where the value is in ``crop_values`` (e.g.
    ``OUTPUT`` with 11, WorldCereal's annual cropland).
    """
    v = np.asarray(table.column(column))
    if column == "ewoc_code" and crop_values is None:
        keep = ~np.isin(v, _EWOC_IGNORE)
        return ((v // 10**8) == 11).astype(np.int64), keep
    if crop_values is None:
        raise ConfigurationError(f"give the values of {column!r} that mean cropland")
    return np.isin(v, np.asarray(crop_values)).astype(np.int64), np.ones(v.size, bool)
