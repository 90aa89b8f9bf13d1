"""Validate a classified map file against a reference raster or vector file.

:func:`validate_map` compares a class map (GeoTIFF/COG, band 1) with reference labels
and returns an :class:`~agriseries.validation.metrics.AccuracyReport`
(docs/validation.md):

* a **raster** reference on the same grid is read as is; on another grid it is
  reprojected onto the map grid with nearest-neighbour resampling (a GDAL warped
  VRT, read window by window); its no-data, internal masks and the area outside its
  footprint are excluded;
* a **vector** reference (GeoPackage, GeoJSON, Shapefile, ... read with pyogrio) is
  reprojected to the map CRS and rasterised onto the map grid
  (``rasterio.features.rasterize``, pixel centres inside the geometry, points give
  the pixel that holds them); ``class_field`` names the attribute holding the class
  code. Where polygons overlap, the one later in the file wins;
* map no-data (the file's, or ``nodata``) is excluded from the comparison and from
  the mapped areas.

The map is read in windows (1024 x 1024 by default, in its native data type), and
the counts of every (map class, reference class) pair are accumulated, so a full
Sentinel-2 tile (10980 x 10980 px) never sits in memory as one array.

Mapped areas for the area-adjusted estimates of Olofsson et al. (2014): the pixel
count of each map class over the whole map times the pixel area (default), or of
each class of ``strata_path``, a raster of the strata the sample was drawn from
(their classes must be the map classes: the estimator of Olofsson et al. assumes strata =
map classes). The estimates assume the reference pixels are a stratified random
sample of the map; pixels taken from polygons are clustered, so for polygon
references the standard errors are optimistic (a note says so).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from ..core.errors import InputProductError
from .metrics import AccuracyReport, report_from_matrix

__all__ = ["VECTOR_SUFFIXES", "validate_map"]

VECTOR_SUFFIXES = (".gpkg", ".geojson", ".json", ".shp", ".fgb", ".gml", ".kml", ".sqlite",
                   ".geojsonl", ".geojsons", ".parquet")
"""File suffixes read as vector references (anything else is tried as a raster first)."""

WINDOW = 1024
_FILL = np.iinfo(np.int32).min  # rasterize fill value: "no reference here"


# ----------------------------------------------------------------------------- raster helpers

def _open_raster(path):
    import rasterio
    from rasterio.errors import RasterioError

    try:
        ds = rasterio.open(path)
    except (RasterioError, OSError) as exc:
        raise InputProductError(path, f"cannot be read as a raster ({exc})") from exc
    if ds.count < 1:
        ds.close()
        raise InputProductError(path, "the raster has no band")
    return ds


def _windows(height: int, width: int, size: int) -> Iterator:
    from rasterio.windows import Window

    for row in range(0, height, size):
        for col in range(0, width, size):
            yield Window(col, row, min(size, width - col), min(size, height - row))


def _read(ds, window, path, band: int = 1, nodata=None, mask_band: int | None = None):
    """Values and validity of one window; validity from ``nodata`` (when given), else the
    dataset mask (or ``mask_band``, a warped alpha band); NaN is never valid."""
    from rasterio.errors import RasterioError

    try:
        arr = ds.read(band, window=window)
        if nodata is not None:
            valid = arr != nodata
        elif mask_band is not None:
            valid = ds.read(mask_band, window=window) > 0
        else:
            valid = ds.read_masks(band, window=window) > 0
    except (RasterioError, OSError) as exc:
        raise InputProductError(path, f"cannot be read at window {window} ({exc})") from exc
    if arr.dtype.kind == "f":
        valid &= ~np.isnan(arr)
        bad = valid & (np.mod(arr, 1) != 0)
        if bad.any():
            raise InputProductError(
                path, f"holds non-integral class values such as {arr[bad][:3].tolist()} "
                "(a class map of integer codes is expected)")
    return arr, valid


def _area_unit(crs) -> str:
    if crs is None:
        return "pixel unit²"
    if crs.is_geographic:
        return "degree²"
    unit = (crs.linear_units or "").lower()
    return "m²" if unit in ("metre", "meter", "m", "metres", "meters") else f"{unit}²"


def _pixel_area(transform) -> float:
    return abs(transform.a * transform.e - transform.b * transform.d)


def _class_counts(ds, path, nodata=None, size: int = WINDOW) -> Counter:
    """Pixel count of each class of band 1 over the whole raster, window by window."""
    counts: Counter = Counter()
    for w in _windows(ds.height, ds.width, size):
        arr, valid = _read(ds, w, path, nodata=nodata)
        vals, cnt = np.unique(arr[valid], return_counts=True)
        for v, c in zip(vals.tolist(), cnt.tolist()):
            counts[int(v)] += int(c)
    return counts


def _bounds_overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# ----------------------------------------------------------------------------- references

class _RasterReference:
    def __init__(self, path, map_ds, nodata=None):
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import transform_bounds

        self.path = path
        self.src = _open_raster(path)
        self.nodata = nodata
        self.mask_band = None
        if self.src.crs is None or map_ds.crs is None:
            self.src.close()
            raise InputProductError(path if self.src.crs is None else map_ds.name,
                                    "has no coordinate reference system")
        try:
            ref_bounds = transform_bounds(self.src.crs, map_ds.crs, *self.src.bounds)
        except Exception as exc:  # pragma: no cover - pyproj failure on exotic CRS
            raise InputProductError(path, f"cannot be placed in the map CRS ({exc})") from exc
        if not _bounds_overlap(ref_bounds, tuple(map_ds.bounds)):
            self.src.close()
            raise InputProductError(
                path, f"does not overlap the map {map_ds.name} (reference bounds in the map "
                f"CRS {tuple(round(v, 3) for v in ref_bounds)}, map bounds "
                f"{tuple(round(v, 3) for v in map_ds.bounds)})")
        aligned = (self.src.crs == map_ds.crs and self.src.shape == map_ds.shape
                   and self.src.transform.almost_equals(map_ds.transform))
        self.reprojected = not aligned
        if aligned:
            self.ds = self.src
        else:
            self.ds = WarpedVRT(self.src, crs=map_ds.crs, transform=map_ds.transform,
                                width=map_ds.width, height=map_ds.height,
                                resampling=Resampling.nearest, add_alpha=True)
            self.mask_band = self.ds.count  # the alpha band: 0 outside / no-data

    def read(self, window):
        if self.mask_band is not None:
            arr, valid = _read(self.ds, window, self.path, mask_band=self.mask_band)
            if self.nodata is not None:
                valid &= arr != self.nodata
            return arr, valid
        return _read(self.ds, window, self.path, nodata=self.nodata)

    def close(self):
        if self.ds is not self.src:
            self.ds.close()
        self.src.close()


def _vector_values(path, raw, class_field, labels, class_names) -> np.ndarray:
    """Class codes (int64) of the features; string fields are mapped through
    ``class_names`` when they are not integer text."""
    values = np.asarray(raw)
    if values.dtype.kind in "iu":
        return values.astype(np.int64)
    if values.dtype.kind == "f":
        ok = ~np.isnan(values)
        if np.any(np.mod(values[ok], 1) != 0):
            raise InputProductError(path, f"field {class_field!r} holds non-integral values "
                                    "(integer class codes expected)")
        return np.where(ok, values, _FILL).astype(np.int64)
    if values.dtype.kind == "b":
        return values.astype(np.int64)
    text = [None if v is None else str(v).strip() for v in values.tolist()]
    try:
        return np.array([_FILL if t in (None, "") else int(t) for t in text], np.int64)
    except ValueError:
        pass
    if labels is None or class_names is None:
        raise InputProductError(
            path, f"field {class_field!r} holds names, not integer codes (e.g. "
            f"{[t for t in text if t][:3]}); pass labels and class_names to map names to "
            "the map's codes")
    by_name = {str(n): int(v) for v, n in zip(labels, class_names)}
    unknown = sorted({t for t in text if t and t not in by_name})
    if unknown:
        raise InputProductError(path, f"field {class_field!r} has class names that are not "
                                f"in class_names: {unknown[:10]}")
    return np.array([_FILL if not t else by_name[t] for t in text], np.int64)


class _VectorReference:
    def __init__(self, path, map_ds, class_field, layer, labels, class_names, all_touched):
        import shapely

        from ..core.errors import optional_import

        pyogrio = optional_import("pyogrio", "validation")
        from pyogrio.errors import DataLayerError, DataSourceError
        from pyproj import CRS, Transformer

        self.path = path
        self.all_touched = all_touched
        try:
            info = pyogrio.read_info(path, layer=layer)
        except (DataSourceError, DataLayerError, OSError) as exc:
            raise InputProductError(path, f"cannot be read as a vector file ({exc})") from exc
        fields = [str(f) for f in info["fields"]]
        if class_field is None:
            raise InputProductError(path, "is a vector reference: the class field must be "
                                    f"given (class_field); its fields are {fields}")
        if class_field not in fields:
            raise InputProductError(path, f"has no field {class_field!r}; its fields are "
                                    f"{fields}")
        try:
            meta, _fids, wkb, field_data = pyogrio.raw.read(path, layer=layer,
                                                            columns=[class_field])
        except Exception as exc:
            raise InputProductError(path, f"cannot be read as a vector file ({exc})") from exc
        if meta.get("crs") is None:
            raise InputProductError(path, "has no coordinate reference system")
        if map_ds.crs is None:
            raise InputProductError(map_ds.name, "has no coordinate reference system")
        geoms = shapely.from_wkb(wkb) if wkb is not None else np.array([], object)
        values = _vector_values(path, field_data[0], class_field, labels, class_names)
        keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms) & (values != _FILL)
        self.n_features = len(geoms)
        self.n_skipped = int((~keep).sum())
        geoms, values = geoms[keep], values[keep]
        src_crs, dst_crs = CRS.from_user_input(meta["crs"]), CRS.from_user_input(map_ds.crs.to_wkt())
        self.reprojected = not src_crs.equals(dst_crs)
        if self.reprojected:
            tr = Transformer.from_crs(src_crs, dst_crs, always_xy=True)
            geoms = shapely.transform(
                geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
        # Polygon (3), MultiPolygon (6), GeometryCollection (7)
        self.is_polygonal = bool(np.isin(shapely.get_type_id(geoms), (3, 6, 7)).any())
        if len(geoms) == 0:
            raise InputProductError(path, f"has no feature with a geometry and a value of "
                                    f"{class_field!r}")
        bounds = shapely.total_bounds(geoms)
        mb = tuple(map_ds.bounds)
        # inclusive test: points and lines can have zero-width bounds
        if not (bounds[0] <= mb[2] and mb[0] <= bounds[2] and bounds[1] <= mb[3]
                and mb[1] <= bounds[3]):
            raise InputProductError(
                path, f"does not overlap the map {map_ds.name} (reference bounds in the map "
                f"CRS {tuple(round(float(v), 3) for v in bounds)}, map bounds "
                f"{tuple(round(v, 3) for v in map_ds.bounds)})")
        if np.any((values < np.iinfo(np.int32).min + 1) | (values > np.iinfo(np.int32).max)):
            raise InputProductError(path, f"field {class_field!r} has codes outside int32")
        self.geoms, self.values = geoms, values
        self.tree = shapely.STRtree(geoms)
        self.map_ds = map_ds

    def read(self, window):
        import shapely
        from rasterio.features import rasterize
        from rasterio.windows import bounds as window_bounds
        from rasterio.windows import transform as window_transform

        shape = (int(window.height), int(window.width))
        box = shapely.box(*window_bounds(window, self.map_ds.transform))
        idx = np.sort(self.tree.query(box))  # keep file order: later features win
        if idx.size == 0:
            return np.full(shape, _FILL, np.int32), np.zeros(shape, bool)
        arr = rasterize(zip(self.geoms[idx], self.values[idx].tolist()), out_shape=shape,
                        transform=window_transform(window, self.map_ds.transform),
                        fill=_FILL, dtype="int32", all_touched=self.all_touched)
        return arr, arr != _FILL

    def close(self):
        pass


# ----------------------------------------------------------------------------- main entry

def _is_vector(path: Path) -> bool:
    if path.suffix.lower() in VECTOR_SUFFIXES or path.is_dir():
        return True
    if path.suffix.lower() in (".tif", ".tiff", ".vrt", ".img", ".nc", ".jp2"):
        return False
    import rasterio
    from rasterio.errors import RasterioError

    try:
        with rasterio.open(path):
            return False
    except (RasterioError, OSError):
        return True


def validate_map(map_path, reference, *, class_field: str | None = None,
                 strata_path=None, labels: Sequence | None = None,
                 class_names: Sequence[str] | None = None, nodata: float | None = None,
                 reference_nodata: float | None = None, layer: str | int | None = None,
                 all_touched: bool = False, window: int = WINDOW) -> AccuracyReport:
    """Accuracy of a class map against a reference raster or vector file.

    Parameters
    ----------
    map_path
        The map: a raster whose band 1 holds integer class codes.
    reference
        A raster of class codes (any grid; reprojected onto the map grid with nearest
        neighbour) or a vector file (GeoPackage, GeoJSON, Shapefile, ...) whose
        ``class_field`` holds the class code of each polygon/point.
    class_field
        Attribute of the vector reference holding the class (required for vectors).
        Integer codes, integer text, or class names when ``labels`` and
        ``class_names`` are given.
    strata_path
        Raster of the sampling strata (= map classes) whose class pixel counts give
        the mapped areas; default: the map itself.
    labels
        Class codes (order of the matrix). Default: every class found in the map or the
        reference. A class outside ``labels`` raises an error naming the file.
    class_names
        Readable names, one per label.
    nodata
        Map value to exclude, overriding the file's no-data.
    reference_nodata
        Reference raster value to exclude, overriding the file's no-data.
    layer
        Layer of a multi-layer vector file (default: the first).
    all_touched
        Rasterise every pixel a polygon touches instead of those whose centre is inside.
    window
        Window size in pixels for reading the map.

    Returns
    -------
    AccuracyReport
        Counts over the pixels where both the map and the reference are valid, and the
        area-adjusted estimates with the mapped areas in the map CRS units (m² for UTM).

    Raises
    ------
    agriseries.core.errors.InputProductError
        Unreadable map, reference or strata file; missing class field; no overlap; no
        pixel in common; classes outside ``labels``.
    """
    map_path = Path(map_path)
    reference = Path(reference)
    if not map_path.exists():
        raise InputProductError(map_path, "the map file does not exist")
    if not reference.exists():
        raise InputProductError(reference, "the reference file does not exist")
    if labels is not None and class_names is not None and len(labels) != len(class_names):
        from ..core.errors import ConfigurationError
        raise ConfigurationError(f"{len(class_names)} class names for {len(labels)} labels")

    map_ds = _open_raster(map_path)
    ref = None
    try:
        if _is_vector(reference):
            ref = _VectorReference(reference, map_ds, class_field, layer, labels, class_names,
                                   all_touched)
            kind = "vector"
        else:
            ref = _RasterReference(reference, map_ds, reference_nodata)
            kind = "raster"

        pairs: Counter = Counter()
        map_counts: Counter = Counter()
        for w in _windows(map_ds.height, map_ds.width, window):
            m_arr, m_valid = _read(map_ds, w, map_path, nodata=nodata)
            if strata_path is None:
                vals, cnt = np.unique(m_arr[m_valid], return_counts=True)
                for v, c in zip(vals.tolist(), cnt.tolist()):
                    map_counts[int(v)] += int(c)
            r_arr, r_valid = ref.read(w)
            both = m_valid & r_valid
            if not both.any():
                continue
            mv, rv = m_arr[both], r_arr[both]
            um, im = np.unique(mv, return_inverse=True)
            ur, ir = np.unique(rv, return_inverse=True)
            block = np.bincount(im.ravel() * ur.size + ir.ravel(), minlength=um.size * ur.size)
            block = block.reshape(um.size, ur.size)
            for a, b in zip(*np.nonzero(block)):
                pairs[(int(um[a]), int(ur[b]))] += int(block[a, b])
        map_pixel_area = _pixel_area(map_ds.transform)
        unit = _area_unit(map_ds.crs)
        map_crs = map_ds.crs.to_string() if map_ds.crs else None
        map_shape = (map_ds.height, map_ds.width)
    finally:
        if ref is not None:
            ref.close()
        map_ds.close()

    if not pairs:
        raise InputProductError(reference, f"no reference pixel falls on a valid pixel of "
                                f"the map {map_path}")

    if strata_path is not None:
        strata_path = Path(strata_path)
        with _open_raster(strata_path) as sds:
            strata_counts = _class_counts(sds, strata_path)
            strata_pixel_area = _pixel_area(sds.transform)
            if sds.crs is not None and _area_unit(sds.crs) != unit:
                raise InputProductError(strata_path, f"its area unit ({_area_unit(sds.crs)}) "
                                        f"differs from the map's ({unit})")
        areas = {k: v * strata_pixel_area for k, v in strata_counts.items()}
    else:
        areas = {k: v * map_pixel_area for k, v in map_counts.items()}

    map_classes = {a for a, _ in pairs} | set(areas)
    ref_classes = {b for _, b in pairs}
    if labels is None:
        lab = sorted(map_classes | ref_classes)
    else:
        lab = [int(v) for v in labels]
        for what, path, found in (("map", map_path, {a for a, _ in pairs} | (
                set(areas) if strata_path is None else set())),
                                  ("reference", reference, ref_classes),
                                  ("strata", strata_path, set(areas) if strata_path else set())):
            extra = sorted(found - set(lab))
            if extra:
                raise InputProductError(
                    path, f"the {what} holds classes {extra[:10]} that are not in labels "
                    f"{lab}; add them to labels or declare them no-data")
    index = {v: k for k, v in enumerate(lab)}
    q = len(lab)
    matrix = np.zeros((q, q), np.int64)
    for (a, b), c in pairs.items():
        matrix[index[a], index[b]] += c
    mapped = [float(areas.get(v, 0.0)) for v in lab]

    notes = []
    if kind == "vector":
        if ref.n_skipped:
            notes.append(f"{ref.n_skipped} of {ref.n_features} reference features had no "
                         "geometry or no class value and were skipped")
        if ref.is_polygonal:
            notes.append("reference pixels come from polygons (cluster sample): the "
                         "confidence intervals of the area-adjusted estimates, which assume "
                         "independent pixels drawn at random within each map class, are "
                         "too narrow")
    else:
        notes.append("the area-adjusted estimates treat the valid reference pixels as a "
                     "stratified random sample of the map classes; for a wall-to-wall "
                     "reference they are the exact class proportions and their intervals "
                     "have no sampling meaning")
    metadata = {
        "map": str(map_path), "reference": str(reference), "reference_kind": kind,
        "class_field": class_field, "strata": str(strata_path) if strata_path else None,
        "nodata": nodata, "map_shape": list(map_shape), "crs": map_crs,
        "pixel_area": map_pixel_area, "area_unit": unit,
        "reference_reprojected": bool(ref.reprojected),
    }
    if unit == "m²":
        metadata["hectares_per_area_unit"] = 1e-4
    return report_from_matrix(matrix, lab, class_names, mapped, None, area_unit=unit,
                              notes=notes, metadata=metadata)

