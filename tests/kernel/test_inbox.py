"""The bounded inbox (rspp.kernel.inbox): per-kind overload policies, FIFO, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rspp.events import AsrPartial, AudioIn, Event, LlmDelta
from rspp.kernel.inbox import Inbox, PutResult
from rspp.kernel.spec import Policy


def by_kind(**policies: Policy) -> Callable[[Event], Policy]:
    """A policy callable: kind (dots written as underscores) -> policy, default block."""
    table = {k.replace("_", "."): v for k, v in policies.items()}
    return lambda ev: table.get(ev.kind, Policy.BLOCK)


def kind_default(ev: Event) -> Policy:
    return Policy(ev.__class__.overload)


def audio(n: int) -> AudioIn:
    return AudioIn(pcm=b"\0\0", seq=n)


def delta(n: int) -> LlmDelta:
    return LlmDelta(text=f"d{n}", seq=n)


def partial(n: int) -> AsrPartial:
    return AsrPartial(text=f"p{n}", seq=n)


def seqs(inbox: Inbox) -> list[tuple[str, int]]:
    return [(ev.kind, ev.seq) for ev in inbox]


async def _spin(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


# -- policies ---------------------------------------------------------------------------


def test_fifo_order() -> None:
    inbox = Inbox(8, kind_default)
    events: list[Event] = [audio(1), delta(2), partial(3), audio(4), delta(5)]
    for ev in events:
        assert inbox.put(ev) == PutResult.QUEUED
    assert len(inbox) == 5
    assert list(inbox) == events

    async def drain() -> list[Event]:
        return [await inbox.get() for _ in range(len(events))]

    assert asyncio.run(drain()) == events
    assert len(inbox) == 0


def test_block_admits_over_capacity_and_reports_overfull() -> None:
    inbox = Inbox(2, by_kind(llm_delta=Policy.BLOCK))
    assert inbox.put(delta(1)) == PutResult.QUEUED
    assert inbox.put(delta(2)) == PutResult.QUEUED
    assert not inbox.overfull  # at capacity is not over it
    assert inbox.put(delta(3)) == PutResult.OVERFULL
    assert inbox.put(delta(4)) == PutResult.OVERFULL
    assert inbox.overfull
    assert [s for _, s in seqs(inbox)] == [1, 2, 3, 4]

    async def take(n: int) -> None:
        for _ in range(n):
            await inbox.get()

    asyncio.run(take(1))
    assert inbox.overfull  # 3 > 2
    asyncio.run(take(1))
    assert not inbox.overfull


def test_drop_newest_drops_the_incoming_event() -> None:
    inbox = Inbox(2, by_kind(llm_delta=Policy.DROP_NEWEST))
    assert inbox.put(delta(1)) == PutResult.QUEUED
    assert inbox.put(delta(2)) == PutResult.QUEUED
    assert inbox.put(delta(3)) == PutResult.DROPPED_NEWEST
    assert [s for _, s in seqs(inbox)] == [1, 2]
    assert not inbox.overfull


def test_drop_oldest_drops_the_oldest_of_the_same_kind() -> None:
    inbox = Inbox(3, by_kind(audio_in=Policy.DROP_OLDEST))
    inbox.put(delta(1))
    inbox.put(audio(2))
    inbox.put(audio(3))
    assert inbox.put(audio(4)) == PutResult.DROPPED_OLDEST
    # The delta is older, but of another kind: it stays.
    assert seqs(inbox) == [("llm.delta", 1), ("audio.in", 3), ("audio.in", 4)]
    assert len(inbox) == 3


def test_drop_oldest_below_capacity_drops_nothing() -> None:
    inbox = Inbox(3, by_kind(audio_in=Policy.DROP_OLDEST))
    inbox.put(audio(1))
    assert inbox.put(audio(2)) == PutResult.QUEUED
    assert [s for _, s in seqs(inbox)] == [1, 2]


def test_drop_oldest_without_a_queued_event_of_its_kind_drops_the_newest() -> None:
    inbox = Inbox(2, by_kind(audio_in=Policy.DROP_OLDEST))
    inbox.put(delta(1))
    inbox.put(delta(2))
    assert inbox.put(audio(3)) == PutResult.DROPPED_NEWEST
    assert seqs(inbox) == [("llm.delta", 1), ("llm.delta", 2)]


def test_latest_replaces_an_older_event_of_its_kind_even_when_not_full() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    assert inbox.put(partial(1)) == PutResult.QUEUED
    inbox.put(delta(2))
    assert inbox.put(partial(3)) == PutResult.REPLACED
    # The new partial goes to the tail, the old one is gone.
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert inbox.put(partial(4)) == PutResult.REPLACED
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 4)]


def test_latest_when_full_replaces_without_growing() -> None:
    inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(delta(2))
    assert inbox.put(partial(3)) == PutResult.REPLACED
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert not inbox.overfull


def test_policy_is_asked_per_event() -> None:
    asked: list[str] = []

    def policy(ev: Event) -> Policy:
        asked.append(ev.kind)
        return kind_default(ev)

    inbox = Inbox(1, policy)
    inbox.put(audio(1))
    assert inbox.put(audio(2)) == PutResult.DROPPED_OLDEST  # audio.in default: drop_oldest
    assert inbox.put(delta(3)) == PutResult.OVERFULL  # llm.delta default: block
    assert asked == ["audio.in", "audio.in", "llm.delta"]
    assert seqs(inbox) == [("audio.in", 2), ("llm.delta", 3)]


# -- waiting ----------------------------------------------------------------------------


def test_get_waits_for_a_put() -> None:
    async def main() -> None:
        inbox = Inbox(4, kind_default)
        getter = asyncio.create_task(inbox.get())
        await _spin()
        assert not getter.done()
        ev = delta(7)
        assert inbox.put(ev) == PutResult.QUEUED
        got = await asyncio.wait_for(getter, 1.0)
        assert got is ev
        assert len(inbox) == 0
        # And again, after the first getter is gone.
        second = asyncio.create_task(inbox.get())
        await _spin()
        assert not second.done()
        inbox.put(delta(8))
        assert (await asyncio.wait_for(second, 1.0)).seq == 8

    asyncio.run(main())


def test_get_returns_at_once_when_not_empty() -> None:
    async def main() -> Event:
        inbox = Inbox(4, kind_default)
        inbox.put(delta(1))
        return await asyncio.wait_for(inbox.get(), 1.0)

    assert asyncio.run(main()).seq == 1


def test_wait_space_returns_once_below_capacity() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind())
        for n in range(3):
            inbox.put(delta(n))
        waiter = asyncio.create_task(inbox.wait_space())
        await _spin()
        assert not waiter.done()
        await inbox.get()  # 2 left: at capacity, not below it
        await _spin()
        assert not waiter.done()
        await inbox.get()  # 1 left
        await asyncio.wait_for(waiter, 1.0)
        assert len(inbox) == 1

    asyncio.run(main())


def test_wait_space_returns_at_once_with_space() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind())
        inbox.put(delta(1))
        await asyncio.wait_for(inbox.wait_space(), 1.0)

    asyncio.run(main())


def test_wait_space_twice() -> None:
    async def main() -> None:
        inbox = Inbox(1, by_kind())
        for round_ in range(2):
            inbox.put(delta(round_))
            waiter = asyncio.create_task(inbox.wait_space())
            await _spin()
            assert not waiter.done(), round_
            await inbox.get()
            await asyncio.wait_for(waiter, 1.0)

    asyncio.run(main())


# -- purge ------------------------------------------------------------------------------


def test_purge_removes_matching_events_and_keeps_order() -> None:
    inbox = Inbox(10, kind_default)
    events: list[Event] = [audio(1), delta(2), audio(3), delta(4), partial(5)]
    for ev in events:
        inbox.put(ev)
    dropped = inbox.purge(lambda ev: ev.kind == "llm.delta")
    assert [ev.seq for ev in dropped] == [2, 4]
    assert [ev.seq for ev in inbox] == [1, 3, 5]
    assert inbox.purge(lambda ev: False) == []
    assert [ev.seq for ev in inbox] == [1, 3, 5]


def test_purge_wakes_space_waiters() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind())
        inbox.put(delta(1))
        inbox.put(audio(2))
        inbox.put(delta(3))
        waiter = asyncio.create_task(inbox.wait_space())
        await _spin()
        assert not waiter.done()
        dropped = inbox.purge(lambda ev: ev.kind == "llm.delta")
        assert [ev.seq for ev in dropped] == [1, 3]
        await asyncio.wait_for(waiter, 1.0)
        assert [ev.seq for ev in inbox] == [2]

    asyncio.run(main())


def test_purge_that_leaves_the_inbox_full_does_not_wake() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind())
        for n in range(4):
            inbox.put(delta(n))
        waiter = asyncio.create_task(inbox.wait_space())
        await _spin()
        inbox.purge(lambda ev: ev.seq == 0)  # 3 left, still >= 2
        await _spin()
        assert not waiter.done()
        waiter.cancel()

    asyncio.run(main())
