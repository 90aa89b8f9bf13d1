"""The parameters of the crop mask (L4A) and crop type (L4B) and of their parts (time series,
classifier, segmentation, the method without in-situ data), with Sen2Agri's defaults
(docs/crop.md).

A module of its own, light (no numba, dask or store import), so that the site model, the
production's job parameters and the command line take their defaults from here: a default is
written once. The modules that used to define them re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import ConfigurationError
from ..core.masks import MaskBit

__all__ = ["BANDS", "BANDS_20M", "EXCLUDED_BITS", "FEATURE_SETS", "INDICES", "INDICES_20M",
           "METHODS", "RED_EDGE_BANDS", "ClassifierParams", "CropMaskParams", "CropTypeParams",
           "NoInsituParams", "SegmentationParams", "SeriesParams"]


#: The four bands of the Sen2Agri features (docs/crop.md): green, red, NIR, SWIR.
BANDS = ("B03", "B04", "B08", "B11")


#: The optional red-edge bands (Sen2Agri ``-red-edge``).
RED_EDGE_BANDS = ("B05", "B06", "B07", "B8A")


#: L2A mask bits that make an observation invalid: cloud, cloud shadow, cirrus, snow,
#: water, saturated, no data.
EXCLUDED_BITS = int(MaskBit.CLOUD | MaskBit.CLOUD_SHADOW | MaskBit.CIRRUS | MaskBit.SNOW
                    | MaskBit.WATER | MaskBit.SATURATED | MaskBit.NODATA)


#: Index features computed per date, after the band reflectances.
INDICES = ("NDVI", "NDWI", "BRIGHTNESS")


#: The bands of the ``20m`` feature set: the six 20 m Sentinel-2 bands (red edge, narrow NIR,
#: both SWIR), for series that have no 10 m bands (such as WorldCereal's 2019 patch).
BANDS_20M = ("B05", "B06", "B07", "B8A", "B11", "B12")


#: Its per-date indices: NDRE = (B8A - B05) / (B8A + B05), NDMI = (B8A - B11) / (B8A + B11),
#: brightness over the six bands.
INDICES_20M = ("NDRE", "NDMI", "BRIGHTNESS")


#: The feature sets :class:`SeriesParams` knows.
FEATURE_SETS = ("sen2agri", "20m")


@dataclass(frozen=True)
class SeriesParams:
    """Parameters of the time-series preparation (docs/crop.md, "Features").

    Attributes
    ----------
    step_days
        Step of the regular grid of dates (Sen2Agri: 10 days for Sentinel-2).
    red_edge
        Also use the red-edge bands B05, B06, B07, B8A (Sen2Agri ``-red-edge``).
    smoothing_lambda
        Whittaker lambda on the resampled grid (Sen2Agri units; 2 for the crop mask without
        in-situ data), or None for no smoothing (the crop type and in-situ crop mask default).
    excluded_bits
        L2A mask bits that make an observation invalid.
    chunk
        Edge in pixels of the spatial blocks processed at once.
    feature_set
        ``sen2agri`` (the bands B03 B04 B08 B11, + red edge, with NDVI, NDWI, brightness) or
        ``20m`` (:data:`BANDS_20M` with :data:`INDICES_20M`).
    """

    step_days: int = 10
    red_edge: bool = False
    smoothing_lambda: float | None = None
    excluded_bits: int = EXCLUDED_BITS
    chunk: int = 512
    feature_set: str = "sen2agri"

    def __post_init__(self) -> None:
        if int(self.step_days) != self.step_days or self.step_days < 1:
            raise ConfigurationError(f"step_days {self.step_days!r}: expected a positive whole "
                                     "number of days")
        if self.smoothing_lambda is not None and not self.smoothing_lambda > 0:
            raise ConfigurationError(f"smoothing_lambda {self.smoothing_lambda!r}: expected > 0 "
                                     "or None")
        if self.chunk < 16:
            raise ConfigurationError(f"chunk {self.chunk!r}: expected at least 16 pixels")
        if self.feature_set not in FEATURE_SETS:
            raise ConfigurationError(f"feature_set {self.feature_set!r}: expected one of "
                                     f"{', '.join(FEATURE_SETS)}")
        if self.feature_set == "20m" and self.red_edge:
            raise ConfigurationError("feature_set '20m' already holds the red-edge bands: "
                                     "red_edge must be False")

    @property
    def bands(self) -> tuple[str, ...]:
        """The bands read, in feature order."""
        if self.feature_set == "20m":
            return BANDS_20M
        return BANDS + RED_EDGE_BANDS if self.red_edge else BANDS

    @property
    def indices(self) -> tuple[str, ...]:
        """The per-date index features, after the bands."""
        return INDICES_20M if self.feature_set == "20m" else INDICES


METHODS = ("rf", "lightgbm")


@dataclass(frozen=True)
class ClassifierParams:
    """Classifier settings (defaults: Sen2Agri's random forest, docs/crop.md).

    Attributes
    ----------
    method
        ``rf`` (random forest, the reference) or ``lightgbm``.
    n_trees
        Number of trees (random forest) or boosting rounds (LightGBM).
    max_depth
        Maximum tree depth.
    min_samples
        Fewest samples in a node to split it (random forest ``min_samples_split``;
        LightGBM ``min_child_samples``).
    seed
        Random seed.
    n_jobs
        Threads for training (-1: all cores).
    learning_rate
        LightGBM only: shrinkage.
    num_leaves
        LightGBM only: most leaves per tree.
    class_weight
        None (every sample weighs 1, Sen2Agri) or ``balanced`` (samples weighted by the
        inverse of their class's frequency).
    """

    method: str = "rf"
    n_trees: int = 100
    max_depth: int = 25
    min_samples: int = 25
    seed: int = 0
    n_jobs: int = -1
    learning_rate: float = 0.1
    num_leaves: int = 31
    class_weight: str | None = None

    def __post_init__(self) -> None:
        if self.class_weight not in (None, "balanced"):
            raise ConfigurationError(f"class_weight {self.class_weight!r}: expected None or "
                                     "'balanced'")
        if self.method not in METHODS:
            raise ConfigurationError(f"classifier {self.method!r}: expected one of {', '.join(METHODS)}")
        for name in ("n_trees", "max_depth", "min_samples"):
            if int(getattr(self, name)) < 1:
                raise ConfigurationError(f"{name} {getattr(self, name)!r}: expected at least 1")
        if self.min_samples < 2 and self.method == "rf":
            raise ConfigurationError("min_samples: a random forest needs at least 2 to split")


@dataclass(frozen=True)
class SegmentationParams:
    """Parameters of the segmentation and majority vote.

    Attributes
    ----------
    n_components
        NDVI principal components segmented (Sen2Agri 6).
    scale
        Felzenszwalb ``scale`` (larger: larger segments). 128 was chosen on the WorldCereal
        Flanders patch (23 parcels on 64 x 64 px): 125 segments, 88 % of the pixels in the
        majority parcel of their segment; 256 merges neighbouring parcels (80 segments,
        84 %), 1024 most of the patch (14 segments, 78 %), and below 64 the segments only
        follow the ``min_size`` merging.
    sigma
        Gaussian pre-smoothing (pixels; 0 none).
    min_size
        Segments below this size (pixels) are merged (Sen2Agri 10).
    chunk
        Block edge (pixels) of the tiled processing.
    overlap
        Halo (pixels) around each block.
    """

    n_components: int = 6
    scale: float = 128.0
    sigma: float = 0.0
    min_size: int = 10
    chunk: int = 2048
    overlap: int = 64

    def __post_init__(self) -> None:
        if self.n_components < 1:
            raise ConfigurationError("n_components: expected at least 1")
        if self.scale <= 0 or self.min_size < 1:
            raise ConfigurationError("scale must be > 0 and min_size >= 1")
        if self.chunk < 64 or self.overlap < 0 or 2 * self.overlap >= self.chunk:
            raise ConfigurationError("chunk must be >= 64 and overlap < chunk / 2")


@dataclass(frozen=True)
class NoInsituParams:
    """Parameters of the crop mask without in-situ data (defaults: Sen2Agri's ``processor.l4a.*``, docs/crop.md).

    Attributes
    ----------
    crop_values
        Codes of the reference map that mean cropland.
    ignore_values
        Codes to treat as no data (besides the file's no-data value).
    erosion_radius
        Erosion of each class, pixels (0: none).
    smoothing_lambda
        Whittaker lambda on the resampled grid.
    alpha
        Significance level of the Mahalanobis trimming (0: no trimming).
    samples
        Training samples drawn from the trimmed reference.
    trim_pool
        Most pixels per class given to the trimming.
    max_iterations
        Cap on the trimming iterations.
    block
        Edge (pixels) of the blocks of the training / validation split.
    validation_share
        Share of the blocks held out for validation.
    seed
        Random seed (pools, blocks, samples).
    """

    crop_values: tuple[int, ...] = (1,)
    ignore_values: tuple[int, ...] = ()
    erosion_radius: int = 1
    smoothing_lambda: float = 2.0
    alpha: float = 0.01
    samples: int = 40000
    trim_pool: int = 100000
    max_iterations: int = 100
    block: int = 100
    validation_share: float = 0.25
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.crop_values:
            raise ConfigurationError("crop_values: give at least one code of the reference map")
        if self.erosion_radius < 0:
            raise ConfigurationError(f"erosion_radius {self.erosion_radius!r}: expected >= 0")
        if not 0.0 <= self.alpha < 1.0:
            raise ConfigurationError(f"alpha {self.alpha!r}: expected 0 <= alpha < 1")
        if self.samples < 2 or self.trim_pool < 2:
            raise ConfigurationError("samples and trim_pool: expected at least 2")
        if not 0.0 <= self.validation_share < 1.0:
            raise ConfigurationError(f"validation_share {self.validation_share!r}: expected 0 to < 1")
        if self.block < 1:
            raise ConfigurationError(f"block {self.block!r}: expected at least 1 pixel")


@dataclass(frozen=True)
class CropMaskParams:
    """Parameters of the L4A crop mask (defaults: Sen2Agri's; docs/crop.md).

    Attributes
    ----------
    class_field
        In-situ polygon field with the class (Sen2Agri ``CROP``).
    crop_values
        Values of ``class_field`` meaning cropland (every other value: not cropland).
    samples
        Most training pixels (Sen2Agri 40000).
    sample_ratio
        Share of each class's polygons used for training (the rest validates).
    min_per_class
        Fewest training pixels kept per class (when it has them).
    erosion_radius
        The training polygons lose the pixels within this distance (pixels) of their
        border before sampling (mixed pixels out; validation polygons keep all theirs).
        Default 1: on the WorldCereal patches, by parcel, it lifts the crop mask from OA
        0.63 / 0.52 to 0.86 / 0.66 (docs/accuracy.md); 0 is Sen2Agri's behaviour.
    series
        Time-series preparation.
    classifier
        Classifier settings.
    segmentation
        Post-process with segmentation + majority vote.
    segmentation_params
        Its settings.
    no_insitu
        Settings of the case without in-situ data (reference map).
    """

    class_field: str = "CROP"
    crop_values: tuple[int, ...] = (1,)
    samples: int = 40000
    sample_ratio: float = 0.75
    min_per_class: int = 100
    erosion_radius: int = 1
    series: SeriesParams = field(default_factory=SeriesParams)
    classifier: ClassifierParams = field(default_factory=ClassifierParams)
    segmentation: bool = False
    segmentation_params: SegmentationParams = field(default_factory=SegmentationParams)
    no_insitu: NoInsituParams = field(default_factory=NoInsituParams)


@dataclass(frozen=True)
class CropTypeParams:
    """Parameters of the L4B crop type map (defaults: Sen2Agri's, docs/crop.md "Crop type").

    Attributes
    ----------
    class_field
        In-situ polygon field with the crop code (Sen2Agri ``CODE``).
    exclude_codes
        Codes of polygons to leave out (e.g. 0 for "no crop" polygons in the file).
    samples
        Most training pixels (Sen2Agri ``-nbtrsample`` 10000).
    sample_ratio
        Share of each class's polygons used for training.
    min_per_class
        Fewest training pixels kept per class (when it has them).
    erosion_radius
        Border pixels of the training polygons left out (pixels; default 1: by parcel on the
        WorldCereal patches it lifts the crop type from OA 0.39 / 0.43 to 0.82 / 0.52,
        docs/accuracy.md; 0 is Sen2Agri's behaviour).
    series
        Time-series preparation.
    classifier
        Classifier settings.
    """

    class_field: str = "CODE"
    exclude_codes: tuple[int, ...] = ()
    samples: int = 10000
    sample_ratio: float = 0.75
    min_per_class: int = 100
    erosion_radius: int = 1
    series: SeriesParams = field(default_factory=SeriesParams)
    classifier: ClassifierParams = field(default_factory=ClassifierParams)
