"""Sun position from time and place, for products whose metadata gives no sun angles.

The equations are NOAA's "General Solar Position Calculations" (NOAA Global Monitoring
Division): the fractional year gives the equation of time and the solar declination as
short Fourier series (Spencer 1971), the true solar time gives the hour angle, and
spherical trigonometry gives the zenith and azimuth. NOAA quotes about 0.1 degree of
error, far below what a surface reflectance or a cloud-shadow projection is sensitive
to (SMAC: 2-3 % accuracy; shadows are searched in 250 m height steps). Refraction is
ignored (it matters only a few degrees above the horizon).
"""

from __future__ import annotations

import datetime as dt

import numpy as np


def sun_angles(when: dt.datetime, lon, lat) -> tuple[np.ndarray, np.ndarray]:
    """Sun zenith and azimuth (degrees; azimuth clockwise from north) at ``when``.

    Parameters
    ----------
    when
        The time (naive datetimes are taken as UTC).
    lon, lat
        Longitude and latitude in degrees (scalars or arrays that broadcast).

    Returns
    -------
    (zenith, azimuth)
        float64 arrays of the broadcast shape.
    """
    if when.tzinfo is not None:
        when = when.astimezone(dt.UTC).replace(tzinfo=None)
    start = dt.datetime(when.year, 1, 1)
    days_in_year = 366 if (when.year % 4 == 0 and (when.year % 100 != 0 or when.year % 400 == 0)) else 365
    hours = when.hour + when.minute / 60.0 + (when.second + when.microsecond * 1e-6) / 3600.0
    gamma = 2.0 * np.pi / days_in_year * ((when - start).days + (hours - 12.0) / 24.0)
    eqtime = 229.18 * (0.000075 + 0.001868 * np.cos(gamma) - 0.032077 * np.sin(gamma)
                       - 0.014615 * np.cos(2 * gamma) - 0.040849 * np.sin(2 * gamma))
    decl = (0.006918 - 0.399912 * np.cos(gamma) + 0.070257 * np.sin(gamma)
            - 0.006758 * np.cos(2 * gamma) + 0.000907 * np.sin(2 * gamma)
            - 0.002697 * np.cos(3 * gamma) + 0.00148 * np.sin(3 * gamma))
    lon = np.asarray(lon, dtype=np.float64)
    phi = np.radians(np.asarray(lat, dtype=np.float64))
    true_solar_minutes = hours * 60.0 + eqtime + 4.0 * lon
    ha = np.radians(true_solar_minutes / 4.0 - 180.0)
    cos_z = np.sin(phi) * np.sin(decl) + np.cos(phi) * np.cos(decl) * np.cos(ha)
    zen = np.arccos(np.clip(cos_z, -1.0, 1.0))
    # azimuth from north, clockwise: atan2 of the east and north components of the sun vector
    east = -np.cos(decl) * np.sin(ha)
    north = np.sin(decl) * np.cos(phi) - np.cos(decl) * np.sin(phi) * np.cos(ha)
    az = np.degrees(np.arctan2(east, north)) % 360.0
    return np.degrees(zen), az
