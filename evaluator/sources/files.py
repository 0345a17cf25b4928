"""The ``files`` source: JSON Lines, Parquet or CSV files matched by globs.

Parquet and CSV are read with ``datasets``, JSON Lines line by line with ``json.loads``. Files
are read in sorted path order, streamed (``load_dataset(..., streaming=True)``, so no Arrow
cache is written), and remembered in the cursor::

    {"files": {"/abs/path.jsonl": {"rows": 120, "size": 40960, "mtime": 1718000000.0,
                                   "done": true, "head_len": 4096, "head": "9f0c..."}}}

``rows`` counts the rows consumed (mapped or rejected); ``done`` means the file was read to its
end when it had ``size`` bytes. A done file whose size and mtime are unchanged is skipped; a
file that grew resumes at ``rows``. A file that shrank, or whose first ``head_len`` bytes no
longer hash to ``head`` (rewritten in place under the same name), is read again from the start
and counted (``groundwatch_source_files_rewritten_total``); sampled rows already stored are not
sent again. A rewrite that keeps the size and the first 4 KiB is not noticed, nor is a Parquet
file replaced by a longer one with other rows (Parquet files grow by being replaced).
"""

from __future__ import annotations

import codecs
import csv
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from evaluator.config import ColumnMap, Config
from evaluator.errors import ConfigError, InvalidRecordError
from evaluator.plugins import SourcePlugin
from evaluator.records import RowLimits, map_row
from evaluator.sources.base import PreflightScope, Seen, SourceBatch, SourceNote

__all__ = ["FORMATS_BY_EXTENSION", "FileSource"]

log = logging.getLogger(__name__)

FORMATS_BY_EXTENSION = {
    ".jsonl": "json", ".ndjson": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv",
}
_FORMATS = ("auto", "json", "parquet", "csv")
def _csv_text(cell: str) -> str | None:
    return cell if cell != "" else None


def _csv_header(path: str) -> list[str]:
    """The column names of a CSV file (its first row)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        return next(csv.reader(fh), [])


def _import_datasets() -> Any:
    # Offline unless the operator says otherwise: reading local files never needs the Hub, and
    # a sampler must not hang on a network call. Effective only if datasets is not yet imported.
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # datasets (and pyarrow) take seconds to import: only Parquet and CSV files need them,
    # and the variables above must be set before it is imported.
    import datasets

    return datasets


# A file is recognised by a hash of its first bytes (as far as it had been read): a file
# rewritten in place under the same name is read again from the start.
_HEAD_BYTES = 4096


def _loads_line(line: bytes) -> Any:
    """``json.loads``, with nesting too deep for the parser reported as invalid JSON (a
    RecursionError would fail every read of the file)."""
    try:
        return json.loads(line)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _head(path: str, length: int) -> str:
    """Hash of the first ``length`` bytes of ``path`` ("" when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            return hashlib.blake2b(fh.read(length), digest_size=16).hexdigest()
    except OSError:
        return ""


@dataclass(slots=True)
class _FileSlice:
    # In file order: (row, position) to map, or a line already rejected by the line reader.
    items: list[tuple[Mapping[str, Any], str] | InvalidRecordError] = field(default_factory=list)
    consumed: int = 0
    at_eof: bool = False


@dataclass(slots=True)
class _OpenStream:
    """A datasets iterator left open between two reads of the same file.

    ``version`` is the file's (inode, size, mtime) when the stream was last used: a stream is
    reused only for an unchanged file, never for one replaced by a longer copy (Parquet).
    """

    path: str
    version: tuple[int, int, int]
    iterator: Iterator[Mapping[str, Any]]
    next_row: int

    def close(self) -> None:
        close = getattr(self.iterator, "close", None)
        if close is not None:
            close()


PLUGINS = (SourcePlugin("files", "evaluator.sources.files:FileSource",
                        key="source.files.paths", connect_key="source.files.paths"),)


class FileSource:
    """Reads log files matched by ``paths`` (globs, ``**`` allowed, relative to the cwd).

    ``format`` is ``json`` (JSON Lines), ``parquet``, ``csv`` or ``auto`` (by extension:
    .jsonl/.ndjson/.json, .parquet, .csv; other files matched by the globs are skipped with a
    warning). Rows without a usable request id are named ``path:N`` in rejections, N being the
    line number for CSV and JSON Lines read line by line, otherwise the 1-based row number.

    Parquet and CSV files are read with ``datasets``, streamed. JSON Lines are read line by
    line with ``json.loads``, so that each row keeps the types it was written with whatever
    the rows beside it (datasets gives a column one type for the whole file), and a line is
    always one row: blank lines are not rows, a byte order mark opening the file is ignored,
    and a line that is not a JSON object (``wrong_type``) or not JSON, UTF-8 included
    (``bad_json``), is rejected with field ``<line>`` while the rest of the file comes through.
    Resuming mid-file (the file grew, or a new instance starts from a saved cursor) skips the
    earlier lines unparsed once, and the byte offset is then remembered, so tailing a growing
    file does not re-read it from the top every poll.

    An unterminated last line that does not parse is taken to be still being written and is
    left for the next read. A Parquet or CSV file that cannot be read is skipped for this read
    with a warning and retried on the next one; resuming one mid-file re-reads its earlier rows.
    Entries of files that no longer exist are dropped from the cursor.
    """

    def __init__(
        self,
        name: str,
        paths: list[str],
        format: str = "auto",
        columns: ColumnMap | None = None,
        limits: RowLimits | None = None,
        *,
        config_path: str | None = None,
    ) -> None:
        if not paths:
            raise ConfigError("at least one path or glob is needed", path=config_path,
                              key="source.files.paths")
        if format not in _FORMATS:
            raise ConfigError(f"unknown format {format!r}; valid: {', '.join(_FORMATS)}",
                              path=config_path, key="source.files.format")
        self.name = name
        self.paths = list(paths)
        self.format = format
        self.limits = limits or RowLimits()
        self._columns: dict[str, str] = (columns or ColumnMap()).model_dump()
        self._stream: _OpenStream | None = None
        # Files found at their end, as (version, rows): saves reopening an idle file each poll.
        self._eof: dict[str, tuple[tuple[int, int, int], int]] = {}
        # JSON Lines files, with (inode, rows, byte offset, line number) of the line reader,
        # so that a long file is not rescanned from the top on every read.
        self._line_mode: dict[str, tuple[int, int, int, int]] = {}
        self._warned: set[str] = set()
        self._cache_dir: str | None = None
        self._finalizer: weakref.finalize[Any, FileSource] | None = None

    kind = "files"
    positions_by_time = False  # a file's position is its offset, not a time

    @classmethod
    def check_connection(cls, config: Config, timeout_s: float) -> SourceNote | None:
        """Nothing to connect to: :meth:`preflight_scope` looks for the files."""
        return None

    @classmethod
    def from_config(cls, config: Config) -> FileSource:
        src = config.source
        return cls(
            src.name,
            list(src.files.paths),
            src.files.format,
            src.columns,
            RowLimits.of(src),
            config_path=config.path,
        )

    # -- the slice -------------------------------------------------------------------------
    def read(self, cursor: Mapping[str, Any] | None, limit: int, *,
             seen: Seen | None = None) -> SourceBatch:
        """At most ``limit`` rows after the offsets in ``cursor``, files in sorted order.

        Offsets are exact, so nothing is re-read and ``seen`` is not needed; a second row with
        a request id already taken in the same read is rejected as ``duplicate_id``.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        files = {path: entry for path, entry in self._parse_cursor(cursor).items()
                 if os.path.exists(path)}
        batch = SourceBatch()
        taken: set[str] = set()
        for path in self.matching_files():
            remaining = limit - batch.rows_read
            if remaining <= 0:
                break
            fmt = self._format_of(path)
            if fmt is None:
                continue
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue
            entry = files.get(path)
            if entry is not None and stat.st_size < entry["size"]:
                log.warning("file %s shrank from %d to %d bytes; reading it from the start",
                            path, entry["size"], stat.st_size)
                batch.rewritten += 1
                entry = None
            if (entry is not None and entry["done"] and entry["size"] == stat.st_size
                    and entry["mtime"] == stat.st_mtime):
                continue
            if (entry is not None and entry.get("head") and fmt != "parquet"
                    and _head(path, entry["head_len"]) != entry["head"]):
                # Same name, other bytes where we had read: rewritten in place (a log shipper
                # that rewrites, an editor). Offsets mean nothing now: read it from the start;
                # sampled rows already stored are not sent again.
                log.warning("file %s was rewritten in place (its first %d bytes changed); "
                            "reading it from the start", path, entry["head_len"])
                batch.rewritten += 1
                entry = None
            if entry is not None and entry["done"] and entry["size"] == stat.st_size:
                files[path] = {**entry, "mtime": stat.st_mtime}  # touched, not changed
                continue
            offset = entry["rows"] if entry is not None else 0
            version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
            if self._eof.get(path) == (version, offset):
                files[path] = {"rows": offset, "size": stat.st_size, "mtime": stat.st_mtime,
                               "done": True}
                continue
            part = self._read_file(path, fmt, version, offset, remaining)
            if part is None:
                continue
            for item in part.items:
                if isinstance(item, InvalidRecordError):
                    batch.rejections.append(item)
                    continue
                row, position = item
                try:
                    record = map_row(row, self._columns, limits=self.limits,
                                     position=position, dropped=batch.dropped)
                except InvalidRecordError as err:
                    batch.rejections.append(err)
                    continue
                if record.request_id in taken:
                    batch.rejections.append(InvalidRecordError(
                        "duplicate_id", field="request_id", row_ref=record.request_id,
                        detail=f"a row with this request id was read before; this one is "
                               f"at {position}"))
                    continue
                taken.add(record.request_id)
                batch.records.append(record)
            batch.rows_read += part.consumed
            rows = offset + part.consumed
            # Text formats grow by appending, so their first bytes stay; a Parquet file is
            # replaced by a longer one as it grows, so its bytes say nothing.
            head_len = min(stat.st_size, _HEAD_BYTES) if fmt != "parquet" else 0
            files[path] = {"rows": rows, "size": stat.st_size, "mtime": stat.st_mtime,
                           "done": part.at_eof, "head_len": head_len,
                           "head": _head(path, head_len)}
            if part.at_eof:
                self._eof[path] = (version, rows)
        batch.cursor = {"files": files}
        return batch

    def describe_cursor(self, cursor: Mapping[str, Any] | None) -> str:
        """One line for logs and ``groundwatch cursor show``."""
        files = self._parse_cursor(cursor)
        done = sum(1 for e in files.values() if e["done"])
        rows = sum(e["rows"] for e in files.values())
        return (f"files {', '.join(self.paths)}: {len(files)} file(s) known, {done} read to "
                f"the end, {rows} row(s) consumed")

    def describe(self) -> str:
        return f"files {', '.join(self.paths)}"

    def cursor_at(self, when: datetime | None = None, *, value: Any = None) -> dict[str, Any]:
        raise ValueError("a files source takes --json (the position as `cursor show` prints it)")

    def recount(self) -> bool:
        """Files count no missed rows (every line after the offset is read)."""
        return False

    def backfill_start(self, since: datetime) -> dict[str, Any] | None:
        return None  # read from the start; the sampler drops the rows before `since`

    def preflight_scope(self) -> PreflightScope:
        files = self.matching_files()
        if not files:
            return PreflightScope(problem=SourceNote(
                f"no file matches {self.paths!r} (relative globs are resolved from "
                f"{os.getcwd()})", key="source.files.paths", problem=True))
        return PreflightScope(line=f"source {self.name!r} (files): {len(files)} file(s) match "
                                   f"{self.paths!r}")

    def preflight_notes(self) -> list[SourceNote]:
        return []

    def matching_files(self) -> list[str]:
        """Absolute paths of the regular files the globs match now, sorted."""
        found: set[str] = set()
        for pattern in self.paths:
            for match in glob.glob(os.path.expanduser(pattern), recursive=True):
                if os.path.isfile(match):
                    found.add(os.path.abspath(match))
        return sorted(found)

    def _format_of(self, path: str) -> str | None:
        if self.format != "auto":
            return self.format
        fmt = FORMATS_BY_EXTENSION.get(os.path.splitext(path)[1].lower())
        if fmt is None and path not in self._warned:
            self._warned.add(path)
            log.warning("skipping %s: cannot tell its format from the extension "
                        "(set source.files.format)", path)
        return fmt

    def _parse_cursor(self, cursor: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
        if cursor is None:
            return {}
        try:
            files = cursor["files"]
            return {str(path): {"rows": int(e["rows"]), "size": int(e["size"]),
                                "mtime": float(e["mtime"]), "done": bool(e["done"]),
                                "head_len": int(e.get("head_len") or 0),
                                "head": str(e.get("head") or "")}
                    for path, e in files.items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"source {self.name!r}: not a files cursor: {cursor!r}") from exc

    # -- one file --------------------------------------------------------------------------
    def _read_file(self, path: str, fmt: str, version: tuple[int, int, int], offset: int,
                   limit: int) -> _FileSlice | None:
        if fmt == "json":
            # JSON Lines are read line by line, never through datasets: pyarrow gives a column
            # one type for the whole file, so a row's values depended on its neighbours (an id
            # 1 next to a 2.5 came back 1.0, 2**70 as a float), and a file that opens with "["
            # was read as one JSON array (one line, many rows, and the offsets no longer
            # counted lines). The line reader also resumes at a remembered byte offset.
            return self._read_json_lines(path, offset, limit)
        try:
            return self._read_with_datasets(path, fmt, version, offset, limit)
        except Exception as exc:  # datasets/pyarrow/pandas raise many types for a bad file
            self._drop_stream()
            log.warning("cannot read %s as %s, will retry: %s: %s", path, fmt,
                        type(exc).__name__, exc)
            return None

    def _read_with_datasets(self, path: str, fmt: str, version: tuple[int, int, int],
                            offset: int, limit: int) -> _FileSlice:
        stream = self._stream
        if stream is None or not self._can_continue(path, version, offset):
            # Resuming Parquet or CSV mid-file costs a pass over the earlier rows (datasets has
            # no byte offsets); a file read in slices by one instance reuses its open stream.
            self._drop_stream()
            stream = _OpenStream(path, version, self._open(path, fmt, offset), offset)
            self._stream = stream
        part = _FileSlice()
        # Position as a line number for CSV (line 1 is the header), a row number otherwise.
        first_line = 2 if fmt == "csv" else 1
        while part.consumed < limit:
            try:
                row = next(stream.iterator)
            except StopIteration:
                part.at_eof = True
                break
            part.items.append((row, f"{path}:{offset + part.consumed + first_line}"))
            part.consumed += 1
        stream.next_row = offset + part.consumed
        if part.at_eof:
            self._drop_stream()
        return part

    def _can_continue(self, path: str, version: tuple[int, int, int], offset: int) -> bool:
        stream = self._stream
        return stream is not None and (stream.path, stream.version, stream.next_row) == (
            path, version, offset)

    def _open(self, path: str, fmt: str, offset: int) -> Iterator[Mapping[str, Any]]:
        datasets = _import_datasets()
        kwargs: dict[str, Any] = {}
        if fmt == "csv":
            # Every cell as text: map_row reads numbers from text itself. Letting pandas infer
            # types failed the whole file on one 300-digit number (OverflowError in Arrow),
            # read an id "0042" as 42 and a question "NA" as missing.
            kwargs = {"converters": dict.fromkeys(_csv_header(path), _csv_text),
                      "keep_default_na": False, "na_values": [""]}
        dataset = datasets.load_dataset(fmt, data_files=[path], split="train", streaming=True,
                                        cache_dir=self._datasets_cache_dir(), **kwargs)
        if offset:
            dataset = dataset.skip(offset)
        return iter(dataset)

    def _read_json_lines(self, path: str, offset: int, limit: int) -> _FileSlice:
        """Read JSON Lines with ``json.loads``, counting rows as datasets does (blank lines
        are not rows), so that offsets mean the same thing on both paths."""
        part = _FileSlice()
        with open(path, "rb") as f:
            inode, rows, byte, lineno = self._line_mode.get(path, (-1, 0, 0, 0))
            if inode == os.fstat(f.fileno()).st_ino and rows == offset:
                f.seek(byte)
            else:
                rows, lineno = 0, 0
                while rows < offset:
                    at_start = f.tell() == 0
                    line = f.readline()
                    if not line:
                        break
                    lineno += 1
                    if at_start and line.startswith(codecs.BOM_UTF8):
                        line = line[len(codecs.BOM_UTF8):]
                    if line.strip():
                        rows += 1
            while part.consumed < limit:
                start = f.tell()
                line = f.readline()
                if not line:
                    part.at_eof = True
                    break
                lineno += 1
                if start == 0 and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]  # opens the file; not part of a row
                if not line.strip():
                    continue
                ref = f"{path}:{lineno}"
                try:
                    obj = _loads_line(line)
                except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                    if not line.endswith(b"\n"):
                        # Probably a line still being written: leave it for the next read.
                        f.seek(start)
                        lineno -= 1
                        part.at_eof = True
                        break
                    part.items.append(InvalidRecordError(
                        "bad_json", field="<line>", row_ref=ref, detail=str(exc)[:200]))
                else:
                    if isinstance(obj, dict):
                        part.items.append((obj, ref))
                    else:
                        part.items.append(InvalidRecordError(
                            "wrong_type", field="<line>", row_ref=ref,
                            detail=f"expected a JSON object, got {type(obj).__name__}"))
                part.consumed += 1
            self._line_mode[path] = (os.fstat(f.fileno()).st_ino, offset + part.consumed,
                                     f.tell(), lineno)
        return part

    # -- resources -------------------------------------------------------------------------
    def _datasets_cache_dir(self) -> str:
        # Streaming writes no Arrow cache, but the builder still takes lock files in its cache
        # directory; keep them in a private temporary directory rather than in ~/.cache.
        if self._cache_dir is None:
            self._cache_dir = tempfile.mkdtemp(prefix="groundwatch-datasets-")
            self._finalizer = weakref.finalize(self, shutil.rmtree, self._cache_dir, True)
        return self._cache_dir

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None

    def close(self) -> None:
        """Close any open file stream and remove the private datasets cache directory."""
        self._drop_stream()
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
            self._cache_dir = None

    def __repr__(self) -> str:
        return f"FileSource(name={self.name!r}, paths={self.paths!r}, format={self.format!r})"
