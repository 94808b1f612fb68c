"""A cluster of real processes on this machine: ``rspp cluster``, the tests, the chaos benchmark.

:class:`ProcessCluster` starts each role as its own ``rspp`` subprocess (a
private ``redis-server`` unless given a URL), names them, and lets a caller
signal any of them -- SIGKILL, SIGTERM, SIGSTOP/SIGCONT -- the way a failure or
Kubernetes would. Every process's output goes to a log file of its own.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from rspp.cluster.redis_server import RedisServer, free_port

__all__ = ["ProcessCluster"]


class ProcessCluster:
    """Named ``rspp`` role processes sharing one store (a context manager)."""

    def __init__(
        self,
        pipeline_args: Sequence[str] = ("--fake",),
        *,
        redis_url: str | None = None,
        env: dict[str, str] | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.pipeline_args = list(pipeline_args)
        self.redis: RedisServer | None = None
        self.redis_url = redis_url or ""
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("RSPP_TOKEN", secrets.token_urlsafe(12))
        self.env.setdefault("RSPP_TOKEN_SECRET", secrets.token_hex(32))
        self.env.setdefault("RSPP_ADMIN_TOKEN", secrets.token_urlsafe(12))
        self.log_dir = log_dir or Path(tempfile.mkdtemp(prefix="rspp-cluster-"))
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    @property
    def token(self) -> str:
        return self.env["RSPP_TOKEN"]

    def start(self) -> ProcessCluster:
        if not self.redis_url:
            self.redis = RedisServer().start()
            self.redis_url = self.redis.url
        return self

    def _spawn(self, name: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        if name in self.procs and self.procs[name].poll() is None:
            raise ValueError(f"{name} is running")
        log = (self.log_dir / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            [sys.executable, "-m", "rspp.cli.main", *argv],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[name] = proc
        return proc

    def dispatcher(self, name: str, *extra: str) -> None:
        port = free_port()
        self.ports[name] = port
        self._spawn(
            name,
            [
                "dispatcher",
                "--redis",
                self.redis_url,
                "--id",
                name,
                "--admin-port",
                str(port),
                *extra,
            ],
        )

    def worker(self, name: str, *extra: str, capacity: int = 50) -> None:
        port = free_port()
        self.ports[name] = port
        argv = ["worker", *self.pipeline_args, "--redis", self.redis_url, "--id", name]
        argv += ["--capacity", str(capacity), "--http-port", str(port), *extra]
        self._spawn(name, argv)

    def gateway(self, name: str, port: int | None = None, host: str = "127.0.0.1") -> str:
        port = port or free_port()
        self.ports[name] = port
        argv = ["gateway", *self.pipeline_args, "--redis", self.redis_url]
        self._spawn(name, [*argv, "--host", host, "--port", str(port)])
        return self.url(name)

    def url(self, gateway: str) -> str:
        return f"ws://127.0.0.1:{self.ports[gateway]}/v1/call"

    def http(self, name: str, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.ports[name]}{path}", timeout=2
            ) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError as exc:
            return 0, str(exc)

    def wait_ready(self, *names: str, timeout_s: float = 60.0) -> None:
        """Wait until each named gateway and worker answers ``/readyz`` with 200."""
        deadline = time.monotonic() + timeout_s
        for name in names:
            while self.http(name, "/readyz")[0] != 200:
                proc = self.procs[name]
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log(name)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} is not ready: {self.log(name)[-2000:]}")
                time.sleep(0.05)

    def log(self, name: str) -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def signal(self, name: str, sig: signal.Signals) -> None:
        self.procs[name].send_signal(sig)

    def wait(self, name: str, timeout_s: float) -> int:
        return self.procs[name].wait(timeout_s)

    def alive(self, name: str) -> bool:
        return self.procs[name].poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if self.redis is not None:
            self.redis.stop()

    def __enter__(self) -> ProcessCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
