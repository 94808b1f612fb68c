"""The Twilio endpoint on a real socket, against a scripted Twilio.

A real uvicorn server runs the endpoint's routes over a :class:`LocalHost` with
the fake demo pipeline. The peer plays Twilio's part as its docs describe it:
``connected``, ``start``, caller audio as 20 ms μ-law ``media`` frames in real
time; bot audio is buffered and "played" in real time, each ``mark`` echoed
once the audio before it has played (at once when nothing is buffered), and a
``clear`` drops what is buffered and echoes every pending mark at once.

Tests look inside the session (through the host's ports) to check what the
kernel recorded; the endpoint itself only ever uses the port.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import websockets
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection

from rspp.demo import DemoLine, demo_pipeline
from rspp.events import AudioOut, ClearBuffer, Event, TurnDone, TurnInterrupted, UserDtmf
from rspp.kernel import Pipeline
from rspp.testing.audio import silence, speech_like
from rspp.testing.server import serving
from rspp.transports.metrics import ServerMetrics
from rspp.transports.port import LocalHost, LocalPort
from rspp.transports.twilio import MediaStream, Speaker, TwilioEndpoint, compute_signature
from rspp.transports.twilio.audio import pcm16_to_ulaw

TOKEN = "test-auth-token"
SID = "MZ00000000000000000000000000000001"
QUICK = {
    "asr": {"final_ms": 80.0},
    "turns": {"speculate": False, "silence_ms": 300.0},
    "llm": {"ttft_ms": 40.0, "tokens_per_s": 200.0},
    "tts": {"ttfa_ms": 20.0, "rtf": 0.05},
    # Released 100 ms ahead of real time: Twilio holds that much, as in production.
    "output": {"lead_ms": 100.0},
}
SHORT = DemoLine("Hello there, how are you?", "Fine, thanks.")
LONG = DemoLine(
    "Tell me about the weather.",
    "Tomorrow will be mild and mostly cloudy, around fourteen degrees, with a chance "
    "of light rain in the late afternoon, so do take an umbrella with you.",
)
STOP_IT = DemoLine("Sorry, stop, stop.", "Of course.")


def run(coro: Awaitable[None]) -> None:
    asyncio.run(asyncio.wait_for(coro, 20))  # type: ignore[arg-type]


class RecordingHost(LocalHost):
    """A LocalHost that keeps its ports and what their sessions emit (for the assertions)."""

    def __init__(self, pipeline: Pipeline) -> None:
        super().__init__({"demo": pipeline})
        self.ports: list[LocalPort] = []
        self.seen: list[Event] = []

    async def open(self, pipeline: str = "", session_id: str | None = None) -> LocalPort:
        port = await super().open(pipeline, session_id)
        port.session.observe(self.seen.append)
        self.ports.append(port)
        return port

    def of_kind(self, kind: str) -> list[Event]:
        return [e for e in self.seen if e.kind == kind]


@dataclass
class Server:
    address: str
    endpoint: TwilioEndpoint
    host: RecordingHost


@asynccontextmanager
async def server(
    lines: list[DemoLine],
    *,
    auth_token: str | None = TOKEN,
    public_url: str | None = None,
    drops: Any = None,
    **over: Any,
) -> AsyncIterator[Server]:
    host = RecordingHost(demo_pipeline(lines, **{**QUICK, **over}))
    await host.load()
    endpoint = TwilioEndpoint(host, auth_token=auth_token, public_url=public_url, drops=drops)
    async with serving(Starlette(routes=endpoint.routes)) as address:
        yield Server(address, endpoint, host)
    await host.close()


# --------------------------------------------------------------------------- the scripted Twilio


@dataclass
class Sent:
    """One frame the endpoint sent, when it arrived, and (media) when Twilio plays it."""

    event: str
    at: float
    payload: bytes = b""
    name: str = ""
    plays: tuple[float, float] = (0.0, 0.0)


@dataclass
class TwilioPeer:
    ws: ClientConnection
    received: list[Sent] = field(default_factory=list)
    echoed: list[str] = field(default_factory=list)
    #: Marks not yet echoed: (when the audio before it will have played, name).
    marks: deque[tuple[float, str]] = field(default_factory=deque)
    play_end: float = 0.0
    #: Marks echoed at once because of a clear.
    echoed_on_clear: int = 0
    #: How long after arriving audio starts playing (network and jitter buffer).
    delay_s: float = 0.0
    seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    chunk: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @classmethod
    @asynccontextmanager
    async def call(
        cls, address: str, token: str = TOKEN, delay_s: float = 0.0
    ) -> AsyncIterator[TwilioPeer]:
        url = f"ws://{address}/twilio/stream"
        signature = compute_signature(token, f"wss://{address}/twilio/stream")
        async with websockets.connect(
            url, additional_headers={"X-Twilio-Signature": signature}
        ) as ws:
            peer = cls(ws, delay_s=delay_s)
            async with asyncio.TaskGroup() as tasks:
                listening = tasks.create_task(peer._listen())
                playing = tasks.create_task(peer._play())
                try:
                    await peer.start()
                    yield peer
                finally:
                    playing.cancel()
                    with suppress(websockets.ConnectionClosed):
                        await ws.close()
                    await listening

    def now(self) -> float:
        return asyncio.get_running_loop().time()

    async def send(self, message: dict[str, Any]) -> None:
        if message["event"] != "connected":
            message = {"sequenceNumber": str(next(self.seq)), **message, "streamSid": SID}
        await self.ws.send(json.dumps(message))

    async def start(self) -> None:
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            {
                "event": "start",
                "start": {
                    "accountSid": "AC0",
                    "streamSid": SID,
                    "callSid": "CA0",
                    "tracks": ["inbound"],
                    "customParameters": {"From": "+15550100"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    async def say(self, pcm8k: bytes) -> None:
        """Caller audio, 20 ms media frames in real time."""
        ulaw = pcm16_to_ulaw(pcm8k)
        t0 = self.now()
        for i in range(0, len(ulaw), 160):
            chunk = next(self.chunk)
            media = {
                "track": "inbound",
                "chunk": str(chunk),
                "timestamp": str(20 * chunk),
                "payload": base64.b64encode(ulaw[i : i + 160]).decode(),
            }
            await self.send({"event": "media", "media": media})
            await asyncio.sleep(max(0.0, t0 + (i // 160 + 1) * 0.02 - self.now()))

    async def speak(self, speech_ms: float, then_silence_ms: float = 600.0) -> None:
        await self.say(speech_like(speech_ms, 8000) + silence(then_silence_ms, 8000))

    async def dtmf(self, digit: str) -> None:
        await self.send({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}})

    async def stop(self) -> None:
        await self.send({"event": "stop", "stop": {"accountSid": "AC0", "callSid": "CA0"}})

    async def _listen(self) -> None:
        with suppress(websockets.ConnectionClosed):
            async for data in self.ws:
                message = json.loads(data)
                now = self.now()
                event = message["event"]
                assert message["streamSid"] == SID
                if event == "media":
                    payload = base64.b64decode(message["media"]["payload"])
                    begin = max(now + self.delay_s, self.play_end)
                    self.play_end = begin + len(payload) / 8000
                    self.received.append(Sent(event, now, payload, plays=(begin, self.play_end)))
                elif event == "mark":
                    name = message["mark"]["name"]
                    self.received.append(Sent(event, now, name=name))
                    self.marks.append((max(now, self.play_end), name))
                elif event == "clear":
                    # "empties all buffered audio and causes any mark messages to be sent back"
                    self.received.append(Sent(event, now))
                    for item in self.received:
                        if item.event == "media" and item.plays[1] > now:
                            item.plays = (item.plays[0], max(item.plays[0], now))
                    self.play_end = now
                    while self.marks:
                        self.echoed_on_clear += 1
                        await self._echo(self.marks.popleft()[1])

    async def _play(self) -> None:
        while True:
            while self.marks and self.marks[0][0] <= self.now():
                await self._echo(self.marks.popleft()[1])
            await asyncio.sleep(0.005)

    async def _echo(self, name: str) -> None:
        self.echoed.append(name)
        await self.send({"event": "mark", "mark": {"name": name}})

    # -- what the test asks --------------------------------------------------------------

    def media(self) -> list[Sent]:
        return [s for s in self.received if s.event == "media"]

    def media_ms(self) -> float:
        return sum(len(s.payload) for s in self.media()) / 8

    async def until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = self.now() + timeout_s
        while not condition():
            assert self.now() < deadline, "timed out waiting"
            await asyncio.sleep(0.01)


def turn_of(mark_name: str) -> int:
    """The turn a mark was sent for (the test may read the name; the endpoint never does)."""
    return int(mark_name.split(":")[1].removeprefix("t"))


# --------------------------------------------------------------------------- the webhook


def signed_post(
    client: httpx.AsyncClient, url: str, form: dict[str, str], token: str = TOKEN
) -> Awaitable[httpx.Response]:
    headers = {"X-Twilio-Signature": compute_signature(token, url, form)}
    return client.post(url, data=form, headers=headers)


FORM = {"CallSid": "CA0", "AccountSid": "AC0", "From": "+15550100", "To": "+15550199"}


def test_the_voice_webhook_answers_twiml_for_a_stream_when_signed() -> None:
    async def main() -> None:
        async with server([SHORT]) as s, httpx.AsyncClient() as client:
            answer = await signed_post(client, f"http://{s.address}/twilio/voice?x=1", FORM)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/xml")
            root = ET.fromstring(answer.text)
            assert root.tag == "Response"
            stream = root.find("./Connect/Stream")
            assert stream is not None
            assert stream.get("url") == f"wss://{s.address}/twilio/stream"
            params = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
            assert params == {"From": "+15550100", "To": "+15550199"}
            assert s.endpoint.counts["forbidden"] == 0

    run(main())


def test_the_voice_webhook_refuses_what_twilio_did_not_sign() -> None:
    async def main() -> None:
        async with server([SHORT]) as s, httpx.AsyncClient() as client:
            url = f"http://{s.address}/twilio/voice"
            assert (await client.post(url, data=FORM)).status_code == 403
            assert (await signed_post(client, url, FORM, token="other")).status_code == 403
            tampered = await client.post(
                url,
                data={**FORM, "From": "+15550666"},
                headers={"X-Twilio-Signature": compute_signature(TOKEN, url, FORM)},
            )
            assert tampered.status_code == 403
            assert s.endpoint.counts["forbidden"] == 3

    run(main())


def test_without_an_auth_token_nothing_is_answered() -> None:
    async def main() -> None:
        async with server([SHORT], auth_token=None) as s, httpx.AsyncClient() as client:
            url = f"http://{s.address}/twilio/voice"
            assert (await signed_post(client, url, FORM, token="")).status_code == 403
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with TwilioPeer.call(s.address, token=""):
                    pass
            assert refused.value.response.status_code == 403
            assert s.host.ports == []

    run(main())


def test_behind_a_proxy_the_public_url_is_what_is_signed_and_streamed_to() -> None:
    async def main() -> None:
        public = "https://voice.example.com/rspp"
        async with server([SHORT], public_url=public) as s, httpx.AsyncClient() as client:
            local = f"http://{s.address}/twilio/voice"
            headers = {
                "X-Twilio-Signature": compute_signature(TOKEN, f"{public}/twilio/voice", FORM)
            }
            answer = await client.post(local, data=FORM, headers=headers)
            assert answer.status_code == 200
            stream = ET.fromstring(answer.text).find("./Connect/Stream")
            assert stream is not None
            assert stream.get("url") == "wss://voice.example.com/rspp/twilio/stream"
            assert (await signed_post(client, local, FORM)).status_code == 403

    run(main())


def test_an_unsigned_stream_is_refused_before_it_opens_a_session() -> None:
    async def main() -> None:
        async with server([SHORT]) as s:
            for token in ("wrong", None):
                headers = {} if token is None else {"X-Twilio-Signature": "bad"}
                with pytest.raises(websockets.InvalidStatus) as refused:
                    async with websockets.connect(
                        f"ws://{s.address}/twilio/stream", additional_headers=headers
                    ):
                        pass
                assert refused.value.response.status_code == 403
            assert s.host.ports == [] and s.endpoint.counts["forbidden"] == 2

    run(main())


# --------------------------------------------------------------------------- calls


async def close_code_after_start(address: str, media_format: dict[str, Any]) -> int | None:
    """Open a signed stream, send ``start`` with ``media_format``; the close code it gets."""
    signature = compute_signature(TOKEN, f"wss://{address}/twilio/stream")
    async with websockets.connect(
        f"ws://{address}/twilio/stream", additional_headers={"X-Twilio-Signature": signature}
    ) as ws:
        start = {"streamSid": SID, "callSid": "CA0", "mediaFormat": media_format}
        await ws.send(json.dumps({"event": "start", "start": start}))
        try:
            while True:
                await ws.recv()
        except websockets.ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


def test_a_stream_the_endpoint_cannot_serve_is_closed_with_a_reason() -> None:
    async def main() -> None:
        async with server([SHORT]) as s:
            wideband = {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}
            assert await close_code_after_start(s.address, wideband) == 1003
            assert s.endpoint.counts["unsupported_format"] == 1 and s.host.ports == []
            s.host.max_sessions = 0  # a full host
            mulaw = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
            assert await close_code_after_start(s.address, mulaw) == 1013
            assert s.endpoint.counts["session_refused"] == 1

    run(main())


def test_speech_in_gets_a_reply_out_as_ulaw_frames_whose_marks_report_playback() -> None:
    async def main() -> None:
        async with server([SHORT]) as s, TwilioPeer.call(s.address) as peer:
            await peer.speak(700, then_silence_ms=0)
            talking = asyncio.create_task(peer.say(silence(3000, 8000)))
            await peer.until(lambda: peer.media_ms() >= 400)
            port = s.host.ports[0]
            session = port.session
            # Mid-reply, the heard record is what Twilio played (the echoed marks), which
            # lags what was sent by the audio Twilio holds.
            (commit,) = s.host.of_kind("turn.commit")
            record = session.ledger.record(commit.turn)
            assert record.played and 0 < record.delivered_ns < record.sent_ns
            await peer.until(lambda: bool(s.host.of_kind("turn.done")))
            (done,) = s.host.of_kind("turn.done")
            audio_ms = sum(e.duration_ns for e in s.host.of_kind("audio.out")) / 1e6
            # Every mark comes back once its audio has played: then all of it was heard.
            await peer.until(lambda: session.ledger.record(done.turn).delivered_ms >= audio_ms)
            talking.cancel()
            await peer.stop()
            await peer.until(lambda: port.closed)

            media = peer.media()
            assert media and all(len(m.payload) == 160 for m in media)
            # A mark after each batch of audio, for the reply's turn; all echoed.
            marks = [r.name for r in peer.received if r.event == "mark"]
            assert marks and {turn_of(name) for name in marks} == {done.turn}
            assert peer.received[-1].event == "mark" and peer.echoed == marks
            # The reply's audio, all of it (the last frame padded): 20 ms frames of 8 kHz.
            assert audio_ms <= peer.media_ms() < audio_ms + 20
            history = [(m.role, m.text) for m in session.conversation.history()]
            assert history == [("user", SHORT.user), ("assistant", SHORT.reply)]
            assert session.close_reason == "caller_hangup"
            assert s.endpoint.counts["calls"] == 1
            assert not any(k.startswith("protocol.") for k in s.endpoint.counts)

    run(main())


def test_a_barge_in_clears_twilio_and_nothing_of_the_old_reply_follows() -> None:
    async def main() -> None:
        async with (
            server([LONG, STOP_IT]) as s,
            # Twilio starts playing half a second after audio arrives: at the barge-in it
            # holds audio (and marks) that the caller never hears.
            TwilioPeer.call(s.address, delay_s=0.5) as peer,
        ):
            await peer.speak(700, then_silence_ms=0)
            talking = asyncio.create_task(peer.say(silence(3000, 8000)))
            await peer.until(lambda: peer.media_ms() >= 1000)  # a second of the reply is in
            talking.cancel()
            await peer.speak(900)
            await peer.until(lambda: any(r.event == "clear" for r in peer.received))
            (cut,) = s.host.of_kind("turn.interrupted")
            assert isinstance(cut, TurnInterrupted)
            # The marks Twilio gives back on the clear reach the endpoint and are not counted
            # (nor is one whose echo crossed the clear on the wire: hence >=).
            assert peer.echoed_on_clear > 0
            await peer.until(lambda: s.endpoint.counts["marks_cleared"] >= peer.echoed_on_clear)
            await peer.until(lambda: bool(s.host.of_kind("turn.done")))  # the next reply

            clear = next(i for i, r in enumerate(peer.received) if r.event == "clear")
            # Nothing of the interrupted reply after the clear: any later mark is a new reply's.
            later = [r.name for r in peer.received[clear:] if r.event == "mark"]
            assert later and all(turn_of(name) > cut.turn for name in later)
            before = [r.name for r in peer.received[:clear] if r.event == "mark"]
            assert before and all(turn_of(name) == cut.turn for name in before)
            # What the kernel says was heard is what Twilio played, never more: not what was
            # sent, and not what the marks echoed by the clear would claim.
            cleared_at = peer.received[clear].at
            sent_before = [r for r in peer.received[:clear] if r.event == "media"]
            sent_ms = sum(len(m.payload) for m in sent_before) / 8
            played_ms = 1000 * sum(
                max(0.0, min(m.plays[1], cleared_at) - m.plays[0]) for m in sent_before
            )
            assert played_ms < sent_ms
            assert 0 < cut.delivered_ms <= played_ms + 0.5
            session = s.host.ports[0].session
            assert session.ledger.record(cut.turn).delivered_ms <= played_ms + 0.5
            assert cut.heard_text and LONG.reply.startswith(cut.heard_text.rstrip())
            assert len(cut.heard_text) < len(LONG.reply)
            history = [(m.role, m.text) for m in session.conversation.history()]
            assert history == [
                ("user", LONG.user),
                ("assistant", cut.heard_text.strip()),
                ("user", STOP_IT.user),
                ("assistant", STOP_IT.reply),
            ]

    run(main())


def test_dtmf_becomes_user_dtmf_and_garbage_is_counted_while_the_call_goes_on() -> None:
    async def main() -> None:
        async with server([SHORT]) as s, TwilioPeer.call(s.address) as peer:
            await peer.dtmf("5")
            for garbage in (
                "this is not json",
                '{"event": "hangup"}',
                json.dumps({"event": "media", "streamSid": SID, "media": {"payload": "%%%"}}),
                json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": "never sent"}}),
                json.dumps({"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "Z"}}),
                json.dumps({"event": "start", "streamSid": SID, "start": {"streamSid": SID}}),
                b"\x00\x01binary",
            ):
                await peer.ws.send(garbage)
            await peer.dtmf("#")
            await peer.speak(700)
            await peer.until(lambda: bool(s.host.of_kind("turn.done")))

            digits = [e for e in s.host.seen if isinstance(e, UserDtmf)]
            assert [d.digit for d in digits] == ["5", "#"]
            counts = s.endpoint.counts
            assert counts["protocol.malformed"] == 2  # text and binary
            assert counts["protocol.unknown_event"] == 1
            assert counts["protocol.bad_payload"] == 1
            assert counts["protocol.mark"] == 1
            assert counts["protocol.invalid"] == 1
            assert counts["protocol.out_of_order"] == 1
            assert s.host.ports[0].session.running  # the call survived, and was answered

    run(main())


def test_input_the_pipeline_does_not_take_is_counted_and_the_call_goes_on() -> None:
    async def main() -> None:
        pipeline = demo_pipeline([SHORT], **QUICK)
        pipeline.spec.input = ["audio.in"]  # no user.dtmf
        host = RecordingHost(pipeline)
        await host.load()
        reasons: list[str] = []
        endpoint = TwilioEndpoint(host, auth_token=TOKEN, metrics=reasons.append)
        async with serving(Starlette(routes=endpoint.routes)) as address:
            async with TwilioPeer.call(address) as peer:
                await peer.dtmf("1")
                await peer.dtmf("2")
                await peer.speak(700)
                await peer.until(lambda: bool(host.of_kind("turn.done")))
            assert endpoint.counts["rejected.user.dtmf"] == 2
            assert reasons.count("rejected.user.dtmf") == 2
        await host.close()

    run(main())


def test_a_dropped_socket_closes_the_session() -> None:
    async def main() -> None:
        async with server([SHORT]) as s:
            async with TwilioPeer.call(s.address) as peer:
                await peer.say(silence(200, 8000))
            port = s.host.ports[0]
            await peer.until(lambda: port.closed)
            assert port.session.close_reason == "disconnected"

    run(main())


# --------------------------------------------------------------------------- the speaker, no socket


def events(frames: list[str]) -> list[str]:
    return [json.loads(f)["event"] for f in frames]


def test_the_speaker_flushes_a_reply_when_it_ends_or_the_next_begins() -> None:
    stream = MediaStream()
    stream.receive(json.dumps({"event": "start", "start": {"streamSid": SID}}))
    speak = Speaker(stream, 16000)
    frame = speech_like(30, 16000)  # 30 ms: one whole 20 ms frame, the rest waits
    assert events(speak(AudioOut(pcm=frame, turn=1))) == ["media", "mark"]
    # Reply 2 begins: reply 1's tail goes first (padded), each with its own mark.
    assert events(speak(AudioOut(pcm=frame, turn=2))) == ["media", "mark", "media", "mark"]
    assert events(speak(TurnDone(turn=2))) == ["media", "mark"]
    assert speak(TurnDone(turn=2)) == []  # nothing left


def test_the_speaker_drops_a_cleared_or_interrupted_reply() -> None:
    stream = MediaStream()
    stream.receive(json.dumps({"event": "start", "start": {"streamSid": SID}}))
    speak = Speaker(stream, 16000)
    speak(AudioOut(pcm=speech_like(30, 16000), turn=1))
    assert events(speak(ClearBuffer(turn=1))) == ["clear"]
    assert speak(AudioOut(pcm=speech_like(40, 16000), turn=1)) == []  # fenced here too
    assert speak(TurnDone(turn=1)) == []  # its tail was dropped, not flushed
    speak(AudioOut(pcm=speech_like(30, 16000), turn=2))
    speak(TurnInterrupted(turn=2))
    assert speak(TurnDone(turn=2)) == []


def test_a_calls_drops_are_exported_when_it_ends() -> None:
    metrics = ServerMetrics()
    name = 'rspp_session_dropped_total{kind="tts.audio",node="tts",reason="fenced"}'

    def exported() -> float:
        for line in metrics.render().decode().splitlines():
            if line.startswith(name):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    async def main() -> None:
        async with server([SHORT], drops=metrics.drops) as s, TwilioPeer.call(s.address) as peer:
            await peer.until(lambda: bool(s.host.ports))
            # A node drops what it must (the kernel's counter, as a node's drop counts).
            s.host.ports[0].session.count_drop("tts", "tts.audio", "fenced", 2)
            assert exported() == 0
            await peer.stop()
            for _ in range(200):
                if exported():
                    break
                await asyncio.sleep(0.01)
            assert exported() == 2

    run(main())
