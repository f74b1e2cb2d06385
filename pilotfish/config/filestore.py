"""The embedded default backend: a snapshot plus a journal under ``<state>/config/``.

- ``store.json`` is a snapshot: every record and the resource version it was taken at. It is
  only ever replaced the crash-safe way (temporary file in the same directory, ``fsync``,
  ``os.replace``, ``fsync`` of the directory), so it is always the old or the new snapshot.
- ``journal.log`` is a write-ahead log of the change sets committed since. A commit appends one
  self-delimiting line, ``<length> <crc32 hex> <json>`` and a newline, whose JSON holds the
  change set's resource version, puts and deletes, and syncs the file (``fdatasync``) before it
  returns: one small append, however large the state. Since every append is synced before the
  next, a crash can only tear the last line. ``load`` replays the intact records whose resource
  version is newer than the snapshot's, stops at the first incomplete line or bad checksum, and
  cuts the journal back to the end of the last intact record, so a change set is there in full
  or not at all. (A damaged record with intact ones after it is no torn write: that, like a
  corrupt snapshot, raises :class:`StateError` rather than dropping committed changes.)
- Compaction: once the journal would grow past ``compact_bytes`` (default: 4 MiB or the
  snapshot's size, whichever is larger) the commit writes a new snapshot of the whole state
  instead of appending, and then empties the journal. A crash between the two steps is
  harmless: records not newer than the snapshot are skipped on load.
- A failed append is cut off again before the commit raises. If even that fails, nothing more
  is appended after it: the following commit (or ``close``) compacts, which puts the state in
  memory on disk and resets the journal.

Leftover temporary files are removed on start; a lock file keeps two processes from using one
state directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import tempfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import msgspec

from pilotfish.config.backend import Record, RecordKey, Snapshot, apply_change

FORMAT = "pilotfish.config/v1"
STATE_FILE = "store.json"
JOURNAL_FILE = "journal.log"
TMP_PREFIX = STATE_FILE + ".tmp."
LOCK_FILE = ".lock"
#: The journal's size that triggers compaction, unless the snapshot is larger.
DEFAULT_COMPACT_BYTES = 4 << 20

log = logging.getLogger("pilotfish.config.filestore")


class StateError(Exception):
    """The state directory cannot be used (locked by another process, or a corrupt file)."""


class _File(msgspec.Struct, kw_only=True):
    format: str
    resource_version: int
    records: list[Record]


class _Entry(msgspec.Struct, kw_only=True):
    """One journal record: a committed change set."""

    resource_version: int
    puts: list[Record] = []
    deletes: list[tuple[str, str, str | None, str]] = []


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_File)
_entry_decoder = msgspec.json.Decoder(_Entry)
# a journal line's header: payload length and CRC-32 of the payload
_HEADER = re.compile(rb"(\d{1,12}) ([0-9a-f]{8}) ")


class FileBackend:
    """Persists the store to ``<state_dir>/config/`` (``store.json`` and ``journal.log``).

    ``state_dir`` is the control plane's state directory; the backend uses its ``config/``
    subdirectory. ``compact_bytes`` is the journal size past which a commit writes a new
    snapshot instead (None: the larger of 4 MiB and the snapshot's size; 0: every commit).
    Raises :class:`StateError` if another process holds the directory.
    """

    def __init__(
        self, state_dir: str | os.PathLike[str], *, subdir: str = "config", compact_bytes: int | None = None
    ):
        self.dir = Path(state_dir) / subdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / STATE_FILE
        self.journal_path = self.dir / JOURNAL_FILE
        self.compact_bytes = compact_bytes
        self._lock_fd: int | None = None
        self._lock()
        self._records: dict[RecordKey, Record] = {}
        self._rv = 0
        self._loaded = False
        self._journal_fd: int | None = None
        self._journal_size = 0  # bytes of intact records in the journal
        self._snapshot_size = 0
        # the journal may end in a failed append that could not be cut off, or the snapshot may
        # hold a change set reported as failed: write a snapshot before appending again
        self._must_compact = False
        self._clean_temp_files()

    # --- the Backend protocol ------------------------------------------------------------

    def load(self) -> Snapshot:
        self._close_journal()
        self._loaded = False
        records, snap_rv, self._snapshot_size = self._read_snapshot()
        rv = snap_rv
        try:
            raw = self.journal_path.read_bytes()
        except FileNotFoundError:
            raw = b""
        entries, good_end = _scan_journal(raw, self.journal_path)
        newer = 0
        for entry in entries:
            if entry.resource_version <= snap_rv:
                continue  # already in the snapshot (a crash came before the journal was reset)
            if entry.resource_version <= rv:
                raise StateError(
                    f"{self.journal_path}: resource version {entry.resource_version} follows {rv}; "
                    "the journal is inconsistent"
                )
            apply_change(records, entry.puts, entry.deletes)
            rv = entry.resource_version
            newer += 1
        fd = self._open_journal()
        if good_end < len(raw):
            log.warning(
                "%s: dropping %d bytes of an incomplete last record (a write cut short by a crash)",
                self.journal_path,
                len(raw) - good_end,
            )
        if entries and not newer:
            good_end = 0  # only records the snapshot already holds: start the journal afresh
        if good_end < len(raw):
            os.ftruncate(fd, good_end)
            os.fsync(fd)
        self._journal_size = good_end
        self._records, self._rv = records, rv
        self._must_compact = False
        self._loaded = True
        return Snapshot(resource_version=rv, records=list(records.values()))

    def commit(self, puts: Sequence[Record], deletes: Sequence[RecordKey], resource_version: int) -> None:
        if not self._loaded:
            self.load()
        line = None
        if not self._must_compact:
            entry = _Entry(resource_version=resource_version, puts=list(puts), deletes=list(deletes))
            line = _frame(_encoder.encode(entry))
            if self._journal_size + len(line) > self._compact_threshold():
                line = None
        if line is not None:
            self._append(line)
            apply_change(self._records, puts, deletes)
        else:
            records = dict(self._records)
            apply_change(records, puts, deletes)
            self._compact(records, resource_version)
            self._records = records
        self._rv = resource_version

    def close(self) -> None:
        if self._must_compact and self._loaded:
            # the journal may end in a failed append: put the state in memory on disk instead
            try:
                self._compact(dict(self._records), self._rv)
            except OSError as e:
                log.warning("%s: could not write the state on close: %s", self.path, e)
        self._release()

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self._release()

    # --- helpers -------------------------------------------------------------------------

    def _read_snapshot(self) -> tuple[dict[RecordKey, Record], int, int]:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return {}, 0, 0
        try:
            doc = _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise StateError(f"{self.path}: cannot read the stored configuration: {e}") from None
        if doc.format != FORMAT:
            raise StateError(f"{self.path}: unknown format {doc.format!r} (expected {FORMAT!r})")
        return {r.key: r for r in doc.records}, doc.resource_version, len(raw)

    def _compact_threshold(self) -> int:
        if self.compact_bytes is not None:
            return self.compact_bytes
        return max(DEFAULT_COMPACT_BYTES, self._snapshot_size)

    def _append(self, line: bytes) -> None:
        """Append one journal line and make it durable; on failure, cut it off again."""
        fd = self._journal_fd
        assert fd is not None
        old = self._journal_size
        try:
            view = memoryview(line)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            _sync_data(fd)
        except BaseException:
            try:
                os.ftruncate(fd, old)
                os.fsync(fd)
            except OSError as e:
                log.warning("%s: could not remove a failed append (%s); the next commit compacts", self.journal_path, e)
                self._must_compact = True
            raise
        self._journal_size = old + len(line)

    def _compact(self, records: dict[RecordKey, Record], resource_version: int) -> None:
        """Write ``records`` as the new snapshot, then empty the journal.

        Raises if the snapshot could not be written; the journal is left alone then. The
        snapshot may nonetheless be in place (e.g. only the directory ``fsync`` failed), so
        nothing is appended to the journal until a compaction succeeds: a later change set would
        reuse this resource version, and load skips records that are not newer than the snapshot.
        """
        ordered = sorted(records.values(), key=lambda r: (r.group, r.kind, r.namespace or "", r.name))
        payload = _encoder.encode(_File(format=FORMAT, resource_version=resource_version, records=ordered))
        self._must_compact = True
        write_atomic(self.path, payload)
        self._snapshot_size = len(payload)
        # the change set is durable now: a failure from here on must not fail the commit
        try:
            fd = self._journal_fd if self._journal_fd is not None else self._open_journal()
            os.ftruncate(fd, 0)
            os.fsync(fd)
        except OSError as e:
            log.warning("%s: could not reset the journal after a snapshot (%s); the next commit compacts", self.journal_path, e)
            return
        self._journal_size = 0
        self._must_compact = False

    def _open_journal(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC
        try:
            fd = os.open(self.journal_path, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fd = os.open(self.journal_path, flags)
        else:
            try:
                fsync_dir(self.dir)  # the new file's directory entry must survive a crash too
            except BaseException:
                os.close(fd)
                raise
        self._journal_fd = fd
        return fd

    def _close_journal(self) -> None:
        if self._journal_fd is not None:
            fd, self._journal_fd = self._journal_fd, None
            os.close(fd)

    def _release(self) -> None:
        self._close_journal()
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _lock(self) -> None:
        fd = os.open(self.dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise StateError(f"{self.dir} is in use by another Pilotfish process") from None
            raise
        self._lock_fd = fd

    def _clean_temp_files(self) -> None:
        for p in self.dir.glob(TMP_PREFIX + "*"):
            with contextlib.suppress(OSError):
                p.unlink()


def _sync_data(fd: int) -> None:
    """``fdatasync`` where there is one: an append needs its data and size, not its mtime."""
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


def _frame(payload: bytes) -> bytes:
    """A journal line: ``<length> <crc32 hex> <payload>\\n`` (JSON has no raw newlines)."""
    return b"%d %08x " % (len(payload), zlib.crc32(payload)) + payload + b"\n"


def _read_record(raw: bytes, pos: int) -> tuple[bytes, int] | None:
    """The payload of the intact line at ``pos`` and where the next one starts, or None."""
    m = _HEADER.match(raw, pos)
    if m is None:
        return None
    start = m.end()
    end = start + int(m.group(1))
    if end >= len(raw) or raw[end] != 0x0A:
        return None
    payload = raw[start:end]
    if zlib.crc32(payload) != int(m.group(2), 16):
        return None
    return payload, end + 1


def _scan_journal(raw: bytes, path: Path) -> tuple[list[_Entry], int]:
    """The journal's intact records, and the offset where they end.

    Scanning stops at the first line that is incomplete or fails its checksum. Only the last
    append can be torn (each one is synced before the next), so if an intact record follows the
    bad spot the file was damaged some other way: that raises :class:`StateError` rather than
    dropping committed change sets.
    """
    entries: list[_Entry] = []
    pos = 0
    while pos < len(raw):
        rec = _read_record(raw, pos)
        if rec is None:
            break
        payload, nxt = rec
        try:
            entries.append(_entry_decoder.decode(payload))
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise StateError(f"{path}: cannot read the journal record at byte {pos}: {e}") from None
        pos = nxt
    if pos < len(raw):
        nl = raw.find(b"\n", pos)
        while nl != -1:
            if _read_record(raw, nl + 1) is not None:
                raise StateError(
                    f"{path}: the journal record at byte {pos} is damaged and intact records follow it; "
                    "refusing to drop committed changes"
                )
            nl = raw.find(b"\n", nl + 1)
    return entries, pos


def write_atomic(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` so that a crash leaves the old or the new content."""
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=path.name + ".tmp.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(directory)


def fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable."""
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
