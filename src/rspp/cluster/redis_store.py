"""The Redis store: :class:`SessionStore` on ``redis-py`` asyncio.

The key layout is :mod:`rspp.cluster.keys` (per-session hash tags: it runs on
Redis Cluster unchanged). The lease rules of :class:`~rspp.cluster.lease.LeaseState`
run here as Lua scripts, each touching the keys of one session only, so that a
check and the write it guards are one atomic step: a fenced write cannot land
between a takeover's token bump and the new owner's first write. Leases are
judged by the server's clock (``TIME``), never a worker's.

Input log ids are Redis' own (``<ms>-<n>``, increasing even across a restart of
the server), read as one number: ``ms << 20 | n``.

Connection settings come from the URL (``redis://``, ``rediss://`` for TLS,
``unix://``), with the password from ``RSPP_REDIS_PASSWORD`` if the URL has none
and the ACL user from ``RSPP_REDIS_USERNAME``; neither is ever logged
(:func:`safe_url`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from rspp.cluster import keys
from rspp.cluster.records import Lease, SessionRecord, WorkerInfo
from rspp.cluster.store import (
    READ_PAGE,
    Fenced,
    InputEntry,
    StoreError,
    StoreUnavailable,
    Taken,
)

__all__ = ["RedisStore", "safe_url"]

log = logging.getLogger("rspp.cluster.store")

T = TypeVar("T")

#: Output entries kept per session (approximately: ``MAXLEN ~``).
OUTPUT_KEPT = 4096
#: A session's keys live this long after their last refresh, and this long after its end.
SESSION_TTL_MS = 24 * 3600 * 1000
ENDED_TTL_MS = 120 * 1000
#: What a worker owns (as its last renewal said) is kept this long after that renewal.
OWNED_TTL_MS = 60 * 1000
SEQ_BITS = 20

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The acquire rule (ARGV: worker, ttl_ms, key_ttl_ms), as ``got = {granted, token, expires}``.
_ACQUIRING = (
    _NOW
    + """
local function acquire()
  local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'exp', 'hto', 'huntil', 'ended')
  local owner = h[1] or ''
  local token = tonumber(h[2] or '0')
  local exp = tonumber(h[3] or '0')
  local hto = h[4] or ''
  local huntil = tonumber(h[5] or '0')
  if h[6] == '1' then return {0, token, 0} end
  if owner ~= '' and exp > now and owner ~= ARGV[1] then return {0, token, 0} end
  if owner == '' and hto ~= '' and hto ~= ARGV[1] and now < huntil then return {0, token, 0} end
  token = token + 1
  local expires = now + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'token', token, 'exp', expires,
    'hto', '', 'huntil', 0, 'cuntil', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return {1, token, expires}
end
local got = acquire()
"""
)

# KEYS: lease. ARGV: worker, ttl_ms, key_ttl_ms. -> {granted, token, expires}
_ACQUIRE = _ACQUIRING + "return got\n"

# KEYS: lease, session, snap, out. ARGV: worker, ttl_ms, key_ttl_ms, tail count.
# -> {granted, token, expires[, record (HGETALL), checkpoint or nil, tail (XREVRANGE)]}
# What a new owner reads is read once the lease is its own, in the same step: no older
# owner can write after it.
_TAKE = (
    _ACQUIRING
    + """
if got[1] == 0 then return got end
local tail = {}
if tonumber(ARGV[4]) > 0 then
  tail = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', ARGV[4])
end
return {1, got[2], got[3], redis.call('HGETALL', KEYS[2]), redis.call('GET', KEYS[3]), tail}
"""
)

# KEYS: lease. ARGV: worker, token, ttl_ms. -> expires, or 0
_RENEW = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'ended')
if h[3] == '1' or h[1] ~= ARGV[1] or tonumber(h[2] or '0') ~= tonumber(ARGV[2]) then
  return 0
end
local expires = now + tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'exp', expires)
return expires
"""
)

# KEYS: the lease index. ARGV: ttl_ms, sessions... (their expiry on this clock, as renewed)
_INDEX = (
    _NOW
    + """
local expires = now + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], expires, ARGV[i]) end
return #ARGV - 1
"""
)

# KEYS: a worker's owned hash. ARGV: key_ttl_ms, session, token, session, token...
_OWNED = """
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1
"""

# KEYS: lease. ARGV: worker, token, to, hold_ms. -> 1 or 0
_RELEASE = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'ended')
if h[3] == '1' or h[1] ~= ARGV[1] or tonumber(h[2] or '0') ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'owner', '', 'exp', 0, 'hto', ARGV[3],
  'huntil', now + tonumber(ARGV[4]))
return 1
"""
)

# KEYS: lease, input, snap, session, out. ARGV: token, ttl_ms. -> 1 or 0
_FINISH = """
if tonumber(redis.call('HGET', KEYS[1], 'token') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'ended', 1, 'owner', '', 'exp', 0)
redis.call('DEL', KEYS[2], KEYS[3])
for i = 1, 5 do
  if i ~= 2 and i ~= 3 then redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
end
return 1
"""

# KEYS: lease. ARGV: hold_ms[, dead owner, its token]. -> 1 or 0
_CLAIM = (
    _NOW
    + """
local h = redis.call('HMGET', KEYS[1], 'owner', 'token', 'exp', 'huntil', 'cuntil', 'ended')
local owner = h[1] or ''
if h[6] == '1' or tonumber(h[2] or '0') == 0 then return 0 end
if owner ~= '' and tonumber(h[3] or '0') > now then
  if owner ~= (ARGV[2] or '') or tonumber(h[2]) ~= tonumber(ARGV[3] or '-1') then return 0 end
  redis.call('HSET', KEYS[1], 'exp', now)  -- its owner is dead: lapsed now, not at its TTL
end
if owner == '' and now < tonumber(h[4] or '0') then return 0 end
if now < tonumber(h[5] or '0') then return 0 end
redis.call('HSET', KEYS[1], 'cuntil', now + tonumber(ARGV[1]))
return 1
"""
)

# KEYS: lease, snap, input, session, out. ARGV: token, checkpoint, minid, key_ttl_ms. -> 1 or 0
_SAVE = """
local h = redis.call('HMGET', KEYS[1], 'token', 'ended')
if h[2] == '1' or tonumber(h[1] or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[4])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('XTRIM', KEYS[3], 'MINID', ARGV[3])
  redis.call('PEXPIRE', KEYS[3], ARGV[4])
end
for i = 4, 5 do redis.call('PEXPIRE', KEYS[i], ARGV[4]) end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: input. ARGV: key_ttl_ms, close ("" for none), events... -> the last entry's id
_APPEND_INPUT = """
local last = false
for i = 3, #ARGV do last = redis.call('XADD', KEYS[1], '*', 'e', ARGV[i]) end
if ARGV[2] ~= '' then last = redis.call('XADD', KEYS[1], '*', 'c', ARGV[2]) end
-- Never a key without an expiry (an append can come after the session ended).
if last then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return last
"""

# KEYS: lease, out. ARGV: token, maxlen, entries... -> 1 or 0
_APPEND_OUTPUT = """
if tonumber(redis.call('HGET', KEYS[1], 'token') or '0') ~= tonumber(ARGV[1]) then
  return 0
end
for i = 3, #ARGV do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', 'o', ARGV[i])
end
return 1
"""

# KEYS: workers. ARGV: id, info.
_HEARTBEAT = (
    _NOW
    + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. ':seen', now)
return now
"""
)


#: TCP keepalive that notices a silently dead connection in about 10 s, not the OS's 2 h
#: (no PING before commands: see ``health_check_interval`` below). Linux names; others
#: keep the OS defaults.
_KEEPALIVE = {
    getattr(socket, name): value
    for name, value in (("TCP_KEEPIDLE", 5), ("TCP_KEEPINTVL", 2), ("TCP_KEEPCNT", 3))
    if hasattr(socket, name)
}


def safe_url(url: str) -> str:
    """``url`` without its credentials (for logs)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _seq(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, n = text.partition("-")
    return (int(ms) << SEQ_BITS) | int(n or 0)


def _entry_id(seq: int) -> str:
    return f"{seq >> SEQ_BITS}-{seq & ((1 << SEQ_BITS) - 1)}"


def _items(found: Any, field: bytes) -> list[tuple[str, bytes]]:
    """``(id, value of field)`` of each entry of an XREAD reply."""
    return [
        (_text(entry_id), fields[field]) for _, items in found or () for entry_id, fields in items
    ]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _record(sid: str, raw: dict[Any, Any] | None) -> SessionRecord | None:
    """A session's record from its hash (HGETALL), or None if it has none."""
    if not raw:
        return None
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return SessionRecord(
        id=fields.get("id", sid),
        pipeline=fields.get("pipeline", ""),
        state=fields.get("state", "pending"),
        reason=fields.get("reason", ""),
        worker=fields.get("worker", ""),
        created_ms=int(fields.get("created_ms", "0") or 0),
    )


class RedisStore:
    """:class:`~rspp.cluster.store.SessionStore` on Redis (see the module docstring)."""

    def __init__(self, url: str, *, timeout_s: float = 3.0, max_connections: int = 10_000) -> None:
        password = os.environ.get("RSPP_REDIS_PASSWORD") or None
        username = os.environ.get("RSPP_REDIS_USERNAME") or None
        options: dict[str, Any] = {
            # After a restart of the server every pooled connection is dead: retry each
            # command a few times on a fresh one instead of failing once per connection.
            "retry": Retry(ExponentialBackoff(cap=0.25, base=0.01), 3),
            "retry_on_error": [RedisConnectionError, RedisTimeoutError],
            "socket_connect_timeout": timeout_s,
            # Blocking reads wait at most a second; a silent socket beyond that is a dead one.
            "socket_timeout": timeout_s + 2.0,
            # No PING before a command on a connection idle for a while (a round trip on
            # the spare connections a burst of takes or claims picks up: when a worker
            # dies); a dead one fails its command and the retry above makes it again, and
            # keepalive finds one the network dropped silently.
            "health_check_interval": 0,
            "socket_keepalive": True,
            "socket_keepalive_options": _KEEPALIVE,
            # Nor CLIENT SETINFO on each new connection (a round trip, in a burst).
            "driver_info": None,
            # Every session holds a connection in its blocking read (input on a worker,
            # output on a gateway) and briefly one or two more: redis-py's default pool of
            # 100 ran out at 50 calls (a gateway holding every call after another died, a
            # worker taking over a dead one's sessions: its renewals failed, leases lapsed).
            "max_connections": max_connections,
        }
        if password and not urlsplit(url).password:
            options["password"] = password
        if username and not urlsplit(url).username:
            options["username"] = username
        self.url = safe_url(url)
        self._connect_args = (url, timeout_s, max_connections)
        # redis-py's own annotations do not tell bytes from str replies: Any, checked by tests.
        self.redis: Any = aioredis.Redis.from_url(url, **options)
        r = self.redis
        self._acquire = r.register_script(_ACQUIRE)
        self._take = r.register_script(_TAKE)
        self._renew = r.register_script(_RENEW)
        self._release = r.register_script(_RELEASE)
        self._finish = r.register_script(_FINISH)
        self._claim = r.register_script(_CLAIM)
        self._save = r.register_script(_SAVE)
        self._append_output = r.register_script(_APPEND_OUTPUT)
        self._append_input = r.register_script(_APPEND_INPUT)
        self._heartbeat = r.register_script(_HEARTBEAT)
        self._index = r.register_script(_INDEX)
        self._owned = r.register_script(_OWNED)
        self._group_ready = False

    async def _call(self, what: Callable[[], Awaitable[T]]) -> T:
        # redis-py (with a socket timeout) wraps its reads in ``asyncio.wait_for``, which on
        # Python 3.11 can swallow a cancellation that arrives as the reply does, or turn it
        # into a connection error. Either way the task was cancelled, and its owner (a task
        # group) waits for it to end: the cancellation is re-raised here.
        task = asyncio.current_task()
        try:
            result = await what()
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            if task is not None and task.cancelling():
                raise asyncio.CancelledError from exc
            raise StoreUnavailable(f"redis at {self.url}: {exc}") from exc
        except ResponseError as exc:
            raise StoreError(f"redis at {self.url}: {exc}") from exc
        if task is not None and task.cancelling():
            raise asyncio.CancelledError
        return result

    async def now_ms(self) -> int:
        secs, micros = await self._call(self.redis.time)
        return int(secs) * 1000 + int(micros) // 1000

    # -- sessions ---------------------------------------------------------------------------

    async def create(self, record: SessionRecord, ttl_s: int) -> None:
        key = keys.session(record.id)
        fields = {k: str(v) for k, v in msgspec.structs.asdict(record).items()}

        async def write() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, ttl_s)
                await pipe.execute()

        await self._call(write)

    async def record(self, sid: str) -> SessionRecord | None:
        return _record(sid, await self._call(lambda: self.redis.hgetall(keys.session(sid))))

    async def update(self, sid: str, **fields: str) -> None:
        await self._call(lambda: self.redis.hset(keys.session(sid), mapping=fields))

    # -- leases -----------------------------------------------------------------------------

    async def acquire(self, sid: str, worker: str, ttl_ms: int) -> Lease | None:
        (granted, token, *_), _ = await self._acquiring(
            self._acquire, sid, [keys.lease(sid)], [worker, ttl_ms, SESSION_TTL_MS]
        )
        return Lease(sid, worker, int(token)) if granted else None

    async def take(self, sid: str, worker: str, ttl_ms: int, tail: int) -> Taken | None:
        names = [keys.lease(sid), keys.session(sid), keys.snapshot(sid), keys.output(sid)]
        reply, _ = await self._acquiring(
            self._take, sid, names, [worker, ttl_ms, SESSION_TTL_MS, tail]
        )
        if not reply[0]:
            return None
        _, token, _, record, checkpoint, found = reply
        fields = dict(zip(record[::2], record[1::2], strict=True))
        entries = [dict(zip(f[::2], f[1::2], strict=True))[b"o"] for _, f in reversed(found)]
        return Taken(Lease(sid, worker, int(token)), _record(sid, fields), checkpoint, entries)

    async def _acquiring(
        self, script: Any, sid: str, names: list[str], args: list[Any]
    ) -> list[Any]:
        """Run an acquiring script, and index the lease in the same round trip."""

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                await script(keys=names, args=args, client=pipe)
                # In the index at once (the expiry is the script's, so the entry is added as
                # already due; the first renewal sets it; a scan meanwhile finds the lease
                # held). A session never in the index is never failed over.
                pipe.zadd(keys.LEASES, {sid: 0}, nx=True)
                return await pipe.execute()  # type: ignore[no-any-return]

        return await self._call(run)

    async def renew(self, leases: Sequence[Lease], ttl_ms: int) -> list[bool]:
        if not leases:
            return []

        async def run() -> list[Any]:
            async with self.redis.pipeline(transaction=False) as pipe:
                for one in leases:
                    await self._renew(
                        keys=[keys.lease(one.session)],
                        args=[one.worker, one.token, ttl_ms],
                        client=pipe,
                    )
                # The index in the same round trip (one, not two: a loaded worker's renewals
                # are what keeps its leases). A lease that was not renewed is indexed too:
                # its real owner's renewal, or a finish, or a failed claim, puts it right.
                await self._index(
                    keys=[keys.LEASES], args=[ttl_ms, *(one.session for one in leases)], client=pipe
                )
                # And what each worker owns (for a fast failover when its process dies).
                for worker, pairs in owned.items():
                    await self._owned(
                        keys=[keys.owned(worker)], args=[OWNED_TTL_MS, *pairs], client=pipe
                    )
                return await pipe.execute()  # type: ignore[no-any-return]

        owned: dict[str, list[str | int]] = {}
        for one in leases:
            owned.setdefault(one.worker, []).extend((one.session, one.token))
        results = (await self._call(run))[: len(leases)]
        return [bool(exp) for exp in results]

    async def release(self, lease: Lease, to: str = "", hold_ms: int = 2000) -> bool:
        done = await self._call(
            lambda: self._release(
                keys=[keys.lease(lease.session)], args=[lease.worker, lease.token, to, hold_ms]
            )
        )
        return bool(done)

    async def finish(self, lease: Lease) -> bool:
        sid = lease.session
        done = await self._call(
            lambda: self._finish(
                keys=[
                    keys.lease(sid),
                    keys.input_log(sid),
                    keys.snapshot(sid),
                    keys.session(sid),
                    keys.output(sid),
                ],
                args=[lease.token, ENDED_TTL_MS],
            )
        )
        await self._call(lambda: self.redis.zrem(keys.LEASES, sid))
        return bool(done)

    async def lease_of(self, sid: str) -> tuple[str, int, int]:
        owner, token, expires = await self._call(
            lambda: self.redis.hmget(keys.lease(sid), ["owner", "token", "exp"])
        )
        return _text(owner or b""), int(token or 0), int(expires or 0)

    async def orphans(self, limit: int = 100) -> list[str]:
        now = await self.now_ms()
        found = await self._call(
            lambda: self.redis.zrangebyscore(keys.LEASES, "-inf", now, start=0, num=limit)
        )
        return [_text(sid) for sid in found]

    async def claim(self, sid: str, hold_ms: int, dead: tuple[str, int] | None = None) -> bool:
        args = [hold_ms, *(dead or ())]
        got = await self._call(lambda: self._claim(keys=[keys.lease(sid)], args=args))
        if not got:
            owner, _, expires = await self.lease_of(sid)
            if not owner and not expires:
                # Ended, or never owned: out of the index (a live one comes back on renewal).
                ended = await self._call(lambda: self.redis.hget(keys.lease(sid), "ended"))
                if ended or not await self._call(lambda: self.redis.exists(keys.lease(sid))):
                    await self._call(lambda: self.redis.zrem(keys.LEASES, sid))
        return bool(got)

    # -- state ------------------------------------------------------------------------------

    async def save(
        self,
        lease: Lease,
        checkpoint: bytes,
        input_seq: int,
        *,
        output: Sequence[bytes] = (),
        handoff: str | None = None,
        hold_ms: int = 2000,
    ) -> None:
        sid = lease.session

        async def run() -> list[Any]:
            # One pipeline on the session's slot: the scripts run in this order.
            async with self.redis.pipeline(transaction=False) as pipe:
                if output:
                    await self._append_output(
                        keys=[keys.lease(sid), keys.output(sid)],
                        args=[lease.token, OUTPUT_KEPT, *output],
                        client=pipe,
                    )
                await self._save(
                    keys=[
                        keys.lease(sid),
                        keys.snapshot(sid),
                        keys.input_log(sid),
                        keys.session(sid),
                        keys.output(sid),
                    ],
                    args=[lease.token, checkpoint, _entry_id(input_seq + 1), SESSION_TTL_MS],
                    client=pipe,
                )
                if handoff is not None:
                    await self._release(
                        keys=[keys.lease(sid)],
                        args=[lease.worker, lease.token, handoff, hold_ms],
                        client=pipe,
                    )
                return await pipe.execute()  # type: ignore[no-any-return]

        if not all(await self._call(run)):
            raise Fenced(f"session {sid}: token {lease.token} is not the owner's")

    async def load(self, sid: str) -> bytes | None:
        return await self._call(lambda: self.redis.get(keys.snapshot(sid)))

    # -- the input log ----------------------------------------------------------------------

    async def append_input(self, sid: str, events: Sequence[bytes], close: str = "") -> int:
        # One script, not a pipeline of XADDs: a gateway appends every caller's every
        # frame, and redis-py's pipeline costs a third more CPU a call.
        last = await self._call(
            lambda: self._append_input(
                keys=[keys.input_log(sid)], args=[SESSION_TTL_MS, close, *events]
            )
        )
        return _seq(last) if last else 0

    async def _xread(self, key: str, after: str, count: int, block_ms: int) -> Any:
        """One stream's entries after ``after`` (blocking up to ``block_ms``; 0: not at all)."""
        return await self._call(
            lambda: self.redis.xread({key: after}, count=count, block=block_ms or None)
        )

    async def read_input(self, sid: str, after: int, block_ms: int) -> list[InputEntry]:
        found = await self._xread(keys.input_log(sid), _entry_id(after), READ_PAGE, block_ms)
        entries: list[InputEntry] = []
        for _, items in found or ():
            for entry_id, fields in items:
                event = fields.get(b"e")
                close = fields.get(b"c")
                entries.append((_seq(entry_id), event, _text(close) if close else None))
        return entries

    # -- the output path --------------------------------------------------------------------

    async def append_output(self, lease: Lease, entries: Sequence[bytes]) -> None:
        sid = lease.session
        done = await self._call(
            lambda: self._append_output(
                keys=[keys.lease(sid), keys.output(sid)],
                args=[lease.token, OUTPUT_KEPT, *entries],
            )
        )
        if not done:
            raise Fenced(f"session {sid}: token {lease.token} is not the owner's")

    async def read_output(self, sid: str, after: str, block_ms: int) -> list[tuple[str, bytes]]:
        return _items(await self._xread(keys.output(sid), after, READ_PAGE, block_ms), b"o")

    # -- workers and dispatch ---------------------------------------------------------------

    async def heartbeat(self, info: WorkerInfo) -> None:
        await self._call(
            lambda: self._heartbeat(
                keys=[keys.WORKERS], args=[info.id, msgspec.msgpack.encode(info)]
            )
        )

    async def workers(self, max_age_ms: int) -> list[WorkerInfo]:
        raw = await self._call(lambda: self.redis.hgetall(keys.WORKERS))
        now = await self.now_ms()
        found: list[WorkerInfo] = []
        stale: list[str] = []
        for field, value in raw.items():
            name = _text(field)
            if name.endswith(":seen"):
                continue
            seen = int(raw.get(f"{name}:seen".encode(), b"0"))
            if now - seen > max_age_ms:
                stale += [name, f"{name}:seen"]
                continue
            info = msgspec.msgpack.decode(value, type=WorkerInfo)
            info.seen_ms = seen
            found.append(info)
        if stale:
            await self._call(lambda: self.redis.hdel(keys.WORKERS, *stale))
        return found

    async def tell(self, worker: str, task: bytes) -> None:
        await self._call(
            lambda: self.redis.xadd(keys.worker_inbox(worker), {"t": task}, maxlen=1000)
        )

    async def tasks(self, worker: str, after: str, block_ms: int) -> list[tuple[str, bytes]]:
        return _items(await self._xread(keys.worker_inbox(worker), after, 100, block_ms), b"t")

    async def request(self, request: bytes) -> None:
        await self._call(lambda: self.redis.xadd(keys.DISPATCH, {"r": request}, maxlen=100_000))

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            await self._call(
                lambda: self.redis.xgroup_create(
                    keys.DISPATCH, keys.DISPATCH_GROUP, id="0", mkstream=True
                )
            )
        except StoreError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def requests(
        self, dispatcher: str, block_ms: int, reclaim_after_ms: int
    ) -> list[tuple[str, bytes]]:
        await self._ensure_group()
        try:
            claimed = await self._call(
                lambda: self.redis.xautoclaim(
                    keys.DISPATCH,
                    keys.DISPATCH_GROUP,
                    dispatcher,
                    reclaim_after_ms,
                    start_id="0-0",
                    count=100,
                )
            )
            found = [(_text(entry_id), fields[b"r"]) for entry_id, fields in claimed[1] if fields]
            if found:
                return found
            fresh = await self._call(
                lambda: self.redis.xreadgroup(
                    keys.DISPATCH_GROUP,
                    dispatcher,
                    {keys.DISPATCH: ">"},
                    count=100,
                    block=block_ms or None,
                )
            )
        except StoreError as exc:
            if "NOGROUP" in str(exc):  # the server restarted without its data
                self._group_ready = False
                return []
            raise
        return _items(fresh, b"r")

    async def done(self, ids: Sequence[str]) -> None:
        if not ids:
            return

        async def run() -> None:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.xack(keys.DISPATCH, keys.DISPATCH_GROUP, *ids)
                pipe.xdel(keys.DISPATCH, *ids)
                await pipe.execute()

        await self._call(run)

    # -- presence ---------------------------------------------------------------------------

    async def hold_presence(self, worker: str) -> None:
        """Subscribed to ``worker``'s presence channel (sharded pub/sub) until cancelled.

        The subscription lives as long as its connection: a process that dies (SIGKILL,
        a crash, the OOM killer) closes it, and the server counts it gone at once. A
        connection the server dropped (a restart) is made again at once.
        """
        channel = keys.presence(worker)
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.ssubscribe(channel)
                while True:  # (reading is how a dropped connection shows)
                    await pubsub.get_message(timeout=1.0)
            except ResponseError as exc:  # (no sharded pub/sub: Redis < 7)
                log.warning("redis at %s cannot hold a presence (%s): TTL only", self.url, exc)
                return
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await asyncio.sleep(0.05)
            finally:
                with contextlib.suppress(Exception):  # (a dead connection: nothing to close)
                    await pubsub.aclose()

    async def present(self, workers: Sequence[str]) -> list[bool]:
        if not workers:
            return []
        channels = [keys.presence(w) for w in workers]
        reply = await self._call(
            lambda: self.redis.execute_command("PUBSUB", "SHARDNUMSUB", *channels)
        )
        counts = {_text(reply[i]): int(reply[i + 1]) for i in range(0, len(reply), 2)}
        return [counts.get(ch, 0) > 0 for ch in channels]

    async def owned_by(self, worker: str) -> list[tuple[str, int]]:
        raw = await self._call(lambda: self.redis.hgetall(keys.owned(worker)))
        return [(_text(sid), int(token)) for sid, token in raw.items()]

    async def warm(self, connections: int) -> None:
        """Open ``connections`` connections now, so that a burst later (a dead worker's
        sessions taken or claimed all at once) does not connect each on its critical path."""
        pool = self.redis.connection_pool
        opened = []  # (what was opened so far goes back to the pool, whatever happens)
        try:
            for _ in range(connections):  # (each connected as it is taken)
                opened.append(await self._call(pool.get_connection))  # noqa: PERF401
        finally:
            for one in opened:
                await pool.release(one)

    def fork(self) -> RedisStore:
        """Another client of the same store (its own connections: for another event loop)."""
        url, timeout_s, max_connections = self._connect_args
        return RedisStore(url, timeout_s=timeout_s, max_connections=max_connections)

    async def close(self) -> None:
        await self.redis.aclose()
