"""L3B: biophysical variables (LAI, FAPAR, FCOVER, canopy chlorophyll and water content).

The estimates come from the S2 Toolbox (SNAP) neural networks of Weiss & Baret
(docs/l3b.md), applied per date to L2A surface reflectance, then
smoothed and gap-filled along time.

Modules
-------
networks
    The networks: their text files (shipped as package data under ``networks/``, one
    folder per model and version), the model catalogue (:func:`networks.model_for`,
    :func:`networks.load_model`), the numba per-pixel kernel with SNAP's validity flags
    (:func:`networks.evaluate_model`) and its numpy reference, and the replay of SNAP's
    TestCases files (:func:`networks.verify`).
timeseries
    Temporal smoothing and gap filling of the per-date estimates (Whittaker smoother on
    irregular dates, weights from the flags).
"""
