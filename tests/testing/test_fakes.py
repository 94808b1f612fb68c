"""The fake models: timing profiles in virtual time, what they record, what they emit."""

from __future__ import annotations

import asyncio
from itertools import pairwise
from typing import Any

import pytest

from rspp.events import (
    AsrFinal,
    AsrPartial,
    AudioIn,
    Cancel,
    Event,
    LlmDelta,
    LlmDone,
    TtsAudio,
    TurnCommit,
)
from rspp.testing import FakeLlmStream, run_virtual, silence, speech_like, tick
from tests.kernel.helpers import make_pipeline

MS = 1_000_000

# --------------------------------------------------------------------------- tick


def test_tick_strictly_increases() -> None:
    ticks = [tick() for _ in range(100)]
    assert ticks == sorted(set(ticks))


# --------------------------------------------------------------------------- FakeLlmStream


def make_stream(text: str = "one two three four", **kw: Any) -> FakeLlmStream:
    opts: dict[str, Any] = {"turn": 3, "ttft_s": 0.4, "interval_s": 0.025, "ignore_cancel": False}
    opts.update(kw)
    return FakeLlmStream(text, **opts)


def test_stream_timing_first_token_after_ttft_then_steady_rate() -> None:
    stream = make_stream("Hello there, how are you?")

    async def main() -> list[tuple[str, float]]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        return [(token, loop.time() - t0) async for token in stream]

    got = run_virtual(main())
    assert [tok for tok, _ in got] == ["Hello ", "there, ", "how ", "are ", "you?"]
    assert "".join(tok for tok, _ in got) == "Hello there, how are you?"
    expected = [0.4 + i * 0.025 for i in range(5)]
    assert [t for _, t in got] == pytest.approx(expected, abs=1e-6)
    assert [turn for _, turn in stream.produced] == [3] * 5
    ticks = [t for t, _ in stream.produced]
    assert ticks == sorted(set(ticks))
    assert stream.ignored_cancels == 0
    assert not stream.closed  # exhausting a stream does not close it


def test_stream_aclose_records_when_and_stops_the_stream() -> None:
    stream = make_stream()

    async def main() -> tuple[float, list[str]]:
        loop = asyncio.get_running_loop()
        first = await anext(stream)
        await asyncio.sleep(1.0)
        before = tick()
        await stream.aclose()
        closed_at = loop.time()
        await stream.aclose()  # idempotent: the first close is what counts
        assert stream.closed_at == closed_at
        assert stream.closed_tick > before
        rest = [tok async for tok in stream]
        return closed_at, [first, *rest]

    closed_at, tokens = run_virtual(main())
    assert stream.closed
    assert stream.closed_at == closed_at
    assert stream.closed_perf_ns > 0
    assert tokens == ["one "]
    assert len(stream.produced) == 1


def test_stream_as_context_manager_closes_on_exit() -> None:
    stream = make_stream()

    async def main() -> float:
        loop = asyncio.get_running_loop()
        async with stream as s:
            assert s is stream
            await anext(s)
            await anext(s)
            assert not stream.closed
        return loop.time()

    exit_at = run_virtual(main())
    assert stream.closed
    assert stream.closed_at == exit_at
    assert len(stream.produced) == 2


def test_stream_closes_when_its_consumer_is_cancelled() -> None:
    stream = make_stream(ttft_s=10.0)

    async def main() -> float:
        loop = asyncio.get_running_loop()

        async def consume() -> None:
            async with stream:
                async for _ in stream:
                    pass

        task = asyncio.create_task(consume())
        await asyncio.sleep(1.0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return loop.time()

    cancelled_at = run_virtual(main())
    assert stream.closed and stream.closed_at == cancelled_at
    assert stream.produced == []
    assert stream.ignored_cancels == 0


def test_ignore_cancel_swallows_one_cancellation_per_await_and_counts_it() -> None:
    stream = make_stream("a b c d", ttft_s=10.0, interval_s=1.0, ignore_cancel=True)

    async def main() -> tuple[list[tuple[str, float]], bool]:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        got: list[tuple[str, float]] = []

        async def consume() -> None:
            got.extend([(token, loop.time() - t0) async for token in stream])

        task = asyncio.create_task(consume())
        await asyncio.sleep(2.0)
        task.cancel()  # during the 10 s wait for the first token
        await asyncio.sleep(0.5)
        task.cancel()  # during the 1 s wait for the second
        await task
        return got, task.cancelled()

    got, cancelled = run_virtual(main())
    assert not cancelled
    # Each cancellation ended that wait early: the token came at once, the stream went on.
    assert got == [("a ", 2.0), ("b ", 2.5), ("c ", 3.5), ("d", 4.5)]
    assert stream.ignored_cancels == 2


def test_without_ignore_cancel_the_cancellation_propagates() -> None:
    stream = make_stream(ttft_s=10.0, ignore_cancel=False)

    async def main() -> bool:
        task = asyncio.create_task(anext(stream))
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.wait([task])
        return task.cancelled()

    assert run_virtual(main())
    assert stream.ignored_cancels == 0
    assert stream.produced == []


# --------------------------------------------------------------------------- in sessions


class Recorder:
    """An observer that keeps (loop time ns, event)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, Event]] = []

    def __call__(self, event: Event) -> None:
        loop = asyncio.get_running_loop()
        self.records.append((round(loop.time() * 1e9), event))

    def of_kind(self, kind: str) -> list[Event]:
        return [ev for _, ev in self.records if ev.kind == kind]

    def times(self, kind: str) -> list[int]:
        return [t for t, ev in self.records if ev.kind == kind]


def llm_pipeline(**config: Any) -> Any:
    return make_pipeline(
        [{"name": "llm", "type": "fake_llm", "inputs": ["input"], "config": config}],
        inputs=("turn.commit",),
    )


def test_fake_llm_streams_the_reply_token_by_token_then_done() -> None:
    pipeline = llm_pipeline(ttft_ms=300, tokens_per_s=50, replies=["Hi there. How can I help?"])
    rec = Recorder()

    async def main() -> int:
        async with pipeline.session(observers=[rec]) as session:
            t0 = session.now_ns()
            session.push(TurnCommit(text="hello"))
            await asyncio.sleep(2.0)
            (stream,) = session.node("llm").streams
            assert stream.closed
            return t0

    t0 = run_virtual(main())
    deltas = rec.of_kind("llm.delta")
    assert [d.text for d in deltas] == ["Hi ", "there. ", "How ", "can ", "I ", "help?"]  # type: ignore[attr-defined]
    assert all(d.turn == 1 for d in deltas)
    times = rec.times("llm.delta")
    expected = [t0 + 300 * MS + i * 20 * MS for i in range(6)]
    assert times == pytest.approx(expected, abs=1000)
    (done,) = rec.of_kind("llm.done")
    assert done.turn == 1
    assert rec.times("llm.done")[0] >= times[-1]
    kinds = [ev.kind for _, ev in rec.records if ev.kind.startswith("llm.")]
    assert kinds == ["llm.delta"] * 6 + ["llm.done"]


def test_fake_llm_cycles_its_replies() -> None:
    pipeline = llm_pipeline(ttft_ms=10, tokens_per_s=100, replies=["First.", "Second one."])
    rec = Recorder()

    async def main() -> int:
        async with pipeline.session(observers=[rec]) as session:
            for text in ["a", "b", "c"]:
                session.push(TurnCommit(text=text))
                await asyncio.sleep(1.0)
            return int(session.node("llm").replies_started)

    started = run_virtual(main())
    replies: dict[int, str] = {}
    for ev in rec.of_kind("llm.delta"):
        replies[ev.turn] = replies.get(ev.turn, "") + ev.text  # type: ignore[attr-defined]
    assert replies == {1: "First.", 2: "Second one.", 3: "First."}
    assert started == 3


def test_fake_llm_echo_reply_contains_the_user_text() -> None:
    pipeline = llm_pipeline(ttft_ms=10, tokens_per_s=1000)
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session(observers=[rec]) as session:
            session.push(TurnCommit(text="purple elephants dance"))
            await asyncio.sleep(1.0)

    run_virtual(main())
    reply = "".join(ev.text for ev in rec.of_kind("llm.delta"))  # type: ignore[attr-defined]
    assert "purple elephants dance" in reply
    assert len(rec.of_kind("llm.done")) == 1


def test_fake_llm_snapshot_carries_the_reply_index() -> None:
    pipeline = llm_pipeline(ttft_ms=10, tokens_per_s=1000, replies=["A.", "B.", "C."])
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session() as first:
            first.push(TurnCommit(text="x"))
            await asyncio.sleep(0.5)
            state = first.node("llm").snapshot()
        async with pipeline.session(observers=[rec]) as second:
            second.node("llm").restore(state)
            second.push(TurnCommit(text="y"))
            await asyncio.sleep(0.5)

    run_virtual(main())
    assert "".join(ev.text for ev in rec.of_kind("llm.delta")) == "B."  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- FakeTts


def tts_pipeline(**config: Any) -> Any:
    return make_pipeline(
        [{"name": "tts", "type": "fake_tts", "inputs": ["input"], "config": config}],
        inputs=("llm.delta", "llm.done", "turn.commit"),
    )


TTS = {"ttfa_ms": 150.0, "rtf": 0.2, "ms_per_char": 60.0, "chunk_ms": 200.0}


def test_fake_tts_waits_for_a_sentence_end() -> None:
    pipeline = tts_pipeline(**TTS)
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session(observers=[rec]) as session:
            session.push(TurnCommit(text="q"))  # reply text belongs to a reply
            for piece in ["Hello ", "there ", "my ", "friend"]:
                session.push(LlmDelta(text=piece))
            await asyncio.sleep(5.0)
            assert rec.of_kind("tts.audio") == [], "no audio before a sentence ends"
            session.push(LlmDelta(text="! And"))
            await asyncio.sleep(5.0)
            heard = "".join(ev.text for ev in rec.of_kind("tts.audio"))  # type: ignore[attr-defined]
            assert heard == "Hello there my friend! "
            assert rec.of_kind("tts.done") == []
            before = len(rec.of_kind("tts.audio"))
            session.push(LlmDelta(text=" more"))
            await asyncio.sleep(5.0)
            assert len(rec.of_kind("tts.audio")) == before, "'And more' is no sentence yet"
            session.push(LlmDone())
            await asyncio.sleep(5.0)

    run_virtual(main())
    texts = [ev.text for ev in rec.of_kind("tts.audio")]  # type: ignore[attr-defined]
    assert "".join(texts) == "Hello there my friend! And more"
    (done,) = rec.of_kind("tts.done")
    assert rec.times("tts.done")[0] >= rec.times("tts.audio")[-1]
    assert done.turn == 1


def test_fake_tts_timing_and_duration() -> None:
    pipeline = tts_pipeline(**TTS)
    rec = Recorder()
    sentence = "This sentence has a fair few characters in it. "

    async def main() -> int:
        async with pipeline.session(observers=[rec]) as session:
            session.push(TurnCommit(text="q"))  # reply text belongs to a reply
            t0 = session.now_ns()
            session.push(LlmDelta(text=sentence))
            await asyncio.sleep(10.0)
            return t0

    t0 = run_virtual(main())
    chunks: list[TtsAudio] = rec.of_kind("tts.audio")  # type: ignore[assignment]
    times = rec.times("tts.audio")
    expected_ms = len(sentence.strip()) * 60.0
    count = round(expected_ms / 200.0)
    assert len(chunks) == count
    total_ms = sum(c.duration_ns for c in chunks) / 1e6
    assert total_ms == pytest.approx(expected_ms, abs=count * 0.1)
    chunk_ms = expected_ms / count
    assert times[0] - t0 == pytest.approx(150 * MS, abs=1000)
    gaps = [b - a for a, b in pairwise(times)]
    assert gaps == pytest.approx([chunk_ms * 0.2 * MS] * (count - 1), abs=1000)
    assert "".join(c.text for c in chunks) == sentence
    assert all(c.sample_rate == 16000 and c.pcm for c in chunks)


def test_fake_tts_synthesizes_each_sentence_with_its_own_first_chunk_delay() -> None:
    pipeline = tts_pipeline(**{**TTS, "ms_per_char": 10.0})
    rec = Recorder()

    async def main() -> int:
        async with pipeline.session(observers=[rec]) as session:
            session.push(TurnCommit(text="q"))  # reply text belongs to a reply
            t0 = session.now_ns()
            session.push(LlmDelta(text="One. Two? Three"))
            session.push(LlmDone())
            await asyncio.sleep(5.0)
            return t0

    t0 = run_virtual(main())
    texts = [ev.text for ev in rec.of_kind("tts.audio")]  # type: ignore[attr-defined]
    # Short sentences: one chunk each (at least half a chunk of audio).
    assert texts == ["One. ", "Two? ", "Three"]
    assert [ev.duration_ns for ev in rec.of_kind("tts.audio")] == [100 * MS] * 3  # type: ignore[attr-defined]
    times = rec.times("tts.audio")
    assert [t - t0 for t in times] == pytest.approx([150 * MS, 300 * MS, 450 * MS], abs=1000)
    assert rec.times("tts.done")[0] == pytest.approx(times[-1], abs=1000)


def test_fake_tts_done_without_text_is_just_done() -> None:
    pipeline = tts_pipeline(**TTS)
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session(observers=[rec]) as session:
            session.push(TurnCommit(text="q"))  # reply text belongs to a reply
            session.push(LlmDelta(text="   "))
            session.push(LlmDone())
            await asyncio.sleep(1.0)

    run_virtual(main())
    assert rec.of_kind("tts.audio") == []
    assert len(rec.of_kind("tts.done")) == 1


def test_fake_tts_discards_pending_text_of_a_fenced_turn() -> None:
    pipeline = tts_pipeline(**TTS)
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session(observers=[rec]) as session:
            tts = session.node("tts")
            session.push(TurnCommit(text="q"))  # reply 1
            session.push(LlmDelta(text="An unfinished thought"))  # no sentence end
            await asyncio.sleep(0.1)
            assert tts.snapshot().pending == {1: "An unfinished thought"}
            session.push(Cancel(turn=1))  # reply 1 fenced
            assert session.fence == 1
            session.push(TurnCommit(text="q2"))  # reply 2
            session.push(LlmDelta(text="Fresh"))
            await asyncio.sleep(0.1)
            assert tts.snapshot().pending == {2: "Fresh"}
            session.push(LlmDone())
            await asyncio.sleep(2.0)

    run_virtual(main())
    chunks = rec.of_kind("tts.audio")
    assert "".join(c.text for c in chunks) == "Fresh"  # type: ignore[attr-defined]
    assert {c.turn for c in chunks} == {2}


# --------------------------------------------------------------------------- FakeAsr


def asr_pipeline(script: list[str], **config: Any) -> Any:
    return make_pipeline(
        [
            {"name": "vad", "type": "energy_vad", "inputs": ["input"]},
            {
                "name": "asr",
                "type": "fake_asr",
                "inputs": ["input", "vad"],
                "config": {"script": script, **config},
            },
        ]
    )


async def speak(session: Any, speech_ms: float, silence_ms: float, seed: int = 0) -> None:
    for i in range(round(speech_ms / 20)):
        session.push(AudioIn(pcm=speech_like(20, seed=seed * 1000 + i)))
        await asyncio.sleep(0.02)
    for _ in range(round(silence_ms / 20)):
        session.push(AudioIn(pcm=silence(20)))
        await asyncio.sleep(0.02)


def test_fake_asr_partials_grow_with_speech_and_the_final_follows_speech_end() -> None:
    text = "the quick brown fox jumps over the lazy dog"
    pipeline = asr_pipeline([text], words_per_s=3.0, final_ms=250.0, unstable_words=1)
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session(observers=[rec]) as session:
            await speak(session, 2500, 1200)

    run_virtual(main())
    partials: list[AsrPartial] = rec.of_kind("asr.partial")  # type: ignore[assignment]
    assert len(partials) >= 5
    words = text.split()
    for p in partials:
        assert p.text.startswith(p.stable)
        assert text.startswith(p.text)
        shown = len(p.text.split())
        assert p.stable == " ".join(words[: max(0, shown - 1)])
    lengths = [len(p.text.split()) for p in partials]
    assert lengths == sorted(set(lengths)), "each partial shows more words than the last"
    stables = [p.stable for p in partials]
    assert all(b.startswith(a) for a, b in pairwise(stables))
    # About 3 words per second of speech, a word shown as soon as it starts: ~8 by 2.5 s.
    assert 7 <= lengths[-1] <= 9
    (final,) = rec.of_kind("asr.final")
    assert isinstance(final, AsrFinal)
    assert final.text == text
    (end,) = rec.of_kind("vad.speech_end")
    end_t = rec.times("vad.speech_end")[0]
    final_t = rec.times("asr.final")[0]
    assert final_t - end_t == pytest.approx(250 * MS, abs=1000)
    assert final.origin_ns == end.origin_ns  # caused by the end of speech
    assert max(rec.times("asr.partial")) < end_t


def test_fake_asr_utterances_beyond_the_script_give_an_empty_final() -> None:
    pipeline = asr_pipeline(["  first   one  "], final_ms=100.0)
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session(observers=[rec]) as session:
            await speak(session, 600, 600, seed=1)
            await speak(session, 600, 600, seed=2)
            await speak(session, 600, 600, seed=3)
            assert session.node("asr").next_utterance == 3

    run_virtual(main())
    finals = [ev.text for ev in rec.of_kind("asr.final")]  # type: ignore[attr-defined]
    assert finals == ["first one", "", ""]
    assert all(p.text.startswith("first") for p in rec.of_kind("asr.partial"))  # type: ignore[attr-defined]


def test_fake_asr_emits_nothing_without_speech() -> None:
    pipeline = asr_pipeline(["never said"])
    rec = Recorder()

    async def main() -> None:
        async with pipeline.session(observers=[rec]) as session:
            await speak(session, 0, 1000)

    run_virtual(main())
    assert rec.of_kind("asr.partial") == []
    assert rec.of_kind("asr.final") == []
