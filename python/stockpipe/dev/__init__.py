"""The local development stack: real Apache Kafka (KRaft) and a real S3 server on 127.0.0.1.

Nothing here is a mock: Kafka runs from its broker jars resolved from Maven Central, the
S3 server is MinIO built with ``go install``; both are cached under ``[dev] cache_dir``.

Example:
    >>> from stockpipe.dev import stack  # doctest: +SKIP
    >>> state = stack.up(load_config())  # doctest: +SKIP
"""

from stockpipe.dev.stack import down, env_lines, status, up

__all__ = ["down", "env_lines", "status", "up"]
