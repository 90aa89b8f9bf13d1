"""Distribution: the STAC API service, its asset downloads, accounts, baskets, and the
publisher that fills its catalogue from the production's outbox (docs/distribution.md).

* :mod:`.settings`: :class:`~.settings.ServiceSettings`, what ``agriseries serve`` runs with;
* :mod:`.items`: a production catalogue record -> the item the service publishes;
* :mod:`.catalog`: the catalogue backends (embedded stac-geoparquet, or pgstac);
* :mod:`.publisher`: drains the outbox into a backend, every call bounded in time;
* :mod:`.app`: :func:`~.app.create_app`, the FastAPI application (stac-fastapi + assets +
  accounts + basket);
* :mod:`.assets`, :mod:`.accounts`, :mod:`.basket`: the parts of the service;
* :mod:`.cli`: ``agriseries serve``, ``agriseries publish``, ``agriseries users``.

Everything here needs ``agriseries[server]``; production never imports it.
"""
