"""The cluster: gateways, stateless workers, dispatchers, and the store they share.

Compute is ephemeral, state is migratable. A **gateway** holds the client
connections and runs no pipeline; a **worker** runs sessions, each owned by a
lease with a fencing token; a **dispatcher** places sessions on workers by
load and replaces a dead or draining worker's; the **store**
(:class:`~rspp.cluster.store.SessionStore`: Redis, or in memory) holds what a
session needs to resume -- a checkpoint plus the input after it -- and carries
the events between gateway and worker. See ``docs/cluster.md``.
"""

from rspp.cluster.memory_store import MemoryStore
from rspp.cluster.records import Checkpoint, Lease, Request, SessionRecord, Task, WorkerInfo
from rspp.cluster.store import Fenced, SessionStore, StoreError, StoreUnavailable

__all__ = [
    "Checkpoint",
    "Fenced",
    "Lease",
    "MemoryStore",
    "Request",
    "SessionRecord",
    "SessionStore",
    "StoreError",
    "StoreUnavailable",
    "Task",
    "WorkerInfo",
]
