"""The store's key layout: everything of one session shares a hash tag.

A session's keys all carry ``{<session id>}``, so Redis Cluster puts them in
one slot and a Lua script may touch them together (the fenced writes). The
few keys that span sessions (the worker table, the lease index, the dispatch
queue) are plain keys with no tag; nothing writes them atomically with a
session's keys.

======================  ==========  ================================================
key                     type        what it holds
======================  ==========  ================================================
``rspp:{S}:session``    hash        pipeline, state, created, ended reason
``rspp:{S}:lease``      hash        owner, token (the fencing token), expires (ms,
                                    the store's clock), handoff / claim deadlines
``rspp:{S}:snap``       string      the last snapshot (:class:`~.records.Checkpoint`)
``rspp:{S}:in``         stream      the input log: one entry per input event
                                    (field ``e``) or close (field ``c``), trimmed
                                    only behind the snapshot
``rspp:{S}:out``        stream      the output: one entry per event, with the
                                    writer's token, trimmed to a recent window
``rspp:workers``        hash        worker id -> :class:`~.records.WorkerInfo`
``rspp:leases``         sorted set  session id -> lease expiry (an index, for the
                                    dispatchers' failover scan; the lease is truth)
``rspp:dispatch``       stream      requests to dispatchers (consumer group
                                    ``dispatchers``: each goes to one of them)
``rspp:w:{W}:inbox``    stream      what a worker is told: take a session, move one
``rspp:w:{W}:owned``    hash        session id -> lease token: what a worker owned at
                                    its last renewal (for a fast failover when it dies)
``rspp:{alive}:W``      channel     sharded pub/sub: a worker process is subscribed
                                    while it lives (all in one slot: one
                                    ``PUBSUB SHARDNUMSUB`` asks for every worker)
======================  ==========  ================================================
"""

from __future__ import annotations

__all__ = [
    "DISPATCH",
    "DISPATCH_GROUP",
    "LEASES",
    "WORKERS",
    "input_log",
    "lease",
    "output",
    "owned",
    "presence",
    "session",
    "snapshot",
    "worker_inbox",
]

PREFIX = "rspp"
WORKERS = f"{PREFIX}:workers"
LEASES = f"{PREFIX}:leases"
DISPATCH = f"{PREFIX}:dispatch"
DISPATCH_GROUP = "dispatchers"


def session(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:session"


def lease(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:lease"


def snapshot(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:snap"


def input_log(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:in"


def output(sid: str) -> str:
    return f"{PREFIX}:{{{sid}}}:out"


def worker_inbox(worker: str) -> str:
    return f"{PREFIX}:w:{{{worker}}}:inbox"


def owned(worker: str) -> str:
    return f"{PREFIX}:w:{{{worker}}}:owned"


def presence(worker: str) -> str:
    return f"{PREFIX}:{{alive}}:{worker}"
