"""The ``files`` source: JSON Lines, Parquet or CSV files matched by globs.

Parquet and CSV are read with ``datasets``, JSON Lines line by line with ``json.loads``.
Parquet and CSV files are streamed (``load_dataset(..., streaming=True)``, so no Arrow cache is
written) and remembered in the cursor by path::

    {"files": {"/abs/path.csv": {"rows": 120, "size": 40960, "mtime": 1718000000.0,
                                 "done": true, "head_len": 4096, "head": "9f0c..."}}}

``rows`` counts the rows consumed (mapped or rejected); ``done`` means the file was read to its
end when it had ``size`` bytes. A done file whose size and mtime are unchanged is skipped; a
file that grew resumes at ``rows``. A file that shrank, or whose first ``head_len`` bytes no
longer hash to ``head`` (rewritten in place under the same name), is read again from the start
and counted (``groundwatch_source_files_rewritten_total``); sampled rows already stored are not
sent again. A rewrite that keeps the size and the first 4 KiB is not noticed, nor is a Parquet
file replaced by a longer one with other rows (Parquet files grow by being replaced).

A JSON Lines entry also holds the file's identity and exact position (``dev``, ``ino``,
``offset`` in bytes, ``lines`` before it, ``followed`` once the globs no longer match it), and
is keyed by the file's name at the last read: the file is followed through log rotation by
identity, not by name (:mod:`evaluator.sources.file_tracking`). An entry of an older cursor,
without an identity, takes that of the file at its path when the file still opens as it did.
"""

from __future__ import annotations

import codecs
import csv
import glob
import json
import logging
import os
import re
import shutil
import tempfile
import time
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
from evaluator.sources.file_tracking import (
    HEAD_BYTES,
    FileEntry,
    RotationTracker,
    first_line_len,
    head_hash,
    is_compressed_name,
)

__all__ = ["FORMATS_BY_EXTENSION", "FileSource"]

log = logging.getLogger(__name__)

FORMATS_BY_EXTENSION = {
    ".jsonl": "json", ".ndjson": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv",
}
_FORMATS = ("auto", "json", "parquet", "csv")
# A rotated JSON Lines file keeps its format: app.jsonl.1, app.jsonl-20240501, app.ndjson.3.
_ROTATED_JSON = re.compile(r"\.(jsonl|ndjson|json)([.-]\d+)+$", re.IGNORECASE)
# Seconds a file the globs no longer match is followed after its last change (rotate_wait).
DEFAULT_ROTATE_WAIT_S = 300.0


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
            return head_hash(fh.read(length))
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


def read_json_lines(entry: FileEntry, limit: int) -> _FileSlice | None:
    """Read at most ``limit`` rows of a JSON Lines file from ``entry``'s offset, counting rows
    as datasets does (blank lines are not rows), and move ``entry`` past them.

    None when the file at ``entry.path`` is not the one ``entry`` names any more (renamed or
    truncated since it was resolved, or during this read): nothing is taken, and the next read
    finds it again.
    """
    part = _FileSlice()
    try:
        f = open(entry.path, "rb")  # noqa: SIM115 - closed below, whatever happens
    except OSError:
        return None
    with f:
        fd = f.fileno()
        stat = os.fstat(fd)
        if (stat.st_dev, stat.st_ino) != entry.identity:
            return None
        head_len = min(stat.st_size, HEAD_BYTES)
        head = os.pread(fd, head_len, 0)
        if entry.offset is not None:
            f.seek(entry.offset)
            lines = entry.lines
        else:  # an older cursor: skip `rows` rows once, then the offset is kept
            rows = lines = 0
            while rows < entry.rows:
                at_start = f.tell() == 0
                line = f.readline()
                if not line:
                    break
                if line.endswith(b"\n"):
                    lines += 1
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
            ref = f"{entry.path}:{lines + 1}"
            terminated = line.endswith(b"\n")
            if start == 0 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8):]  # opens the file; not part of a row
            if not line.strip():
                if not terminated:  # blanks still being written: wait for the newline
                    f.seek(start)
                    part.at_eof = True
                    break
                lines += 1
                continue
            try:
                obj = _loads_line(line)
            except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
                if not terminated:
                    # Probably a line still being written: leave it for the next read.
                    f.seek(start)
                    part.at_eof = True
                    break
                part.items.append(InvalidRecordError(
                    "bad_json", field="<line>", row_ref=ref, detail=str(exc)[:200]))
            else:
                if isinstance(obj, dict):
                    # A whole object without its newline yet is taken (a file may end so);
                    # the newline, when it comes, is a blank rest of the same line.
                    part.items.append((obj, ref))
                elif not terminated:
                    # "12" may be the start of "1234": wait for the newline, or the line
                    # would be rejected twice.
                    f.seek(start)
                    part.at_eof = True
                    break
                else:
                    part.items.append(InvalidRecordError(
                        "wrong_type", field="<line>", row_ref=ref,
                        detail=f"expected a JSON object, got {type(obj).__name__}"))
            if terminated:
                lines += 1
            part.consumed += 1
        # Truncated while we read (copytruncate): what came after that is not the file we
        # resolved. Take nothing; the next read finds the copy and reads on there.
        if os.pread(fd, head_len, 0) != head or os.fstat(fd).st_size < f.tell():
            return None
        entry.rows += part.consumed
        entry.offset, entry.lines = f.tell(), lines
        entry.size, entry.mtime, entry.done = stat.st_size, stat.st_mtime, part.at_eof
        entry.head_len, entry.head = head_len, head_hash(head)
        entry.first_len = first_line_len(head)
        entry.first = head_hash(head[:entry.first_len]) if entry.first_len else ""
    return part


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
    Entries of files that no longer exist are dropped from the cursor. JSON Lines files are
    followed through log rotation by identity (:mod:`evaluator.sources.file_tracking`); a file
    the globs no longer match is followed for ``rotate_wait_s`` after its last change.
    """

    def __init__(
        self,
        name: str,
        paths: list[str],
        format: str = "auto",
        columns: ColumnMap | None = None,
        limits: RowLimits | None = None,
        *,
        rotate_wait_s: float = DEFAULT_ROTATE_WAIT_S,
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
        self._tracker = RotationTracker(rotate_wait_s)
        self._columns: dict[str, str] = (columns or ColumnMap()).model_dump()
        self._stream: _OpenStream | None = None
        # Files found at their end, as (version, rows): saves reopening an idle file each poll.
        self._eof: dict[str, tuple[tuple[int, int, int], int]] = {}
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
            rotate_wait_s=src.files.rotate_wait,
            config_path=config.path,
        )

    # -- the slice -------------------------------------------------------------------------
    def read(self, cursor: Mapping[str, Any] | None, limit: int, *,
             seen: Seen | None = None) -> SourceBatch:
        """At most ``limit`` rows after the offsets in ``cursor``: first files followed after
        a rotation, then the files the globs match, in sorted order.

        Offsets are exact, so nothing is re-read and ``seen`` is not needed; a second row with
        a request id already taken in the same read is rejected as ``duplicate_id``.
        """
        if limit < 1:
            raise ValueError("limit must be at least 1")
        known = self._parse_cursor(cursor)
        matched: dict[str, tuple[str, os.stat_result]] = {}
        for path in self.matching_files():
            fmt = self._format_of(path)
            if fmt is None:
                continue
            try:
                matched[path] = (fmt, os.stat(path))
            except FileNotFoundError:
                continue
        by_name = [e for e in known if e.identity is None and self._format_of(e.path) != "json"]
        plan = self._tracker.resolve(
            [e for e in known if e not in by_name],
            {path: st for path, (fmt, st) in matched.items() if fmt == "json"})
        tables = {e.path: e for e in by_name if os.path.exists(e.path)}
        batch = SourceBatch(rewritten=plan.rewritten)
        taken: set[str] = set()
        for json_entry in plan.entries.values():
            if batch.rows_read >= limit:
                break
            part = self._read_json_entry(json_entry, limit - batch.rows_read)
            if part is not None:
                self._take(part, batch, taken)
        for path, (fmt, stat) in matched.items():
            if fmt == "json" or batch.rows_read >= limit:
                continue
            table = self._read_table(path, fmt, stat, tables.get(path), limit, batch, taken)
            if table is not None:
                tables[path] = table
        now = time.time()
        files = {e.path: e.to_json() for e in plan.entries.values()
                 if not self._tracker.forget(e, now)}
        files.update((path, e.to_json()) for path, e in tables.items())
        batch.cursor = {"files": files}
        return batch

    def _take(self, part: _FileSlice, batch: SourceBatch, taken: set[str]) -> None:
        """Map the rows of ``part`` into ``batch``."""
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

    def _read_json_entry(self, entry: FileEntry, limit: int) -> _FileSlice | None:
        """Read on in one JSON Lines file; ``entry`` is moved past what was read."""
        try:
            stat = os.stat(entry.path)
        except FileNotFoundError:
            return None
        if entry.done and entry.size == stat.st_size:
            entry.mtime = stat.st_mtime  # nothing new (or touched only)
            return None
        # JSON Lines are read line by line, never through datasets: pyarrow gives a column
        # one type for the whole file, so a row's values depended on its neighbours (an id
        # 1 next to a 2.5 came back 1.0, 2**70 as a float), and a file that opens with "["
        # was read as one JSON array (one line, many rows, and the offsets no longer
        # counted lines). The line reader resumes at the byte offset in the cursor.
        return read_json_lines(entry, limit)

    def _read_table(self, path: str, fmt: str, stat: os.stat_result, entry: FileEntry | None,
                    limit: int, batch: SourceBatch, taken: set[str]) -> FileEntry | None:
        """Read on in one Parquet or CSV file, known by its name; the new entry, or None to
        keep the old one."""
        if entry is not None and stat.st_size < entry.size:
            log.warning("file %s shrank from %d to %d bytes; reading it from the start",
                        path, entry.size, stat.st_size)
            batch.rewritten += 1
            entry = None
        if (entry is not None and entry.done and entry.size == stat.st_size
                and entry.mtime == stat.st_mtime):
            return None
        if (entry is not None and entry.head and fmt != "parquet"
                and _head(path, entry.head_len) != entry.head):
            # Same name, other bytes where we had read: rewritten in place. Offsets mean
            # nothing now: read it from the start; sampled rows already stored are not sent
            # again.
            log.warning("file %s was rewritten in place (its first %d bytes changed); "
                        "reading it from the start", path, entry.head_len)
            batch.rewritten += 1
            entry = None
        if entry is not None and entry.done and entry.size == stat.st_size:
            entry.mtime = stat.st_mtime  # touched, not changed
            return entry
        offset = entry.rows if entry is not None else 0
        version = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if self._eof.get(path) == (version, offset):
            return FileEntry(path, rows=offset, size=stat.st_size, mtime=stat.st_mtime,
                             done=True)
        part = self._read_with_datasets_safely(path, fmt, version, offset,
                                               limit - batch.rows_read)
        if part is None:
            return None
        self._take(part, batch, taken)
        rows = offset + part.consumed
        # CSV grows by appending, so its first bytes stay; a Parquet file is replaced by a
        # longer one as it grows, so its bytes say nothing.
        head_len = min(stat.st_size, HEAD_BYTES) if fmt != "parquet" else 0
        if part.at_eof:
            self._eof[path] = (version, rows)
        return FileEntry(path, rows=rows, size=stat.st_size, mtime=stat.st_mtime,
                         done=part.at_eof, head_len=head_len, head=_head(path, head_len))

    def describe_cursor(self, cursor: Mapping[str, Any] | None) -> str:
        """One line for logs and ``groundwatch cursor show``."""
        files = self._parse_cursor(cursor)
        done = sum(1 for e in files if e.done)
        rows = sum(e.rows for e in files)
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
        if is_compressed_name(path):
            return None  # a compressed rotation: its rows were read before it was compressed
        if self.format != "auto":
            return self.format
        fmt = FORMATS_BY_EXTENSION.get(os.path.splitext(path)[1].lower())
        if fmt is None and _ROTATED_JSON.search(path):
            fmt = "json"
        if fmt is None and path not in self._warned:
            self._warned.add(path)
            log.warning("skipping %s: cannot tell its format from the extension "
                        "(set source.files.format)", path)
        return fmt

    def _parse_cursor(self, cursor: Mapping[str, Any] | None) -> list[FileEntry]:
        if cursor is None:
            return []
        try:
            return [FileEntry.from_json(path, e) for path, e in cursor["files"].items()]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"source {self.name!r}: not a files cursor: {cursor!r}") from exc

    # -- one file --------------------------------------------------------------------------
    def _read_with_datasets_safely(self, path: str, fmt: str, version: tuple[int, int, int],
                                   offset: int, limit: int) -> _FileSlice | None:
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
