"""The Python client against a real server: a real uvicorn on a loopback port.

The server runs the fake demo pipeline (a real energy VAD and turn manager,
scripted ASR/LLM/TTS), so what is checked is the whole path: the client's
audio reaches the VAD, the reply comes back as paced audio frames, the
client's playout plays it and reports it, and the kernel's record of what the
user heard follows those reports. Checks are causal (what came before what,
what is a prefix of what), never wall-clock bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import wave
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest
import websockets

from rspp.client import Call, Caller, CallRefused, Disconnected, Line, Notice, call_url
from rspp.demo import DemoLine, demo_pipeline
from rspp.kernel import build
from rspp.testing.audio import silence, speech_like, wav_bytes
from rspp.testing.server import serving
from rspp.transports.auth import Auth
from rspp.transports.call import calls as call_registry
from rspp.transports.call.client import BotAudio, Cleared, Played, Received, ReplyEnded
from rspp.transports.call.endpoint import EndpointConfig
from rspp.transports.call.wire import AudioFormat
from rspp.transports.port import LocalHost
from rspp.transports.server import ServerConfig, create_app, with_lead

TOKEN = "t"
FMT = AudioFormat(sample_rate=16000)
HELLO = DemoLine("Hello there, how are you?", "Fine, thanks.")
WEATHER = DemoLine(
    "Tell me about the weather.",
    "Tomorrow it will be mild and mostly cloudy, around fourteen degrees, with a chance "
    "of light rain in the late afternoon, so take an umbrella with you when you go out.",
)
STOP = DemoLine("Stop, what about London?", "Showers in London.", barge_in_after_ms=600.0)
TYPED = DemoLine("What time is it?", "It is noon.")
FORECAST = DemoLine(
    "What about tomorrow?", "Tomorrow will be mild and cloudy, with some light rain late."
)


def run(coro: Awaitable[None], timeout_s: float = 20.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout_s))  # type: ignore[arg-type]


def app_for(script: list[DemoLine], *, lead_ms: float = 0.0) -> Any:
    pipeline = demo_pipeline(script)
    if lead_ms:
        pipeline = build(with_lead(pipeline.spec, lead_ms))
    config = ServerConfig(endpoint=EndpointConfig(lead_ms=lead_ms))
    return create_app(LocalHost({"demo": pipeline}), auth=Auth(static_token=TOKEN), config=config)


@asynccontextmanager
async def server(script: list[DemoLine], *, lead_ms: float = 0.0) -> AsyncIterator[tuple[str, Any]]:
    app = app_for(script, lead_ms=lead_ms)
    async with serving(app) as address:
        yield f"ws://{address}/v1/call", app


def line(demo: DemoLine, ms: float = 900.0, seed: int = 0) -> Line:
    return Line(demo.user, speech_like(ms, 16000, seed=seed), demo.barge_in_after_ms)


def session_of(app: Any, call: Call) -> Any:
    return app.state.registry.calls[call.session].port.session


# -- a spoken turn ---------------------------------------------------------------------


def test_a_spoken_turn_is_answered_and_played_and_its_playback_reported() -> None:
    async def main() -> None:
        async with (
            server([HELLO]) as (url, app),
            Call.connect(url, token=TOKEN, input=FMT, output=AudioFormat(24000)) as call,
        ):
            await Caller(call, [line(HELLO)]).play()
            (turn,) = call.record.replies
            assert turn.user == HELLO.user and turn.reply == HELLO.reply
            assert turn.heard.strip() == HELLO.reply and not turn.interrupted
            assert turn.played_ms == pytest.approx(turn.received_ms)
            assert turn.latency_ms is not None and turn.latency_ms > 0
            assert "v2v_ms" in turn.server
            assert len(call.record.bot_audio()) >= turn.played_ms * 48  # 24 kHz PCM16
            # The kernel's record of the reply comes from the client's reports.
            assert session_of(app, call).ledger.record(turn.turn).played

    run(main())


def test_a_reply_played_out_reaches_the_client_whole_when_resampled() -> None:
    async def main() -> None:
        async with (
            server([TYPED]) as (url, _),
            Call.connect(url, token=TOKEN, output=AudioFormat(24000)) as call,
        ):
            notices: list[Notice] = []
            call.on(notices.append)
            await call.send_text(TYPED.user)
            await call.wait_for(lambda: call.record.replies_ended >= 1, 10.0)
            (done,) = [
                n.event for n in notices if isinstance(n, Received) and n.event.kind == "turn.done"
            ]
            (turn,) = call.record.replies
            assert turn.received_ms >= done.delivered_ms - 1.0  # type: ignore[attr-defined]

    run(main())


def test_typed_text_is_answered() -> None:
    async def main() -> None:
        async with server([TYPED]) as (url, _), Call.connect(url, token=TOKEN) as call:
            notices = aiter(call)  # what happens from now on
            await call.send_text(TYPED.user)
            kinds = []
            async for notice in notices:
                if isinstance(notice, Received):
                    kinds.append(notice.event.kind)
                if isinstance(notice, ReplyEnded):
                    break
            assert kinds.index("turn.commit") < kinds.index("llm.delta") < kinds.index("turn.done")
            (turn,) = call.record.replies
            assert turn.user == TYPED.user and turn.heard.strip() == TYPED.reply
            assert turn.latency_ms is not None and turn.latency_ms > 0

    run(main())


# -- barge-in --------------------------------------------------------------------------


def test_a_barge_in_clears_the_reply_and_the_kernel_keeps_what_was_played() -> None:
    """A second of lead: at the barge-in the client holds about a second it never plays.

    What the kernel records as heard (and so what the LLM will see) is what the
    client played -- not the words of every frame it was sent.
    """

    async def main() -> None:
        notices: list[Notice] = []
        async with (
            server([WEATHER, STOP], lead_ms=1000.0) as (url, app),
            Call.connect(url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            call.on(notices.append)
            await Caller(call, [line(WEATHER, seed=1), line(STOP, seed=2)]).play()
            cut, answer = call.record.replies
            assert cut.interrupted and not answer.interrupted
            assert answer.user == STOP.user and answer.heard.strip() == STOP.reply
            clears = [
                i
                for i, n in enumerate(notices)
                if isinstance(n, Received) and n.event.kind == "control.clear_buffer"
            ]
            assert clears and notices[clears[0]].event.turn >= cut.turn  # type: ignore[union-attr]
            after = notices[clears[0] :]
            assert not any(isinstance(n, Played) and n.turn == cut.turn for n in after)
            assert any(isinstance(n, Cleared) and n.dropped_ms > 0 for n in after)
            assert call.protocol.playout.held_ms(cut.turn) == 0.0
            # The kernel's cut follows the client's reports.
            (interrupted,) = [
                n.event
                for n in notices
                if isinstance(n, Received) and n.event.kind == "turn.interrupted"
            ]
            assert interrupted.delivered_ms <= cut.played_ms + 1.0  # type: ignore[attr-defined]
            assert interrupted.delivered_ms < cut.received_ms  # type: ignore[attr-defined]
            history = session_of(app, call).conversation.history()
            (said,) = [m for m in history if m.role == "assistant" and m.turn == cut.turn]
            assert said.interrupted
            heard_words, said_words = cut.heard.split(), said.text.split()
            assert said_words == heard_words[: len(said_words)]  # no more than was played
            assert len(said_words) < len(cut.sent_text.split())  # less than was sent

    run(main())


def test_the_client_can_stop_the_bot() -> None:
    async def main() -> None:
        async with server([FORECAST]) as (url, _), Call.connect(url, token=TOKEN) as call:
            record = call.record
            await call.send_text(FORECAST.user)
            await call.wait_for(lambda: len(record.reply_starts) >= 1, 10.0)
            await call.interrupt()
            await call.wait_for(lambda: record.replies_ended >= 1, 10.0)
            (turn,) = record.replies
            assert turn.interrupted and turn.played_ms > 0
            assert turn.heard.strip() != FORECAST.reply
            assert call.protocol.playout.held_ms() == 0.0

    run(main())


# -- authentication --------------------------------------------------------------------


@pytest.mark.parametrize("token", ["", "wrong"])
def test_no_valid_token_no_call(token: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RSPP_TOKEN", raising=False)

    async def main() -> None:
        async with server([HELLO]) as (url, _):
            with pytest.raises(CallRefused) as refused:
                async with Call.connect(url, token=token):
                    pass
            assert refused.value.code == 4401

    run(main())


# -- reconnecting ----------------------------------------------------------------------


def test_a_dropped_call_resumes_without_duplicates_and_goes_on() -> None:
    async def main() -> None:
        received: list[tuple[int, int]] = []
        notices: list[Notice] = []

        def seen(notice: Notice) -> None:
            notices.append(notice)
            if isinstance(notice, BotAudio):
                received.append((notice.frame.inc, notice.frame.pos))

        async with (
            server([FORECAST, TYPED]) as (url, app),
            Call.connect(url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            call.on(seen)
            session = call.session
            await call.send_text(FORECAST.user)
            await call.wait_for(lambda: len(received) >= 20, 10.0)
            ws = call.websocket
            assert ws is not None
            ws.transport.abort()  # the network goes away mid-reply
            await call.wait_for(lambda: not call.connected, 5.0)
            assert isinstance(notices[-1], Disconnected) and not notices[-1].ended
            await asyncio.sleep(0.3)  # the reply goes on meanwhile, held for us
            await call.reconnect()
            assert call.session == session and call.protocol.ready is not None
            assert call.protocol.ready.resumed
            # Reconnect once more, claiming an older position than we have: the
            # server resends frames we already got, and none is delivered twice.
            await call.wait_for(lambda: len(received) >= 30, 10.0)
            protocol = call.protocol
            hello = protocol.hello

            def stale_hello() -> None:
                real = protocol.last_pos
                assert real is not None
                protocol.last_pos = (real[0], real[1] - 10)
                hello()
                protocol.last_pos = real

            protocol.hello = stale_hello  # type: ignore[method-assign]
            await call.reconnect()
            protocol.hello = hello  # type: ignore[method-assign]
            await call.wait_for(lambda: call.record.replies_ended >= 1, 15.0)
            assert call.protocol.duplicates > 0
            assert received == sorted(set(received))
            (forecast,) = call.record.replies
            assert not forecast.interrupted and forecast.heard.strip() == FORECAST.reply
            # The conversation continues on the resumed connection.
            await call.send_text(TYPED.user)
            await call.wait_for(lambda: call.record.replies_ended >= 2, 10.0)
            assert call.record.replies[-1].heard.strip() == TYPED.reply
            assert call.record.resumes == 2
            assert app.state.registry.calls[session].port.session_id == session

    run(main(), 30.0)


def test_a_client_that_reconnects_by_itself_hears_the_reply_whole_once() -> None:
    async def main() -> None:
        received: list[tuple[int, int]] = []

        def seen(notice: Notice) -> None:
            if isinstance(notice, BotAudio):
                received.append((notice.frame.inc, notice.frame.pos))

        async with (
            server([FORECAST, TYPED]) as (url, _),
            Call.connect(
                url,
                token=TOKEN,
                input=FMT,
                output=FMT,
                reconnect_attempts=3,
                reconnect_backoff_s=0.05,
            ) as call,
        ):
            call.on(seen)
            await call.send_text(FORECAST.user)
            await call.wait_for(lambda: len(received) >= 20, 10.0)
            ws = call.websocket
            assert ws is not None
            ws.transport.abort()  # the network goes away mid-reply; nobody calls reconnect()
            await call.wait_for(lambda: call.reconnects == 1 and call.connected, 5.0)
            await call.wait_for(lambda: call.record.replies_ended >= 1, 15.0)
            (forecast,) = call.record.replies
            assert not forecast.interrupted and forecast.heard.strip() == FORECAST.reply
            assert received == sorted(set(received))  # nothing twice
            await call.send_text(TYPED.user)
            await call.wait_for(lambda: call.record.replies_ended >= 2, 10.0)
            assert call.record.replies[-1].heard.strip() == TYPED.reply

    run(main(), 30.0)


def test_a_client_taken_over_by_another_connection_does_not_fight_back() -> None:
    async def main() -> None:
        async with (
            server([HELLO]) as (url, _),
            Call.connect(url, token=TOKEN, reconnect_attempts=3, reconnect_backoff_s=0.05) as call,
        ):
            ready = call.protocol.ready
            assert ready is not None
            hello = {"kind": "call.hello", "protocol": 1, "resume": ready.resume_token}
            async with websockets.connect(url) as other:  # the same call, from elsewhere
                await other.send(json.dumps(hello))
                assert json.loads(await other.recv())["kind"] == "call.ready"
                await call.wait_for(lambda: call.ended, 5.0)
                assert call.close_code == 4409 and call.reconnects == 0
                await asyncio.sleep(0.3)  # no reconnect later either
                assert call.reconnects == 0 and not call.connected

    run(main())


def test_a_bogus_resume_token_is_refused_with_4404() -> None:
    async def main() -> None:
        async with server([HELLO]) as (url, _), Call.connect(url, token=TOKEN) as call:
            ready = call.protocol.ready
            assert ready is not None
            call.protocol.ready = msgspec.structs.replace(ready, resume_token="v1.1.2.bogus")
            with pytest.raises(CallRefused) as refused:
                await call.reconnect()
            assert refused.value.code == 4404

    run(main())


def test_a_resume_after_the_held_output_ran_out_says_what_was_missed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(call_registry, "REPLAY_AUDIO_S", 0.1)

    async def main() -> None:
        received: list[BotAudio] = []
        async with (
            server([WEATHER]) as (url, _),
            Call.connect(url, token=TOKEN, input=FMT, output=FMT) as call,
        ):
            call.on(lambda n: received.append(n) if isinstance(n, BotAudio) else None)
            await call.send_text(WEATHER.user)
            await call.wait_for(lambda: len(received) >= 5, 10.0)
            ws = call.websocket
            assert ws is not None
            ws.transport.abort()
            await call.wait_for(lambda: not call.connected, 5.0)
            await asyncio.sleep(0.5)  # 500 ms of reply: more than the 100 ms held
            await call.reconnect()
            assert call.protocol.ready is not None
            assert call.protocol.ready.missed > 0

    run(main())


# -- rspp call -------------------------------------------------------------------------


@contextmanager
def server_thread(script: list[DemoLine]) -> Iterator[str]:
    """A server on its own event loop in a thread (the command runs its own loop)."""
    started = threading.Event()
    address: list[str] = []
    stop: list[asyncio.Event] = []
    loop_of: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        stop.append(asyncio.Event())
        loop_of.append(asyncio.get_running_loop())
        async with serving(app_for(script)) as where:
            address.append(where)
            started.set()
            await stop[0].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10.0)
    try:
        yield address[0]
    finally:
        loop_of[0].call_soon_threadsafe(stop[0].set)
        thread.join(10.0)


def test_rspp_call_says_a_wav_and_writes_what_the_bot_said(tmp_path: Path) -> None:
    from rspp.cli.call import call

    wav = tmp_path / "hello.wav"
    wav.write_bytes(wav_bytes(speech_like(1200, 24000) + silence(200, 24000), 24000))
    out = tmp_path / "out"
    with server_thread([HELLO]) as address:
        args = argparse.Namespace(
            url=f"http://{address}/?token={TOKEN}",
            input=str(wav),
            script="demo",
            token="",
            out=str(out),
            pipeline="",
            output_rate=16000,
            max_wait=20.0,
            tail=0.3,
            reconnects=5,
        )
        assert call(args) == 0
    report = json.loads((out / "call.json").read_text())
    (turn,) = report["turns"]
    assert turn["user"] == HELLO.user and turn["heard"].strip() == HELLO.reply
    assert turn["latency_ms"] > 0 and "v2v_ms" in turn["server_latency_ms"]
    with wave.open(str(out / "bot.wav")) as w:
        assert w.getframerate() == 16000 and w.getnframes() >= turn["played_ms"] * 16


def test_rspp_call_without_a_valid_token_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rspp.cli.call import call

    monkeypatch.delenv("RSPP_TOKEN", raising=False)
    with server_thread([HELLO]) as address:
        args = argparse.Namespace(
            url=f"ws://{address}/v1/call",
            input=None,
            script="demo",
            token="",
            out=None,
            pipeline="",
            output_rate=16000,
            max_wait=5.0,
            tail=None,
            reconnects=5,
        )
        assert call(args) == 1
    assert "4401" in capsys.readouterr().err


# -- addresses -------------------------------------------------------------------------


def test_the_url_rspp_serve_prints_is_a_call_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSPP_TOKEN", "from-env")
    assert call_url("http://127.0.0.1:8000/?token=abc") == ("ws://127.0.0.1:8000/v1/call", "abc")
    assert call_url("https://example.org") == ("wss://example.org/v1/call", "from-env")
    assert call_url("ws://h:1/v1/call", "given") == ("ws://h:1/v1/call", "given")
    assert call_url("h:1") == ("ws://h:1/v1/call", "from-env")
    with pytest.raises(ValueError):
        call_url("ftp://h")


def test_replies_end_once_even_when_done_and_cleared() -> None:
    """A record counts each reply's end once (what the caller waits on)."""
    from rspp.client import CallRecord

    record = CallRecord(FMT)
    record.on(ReplyEnded(1, 10.0, False), 0.0)
    record.on(ReplyEnded(1, 10.0, True), 0.0)
    assert record.replies_ended == 1
