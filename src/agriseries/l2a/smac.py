"""SMAC atmospheric correction (Rahman & Dedieu 1994, IJRS 15(1):123-143).

Method and equations: docs/l2a.md, "Atmospheric correction (SMAC)".

SMAC (Simplified Method for the Atmospheric Correction of satellite measurements in the
solar spectrum) writes the top-of-atmosphere reflectance of a Lambertian surface as

    r_toa = t_g * (atm_ref + r_surf * T(theta_s) * T(theta_v) / (1 - r_surf * s))

where ``t_g`` is the gaseous transmission (H2O, O3, O2, CO2, CH4, NO2, CO), ``atm_ref``
the intrinsic atmospheric reflectance (Rayleigh + aerosol + coupling, with three fitted
residual corrections), ``T`` the total scattering transmissions along the sun and view
paths and ``s`` the spherical albedo of the atmosphere. Every one of these terms is an
analytic function of the geometry, the surface pressure, the aerosol optical thickness at
550 nm, the ozone and water-vapour amounts, and 49 coefficients per band, fitted by the
SMAC authors on 6S simulations. The equations and the coefficient file layout are written out in
docs/l2a.md, "Atmospheric correction (SMAC)".

What lives here:

* :class:`SmacCoefficients`, :func:`read_coefficients` (layout-aware reader of the 19-line
  ``Coef_*.dat`` files, clear error naming the file and the line on a bad file) and
  :func:`coefficients_for` (sensor + band -> the coefficients shipped as package data in
  ``smac_coefs/``, see its README.md for provenance and the Sentinel-2C / Landsat 9
  choices);
* :func:`pressure_from_altitude` (standard atmosphere);
* the exact per-pixel model: :func:`smac_inverse` (TOA -> surface) and :func:`smac_direct`
  (surface -> TOA);
* the fast path for full tiles: :func:`smac_terms` evaluates the three atmospheric terms

      atm   = atm_ref * t_g                    (path reflectance seen at the sensor)
      trans = t_g * T(theta_s) * T(theta_v)    (total two-way transmission)
      s                                        (spherical albedo)

  on whatever (coarse) grid of angles / aerosol the caller has, and :func:`apply_inverse`
  / :func:`apply_direct` apply them with a subtraction, a multiply-add and a division per
  pixel (``y = r_toa - atm ; r_surf = y / (trans + y * s)``). :func:`smac_inverse` *is*
  ``apply_inverse(r_toa, smac_terms(...))``, so both paths give bit-identical results.
  The terms depend on the pixel only through the geometry, the pressure and the aerosol,
  which vary over kilometres: on a full tile, compute them on the 5 km angle grid
  (23 x 23 nodes) and let :func:`apply_inverse_on_grid` interpolate them bilinearly and
  correct each pixel in one compiled pass (:func:`grid_coordinates` gives the pixel
  positions on the grid, chunk offsets included; :func:`interpolate_terms` returns the
  interpolated terms themselves).

The model functions (:func:`smac_terms`, :func:`smac_inverse`, :func:`smac_direct`,
:func:`apply_inverse`, :func:`apply_direct`) broadcast with numpy over any array shapes
(angles in degrees); the gridded ones work on 2-D bands. NaN in any input gives NaN out;
so does a sun or view zenith angle of 90 degrees or more. Results are not clipped: a dark
pixel over-corrected (aerosol too high) comes out slightly negative. The model is valid
(2-3 % typical accuracy) for zenith angles below about 70 degrees and outside the strong
absorption bands (SMAC readme).

Verification (tests/test_smac.py, docs/smac_reference.py): the point case of openEO's test,
computed with O. Hagolle's smac.py (S2A B02, r_toa 0.2 -> 0.16214342470440238), is met to
1e-16; on openEO's 512 x 1024 px Sentinel-2 test rasters (AOT 0.14, ozone 0.33 cm,
1013 hPa, water vapour 0.3 g/cm2) B02 equals openEO's result on every pixel, and B03, B04,
B08 are higher by a near-constant 0.0016, 0.0012 and 0.0007 because openEO made its
reference with an earlier fit of those three coefficient files.

Numerical notes. The scattering-angle cosine is clipped to ``[-1, 1]`` before ``arccos``
(SMAC clips only the lower bound; the upper one only guards rounding). The ``sr`` value
of line 10 of the files is read from the second column (SMAC's reader takes the first);
it is not used by the equations.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from ..core.errors import ConfigurationError, CorruptProductError, InputProductError
from ..core.jit import compiled

__all__ = [
    "COEFFICIENT_LAYOUT",
    "SmacCoefficients",
    "SmacTerms",
    "apply_direct",
    "apply_inverse",
    "apply_inverse_on_grid",
    "available_bands",
    "coefficient_file",
    "coefficients_for",
    "grid_coordinates",
    "interpolate_terms",
    "pressure_from_altitude",
    "read_coefficients",
    "smac_direct",
    "smac_inverse",
    "smac_terms",
]

#: The 19 lines of a SMAC coefficient file and the coefficient names on each
#: (docs/l2a.md, "Coefficient files").
COEFFICIENT_LAYOUT: tuple[tuple[str, ...], ...] = (
    ("ah2o", "nh2o"),
    ("ao3", "no3"),
    ("ao2", "no2", "po2"),
    ("aco2", "nco2", "pco2"),
    ("ach4", "nch4", "pch4"),
    ("ano2", "nno2", "pno2"),
    ("aco", "nco", "pco"),
    ("a0s", "a1s", "a2s", "a3s"),
    ("a0T", "a1T", "a2T", "a3T"),
    ("taur", "sr"),
    ("a0taup", "a1taup"),
    ("wo", "gc"),
    ("a0P", "a1P", "a2P"),
    ("a3P", "a4P"),
    ("Rest1", "Rest2"),
    ("Rest3", "Rest4"),
    ("Resr1", "Resr2", "Resr3"),
    ("Resa1", "Resa2"),
    ("Resa3", "Resa4"),
)

_COEF_DIR = "smac_coefs"


@dataclass(frozen=True)
class SmacCoefficients:
    """The 49 SMAC coefficients of one band (docs/l2a.md "Coefficient files"), in file order.

    Attributes
    ----------
    ah2o, nh2o, ao3, no3
        Water vapour and ozone absorption (``t = exp(a * (u * m) ** n)``).
    ao2, no2, po2, aco2, nco2, pco2, ach4, nch4, pch4, ano2, nno2, pno2, aco, nco, pco
        O2, CO2, CH4, NO2 and CO absorption; the ``p*`` exponents scale the amount with
        the relative pressure.
    a0s, a1s, a2s, a3s
        Spherical albedo ``s = a0s * Peq + a3s + a1s * tau + a2s * tau**2``.
    a0T, a1T, a2T, a3T
        Scattering transmission ``T(theta) = a0T + a1T * tau / mu + (a2T * Peq + a3T) / (1 + mu)``.
    taur, sr
        Rayleigh optical depth (``sr`` is not used by the equations).
    a0taup, a1taup
        Band aerosol optical depth ``tau_p = a0taup + a1taup * tau550``.
    wo, gc
        Aerosol single scattering albedo and asymmetry factor.
    a0P, a1P, a2P, a3P, a4P
        Aerosol phase function, a polynomial of the scattering angle in degrees.
    Rest1, Rest2, Rest3, Rest4, Resr1, Resr2, Resr3, Resa1, Resa2, Resa3, Resa4
        Residual fits of the coupling, Rayleigh and aerosol terms.
    source
        The file the coefficients were read from (its name for packaged files).
    """

    ah2o: float
    nh2o: float
    ao3: float
    no3: float
    ao2: float
    no2: float
    po2: float
    aco2: float
    nco2: float
    pco2: float
    ach4: float
    nch4: float
    pch4: float
    ano2: float
    nno2: float
    pno2: float
    aco: float
    nco: float
    pco: float
    a0s: float
    a1s: float
    a2s: float
    a3s: float
    a0T: float
    a1T: float
    a2T: float
    a3T: float
    taur: float
    sr: float
    a0taup: float
    a1taup: float
    wo: float
    gc: float
    a0P: float
    a1P: float
    a2P: float
    a3P: float
    a4P: float
    Rest1: float
    Rest2: float
    Rest3: float
    Rest4: float
    Resr1: float
    Resr2: float
    Resr3: float
    Resa1: float
    Resa2: float
    Resa3: float
    Resa4: float
    source: str = ""

    def values(self) -> tuple[float, ...]:
        """The 49 coefficients in file order (without :attr:`source`)."""
        return tuple(getattr(self, name) for line in COEFFICIENT_LAYOUT for name in line)


def _parse(text: str, source: str | Path) -> SmacCoefficients:
    """Parse the text of a coefficient file; errors name ``source`` and the line."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    expected_lines = len(COEFFICIENT_LAYOUT)
    if len(lines) > expected_lines:
        raise CorruptProductError(
            source, f"a SMAC coefficient file has {expected_lines} lines of numbers, found "
                    f"{len(lines)} non-empty lines"
        )
    values: dict[str, float] = {}
    for number, names in enumerate(COEFFICIENT_LAYOUT, start=1):
        if number > len(lines):
            raise CorruptProductError(
                source, f"truncated SMAC coefficient file: line {number} is missing (expected "
                        f"{len(names)} values: {' '.join(names)}; the file has "
                        f"{expected_lines} lines)"
            )
        tokens = lines[number - 1].split()
        if len(tokens) != len(names):
            raise CorruptProductError(
                source, f"line {number} of the SMAC coefficient file holds {len(tokens)} "
                        f"value(s), expected {len(names)} ({' '.join(names)})"
            )
        for name, token in zip(names, tokens, strict=True):
            try:
                value = float(token)
            except ValueError:
                raise CorruptProductError(
                    source, f"line {number} of the SMAC coefficient file: {token!r} is not a "
                            f"number (expected {len(names)} numbers: {' '.join(names)})"
                ) from None
            if not np.isfinite(value):
                raise CorruptProductError(
                    source, f"line {number} of the SMAC coefficient file: {name} = {token} is "
                            "not a finite number"
                )
            values[name] = value
    return SmacCoefficients(**values, source=Path(str(source)).name)


def read_coefficients(path: str | Path) -> SmacCoefficients:
    """Read a SMAC coefficient file (19 lines, docs/l2a.md "Coefficient files").

    The reader checks the layout: line 1 holds 2 values (``ah2o nh2o``), line 3 three
    (``ao2 no2 po2``), line 8 four, and so on (:data:`COEFFICIENT_LAYOUT`); blank lines are
    ignored.

    Parameters
    ----------
    path
        The ``Coef_*.dat`` file.

    Returns
    -------
    SmacCoefficients
        The 49 coefficients, ``source`` set to the file name.

    Raises
    ------
    InputProductError
        (:class:`~agriseries.core.errors.CorruptProductError`) if the file cannot be read,
        is truncated, has a line with the wrong number of values or a non-numeric value;
        the message names the file, the line and the expected values.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        raise InputProductError(path, "SMAC coefficient file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CorruptProductError(path, f"cannot read the SMAC coefficient file: {exc}") from None
    return _parse(text, path)


# ---------------------------------------------------------------------------------------
# The packaged coefficient files
# ---------------------------------------------------------------------------------------

_S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10",
             "B11", "B12")
#: Landsat 8/9 OLI band -> the wavelength tag of the SMAC file (Coef_LANDSAT8_<tag>_1.dat).
_OLI_FILES = {"B1": "440", "B2": "490", "B3": "560", "B4": "660", "B5": "860", "B6": "1630",
              "B7": "2250", "B8": "PAN", "B9": "1370"}
#: Sensor -> the sensor whose coefficient files it uses (README.md in smac_coefs/).
_FILE_SENSOR = {"S2A": "S2A", "S2B": "S2B", "S2C": "S2A", "L8": "L8", "L9": "L8"}


def available_bands(sensor: str) -> tuple[str, ...]:
    """The bands of ``sensor`` that have SMAC coefficients.

    Parameters
    ----------
    sensor
        ``S2A``, ``S2B``, ``S2C``, ``L8`` or ``L9``.

    Returns
    -------
    tuple of str
        ``B01`` ... ``B12``, ``B8A`` (Sentinel-2) or ``B1`` ... ``B9`` (Landsat).

    Raises
    ------
    ConfigurationError
        If the sensor is not one of ``S2A``, ``S2B``, ``S2C``, ``L8``, ``L9``.
    """
    try:
        file_sensor = _FILE_SENSOR[sensor]
    except KeyError:
        raise ConfigurationError(
            f"no SMAC coefficients for sensor {sensor!r}: expected one of "
            f"{', '.join(_FILE_SENSOR)}"
        ) from None
    return _S2_BANDS if file_sensor.startswith("S2") else tuple(_OLI_FILES)


def coefficient_file(sensor: str, band: str) -> str:
    """The name of the packaged coefficient file of a sensor band.

    Sentinel-2C uses the Sentinel-2A files and Landsat 9 the Landsat 8 files (see
    ``smac_coefs/README.md``); Landsat bands map to the file of their central wavelength
    (B1 440, B2 490, B3 560, B4 660, B5 860, B6 1630, B7 2250, B8 PAN, B9 1370 nm).

    Parameters
    ----------
    sensor
        ``S2A``, ``S2B``, ``S2C``, ``L8`` or ``L9``.
    band
        A band of :func:`available_bands`.

    Returns
    -------
    str
        The file name in ``agriseries/l2a/smac_coefs/``.

    Raises
    ------
    ConfigurationError
        For an unknown sensor or band; the message lists what exists.
    """
    bands = available_bands(sensor)
    if band not in bands:
        raise ConfigurationError(
            f"no SMAC coefficients for band {band!r} of {sensor}: available bands are "
            f"{', '.join(bands)}"
        )
    file_sensor = _FILE_SENSOR[sensor]
    if file_sensor == "L8":
        return f"Coef_LANDSAT8_{_OLI_FILES[band]}_1.dat"
    return f"Coef_{file_sensor}_CONT_{band}.dat"


@functools.lru_cache(maxsize=128)
def coefficients_for(sensor: str, band: str) -> SmacCoefficients:
    """The SMAC coefficients shipped with agriseries for one band of one sensor.

    Parameters
    ----------
    sensor
        ``S2A``, ``S2B``, ``S2C`` (uses the S2A files), ``L8`` or ``L9`` (uses the L8
        files), as in :mod:`agriseries.core.bands`.
    band
        ``B01`` ... ``B12``, ``B8A`` for Sentinel-2 (continental aerosol model);
        ``B1`` ... ``B9`` for Landsat (B8 is the panchromatic band, B9 cirrus; the thermal
        bands have none).

    Returns
    -------
    SmacCoefficients
        Cached: the same object is returned on every call.

    Raises
    ------
    ConfigurationError
        For an unknown sensor or band; the message lists what exists.
    """
    name = coefficient_file(sensor, band)
    resource = resources.files(__package__).joinpath(_COEF_DIR, name)
    try:
        text = resource.read_text(encoding="ascii")
    except FileNotFoundError:
        raise InputProductError(
            str(resource), "packaged SMAC coefficient file missing: the agriseries "
                           "installation is incomplete (package data l2a/smac_coefs/*)"
        ) from None
    return _parse(text, name)


# ---------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------

def pressure_from_altitude(z_m):
    """Surface pressure (hPa) of the standard atmosphere at altitude ``z_m``.

    ``P = 1013.25 * (1 - 0.0065 * z / 288.15) ** 5.31``.

    Parameters
    ----------
    z_m
        Altitude in metres, scalar or array (NaN -> NaN).

    Returns
    -------
    float or numpy.ndarray
        Pressure in hPa, same shape as ``z_m`` (float64). Altitudes above 44 330 m (where
        the formula's base turns negative) give NaN.
    """
    z = np.asarray(z_m, dtype=np.float64)
    base = 1.0 - 0.0065 * z / 288.15
    with np.errstate(invalid="ignore"):
        p = 1013.25 * np.where(base > 0, base, np.nan) ** 5.31
    return p[()] if p.ndim == 0 else p


@dataclass
class SmacTerms:
    """The three atmospheric terms SMAC needs per pixel (see the module docstring).

    Attributes
    ----------
    atm
        ``atm_ref * t_g``: atmospheric path reflectance at the sensor.
    trans
        ``t_g * T(theta_s) * T(theta_v)``: total transmission.
    s
        Spherical albedo of the atmosphere.

    All three are float64 arrays of the broadcast shape of the inputs of
    :func:`smac_terms`.
    """

    atm: np.ndarray
    trans: np.ndarray
    s: np.ndarray


def smac_terms(coefs: SmacCoefficients, sun_zenith, sun_azimuth, view_zenith, view_azimuth,
               pressure=1013.25, aot550=0.1, uo3=0.3, uh2o=0.3) -> SmacTerms:
    """Evaluate the SMAC atmospheric terms (docs/l2a.md, "Equations").

    Parameters
    ----------
    coefs
        The band's coefficients (:func:`coefficients_for`, :func:`read_coefficients`).
    sun_zenith, sun_azimuth, view_zenith, view_azimuth
        Angles in degrees; any numpy-broadcastable shapes (typically the coarse angle
        grid of the product).
    pressure
        Surface pressure in hPa (:func:`pressure_from_altitude`).
    aot550
        Aerosol optical thickness at 550 nm.
    uo3
        Ozone amount in cm-atm (0.3 = 300 Dobson units).
    uh2o
        Water vapour in g/cm2.

    Returns
    -------
    SmacTerms
        float64 arrays of the broadcast shape of all the inputs; NaN where an input is
        NaN or a zenith angle is 90 degrees or more.
    """
    c = coefs
    f64 = np.float64
    tz_s = np.asarray(sun_zenith, dtype=f64)
    tz_v = np.asarray(view_zenith, dtype=f64)
    phi = np.asarray(sun_azimuth, dtype=f64) - np.asarray(view_azimuth, dtype=f64)
    p = np.asarray(pressure, dtype=f64)
    tau = np.asarray(aot550, dtype=f64)
    uo3 = np.asarray(uo3, dtype=f64)
    uh2o = np.asarray(uh2o, dtype=f64)
    shape = np.broadcast_shapes(tz_s.shape, tz_v.shape, phi.shape, p.shape, tau.shape,
                                uo3.shape, uh2o.shape)

    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        us = np.cos(np.deg2rad(tz_s))
        uv = np.cos(np.deg2rad(tz_v))
        peq = p / 1013.25
        m = 1.0 / us + 1.0 / uv
        taup = c.a0taup + c.a1taup * tau

        # gaseous transmission, both paths
        tg = (np.exp(c.ah2o * (uh2o * m) ** c.nh2o)
              * np.exp(c.ao3 * (uo3 * m) ** c.no3)
              * np.exp(c.ao2 * (peq ** c.po2 * m) ** c.no2)
              * np.exp(c.aco2 * (peq ** c.pco2 * m) ** c.nco2)
              * np.exp(c.ach4 * (peq ** c.pch4 * m) ** c.nch4)
              * np.exp(c.ano2 * (peq ** c.pno2 * m) ** c.nno2)
              * np.exp(c.aco * (peq ** c.pco * m) ** c.nco))

        # scattering transmissions (downward, upward) and spherical albedo
        t_sun = c.a0T + c.a1T * tau / us + (c.a2T * peq + c.a3T) / (1.0 + us)
        t_view = c.a0T + c.a1T * tau / uv + (c.a2T * peq + c.a3T) / (1.0 + uv)
        s = c.a0s * peq + c.a3s + c.a1s * tau + c.a2s * tau * tau

        # scattering angle
        cksi = -(us * uv + np.sqrt(1.0 - us * us) * np.sqrt(1.0 - uv * uv)
                 * np.cos(np.deg2rad(phi)))
        cksi = np.clip(cksi, -1.0, 1.0)
        ksi = np.rad2deg(np.arccos(cksi))
        usv = us * uv

        # Rayleigh reflectance and its residual
        ray_phase = 0.7190443 * (1.0 + cksi * cksi) + 0.0412742
        ray_ref = c.taur * ray_phase / (4.0 * usv) * peq
        taurz = c.taur * peq
        ray_x = c.taur * ray_phase / usv
        res_ray = c.Resr1 + c.Resr2 * ray_x + c.Resr3 * ray_x * ray_x

        # aerosol reflectance (two-stream approximation with the fitted phase function)
        aer_phase = c.a0P + ksi * (c.a1P + ksi * (c.a2P + ksi * (c.a3P + ksi * c.a4P)))
        g3 = 3.0 * c.wo * c.gc                    # 3 wo gc
        ak2 = (1.0 - c.wo) * (3.0 - g3)
        ak = np.sqrt(ak2)
        den = 1.0 - ak2 * us * us
        e = -3.0 * us * us * c.wo / (4.0 * den)
        f = -(1.0 - c.wo) * 3.0 * c.gc * us * us * c.wo / (4.0 * den)
        dp = e / (3.0 * us) + us * f
        d = e + f
        b = 2.0 * ak / (3.0 - g3)
        exp_p = np.exp(ak * taup)
        exp_m = np.exp(-ak * taup)
        delta = exp_p * (1.0 + b) ** 2 - exp_m * (1.0 - b) ** 2
        ww = c.wo / 4.0
        ss = us / den
        q1 = 2.0 + 3.0 * us + (1.0 - c.wo) * 3.0 * c.gc * us * (1.0 + 2.0 * us)
        q2 = 2.0 - 3.0 * us - (1.0 - c.wo) * 3.0 * c.gc * us * (1.0 - 2.0 * us)
        q3 = q2 * np.exp(-taup / us)
        c1 = (ww * ss / delta) * (q1 * exp_p * (1.0 + b) + q3 * (1.0 - b))
        c2 = -(ww * ss / delta) * (q1 * exp_m * (1.0 - b) + q3 * (1.0 + b))
        cp1 = c1 * ak / (3.0 - g3)
        cp2 = -c2 * ak / (3.0 - g3)
        z = d - g3 * uv * dp + c.wo * aer_phase / 4.0
        x = c1 - g3 * uv * cp1
        y = c2 - g3 * uv * cp2
        aa1 = uv / (1.0 + ak * uv)
        aa2 = uv / (1.0 - ak * uv)
        aa3 = usv / (us + uv)
        aer_ref = (x * aa1 * (1.0 - np.exp(-taup / aa1))
                   + y * aa2 * (1.0 - np.exp(-taup / aa2))
                   + z * aa3 * (1.0 - np.exp(-taup / aa3))) / usv

        # residuals of the aerosol and coupling terms
        xa = taup * m * cksi
        res_aer = c.Resa1 + c.Resa2 * xa + c.Resa3 * xa ** 2 + c.Resa4 * xa ** 3
        xt = (taup + taurz) * m * cksi
        res_6s = c.Rest1 + c.Rest2 * xt + c.Rest3 * xt ** 2 + c.Rest4 * xt ** 3

        atm_ref = ray_ref - res_ray + aer_ref - res_aer + res_6s
        atm = atm_ref * tg
        trans = tg * t_sun * t_view

    # zenith angles of 90 degrees or more: no sun / no view, the formulas do not hold
    bad = ~((tz_s < 90.0) & (tz_v < 90.0))
    out = []
    for term in (atm, trans, s):
        term = np.broadcast_to(term, shape)
        out.append(np.where(bad, np.nan, term) if bad.any() else np.array(term))
    return SmacTerms(*out)


def _term_arrays(terms: SmacTerms, dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.asarray(t, dtype=dtype) for t in (terms.atm, terms.trans, terms.s))


def _work_dtype(r) -> np.dtype:
    r = np.asarray(r)
    return np.dtype(np.float32) if r.dtype == np.float32 else np.dtype(np.float64)


def apply_inverse(r_toa, terms: SmacTerms) -> np.ndarray:
    """Surface reflectance from TOA reflectance and precomputed terms.

    ``y = r_toa - atm ; r_surf = y / (trans + y * s)`` (docs/l2a.md, "Equations").

    Parameters
    ----------
    r_toa
        TOA reflectance (0-1), any shape broadcastable with the terms. float32 input is
        computed and returned in float32 (the terms are rounded to float32); anything else
        in float64.
    terms
        :func:`smac_terms` of the band, at the resolution of ``r_toa`` or broadcastable to
        it (:func:`interpolate_terms` interpolates a coarse grid).

    Returns
    -------
    numpy.ndarray
        Surface reflectance; NaN where ``r_toa`` or a term is NaN. Not clipped: a dark
        pixel over-corrected (aerosol too high) comes out negative.
    """
    dtype = _work_dtype(r_toa)
    atm, trans, s = _term_arrays(terms, dtype)
    y = np.subtract(r_toa, atm, dtype=dtype)
    den = y * s
    den += trans
    y /= den
    return y


def apply_direct(r_surf, terms: SmacTerms) -> np.ndarray:
    """TOA reflectance from surface reflectance and precomputed terms.

    ``r_toa = r_surf * trans / (1 - r_surf * s) + atm`` (docs/l2a.md, "Equations").

    Parameters
    ----------
    r_surf
        Surface reflectance, any shape broadcastable with the terms (float32 stays float32).
    terms
        :func:`smac_terms` of the band.

    Returns
    -------
    numpy.ndarray
        TOA reflectance; NaN where an input is NaN.
    """
    dtype = _work_dtype(r_surf)
    atm, trans, s = _term_arrays(terms, dtype)
    r = np.asarray(r_surf, dtype=dtype)
    den = 1.0 - r * s
    out = r * trans
    out /= den
    out += atm
    return out


def smac_inverse(r_toa, coefs: SmacCoefficients, sun_zenith, sun_azimuth, view_zenith,
                 view_azimuth, pressure=1013.25, aot550=0.1, uo3=0.3, uh2o=0.3) -> np.ndarray:
    """SMAC inverse model: surface reflectance from TOA reflectance (docs/l2a.md, "Equations").

    Identical (bit for bit) to ``apply_inverse(r_toa, smac_terms(coefs, ...))``.

    Parameters
    ----------
    r_toa
        TOA reflectance (0-1), scalar or array.
    coefs
        The band's coefficients (:func:`coefficients_for`).
    sun_zenith, sun_azimuth, view_zenith, view_azimuth
        Angles in degrees, broadcastable with ``r_toa``.
    pressure
        Surface pressure, hPa (:func:`pressure_from_altitude`).
    aot550
        Aerosol optical thickness at 550 nm.
    uo3
        Ozone, cm-atm (0.3 = 300 DU).
    uh2o
        Water vapour, g/cm2.

    Returns
    -------
    numpy.ndarray
        Surface reflectance of the broadcast shape (float32 if ``r_toa`` is float32, else
        float64; a 0-d array for scalar inputs). NaN in -> NaN out.

    Examples
    --------
    >>> from agriseries.l2a.smac import coefficients_for, smac_inverse
    >>> float(smac_inverse(0.2, coefficients_for("S2A", "B02"), 45, 200, 5, -160,
    ...                    pressure=1013, aot550=0.1, uo3=0.3, uh2o=0.3))  # doctest: +ELLIPSIS
    0.16214342470...
    """
    terms = smac_terms(coefs, sun_zenith, sun_azimuth, view_zenith, view_azimuth,
                       pressure=pressure, aot550=aot550, uo3=uo3, uh2o=uh2o)
    return apply_inverse(r_toa, terms)


def smac_direct(r_surf, coefs: SmacCoefficients, sun_zenith, sun_azimuth, view_zenith,
                view_azimuth, pressure=1013.25, aot550=0.1, uo3=0.3, uh2o=0.3) -> np.ndarray:
    """SMAC direct model: TOA reflectance from surface reflectance (docs/l2a.md, "Equations").

    Parameters are those of :func:`smac_inverse` with ``r_surf`` in place of ``r_toa``.

    Returns
    -------
    numpy.ndarray
        TOA reflectance of the broadcast shape. ``smac_inverse(smac_direct(r))`` returns
        ``r`` to rounding.
    """
    terms = smac_terms(coefs, sun_zenith, sun_azimuth, view_zenith, view_azimuth,
                       pressure=pressure, aot550=aot550, uo3=uo3, uh2o=uh2o)
    return apply_direct(r_surf, terms)


def grid_coordinates(n_pixels: int, pixel_size: float, grid_step: float,
                     first_pixel: int = 0) -> np.ndarray:
    """Fractional coarse-grid coordinates of the centres of a run of pixels (one axis).

    For a coarse grid whose node ``k`` lies ``k * grid_step`` metres from the image's
    upper-left corner (the Sentinel-2 angle grid: ``grid_step`` 5000 m, node 0 on the tile
    corner; :class:`agriseries.io.product.AngleGrid`), pixel ``p`` (centre at
    ``(p + 0.5) * pixel_size``) sits at coarse coordinate ``(p + 0.5) * pixel_size /
    grid_step``.

    Parameters
    ----------
    n_pixels
        Number of pixels along the axis (rows or columns of the array or chunk).
    pixel_size
        Pixel size in metres (10, 20, 60).
    grid_step
        Spacing of the coarse grid nodes in metres.
    first_pixel
        Index of the first pixel in the full image (the chunk offset under dask).

    Returns
    -------
    numpy.ndarray
        float64 coordinates, for :func:`interpolate_terms` and :func:`apply_inverse_on_grid`.
    """
    return (first_pixel + np.arange(n_pixels) + 0.5) * (pixel_size / grid_step)


def _grid_arrays(terms: SmacTerms) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    arrays = tuple(np.ascontiguousarray(t, dtype=np.float64)
                   for t in (terms.atm, terms.trans, terms.s))
    if any(a.ndim != 2 or a.shape != arrays[0].shape for a in arrays) or arrays[0].size == 0:
        raise ConfigurationError(
            "gridded SMAC terms must be three non-empty 2-D arrays of one shape, got "
            f"{[a.shape for a in arrays]}"
        )
    return arrays


def _axis_coords(coords, name: str) -> np.ndarray:
    c = np.ascontiguousarray(coords, dtype=np.float64)
    if c.ndim != 1 or not np.isfinite(c).all():
        raise ConfigurationError(f"{name} must be a 1-D array of finite grid coordinates")
    return c


def interpolate_terms(terms: SmacTerms, rows, cols, dtype=np.float64) -> SmacTerms:
    """Bilinear interpolation of terms computed on a coarse 2-D grid to pixel resolution.

    Parameters
    ----------
    terms
        :func:`smac_terms` evaluated on the nodes of a coarse grid (three 2-D arrays of one
        shape). A NaN node makes the pixels around it NaN: fill the grid first where the
        image has valid pixels.
    rows, cols
        1-D fractional grid coordinates of the pixel rows and columns
        (:func:`grid_coordinates`); clamped to the grid (constant extrapolation).
    dtype
        dtype of the returned arrays.

    Returns
    -------
    SmacTerms
        Arrays of shape ``(len(rows), len(cols))``.
    """
    grids = _grid_arrays(terms)
    r = _axis_coords(rows, "rows")
    c = _axis_coords(cols, "cols")
    out = []
    for g in grids:
        o = np.empty((r.size, c.size), dtype=dtype)
        _bilinear_kernel(g, r, c, o)
        out.append(o)
    return SmacTerms(*out)


def apply_inverse_on_grid(r_toa, terms: SmacTerms, rows, cols) -> np.ndarray:
    """SMAC inverse with terms on a coarse grid, interpolated on the fly (one pass).

    Same result as ``apply_inverse(r_toa, interpolate_terms(terms, rows, cols))`` (to
    float rounding), without the three full-resolution term arrays: each pixel is
    interpolated and corrected in float64 inside a compiled loop that releases the GIL,
    so dask threads run side by side. This is the path for full tiles.

    Parameters
    ----------
    r_toa
        2-D TOA reflectance (one band, or one dask chunk of it).
    terms
        :func:`smac_terms` on the coarse grid (2-D arrays of one shape).
    rows, cols
        Grid coordinates of the rows and columns of ``r_toa`` (:func:`grid_coordinates`,
        with ``first_pixel`` the chunk offset).

    Returns
    -------
    numpy.ndarray
        Surface reflectance, float32 if ``r_toa`` is float32 else float64; NaN in -> NaN out.

    Raises
    ------
    ConfigurationError
        If ``r_toa`` is not 2-D or the coordinates do not match its shape.
    """
    dtype = _work_dtype(r_toa)
    r = np.asarray(r_toa, dtype=dtype)
    if r.ndim != 2:
        raise ConfigurationError(f"apply_inverse_on_grid needs a 2-D band, got shape {r.shape}")
    grids = _grid_arrays(terms)
    rr = _axis_coords(rows, "rows")
    cc = _axis_coords(cols, "cols")
    if (rr.size, cc.size) != r.shape:
        raise ConfigurationError(
            f"{rr.size} row and {cc.size} column coordinates given for a band of shape {r.shape}"
        )
    out = np.empty(r.shape, dtype=dtype)
    _inverse_grid_kernel(r, *grids, rr, cc, out)
    return out


# ---------------------------------------------------------------------------------------
# Compiled kernels
# ---------------------------------------------------------------------------------------

@compiled(nogil=True)
def _locate(x, n):  # pragma: no cover - compiled
    """Lower node index and weight of coordinate ``x`` on an axis of ``n`` nodes (clamped)."""
    if n == 1:
        return 0, 0, 0.0
    if x <= 0.0:
        return 0, 1, 0.0
    if x >= n - 1:
        return n - 2, n - 1, 1.0
    i0 = min(int(np.floor(x)), n - 2)
    return i0, i0 + 1, x - i0


@compiled(nogil=True, error_model="numpy")
def _interp_row(grid, i0, i1, wr, c0, c1, wc, line, out):  # pragma: no cover - compiled
    """One output row of a bilinear interpolation: blend grid rows ``i0``/``i1`` into
    ``line``, then gather and blend along the columns into ``out``."""
    for k in range(grid.shape[1]):
        line[k] = grid[i0, k] * (1.0 - wr) + grid[i1, k] * wr
    for j in range(out.size):
        out[j] = line[c0[j]] * (1.0 - wc[j]) + line[c1[j]] * wc[j]


@compiled(nogil=True, error_model="numpy")
def _column_weights(cols, n_cols):  # pragma: no cover - compiled
    c0 = np.empty(cols.size, dtype=np.intp)
    c1 = np.empty(cols.size, dtype=np.intp)
    wc = np.empty(cols.size)
    for j in range(cols.size):
        c0[j], c1[j], wc[j] = _locate(cols[j], n_cols)
    return c0, c1, wc


@compiled(nogil=True, error_model="numpy")
def _bilinear_kernel(grid, rows, cols, out):  # pragma: no cover - compiled
    line = np.empty(grid.shape[1])
    c0, c1, wc = _column_weights(cols, grid.shape[1])
    for i in range(rows.size):
        i0, i1, wr = _locate(rows[i], grid.shape[0])
        _interp_row(grid, i0, i1, wr, c0, c1, wc, line, out[i])


@compiled(nogil=True, error_model="numpy")
def _inverse_grid_kernel(r, atm, trans, s, rows, cols, out):  # pragma: no cover - compiled
    line = np.empty(atm.shape[1])
    pa = np.empty(cols.size)
    pt = np.empty(cols.size)
    ps = np.empty(cols.size)
    c0, c1, wc = _column_weights(cols, atm.shape[1])
    for i in range(rows.size):
        # the terms of this row, interpolated from the grid
        i0, i1, wr = _locate(rows[i], atm.shape[0])
        _interp_row(atm, i0, i1, wr, c0, c1, wc, line, pa)
        _interp_row(trans, i0, i1, wr, c0, c1, wc, line, pt)
        _interp_row(s, i0, i1, wr, c0, c1, wc, line, ps)
        # the correction itself (a loop the compiler vectorises)
        for j in range(cols.size):
            y = r[i, j] - pa[j]
            out[i, j] = y / (pt[j] + y * ps[j])
