"""AWS Glue from Python: the Data Catalog, the crawler and the transform job (``stockpipe glue``).

* :func:`setup` (:mod:`.catalog`) creates the database, explicit tables for ``raw.data/`` (JSON)
  and ``processed.data/`` (Parquet, the schema of :mod:`stockpipe.rules`) with a partition per
  day found in S3, and a crawler over ``raw.data/`` that only adds partitions (it inherits the
  explicit schema instead of guessing one).
* :func:`deploy` (:mod:`.job`) uploads the job script and the ``stockpipe`` package (pure
  Python, zipped for ``--extra-py-files``) and creates or updates the job, with job bookmarks on.
* :func:`run` (:mod:`.job`) starts the job and follows its state until it ends.

Every call is idempotent: what exists and matches is left alone, what differs is updated.

Example:
    >>> from stockpipe import glue, load_config
    >>> cfg = load_config()
    >>> print("\\n".join(glue.setup(cfg).lines()))  # doctest: +SKIP
    created   database stock_db
"""

from __future__ import annotations

from stockpipe.glue._calls import GlueError, Plan
from stockpipe.glue.catalog import processed_columns, setup
from stockpipe.glue.job import deploy, run

__all__ = ["GlueError", "Plan", "deploy", "processed_columns", "run", "setup"]
