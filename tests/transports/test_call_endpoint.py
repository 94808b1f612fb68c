"""The call endpoint on a real socket: bad input hurts only its sender.

A real uvicorn server with the fake demo pipeline; clients are the
``websockets`` library speaking the protocol by hand (the Python client has
its own tests). Every misbehaviour gets its documented answer -- an ``error``
frame or a close code -- and is counted at ``/metrics``, while another call on
the same server goes on and is answered.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from rspp.demo import DemoLine, demo_pipeline
from rspp.kernel import Overloaded
from rspp.testing.audio import silence, speech_like
from rspp.testing.server import serving
from rspp.transports.auth import Auth
from rspp.transports.call.calls import Connection, SlowConsumer
from rspp.transports.call.endpoint import EndpointConfig, _Disconnected, _Reader
from rspp.transports.call.server import CallServer, Limits
from rspp.transports.metrics import ServerMetrics
from rspp.transports.port import LocalHost
from rspp.transports.server import ServerConfig, create_app

TOKEN = "test-token"
LINE = DemoLine("Hello there, how are you?", "Fine, thanks.")


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 30))  # type: ignore[arg-type]


DIRECT = [True]


@pytest.fixture(autouse=True, params=["direct", "asgi"])
def mode(request: pytest.FixtureRequest) -> None:
    """Every test against both ways the endpoint reads and writes: the server's direct
    mode (``rspp serve``) and plain ASGI (any other server)."""
    DIRECT[0] = request.param == "direct"


@asynccontextmanager
async def server(
    *, max_sessions: int = 10, endpoint: EndpointConfig | None = None
) -> AsyncIterator[tuple[str, Any]]:
    host = LocalHost({"demo": demo_pipeline([LINE, LINE])}, max_sessions=max_sessions)
    config = ServerConfig(endpoint=endpoint or EndpointConfig())
    app = create_app(host, auth=Auth(static_token=TOKEN), config=config)
    async with serving(app, direct=DIRECT[0]) as address:
        yield address, app


def hello(**fields: Any) -> str:
    return json.dumps({"kind": "call.hello", "protocol": 1, "token": TOKEN, **fields})


async def connect(address: str, **headers: str) -> ClientConnection:
    return await websockets.connect(f"ws://{address}/v1/call", additional_headers=headers)


async def open_call(address: str) -> tuple[ClientConnection, dict[str, Any]]:
    ws = await connect(address)
    await ws.send(hello())
    ready = json.loads(await ws.recv())
    assert ready["kind"] == "call.ready"
    return ws, ready


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes; the close code it sent."""
    try:
        while True:
            await ws.recv()
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd else None


async def next_of(ws: ClientConnection, kind: str) -> dict[str, Any]:
    while True:
        frame = await ws.recv()
        if isinstance(frame, str):
            message = json.loads(frame)
            if message["kind"] == kind:
                return dict(message)


async def speak(ws: ClientConnection, ms: float = 1500.0) -> None:
    """Speech, then silence, in 20 ms frames, in real time."""
    pcm = speech_like(ms) + silence(1000)
    for i in range(0, len(pcm), 640):
        await ws.send(pcm[i : i + 640])
        await asyncio.sleep(0.02)


async def answered(ws: ClientConnection) -> str:
    """Speak one line; the text of the reply's commit-or-confirm and first delta."""
    talker = asyncio.create_task(speak(ws))
    try:
        delta = await next_of(ws, "llm.delta")
    finally:
        await talker
    return str(delta["text"])


async def metric(address: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://{address}/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


# -- refusals before the call ---------------------------------------------------------------------


def test_a_foreign_origin_is_refused_before_the_upgrade() -> None:
    async def main() -> None:
        async with server() as (address, _):
            with pytest.raises(websockets.InvalidStatus) as info:
                await connect(address, Origin="https://evil.example")
            assert info.value.response.status_code == 403
            ws, _ready = await open_call(address)  # no Origin (not a browser): fine
            await ws.close()
            same = await connect(address, Origin=f"http://{address}")  # its own page: fine
            await same.send(hello())
            assert json.loads(await same.recv())["kind"] == "call.ready"
            await same.close()
            assert await metric(address, 'rspp_transport_rejected_total{reason="origin"}') == 1

    run(main())


@pytest.mark.parametrize("token", ["", "wrong", "v1.9999999999.abc.deadbeef"])
def test_no_valid_token_no_call(token: str) -> None:
    async def main() -> None:
        async with server() as (address, app):
            ws = await connect(address)
            await ws.send(json.dumps({"kind": "call.hello", "protocol": 1, "token": token}))
            assert await close_code(ws) == 4401
            assert app.state.registry.host.active() == 0

    run(main())


def test_a_bearer_header_or_a_signed_token_opens_a_call() -> None:
    async def main() -> None:
        async with server() as (address, _app):
            ws = await connect(address, Authorization=f"Bearer {TOKEN}")
            await ws.send(json.dumps({"kind": "call.hello", "protocol": 1}))
            assert json.loads(await ws.recv())["kind"] == "call.ready"
            await ws.close()
            async with httpx.AsyncClient() as client:
                refused = await client.post(f"http://{address}/v1/tokens")
                assert refused.status_code == 401
                issued = await client.post(
                    f"http://{address}/v1/tokens?ttl=60",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                )
            signed = issued.json()["token"]
            ws = await connect(address)
            await ws.send(json.dumps({"kind": "call.hello", "protocol": 1, "token": signed}))
            assert json.loads(await ws.recv())["kind"] == "call.ready"
            await ws.close()

    run(main())


def test_no_hello_in_time_closes_with_4408() -> None:
    async def main() -> None:
        async with server(endpoint=EndpointConfig(hello_timeout_s=0.2)) as (address, _):
            ws = await connect(address)
            assert await close_code(ws) == 4408

    run(main())


def test_a_full_server_refuses_with_4503_and_a_bad_resume_token_with_4404() -> None:
    async def main() -> None:
        async with server(max_sessions=1) as (address, _):
            first, _ready = await open_call(address)
            ws = await connect(address)
            await ws.send(hello())
            assert await close_code(ws) == 4503
            ws = await connect(address)
            await ws.send(hello(resume="v1.9999999999.nope.00"))
            assert await close_code(ws) == 4404
            await first.close()

    run(main())


# -- bad input during a call --------------------------------------------------------------------


def test_malformed_and_forbidden_frames_get_an_error_and_the_call_goes_on() -> None:
    async def main() -> None:
        async with server() as (address, _):
            ws, _ready = await open_call(address)
            await ws.send("{not json")
            error = await next_of(ws, "error")
            assert (error["source"], error["code"]) == ("transport", "bad_json")
            await ws.send(json.dumps({"kind": "llm.delta", "text": "injected"}))
            assert (await next_of(ws, "error"))["code"] == "kind_not_allowed"
            await ws.send(json.dumps({"kind": "acme.thing"}))
            assert (await next_of(ws, "error"))["code"] == "unknown_kind"
            assert await answered(ws) == "Fine, "  # the call still works
            await ws.close()
            assert await metric(address, "rspp_transport_rejected_total") == 3

    run(main())


@pytest.mark.parametrize(
    ("misbehave", "code"),
    [
        (lambda ws: ws.send(b"\0" * 70_000), 4413),
        (lambda ws: ws.send(b"\0\0\0"), 4400),
        (lambda ws: _flood(ws), 4429),
    ],
    ids=["oversized", "partial_sample", "flood"],
)
def test_a_fatal_frame_closes_only_its_own_connection(
    misbehave: Callable[[ClientConnection], Awaitable[None]], code: int
) -> None:
    async def main() -> None:
        async with server() as (address, _):
            good, _ = await open_call(address)
            bad, _ = await open_call(address)
            with suppress(websockets.ConnectionClosed):
                await misbehave(bad)
            assert await close_code(bad) == code
            assert await answered(good) == "Fine, "  # the other call is unharmed
            await good.close()
            assert await metric(address, f'rspp_transport_closed_total{{code="{code}"}}') == 1

    run(main())


async def _flood(ws: ClientConnection) -> None:
    frame = b"\0\0" * 320
    for _ in range(2000):  # 40 s of audio at once
        await ws.send(frame)


def test_a_client_that_does_not_read_is_cut_off_not_buffered_forever() -> None:
    async def main() -> None:
        stuck = asyncio.Event()

        async def send(frame: str | bytes) -> None:
            await stuck.wait()  # the socket's buffers are full: the client does not read

        connection = Connection(lambda ev: None, send, max_queued_bytes=10_000)
        writer = asyncio.create_task(connection.writer())
        for _ in range(100):
            connection.put(b"\0" * 640)  # 2 s of 16 kHz audio
            await asyncio.sleep(0)
        with pytest.raises(SlowConsumer):
            await asyncio.wait_for(writer, 5)
        assert connection.overflowed

    run(main())


def test_a_typed_message_is_answered_like_speech() -> None:
    async def main() -> None:
        async with server() as (address, _):
            ws, _ = await open_call(address)
            await ws.send(json.dumps({"kind": "user.text", "text": LINE.user}))
            commit = await next_of(ws, "turn.commit")
            assert commit["text"] == LINE.user
            assert (await next_of(ws, "llm.delta"))["text"] == "Fine, "
            await ws.send(json.dumps({"kind": "call.bye"}))
            assert await close_code(ws) == 1000

    run(main())


def test_readyz_and_healthz() -> None:
    async def main() -> None:
        async with server() as (address, _), httpx.AsyncClient() as client:
            assert (await client.get(f"http://{address}/healthz")).status_code == 200
            assert (await client.get(f"http://{address}/readyz")).status_code == 200
            pipelines = (await client.get(f"http://{address}/v1/pipelines")).json()
            assert pipelines == {
                "pipelines": ["demo"],
                "info": {"demo": {"sample_rate": 16000, "lead_ms": 0.0}},
            }

    run(main())


def test_limits_are_the_endpoints_own_config() -> None:
    async def main() -> None:
        endpoint = EndpointConfig(limits=Limits(max_frame_bytes=1000))
        async with server(endpoint=endpoint) as (address, _):
            ws, _ = await open_call(address)
            await ws.send(b"\0" * 1002)
            assert await close_code(ws) == 4413

    run(main())


def test_rspp_serve_mounts_twilio_when_its_auth_token_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rspp.cli.serve import _twilio_routes

    monkeypatch.delenv("TWILIO_AUTH_TOKEN", raising=False)
    assert _twilio_routes(None) is None
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "twilio-secret")

    async def main() -> None:
        host = LocalHost({"demo": demo_pipeline([LINE])})
        config = ServerConfig(extra_routes=_twilio_routes(None))
        app = create_app(host, auth=Auth(static_token=TOKEN), config=config)
        async with serving(app, direct=DIRECT[0]) as address, httpx.AsyncClient() as client:
            unsigned = await client.post(f"http://{address}/twilio/voice", data={"From": "x"})
            assert unsigned.status_code == 403
            assert await metric(address, "rspp_twilio_total") >= 1

    run(main())


def test_input_sent_right_after_the_hello_is_taken_whole_and_in_order() -> None:
    async def main() -> None:
        async with server() as (address, app):
            ws = await connect(address)
            await ws.send(hello())  # and at once, before call.ready, 25 frames of audio
            for i in range(25):
                await ws.send(speech_like(20.0, 16000, seed=i))
            ready = await next_of(ws, "call.ready")
            session = app.state.registry.calls[ready["session"]].port.session
            for _ in range(100):
                if session.ingress.seq >= 25:
                    break
                await asyncio.sleep(0.01)
            assert session.ingress.seq == 25  # every frame admitted once, none lost
            await ws.close()

    run(main())


class FullSession:
    """Fake port around the reader under test: refuses the first pushes (Overloaded)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.pushed: list[str] = []

    def push_nowait(self, event: Any) -> None:
        if self.refusals:
            self.refusals -= 1
            raise Overloaded("turns", event.kind, 4)
        self.pushed.append(event.text)

    async def push(self, event: Any) -> None:
        await asyncio.sleep(0.01)  # waits for room
        self.pushed.append(event.text)

    def report_playback(self, turn: int, played_ms: float) -> None:
        self.pushed.append(f"played {played_ms:g}")


class PausingSocket:
    def __init__(self) -> None:
        self.reading: list[bool] = []
        self.buffered = 0

    def send(self, frame: str | bytes) -> bool:
        return True

    def pause_reading(self) -> None:
        self.reading.append(False)

    def resume_reading(self) -> None:
        self.reading.append(True)


def test_direct_mode_backpressure_keeps_the_order_and_pauses_the_socket() -> None:
    async def main() -> None:
        proto = CallServer(Limits())
        proto.receive_text(hello(), 0.0)
        proto.ready(
            session="s",
            pipeline="demo",
            pipeline_rate=16000,
            resume_token="r",
            resume_window_s=30.0,
            lead_ms=0.0,
        )
        port = FullSession(refusals=1)
        connection = Connection(proto.encode, _no_send, max_queued_bytes=100_000)
        reader = _Reader(proto, ServerMetrics())
        socket = PausingSocket()
        reader.on_open(socket)  # type: ignore[arg-type]
        reader.start(SimpleNamespace(port=port), connection)  # type: ignore[arg-type]
        socket.reading.clear()
        task = asyncio.create_task(reader.run())
        for i in range(4):
            reader.on_message(json.dumps({"kind": "user.text", "text": f"t{i}"}), None)
        played = {"kind": "playback.position", "turn": 1, "played_ms": 20}
        reader.on_message(json.dumps(played), None)  # a report does not wait for input
        assert port.pushed == ["played 20"]
        assert socket.reading == [False]  # paused while input waits
        for _ in range(100):  # the reader's task pushes what waited, in order
            await asyncio.sleep(0.01)
            if len(port.pushed) == 5:
                break
        assert port.pushed == ["played 20", "t0", "t1", "t2", "t3"]
        assert socket.reading == [False, True]
        reader.on_message(json.dumps({"kind": "user.text", "text": "t4"}), None)
        assert port.pushed[-1] == "t4"  # straight through again
        reader.on_closed()
        with pytest.raises(_Disconnected):
            await asyncio.wait_for(task, 5)

    run(main())


async def _no_send(frame: str | bytes) -> None:
    raise AssertionError("a direct connection writes to its socket")


def test_a_sessions_drops_are_exported_at_each_reply_end_and_at_the_call_end() -> None:
    async def main() -> None:
        async with server() as (address, app):
            ws, ready = await open_call(address)
            session = app.state.registry.calls[ready["session"]].port.session
            # A node drops what it must (the kernel's counter, as a node's drop counts).
            session.count_drop("tts", "tts.audio", "fenced", 3)
            name = 'rspp_session_dropped_total{kind="tts.audio",node="tts",reason="fenced"}'
            assert await metric(address, name) == 0  # not yet: exported at a reply's end
            assert await answered(ws) == "Fine, "
            await next_of(ws, "turn.done")
            assert await metric(address, name) == 3
            session.count_drop("tts", "tts.audio", "fenced", 2)
            await ws.send(json.dumps({"kind": "call.bye"}))
            assert await close_code(ws) == 1000
            for _ in range(100):  # the call's end exports what is left, once
                if await metric(address, name) == 5:
                    break
                await asyncio.sleep(0.02)
            assert await metric(address, name) == 5

    run(main())


def test_a_close_the_client_does_not_take_is_bounded_and_cuts_the_socket_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A client that stops reading never takes the close frame either: the server's
    # send waits for the socket to drain, forever. The close is bounded; then the
    # socket is aborted and the connection's task goes on to detach it from its call.
    from rspp.transports.call import endpoint

    class StuckWebSocket:
        async def close(self, code: int, reason: str) -> None:
            await asyncio.Event().wait()

    class Socket:
        aborted = False

        def abort(self) -> None:
            self.aborted = True

    async def main() -> None:
        monkeypatch.setattr(endpoint, "CLOSE_TIMEOUT_S", 0.05)
        reader = _Reader(CallServer(Limits()), ServerMetrics())
        socket = Socket()
        reader.on_open(socket)  # type: ignore[arg-type]
        await asyncio.wait_for(endpoint._close(StuckWebSocket(), 4508, "slow", reader), 1.0)  # type: ignore[arg-type]
        assert socket.aborted

    run(main())
