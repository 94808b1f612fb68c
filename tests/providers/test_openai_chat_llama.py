"""The OpenAI chat client and the ``openai_llm`` node against a real local server.

``python -m llama_cpp.server`` serving Gemma 3 270M is a real OpenAI-compatible
server: its own SSE framing, chat template, API-key check and disconnect
handling. It runs as a subprocess for the whole module, started with
``--interrupt_requests False`` so that a new request does not cut the previous
one short by itself: only the client hanging up can stop a generation, which
is what the cancellation test checks.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rspp.events import Error, Event, LlmDelta, LlmDone, TurnCommit
from rspp.providers.errors import ProviderStatusError
from rspp.providers.local.assets import gemma_gguf
from rspp.providers.openai import ChatClient, ChatStream, Timeouts
from tests.kernel.helpers import make_pipeline

from .misbehaving_server import free_port

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (the 'local' extra)")

KEY = "sk-local-3f9d2a7c"
KEY_ENV = "RSPP_TEST_LLAMA_KEY"
STARTUP_S = 120.0
STORY = [{"role": "user", "content": "Tell me a very long story about a dragon and a knight."}]


@pytest.fixture(scope="module")
def llama_url() -> Iterator[str]:
    """The ``/v1`` URL of a llama.cpp server on a free port, up until the module is done."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gemma_gguf()),
        "--model_alias",
        "gemma",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_ctx",
        "1024",
        "--interrupt_requests",
        "False",
        # The GGUF's own Jinja template makes this model end every reply at once.
        "--chat_format",
        "gemma",
        "--api_key",
        KEY,
    ]
    url = f"http://127.0.0.1:{port}/v1"
    with tempfile.TemporaryFile() as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_ready(server, url, log)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _wait_ready(server: subprocess.Popen[bytes], url: str, log: Any) -> None:
    deadline = time.monotonic() + STARTUP_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            break
        try:
            answer = httpx.get(f"{url}/models", headers={"authorization": f"Bearer {KEY}"})
            if answer.status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    log.seek(0)
    output = log.read().decode("utf-8", "replace")[-4000:]
    state = f"exited with {server.returncode}" if server.poll() is not None else "still starting"
    pytest.fail(f"llama_cpp.server did not answer within {STARTUP_S:g} s ({state}):\n{output}")


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY)


def client(url: str) -> ChatClient:
    return ChatClient(
        url,
        model="gemma",
        api_key_env=KEY_ENV,
        timeouts=Timeouts(first_token_s=30.0, token_s=10.0),
    )


async def read(stream: ChatStream, into: list[str] | None = None) -> list[str]:
    texts = into if into is not None else []
    async with stream:
        async for text in stream:
            texts.append(text)
    return texts


async def until(predicate: Any, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110
            await asyncio.sleep(0.005)


@pytest.mark.usefixtures("key")
def test_a_reply_streams_as_several_deltas_with_a_finish_reason(llama_url: str) -> None:
    async def main() -> None:
        async with client(llama_url) as chat:
            question = [{"role": "user", "content": "Name three colours."}]
            stream = chat.stream(question, max_tokens=48, temperature=0.0, extra={"seed": 1})
            texts = await read(stream)
        assert len(texts) >= 3
        assert all(texts)
        assert "".join(texts).strip()
        assert stream.finish_reason in ("stop", "length")
        assert (stream.attempts, stream.malformed) == (1, 0)

    asyncio.run(main())


@pytest.mark.usefixtures("key")
def test_max_tokens_is_honoured(llama_url: str) -> None:
    async def main() -> None:
        async with client(llama_url) as chat:
            stream = chat.stream(STORY, max_tokens=4, temperature=0.0)
            texts = await read(stream)
        assert stream.finish_reason == "length"
        assert 1 <= len(texts) <= 4

    asyncio.run(main())


@pytest.mark.usefixtures("key")
def test_cancelling_a_reply_frees_the_server_at_once(llama_url: str) -> None:
    # The server runs one generation at a time: if it went on with the cancelled
    # story (greedy, it runs to all 600 tokens), the next question would wait for
    # the rest of it. So the claim is checked against that alternative, timed at
    # the rate the story itself was streaming: a loaded machine slows both alike.
    async def main() -> None:
        async with client(llama_url) as chat:
            got: list[str] = []
            stamps: list[float] = []
            reply = chat.stream(STORY, max_tokens=600, temperature=0.0)

            async def listen() -> None:
                async with reply:
                    async for text in reply:
                        got.append(text)
                        stamps.append(time.perf_counter())

            story = asyncio.create_task(listen())
            await until(lambda: len(got) >= 12 or story.done(), 60.0)
            assert not story.done(), f"the story ended after {got!r}"
            cancelled = time.perf_counter()
            story.cancel()
            with pytest.raises(asyncio.CancelledError):
                await story
            after = len(got)
            # What the server would still owe the story if it had not stopped.
            per_token_s = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
            rest_s = (600 - after) * per_token_s

            stream = chat.stream([{"role": "user", "content": "Say hello."}], max_tokens=8)
            texts = await read(stream)
            answered = time.perf_counter() - cancelled
        assert len(got) == after  # nothing more of the story came
        assert texts
        # From the cancel to the end of the next reply (a few tenths when the server
        # stopped) in less than half the time the rest of the story would have taken.
        assert answered < rest_s / 2, (
            f"the server was still busy: the next reply took {answered:.2f} s after the "
            f"cancel; the rest of the story would take {rest_s:.2f} s"
        )

    asyncio.run(main())


def test_a_wrong_key_is_refused_with_the_servers_message(
    llama_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")

    async def main() -> None:
        async with client(llama_url) as chat:
            with pytest.raises(ProviderStatusError) as caught:
                await read(chat.stream(STORY, max_tokens=4))
        assert caught.value.status == 401
        assert caught.value.attempts == 1
        assert "sk-wrong-key" not in str(caught.value)

    asyncio.run(main())


def _pipeline(url: str) -> Any:
    config = {
        "base_url": url,
        "model": "gemma",
        "api_key_env": KEY_ENV,
        "max_tokens": 40,
        "temperature": 0.0,
        "first_token_timeout_ms": 30_000,
    }
    return make_pipeline(
        [
            {"name": "llm", "type": "openai_llm", "inputs": ["input"], "config": config},
            {"name": "sink", "type": "collect", "inputs": ["llm"]},
        ],
        inputs=("turn.commit",),
    )


@pytest.mark.usefixtures("key")
def test_the_node_streams_a_reply_in_a_session(llama_url: str) -> None:
    async def main() -> None:
        errors: list[Event] = []
        async with _pipeline(llama_url).session() as session:
            session.observe(lambda e: errors.append(e) if isinstance(e, Error) else None)
            seen: list[Event] = session.node("sink").seen
            session.push(TurnCommit(text="What is the capital of France?"))
            await until(lambda: any(isinstance(e, LlmDone) for e in seen), 60.0)
        deltas = [e for e in seen if isinstance(e, LlmDelta)]
        (done,) = [e for e in seen if isinstance(e, LlmDone)]
        assert len(deltas) >= 2 and "".join(d.text for d in deltas).strip()
        assert seen.index(done) == len(seen) - 1  # llm.done comes last
        assert done.finish_reason in ("stop", "length")
        assert {e.turn for e in seen} == {1}
        assert errors == []

    asyncio.run(main())


def test_the_node_reports_a_provider_failure_and_the_session_goes_on(
    llama_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-wrong-key")

    async def main() -> None:
        errors: list[Error] = []
        async with _pipeline(llama_url).session() as session:
            session.observe(lambda e: errors.append(e) if isinstance(e, Error) else None)
            seen: list[Event] = session.node("sink").seen
            for n in (1, 2):
                session.push(TurnCommit(text="Hello?"))
                await until(lambda n=n: len(errors) == n, 10.0)  # type: ignore[misc]
            assert session.running
        dones = [e for e in seen if isinstance(e, LlmDone)]
        assert [d.finish_reason for d in dones] == ["error", "error"]
        assert not any(isinstance(e, LlmDelta) for e in seen)
        assert [(e.source, e.code) for e in errors] == [("llm", "ProviderStatusError")] * 2
        assert all("HTTP 401" in e.message and "sk-wrong-key" not in e.message for e in errors)

    asyncio.run(main())
