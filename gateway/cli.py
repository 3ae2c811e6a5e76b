"""The ``turnout`` command: ``serve``, ``check`` (and more subcommands as the product grows).

Usage: ``turnout serve -c turnout.yaml --port 8080``; ``turnout check turnout.yaml``.
Errors go to stderr with a non-zero exit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from gateway.config import ConfigError, load_config


def _fail(exc: ConfigError) -> int:
    for line in exc.errors:
        print(f"{exc.path}: {line}", file=sys.stderr)
    return 2


def serve(args: argparse.Namespace) -> int:
    import uvicorn

    path = Path(args.config).absolute()  # not resolve(): a ConfigMap mount swaps the ..data symlink under it
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        return _fail(exc)
    server = loaded.config.server
    state_dir = Path(server.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    os.environ["TURNOUT_CONFIG"] = str(path)
    if args.workers > 1:
        metrics_dir = state_dir / "metrics"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    uvicorn.run(
        "gateway.app:from_environment",
        factory=True,
        host=args.host or server.host,
        port=args.port or server.port,
        workers=args.workers,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=30,
    )
    return 0


def check(args: argparse.Namespace) -> int:
    try:
        loaded = load_config(args.file)
    except ConfigError as exc:
        return _fail(exc)
    config = loaded.config
    print(f"{args.file}: ok ({len(config.upstreams)} upstreams, {len(config.routes)} routes)")
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
    p.set_defaults(run=check)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    sys.exit(main())
