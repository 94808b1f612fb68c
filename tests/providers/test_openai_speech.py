"""The transcription and speech clients, over real HTTP.

Against ``rspp serve-audio`` (real Whisper, real Piper) for what they are
for, and against a scripted server that misbehaves at the byte level
(errors, stalls, dropped connections) for the rules of
:mod:`rspp.providers.openai.speech`: retries only before any output, one
deadline for that phase, a per-chunk timeout after it, cancellation closes
the connection, the API key never shows.
"""

from __future__ import annotations

import asyncio
import io
import random
import socket
import time
import wave
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import soxr

from rspp.providers.errors import (
    ProviderConfigError,
    ProviderConnectError,
    ProviderStatusError,
    ProviderStreamError,
    ProviderTimeout,
)
from rspp.providers.local.whisper import WhisperTranscriber
from rspp.providers.openai.http import RetryPolicy
from rspp.providers.openai.speech import (
    Pcm16Resampler,
    SpeechClient,
    SpeechTimeouts,
    TranscriptionClient,
    TranscriptionTimeouts,
)
from tests.local.audio import RATE, level_db, recording, transcript, wer
from tests.serve import (
    FakeServer,
    RunningServer,
    Seen,
    audio_server,
    error,
    respond,
    stall,
    stream,
    tone,
)

FAST = RetryPolicy(max_retries=2, backoff_s=0.01, backoff_max_s=0.02, retry_after_max_s=1.0)
KEY = "sk-test-5ecret-k3y-0123456789"


def speech_client(base_url: str, **kwargs: Any) -> SpeechClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeouts", SpeechTimeouts(connect_s=1.0, first_byte_s=2.0, chunk_s=1.0))
    return SpeechClient(base_url, **kwargs)


def transcription_client(base_url: str, **kwargs: Any) -> TranscriptionClient:
    kwargs.setdefault("retry", FAST)
    kwargs.setdefault("timeouts", TranscriptionTimeouts(connect_s=1.0, response_s=2.0))
    return TranscriptionClient(base_url, **kwargs)


async def collect(client: SpeechClient, text: str = "Hello.", **kwargs: Any) -> bytes:
    async with client.speak(text, **kwargs) as audio:
        return b"".join([chunk async for chunk in audio])


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------- the real server


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with audio_server() as running:
        yield running


def test_transcription_of_a_recording(server: RunningServer) -> None:
    async def main() -> str:
        async with TranscriptionClient(server.base_url, language="en") as client:
            return await client.transcribe(recording("weather"), RATE)

    text = asyncio.run(main())
    assert wer([transcript("weather")], [text]) <= 0.15, text


def test_speech_streams_resampled_to_the_callers_rate(server: RunningServer) -> None:
    text = "The weather in London is mild today, with a light breeze from the west."

    async def main() -> tuple[list[bytes], bytes]:
        async with SpeechClient(server.base_url, voice="alloy") as client:
            async with client.speak(text, sample_rate=RATE) as audio:
                chunks = [chunk async for chunk in audio]
            native = await collect(client, text)  # the server's own 24 kHz
        return chunks, native

    chunks, native = asyncio.run(main())
    pcm = b"".join(chunks)
    assert len(chunks) > 1, "audio is yielded as it arrives"
    assert all(len(c) % 2 == 0 for c in chunks)
    seconds, native_s = len(pcm) / 2 / RATE, len(native) / 2 / 24000
    assert abs(seconds - native_s) < 0.2 * native_s  # Piper's timing varies from run to run
    assert level_db(pcm) > -35.0
    heard = WhisperTranscriber().transcribe(pcm, RATE)
    assert wer([text], [heard]) <= 0.2, heard


# --------------------------------------------------------------------------- resampling


@pytest.mark.parametrize("rates", [(24000, 16000), (24000, 48000), (22050, 16000), (16000, 16000)])
def test_the_stream_resampler_does_not_care_where_chunks_end(rates: tuple[int, int]) -> None:
    rate_in, rate_out = rates
    pcm = tone(700, rate_in)
    whole = Pcm16Resampler(rate_in, rate_out)
    expected = whole.feed(pcm) + whole.flush()
    rng = random.Random(7)
    pieces = Pcm16Resampler(rate_in, rate_out)
    out, i = b"", 0
    while i < len(pcm):
        n = rng.randint(1, 999)  # odd sizes split samples between chunks
        out += pieces.feed(pcm[i : i + n])
        i += n
    out += pieces.flush()
    assert len(out) == len(expected)  # and the same samples, to the rounding of the last bit
    diff = np.frombuffer(out, "<i2").astype(int) - np.frombuffer(expected, "<i2").astype(int)
    assert np.max(np.abs(diff)) <= 4
    one_shot = soxr.resample(np.frombuffer(pcm, "<i2").astype(np.float32), rate_in, rate_out)
    got = np.frombuffer(out, "<i2").astype(np.float32)
    assert abs(len(got) - len(one_shot)) <= 1
    n = min(len(got), len(one_shot))
    assert np.max(np.abs(got[:n] - one_shot[:n])) < 200, "no clicks at the chunk boundaries"


# --------------------------------------------------------------------------- retries and errors


def test_speech_retries_server_errors_before_the_first_byte() -> None:
    async def main() -> None:
        behaviours = (
            error(503, "overloaded", retry_after="0"),
            error(500, "oops"),
            stream([tone(100), tone(100)]),
        )
        async with (
            FakeServer(*behaviours) as fake,
            speech_client(fake.base_url, source_rate=24000) as client,
        ):
            audio = client.speak("Hi there.", voice="echo", speed=1.5)
            async with audio:
                pcm = b"".join([c async for c in audio])
            assert audio.attempts == 3
        assert pcm == tone(100) + tone(100)  # same rate: untouched
        body = fake.requests[0].json()
        assert body == {
            "model": "tts-1",
            "input": "Hi there.",
            "voice": "echo",
            "response_format": "pcm",
            "speed": 1.5,
        }
        assert fake.requests[0].headers["content-type"] == "application/json"

    asyncio.run(main())


def test_audio_is_resampled_as_it_streams() -> None:
    async def main() -> None:
        chunks = [tone(100)[:999], tone(100)[999:], tone(300)]  # a sample split between chunks
        async with (
            FakeServer(stream(chunks, gap_s=0.01)) as fake,
            speech_client(fake.base_url, source_rate=24000) as client,
            client.speak("Hello.", sample_rate=RATE) as audio,
        ):
            out = [chunk async for chunk in audio]
            assert audio.received == sum(map(len, chunks))
        assert len(out) >= 3 and all(len(c) % 2 == 0 for c in out)
        assert len(b"".join(out)) == 2 * (24000 * 400 // 1000) * RATE // 24000

    asyncio.run(main())


def test_a_connection_dropped_before_the_first_byte_is_retried() -> None:
    async def main() -> None:
        async with (
            FakeServer(stream([], then="drop"), stream([tone(50)])) as fake,
            speech_client(fake.base_url) as client,
        ):
            assert await collect(client) == tone(50)
        assert len(fake.requests) == 2

    asyncio.run(main())


def test_a_client_error_is_raised_at_once_with_the_servers_message() -> None:
    async def main() -> None:
        async with (
            FakeServer(error(400, "voice 'zzz' does not exist")) as fake,
            speech_client(fake.base_url) as client,
        ):
            with pytest.raises(ProviderStatusError) as info:
                await collect(client)
            assert info.value.status == 400
            assert "voice 'zzz' does not exist" in str(info.value)
            assert len(fake.requests) == 1
        async with (
            FakeServer(error(429, "slow down", retry_after="30")) as fake,
            transcription_client(fake.base_url) as asr,
        ):
            with pytest.raises(ProviderStatusError, match="slow down"):
                await asr.transcribe(tone(100, RATE), RATE)
            assert len(fake.requests) == 1, "a Retry-After too long for a voice call"

    asyncio.run(main())


def test_retries_are_bounded() -> None:
    async def main() -> None:
        async with (
            FakeServer(error(502, "bad gateway")) as fake,
            speech_client(fake.base_url) as client,
        ):
            with pytest.raises(ProviderStatusError) as info:
                await collect(client)
            assert info.value.attempts == 3 and len(fake.requests) == 3
            assert "after 3 attempts" in str(info.value)
        async with transcription_client(f"http://127.0.0.1:{closed_port()}/v1") as asr:
            with pytest.raises(ProviderConnectError) as refused:
                await asr.transcribe(tone(100, RATE), RATE)
            assert refused.value.attempts == 3

    asyncio.run(main())


def test_no_first_byte_in_time_is_a_timeout_not_a_retry() -> None:
    async def main() -> None:
        async with FakeServer(stall) as fake:
            # The other limits far away, so that the one that fired is known by its time.
            timeouts = SpeechTimeouts(connect_s=30.0, first_byte_s=0.3, chunk_s=30.0)
            async with speech_client(fake.base_url, timeouts=timeouts) as client:
                started = time.perf_counter()
                with pytest.raises(ProviderTimeout) as info:
                    await collect(client)
                elapsed = time.perf_counter() - started
            assert info.value.phase == "first_byte"
            # Not before the first-byte deadline; and that deadline, not one of the 30 s
            # others (a silent server never ends the wait by itself): the upper bound is
            # a third of those, however loaded the machine.
            assert 0.25 < elapsed < 10.0
            assert len(fake.requests) == 1
            await asyncio.wait_for(fake.requests[0].closed.wait(), 1.0)

    asyncio.run(main())


def test_after_the_first_byte_nothing_is_retried() -> None:
    async def main() -> None:
        timeouts = SpeechTimeouts(connect_s=1.0, first_byte_s=2.0, chunk_s=0.3)
        async with (
            FakeServer(stream([tone(100)], then="stall")) as fake,
            speech_client(fake.base_url, timeouts=timeouts) as client,
        ):
            got: list[bytes] = []
            with pytest.raises(ProviderTimeout) as info:
                async with client.speak("Hi.") as audio:
                    async for chunk in audio:
                        got.append(chunk)  # noqa: PERF401 (kept when the stream raises)
            assert info.value.phase == "next_chunk"
            assert b"".join(got) == tone(100)
            assert len(fake.requests) == 1
        async with (
            FakeServer(stream([tone(100)], then="drop")) as fake,
            speech_client(fake.base_url) as client,
        ):
            got = []
            with pytest.raises(ProviderStreamError, match="broke"):
                async with client.speak("Hi.") as audio:
                    async for chunk in audio:
                        got.append(chunk)
            assert b"".join(got) == tone(100)
            assert len(fake.requests) == 1

    asyncio.run(main())


def test_cancelling_the_consumer_closes_the_connection() -> None:
    async def main() -> None:
        async with (
            FakeServer(stream([tone(50)], then="stall")) as fake,
            speech_client(fake.base_url) as client,
        ):
            first = asyncio.Event()

            async def listen() -> None:
                async with client.speak("A long answer.") as audio:
                    async for _ in audio:
                        first.set()

            async with asyncio.TaskGroup() as tg:
                task = tg.create_task(listen())
                await asyncio.wait_for(first.wait(), 2.0)
                task.cancel()
            assert task.cancelled()
            await asyncio.wait_for(fake.requests[0].closed.wait(), 1.0)
        async with (
            FakeServer(stream([tone(50)], then="stall")) as fake,
            speech_client(fake.base_url) as client,
        ):
            async with client.speak("Enough.") as audio:
                async for _ in audio:
                    break  # leaving the async with closes the stream
            await asyncio.wait_for(fake.requests[0].closed.wait(), 1.0)

    asyncio.run(main())


def test_an_error_that_says_200_is_not_audio() -> None:
    async def main() -> None:
        body = {"error": {"message": "model tts-9 not found", "type": "not_found"}}
        async with FakeServer(respond(200, body)) as fake, speech_client(fake.base_url) as client:
            with pytest.raises(ProviderStreamError, match="model tts-9 not found"):
                await collect(client)
        async with (
            FakeServer(respond(200, b"", ctype="audio/pcm")) as fake,
            speech_client(fake.base_url) as client,
        ):
            assert await collect(client) == b"", "an empty answer is no audio, not an error"

    asyncio.run(main())


# --------------------------------------------------------------------------- transcription


def multipart(seen: Seen) -> dict[str, bytes]:
    boundary = seen.headers["content-type"].split("boundary=")[1].encode()
    parts = {}
    for part in seen.body.split(b"--" + boundary)[1:-1]:
        head, _, value = part.partition(b"\r\n\r\n")
        name = head.split(b'name="')[1].split(b'"')[0].decode()
        parts[name] = value[:-2]  # the CRLF before the next boundary
    return parts


def test_transcription_uploads_a_wav_and_retries_server_errors() -> None:
    async def main() -> None:
        ok = respond(200, {"text": " Hello there. "})
        async with (
            FakeServer(error(503, "busy"), error(408, "slow"), ok) as fake,
            transcription_client(
                fake.base_url, model="whisper-large", language="en", prompt="Paris"
            ) as asr,
        ):
            assert await asr.transcribe(tone(300, 8000), 8000) == "Hello there."
        assert len(fake.requests) == 3
        fields = multipart(fake.requests[-1])
        assert fields["model"] == b"whisper-large"
        assert fields["language"] == b"en" and fields["prompt"] == b"Paris"
        assert fields["response_format"] == b"json"
        with wave.open(io.BytesIO(fields["file"])) as w:
            assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
            assert w.readframes(w.getnframes()) == tone(300, 8000)

    asyncio.run(main())


def test_transcription_answers_it_cannot_read_and_its_deadline() -> None:
    async def main() -> None:
        async with (
            FakeServer(respond(200, b"<html>oops</html>", ctype="text/html")) as fake,
            transcription_client(fake.base_url) as asr,
        ):
            with pytest.raises(ProviderStreamError, match="without a transcript"):
                await asr.transcribe(tone(100, RATE), RATE)
        async with (
            FakeServer(respond(200, b"plain words\n", ctype="text/plain")) as fake,
            transcription_client(fake.base_url) as asr,
        ):
            assert await asr.transcribe(tone(100, RATE), RATE) == "plain words"
        async with FakeServer(stall) as fake:
            timeouts = TranscriptionTimeouts(connect_s=1.0, response_s=0.3)
            async with transcription_client(fake.base_url, timeouts=timeouts) as asr:
                with pytest.raises(ProviderTimeout) as info:
                    await asr.transcribe(tone(100, RATE), RATE)
            assert info.value.phase == "response" and len(fake.requests) == 1
            await asyncio.wait_for(fake.requests[0].closed.wait(), 1.0)

    asyncio.run(main())


# --------------------------------------------------------------------------- the API key


def test_the_api_key_is_sent_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPP_TEST_AUDIO_KEY", KEY)
    echo = error(401, f"Incorrect API key provided: {KEY}. Find yours at example.com.")

    async def main() -> list[str]:
        messages = []
        async with FakeServer(echo) as fake:
            clients = [
                speech_client(fake.base_url, api_key_env="RSPP_TEST_AUDIO_KEY"),
                transcription_client(fake.base_url, api_key_env="RSPP_TEST_AUDIO_KEY"),
            ]
            for client in clients:
                async with client:
                    messages.append(repr(client))
                    with pytest.raises(ProviderStatusError) as info:
                        if isinstance(client, SpeechClient):
                            await collect(client)
                        else:
                            await client.transcribe(tone(100, RATE), RATE)
                    messages += [str(info.value), info.value.message, repr(info.value)]
        assert [r.headers["authorization"] for r in fake.requests] == [f"Bearer {KEY}"] * 2
        return messages

    messages = asyncio.run(main())
    assert all(KEY not in m for m in messages), messages
    assert "Incorrect API key provided: ***" in messages[1]
    assert "RSPP_TEST_AUDIO_KEY" in messages[0] and "'***'" in messages[0]


def test_a_missing_key_variable_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSPP_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ProviderConfigError, match="RSPP_TEST_NO_SUCH_KEY"):
        SpeechClient("http://127.0.0.1:9/v1", api_key_env="RSPP_TEST_NO_SUCH_KEY")
    with pytest.raises(ProviderConfigError, match="RSPP_TEST_NO_SUCH_KEY"):
        TranscriptionClient("http://127.0.0.1:9/v1", api_key_env="RSPP_TEST_NO_SUCH_KEY")
