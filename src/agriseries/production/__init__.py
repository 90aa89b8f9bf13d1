"""Automatic production (docs/production.md, docs/jobstore.md).

``site``
    the site file (tiles, season, sensors, products wanted), validated with pydantic.
``scheduler``
    which products are due: pure functions from a site, the catalogue and a date to jobs.
``runner``
    ``agriseries run``: ingest the inbox, plan, run the jobs (locally or on a Dask
    cluster), record the results.
``jobstore``
    the production database: the jobs (what to run, who runs it, what happened) and the
    catalogue of the products that exist, in an SQLite file by default or in PostgreSQL
    with one URL setting.
``cli``
    the ``agriseries site``, ``run`` and ``status`` commands.
"""

from .jobstore import Job, JobState, JobStore, ProductRecord, job_key, params_hash

__all__ = ["Job", "JobState", "JobStore", "ProductRecord", "job_key", "params_hash"]
