"""JSON log lines, and the session context they carry from within a session's tasks."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from rspp.cluster import MemoryStore, SessionRecord
from rspp.cluster.redis_server import free_port
from rspp.cluster.worker import Worker, WorkerConfig
from rspp.demo import DEMO_SCRIPT, demo_pipeline
from rspp.events import Event
from rspp.observability import configure_logging, watch
from rspp.testing import RecordingSink, ScriptedCaller, run_virtual

log = logging.getLogger("rspp.test.logs")


@pytest.fixture
def lines() -> Iterator[io.StringIO]:
    """Log as JSON (role ``worker``) into a buffer for the test; then as before."""
    root = logging.getLogger()
    level = root.level
    stream = io.StringIO()
    handler = configure_logging("info", "json", "worker", stream=stream)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def parsed(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_line_is_one_json_object_with_time_level_logger_message(lines: io.StringIO) -> None:
    log.warning("disk %s is %d%% full", "/data", 93)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("it failed")
    first, second = parsed(lines)
    assert first["level"] == "WARNING"
    assert first["logger"] == "rspp.test.logs"
    assert first["message"] == "disk /data is 93% full"
    assert first["role"] == "worker"
    assert first["time"].endswith("+00:00") and "T" in first["time"]
    assert "session" not in first  # logged outside any session
    assert second["level"] == "ERROR"
    assert "ValueError: boom" in second["exception"]


def test_lines_from_a_sessions_tasks_carry_its_context(lines: io.StringIO) -> None:
    sink = RecordingSink()

    def on_reply_end(event: Event) -> None:  # runs in whichever session task emitted it
        if event.kind == "turn.done":
            log.info("reply %d played", event.turn)

    async def call() -> None:
        pipeline = demo_pipeline()
        session = pipeline.session("call-7", sinks={"client": sink}, observers=[on_reply_end])
        watch(session, worker="w3", incarnation=4)
        async with session:
            await ScriptedCaller(session, sink, [line.utterance() for line in DEMO_SCRIPT]).play()

    async def main() -> None:
        await asyncio.create_task(call())
        log.info("after the call")  # this task never bound a session

    run_virtual(main())
    *played, after = [line for line in parsed(lines) if line["logger"] == "rspp.test.logs"]
    assert [line["message"] for line in played] == [f"reply {n} played" for n in (1, 3, 5)]
    for line in played:
        assert line["session"] == "call-7"
        assert line["worker"] == "w3"
        assert line["incarnation"] == 4
        assert line["turn"] == int(line["message"].split()[1])
    assert after["message"] == "after the call"
    assert not {"session", "turn", "worker", "incarnation"} & set(after)


def test_a_workers_session_logs_with_its_worker_session_and_token(lines: io.StringIO) -> None:
    async def body() -> None:
        store = MemoryStore()
        pipeline = demo_pipeline()
        worker = Worker(store, {pipeline.name: pipeline}, WorkerConfig(id="w1"))
        run = asyncio.create_task(worker.run(load=False))
        await asyncio.sleep(0.05)
        await store.create(SessionRecord(id="s1", pipeline=pipeline.name), 60)
        await worker.take("s1", "open")
        for _ in range(100):
            if "taken" in lines.getvalue():
                break
            await asyncio.sleep(0.01)
        worker.stop()
        await asyncio.wait_for(run, 5.0)

    asyncio.run(asyncio.wait_for(body(), 20))
    taken = [line for line in parsed(lines) if "taken" in line["message"]]
    assert taken, lines.getvalue()
    # Logged by the worker's own logger, in the session's task: the context says whose.
    assert taken[0]["logger"] == "rspp.cluster.worker"
    assert (taken[0]["session"], taken[0]["worker"], taken[0]["incarnation"]) == ("s1", "w1", 1)
    stopped = [line for line in parsed(lines) if line["message"] == "worker w1: stopped"]
    assert stopped and "session" not in stopped[0]


def test_rspp_dispatcher_log_format_json() -> None:
    """The CLI: a role started with ``--log-format json`` writes JSON lines on stderr."""
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens: the line comes first
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "rspp.cli.main", "dispatcher", "--log-format", "json"]
    proc = subprocess.Popen(
        [*cmd, "--redis", dead, "--id", "d9"],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    try:
        assert proc.stderr is not None
        first = json.loads(proc.stderr.readline())
    finally:
        proc.terminate()
        proc.wait(10)
    assert first["role"] == "dispatcher"
    assert first["logger"] == "rspp.cluster"
    assert first["level"] == "INFO"
    assert first["message"].startswith("dispatcher d9: store ")
