"""The OpenAI chat client against a real HTTP server that misbehaves on purpose.

Every test scripts :class:`FakeServer` (tests/providers/misbehaving_server.py),
a fake chat server on a real socket, and checks what the client makes of it:
what is retried (only before the first token), what is raised and how fast,
whether the server learns that the client has gone, and that the API key
never leaks. Timeouts are a few tenths of a second so the file runs in seconds.

No test puts a tight upper bound on elapsed time (a loaded machine makes
everything slower): "at once" is checked by what the server saw, by what
else would have ended the wait (the pool's close, a timeout set far away),
or against the much longer wait a wrong behaviour would take. Lower bounds
(we waited at least what was asked) stay: load only makes them truer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rspp.events import Error, Event, Interrupt, LlmDelta, LlmDone, TurnCommit, TurnDone
from rspp.providers.errors import (
    ProviderConfigError,
    ProviderConnectError,
    ProviderStatusError,
    ProviderStreamError,
    ProviderTimeout,
)
from rspp.providers.openai import ChatClient, ChatStream, RetryPolicy, Timeouts
from rspp.testing import RecordingSink
from tests.kernel.helpers import make_pipeline

from .misbehaving_server import Exchange, FakeServer, Script, free_port

TIMEOUTS = Timeouts(connect_s=0.5, first_token_s=0.6, token_s=0.3)
RETRY = RetryPolicy(max_retries=2, backoff_s=0.01, backoff_max_s=0.02, retry_after_max_s=1.0)
MESSAGES = [{"role": "user", "content": "hello"}]
KEY = "sk-test-7c1f0e9b5a2d4c3e8f6a"


def client(url: str, **kwargs: Any) -> ChatClient:
    kwargs.setdefault("timeouts", TIMEOUTS)
    kwargs.setdefault("retry", RETRY)
    return ChatClient(url, model="fake-model", **kwargs)


async def read(stream: ChatStream, into: list[str] | None = None) -> list[str]:
    """Every delta of ``stream`` (appended to ``into`` as they come, if given)."""
    texts = into if into is not None else []
    async with stream:
        async for text in stream:
            texts.append(text)
    return texts


async def until(predicate: Callable[[], bool], timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


def serve(*scripts: Script) -> Callable[[Callable[[FakeServer], Awaitable[None]]], None]:
    """Decorator: run ``test(server)`` at once, in a new event loop, with a fake server
    playing ``scripts``. (The decorated name is left None.)"""

    def runner(test: Callable[[FakeServer], Awaitable[None]]) -> None:
        async def main() -> None:
            async with FakeServer(*scripts) as server:
                await test(server)

        asyncio.run(main())

    return runner


def chunks_of(*texts: str, reason: str = "stop") -> Script:
    async def script(ex: Exchange) -> None:
        await ex.reply(*texts, reason=reason)

    return script


def status(code: int, body: Any, headers: dict[str, str] | None = None) -> Script:
    async def script(ex: Exchange) -> None:
        await ex.json(code, body, headers)

    return script


def openai_error(message: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": None}}


# -- the happy path -------------------------------------------------------------------------


def test_a_reply_streams_deltas_then_its_finish_reason_and_usage() -> None:
    usage = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}

    async def script(ex: Exchange) -> None:
        await ex.start()
        await ex.event({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
        for text in ("Hel", "lo", " there"):
            await ex.delta(text)
        await ex.finish("stop", usage=usage)
        await ex.done()

    @serve(script)
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES, max_tokens=20, temperature=0.5, stop=["\n"])
            assert await read(stream) == ["Hel", "lo", " there"]
            assert stream.finish_reason == "stop"
            assert stream.usage == usage
            assert (stream.attempts, stream.malformed) == (1, 0)
            # A finished reply leaves its connection to the pool: the next one reuses it.
            assert await read(chat.stream(MESSAGES)) == ["Hel", "lo", " there"]
        (first, second) = server.requests
        assert first.method == "POST" and first.path == "/v1/chat/completions"
        assert first.headers["accept"] == "text/event-stream"
        assert "authorization" not in first.headers
        assert first.json() == {
            "model": "fake-model",
            "messages": MESSAGES,
            "max_tokens": 20,
            "temperature": 0.5,
            "stop": ["\n"],
            "stream": True,
        }
        assert second.connection == first.connection == 0


def test_text_with_unicode_line_separators_arrives_whole() -> None:
    # Raw UTF-8 JSON (as vLLM writes it) may carry U+2028, U+2029 and U+0085 unescaped.
    texts = ["a\u2028b", "c\x85d", "e\u2029f"]

    @serve(chunks_of(*texts))
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES)
            assert await read(stream) == texts
            assert stream.malformed == 0


# -- retries before the first token ---------------------------------------------------------


def test_a_503_is_retried_and_the_retry_answers() -> None:
    @serve(status(503, openai_error("overloaded", "server_error")), chunks_of("fine"))
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES)
            assert await read(stream) == ["fine"]
            assert stream.attempts == 2
        assert len(server.requests) == 2


@pytest.mark.parametrize("header", [{"retry-after": "0.3"}, {"retry-after-ms": "300"}])
def test_a_429_waits_what_retry_after_asks(header: dict[str, str]) -> None:
    answered: list[float] = []  # loop times: the 429 sent, the retry received

    async def slow_down(ex: Exchange) -> None:
        await ex.json(429, openai_error("slow down"), header)
        answered.append(asyncio.get_running_loop().time())

    async def ok(ex: Exchange) -> None:
        answered.append(asyncio.get_running_loop().time())
        await ex.reply("ok")

    @serve(slow_down, ok)
    async def test(server: FakeServer) -> None:
        async with client(server.url, timeouts=Timeouts(first_token_s=10.0)) as chat:
            stream = chat.stream(MESSAGES)
            assert await read(stream) == ["ok"]
            assert stream.attempts == 2
        # The server saw the retry no sooner than it asked (not after the 10-20 ms
        # backoff). No upper bound: a header misread as a longer wait (retry-after-ms
        # taken as seconds: 300 s) is over retry_after_max_s (1 s) and is raised, not
        # retried.
        sent, retried = answered
        assert retried - sent >= 0.3


def test_a_429_asking_for_too_long_a_wait_is_raised_at_once() -> None:
    @serve(status(429, openai_error("quota"), {"retry-after": "5"}), chunks_of("never"))
    async def test(server: FakeServer) -> None:
        async with client(server.url, timeouts=Timeouts(first_token_s=10.0)) as chat:
            started = time.perf_counter()
            with pytest.raises(ProviderStatusError) as caught:
                await read(chat.stream(MESSAGES))
            # Not retried, and not after waiting: honouring the 5 s asked for would take
            # at least 5 s; raising at once takes milliseconds, even on a loaded machine.
            assert time.perf_counter() - started < 2.5
        assert caught.value.status == 429
        assert caught.value.retry_after_s == 5.0
        assert caught.value.attempts == 1
        assert len(server.requests) == 1


def test_a_400_is_raised_at_once_with_the_servers_message() -> None:
    error = openai_error("max_tokens is too large: 99999")

    @serve(status(400, error), chunks_of("never"))
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            with pytest.raises(ProviderStatusError) as caught:
                await read(chat.stream(MESSAGES))
        assert caught.value.status == 400
        assert "max_tokens is too large: 99999" in str(caught.value)
        assert "invalid_request_error" in str(caught.value)
        assert len(server.requests) == 1


def test_a_refused_connection_is_retried_then_raised() -> None:
    async def main() -> None:
        async with client(f"http://127.0.0.1:{free_port()}/v1") as chat:
            stream = chat.stream(MESSAGES)
            with pytest.raises(ProviderConnectError) as caught:
                await read(stream)
        assert caught.value.attempts == stream.attempts == 3
        assert "after 3 attempts" in str(caught.value)

    asyncio.run(main())


async def _drop_at_once(ex: Exchange) -> None:
    ex.drop()


async def _drop_after_head(ex: Exchange) -> None:
    await ex.start()
    await ex.line(": ping")
    ex.drop()


@pytest.mark.parametrize("drop", [_drop_at_once, _drop_after_head], ids=["no-head", "after-head"])
def test_a_connection_dropped_before_any_token_is_retried(drop: Script) -> None:
    @serve(drop, chunks_of("second", " try"))
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES)
            assert await read(stream) == ["second", " try"]
            assert stream.attempts == 2
        assert len(server.requests) == 2


# -- timeouts -------------------------------------------------------------------------------


async def _hang(ex: Exchange) -> None:
    await ex.hang()


def test_a_server_silent_from_the_start_times_out_at_the_first_token_deadline() -> None:
    @serve(_hang)
    async def test(server: FakeServer) -> None:
        async with client(server.url, timeouts=Timeouts(first_token_s=0.4)) as chat:
            started = time.perf_counter()
            with pytest.raises(ProviderTimeout) as caught:
                await read(chat.stream(MESSAGES))
            waited = time.perf_counter() - started
            # The client hung up (the server may stop) while the pool is still open: it
            # was the timed-out stream that closed the connection, not the pool's close.
            async with asyncio.timeout(5.0):
                await server.hangup.wait()
        assert caught.value.phase == "first_token"
        assert caught.value.timeout_s == 0.4
        # Not before the deadline; and its deadline, not another one: the other limits
        # this client would fall back to are 5 s (connect_s) and 15 s (the default
        # first_token_s), and a silent server never ends the wait by itself.
        assert 0.4 <= waited < 4.0
        assert len(server.requests) == 1  # a timeout is not retried


def test_keep_alive_comments_are_not_a_first_token() -> None:
    async def pings(ex: Exchange) -> None:
        """Keep-alive comments every 20 ms, and nothing else, until the client hangs up."""
        await ex.start()
        hung_up = asyncio.ensure_future(ex.hang())
        try:
            while not hung_up.done():
                with contextlib.suppress(ConnectionError):
                    await ex.line(": keep-alive")
                    await ex.line("")
                await asyncio.wait([hung_up], timeout=0.02)
        finally:
            hung_up.cancel()

    @serve(pings)
    async def test(server: FakeServer) -> None:
        async with client(server.url, timeouts=Timeouts(first_token_s=0.3)) as chat:
            started = time.perf_counter()
            stream = chat.stream(MESSAGES)
            # The server pings for as long as the client listens: only the first-token
            # deadline can end this read (the guard is for a client that lets pings hold
            # it off, which would wait for ever).
            async with asyncio.timeout(10.0):
                with pytest.raises(ProviderTimeout) as caught:
                    await read(stream)
            assert time.perf_counter() - started >= 0.3
            async with asyncio.timeout(5.0):
                await server.hangup.wait()
        assert caught.value.phase == "first_token"
        assert stream.malformed == 0
        assert len(server.requests) == 1


def test_a_stall_in_the_middle_of_a_reply_times_out_between_tokens() -> None:
    async def stall(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("one")
        await ex.delta(" two")
        await ex.hang()

    @serve(stall)
    async def test(server: FakeServer) -> None:
        got: list[str] = []
        async with client(server.url, timeouts=Timeouts(first_token_s=1.0, token_s=0.3)) as chat:
            with pytest.raises(ProviderTimeout) as caught:
                await read(chat.stream(MESSAGES), got)
            # The server learns while the pool is still open: the timed-out stream closed
            # its connection (without that, only the pool's close would hang up).
            async with asyncio.timeout(5.0):
                await server.hangup.wait()
        assert got == ["one", " two"]
        assert caught.value.phase == "next_token"
        assert caught.value.timeout_s == 0.3
        assert len(server.hangups) == 1
        assert len(server.requests) == 1


def test_keep_alive_comments_do_not_hold_off_the_token_timeout() -> None:
    async def pings(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("first")
        for _ in range(40):
            await ex.line(": ping")
            await asyncio.sleep(0.02)

    @serve(pings)
    async def test(server: FakeServer) -> None:
        got: list[str] = []
        async with client(server.url, timeouts=Timeouts(token_s=0.25)) as chat:
            with pytest.raises(ProviderTimeout) as caught:
                await read(chat.stream(MESSAGES), got)
        assert got == ["first"]
        assert caught.value.phase == "next_token"


def test_keep_alive_comments_between_tokens_are_harmless() -> None:
    async def pings(ex: Exchange) -> None:
        await ex.start()
        await ex.line(": ping")
        await ex.line("")
        for text in ("a", "b", "c"):
            await ex.delta(text)
            await ex.line(": ping")
            await ex.line("")
        await ex.finish()
        await ex.done()

    @serve(pings)
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES)
            assert await read(stream) == ["a", "b", "c"]
            assert (stream.finish_reason, stream.malformed) == ("stop", 0)


# -- broken streams after the first token: never retried ------------------------------------


def test_a_connection_dropped_after_some_tokens_is_a_stream_error_not_a_retry() -> None:
    async def drop(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("Sure,")
        await ex.delta(" here")
        ex.drop()

    @serve(drop, chunks_of("a", " second", " reply"))
    async def test(server: FakeServer) -> None:
        got: list[str] = []
        async with client(server.url) as chat:
            with pytest.raises(ProviderStreamError) as caught:
                await read(chat.stream(MESSAGES), got)
        assert got == ["Sure,", " here"]
        assert caught.value.attempts == 1
        assert len(server.requests) == 1  # the reply was not asked for twice


def test_an_error_object_in_the_stream_is_raised_with_the_servers_message() -> None:
    async def error(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("Once upon")
        await ex.event(openai_error("the model crashed", "server_error"))
        await ex.done()

    @serve(error)
    async def test(server: FakeServer) -> None:
        got: list[str] = []
        async with client(server.url) as chat:
            with pytest.raises(ProviderStreamError, match="the model crashed"):
                await read(chat.stream(MESSAGES), got)
        assert got == ["Once upon"]
        assert len(server.requests) == 1


def test_an_error_event_with_plain_text_is_raised_too() -> None:
    async def error(ex: Exchange) -> None:
        await ex.start()
        await ex.event("upstream went away", name="error")
        await ex.done()

    @serve(error)
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            with pytest.raises(ProviderStreamError, match="upstream went away"):
                await read(chat.stream(MESSAGES))


def test_a_stream_may_end_without_done_after_a_finish_reason() -> None:
    async def no_done(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("short")
        await ex.finish("length")
        await ex.end()

    @serve(no_done)
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES)
            assert await read(stream) == ["short"]
            assert stream.finish_reason == "length"


def test_a_body_held_open_after_done_delays_the_end_only_briefly() -> None:
    async def held(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("bye")
        await ex.finish()
        await ex.event("[DONE]")
        await ex.hang()  # the body never ends

    @serve(held)
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            started = time.perf_counter()
            stream = chat.stream(MESSAGES)
            assert await read(stream) == ["bye"]
            # The body never ends: a client that waited for its end would never finish.
            # This one gives up after the drain allowance (0.5 s); 5 s is ten times that.
            assert time.perf_counter() - started < 5.0
            async with asyncio.timeout(5.0):
                await server.hangup.wait()  # an unfinished body: the connection is not reused


def test_a_stream_that_ends_without_done_or_finish_reason_is_broken() -> None:
    async def cut(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("half a")
        await ex.end()

    @serve(cut)
    async def test(server: FakeServer) -> None:
        got: list[str] = []
        async with client(server.url) as chat:
            with pytest.raises(ProviderStreamError, match="ended before the reply was complete"):
                await read(chat.stream(MESSAGES), got)
        assert got == ["half a"]
        assert len(server.requests) == 1


def test_a_last_event_without_its_blank_line_still_counts() -> None:
    async def unterminated(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("almost")
        await ex.raw(b'data: {"choices": [{"delta": {"content": "!"}, "finish_reason": "stop"}]}')
        await ex.end()

    @serve(unterminated)
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES)
            assert await read(stream) == ["almost", "!"]
            assert stream.finish_reason == "stop"


# -- malformed input: skipped and counted ---------------------------------------------------


def test_garbage_lines_and_malformed_chunks_are_skipped_and_counted() -> None:
    async def garbage(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("Hello")
        await ex.line("this is not sse")  # an unknown field
        await ex.line("")
        await ex.event('{"choices": [{"delta": {"content": "lost')  # cut JSON
        await ex.event('{"choices": "not a list"}')  # valid JSON, wrong shape
        await ex.event("<html>502 Bad Gateway</html>")
        await ex.delta(" world")
        await ex.finish()
        await ex.done()

    @serve(garbage)
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            stream = chat.stream(MESSAGES)
            assert "".join(await read(stream)) == "Hello world"
            assert stream.malformed == 4
            assert stream.finish_reason == "stop"


# -- cancellation: the server learns at once ------------------------------------------------


def test_cancelling_the_reader_hangs_up_on_the_server_at_once() -> None:
    async def endless(ex: Exchange) -> None:
        await ex.start()
        await ex.trickle(0.02)

    @serve(endless)
    async def test(server: FakeServer) -> None:
        got: list[str] = []
        # Timeouts far away: the server trickles for ever, so nothing but the cancel (or,
        # too late, the pool's close) can end this stream.
        timeouts = Timeouts(first_token_s=60.0, token_s=60.0)
        async with client(server.url, timeouts=timeouts) as chat:
            task = asyncio.create_task(read(chat.stream(MESSAGES), got))
            await until(lambda: len(got) >= 3)
            cancelled = time.perf_counter()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            async with asyncio.timeout(10.0):
                await server.hangup.wait()  # while the pool is open: the cancel hung up
            # And soon: anything that waited for a timeout would take a minute.
            assert time.perf_counter() - cancelled < 10.0
        assert len(server.requests) == 1


def test_closing_the_stream_early_hangs_up_on_the_server() -> None:
    async def endless(ex: Exchange) -> None:
        await ex.start()
        await ex.trickle(0.02)

    @serve(endless, chunks_of("next", " reply"))
    async def test(server: FakeServer) -> None:
        async with client(server.url) as chat:
            async with chat.stream(MESSAGES) as stream:
                async for text in stream:
                    assert text == "la "
                    break
            async with asyncio.timeout(5.0):
                await server.hangup.wait()  # while the pool is open: the close hung up
            # The pool is still usable: a new connection serves the next reply.
            assert await read(chat.stream(MESSAGES)) == ["next", " reply"]
        assert server.connections == 2


def test_cancelling_before_the_first_token_hangs_up_too() -> None:
    @serve(_hang)
    async def test(server: FakeServer) -> None:
        async with client(server.url, timeouts=Timeouts(first_token_s=60.0)) as chat:
            task = asyncio.create_task(read(chat.stream(MESSAGES)))
            await until(lambda: bool(server.requests))
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # Well before the stream's own deadline (60 s) could have fired, and while the
            # pool is open: the cancel itself hung up.
            async with asyncio.timeout(10.0):
                await server.hangup.wait()


# -- the API key ----------------------------------------------------------------------------


def _assert_no_key(*texts: str) -> None:
    for text in texts:
        assert KEY not in text


def _exc_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)) + repr(exc)


def test_the_api_key_is_sent_and_never_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("RSPP_TEST_OPENAI_KEY", KEY)
    caplog.set_level(logging.DEBUG)
    echo = f"Incorrect API key provided: {KEY}"

    async def garbage_then_error(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("Hi")
        await ex.event(f"not json, but the key: {KEY}")  # skipped, and logged at DEBUG
        await ex.event({"error": {"message": echo, "type": "server_error"}})
        await ex.done()

    @serve(
        status(503, openai_error(echo, "server_error")),  # retried, and logged as a warning
        garbage_then_error,
        status(401, openai_error(echo)),
        status(400, {"detail": echo}),
        status(500, f"plain text {KEY}"),
    )
    async def test(server: FakeServer) -> None:
        async with client(server.url, api_key_env="RSPP_TEST_OPENAI_KEY") as chat:
            stream = chat.stream(MESSAGES)
            _assert_no_key(repr(chat), str(chat), repr(stream), repr(chat._http.headers))
            with pytest.raises(ProviderStreamError) as streamed:
                await read(stream)
            assert stream.malformed == 1
            errors: list[BaseException] = [streamed.value]
            for _ in range(3):
                with pytest.raises(ProviderStatusError) as caught:
                    await read(chat.stream(MESSAGES, max_tokens=1))
                errors.append(caught.value)
        assert [getattr(e, "status", None) for e in errors] == [None, 401, 400, 500]
        for exc in errors:
            assert "Incorrect API key provided: ***" in str(exc) or "plain text ***" in str(exc)
            _assert_no_key(_exc_text(exc))
        assert all(r.headers["authorization"] == f"Bearer {KEY}" for r in server.requests)
        assert len(server.requests) == 7  # 503, the stream, 401, 400, 500 three times
        assert any("skipped a malformed SSE event" in r.getMessage() for r in caplog.records)
        assert any("retry 1 of 2" in r.getMessage() for r in caplog.records)
        for record in caplog.records:
            _assert_no_key(record.getMessage())
            if record.exc_info and record.exc_info[1] is not None:
                _assert_no_key(_exc_text(record.exc_info[1]))


def test_a_missing_api_key_variable_is_a_config_error_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RSPP_TEST_NO_SUCH_KEY", raising=False)
    with pytest.raises(ProviderConfigError, match="RSPP_TEST_NO_SUCH_KEY"):
        ChatClient("http://127.0.0.1:9/v1", api_key_env="RSPP_TEST_NO_SUCH_KEY")


# -- the openai_llm node in a session -------------------------------------------------------


def llm_config(url: str, **config: Any) -> dict[str, Any]:
    return {
        "base_url": url,
        "model": "fake-model",
        "system": "Be brief.",
        "max_tokens": 50,
        "first_token_timeout_ms": 600,
        "token_timeout_ms": 300,
        "retry_backoff_ms": 10,
        **config,
    }


def llm_pipeline(url: str, **config: Any) -> Any:
    """openai_llm -> collect."""
    return make_pipeline(
        [
            {
                "name": "llm",
                "type": "openai_llm",
                "inputs": ["input"],
                "config": llm_config(url, **config),
            },
            {"name": "sink", "type": "collect", "inputs": ["llm"]},
        ],
        inputs=("turn.commit",),
    )


def played_pipeline(url: str) -> Any:
    """openai_llm -> collect, and -> fake TTS -> audio output: a reply is heard once played."""
    return make_pipeline(
        [
            {"name": "llm", "type": "openai_llm", "inputs": ["input"], "config": llm_config(url)},
            {"name": "sink", "type": "collect", "inputs": ["llm"]},
            {
                "name": "tts",
                "type": "fake_tts",
                "inputs": ["llm"],
                "config": {"ttfa_ms": 0, "rtf": 0, "ms_per_char": 2},
            },
            {
                "name": "output",
                "type": "audio_output",
                "inputs": ["tts"],
                "sink": "client",
                "config": {"lead_ms": 5000},
            },
        ],
        inputs=("turn.commit",),
    )


def _dones(seen: list[Event]) -> list[LlmDone]:
    return [e for e in seen if isinstance(e, LlmDone)]


def test_the_node_sends_the_conversation_as_heard_and_streams_the_reply() -> None:
    @serve(chunks_of("Hi", " there."), chunks_of("Fine,", " thanks."))
    async def test(server: FakeServer) -> None:
        pipeline = played_pipeline(server.url)
        errors: list[Event] = []
        client_sink = RecordingSink()
        async with pipeline.session(sinks={"client": client_sink}) as session:
            session.observe(lambda e: errors.append(e) if isinstance(e, Error) else None)
            seen: list[Event] = session.node("sink").seen
            for n, text in enumerate(("hello", "how are you"), start=1):
                session.push(TurnCommit(text=text))
                await until(
                    lambda n=n: sum(isinstance(e, TurnDone) for e in client_sink.events) == n  # type: ignore[misc]
                )
        assert [e.text for e in seen if isinstance(e, LlmDelta)] == [
            "Hi",
            " there.",
            "Fine,",
            " thanks.",
        ]
        assert [d.finish_reason for d in _dones(seen)] == ["stop", "stop"]
        assert errors == []
        first, second = (r.json() for r in server.requests)
        assert first["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ]
        assert second["messages"] == [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "Hi there."},
            {"role": "user", "content": "how are you"},
        ]
        assert (second["model"], second["max_tokens"], second["stream"]) == ("fake-model", 50, True)


def test_a_provider_failure_ends_the_reply_and_is_reported_not_a_crash() -> None:
    async def broken(ex: Exchange) -> None:
        await ex.start()
        await ex.delta("I was say")
        ex.drop()

    @serve(broken, status(400, openai_error("bad request")), chunks_of("Back", " again."))
    async def test(server: FakeServer) -> None:
        errors: list[Error] = []
        async with llm_pipeline(server.url).session() as session:
            session.observe(lambda e: errors.append(e) if isinstance(e, Error) else None)
            seen: list[Event] = session.node("sink").seen
            for n, text in enumerate(("one", "two", "three"), start=1):
                session.push(TurnCommit(text=text))
                await until(lambda n=n: len(_dones(seen)) == n)  # type: ignore[misc]
            await until(lambda: len(errors) == 2)
        assert [d.finish_reason for d in _dones(seen)] == ["error", "error", "stop"]
        assert [e.text for e in seen if isinstance(e, LlmDelta)] == ["I was say", "Back", " again."]
        assert [(e.source, e.code) for e in errors] == [
            ("llm", "ProviderStreamError"),
            ("llm", "ProviderStatusError"),
        ]
        assert "bad request" in errors[1].message
        assert len(server.requests) == 3  # nothing retried after output started


def test_a_barge_in_stops_the_reply_and_hangs_up_on_the_server() -> None:
    async def endless(ex: Exchange) -> None:
        await ex.start()
        await ex.trickle(0.02)

    @serve(endless)
    async def test(server: FakeServer) -> None:
        async with llm_pipeline(server.url).session() as session:
            seen: list[Event] = session.node("sink").seen
            session.push(TurnCommit(text="talk forever"))
            await until(lambda: len(seen) >= 3)
            session.push(Interrupt())
            # The stream never ends by itself (tokens every 20 ms): only the barge-in's
            # cancel, or the session's end, can hang up; this is before the end.
            async with asyncio.timeout(5.0):
                await server.hangup.wait()
            count = len(seen)
            await asyncio.sleep(0.1)
            assert len(seen) == count  # nothing more of the interrupted reply


def test_a_missing_api_key_fails_the_session_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSPP_TEST_NO_SUCH_KEY", raising=False)
    pipeline = llm_pipeline("http://127.0.0.1:9/v1", api_key_env="RSPP_TEST_NO_SUCH_KEY")

    async def main() -> None:
        with pytest.raises(ProviderConfigError, match="RSPP_TEST_NO_SUCH_KEY"):
            async with pipeline.session():
                pass

    asyncio.run(main())
