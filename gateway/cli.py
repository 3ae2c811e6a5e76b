"""The ``turnout`` command: ``serve``, ``check``, ``export`` (and more subcommands as the product grows).

Usage: ``turnout serve -c turnout.yaml --port 8080``; ``turnout check turnout.yaml``;
``turnout export -c turnout.yaml --format openai-chat --label good -o train.jsonl``.
Errors go to stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, cast

from gateway import subcommands
from gateway.config import ConfigError, duration_seconds, load_config
from gateway.progress import Progress, add_quiet, config_failed, note


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.server_protocol import HEAD_TIMEOUT_ENV

    path = Path(args.config).absolute()  # not resolve(): a ConfigMap mount swaps the ..data symlink under it
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        return config_failed(exc)
    server = loaded.config.server
    state_dir = Path(server.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TURNOUT_CONFIG"] = str(path)
    os.environ[HEAD_TIMEOUT_ENV] = str(server.head_timeout_s)  # read by every worker's protocol
    if args.workers > 1:
        metrics_dir = state_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    # uvicorn re-raises the SIGTERM it handled once it has shut down gracefully, under the handler it found:
    # a no-op one makes a graceful stop exit 0 (uvicorn installs its own before it loads the app)
    signal.signal(signal.SIGTERM, lambda sig, frame: None)
    uvicorn.run(
        "gateway.app:from_environment",
        factory=True,
        host=args.host or server.host,
        port=args.port or server.port,
        workers=args.workers,
        loop="uvloop",
        http="gateway.server_protocol:BoundedHttpToolsProtocol",  # httptools with a cap on the request head (431)
        limit_concurrency=server.max_connections,
        access_log=False,
        proxy_headers=False,  # the client address is never used; skips a middleware on every request
        log_level="info",
        # the drain clock (gateway/shutdown.py) cuts what is still open at drain_s; this is the backstop
        timeout_graceful_shutdown=math.ceil(server.drain_s + 5),
    )
    return 0


def check(args: argparse.Namespace) -> int:
    from gateway import dataset_cli, eval_cli

    try:
        loaded = load_config(args.file, check_env=not args.no_env)
    except ConfigError as exc:
        return config_failed(exc)
    config = loaded.config
    for warning in dataset_cli.check_warnings(loaded):
        print(f"{args.file}: warning: {warning}", file=sys.stderr)
    suite_errors = eval_cli.check_suites(loaded)
    for line in suite_errors:
        print(f"{args.file}: {line}", file=sys.stderr)
    if suite_errors:
        return 2
    print(f"{args.file}: ok ({len(config.upstreams)} upstreams, {len(config.routes)} routes)")
    return 0


def _since(value: str) -> float:
    """``7d`` (that long ago) or an ISO 8601 date/time, as unix seconds."""
    try:
        return time.time() - duration_seconds(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a duration such as 7d or an ISO 8601 date, got {value!r}") from None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)).timestamp()


def _score(value: str) -> float:
    try:
        score = float(value)
    except ValueError:
        score = -1.0
    if not 0 <= score <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value!r}")
    return score


class _Counted:
    """The export's output (it only calls ``write``), counting the lines written into the progress."""

    def __init__(self, out: BinaryIO, bar: Progress) -> None:
        self._out, self._bar = out, bar

    def write(self, data: bytes) -> int:
        self._bar.update(data.count(b"\n"))
        return self._out.write(data)


def export(args: argparse.Namespace) -> int:
    import asyncio

    from collectors.export import export as run_export
    from collectors.store import UnknownStore, open_store
    from collectors.store.base import Query, StoreUnavailable

    try:
        loaded = load_config(args.config, store_only=True)
    except ConfigError as exc:
        return config_failed(exc)
    query = Query(route=args.route, since=args.since, role=args.role, client=args.client, tag=args.tag)

    async def run(out: BinaryIO) -> int:
        store = open_store(loaded.secrets.store_dsn)
        try:
            await store.open()
            with Progress("exporting", unit="line", quiet=args.quiet) as bar:
                return await run_export(
                    store, cast(BinaryIO, _Counted(out, bar)), fmt=args.format, query=query, label=args.label,
                    min_score=args.min_score, dedupe=args.dedupe,
                )  # fmt: skip
        finally:
            await store.close()

    try:
        if args.output in (None, "-"):
            count = asyncio.run(run(sys.stdout.buffer))
            sys.stdout.buffer.flush()
        else:
            with open(args.output, "wb") as f:
                count = asyncio.run(run(f))
    except (UnknownStore, StoreUnavailable, OSError) as exc:
        print(f"turnout export: {exc}", file=sys.stderr)
        return 1
    note(args, f"turnout export: {count} lines")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="turnout", description="OpenAI-compatible gateway for fine-tuned models.")
    sub = top.add_subparsers(dest="command", required=True)
    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("-c", "--config", default="turnout.yaml", help="config file (default: turnout.yaml)")
    p.add_argument("--host", help="listen address (default: server.host)")
    p.add_argument("--port", type=int, help="listen port (default: server.port)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    p.set_defaults(run=serve)
    p = sub.add_parser("check", help="validate a config file without connecting to anything")
    p.add_argument("file", help="config file")
    p.add_argument(
        "--no-env", action="store_true", help="do not require the *_env variables (e.g. in CI, without secrets)"
    )
    p.set_defaults(run=check)
    p = sub.add_parser("export", help="write stored interactions as JSON lines (training data)")
    p.add_argument("-c", "--config", default="turnout.yaml", help="config file naming the store")
    p.add_argument("--format", choices=("raw", "openai-chat"), default="raw", help="line format (default: raw)")
    p.add_argument("--route", help="only this route")
    p.add_argument("--since", type=_since, help="only newer than this: a duration (7d, 12h) or an ISO 8601 date")
    p.add_argument("--label", choices=("good", "bad"), help="only interactions whose latest feedback label is this")
    p.add_argument("--min-score", type=_score, help="only interactions whose latest feedback score is at least this")
    p.add_argument(
        "--role", choices=("primary", "shadow"), help="only this role (default: both for raw, primary for openai-chat)"
    )
    p.add_argument("--client", help="only interactions of this named client (auth.clients)")
    p.add_argument("--tag", help="only interactions carrying this tag (x-turnout-tags)")
    p.add_argument("--dedupe", action="store_true", help="keep one line per identical conversation (the first)")
    p.add_argument("-o", "--output", help="output file (default: standard output)")
    add_quiet(p)
    p.set_defaults(run=export)
    subcommands.add_parsers(sub)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    os.umask(0o077)  # the store (and its -wal, -shm), exports, state: readable by this user only
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
