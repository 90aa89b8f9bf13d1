"""The S2 Toolbox (SNAP) biophysical neural networks: files, catalogue, kernel, verification.

What lives here (docs/l3b.md, "Networks"; Weiss & Baret's ATBD):

* reading a network from its text files at run time -- :func:`read_network` returns a
  frozen :class:`Network`; bad files raise :class:`~agriseries.core.errors.CorruptProductError`
  naming the file, the line and what was expected;
* the catalogue of models shipped as package data (``networks/3_0/S2A`` ...,
  ``networks/2_1``; see ``networks/SOURCE.txt``): :func:`available_models`,
  :func:`model_for` (sensor and resolution -> model name), :func:`load_model`. Adding a
  model or a version is dropping a folder in; any folder of ``<VAR>/<VAR>_<part>`` files
  (a user's ``MODEL_DIR``) is accepted wherever a model name is;
* the pure kernel: :func:`evaluate` (one network) and :func:`evaluate_model` (all the
  variables of a model, values and flags, in one pass over the pixels), numba-compiled,
  working through the pixels in blocks of 512 (the loops over a block are SIMD-vectorised;
  tanh is computed without a library call, see :func:`fast_tanh`), no temporaries beyond a
  block, releasing the GIL so that dask threads run side by side; and
  :func:`evaluate_numpy`, the straightforward whole-array numpy transcription of the spec,
  the reference of the tests and the benchmark (the two agree to float32 rounding);
* :func:`verify`, which replays the ``<VAR>_TestCases`` files shipped with SNAP.

The network (per variable)::

    x'_i = 2 (x_i - xmin_i) / (xmax_i - xmin_i) - 1            Normalisation
    h_k  = tanh(b1_k + sum_i W1[k, i] x'_i)                     Weights_Layer1_Neurons / _Bias
    o    = b2 + sum_k W2[k] h_k                                 Weights_Layer2_Neurons / _Bias
    y    = 0.5 (o + 1) (ymax - ymin) + ymin                     Denormalisation

Inputs (axis 0 of the input array, in this order): the band reflectances (0-1) then
``cos(view zenith)``, ``cos(sun zenith)``, ``cos(sun azimuth - view azimuth)``
(:func:`angle_cosines`). The 20 m Sentinel-2 networks (``2_1``, ``3_0/S2A``, ``3_0/S2B``)
take B03, B04, B05, B06, B07, B8A, B11, B12; the 10 m ones (``*_10m``) B03, B04, B08; the
``LANDSAT8`` ones the OLI bands B3, B4, B5, B6, B7 (green, red, NIR, SWIR1, SWIR2).

Flags (``<var>_flags``, uint8, :class:`BiophysicalFlag`), as SNAP's ``BiophysicalAlgo``:

* bit 0 ``INPUT_OUT_OF_RANGE``: a band outside ``[min, max]`` of
  ``DefinitionDomain_MinMax``, or the tuple of band cells
  ``g_i = floor(10 (x_i - min_i) / (max_i - min_i) + 1)`` not a row of
  ``DefinitionDomain_Grid`` (compared as integer tuples -- a packed int64 key per tuple,
  4 bits per band, and a binary search in the sorted keys of the grid -- not as decimal
  numbers or digit strings, under which different tuples coincide: ``sum c_j 10^(7-j)``
  gives a pixel ``(a, 11, ...)`` (band at its maximum) the key of a grid row
  ``(a+1, 1, ...)``, and strings make ``(1, 11)`` and ``(11, 1)`` equal), or a NaN or
  infinite input. The value is NaN (``mask_out_of_range=False`` keeps the network's value,
  as SNAP's operator in fact does). Networks without DefinitionDomain files
  (``2_1/FCOVER``) are not range-checked, as in SNAP.
* bits 1-4 from ``ExtremeCases`` ``tolerance, min, max`` (tolerance taken as its absolute
  value: ``2_1`` and ``3_0/S2B/LAI_Cw`` store it negative): ``y < min - tol`` ->
  ``OUTPUT_TOO_LOW`` (value kept); ``min - tol <= y < min`` -> ``y = min``,
  ``OUTPUT_THRESHOLDED_TO_MIN``; ``max < y <= max + tol`` -> ``y = max``,
  ``OUTPUT_THRESHOLDED_TO_MAX``; ``y > max + tol`` -> ``OUTPUT_TOO_HIGH`` (value kept).
  SNAP uses strict inequalities on both sides of ``min - tol`` and ``max + tol``, which
  leaves a value exactly equal to them unflagged; here it is thresholded, so that every
  unflagged value lies in ``[min, max]``. These bits are computed from the network output
  also for out-of-range inputs (as SNAP does); a NaN or infinite input sets bit 0 only.

Precision: the inputs may be float32 (the agriseries reflectance) or float64; every
pixel is computed in float64 and the value stored as float32.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numba
import numpy as np

from ..core.bands import sensor_name
from ..core.errors import ConfigurationError, CorruptProductError
from ..core.jit import compiled
from .timeseries import BiophysicalFlag
from .params import VARIABLES  # noqa: F401 -- re-exported

__all__ = [
    "COSINE_INPUTS",
    "LANDSAT8_INPUTS",
    "NETWORKS_ROOT",
    "S2_10M_INPUTS",
    "S2_20M_INPUTS",
    "VARIABLES",
    "BiophysicalFlag",
    "CaseFileReport",
    "Network",
    "VerificationReport",
    "angle_cosines",
    "available_models",
    "evaluate",
    "evaluate_model",
    "evaluate_numpy",
    "in_domain",
    "input_names_for",
    "load_model",
    "model_for",
    "model_variables",
    "pack_cells",
    "read_network",
    "verify",
]

#: The three angular inputs that follow the bands in every network.
COSINE_INPUTS: tuple[str, ...] = ("cos_view_zenith", "cos_sun_zenith", "cos_relative_azimuth")
#: Inputs of the 20 m Sentinel-2 networks (``2_1``, ``3_0/S2A``, ``3_0/S2B``).
S2_20M_INPUTS: tuple[str, ...] = ("B03", "B04", "B05", "B06", "B07", "B8A", "B11", "B12") + COSINE_INPUTS
#: Inputs of the 10 m Sentinel-2 networks (``3_0/S2A_10m``, ``3_0/S2B_10m``).
S2_10M_INPUTS: tuple[str, ...] = ("B03", "B04", "B08") + COSINE_INPUTS
#: Inputs of the Landsat 8/9 OLI networks (``3_0/LANDSAT8``): green, red, NIR, SWIR1, SWIR2.
LANDSAT8_INPUTS: tuple[str, ...] = ("B3", "B4", "B5", "B6", "B7") + COSINE_INPUTS
#: The folder of the models shipped with agriseries (package data).
NETWORKS_ROOT: Path = Path(__file__).resolve().parent / "networks"

_INPUTS_BY_COUNT = {11: S2_20M_INPUTS, 6: S2_10M_INPUTS, 8: LANDSAT8_INPUTS}
_REQUIRED_PARTS = ("Normalisation", "Denormalisation", "Weights_Layer1_Neurons",
                   "Weights_Layer1_Bias", "Weights_Layer2_Neurons", "Weights_Layer2_Bias",
                   "ExtremeCases")
_CELL_BITS = 4  # bits per band in a packed grid key: cells 1..11 fit, 15 bands fit an int64
_MAX_CELL = 11  # a band equal to its maximum falls in cell 11 (never in a grid row)


# --------------------------------------------------------------------------------------
# the network and its files
# --------------------------------------------------------------------------------------

@dataclass(frozen=True, eq=False)
class Network:
    """One variable's network, read from its text files (arrays are read-only).

    Attributes
    ----------
    variable
        The variable name (``LAI``, ``FAPAR`` ...), the folder and file prefix.
    model
        The model name (``3_0/S2A`` for a shipped model, else the folder path).
    input_names
        The inputs in network order (bands then :data:`COSINE_INPUTS`).
    xmin, xmax
        ``Normalisation``: per input, the range mapped to [-1, 1].
    w1, b1
        ``Weights_Layer1_Neurons`` (n_hidden x n_inputs) and ``Weights_Layer1_Bias``.
    w2, b2
        ``Weights_Layer2_Neurons`` (n_hidden) and ``Weights_Layer2_Bias``.
    ymin, ymax
        ``Denormalisation``: the output range mapped from [-1, 1].
    domain_min, domain_max
        ``DefinitionDomain_MinMax``: per band, the valid input range (empty when the
        network has no definition domain).
    domain_grid
        ``DefinitionDomain_Grid`` as a set of integer tuples (one cell index per band).
    domain_keys
        The same tuples packed into sorted unique int64 keys (:func:`pack_cells`), the
        structure the kernels search.
    tolerance, out_min, out_max
        ``ExtremeCases`` (tolerance as its absolute value).
    source
        The folder holding the variable's files.
    """

    variable: str
    model: str
    input_names: tuple[str, ...]
    xmin: np.ndarray
    xmax: np.ndarray
    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: float
    ymin: float
    ymax: float
    domain_min: np.ndarray
    domain_max: np.ndarray
    domain_grid: frozenset[tuple[int, ...]] = field(repr=False)
    domain_keys: np.ndarray = field(repr=False)
    tolerance: float
    out_min: float
    out_max: float
    source: Path

    def __repr__(self) -> str:
        return (f"Network({self.model}/{self.variable}: {self.n_inputs} inputs "
                f"({','.join(self.input_names)}), {self.n_hidden} hidden, "
                f"domain {self.n_bands} bands / {len(self.domain_grid)} cells, "
                f"extremes {self.tolerance:g}/{self.out_min:g}/{self.out_max:g})")

    @property
    def n_inputs(self) -> int:
        """Number of inputs (bands + 3 cosines)."""
        return int(self.xmin.size)

    @property
    def n_hidden(self) -> int:
        """Number of hidden neurons (5 in every SNAP network)."""
        return int(self.b1.size)

    @property
    def n_bands(self) -> int:
        """Number of inputs checked against the definition domain (0 if none)."""
        return int(self.domain_min.size)

    @property
    def has_domain(self) -> bool:
        """True when the network has a definition domain (MinMax file)."""
        return self.domain_min.size > 0


def pack_cells(cells: np.ndarray) -> np.ndarray:
    """Pack tuples of grid cell indices into int64 keys, 4 bits per band.

    Parameters
    ----------
    cells
        Integer array ``(..., n_bands)`` with values 0-15.

    Returns
    -------
    numpy.ndarray
        int64 keys ``sum_j cells[..., j] << (4 j)``, shape ``cells.shape[:-1]``; distinct
        tuples give distinct keys.
    """
    cells = np.asarray(cells, dtype=np.int64)
    shifts = np.arange(cells.shape[-1], dtype=np.int64) * _CELL_BITS
    return np.bitwise_or.reduce(cells << shifts, axis=-1) if cells.shape[-1] else \
        np.zeros(cells.shape[:-1], np.int64)


def _read_table(path: Path, what: str) -> np.ndarray:
    """Read a comma-separated table of numbers: one row per non-empty line, same width."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CorruptProductError(path, f"file not found; expected {what}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptProductError(path, f"cannot be read ({exc}); expected {what}") from None
    rows: list[list[float]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        tokens = line.split(",")
        try:
            row = [float(t) for t in tokens]
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise CorruptProductError(
                path, f"line {lineno}: {bad.strip()!r} is not a number; expected {what}") from None
        if rows and len(row) != len(rows[0]):
            raise CorruptProductError(
                path, f"line {lineno} has {len(row)} comma-separated values, line 1 has "
                      f"{len(rows[0])}; expected {what}")
        rows.append(row)
    if not rows:
        raise CorruptProductError(path, f"the file is empty; expected {what}")
    return np.array(rows, dtype=np.float64)


def _is_float(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _values(table: np.ndarray, n: int, path: Path, what: str) -> np.ndarray:
    """The values of a table that holds one vector (one row or one column) of length n."""
    if 1 not in table.shape or table.size != n:
        raise CorruptProductError(
            path, f"{table.shape[0]} line(s) of {table.shape[1]} value(s); expected {what}")
    return table.ravel()


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a, dtype=np.float64)
    a.setflags(write=False)
    return a


def input_names_for(model_folder: Path, n_inputs: int) -> tuple[str, ...]:
    """The input names of a model: its ``INPUTS`` file, else the SNAP order for the count.

    Parameters
    ----------
    model_folder
        The model folder (holding the ``<VAR>`` folders).
    n_inputs
        The number of inputs of its networks (rows of ``Normalisation``).

    Returns
    -------
    tuple of str
        :data:`S2_20M_INPUTS` for 11 inputs, :data:`S2_10M_INPUTS` for 6,
        :data:`LANDSAT8_INPUTS` for 8, unless ``model_folder/INPUTS`` names them.

    Raises
    ------
    ConfigurationError
        If the count is none of these and there is no ``INPUTS`` file, or the file names
        another number of inputs.
    """
    names_file = Path(model_folder) / "INPUTS"
    if names_file.is_file():
        names = tuple(t.strip() for t in names_file.read_text(encoding="utf-8").replace("\n", ",")
                      .split(",") if t.strip())
        if len(names) != n_inputs:
            raise ConfigurationError(
                f"{names_file}: names {len(names)} inputs, the networks have {n_inputs}")
        return names
    try:
        return _INPUTS_BY_COUNT[n_inputs]
    except KeyError:
        raise ConfigurationError(
            f"{model_folder}: networks with {n_inputs} inputs; expected 11 (S2 20 m), 6 "
            f"(S2 10 m) or 8 (Landsat 8), or a file INPUTS naming them") from None


def _model_name(folder: Path, root: Path | None = None) -> str:
    folder = Path(folder).resolve()
    base = (Path(root) if root is not None else NETWORKS_ROOT).resolve()
    try:
        return folder.relative_to(base).as_posix()
    except ValueError:
        return str(folder)


def read_network(folder: Path, variable: str, *, model: str | None = None) -> Network:
    """Read one variable's network from ``folder/<variable>/<variable>_<part>``.

    Parameters
    ----------
    folder
        The model folder (for instance ``NETWORKS_ROOT / "3_0/S2A"`` or a user's
        ``MODEL_DIR``).
    variable
        The variable (``LAI``, ``FAPAR``, ``FCOVER``, ``LAI_Cab``, ``LAI_Cw`` or any name
        with such a folder).
    model
        The model name to record (default: the path relative to :data:`NETWORKS_ROOT`
        for a shipped model, else the folder path).

    Returns
    -------
    Network
        Read once per process and file version (cached on the files' modification times).

    Raises
    ------
    CorruptProductError
        A file is missing, not numbers, or has the wrong number of lines or columns; the
        message names the file and what was expected.
    ConfigurationError
        No such variable folder, or the input count matches no known input order (see
        :func:`input_names_for`).
    """
    folder = Path(folder)
    vdir = folder / variable
    if not vdir.is_dir():
        raise ConfigurationError(
            f"{folder}: no folder {variable!r}; variables there: "
            f"{', '.join(model_variables(folder)) or 'none'}")
    stamp = tuple(sorted((e.name, e.stat().st_mtime_ns, e.stat().st_size)
                         for e in os.scandir(vdir) if e.is_file()))
    inputs_file = folder / "INPUTS"
    if inputs_file.is_file():
        stamp += (("INPUTS", inputs_file.stat().st_mtime_ns, inputs_file.stat().st_size),)
    return _read_network_cached(str(vdir.resolve()), variable, stamp,
                                model if model is not None else _model_name(folder))


@functools.lru_cache(maxsize=64)
def _read_network_cached(vdir_str: str, variable: str, _stamp: tuple, model: str) -> Network:
    vdir = Path(vdir_str)
    f = {p: vdir / f"{variable}_{p}" for p in _REQUIRED_PARTS + ("DefinitionDomain_MinMax",
                                                                  "DefinitionDomain_Grid")}
    norm = _read_table(f["Normalisation"], "one line 'min,max' per network input")
    if norm.shape[1] != 2:
        raise CorruptProductError(f["Normalisation"],
                                  f"lines of {norm.shape[1]} values; expected 'min,max' per input")
    n_in = norm.shape[0]
    if np.any(norm[:, 1] <= norm[:, 0]):
        i = int(np.argmax(norm[:, 1] <= norm[:, 0]))
        raise CorruptProductError(f["Normalisation"], f"line {i + 1}: max <= min; expected min < max")
    w1 = _read_table(f["Weights_Layer1_Neurons"], f"one line of {n_in} weights per hidden neuron")
    if w1.shape[1] != n_in:
        raise CorruptProductError(
            f["Weights_Layer1_Neurons"],
            f"lines of {w1.shape[1]} values; expected {n_in} weights per line (one per input of "
            f"{f['Normalisation'].name})")
    n_hid = w1.shape[0]
    b1 = _values(_read_table(f["Weights_Layer1_Bias"], f"{n_hid} biases"), n_hid,
                 f["Weights_Layer1_Bias"], f"{n_hid} biases (one per hidden neuron)")
    w2 = _values(_read_table(f["Weights_Layer2_Neurons"], f"{n_hid} weights"), n_hid,
                 f["Weights_Layer2_Neurons"], f"{n_hid} weights (one per hidden neuron)")
    b2 = _values(_read_table(f["Weights_Layer2_Bias"], "1 bias"), 1,
                 f["Weights_Layer2_Bias"], "1 value (the output bias)")
    den = _values(_read_table(f["Denormalisation"], "'ymin,ymax'"), 2,
                  f["Denormalisation"], "one line 'ymin,ymax'")
    ext = _values(_read_table(f["ExtremeCases"], "'tolerance,min,max'"), 3,
                  f["ExtremeCases"], "one line 'tolerance,min,max'")
    if ext[2] < ext[1]:
        raise CorruptProductError(f["ExtremeCases"], "max < min; expected 'tolerance,min,max'")

    dmin = dmax = np.zeros(0)
    grid: frozenset[tuple[int, ...]] = frozenset()
    keys = np.zeros(0, np.int64)
    if f["DefinitionDomain_MinMax"].exists():
        mm = _read_table(f["DefinitionDomain_MinMax"], "2 lines: band minima, band maxima")
        if mm.shape[0] != 2 or mm.shape[1] > n_in:
            raise CorruptProductError(
                f["DefinitionDomain_MinMax"],
                f"{mm.shape[0]} line(s) of {mm.shape[1]} values; expected 2 lines (minima, maxima) "
                f"of at most {n_in} values")
        if mm.shape[1] > 64 // _CELL_BITS - 1:
            raise CorruptProductError(f["DefinitionDomain_MinMax"],
                                      f"{mm.shape[1]} bands; at most 15 are supported")
        if np.any(mm[1] <= mm[0]):
            raise CorruptProductError(f["DefinitionDomain_MinMax"], "a maximum <= its minimum")
        dmin, dmax = mm[0], mm[1]
        if f["DefinitionDomain_Grid"].exists():
            g = _read_table(f["DefinitionDomain_Grid"],
                            f"lines of {mm.shape[1]} integer cell indices 1-10")
            if g.shape[1] != mm.shape[1]:
                raise CorruptProductError(
                    f["DefinitionDomain_Grid"],
                    f"lines of {g.shape[1]} values; expected {mm.shape[1]} cell indices per line "
                    f"(one per band of {f['DefinitionDomain_MinMax'].name})")
            gi = g.astype(np.int64)
            if np.any(gi != g) or gi.min() < 1 or gi.max() > _MAX_CELL:
                bad = int(np.argmax(np.any((gi != g) | (gi < 1) | (gi > _MAX_CELL), axis=1)))
                raise CorruptProductError(
                    f["DefinitionDomain_Grid"],
                    f"line {bad + 1}: {g[bad].tolist()}; expected integer cell indices 1-10")
            grid = frozenset(map(tuple, gi.tolist()))
            keys = np.unique(pack_cells(gi))
    elif f["DefinitionDomain_Grid"].exists():
        raise CorruptProductError(f["DefinitionDomain_MinMax"],
                                  "file not found; a DefinitionDomain_Grid needs the band ranges")
    keys.setflags(write=False)
    folder = vdir.parent
    return Network(
        variable=variable, model=model, input_names=input_names_for(folder, n_in),
        xmin=_readonly(norm[:, 0]), xmax=_readonly(norm[:, 1]), w1=_readonly(w1),
        b1=_readonly(b1), w2=_readonly(w2), b2=float(b2[0]), ymin=float(den[0]),
        ymax=float(den[1]), domain_min=_readonly(dmin), domain_max=_readonly(dmax),
        domain_grid=grid, domain_keys=keys, tolerance=abs(float(ext[0])),
        out_min=float(ext[1]), out_max=float(ext[2]), source=vdir)


# --------------------------------------------------------------------------------------
# the catalogue of models
# --------------------------------------------------------------------------------------

def _is_variable_dir(d: Path) -> bool:
    return d.is_dir() and (d / f"{d.name}_Normalisation").is_file()


def model_variables(folder: Path) -> list[str]:
    """The variables a model folder holds: :data:`VARIABLES` order first, others sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = {d.name for d in folder.iterdir() if _is_variable_dir(d)}
    return [v for v in VARIABLES if v in found] + sorted(found - set(VARIABLES))


def _version_key(name: str) -> tuple:
    """Sort key of a model name: its version folder as numbers (``3_0`` > ``2_1``)."""
    parts = []
    for comp in name.split("/")[:-1] or [name]:
        parts.append(tuple(int(t) if t.isdigit() else -1 for t in comp.replace(".", "_").split("_")))
    return tuple(parts)


def available_models(root: Path | None = None) -> dict[str, Path]:
    """The model folders under ``root``, by name.

    Parameters
    ----------
    root
        The folder to scan; the models shipped with agriseries (:data:`NETWORKS_ROOT`) by
        default.

    Returns
    -------
    dict
        Name (path relative to ``root``, ``/``-separated: ``2_1``, ``3_0/S2A``,
        ``3_0/S2A_10m`` ...) -> folder, sorted by name. A model folder is any folder with
        at least one ``<VAR>/<VAR>_Normalisation`` file; the scan does not look inside it.
    """
    root = Path(root) if root is not None else NETWORKS_ROOT
    found: dict[str, Path] = {}

    def walk(d: Path) -> None:
        subdirs = sorted(p for p in d.iterdir() if p.is_dir())
        if any(_is_variable_dir(p) for p in subdirs):
            found[d.relative_to(root).as_posix()] = d
            return
        for p in subdirs:
            walk(p)

    if root.is_dir():
        walk(root)
    return dict(sorted(found.items()))


def _resolve_model(name: str | Path, root: Path | None) -> tuple[str, Path]:
    models = available_models(root)
    if str(name) in models:
        return str(name), models[str(name)]
    path = Path(name)
    if path.is_dir():
        if model_variables(path):
            return _model_name(path, root), path
        raise ConfigurationError(
            f"{path}: not a model folder; expected <VAR>/<VAR>_Normalisation ... files "
            f"(VAR one of {', '.join(VARIABLES)})")
    tail = [k for k in models if k.rsplit("/", 1)[-1] == str(name)]
    if tail:
        best = max(tail, key=_version_key)
        return best, models[best]
    raise ConfigurationError(
        f"unknown biophysical model {str(name)!r}: expected a folder or one of "
        f"{', '.join(models) or '(none found)'}")


def load_model(name: str | Path, variables: Iterable[str] | None = None,
               root: Path | None = None) -> dict[str, Network]:
    """Read the networks of a model.

    Parameters
    ----------
    name
        A name of :func:`available_models` (``3_0/S2A``), a bare model name (``S2A``: its
        newest version), or a folder of ``<VAR>/<VAR>_<part>`` files.
    variables
        The variables wanted (default: all of the model, in :data:`VARIABLES` order).
    root
        Where to look the names up (default :data:`NETWORKS_ROOT`).

    Returns
    -------
    dict
        Variable -> :class:`Network`, in the order asked (or :data:`VARIABLES` order).

    Raises
    ------
    ConfigurationError
        Unknown model or a variable the model does not have.
    CorruptProductError
        A network file is bad (see :func:`read_network`).
    """
    model, folder = _resolve_model(name, root)
    have = model_variables(folder)
    if isinstance(variables, str):
        variables = [variables]
    wanted = list(have) if variables is None else list(variables)
    missing = [v for v in wanted if v not in have]
    if missing:
        raise ConfigurationError(
            f"model {model} has no network for {', '.join(missing)}; it has {', '.join(have)}")
    nets = {v: read_network(folder, v, model=model) for v in wanted}
    if len({n.input_names for n in nets.values()}) > 1:
        raise ConfigurationError(f"model {model}: its networks do not take the same inputs")
    return nets


def model_for(sensor: str, resolution: int = 20, root: Path | None = None) -> str:
    """The model name to use for a sensor and a pixel size.

    Sentinel-2A takes ``S2A``, Sentinel-2B ``S2B``; Sentinel-2C has no networks of its own
    in SNAP 3_0 and takes the ``S2B`` ones until a folder ``S2C`` (``S2C_10m``) is added
    under a version; Landsat 8 and 9 take ``LANDSAT8`` (``LANDSAT9`` once added). The
    newest version folder holding the model wins.

    Parameters
    ----------
    sensor
        ``S2A``, ``S2B``, ``S2C``, ``L8``, ``L9`` or a platform name
        (:func:`agriseries.core.bands.sensor_name`).
    resolution
        Pixel size in metres; 10 selects the Sentinel-2 10 m networks (inputs B03, B04,
        B08), any other the 20 m ones (eight bands). Ignored for Landsat.
    root
        Where to look (default :data:`NETWORKS_ROOT`).

    Returns
    -------
    str
        A key of :func:`available_models` such as ``3_0/S2B_10m``.
    """
    s = sensor_name(sensor)
    if s.startswith("S2"):
        suffix = "_10m" if int(resolution) == 10 else ""
        candidates = [s] + (["S2B"] if s == "S2C" else [])
    else:
        suffix = ""
        candidates = (["LANDSAT9"] if s == "L9" else []) + ["LANDSAT8"]
    models = available_models(root)
    for cand in candidates:
        names = [k for k in models if k.rsplit("/", 1)[-1] == cand + suffix]
        if names:
            return max(names, key=_version_key)
    raise ConfigurationError(
        f"no biophysical model for {s} at {resolution} m under "
        f"{root or NETWORKS_ROOT}: looked for {', '.join(c + suffix for c in candidates)}")


def angle_cosines(sun_zenith, sun_azimuth, view_zenith, view_azimuth) -> np.ndarray:
    """The three angular inputs from angles in degrees.

    Returns
    -------
    numpy.ndarray
        float32 ``(3, ...)``: ``cos(view_zenith)``, ``cos(sun_zenith)``,
        ``cos(sun_azimuth - view_azimuth)`` (SNAP's ``BiophysicalOp.computePixel``).
    """
    sz, sa, vz, va = (np.asarray(a, dtype=np.float64) for a in
                      (sun_zenith, sun_azimuth, view_zenith, view_azimuth))
    return np.stack(np.broadcast_arrays(np.cos(np.radians(vz)), np.cos(np.radians(sz)),
                                        np.cos(np.radians(sa - va)))).astype(np.float32)


# --------------------------------------------------------------------------------------
# kernels
# --------------------------------------------------------------------------------------

def _as_pixels(inputs, n_inputs: int, what: str) -> tuple[np.ndarray, tuple[int, ...]]:
    x = np.asarray(inputs)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    if x.ndim < 1 or x.shape[0] != n_inputs:
        raise ConfigurationError(
            f"inputs of shape {x.shape}: {what} expects {n_inputs} layers on axis 0")
    return x.reshape(n_inputs, -1), x.shape[1:]


def in_domain(net: Network, inputs) -> np.ndarray:
    """Whether each pixel's bands lie in the network's definition domain (numpy).

    Parameters
    ----------
    net
        The network.
    inputs
        ``(n_inputs, ...)`` array (only the first :attr:`Network.n_bands` layers are used).

    Returns
    -------
    numpy.ndarray
        bool ``(...)``: every band within ``[domain_min, domain_max]`` and the tuple of band
        cells a row of ``DefinitionDomain_Grid``; False for NaN bands. All True for a
        network without definition domain.
    """
    x, shape = _as_pixels(inputs, net.n_inputs, f"the {net.variable} network of {net.model}")
    return _in_domain_flat(net, x.astype(np.float64, copy=False)).reshape(shape)


def _in_domain_flat(net: Network, x: np.ndarray) -> np.ndarray:
    nb = net.n_bands
    if nb == 0:
        return np.ones(x.shape[1], bool)
    b = x[:nb]
    lo, hi = net.domain_min[:, None], net.domain_max[:, None]
    ok = ((b >= lo) & (b <= hi)).all(axis=0)
    if net.domain_keys.size:
        cells = np.floor(10.0 * (np.where(ok, b, lo) - lo) / (hi - lo) + 1.0).astype(np.int64)
        keys = pack_cells(cells.T)
        pos = np.searchsorted(net.domain_keys, keys)
        pos = np.minimum(pos, net.domain_keys.size - 1)
        ok &= net.domain_keys[pos] == keys
    return ok


def _apply_extremes(net: Network, y: np.ndarray, flags: np.ndarray) -> np.ndarray:
    lo, hi, tol = net.out_min, net.out_max, net.tolerance
    too_low = y < lo - tol
    to_min = (y >= lo - tol) & (y < lo)
    too_high = y > hi + tol
    to_max = (y > hi) & (y <= hi + tol)
    flags |= (too_low * np.uint8(BiophysicalFlag.OUTPUT_TOO_LOW)).astype(np.uint8)
    flags |= (to_min * np.uint8(BiophysicalFlag.OUTPUT_THRESHOLDED_TO_MIN)).astype(np.uint8)
    flags |= (too_high * np.uint8(BiophysicalFlag.OUTPUT_TOO_HIGH)).astype(np.uint8)
    flags |= (to_max * np.uint8(BiophysicalFlag.OUTPUT_THRESHOLDED_TO_MAX)).astype(np.uint8)
    return np.where(to_min, lo, np.where(to_max, hi, y))


def evaluate_numpy(net: Network, inputs, *, mask_out_of_range: bool = True,
                   raw: bool = False):
    """The reference implementation: the spec's formulas, whole-array numpy (float64).

    Parameters
    ----------
    net
        The network.
    inputs
        ``(n_inputs, ...)`` array, float32 or float64, in :attr:`Network.input_names` order.
    mask_out_of_range
        Set the value to NaN where ``INPUT_OUT_OF_RANGE`` is flagged (default); False keeps
        the network's value (NaN inputs still give NaN).
    raw
        Also return the float64 network output before the ExtremeCases rule and the hidden
        activations (used by :func:`verify`).

    Returns
    -------
    values, flags
        float32 and uint8 arrays of shape ``inputs.shape[1:]``; with ``raw=True`` also
        ``y`` (float64, same shape) and ``h`` (float64, ``(n_hidden, ...)``).
    """
    x, shape = _as_pixels(inputs, net.n_inputs, f"the {net.variable} network of {net.model}")
    x = x.astype(np.float64)
    nan_in = ~np.isfinite(x).all(axis=0)
    xn = 2.0 * (x - net.xmin[:, None]) / (net.xmax - net.xmin)[:, None] - 1.0
    h = np.tanh(net.w1 @ xn + net.b1[:, None])
    o = net.w2 @ h + net.b2
    y = 0.5 * (o + 1.0) * (net.ymax - net.ymin) + net.ymin
    flags = np.zeros(y.shape, np.uint8)
    out = _apply_extremes(net, y, flags)
    oor = nan_in | ~_in_domain_flat(net, x)
    flags[oor] |= np.uint8(BiophysicalFlag.INPUT_OUT_OF_RANGE)
    flags[nan_in] = np.uint8(BiophysicalFlag.INPUT_OUT_OF_RANGE)
    out[oor if mask_out_of_range else nan_in] = np.nan
    values = out.astype(np.float32).reshape(shape)
    flags = flags.reshape(shape)
    if raw:
        return values, flags, y.reshape(shape), h.reshape((net.n_hidden,) + shape)
    return values, flags


@dataclass(frozen=True, eq=False)
class _Packed:
    """A model's networks folded into the arrays the numba kernel reads."""

    w1: np.ndarray      # (nv, nh, ni): W1 with the normalisation folded in
    b1: np.ndarray      # (nv, nh)
    w2: np.ndarray      # (nv, nh): W2 with the denormalisation folded in
    b2: np.ndarray      # (nv,)
    ext: np.ndarray     # (nv, 3): tolerance, min, max
    dom_of: np.ndarray  # (nv,) index of the network's domain
    dmin: np.ndarray    # (nd, nb)
    dmax: np.ndarray    # (nd, nb)
    dnb: np.ndarray     # (nd,) bands checked
    keys: np.ndarray    # concatenated sorted grid keys
    koff: np.ndarray    # (nd + 1,) offsets into keys


@functools.lru_cache(maxsize=32)
def _pack(nets: tuple[Network, ...]) -> _Packed:
    nv = len(nets)
    ni = nets[0].n_inputs
    nh = max(n.n_hidden for n in nets)
    w1 = np.zeros((nv, nh, ni))
    b1 = np.zeros((nv, nh))
    w2 = np.zeros((nv, nh))
    b2 = np.zeros(nv)
    ext = np.zeros((nv, 3))
    domains: list[Network] = []
    dom_of = np.zeros(nv, np.int64)
    for j, n in enumerate(nets):
        scale = 2.0 / (n.xmax - n.xmin)
        offset = -2.0 * n.xmin / (n.xmax - n.xmin) - 1.0
        w1[j, :n.n_hidden] = n.w1 * scale
        b1[j, :n.n_hidden] = n.b1 + n.w1 @ offset
        a = 0.5 * (n.ymax - n.ymin)
        w2[j, :n.n_hidden] = a * n.w2
        b2[j] = a * n.b2 + a + n.ymin
        ext[j] = (n.tolerance, n.out_min, n.out_max)
        for d, other in enumerate(domains):
            if (np.array_equal(other.domain_min, n.domain_min)
                    and np.array_equal(other.domain_max, n.domain_max)
                    and np.array_equal(other.domain_keys, n.domain_keys)):
                dom_of[j] = d
                break
        else:
            dom_of[j] = len(domains)
            domains.append(n)
    nd = len(domains)
    nb = max(1, max(d.n_bands for d in domains))
    dmin = np.zeros((nd, nb))
    dmax = np.ones((nd, nb))
    dnb = np.zeros(nd, np.int64)
    koff = np.zeros(nd + 1, np.int64)
    for d, n in enumerate(domains):
        dnb[d] = n.n_bands
        dmin[d, :n.n_bands] = n.domain_min
        dmax[d, :n.n_bands] = n.domain_max
        koff[d + 1] = koff[d] + n.domain_keys.size
    keys = np.concatenate([n.domain_keys for n in domains]).astype(np.int64)
    return _Packed(w1, b1, w2, b2, ext, dom_of, dmin, dmax, dnb, keys, koff)


#: Taylor coefficients 1/n!, n = 0..16, of the exponential in :func:`fast_tanh`.
_EXP_TAYLOR = tuple(1.0 / math.factorial(n) for n in range(17))
#: Pixels per block of the kernel: its working arrays (about 120 bytes a pixel) stay in
#: the level-1/2 caches and the loops over a block are vectorised.
_BLOCK = 512


@numba.njit(inline="always", error_model="numpy")
def fast_tanh(a):  # pragma: no cover - compiled
    """tanh without a library call, so that loops calling it are vectorised.

    ``tanh(a) = sign(a) (1 - e) / (1 + e)`` with ``e = exp(-2 |a|)``; ``exp(t)`` is
    ``(sum_{n<=16} (t/64)^n / n!)^64`` (six squarings), ``|a|`` clamped at 20 (where
    tanh is 1 in double precision). Absolute error below 1e-14 (tests compare with
    ``numpy.tanh``); the network output needs absolute, not relative, accuracy.
    """
    t = min(abs(a), 20.0) * (-2.0 / 64.0)
    c = _EXP_TAYLOR
    e = c[16]
    e = e * t + c[15]
    e = e * t + c[14]
    e = e * t + c[13]
    e = e * t + c[12]
    e = e * t + c[11]
    e = e * t + c[10]
    e = e * t + c[9]
    e = e * t + c[8]
    e = e * t + c[7]
    e = e * t + c[6]
    e = e * t + c[5]
    e = e * t + c[4]
    e = e * t + c[3]
    e = e * t + c[2]
    e = e * t + c[1]
    e = e * t + c[0]
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    e = e * e
    return math.copysign((1.0 - e) / (1.0 + e), a)


@numba.njit(inline="always")
def _search(keys, k0, k1, key):  # pragma: no cover - compiled
    """Whether ``key`` is in the sorted ``keys[k0:k1]`` (branch-free lower bound)."""
    n = k1 - k0
    base = k0
    while n > 1:
        half = n >> 1
        base = base + half if keys[base + half] < key else base
        n -= half
    if keys[base] < key:
        base += 1
    return base < k1 and keys[base] == key


@compiled(nogil=True, error_model="numpy")
def _kernel(x, w1, b1, w2, b2, ext, dom_of, dmin, dmax, dnb, keys, koff, mask_oor,
            values, flags):  # pragma: no cover - compiled (tested through evaluate_model)
    """All networks of a model over ``x`` (n_inputs, n_pixels), block by block, in place."""
    ni, npix = x.shape
    nv, nh, _ = w1.shape
    nd = dmin.shape[0]
    B = _BLOCK
    xb = np.empty((ni, B), np.float64)
    bad = np.empty(B, np.bool_)
    ok = np.empty((nd, B), np.bool_)
    key = np.empty(B, np.int64)
    acc = np.empty(B, np.float64)
    y = np.empty(B, np.float64)
    for start in range(0, npix, B):
        m = min(B, npix - start)
        # inputs to float64; NaN or infinite -> no data
        for q in range(m):
            bad[q] = False
        for i in range(ni):
            for q in range(m):
                v = np.float64(x[i, start + q])
                xb[i, q] = v
                bad[q] |= (v - v) != 0.0
        # definition domain: band ranges, then the packed tuple of cells in the grid
        for d in range(nd):
            for q in range(m):
                ok[d, q] = True
                key[q] = 0
            for b in range(dnb[d]):
                lo = dmin[d, b]
                hi = dmax[d, b]
                shift = np.int64(4 * b)
                for q in range(m):
                    v = xb[b, q]
                    inside = (v >= lo) & (v <= hi)
                    ok[d, q] &= inside
                    v = v if inside else lo
                    key[q] |= np.int64(math.floor(10.0 * (v - lo) / (hi - lo) + 1.0)) << shift
            k0 = koff[d]
            k1 = koff[d + 1]
            if dnb[d] > 0 and k1 > k0:
                for q in range(m):
                    if ok[d, q]:
                        ok[d, q] = _search(keys, k0, k1, key[q])
        # networks (normalisation and denormalisation folded into the weights), flags
        for j in range(nv):
            for q in range(m):
                y[q] = b2[j]
            for k in range(nh):
                for q in range(m):
                    acc[q] = b1[j, k]
                for i in range(ni):
                    w = w1[j, k, i]
                    for q in range(m):
                        acc[q] += w * xb[i, q]
                wk = w2[j, k]
                for q in range(m):
                    y[q] += wk * fast_tanh(acc[q])
            tol = ext[j, 0]
            omin = ext[j, 1]
            omax = ext[j, 2]
            dj = dom_of[j]
            for q in range(m):
                v = y[q]
                f = 0 if ok[dj, q] else 1
                if v < omin - tol:
                    f |= 8
                elif v < omin:
                    v = omin
                    f |= 2
                elif v > omax + tol:
                    f |= 16
                elif v > omax:
                    v = omax
                    f |= 4
                if mask_oor and (f & 1) != 0:
                    v = np.nan
                if bad[q]:
                    v = np.nan
                    f = 1
                values[j, start + q] = v
                flags[j, start + q] = f


def evaluate_model(nets: Mapping[str, Network] | Sequence[Network], inputs, *,
                   mask_out_of_range: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate several networks of one model in a single pass over the pixels (numba).

    Parameters
    ----------
    nets
        The networks (a :func:`load_model` dict or a sequence); all take the same inputs.
    inputs
        ``(n_inputs, ...)`` array, float32 or float64, in :attr:`Network.input_names` order
        (reflectance 0-1, then :func:`angle_cosines`); NaN marks no data.
    mask_out_of_range
        Set the value to NaN where ``INPUT_OUT_OF_RANGE`` is flagged (default); False keeps
        the network's value, as SNAP's operator writes it (NaN inputs still give NaN).

    Returns
    -------
    values, flags
        float32 ``(n_networks, ...)`` values and uint8 ``(n_networks, ...)``
        :class:`BiophysicalFlag` bits, in the order of ``nets``.
    """
    seq = tuple(nets.values()) if isinstance(nets, Mapping) else tuple(nets)
    if not seq:
        raise ConfigurationError("evaluate_model needs at least one network")
    if len({n.input_names for n in seq}) > 1:
        raise ConfigurationError(
            "networks with different inputs cannot be evaluated together: "
            + "; ".join(f"{n.model}/{n.variable}: {','.join(n.input_names)}" for n in seq))
    x, shape = _as_pixels(inputs, seq[0].n_inputs, f"the {seq[0].model} networks "
                          f"({', '.join(seq[0].input_names)})")
    pk = _pack(seq)
    values = np.empty((len(seq), x.shape[1]), np.float32)
    flags = np.empty((len(seq), x.shape[1]), np.uint8)
    if x.shape[1]:
        _kernel(x, pk.w1, pk.b1, pk.w2, pk.b2, pk.ext, pk.dom_of, pk.dmin, pk.dmax, pk.dnb,
                pk.keys, pk.koff, bool(mask_out_of_range), values, flags)
    return values.reshape((len(seq),) + shape), flags.reshape((len(seq),) + shape)


def evaluate(net: Network, inputs, *, mask_out_of_range: bool = True
             ) -> tuple[np.ndarray, np.ndarray]:
    """Evaluate one network (numba kernel; see :func:`evaluate_model`).

    Returns
    -------
    values, flags
        float32 values and uint8 :class:`BiophysicalFlag` bits of shape ``inputs.shape[1:]``.
    """
    values, flags = evaluate_model((net,), inputs, mask_out_of_range=mask_out_of_range)
    return values[0], flags[0]


# --------------------------------------------------------------------------------------
# replay of the TestCases files
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class CaseFileReport:
    """The replay of one ``<VAR>_TestCases`` file.

    Attributes
    ----------
    path, model, variable
        The file and the network replayed.
    rows
        Rows in the file.
    nan_expected
        Rows whose expected value is NaN.
    max_abs_error
        Largest ``|value - expected|`` over the other rows.
    rows_above_atol
        Rows with ``|value - expected| > atol`` (information: see ``rows_out_of_tolerance``).
    max_error_ratio
        Largest ``|value - expected| / (atol + bound)``; at most 1 when all rows pass.
    rows_out_of_tolerance
        Rows with ``|value - expected| > atol + bound``, ``bound`` being the first-order
        effect on the output of the rounding of the printed inputs and expected value.
    nan_not_flagged
        Rows expected NaN whose flags are all zero.
    out_of_domain
        Rows flagged ``INPUT_OUT_OF_RANGE`` (information).
    """

    path: str
    model: str
    variable: str
    rows: int
    nan_expected: int
    max_abs_error: float
    rows_above_atol: int
    max_error_ratio: float
    rows_out_of_tolerance: int
    nan_not_flagged: int
    out_of_domain: int

    @property
    def ok(self) -> bool:
        """True when every row is within tolerance and every NaN expectation is flagged."""
        return self.rows_out_of_tolerance == 0 and self.nan_not_flagged == 0


@dataclass(frozen=True)
class VerificationReport:
    """The result of :func:`verify`: one :class:`CaseFileReport` per TestCases file."""

    folder: str
    atol: float
    files: tuple[CaseFileReport, ...]

    @property
    def ok(self) -> bool:
        """True when every file passed."""
        return all(f.ok for f in self.files)

    def to_dict(self) -> dict:
        """A JSON-ready dict."""
        return {"folder": self.folder, "atol": self.atol, "ok": self.ok,
                "files": [dict(vars(f), ok=f.ok) for f in self.files]}


def _half_unit(token: str) -> float:
    """Half a unit in the last printed digit of a decimal number (0 for an exact zero)."""
    try:
        d = Decimal(token.strip())
    except InvalidOperation:
        return math.nan
    if not d.is_finite():
        return math.nan
    if d == 0:
        return 0.0
    return 0.5 * 10.0 ** d.as_tuple().exponent


def _read_cases(path: Path, net: Network) -> tuple[np.ndarray, np.ndarray]:
    """Values and half-units of a TestCases file: rows of the inputs then the expected output."""
    what = f"{net.n_inputs} inputs ({','.join(net.input_names)}) then the expected {net.variable}"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptProductError(path, f"cannot be read ({exc}); expected lines of {what}") from None
    vals, half = [], []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        tokens = line.split(",")
        if len(tokens) != net.n_inputs + 1:
            raise CorruptProductError(
                path, f"line {lineno} has {len(tokens)} values; expected {net.n_inputs + 1}: {what}")
        try:
            vals.append([float(t) for t in tokens])
        except ValueError:
            bad = next(t for t in tokens if not _is_float(t))
            raise CorruptProductError(
                path, f"line {lineno}: {bad.strip()!r} is not a number; expected {what}") from None
        half.append([_half_unit(t) for t in tokens])
    if not vals:
        raise CorruptProductError(path, f"no rows; expected lines of {what}")
    v = np.array(vals)
    cos_cols = [i for i, n in enumerate(net.input_names) if n.startswith("cos_")]
    if cos_cols and np.nanmax(np.abs(v[:, cos_cols])) > 1.0:
        raise CorruptProductError(
            path, f"columns {', '.join(str(i + 1) for i in cos_cols)} hold values beyond [-1, 1] "
                  f"(angles in degrees?); expected the cosines {', '.join(COSINE_INPUTS)}")
    return v, np.array(half)


def _case_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*_TestCases")
                  if p.is_file() and p.name == f"{p.parent.name}_TestCases")


def _network_for_cases(path: Path, root: Path | None) -> Network:
    variable = path.parent.name
    model_dir = path.parent.parent
    if (path.parent / f"{variable}_Normalisation").is_file():
        return read_network(model_dir, variable)
    parts = model_dir.resolve().parts
    matches = [(name, p) for name, p in available_models(root).items()
               if tuple(parts[-len(name.split("/")):]) == tuple(name.split("/"))]
    if not matches:
        raise ConfigurationError(
            f"{path}: no network beside it ({variable}_Normalisation ...) and no shipped model "
            f"whose name ends the path {model_dir} (models: "
            f"{', '.join(available_models(root))})")
    name = max(matches, key=lambda m: len(m[0].split("/")))[0]
    return load_model(name, [variable], root=root)[variable]


def verify(folder: Path, *, atol: float = 1e-4, root: Path | None = None) -> VerificationReport:
    """Replay every ``<VAR>/<VAR>_TestCases`` file under a folder.

    Each file holds rows of the network inputs (cosines for the angles) followed by the
    expected output. The network is the one beside the file (a ``MODEL_DIR``) or, when
    the file stands alone, the shipped model whose name ends its path
    (``.../3_0/S2A/LAI/LAI_TestCases`` -> ``3_0/S2A``). The values compared are those of
    :func:`evaluate_model` (float64 inputs) after the ExtremeCases rule, without the
    NaN of out-of-range inputs: SNAP's files give a value for such rows.

    The files print inputs with five significant digits, so the expected values (computed
    from unrounded inputs) cannot be matched to ``atol`` alone: a row passes when
    ``|value - expected| <= atol + bound``, ``bound = sum_i |dy/dx_i| u_i + u_y + u_32``
    where ``u`` is half a unit in the last printed digit of each input and of the expected
    value (the first-order effect of that rounding) and ``u_32`` half a float32 spacing of
    the value. A row expected NaN must carry a flag.

    Parameters
    ----------
    folder
        The folder to scan (recursively).
    atol
        The absolute tolerance added to the rounding bound.
    root
        Where to look the shipped models up (default :data:`NETWORKS_ROOT`).

    Returns
    -------
    VerificationReport

    Raises
    ------
    ConfigurationError
        No TestCases file under the folder, or no network for one of them.
    CorruptProductError
        A TestCases or network file is malformed.
    """
    folder = Path(folder)
    files = _case_files(folder) if folder.is_dir() else []
    if not files:
        raise ConfigurationError(f"{folder}: no <VAR>/<VAR>_TestCases file found")
    reports = []
    for path in files:
        net = _network_for_cases(path, root)
        v, half = _read_cases(path, net)
        x = np.ascontiguousarray(v[:, :-1].T)
        expected = v[:, -1]
        values, flags = evaluate(net, x, mask_out_of_range=False)
        _, _, _, h = evaluate_numpy(net, x, raw=True)
        # dy/dx_i = (ymax - ymin)/2 * sum_k W2_k (1 - h_k^2) W1_ki * 2/(xmax_i - xmin_i)
        grad = (0.5 * (net.ymax - net.ymin) * ((net.w2[:, None] * (1.0 - h * h)).T @ net.w1)
                * (2.0 / (net.xmax - net.xmin)))
        bound = (np.nansum(np.abs(grad) * half[:, :-1], axis=1) + np.nan_to_num(half[:, -1])
                 + 0.5 * np.spacing(np.abs(values)).astype(np.float64))  # float32 storage
        nan_exp = np.isnan(expected)
        err = np.abs(values.astype(np.float64) - expected)
        err = np.where(np.isnan(err) & ~nan_exp, np.inf, err)  # a NaN value is an error
        e, b = err[~nan_exp], bound[~nan_exp]
        reports.append(CaseFileReport(
            path=str(path), model=net.model, variable=net.variable, rows=len(v),
            nan_expected=int(nan_exp.sum()),
            max_abs_error=float(e.max()) if e.size else 0.0,
            rows_above_atol=int((e > atol).sum()),
            max_error_ratio=float((e / (atol + b)).max()) if e.size else 0.0,
            rows_out_of_tolerance=int((e > atol + b).sum()),
            nan_not_flagged=int((nan_exp & (flags == 0)).sum()),
            out_of_domain=int(((flags & np.uint8(BiophysicalFlag.INPUT_OUT_OF_RANGE)) != 0).sum()),
        ))
    return VerificationReport(folder=str(folder), atol=float(atol), files=tuple(reports))
