"""The packaged hosted-provider spec (``rspp/pipelines/openai.toml``) runs a real call.

Only what a deployment changes is changed: each provider's ``base_url``,
``api_key_env`` and ``model`` (and, for a short repeatable reply, the LLM's
``temperature`` and ``max_tokens``). The ASR and TTS nodes then talk to
``rspp serve-audio`` (Whisper tiny.en, Piper) and the LLM node to
``python -m llama_cpp.server`` (Gemma 3 270M): real OpenAI-compatible servers on
free local ports, reached over real HTTP. The committed recording
``weather.wav`` is played into the pipeline in real time, as ``rspp run`` does.

The API key is a secret planted in the environment: the chat server refuses a
request without it, so a reply proves it was sent, and it must appear in no
event and no log record. A chat server that is not there must cost the caller
one reply, reported as an ``error`` event, not the call.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import msgspec
import pytest

from rspp.agent import run_file
from rspp.events import Error, JsonCodec, LlmDelta, LlmDone, TurnCommit, TurnDone
from rspp.kernel import Pipeline, build, load_spec
from rspp.report import SessionReport
from tests.local.audio import level_db, recording, transcript, wer
from tests.providers import test_openai_chat_llama as chat_llama
from tests.providers.misbehaving_server import free_port

from . import audio_server

HOSTED_SPEC = Path(str(files("rspp.pipelines") / "openai.toml"))
#: The chat server runs with ``--api_key KEY`` and ``--model_alias gemma``.
KEY, KEY_ENV = chat_llama.KEY, chat_llama.KEY_ENV
#: Seconds of silence played after the recording, at most: enough for a whole reply.
TAIL_S = 30.0

#: The chat tests' llama.cpp server on a free port (a module-scoped fixture), shared, not copied.
llama_url = chat_llama.llama_url


@pytest.fixture(scope="module")
def audio_url() -> Iterator[str]:
    with audio_server() as running:
        yield running.base_url


@pytest.fixture
def secret(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> str:
    """The API key, in the environment variable the spec names; every log record kept."""
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.DEBUG)
    return KEY


def hosted_pipeline(audio_url: str, chat_url: str) -> Pipeline:
    """The packaged spec, its providers pointed at local servers."""
    spec = load_spec(HOSTED_SPEC)
    changes = {
        "asr": {"base_url": audio_url, "model": "whisper-1"},
        # Greedy and short, for a repeatable test of bounded length: the spec's 120 tokens at
        # 0.7 make Gemma 270M ramble for half a minute of speech.
        "llm": {"base_url": chat_url, "model": "gemma", "temperature": 0.0, "max_tokens": 40},
        "tts": {"base_url": audio_url, "model": "tts-1"},
    }
    assert {n.name for n in spec.nodes if "base_url" in n.config} == set(changes)
    nodes = [
        msgspec.structs.replace(n, config={**n.config, **changes[n.name], "api_key_env": KEY_ENV})
        if n.name in changes
        else n
        for n in spec.nodes
    ]
    return build(msgspec.structs.replace(spec, nodes=nodes))


async def call(pipeline: Pipeline, timeout_s: float) -> SessionReport:
    """Play the weather question into ``pipeline``; a hang fails the test."""
    async with asyncio.timeout(timeout_s):
        return await run_file(pipeline, recording("weather"), tail_s=TAIL_S)


def assert_secret_kept(
    secret: str, result: SessionReport, caplog: pytest.LogCaptureFixture
) -> None:
    codec = JsonCodec()
    for event in result.events:
        assert secret.encode() not in codec.encode(event), event.kind
        assert secret not in repr(event), event.kind
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for record in caplog.records:
        assert secret not in record.getMessage(), record.name
    assert secret not in caplog.text  # formatted, tracebacks included


def test_a_call_through_the_hosted_spec_on_local_servers(
    audio_url: str, llama_url: str, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    result = asyncio.run(call(hosted_pipeline(audio_url, llama_url), timeout_s=90.0))

    assert [e for e in result.events if isinstance(e, Error)] == []
    assert result.stats.errors.total() == 0
    (turn,) = result.turns
    assert wer([transcript("weather")], [turn.user]) <= 0.15, turn.user
    assert turn.reply.strip(), "the chat server's reply"
    assert not turn.interrupted
    assert level_db(result.bot_pcm) > -35.0, "the reply was spoken, not silence"
    assert turn.latency is not None and turn.latency.v2v_ms is not None
    assert_secret_kept(secret, result, caplog)


def test_a_missing_chat_server_costs_one_reply_not_the_call(
    audio_url: str, secret: str, caplog: pytest.LogCaptureFixture
) -> None:
    closed = f"http://127.0.0.1:{free_port()}/v1"
    result = asyncio.run(call(hosted_pipeline(audio_url, closed), timeout_s=60.0))

    (commit,) = [e for e in result.events if isinstance(e, TurnCommit)]
    (error,) = [e for e in result.events if isinstance(e, Error)]
    assert (error.source, error.code, error.turn) == ("llm", "ProviderConnectError", commit.turn)
    assert dict(result.stats.errors) == {"llm": 1}
    assert not any(isinstance(e, LlmDelta) for e in result.events)
    (done,) = [e for e in result.events if isinstance(e, LlmDone)]
    assert done.finish_reason == "error"
    # The turn ends: the output closes it, and the next one could begin.
    assert [e.turn for e in result.events if isinstance(e, TurnDone)] == [commit.turn]
    assert_secret_kept(secret, result, caplog)
