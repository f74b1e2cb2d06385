"""The embedded default backend: the whole config in one file under ``<state>/config/``.

Every commit rewrites ``store.json`` the crash-safe way: write a temporary file in the same
directory, ``fsync`` it, ``os.replace`` it over the old file, then ``fsync`` the directory. A
crash at any point leaves either the previous file or the new one, never a mix; leftover
temporary files are removed on the next start. One file per store makes a multi-document apply
a single atomic rename. A lock file keeps two processes from using one state directory.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import msgspec

from pilotfish.config.backend import Record, RecordKey, Snapshot

FORMAT = "pilotfish.config/v1"
STATE_FILE = "store.json"
TMP_PREFIX = STATE_FILE + ".tmp."
LOCK_FILE = ".lock"


class StateError(Exception):
    """The state directory cannot be used (locked by another process, or a corrupt file)."""


class _File(msgspec.Struct, kw_only=True):
    format: str
    resource_version: int
    records: list[Record]


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(_File)


class FileBackend:
    """Persists the store to ``<state_dir>/config/store.json``.

    ``state_dir`` is the control plane's state directory; the backend uses its ``config/``
    subdirectory. Raises :class:`StateError` if another process holds the directory.
    """

    def __init__(self, state_dir: str | os.PathLike[str], *, subdir: str = "config"):
        self.dir = Path(state_dir) / subdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / STATE_FILE
        self._lock_fd: int | None = None
        self._lock()
        self._records: dict[RecordKey, Record] = {}
        self._rv = 0
        self._clean_temp_files()

    # --- the Backend protocol ------------------------------------------------------------

    def load(self) -> Snapshot:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._records, self._rv = {}, 0
            return Snapshot()
        try:
            doc = _decoder.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            raise StateError(f"{self.path}: cannot read the stored configuration: {e}") from None
        if doc.format != FORMAT:
            raise StateError(f"{self.path}: unknown format {doc.format!r} (expected {FORMAT!r})")
        self._records = {r.key: r for r in doc.records}
        self._rv = doc.resource_version
        return Snapshot(resource_version=doc.resource_version, records=list(doc.records))

    def commit(self, puts: Sequence[Record], deletes: Sequence[RecordKey], resource_version: int) -> None:
        records = dict(self._records)
        for key in deletes:
            records.pop(key, None)
        for r in puts:
            records[r.key] = r
        ordered = sorted(records.values(), key=lambda r: (r.group, r.kind, r.namespace or "", r.name))
        payload = _encoder.encode(_File(format=FORMAT, resource_version=resource_version, records=ordered))
        write_atomic(self.path, payload)
        self._records = records
        self._rv = resource_version

    def close(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __del__(self) -> None:  # pragma: no cover - best effort
        with contextlib.suppress(Exception):
            self.close()

    # --- helpers -------------------------------------------------------------------------

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
