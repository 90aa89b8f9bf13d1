"""The common mask bits and the decoders from every provider's quality layers.

Every reader turns its provider's quality layers into one ``uint8`` variable,
``mask``, whose bits mean the same whatever the source:

=====  =====  =================  ==================================================
bit    value  name               set when
=====  =====  =================  ==================================================
0      1      CLOUD              opaque or thick cloud (any provider's cloud class)
1      2      CLOUD_SHADOW       shadow cast by a cloud
2      4      SNOW               snow or ice
3      8      WATER              open water
4      16     CIRRUS             thin cirrus / high cloud (1.38 um test)
5      32     SATURATED          saturated or defective pixel (any band)
6      64     NODATA             outside the swath / no measurement
7      128    TOPO_SHADOW        topographic shadow (self or cast), hidden faces
=====  =====  =================  ==================================================

A pixel with no bit set is clear land. Several bits may be set together (a
saturated cloud). :data:`INVALID` is the usual "do not use for land" set.

The decoders are pure functions of the provider's arrays (``numpy`` or ``dask``):

* :func:`from_scl` -- Sen2Cor scene classification (docs/inputs.md), optionally
  sharpened with the cloud probability layer ``MSK_CLDPRB``.
* :func:`from_muscate` -- THEIA MUSCATE CLM/MG2/EDG/SAT (docs/inputs.md).
* :func:`from_qa_pixel` -- USGS Landsat Collection 2 ``QA_PIXEL`` and ``QA_RADSAT``.
* :func:`from_pixel_qa_c1` -- USGS Landsat 8 Collection 1 surface reflectance ``pixel_qa``.
"""

from __future__ import annotations

import enum

import numpy as np


class MaskBit(enum.IntFlag):
    """The common mask bits (see the module docstring)."""

    CLOUD = 1
    CLOUD_SHADOW = 2
    SNOW = 4
    WATER = 8
    CIRRUS = 16
    SATURATED = 32
    NODATA = 64
    TOPO_SHADOW = 128


#: Bits that make a pixel unusable for land surface reflectance.
INVALID = (MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.CIRRUS | MaskBit.SATURATED
           | MaskBit.NODATA)

#: ``flag_meanings`` / ``flag_masks`` attributes (CF conventions) for the mask variable.
CF_ATTRS = {
    "flag_masks": np.array([int(b) for b in MaskBit], dtype=np.uint8),
    "flag_meanings": " ".join(b.name.lower() for b in MaskBit),
    "long_name": "agriseries common mask bits",
}


def _lut(mapping: dict[int, int], size: int = 256) -> np.ndarray:
    lut = np.zeros(size, dtype=np.uint8)
    for value, bits in mapping.items():
        lut[value] = bits
    return lut


#: Sen2Cor SCL class -> mask bits (docs/inputs.md, "Sen2Cor SCL classes"). Class 7 "unclassified" is not
#: flagged (Sen2Cor's own doc calls it low cloud probability; most users keep it).
SCL_TO_BITS = {
    0: MaskBit.NODATA,
    1: MaskBit.SATURATED,
    2: MaskBit.TOPO_SHADOW,
    3: MaskBit.CLOUD_SHADOW,
    4: 0,
    5: 0,
    6: MaskBit.WATER,
    7: 0,
    8: MaskBit.CLOUD,
    9: MaskBit.CLOUD,
    10: MaskBit.CIRRUS,
    11: MaskBit.SNOW,
}
_SCL_LUT = _lut({k: int(v) for k, v in SCL_TO_BITS.items()})
# SCL values above 11 do not exist; treat them as no data rather than as clear land.
_SCL_LUT[12:] = int(MaskBit.NODATA)


def from_scl(scl, cloud_probability=None, cloud_probability_threshold: int = 65):
    """Decode a Sen2Cor scene classification layer to the common bits.

    Parameters
    ----------
    scl
        SCL class values (``uint8``).
    cloud_probability
        Optional ``MSK_CLDPRB`` layer (0-100 %), same shape as ``scl``. Pixels at or above
        ``cloud_probability_threshold`` get the CLOUD bit even where SCL says otherwise
        (except no-data pixels).
    cloud_probability_threshold
        Percentage above which ``MSK_CLDPRB`` marks a cloud. 65 % is Sen2Cor's own
        boundary between its medium (class 8) and high (class 9) cloud probability.
    """
    bits = np.take(_SCL_LUT, scl.astype(np.uint8)) if isinstance(scl, np.ndarray) else \
        scl.astype(np.uint8).map_blocks(lambda b: np.take(_SCL_LUT, b), dtype=np.uint8)
    if cloud_probability is not None:
        cloudy = (cloud_probability >= cloud_probability_threshold) & (cloud_probability <= 100)
        cloudy = cloudy & ((bits & MaskBit.NODATA) == 0)
        bits = bits | (cloudy.astype(np.uint8) * np.uint8(MaskBit.CLOUD))
    return bits.astype(np.uint8)


def _bit(arr, n: int):
    return (arr >> n) & 1


def from_muscate(clm=None, mg2=None, edg=None, sat=None):
    """Decode THEIA MUSCATE masks (docs/inputs.md, "MUSCATE masks") to the common bits.

    Parameters
    ----------
    clm
        ``CLM`` cloud mask: bit 0 (summary) is not used alone; bits 1-4 are clouds
        (bit 4, the thinnest clouds, included as in MAJA's "all clouds"), bits 5-6
        shadows, bit 7 high clouds from the 1.38 um band -> CIRRUS.
    mg2
        ``MG2`` geophysical mask: bit 0 water, 1 clouds, 2 snow, 3 cloud shadows,
        4 topographic shadows, 5 hidden faces.
    edg
        ``EDG`` edge mask (non-zero = outside the swath) -> NODATA.
    sat
        ``SAT`` saturation mask (one bit per band, any set) -> SATURATED.
    """
    out = None

    def _or(acc, cond, bit):
        val = cond.astype(np.uint8) * np.uint8(bit)
        return val if acc is None else acc | val

    if clm is not None:
        clm = clm.astype(np.uint8)
        cloud = (_bit(clm, 1) | _bit(clm, 2) | _bit(clm, 3) | _bit(clm, 4)).astype(bool)
        out = _or(out, cloud, MaskBit.CLOUD)
        out = _or(out, (_bit(clm, 5) | _bit(clm, 6)).astype(bool), MaskBit.CLOUD_SHADOW)
        out = _or(out, _bit(clm, 7).astype(bool), MaskBit.CIRRUS)
    if mg2 is not None:
        mg2 = mg2.astype(np.uint8)
        out = _or(out, _bit(mg2, 0).astype(bool), MaskBit.WATER)
        out = _or(out, _bit(mg2, 1).astype(bool), MaskBit.CLOUD)
        out = _or(out, _bit(mg2, 2).astype(bool), MaskBit.SNOW)
        out = _or(out, _bit(mg2, 3).astype(bool), MaskBit.CLOUD_SHADOW)
        out = _or(out, (_bit(mg2, 4) | _bit(mg2, 5)).astype(bool), MaskBit.TOPO_SHADOW)
    if sat is not None:
        out = _or(out, sat != 0, MaskBit.SATURATED)
    if edg is not None:
        out = _or(out, edg != 0, MaskBit.NODATA)
    if out is None:
        raise ValueError("from_muscate needs at least one of clm, mg2, edg, sat")
    return out.astype(np.uint8)


def from_qa_pixel(qa_pixel, qa_radsat=None):
    """Decode USGS Landsat Collection 2 ``QA_PIXEL`` (and ``QA_RADSAT``) to the common bits.

    ``QA_PIXEL`` bits (Landsat 8-9 C2 product guide): 0 fill, 1 dilated cloud,
    2 cirrus, 3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water. Dilated clouds are
    counted as CLOUD (they are USGS's buffer around clouds). ``QA_RADSAT``: bits 0-10
    saturation of bands 1-11 and bit 11 terrain occlusion (-> TOPO_SHADOW).
    """
    qa = qa_pixel.astype(np.uint16)
    out = (_bit(qa, 0).astype(np.uint8) * np.uint8(MaskBit.NODATA)
           | (_bit(qa, 1) | _bit(qa, 3)).astype(np.uint8) * np.uint8(MaskBit.CLOUD)
           | _bit(qa, 2).astype(np.uint8) * np.uint8(MaskBit.CIRRUS)
           | _bit(qa, 4).astype(np.uint8) * np.uint8(MaskBit.CLOUD_SHADOW)
           | _bit(qa, 5).astype(np.uint8) * np.uint8(MaskBit.SNOW)
           | _bit(qa, 7).astype(np.uint8) * np.uint8(MaskBit.WATER))
    if qa_radsat is not None:
        rs = qa_radsat.astype(np.uint16)
        out = out | ((rs & 0x07FF) != 0).astype(np.uint8) * np.uint8(MaskBit.SATURATED)
        out = out | _bit(rs, 11).astype(np.uint8) * np.uint8(MaskBit.TOPO_SHADOW)
    return out.astype(np.uint8)


def from_pixel_qa_c1(pixel_qa):
    """Decode a USGS Landsat 8 Collection 1 surface reflectance ``pixel_qa`` to the common bits.

    Collection 1 bits (LaSRC / CFMask, Landsat 8 SR product guide) differ from
    Collection 2 ``QA_PIXEL`` (:func:`from_qa_pixel`): 0 fill, 1 clear, 2 water,
    3 cloud shadow, 4 snow, 5 cloud, 6-7 cloud confidence, 8-9 cirrus confidence,
    10 terrain occlusion (confidences: 0 none, 1 low, 2 medium, 3 high).

    Mapping: fill -> NODATA, water -> WATER, cloud shadow -> CLOUD_SHADOW, snow -> SNOW,
    cloud or high cloud confidence -> CLOUD, high cirrus confidence -> CIRRUS, terrain
    occlusion -> TOPO_SHADOW. Low and medium confidences set nothing (the cloud bit
    already carries CFMask's decision).
    """
    qa = pixel_qa.astype(np.uint16)
    cloud_conf = (qa >> 6) & 3
    cirrus_conf = (qa >> 8) & 3
    out = (_bit(qa, 0).astype(np.uint8) * np.uint8(MaskBit.NODATA)
           | _bit(qa, 2).astype(np.uint8) * np.uint8(MaskBit.WATER)
           | _bit(qa, 3).astype(np.uint8) * np.uint8(MaskBit.CLOUD_SHADOW)
           | _bit(qa, 4).astype(np.uint8) * np.uint8(MaskBit.SNOW)
           | ((_bit(qa, 5) == 1) | (cloud_conf == 3)).astype(np.uint8) * np.uint8(MaskBit.CLOUD)
           | (cirrus_conf == 3).astype(np.uint8) * np.uint8(MaskBit.CIRRUS)
           | _bit(qa, 10).astype(np.uint8) * np.uint8(MaskBit.TOPO_SHADOW))
    return out.astype(np.uint8)


#: CFMask / Fmask class values (USGS Landsat 4-7 surface reflectance "cfmask" band) -> bits.
FMASK_CLASSES = {0: 0, 1: int(MaskBit.WATER), 2: int(MaskBit.CLOUD_SHADOW), 3: int(MaskBit.SNOW),
                 4: int(MaskBit.CLOUD), 255: int(MaskBit.NODATA)}


def from_fmask(fmask):
    """Decode an Fmask / CFMask class layer to the common bits.

    Classes: 0 clear land, 1 water, 2 cloud shadow, 3 snow, 4 cloud, 255 fill (the
    coding of USGS's Landsat 4-7 ``cfmask`` band and of Fmask's output). Any other value
    is treated as no data.
    """
    lut = np.full(256, np.uint8(MaskBit.NODATA), np.uint8)
    for value, bits in FMASK_CLASSES.items():
        lut[value] = bits
    if hasattr(fmask, "dask"):
        return fmask.astype(np.uint8).map_blocks(lambda b: lut[b], dtype=np.uint8)
    return lut[np.asarray(fmask).astype(np.uint8)]


def describe(value: int) -> list[str]:
    """The names of the bits set in a mask value, e.g. ``describe(3) == ['cloud', 'cloud_shadow']``."""
    return [b.name.lower() for b in MaskBit if value & b]
