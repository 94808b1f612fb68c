"""The browser page of ``rspp serve``, in real headless Chromium.

A real uvicorn serves the app on a loopback port (in a thread with its own
event loop); Chromium opens the page with a fake microphone that plays a WAV
file once (``--use-file-for-fake-audio-capture=FILE%noloop``) and an audio
output that renders in real time. Everything the page does goes through its
AudioWorklets: capture, playback, the playback reports and the clear. The
tests read the page's ``window.rspp`` debug object.

A capture file Chromium cannot read fails silently as a mute microphone, so
each test first checks that the page heard something.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from rspp.agent import LOCAL_SPEC, demo_script
from rspp.demo import DemoLine, demo_pipeline
from rspp.kernel import build, load_spec
from rspp.providers.local.piper import resample_pcm16
from rspp.testing.audio import silence, speech_like, wav_bytes
from rspp.testing.server import serving
from rspp.transports.auth import Auth
from rspp.transports.port import LocalHost
from rspp.transports.server import create_app, with_lead

CHROMIUM = Path("/usr/bin/chromium")
TOKEN = "t"
RATE = 48000  # the fake microphone's file (Chromium resamples it to the AudioContext)
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "images" / "browser.png"

Page = Any  # playwright.sync_api.Page


# -- the server: a real uvicorn, in a thread ---------------------------------------------


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """Serve ``app`` on a free loopback port from a thread; yields ``host:port``."""
    started = threading.Event()
    box: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        async with serving(app) as address:
            box.update(address=address, loop=asyncio.get_running_loop(), stop=stop)
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced in the test thread
            box["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="uvicorn", daemon=True)
    thread.start()
    if not started.wait(30) or "error" in box:
        raise RuntimeError(f"the server did not start: {box.get('error')!r}")
    try:
        yield box["address"]
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(30)


def wait_ready(address: str, timeout_s: float) -> None:
    """Wait until ``/readyz`` says the models are loaded."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{address}/readyz", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"the server was not ready within {timeout_s} s")


# -- the browser --------------------------------------------------------------------------


@contextlib.contextmanager
def chromium(tmp_path: Path, capture: bytes) -> Iterator[Any]:
    """A fresh headless Chromium whose microphone plays ``capture`` (a WAV) once."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(apt-get install chromium); CI installs it"
        )
    wav = tmp_path / "mic.wav"
    wav.write_bytes(capture)
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop",
    ]
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=str(CHROMIUM),
            headless=True,
            args=args,
            viewport={"width": 1280, "height": 860},
        )
        try:
            yield context
        finally:
            context.close()


def open_page(context: Any, address: str) -> tuple[Page, list[str]]:
    """The call page, with its uncaught errors collected."""
    page = context.pages[0] if context.pages else context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"http://{address}/?token={TOKEN}")
    page.wait_for_function("window.rspp && window.rspp.server === 'ready'", timeout=10_000)
    return page, errors


def state(page: Page) -> dict[str, Any]:
    return page.evaluate("rspp.snapshot()")  # type: ignore[no-any-return]


def wait_for(
    page: Page, check: Callable[[dict[str, Any]], object], timeout_s: float, what: str
) -> dict[str, Any]:
    """Poll the page's debug object until ``check`` holds; fail saying ``what`` and the state."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = state(page)
        if snap["state"] == "error":
            raise AssertionError(f"the call failed waiting for {what}: {snap['error']}")
        if check(snap):
            return snap
        if time.monotonic() > deadline:
            summary = {k: snap[k] for k in ("state", "detail", "micPeak", "framesReceived")}
            raise AssertionError(f"timed out waiting for {what}: {summary}, {snap['transcript']}")
        time.sleep(0.1)


def mic_works(snap: dict[str, Any]) -> bool:
    return bool(snap["micPeak"] > 0.01 and snap["micFramesSent"] > 0)


def words(snap: dict[str, Any]) -> str:
    """What the page's transcript says so far (final or not)."""
    return " ".join(t["text"] for t in snap["transcript"]).lower()


def played(snap: dict[str, Any], turn: int) -> float:
    """How much of reply ``turn`` the page has reported played (ms)."""
    return max((p["played_ms"] for p in snap["positions"] if p["turn"] == turn), default=0.0)


def to_48k(pcm16k: bytes) -> bytes:
    return bytes(resample_pcm16(pcm16k, 16000, RATE))


def check_clear(snap: dict[str, Any], clear: dict[str, Any], turn: int) -> None:
    """The clear of ``turn`` emptied the page's buffer before its next render quantum."""
    assert clear["turn"] >= turn, clear
    # Causal order: the message arrived, the worklet emptied its buffer, then the first
    # render quantum after the flush played nothing of the cleared turns.
    assert clear["receivedAt"] <= clear["appliedAt"] <= clear["silentReportedAt"], clear
    assert clear["silentAt"] >= clear["receivedAt"], clear
    assert clear["bufferedMsAfter"] == 0, clear
    assert clear["staleAfter"] == 0 and clear["samplesAfter"] == 0, clear
    # The page told the server where the turn stopped, and played nothing of it after that.
    (stopped,) = [p["played_ms"] for p in clear["stopped"] if p["turn"] == turn]
    reports = [p for p in snap["positions"] if p["turn"] == turn]
    assert any(p["played_ms"] == stopped and p["at"] >= clear["appliedAt"] for p in reports)
    assert all(p["played_ms"] <= stopped for p in reports), (stopped, reports)
    print(
        f"\nclear of turn {clear['turn']}: silence at the page's output "
        f"{clear['msToSilence']:.1f} ms after the message, of which the audio device's own "
        f"latency {clear['outputLatencyMs']:.1f} ms; {clear['droppedMs']:.1f} ms of audio "
        f"dropped; the worklet's word reached the page after "
        f"{clear['appliedAt'] - clear['receivedAt']:.1f} ms"
    )


# -- the real embedded agent ----------------------------------------------------------------


def test_a_spoken_question_gets_a_spoken_answer_from_the_embedded_agent(tmp_path: Path) -> None:
    """Silero, Whisper, Gemma and Piper behind the page: the user is heard and answered."""
    # The weather question: one breath (no pause a VAD could split it at).
    question = next(u for u in demo_script() if u.name == "weather")
    capture = wav_bytes(silence(1500, RATE) + to_48k(question.audio) + silence(14000, RATE), RATE)
    host = LocalHost({"local": build(with_lead(load_spec(LOCAL_SPEC), 60.0))})
    app = create_app(host, auth=Auth(static_token=TOKEN))
    with served(app) as address:
        wait_ready(address, 90.0)
        with chromium(tmp_path, capture) as context:
            page, errors = open_page(context, address)
            page.click("#call")
            wait_for(page, lambda s: s["state"] == "in-call", 10, "the call to open")
            wait_for(page, mic_works, 10, "the microphone (is the capture WAV readable?)")
            wait_for(
                page,
                lambda s: (
                    any(t["final"] for t in s["transcript"])
                    and {"weather", "paris", "spring"} & set(re.findall(r"[a-z]+", words(s)))
                ),
                30,
                f"the transcript of {question.text!r}",
            )
            snap = wait_for(
                page,
                lambda s: any(
                    r["text"].strip() and played(s, r["turn"]) > 600 for r in s["replies"]
                ),
                40,
                "a reply, played by the page",
            )
            assert 0 < snap["framesPlayed"] <= snap["framesReceived"]
            first = next(r for r in snap["replies"] if played(snap, r["turn"]) > 600)
            row = next(r for r in snap["latency"] if r["turn"] == first["turn"])
            assert row["heardMs"] is not None and row["heardMs"] > 0, row
            # A typed turn while the bot talks: it barges in, and is answered like speech.
            page.fill("#text", "Stop. What can you do?")
            page.press("#text", "Enter")
            snap = wait_for(
                page,
                lambda s: (
                    s["replies"][-1]["turn"] > first["turn"]
                    and s["replies"][-1]["done"]
                    and s["replies"][-1]["text"].strip()
                ),
                40,
                "the answer to a typed message",
            )
            cut = next(r for r in snap["replies"] if r["turn"] == first["turn"])
            if cut["interrupted"]:  # (unless its audio was over before the text came)
                assert cut["text"].startswith((cut["heard"] or "").rstrip())
                clear = next(c for c in snap["clears"] if c["turn"] >= cut["turn"])
                check_clear(snap, clear, cut["turn"])
            assert snap["framesLate"] == 0
            row = next(r for r in snap["latency"] if r["turn"] == first["turn"])
            print(
                f"\nbrowser: the first reply heard {row['heardMs']:.0f} ms after the end of "
                f"speech ({row['from']}); the server's v2v: "
                f"{(row['server'] or {}).get('v2v_ms', 0):.0f} ms; gaps in playback: "
                f"{snap['underruns']}; replies: "
                f"{[r['text'] for r in snap['replies']]}"
            )
            page.wait_for_timeout(400)  # the last frame drawn
            # The README's picture: rewritten when asked (RSPP_SCREENSHOT=1) or missing.
            shot = SCREENSHOT
            if SCREENSHOT.exists() and not os.environ.get("RSPP_SCREENSHOT"):
                shot = tmp_path / SCREENSHOT.name
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            page.click("#call")  # hang up
            wait_for(page, lambda s: s["state"] == "ended", 5, "the hang-up")
            assert not errors, errors


# -- barge-in: the page's buffer emptied on a clear -------------------------------------------

FIRST = DemoLine(
    "What will the weather be like in Paris tomorrow?",
    "Tomorrow in Paris it will be mild and mostly cloudy, around fourteen degrees. "
    "There is a chance of light rain in the late afternoon, so take an umbrella. "
    "The wind will be light from the west, and the evening should be dry and cool.",
)
SECOND = DemoLine(
    "Sorry, stop, I meant London.",
    "No problem. In London tomorrow expect showers, about twelve degrees, "
    "and a fresh wind from the north, so bring a coat.",
)

# Ask the kernel to stop the bot once the page holds some audio (a flush with something in it).
INTERRUPT_WHEN_BUFFERED = """
() => new Promise((resolve) => {
  const started = performance.now();
  const poll = setInterval(() => {
    if (rspp.bufferedMs >= 30 || performance.now() - started > 5000) {
      clearInterval(poll);
      resolve(rspp.interrupt());
    }
  }, 2);
})
"""


@contextlib.contextmanager
def demo_server(where: str, tmp_path: Path, script: list[DemoLine]) -> Iterator[str]:
    """The fake demo agent behind ``rspp serve`` (``local``) or a cluster's gateway."""
    pipeline = build(with_lead(demo_pipeline(script).spec, 60.0))
    if where == "local":
        app = create_app(LocalHost({"demo": pipeline}), auth=Auth(static_token=TOKEN))
        with served(app) as address:
            yield address
        return
    import msgspec

    from rspp.cluster.local import ProcessCluster

    spec = tmp_path / "demo.yaml"
    spec.write_bytes(msgspec.yaml.encode(pipeline.spec))
    with ProcessCluster([str(spec)], env={**os.environ, "RSPP_TOKEN": TOKEN}) as cluster:
        cluster.dispatcher("d1")
        cluster.worker("w1")
        cluster.worker("w2")
        cluster.gateway("g1")
        cluster.wait_ready("w1", "w2", "g1")
        yield f"127.0.0.1:{cluster.ports['g1']}"


@pytest.mark.parametrize("where", ["local", "cluster"])
def test_a_barge_in_empties_the_page_playback_buffer_at_once(tmp_path: Path, where: str) -> None:
    """Talk, let the bot talk, talk over it; then stop it from the page: silence, at once.

    The same page against ``rspp serve`` and against a cluster's gateway (a private
    Redis, a dispatcher, two workers and a gateway as processes).
    """
    capture = wav_bytes(
        silence(1000, RATE)
        + speech_like(1500, RATE, seed=1)
        + silence(3500, RATE)  # the reply starts ~1 s into this and lasts ~10 s
        + speech_like(1200, RATE, seed=2)  # the barge-in
        + silence(9000, RATE),
        RATE,
    )
    with (
        demo_server(where, tmp_path, [FIRST, SECOND]) as address,
        chromium(tmp_path, capture) as context,
    ):
        page, errors = open_page(context, address)
        page.click("#call")
        wait_for(page, lambda s: s["state"] == "in-call", 10, "the call to open")
        wait_for(page, mic_works, 10, "the microphone (is the capture WAV readable?)")
        wait_for(page, lambda s: s["framesPlayed"] > 10, 15, "the bot to talk")

        # 1. The user talks over the bot: the kernel interrupts the reply and clears.
        snap = wait_for(
            page,
            lambda s: s["clears"] and s["clears"][0]["silentAt"] is not None,
            15,
            "the barge-in's clear and the silence after it",
        )
        first = snap["replies"][0]
        check_clear(snap, snap["clears"][0], first["turn"])

        # 2. The next reply plays; the page asks the kernel to stop it while it holds audio.
        snap = wait_for(
            page,
            lambda s: (
                len(s["replies"]) >= 2
                and any(
                    p["turn"] == s["replies"][-1]["turn"] and p["played_ms"] > 500
                    for p in s["positions"]
                )
            ),
            15,
            "the next reply to play",
        )
        second = snap["replies"][-1]
        assert page.evaluate(INTERRUPT_WHEN_BUFFERED)
        snap = wait_for(
            page,
            lambda s: (
                len(s["clears"]) >= 2
                and s["clears"][1]["silentAt"] is not None
                and s["replies"][-1]["interrupted"]
            ),
            10,
            "the interrupt's clear",
        )
        clear = snap["clears"][1]
        check_clear(snap, clear, second["turn"])
        assert clear["droppedMs"] > 0, "the flush had audio to drop"

        # The kernel cut each reply at what the page played.
        for reply in snap["replies"]:
            assert reply["interrupted"], reply
            assert reply["heard"] is not None and len(reply["heard"]) < len(reply["text"])
            assert reply["text"].startswith(reply["heard"].rstrip())
        # No audio of an interrupted reply reached the page after its clear.
        assert snap["framesLate"] == 0
        row = next(r for r in snap["latency"] if r["turn"] == second["turn"])
        assert row["heardMs"] is not None and row["heardMs"] > 0, row
        print(f"heard the reply to the barge-in {row['heardMs']:.0f} ms after the speech ended")

        # A dropped connection is resumed (same session), within the window.
        session = snap["session"]
        assert page.evaluate("rspp.dropConnection()")
        snap = wait_for(
            page, lambda s: s["resumes"] == 1 and s["state"] == "in-call", 10, "the resume"
        )
        assert snap["session"] == session
        assert [c["code"] for c in snap["closes"]] == [4000]
        page.click("#call")  # hang up
        wait_for(page, lambda s: s["state"] == "ended", 5, "the hang-up")

        # A refused call says why, with the close code.
        page.goto(f"http://{address}/?token=wrong")
        page.click("#call")
        page.wait_for_function("rspp.state === 'error'", timeout=10_000)
        error = state(page)["error"]
        assert error["code"] == 4401 and "4401" in page.inner_text("#error"), error
        assert not errors, errors
