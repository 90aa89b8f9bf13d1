"""Reference samples for the crop products: in-situ polygons, parcel groups, training pixels.

* :func:`read_polygons` reads in-situ field polygons (GeoPackage, Shapefile, any OGR vector
  format) with pyogrio: geometry, the class field (Sen2Agri: ``CROP`` for the crop mask,
  ``CODE`` for the crop type) and the feature id;
* :func:`rasterize_polygons` burns them onto the product grid: each pixel gets the index
  of the polygon covering its centre (GDAL's rule), -1 elsewhere;
* :func:`split_polygons` splits the polygons 75 / 25 into training and validation **by
  polygon, never by pixel** (Sen2Agri ``sample-ratio 0.75``; docs/validation.md,
  "Splits by polygon"), class by class so that every class with two polygons or more is on both
  sides, with a seeded random generator;
* :func:`parcel_groups` makes the groups for raster labels (such as WorldCereal's per-pixel
  labels): the connected regions of equal label (8-connectivity: two diagonal neighbours of
  the same class are one group, which keeps leaks between the folds out);
* :func:`interior_pixels` marks the pixels whose whole neighbourhood (radius ``r``) lies in
  their own polygon: the training pixels left after eroding every polygon by ``r`` pixels
  (the mixed pixels of field borders out), and :func:`cap_per_group` keeps at most ``cap``
  pixels of each polygon;
* :func:`sample_pixels` draws the training pixels: at most ``cap`` (Sen2Agri
  ``-nbtrsample``: 10000 for the crop type, 40000 for the crop mask), allocated to the
  classes in proportion to their area (pixel count, Sen2Agri samples training polygons by
  area) but never fewer than ``min_per_class`` pixels of a class that has them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from odc.geo.geobox import GeoBox

from ..core.errors import ConfigurationError, CorruptProductError, InputProductError

__all__ = [
    "Polygons",
    "cap_per_group",
    "group_split",
    "interior_pixels",
    "parcel_groups",
    "rasterize_polygons",
    "read_polygons",
    "sample_pixels",
    "split_polygons",
]


@dataclass(frozen=True)
class Polygons:
    """In-situ polygons read from a vector file.

    Attributes
    ----------
    geometries
        Shapely (multi)polygons, in ``crs``.
    values
        The class field, one value per polygon (integers).
    ids
        The feature ids (unique per polygon).
    crs
        The CRS of the geometries (WKT or ``EPSG:xxxx``).
    path
        The file read.
    field
        The name of the class field.
    """

    geometries: np.ndarray
    values: np.ndarray
    ids: np.ndarray
    crs: str
    path: str
    field: str

    def __len__(self) -> int:
        return len(self.geometries)


def read_polygons(path: str | Path, class_field: str, *, layer: str | int | None = None
                  ) -> Polygons:
    """Read in-situ polygons and their class field.

    Parameters
    ----------
    path
        A vector file OGR reads (GeoPackage, Shapefile, GeoJSON...).
    class_field
        The integer class attribute (``CROP``, ``CODE``...).
    layer
        The layer to read (default: the first).

    Raises
    ------
    InputProductError
        The file cannot be read, has no CRS, no polygon, or lacks the field; a class value is
        missing or not a whole number.
    """
    import shapely

    from ..core.errors import optional_import

    pyogrio = optional_import("pyogrio", "crop")
    p = Path(path)
    if not p.exists():
        raise InputProductError(p, "no such in-situ data file")
    try:
        info = pyogrio.read_info(str(p), layer=layer)
    except Exception as exc:  # pyogrio raises DataSourceError / DataLayerError
        raise CorruptProductError(p, f"cannot open as a vector file: {exc}") from exc
    fields = [str(f) for f in info["fields"]]
    if class_field not in fields:
        low = {f.lower(): f for f in fields}
        if class_field.lower() not in low:
            raise InputProductError(p, f"no field {class_field!r} (fields: {', '.join(fields) or 'none'})")
        class_field = low[class_field.lower()]
    if not info.get("crs"):
        raise InputProductError(p, "the layer has no CRS")
    try:
        meta, fids, wkb, data = pyogrio.raw.read(str(p), layer=layer, columns=[class_field],
                                                 return_fids=True)
    except Exception as exc:
        raise CorruptProductError(p, f"cannot read the features: {exc}") from exc
    geoms = shapely.from_wkb(wkb)
    raw = np.asarray(data[0])
    keep = ~shapely.is_missing(geoms) & ~shapely.is_empty(geoms)
    kinds = shapely.get_type_id(geoms)
    keep &= np.isin(kinds, (3, 6))  # Polygon, MultiPolygon
    if not keep.any():
        raise InputProductError(p, "no polygon in the layer")
    geoms, raw, fids = geoms[keep], raw[keep], np.asarray(fids)[keep]
    try:
        values = raw.astype(np.float64)
    except (TypeError, ValueError):
        raise InputProductError(p, f"field {class_field!r} is not numeric") from None
    bad = ~np.isfinite(values) | (values != np.round(values))
    if bad.any():
        raise InputProductError(p, f"field {class_field!r}: {int(bad.sum())} polygon(s) without a "
                                   "whole-number class (first fid "
                                   f"{int(fids[np.argmax(bad)])})")
    return Polygons(geometries=geoms, values=values.astype(np.int64), ids=fids.astype(np.int64),
                    crs=str(meta["crs"]), path=str(p), field=class_field)


def rasterize_polygons(polygons: Polygons, geobox: GeoBox) -> np.ndarray:
    """The index of the polygon covering each pixel centre of ``geobox`` (-1: none), int32.

    Polygons are reprojected to the grid's CRS first. Where polygons overlap, the one later
    in the file wins.
    """
    import shapely
    from pyproj import CRS as PCRS
    from pyproj import Transformer
    from rasterio.features import rasterize

    geoms = polygons.geometries
    src, dst = PCRS.from_user_input(polygons.crs), PCRS.from_user_input(geobox.crs.to_wkt())
    if not src.equals(dst):
        tr = Transformer.from_crs(src, dst, always_xy=True)
        geoms = shapely.transform(geoms, lambda xy: np.column_stack(tr.transform(xy[:, 0], xy[:, 1])))
    ny, nx = geobox.shape
    out = rasterize(((g, i) for i, g in enumerate(geoms)), out_shape=(ny, nx),
                    transform=geobox.affine, fill=-1, dtype="int32", all_touched=False)
    return out


def split_polygons(ids: np.ndarray, classes: np.ndarray, ratio: float = 0.75,
                   seed: int = 0) -> np.ndarray:
    """Split polygons into training and validation, class by class.

    Parameters
    ----------
    ids
        One id per polygon (or per parcel group).
    classes
        The class of each.
    ratio
        Share of each class's polygons that goes to training (Sen2Agri 0.75).
    seed
        Seed of the random permutation.

    Returns
    -------
    numpy.ndarray
        Boolean, True for the training polygons. Per class, ``round(ratio * n)`` polygons
        train, but at least one polygon goes to each side when the class has two or more
        (a single polygon trains).
    """
    if not 0.0 < ratio <= 1.0:
        raise ConfigurationError(f"ratio {ratio!r}: expected 0 < ratio <= 1")
    ids = np.asarray(ids)
    classes = np.asarray(classes)
    if ids.shape != classes.shape:
        raise ConfigurationError("ids and classes differ in length")
    if np.unique(ids).size != ids.size:
        raise ConfigurationError("split_polygons: the ids are not unique")
    rng = np.random.default_rng(seed)
    train = np.zeros(ids.size, bool)
    for c in np.unique(classes):
        members = np.flatnonzero(classes == c)
        members = members[np.argsort(ids[members], kind="stable")]  # independent of input order
        n = members.size
        k = round(ratio * n)
        if n >= 2:
            k = min(max(k, 1), n - 1) if ratio < 1.0 else n
        else:
            k = n
        train[rng.permutation(members)[:k]] = True
    return train


def parcel_groups(labels: np.ndarray, nodata=None, connectivity: int = 8) -> np.ndarray:
    """Connected regions of equal label: the parcel groups of a raster of labels.

    Parameters
    ----------
    labels
        2-D class raster (integers or floats; NaN is no label).
    nodata
        A value meaning no label (besides NaN).
    connectivity
        4 or 8 (default: diagonal neighbours are connected).

    Returns
    -------
    numpy.ndarray
        int32 group ids 1..n, 0 where there is no label.
    """
    from scipy import ndimage

    lab = np.asarray(labels)
    if lab.ndim != 2:
        raise ConfigurationError(f"labels: expected a 2-D raster, got shape {lab.shape}")
    if connectivity not in (4, 8):
        raise ConfigurationError(f"connectivity {connectivity!r}: expected 4 or 8")
    valid = np.ones(lab.shape, bool)
    if np.issubdtype(lab.dtype, np.floating):
        valid &= np.isfinite(lab)
    if nodata is not None:
        valid &= lab != nodata
    structure = np.ones((3, 3), bool) if connectivity == 8 else None
    out = np.zeros(lab.shape, np.int32)
    n = 0
    for c in np.unique(lab[valid]):
        comp, k = ndimage.label(valid & (lab == c), structure=structure)
        out[comp > 0] = comp[comp > 0] + n
        n += k
    return out


def group_split(groups: np.ndarray, classes: np.ndarray, ratio: float = 0.75,
                seed: int = 0) -> np.ndarray:
    """Training / validation split of labelled pixels by group (parcel or polygon).

    ``groups`` and ``classes`` are per-pixel arrays of the same shape (group 0 or a negative
    group = not labelled). A group's class is its most frequent pixel class. Returns an int8
    array: 1 training, 2 validation, 0 unlabelled.
    """
    g = np.asarray(groups).ravel()
    c = np.asarray(classes).ravel()
    lab = g > 0
    out = np.zeros(g.size, np.int8)
    if not lab.any():
        return out.reshape(np.shape(groups))
    ug, ginv = np.unique(g[lab], return_inverse=True)
    uc, cinv = np.unique(c[lab], return_inverse=True)
    counts = np.zeros((ug.size, uc.size), np.int64)
    np.add.at(counts, (ginv, cinv), 1)
    majority = uc[counts.argmax(axis=1)]
    train_g = split_polygons(ug, majority, ratio, seed)
    out[lab] = np.where(train_g[ginv], 1, 2)
    return out.reshape(np.shape(groups))


def sample_pixels(labels: np.ndarray, cap: int, *, seed: int = 0, min_per_class: int = 100
                  ) -> np.ndarray:
    """Draw training pixels: at most ``cap``, in proportion to class area.

    Parameters
    ----------
    labels
        1-D class of each candidate pixel.
    cap
        Most pixels drawn in all (all pixels when there are fewer).
    seed
        Random seed.
    min_per_class
        Each class keeps at least ``min(min_per_class, its pixel count)`` pixels.

    Returns
    -------
    numpy.ndarray
        Sorted indices into ``labels``.
    """
    labels = np.asarray(labels).ravel()
    if cap < 1:
        raise ConfigurationError(f"cap {cap!r}: expected at least 1 sample")
    n = labels.size
    if n <= cap:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    mins = np.minimum(counts, max(0, int(min_per_class)))
    if mins.sum() >= cap:  # the minima alone fill the cap: share it in proportion to them
        mins = np.floor(cap * mins / mins.sum()).astype(np.int64)
    quota = np.minimum(np.maximum(np.floor(cap * counts / n).astype(np.int64), mins), counts)
    excess = int(quota.sum()) - cap
    if excess > 0:  # raising small classes to their minimum overshot: take it from the others
        slack = quota - mins
        take = np.floor(excess * slack / max(int(slack.sum()), 1)).astype(np.int64)
        quota -= take
        excess -= int(take.sum())
        for k in np.argsort(-(quota - mins), kind="stable"):
            if excess <= 0:
                break
            d = min(excess, int(quota[k] - mins[k]))
            quota[k] -= d
            excess -= d
    rest = cap - int(quota.sum())
    for k in np.argsort(-counts, kind="stable"):  # rounding leftovers to the largest classes
        if rest <= 0:
            break
        add = min(rest, int(counts[k] - quota[k]))
        quota[k] += add
        rest -= add
    picked = []
    for c, q in zip(classes, quota):
        members = np.flatnonzero(labels == c)
        picked.append(rng.choice(members, size=int(q), replace=False))
    return np.sort(np.concatenate(picked))


def interior_pixels(groups: np.ndarray, radius: int = 1, nodata: int = 0) -> np.ndarray:
    """Pixels whose square neighbourhood of ``radius`` pixels lies wholly in their own group.

    Parameters
    ----------
    groups
        2-D integer raster of group ids (parcel ids of :func:`parcel_groups`, or the polygon
        index of :func:`rasterize_polygons` with ``nodata=-1``).
    radius
        Erosion radius in pixels (0: every labelled pixel).
    nodata
        The value of unlabelled pixels.

    Returns
    -------
    numpy.ndarray
        Boolean raster: the labelled pixels left after eroding every group by ``radius``
        (the mixed pixels of field borders out). The raster edge is not a field border:
        a pixel there is interior when its neighbourhood inside the raster is.
    """
    from scipy import ndimage

    g = np.asarray(groups)
    if g.ndim != 2:
        raise ConfigurationError(f"groups: expected a 2-D raster, got shape {g.shape}")
    if int(radius) != radius or radius < 0:
        raise ConfigurationError(f"radius {radius!r}: expected a whole number of pixels >= 0")
    labelled = g != nodata
    if radius == 0:
        return labelled
    size = 2 * int(radius) + 1
    lo = ndimage.minimum_filter(g, size=size, mode="nearest")
    hi = ndimage.maximum_filter(g, size=size, mode="nearest")
    return labelled & (lo == g) & (hi == g)


def cap_per_group(indices: np.ndarray, groups: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """At most ``cap`` of ``indices`` per group (``groups[indices]``), drawn at random (seeded);
    sorted. A big field then weighs no more than ``cap`` pixels in the training set."""
    if cap < 1:
        raise ConfigurationError(f"cap {cap!r}: expected at least 1 pixel per group")
    idx = np.asarray(indices)
    g = np.asarray(groups)[idx]
    rng = np.random.default_rng(seed)
    keep = []
    for v in np.unique(g):
        m = idx[g == v]
        keep.append(m if m.size <= cap else rng.choice(m, cap, replace=False))
    return np.sort(np.concatenate(keep)) if keep else idx[:0]
