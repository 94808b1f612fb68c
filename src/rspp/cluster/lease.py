"""Ownership of a session: the lease rules, as one pure object.

A worker owns a session by a lease with a TTL that it renews. The **token**
(the fencing token) goes up by one at every acquisition; every write of the
owner names it, and the store refuses a write whose token is not the
current one. So a worker that was paused (SIGSTOP) or cut off past its TTL,
and whose session was taken over meanwhile, can write nothing more: not its
state, not a word into the call.

Rules (:class:`LeaseState` applies them; :mod:`rspp.cluster.redis_store` runs
the same rules as Lua scripts, and a parity test holds them to each other):

* **acquire** -- granted when the session has not ended and the lease is free
  (no owner, or its TTL ran out) or already the caller's; a lease released
  *to* a worker (a move) is kept for that worker until ``handoff_until``.
  Granting raises the token.
* **renew** -- only by the owner with the current token; extends the TTL. A
  lease whose TTL ran out may still be renewed if nobody acquired it since
  (a store outage must not end every call).
* **release** -- the owner gives it up (a move, a drain), optionally to a
  named worker; the token stays, so the old owner's writes are fenced from
  the next acquisition on.
* **finish** -- the session ended: nobody may acquire it again.
* **claim** -- a dispatcher's right to place a session whose owner is gone:
  at most one claim per ``hold`` window, so two dispatchers scanning at once
  do not both act (and if they did, only one worker would acquire). A claim
  that names the owner and token as *dead* (its process is gone: its presence
  in the store ended) lets the lease lapse now rather than at its TTL. That
  is safe even when the verdict is wrong: a live owner renews and keeps the
  session unless another worker acquires it first, and then it is fenced.
* **fenced write** -- allowed iff the token is the current one.

Times are the store's clock in milliseconds (Redis ``TIME``), never a worker's.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LeaseState"]


@dataclass(slots=True)
class LeaseState:
    owner: str = ""
    token: int = 0
    expires_ms: int = 0
    handoff_to: str = ""
    handoff_until_ms: int = 0
    claim_until_ms: int = 0
    ended: bool = False

    def held(self, now_ms: int) -> bool:
        """Owned by someone whose TTL has not run out."""
        return bool(self.owner) and self.expires_ms > now_ms

    def acquire(self, worker: str, ttl_ms: int, now_ms: int) -> bool:
        if self.ended:
            return False
        if self.held(now_ms) and self.owner != worker:
            return False
        if (
            not self.owner
            and self.handoff_to
            and self.handoff_to != worker
            and now_ms < self.handoff_until_ms
        ):
            return False
        self.token += 1
        self.owner = worker
        self.expires_ms = now_ms + ttl_ms
        self.handoff_to = ""
        self.handoff_until_ms = 0
        self.claim_until_ms = 0
        return True

    def renew(self, worker: str, token: int, ttl_ms: int, now_ms: int) -> bool:
        if self.ended or token != self.token or self.owner != worker:
            return False
        self.expires_ms = now_ms + ttl_ms
        return True

    def release(self, worker: str, token: int, to: str, hold_ms: int, now_ms: int) -> bool:
        if self.ended or token != self.token or self.owner != worker:
            return False
        self.owner = ""
        self.expires_ms = 0
        self.handoff_to = to
        self.handoff_until_ms = now_ms + hold_ms
        return True

    def finish(self, token: int) -> bool:
        if token != self.token:
            return False
        self.ended = True
        self.owner = ""
        self.expires_ms = 0
        return True

    def claim(self, hold_ms: int, now_ms: int, dead: tuple[str, int] | None = None) -> bool:
        if self.ended or self.token == 0:
            return False
        if self.held(now_ms):
            if dead != (self.owner, self.token):
                return False
            self.expires_ms = now_ms  # its owner is dead: lapsed now, not at its TTL
        if not self.owner and now_ms < self.handoff_until_ms:
            return False  # handed over on purpose: the taker has until then
        if now_ms < self.claim_until_ms:
            return False
        self.claim_until_ms = now_ms + hold_ms
        return True

    def allows(self, token: int) -> bool:
        """May a write with ``token`` land?"""
        return token == self.token
