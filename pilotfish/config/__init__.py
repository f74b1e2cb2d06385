"""The config store and its backends.

``Store`` keeps the desired configuration with ``kubectl apply`` semantics and sends watch
events; a ``Backend`` keeps it somewhere (``MemoryBackend``, ``FileBackend`` under a state
directory; etcd and Kubernetes backends fit the same protocol).
"""

from pilotfish.config.backend import Backend, MemoryBackend, Record, Snapshot
from pilotfish.config.filestore import FileBackend, StateError
from pilotfish.config.store import (
    ApplyError,
    ApplyResult,
    Event,
    NotFound,
    ObjectKey,
    Store,
    StoredObject,
    Subscription,
)

__all__ = [
    "ApplyError",
    "ApplyResult",
    "Backend",
    "Event",
    "FileBackend",
    "MemoryBackend",
    "NotFound",
    "ObjectKey",
    "Record",
    "Snapshot",
    "StateError",
    "Store",
    "StoredObject",
    "Subscription",
]
