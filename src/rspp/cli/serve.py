"""``rspp serve [SPEC ...]``: calls over the network (``rspp.transports.server``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.routing import BaseRoute

    from rspp.kernel import Pipeline
    from rspp.transports.metrics import ServerMetrics
    from rspp.transports.port import SessionHost
    from rspp.transports.server import ExtraRoutes

__all__ = [
    "add_logging_args",
    "add_parser",
    "add_pipeline_args",
    "add_server_args",
    "add_trace_arg",
    "configure_observability",
    "load_pipelines",
    "run_server",
    "serve",
]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "serve",
        help="serve calls: the browser page, the WebSocket call protocol, Twilio media streams",
    )
    add_pipeline_args(parser)
    parser.add_argument("--max-calls", type=int, default=100, help="concurrent calls at most")
    add_server_args(parser)
    add_logging_args(parser)
    add_trace_arg(parser)
    parser.set_defaults(func=serve)


def add_server_args(parser: argparse.ArgumentParser) -> None:
    """What a call server (``rspp serve``, ``rspp gateway``) listens on and lets in."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on")
    parser.add_argument(
        "--resume-window", type=float, default=30.0, help="seconds a dropped call waits"
    )
    parser.add_argument(
        "--allowed-origin",
        action="append",
        default=[],
        help="a browser origin allowed to call (repeatable; default: this server's own)",
    )
    parser.add_argument(
        "--public-url", help="the URL callers reach this server by (for Twilio's TwiML)"
    )


def add_pipeline_args(parser: argparse.ArgumentParser) -> None:
    """The pipelines a server (or a cluster's gateway and workers) offers."""
    parser.add_argument(
        "specs", nargs="*", help="pipeline specs to offer (default: the embedded local agent)"
    )
    parser.add_argument("--fake", action="store_true", help="the test kit's fake models instead")
    parser.add_argument(
        "--lead-ms", type=float, default=60.0, help="bot audio sent ahead of real time"
    )


def add_logging_args(parser: argparse.ArgumentParser) -> None:
    """How a process logs (``rspp serve`` and every cluster role)."""
    parser.add_argument("--log-level", default="info", help="logging level")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="log lines as text, or one JSON object per line with the session's context",
    )


def add_trace_arg(parser: argparse.ArgumentParser) -> None:
    """OpenTelemetry traces of the sessions a process runs (``rspp serve``, ``rspp worker``)."""
    parser.add_argument(
        "--trace",
        choices=("off", "console", "otlp"),
        default="off",
        help="a span per turn, a child per stage: on stdout, or to OTEL_EXPORTER_OTLP_ENDPOINT",
    )


def configure_observability(args: argparse.Namespace, role: str) -> None:
    """Logging as ``add_logging_args`` asked, and tracing if ``add_trace_arg`` turned it on."""
    from rspp.observability import configure_logging
    from rspp.observability.tracing import enable

    configure_logging(args.log_level, args.log_format, role)
    mode = getattr(args, "trace", "off")
    if mode != "off":
        try:
            enable(mode, role=role)
        except RuntimeError as exc:  # no OTLP exporter installed
            raise SystemExit(f"rspp {role}: {exc}") from None


def load_pipelines(args: argparse.Namespace, command: str) -> dict[str, Pipeline] | None:
    """The pipelines ``add_pipeline_args`` asked for, built (None: the error is printed)."""
    from rspp.kernel import BuildError, build, load_spec
    from rspp.transports.server import with_lead

    pipelines: dict[str, Pipeline] = {}
    try:
        if args.fake:
            from rspp.demo import caller_script, demo_pipeline

            fake = demo_pipeline(caller_script())  # it answers `rspp call --script demo`
            pipelines[fake.name] = build(with_lead(fake.spec, args.lead_ms))
        from rspp.agent import LOCAL_SPEC

        specs = args.specs or ([] if args.fake else [str(LOCAL_SPEC)])
        for path in specs:
            pipeline = build(with_lead(load_spec(Path(path)), args.lead_ms))
            pipelines[pipeline.name] = pipeline
    except (BuildError, OSError) as exc:
        print(f"rspp {command}: {exc}", file=sys.stderr)
        return None
    return pipelines


def serve(args: argparse.Namespace) -> int:
    from rspp.transports.port import LocalHost

    configure_observability(args, "serve")
    pipelines = load_pipelines(args, "serve")
    if pipelines is None:
        return 2
    host = LocalHost(pipelines, max_sessions=args.max_calls)
    print(f"pipelines: {', '.join(pipelines)} (the first is the default)", flush=True)
    run_server(args, host)
    return 0


def run_server(
    args: argparse.Namespace, host: SessionHost, metrics: ServerMetrics | None = None
) -> None:
    """Serve calls through ``host`` as ``add_server_args`` says, until stopped."""
    import uvicorn

    from rspp.transports.auth import Auth
    from rspp.transports.call.endpoint import EndpointConfig
    from rspp.transports.direct import uvicorn_options
    from rspp.transports.server import ServerConfig, create_app

    auth = Auth.from_env()
    origins = args.allowed_origin or [
        o for o in os.environ.get("RSPP_ALLOWED_ORIGINS", "").split(",") if o
    ]
    config = ServerConfig(
        endpoint=EndpointConfig(allowed_origins=origins),
        resume_window_s=args.resume_window,
        freeze_gc=True,
        extra_routes=_twilio_routes(args.public_url),
    )
    app = create_app(
        host, auth=auth, config=config, metrics=metrics, status=lambda s: print(s, flush=True)
    )
    token = auth.static_token or auth.issue(24 * 3600)
    shown = "127.0.0.1" if args.host in ("0.0.0.0", "::") else args.host
    print(f"open http://{shown}:{args.port}/?token={token}", flush=True)
    logs: dict[str, Any] = {}
    if getattr(args, "log_format", "text") == "json":
        logs["log_config"] = None  # uvicorn's lines go through the JSON handler too
    options = {**uvicorn_options(), **logs}
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **options)


def _twilio_routes(public_url: str | None) -> ExtraRoutes | None:
    """The Twilio endpoint, when ``TWILIO_AUTH_TOKEN`` is set (it signs Twilio's requests)."""
    from rspp.transports.twilio import auth_token_from_env, twilio_routes

    token = auth_token_from_env()
    if not token:
        return None

    def routes(host: SessionHost, metrics: ServerMetrics) -> list[BaseRoute]:
        return twilio_routes(
            host,
            auth_token=token,
            public_url=public_url,
            metrics=lambda what: metrics.twilio.labels(what).inc(),
            drops=metrics.drops,
        )

    return routes
