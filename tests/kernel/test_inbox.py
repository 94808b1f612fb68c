"""The bounded inbox (rspp.kernel.inbox): per-kind overload policies, FIFO, waiting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from rspp.events import AsrPartial, AudioIn, Event, LlmDelta
from rspp.kernel.inbox import Inbox, PutResult
from rspp.kernel.spec import Policy

Resolve = Callable[[str, str], Policy]


def by_kind(**policies: Policy) -> Resolve:
    """A resolver: kind (dots written as underscores) -> policy, default block."""
    table = {k.replace("_", "."): v for k, v in policies.items()}
    return lambda kind, default: table.get(kind, Policy.BLOCK)


def kind_default(kind: str, default: str) -> Policy:
    """The resolver with no overrides: every kind gets its own default."""
    return Policy(default)


def audio(n: int) -> AudioIn:
    return AudioIn(pcm=b"\0\0", seq=n)


def delta(n: int) -> LlmDelta:
    return LlmDelta(text=f"d{n}", seq=n)


def partial(n: int) -> AsrPartial:
    return AsrPartial(text=f"p{n}", seq=n)


def seqs(inbox: Inbox) -> list[tuple[str, int]]:
    return [(ev.kind, ev.seq) for ev in inbox]


def drain(inbox: Inbox) -> list[tuple[str, int]]:
    """Get every live event (``len`` of them), in order."""

    async def main() -> list[tuple[str, int]]:
        out = []
        for _ in range(len(inbox)):
            ev = await asyncio.wait_for(inbox.get(), 1.0)
            out.append((ev.kind, ev.seq))
        return out

    return asyncio.run(main())


def assert_empty(inbox: Inbox) -> None:
    """Nothing live left: ``len`` is 0, iteration is empty and ``get`` waits."""
    assert len(inbox) == 0
    assert list(inbox) == []
    assert not inbox.full

    async def main() -> None:
        getter = asyncio.create_task(inbox.get())
        await _spin()
        assert not getter.done(), f"get returned {getter.result()!r} from an empty inbox"
        getter.cancel()

    asyncio.run(main())


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

    async def main() -> list[Event]:
        return [await inbox.get() for _ in range(len(events))]

    got = asyncio.run(main())
    assert len(got) == len(events)
    assert all(a is b for a, b in zip(got, events, strict=True))
    assert_empty(inbox)


def test_block_admits_over_capacity_and_reports_overfull() -> None:
    inbox = Inbox(2, by_kind(llm_delta=Policy.BLOCK))
    assert inbox.put(delta(1)) == PutResult.QUEUED
    assert not inbox.full
    assert inbox.put(delta(2)) == PutResult.QUEUED
    assert inbox.full
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
    assert inbox.full


def test_block_limit_defaults_to_twice_the_capacity_then_overflows() -> None:
    inbox = Inbox(3, by_kind())
    assert inbox.limit == 6
    results = [inbox.put(delta(n)) for n in range(8)]
    assert results == [PutResult.QUEUED] * 3 + [PutResult.OVERFULL] * 3 + [PutResult.OVERFLOW] * 2
    # A refused event is not queued.
    assert [s for _, s in seqs(inbox)] == [0, 1, 2, 3, 4, 5]
    assert len(inbox) == 6


def test_block_admits_again_below_the_limit() -> None:
    inbox = Inbox(1, by_kind())
    assert [inbox.put(delta(n)) for n in range(3)] == [
        PutResult.QUEUED,
        PutResult.OVERFULL,
        PutResult.OVERFLOW,
    ]

    async def main() -> Event:
        return await inbox.get()

    assert asyncio.run(main()).seq == 0
    assert inbox.put(delta(3)) == PutResult.OVERFULL  # 1 queued, below the limit of 2
    assert inbox.put(delta(4)) == PutResult.OVERFLOW
    assert [s for _, s in seqs(inbox)] == [1, 3]


def test_an_explicit_limit() -> None:
    inbox = Inbox(2, by_kind(), limit=5)
    assert inbox.limit == 5
    results = [inbox.put(delta(n)) for n in range(6)]
    assert results == [PutResult.QUEUED] * 2 + [PutResult.OVERFULL] * 3 + [PutResult.OVERFLOW]


def test_a_limit_at_capacity_admits_nothing_over_it() -> None:
    inbox = Inbox(2, by_kind(), limit=2)
    assert [inbox.put(delta(n)) for n in range(3)] == [
        PutResult.QUEUED,
        PutResult.QUEUED,
        PutResult.OVERFLOW,
    ]
    assert not inbox.overfull


def test_a_limit_below_capacity_is_raised_to_the_capacity() -> None:
    inbox = Inbox(3, by_kind(), limit=1)
    assert inbox.limit == 3
    assert [inbox.put(delta(n)) for n in range(4)] == [PutResult.QUEUED] * 3 + [PutResult.OVERFLOW]


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
    assert not inbox.overfull


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


# -- latest (tombstones) ----------------------------------------------------------------


def test_latest_replaces_an_older_event_of_its_kind_even_when_not_full() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    assert inbox.put(partial(1)) == PutResult.QUEUED
    inbox.put(delta(2))
    assert inbox.put(partial(3)) == PutResult.REPLACED
    # The new partial goes to the tail, the old one is gone.
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert len(inbox) == 2
    assert inbox.put(partial(4)) == PutResult.REPLACED
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 4)]
    assert len(inbox) == 2


def test_latest_replaced_several_times_gets_only_the_newest() -> None:
    inbox = Inbox(4, by_kind(asr_partial=Policy.LATEST))
    assert inbox.put(partial(1)) == PutResult.QUEUED
    for n in range(2, 7):
        assert inbox.put(partial(n)) == PutResult.REPLACED
    assert len(inbox) == 1
    assert seqs(inbox) == [("asr.partial", 6)]
    assert not inbox.full
    assert drain(inbox) == [("asr.partial", 6)]
    assert_empty(inbox)


def test_latest_tombstones_interleaved_with_other_kinds() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(delta(2))
    inbox.put(partial(3))
    inbox.put(delta(4))
    inbox.put(partial(5))
    inbox.put(delta(6))
    assert len(inbox) == 4
    assert seqs(inbox) == [
        ("llm.delta", 2),
        ("llm.delta", 4),
        ("asr.partial", 5),
        ("llm.delta", 6),
    ]
    assert drain(inbox) == [
        ("llm.delta", 2),
        ("llm.delta", 4),
        ("asr.partial", 5),
        ("llm.delta", 6),
    ]
    assert_empty(inbox)


def test_latest_after_its_event_was_taken_queues_again() -> None:
    inbox = Inbox(4, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(partial(2))
    assert drain(inbox) == [("asr.partial", 2)]
    # None of its kind is queued any more: the next one is simply queued.
    assert inbox.put(partial(3)) == PutResult.QUEUED
    assert inbox.put(partial(4)) == PutResult.REPLACED
    assert drain(inbox) == [("asr.partial", 4)]
    assert_empty(inbox)


def test_latest_kinds_are_independent() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST, llm_delta=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(delta(2))
    assert inbox.put(partial(3)) == PutResult.REPLACED
    assert inbox.put(audio(4)) == PutResult.QUEUED
    assert inbox.put(delta(5)) == PutResult.REPLACED
    assert inbox.put(partial(6)) == PutResult.REPLACED
    assert seqs(inbox) == [("audio.in", 4), ("llm.delta", 5), ("asr.partial", 6)]
    assert drain(inbox) == [("audio.in", 4), ("llm.delta", 5), ("asr.partial", 6)]


def test_latest_when_full_replaces_without_growing() -> None:
    inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(delta(2))
    assert inbox.put(partial(3)) == PutResult.REPLACED
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert len(inbox) == 2
    assert inbox.full
    assert not inbox.overfull


def test_latest_with_none_of_its_kind_is_admitted_over_capacity() -> None:
    inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))
    inbox.put(delta(1))
    inbox.put(delta(2))
    assert inbox.put(partial(3)) == PutResult.QUEUED
    assert inbox.overfull
    assert inbox.put(partial(4)) == PutResult.REPLACED  # and overshoots by one at most
    assert len(inbox) == 3


def test_tombstones_do_not_count_toward_capacity() -> None:
    inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST, audio_in=Policy.DROP_OLDEST))
    for n in range(1, 6):
        inbox.put(partial(n))  # 4 tombstones, 1 live event
    assert len(inbox) == 1
    assert not inbox.full
    assert not inbox.overfull
    assert inbox.put(audio(6)) == PutResult.QUEUED  # room for one more
    assert inbox.full
    assert inbox.put(audio(7)) == PutResult.DROPPED_OLDEST
    assert seqs(inbox) == [("asr.partial", 5), ("audio.in", 7)]


def test_tombstones_do_not_count_toward_drop_newest() -> None:
    inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST, llm_delta=Policy.DROP_NEWEST))
    for n in range(1, 4):
        inbox.put(partial(n))
    assert inbox.put(delta(4)) == PutResult.QUEUED
    assert inbox.put(delta(5)) == PutResult.DROPPED_NEWEST
    assert seqs(inbox) == [("asr.partial", 3), ("llm.delta", 4)]


def test_tombstones_do_not_count_toward_the_block_limit() -> None:
    inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))  # limit 4
    for n in range(1, 5):
        inbox.put(partial(n))  # 3 tombstones
    results = [inbox.put(delta(n)) for n in range(5, 9)]
    assert results == [
        PutResult.QUEUED,  # 2 live
        PutResult.OVERFULL,  # 3
        PutResult.OVERFULL,  # 4: the limit
        PutResult.OVERFLOW,
    ]
    assert len(inbox) == 4
    assert drain(inbox) == [
        ("asr.partial", 4),
        ("llm.delta", 5),
        ("llm.delta", 6),
        ("llm.delta", 7),
    ]


def test_the_same_latest_event_put_twice_is_got_once() -> None:
    inbox = Inbox(4, by_kind(asr_partial=Policy.LATEST))
    ev = partial(1)
    assert inbox.put(ev) == PutResult.QUEUED
    assert inbox.put(ev) == PutResult.REPLACED
    assert len(inbox) == 1
    assert drain(inbox) == [("asr.partial", 1)]
    assert_empty(inbox)


# -- policy resolution ------------------------------------------------------------------


def test_policy_is_resolved_once_per_kind_and_cached() -> None:
    asked: list[tuple[str, str]] = []

    def resolve(kind: str, default: str) -> Policy:
        asked.append((kind, default))
        return Policy(default)

    inbox = Inbox(1, resolve)
    inbox.put(audio(1))
    assert inbox.put(audio(2)) == PutResult.DROPPED_OLDEST  # audio.in default: drop_oldest
    assert inbox.put(delta(3)) == PutResult.OVERFULL  # llm.delta default: block
    assert inbox.put(audio(4)) == PutResult.DROPPED_OLDEST  # audio 2 goes
    assert inbox.put(delta(5)) == PutResult.OVERFLOW  # limit 2
    assert inbox.put(partial(6)) == PutResult.QUEUED  # asr.partial default: latest
    assert inbox.put(partial(7)) == PutResult.REPLACED
    # Asked once per kind, with the kind's own default.
    assert asked == [
        ("audio.in", "drop_oldest"),
        ("llm.delta", "block"),
        ("asr.partial", "latest"),
    ]
    assert seqs(inbox) == [("llm.delta", 3), ("audio.in", 4), ("asr.partial", 7)]
    # policy() answers from the cache too.
    assert inbox.policy("audio.in", "drop_oldest") is Policy.DROP_OLDEST
    assert inbox.policy("llm.delta", "latest") is Policy.BLOCK  # cached: the default is moot
    assert len(asked) == 3


def test_policy_resolves_and_caches_a_kind_not_seen_yet() -> None:
    asked: list[tuple[str, str]] = []

    def resolve(kind: str, default: str) -> Policy:
        asked.append((kind, default))
        return Policy.LATEST if kind == "llm.delta" else Policy(default)

    inbox = Inbox(4, resolve)
    assert inbox.policy("llm.delta", "block") is Policy.LATEST
    assert asked == [("llm.delta", "block")]
    inbox.put(delta(1))
    assert inbox.put(delta(2)) == PutResult.REPLACED  # the override applies
    assert asked == [("llm.delta", "block")]  # no second resolution


def test_the_resolved_override_wins_over_the_kind_default() -> None:
    inbox = Inbox(1, by_kind(audio_in=Policy.DROP_NEWEST))
    inbox.put(audio(1))
    assert inbox.put(audio(2)) == PutResult.DROPPED_NEWEST  # not the default drop_oldest
    assert seqs(inbox) == [("audio.in", 1)]


# -- put_front --------------------------------------------------------------------------


def test_put_front_puts_events_back_at_the_head_in_order() -> None:
    inbox = Inbox(8, kind_default)
    inbox.put(delta(3))
    inbox.put(audio(4))
    inbox.put_front([delta(1), audio(2)])
    assert seqs(inbox) == [("llm.delta", 1), ("audio.in", 2), ("llm.delta", 3), ("audio.in", 4)]
    assert len(inbox) == 4
    assert drain(inbox) == [
        ("llm.delta", 1),
        ("audio.in", 2),
        ("llm.delta", 3),
        ("audio.in", 4),
    ]


def test_put_front_accepts_any_iterable_and_nothing() -> None:
    inbox = Inbox(4, kind_default)
    inbox.put_front([])
    assert len(inbox) == 0
    inbox.put_front(delta(n) for n in (1, 2))
    assert [s for _, s in seqs(inbox)] == [1, 2]


def test_put_front_goes_past_capacity_and_limit_and_every_policy() -> None:
    inbox = Inbox(1, by_kind(audio_in=Policy.DROP_OLDEST, llm_delta=Policy.DROP_NEWEST))
    inbox.put(delta(9))
    events: list[Event] = [delta(1), audio(2), audio(3), delta(4), delta(5)]
    inbox.put_front(events)
    assert len(inbox) == 6  # limit 2, capacity 1: nothing dropped or refused
    assert inbox.overfull
    assert [s for _, s in seqs(inbox)] == [1, 2, 3, 4, 5, 9]
    # While over capacity the ordinary policies still apply to puts.
    assert inbox.put(delta(10)) == PutResult.DROPPED_NEWEST
    assert inbox.put(audio(11)) == PutResult.DROPPED_OLDEST
    assert [s for _, s in seqs(inbox)] == [1, 3, 4, 5, 9, 11]


def test_put_front_skips_a_latest_event_when_one_of_its_kind_is_queued() -> None:
    inbox = Inbox(8, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(5))
    inbox.put_front([delta(1), partial(2), delta(3)])
    assert seqs(inbox) == [("llm.delta", 1), ("llm.delta", 3), ("asr.partial", 5)]
    assert len(inbox) == 3
    assert drain(inbox) == [("llm.delta", 1), ("llm.delta", 3), ("asr.partial", 5)]


def test_put_front_keeps_the_last_of_several_latest_events_of_a_kind() -> None:
    inbox = Inbox(8, by_kind(asr_partial=Policy.LATEST))
    inbox.put_front([partial(1), delta(2), partial(3)])
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert len(inbox) == 2


def test_put_front_skips_a_latest_event_when_tombstones_and_a_live_one_are_queued() -> None:
    inbox = Inbox(8, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(3))
    inbox.put(partial(4))  # 3 is a tombstone now
    inbox.put_front([partial(1), delta(2)])
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 4)]
    assert len(inbox) == 2
    assert drain(inbox) == [("llm.delta", 2), ("asr.partial", 4)]
    assert_empty(inbox)


def test_a_latest_event_put_front_is_the_live_one_of_its_kind() -> None:
    inbox = Inbox(8, by_kind(asr_partial=Policy.LATEST))
    inbox.put_front([partial(1), delta(2)])
    # A newer one replaces it as if it had been put.
    assert inbox.put(partial(3)) == PutResult.REPLACED
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert len(inbox) == 2
    assert drain(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert_empty(inbox)


def test_put_front_resolves_the_policy_once_too() -> None:
    asked: list[str] = []

    def resolve(kind: str, default: str) -> Policy:
        asked.append(kind)
        return Policy(default)

    inbox = Inbox(4, resolve)
    inbox.put_front([partial(1), partial(2), delta(3)])
    inbox.put(partial(4))
    inbox.put(delta(5))
    assert sorted(asked) == ["asr.partial", "llm.delta"]


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


def test_get_waits_for_a_put_of_a_latest_kind() -> None:
    async def main() -> None:
        inbox = Inbox(4, by_kind(asr_partial=Policy.LATEST))
        getter = asyncio.create_task(inbox.get())
        await _spin()
        inbox.put(partial(1))
        inbox.put(partial(2))  # before the getter ran: 1 is a tombstone
        assert (await asyncio.wait_for(getter, 1.0)).seq == 2
        assert len(inbox) == 0
        again = asyncio.create_task(inbox.get())
        await _spin()
        assert not again.done()  # the tombstone is not handed out
        again.cancel()

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


def test_wait_space_ignores_tombstones() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))
        for n in range(1, 5):
            inbox.put(partial(n))  # 4 queued in the deque, 1 live
        assert not inbox.full
        await asyncio.wait_for(inbox.wait_space(), 1.0)

    asyncio.run(main())


def test_wait_space_wakes_when_a_get_skips_tombstones() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))
        inbox.put(partial(1))
        inbox.put(partial(2))
        inbox.put(partial(3))  # 1 and 2 are tombstones
        inbox.put(delta(4))
        assert len(inbox) == 2
        assert inbox.full
        waiter = asyncio.create_task(inbox.wait_space())
        await _spin()
        assert not waiter.done()
        got = await asyncio.wait_for(inbox.get(), 1.0)
        assert got.seq == 3  # the tombstones were skipped
        await asyncio.wait_for(waiter, 1.0)
        assert len(inbox) == 1
        assert seqs(inbox) == [("llm.delta", 4)]

    asyncio.run(main())


def test_wait_space_stays_blocked_while_replacements_keep_it_full() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))
        inbox.put(delta(1))
        inbox.put(partial(2))
        waiter = asyncio.create_task(inbox.wait_space())
        await _spin()
        for n in range(3, 6):
            assert inbox.put(partial(n)) == PutResult.REPLACED
        await _spin()
        assert not waiter.done()
        assert (await inbox.get()).seq == 1
        await asyncio.wait_for(waiter, 1.0)
        assert seqs(inbox) == [("asr.partial", 5)]

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
    assert len(inbox) == 3
    assert inbox.purge(lambda ev: False) == []
    assert [ev.seq for ev in inbox] == [1, 3, 5]


def test_purge_after_replacements_returns_only_live_events() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(delta(2))
    inbox.put(partial(3))
    inbox.put(partial(4))
    dropped = inbox.purge(lambda ev: True)
    assert [(ev.kind, ev.seq) for ev in dropped] == [("llm.delta", 2), ("asr.partial", 4)]
    assert_empty(inbox)


def test_purge_of_the_live_latest_event_does_not_resurrect_its_tombstones() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(partial(2))
    inbox.put(delta(3))
    inbox.put(partial(4))
    dropped = inbox.purge(lambda ev: ev.kind == "asr.partial")
    assert [ev.seq for ev in dropped] == [4]
    assert seqs(inbox) == [("llm.delta", 3)]
    assert len(inbox) == 1
    assert drain(inbox) == [("llm.delta", 3)]
    assert_empty(inbox)
    # The kind has no live event any more: the next one is queued, not a replacement.
    assert inbox.put(partial(5)) == PutResult.QUEUED
    assert drain(inbox) == [("asr.partial", 5)]


def test_purge_of_other_kinds_keeps_the_live_latest_event() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(delta(2))
    inbox.put(partial(3))
    assert [ev.seq for ev in inbox.purge(lambda ev: ev.kind == "llm.delta")] == [2]
    assert seqs(inbox) == [("asr.partial", 3)]
    assert len(inbox) == 1
    assert inbox.put(partial(4)) == PutResult.REPLACED  # 3 is still the live one
    assert drain(inbox) == [("asr.partial", 4)]
    assert_empty(inbox)


def test_purge_matching_nothing_with_tombstones_changes_nothing_visible() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    inbox.put(partial(1))
    inbox.put(delta(2))
    inbox.put(partial(3))
    assert inbox.purge(lambda ev: False) == []
    assert seqs(inbox) == [("llm.delta", 2), ("asr.partial", 3)]
    assert len(inbox) == 2
    assert inbox.put(partial(4)) == PutResult.REPLACED
    assert drain(inbox) == [("llm.delta", 2), ("asr.partial", 4)]


def test_purge_never_sees_tombstones() -> None:
    inbox = Inbox(10, by_kind(asr_partial=Policy.LATEST))
    for n in range(1, 4):
        inbox.put(partial(n))
    seen: list[int] = []

    def drop(ev: Event) -> bool:
        seen.append(ev.seq)
        return False

    inbox.purge(drop)
    assert set(seen) == {3}


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


def test_purge_with_tombstones_wakes_space_waiters() -> None:
    async def main() -> None:
        inbox = Inbox(2, by_kind(asr_partial=Policy.LATEST))
        inbox.put(partial(1))
        inbox.put(partial(2))
        inbox.put(delta(3))
        assert inbox.full
        waiter = asyncio.create_task(inbox.wait_space())
        await _spin()
        assert not waiter.done()
        inbox.purge(lambda ev: ev.kind == "llm.delta")
        await asyncio.wait_for(waiter, 1.0)
        assert seqs(inbox) == [("asr.partial", 2)]

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


@pytest.mark.parametrize("capacity", [1, 3])
def test_len_iteration_and_full_agree_under_a_mixed_load(capacity: int) -> None:
    """A model check: the inbox against a plain list of live events."""
    inbox = Inbox(capacity, by_kind(asr_partial=Policy.LATEST, audio_in=Policy.DROP_OLDEST))
    model: list[Event] = []
    makers = [partial, delta, audio, partial, partial, delta]

    async def take() -> Event:
        return await asyncio.wait_for(inbox.get(), 1.0)

    for n in range(60):
        if n % 7 == 6 and model:
            got = asyncio.run(take())
            assert got is model.pop(0)
        else:
            ev = makers[n % len(makers)](n)
            result = inbox.put(ev)
            if isinstance(ev, AsrPartial):
                old = [m for m in model if isinstance(m, AsrPartial)]
                assert result == (PutResult.REPLACED if old else PutResult.QUEUED)
                for m in old:
                    model.remove(m)
                model.append(ev)
            elif isinstance(ev, AudioIn) and len(model) >= capacity:
                old = [m for m in model if isinstance(m, AudioIn)]
                if old:
                    assert result == PutResult.DROPPED_OLDEST
                    model.remove(old[0])
                    model.append(ev)
                else:
                    assert result == PutResult.DROPPED_NEWEST
            elif isinstance(ev, LlmDelta) and len(model) >= inbox.limit:
                assert result == PutResult.OVERFLOW
            else:
                full = len(model) >= capacity and isinstance(ev, LlmDelta)
                assert result == (PutResult.OVERFULL if full else PutResult.QUEUED)
                model.append(ev)
        assert len(inbox) == len(model)
        assert list(inbox) == model
        assert inbox.full == (len(model) >= capacity)
        assert inbox.overfull == (len(model) > capacity)
