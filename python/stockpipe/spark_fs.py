"""Hadoop's file system API from PySpark, so the Spark transform reads and writes wherever Spark
can (``file:``, ``s3a:``, or Glue's ``s3:``). Only the standard library is imported: the module
ships to Glue in the package zip."""

from __future__ import annotations

import datetime as dt
from typing import Any

__all__ = ["HadoopFS", "day_path"]


def day_path(day: dt.date) -> str:
    """``year=YYYY/month=MM/day=DD``, a day's folder under a zone."""
    return f"year={day.year:04}/month={day.month:02}/day={day.day:02}"


class HadoopFS:
    """Keys under one root URI, through the session's Hadoop configuration."""

    def __init__(self, spark: Any, root: str) -> None:
        self._jvm = spark.sparkContext._jvm
        self._conf = spark.sparkContext._jsc.hadoopConfiguration()
        self.root = root.rstrip("/")
        path = self._jvm.org.apache.hadoop.fs.Path(self.root)
        self._fs = path.getFileSystem(self._conf)
        self._root_str = self._fs.makeQualified(path).toString().rstrip("/")

    def _path(self, key: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(f"{self.root}/{key}")

    def uri(self, key: str) -> str:
        return f"{self.root}/{key}"

    def list(self, prefix: str) -> list[tuple[str, int]]:
        """Every file under ``prefix``, recursively: (key relative to the root, size)."""
        path = self._path(prefix)
        if not self._fs.exists(path):
            return []
        out = []
        it = self._fs.listFiles(path, True)
        while it.hasNext():
            st = it.next()
            full = st.getPath().toString()
            key = full[len(self._root_str) + 1 :] if full.startswith(self._root_str + "/") else full
            out.append((key, int(st.getLen())))
        return out

    def read(self, key: str) -> bytes | None:
        path = self._path(key)
        if not self._fs.exists(path):
            return None
        stream = self._fs.open(path)
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write(self, key: str, data: bytes) -> None:
        out = self._fs.create(self._path(key), True)
        try:
            out.write(bytearray(data))
        finally:
            out.close()

    def delete(self, key: str) -> None:
        self._fs.delete(self._path(key), True)
