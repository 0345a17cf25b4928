"""Which file is which, for the ``files`` source: its cursor entries, and how a JSON Lines file
is followed through log rotation.

After Vector's and Filebeat's file sources, a JSON Lines file is known by its identity, device
and inode, checked against a fingerprint of its first bytes (as far as they had been read, at
most ``HEAD_BYTES``), never by its name alone:

* renamed (logrotate ``create``: ``app.jsonl`` becomes ``app.jsonl.1`` and the app writes on
  for a moment before it reopens): the same inode is found again, under a name the globs
  match or, failing that, in the directory it was in, and read on to its end. A file the globs
  no longer match is followed until it has been read to its end and unchanged for
  ``rotate_wait``, then forgotten;
* truncated (logrotate ``copytruncate``): the inode's first bytes changed. The lines written
  between our last read and the copy are only in the copy, a new inode: a file beside it (or
  matched by the globs) whose first bytes hash to the fingerprint is taken for that copy and
  read on from the byte offset reached in the original. The original is then read from its
  new start, as a new file;
* copied while we read it (the instant between logrotate's copy and its truncation, or a
  plain ``cp``): a file the globs match whose first line is that of a file being read is left
  alone, so the same rows are never read twice; it is taken up as above once the original is
  truncated;
* compressed (``.gz`` and the like, by extension or magic bytes): never read, the rows are
  read from the file before it was compressed.

Parquet and CSV files are replaced rather than appended (a longer Parquet file is a new file
under the same name), so they stay known by their path, as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["HEAD_BYTES", "FileEntry", "Resolution", "RotationTracker", "first_line_len", "head_hash",
           "is_compressed_name"]

log = logging.getLogger("evaluator.sources.files")

# A file's fingerprint covers at most this many of its first bytes.
HEAD_BYTES = 4096

COMPRESSED_EXTENSIONS = frozenset({".gz", ".bz2", ".xz", ".zst", ".lz4", ".z", ".zip", ".br",
                                   ".lzma", ".7z"})
# gzip, bzip2, xz, zstd, lz4, zip: a compressed rotation whose name says nothing.
_COMPRESSED_MAGIC = (b"\x1f\x8b", b"BZh", b"\xfd7zXZ\x00", b"\x28\xb5\x2f\xfd",
                     b"\x04\x22\x4d\x18", b"PK\x03\x04")


def is_compressed_name(path: str) -> bool:
    """Whether the name says the file is compressed (a rotation such as ``app.jsonl.2.gz``)."""
    return os.path.splitext(path)[1].lower() in COMPRESSED_EXTENSIONS


def head_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def first_line_len(head: bytes) -> int:
    """Length of the first line in ``head`` (with its newline, at most ``HEAD_BYTES``); 0 while
    it is not complete."""
    end = head.find(b"\n")
    if end >= 0:
        return end + 1
    return HEAD_BYTES if len(head) >= HEAD_BYTES else 0


def _read_head(path: str) -> bytes | None:
    try:
        with open(path, "rb") as fh:
            return fh.read(HEAD_BYTES)
    except OSError:
        return None


@dataclass(slots=True)
class FileEntry:
    """What the cursor remembers of one file.

    ``dev``/``ino`` are set for JSON Lines files (followed by identity); Parquet and CSV
    entries, and entries of a cursor written before identities were kept, have none.
    ``offset`` is the byte offset after the last line consumed, ``lines`` the newlines before
    it (row references are line numbers); ``offset`` None (an older cursor) resumes by
    skipping ``rows`` rows. ``followed`` marks a file the globs no longer match.
    """

    path: str
    rows: int = 0
    size: int = 0
    mtime: float = 0.0
    done: bool = False
    head_len: int = 0
    head: str = ""
    dev: int | None = None
    ino: int | None = None
    offset: int | None = None
    lines: int = 0
    followed: bool = False
    first_len: int = 0
    first: str = ""

    @property
    def identity(self) -> tuple[int, int] | None:
        return None if self.dev is None or self.ino is None else (self.dev, self.ino)

    def fingerprint_of(self, head: bytes) -> bool:
        """Whether ``head`` (a file's first bytes) opens like this file, as far as read."""
        return (len(head) >= self.head_len
                and head_hash(head[:self.head_len]) == self.head)

    def same_first_line(self, head: bytes) -> bool:
        """Whether ``head`` opens with this file's first line. JSON Lines open with a line
        naming a request id and a time: the whole first line tells files apart (a few bytes
        of it do not), and a copy still being made has it as soon as its first line."""
        length = first_line_len(head)
        if self.first_len:
            return length == self.first_len and head_hash(head[:length]) == self.first
        # An entry of an older cursor: its head, if that covers a whole first line.
        return 0 < length <= self.head_len and self.fingerprint_of(head)

    def is_copy(self, head: bytes) -> bool:
        """Whether ``head`` is that of a finished copy of this file."""
        return self.same_first_line(head) and self.fingerprint_of(head)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rows": self.rows, "size": self.size, "mtime": self.mtime,
                               "done": self.done, "head_len": self.head_len, "head": self.head}
        if self.identity is not None:
            out.update(dev=self.dev, ino=self.ino, offset=self.offset, lines=self.lines)
            if self.followed:
                out["followed"] = True
            if self.first_len:
                out.update(first_len=self.first_len, first=self.first)
        return out

    @classmethod
    def from_json(cls, path: str, e: Mapping[str, Any]) -> FileEntry:
        def opt(key: str) -> int | None:
            return None if e.get(key) is None else int(e[key])

        return cls(str(path), rows=int(e["rows"]), size=int(e["size"]),
                   mtime=float(e["mtime"]), done=bool(e["done"]),
                   head_len=int(e.get("head_len") or 0), head=str(e.get("head") or ""),
                   dev=opt("dev"), ino=opt("ino"), offset=opt("offset"),
                   lines=int(e.get("lines") or 0), followed=bool(e.get("followed", False)),
                   first_len=int(e.get("first_len") or 0), first=str(e.get("first") or ""))


@dataclass(slots=True)
class Resolution:
    """The JSON Lines files to read, by their name now, followed files first."""

    entries: dict[str, FileEntry] = field(default_factory=dict)
    rewritten: int = 0


class _Directories:
    """The regular files of the directories looked into during one read, by inode."""

    def __init__(self) -> None:
        self._listed: dict[str, dict[int, str]] = {}

    def files(self, directory: str) -> dict[int, str]:
        listed = self._listed.get(directory)
        if listed is None:
            listed = {}
            try:
                with os.scandir(directory) as it:
                    for item in it:
                        if item.is_file(follow_symlinks=False):
                            listed[item.inode()] = item.path
            except OSError:
                pass
            self._listed[directory] = listed
        return listed

    def find(self, near: str, identity: tuple[int, int]) -> tuple[str, os.stat_result] | None:
        """The file with ``identity`` in the directory of ``near`` (renamed there)."""
        path = self.files(os.path.dirname(near)).get(identity[1])
        if path is None:
            return None
        try:
            st = os.stat(path)
        except OSError:
            return None
        return (path, st) if (st.st_dev, st.st_ino) == identity else None


class RotationTracker:
    """Matches the cursor's JSON Lines entries with the files there are now."""

    def __init__(self, rotate_wait_s: float) -> None:
        self.rotate_wait_s = rotate_wait_s
        self._noted: set[tuple[str, int, int]] = set()

    def resolve(self, known: Iterable[FileEntry],
                matched: Mapping[str, os.stat_result]) -> Resolution:
        """Find each known file again (``matched``: the JSON Lines files the globs match now,
        by absolute path) and add the new ones; entries are updated in place."""
        by_identity = {(st.st_dev, st.st_ino): path for path, st in matched.items()}
        dirs = _Directories()
        claimed: dict[str, FileEntry] = {}
        orphans: list[tuple[FileEntry, bool]] = []  # (entry, its name holds other bytes now)
        for entry in known:
            if entry.identity is None:
                # An entry of an older cursor, keyed by name: it was the file there now, if
                # that file still opens with the same bytes (checked below).
                try:
                    st = os.stat(entry.path)
                except OSError:
                    orphans.append((entry, False))
                    continue
                entry.dev, entry.ino = st.st_dev, st.st_ino
            identity = entry.identity
            assert identity is not None
            path = by_identity.get(identity)
            found = (path, matched[path]) if path is not None else dirs.find(entry.path,
                                                                               identity)
            if found is None or found[0] in claimed:
                orphans.append((entry, False))
                continue
            path, st = found
            if not self._same_content(entry, path, st):
                orphans.append((entry, path == entry.path))
                continue
            entry.path, entry.followed = path, path not in matched
            claimed[path] = entry
        result = Resolution()
        known_now = [*claimed.values(), *(e for e, _ in orphans)]
        for entry, in_place in orphans:
            self._settle_orphan(entry, in_place, matched, claimed, dirs, result, known_now)
        live = [e for e in claimed.values() if e.head_len > 0]
        for path in sorted(matched):
            if path in claimed:
                continue
            st = matched[path]
            head = _read_head(path) or b""
            if head.startswith(_COMPRESSED_MAGIC):
                continue
            if not first_line_len(head):
                # Taken once its first line is complete (as Vector does): until then it may
                # be a copy still being made of a file being read, and cannot be told apart.
                continue
            twin = next((e for e in live if e.same_first_line(head)), None)
            if twin is not None:
                self._note_once(path, st, "file %s opens with the same bytes as %s, which is "
                                "being read: taken for a copy of it and not read (it is read "
                                "on from where that file was once the original is truncated)",
                                path, twin.path)
                continue
            claimed[path] = FileEntry(path, dev=st.st_dev, ino=st.st_ino, offset=0)
        followed = sorted(p for p, e in claimed.items() if e.followed)
        result.entries = {p: claimed[p] for p in [*followed, *sorted(set(claimed) - set(followed))]}
        return result

    def forget(self, entry: FileEntry, now: float) -> bool:
        """Whether a followed file (no longer matched) is done with: read to its end and
        unchanged for ``rotate_wait``."""
        return entry.followed and entry.done and now - entry.mtime >= self.rotate_wait_s

    # -- the steps -------------------------------------------------------------------------
    @staticmethod
    def _same_content(entry: FileEntry, path: str, st: os.stat_result) -> bool:
        if st.st_size < entry.size:
            return False
        if st.st_size == entry.size and st.st_mtime == entry.mtime:
            return True  # untouched since: no need to read its first bytes
        if entry.head_len == 0:
            return True
        return entry.fingerprint_of(_read_head(path) or b"")

    def _settle_orphan(self, entry: FileEntry, in_place: bool,
                       matched: Mapping[str, os.stat_result], claimed: dict[str, FileEntry],
                       dirs: _Directories, result: Resolution,
                       known: list[FileEntry]) -> None:
        copy = self._find_copy(entry, matched, claimed, dirs)
        if copy is not None:
            path, st = copy
            log.info("file %s was copied to %s (copytruncate, or renamed and replaced): "
                     "reading the copy on from byte %s", entry.path, path, entry.offset)
            entry.path, entry.dev, entry.ino = path, st.st_dev, st.st_ino
            entry.followed, entry.done = path not in matched, False
            claimed[path] = entry
            return
        if in_place and self._holds_a_copy(entry, known):
            # Its inode was freed (deleted, or compressed) and taken by the copy of another
            # file now under its name: not a rewrite.
            in_place = False
        if in_place:
            # Same name, other bytes where we had read, and no copy of them in sight: rewritten
            # in place (a shipper that rewrites its file) or truncated with the copy gone.
            # Read it from the start; sampled rows already stored are not sent again.
            log.warning("file %s shrank or was rewritten in place (its first %d bytes "
                        "changed) and no copy of what it held is in its directory; reading "
                        "it from the start", entry.path, entry.head_len)
            result.rewritten += 1
        elif not entry.done:
            log.warning("file %s is gone (deleted, moved to another directory or compressed) "
                        "before it was read to its end; rows after byte %s were not read",
                        entry.path, entry.offset)

    @staticmethod
    def _holds_a_copy(entry: FileEntry, known: list[FileEntry]) -> bool:
        head = _read_head(entry.path) or b""
        return any(other is not entry and other.same_first_line(head) for other in known)

    @staticmethod
    def _find_copy(entry: FileEntry, matched: Mapping[str, os.stat_result],
                   claimed: Mapping[str, FileEntry],
                   dirs: _Directories) -> tuple[str, os.stat_result] | None:
        if entry.head_len == 0:
            return None
        taken = {e.identity for e in claimed.values()}
        near = set(dirs.files(os.path.dirname(entry.path)).values())
        for path in sorted(near | set(matched)):
            if path in claimed or is_compressed_name(path):
                continue
            try:
                st = os.stat(path)
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in taken or st.st_size < (entry.offset or 0):
                continue
            if entry.is_copy(_read_head(path) or b""):
                return path, st
        return None

    def _note_once(self, path: str, st: os.stat_result, message: str, *args: object) -> None:
        key = (path, st.st_dev, st.st_ino)
        if key not in self._noted:
            self._noted.add(key)
            log.info(message, *args)
