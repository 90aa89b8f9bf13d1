"""Automatic production: the job store (this module's :mod:`.jobstore`), and later the sites,
the scheduler and the executor.

The job store is the production database: one table of jobs (what to run, who runs it,
what happened) and one catalogue of the products that exist, in an SQLite file by default
or in PostgreSQL with one URL setting.
"""

from .jobstore import Job, JobState, JobStore, ProductRecord, job_key, params_hash

__all__ = ["Job", "JobState", "JobStore", "ProductRecord", "job_key", "params_hash"]
