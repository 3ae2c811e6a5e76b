"""Progress of the long CLI commands (export, eval run/compare, dataset build): one convention for all.

On a terminal (standard error is a TTY) a tqdm bar on standard error; when standard error is piped or a file,
plain lines (``eval plus-one on prod: 120/200 cases``) at most every ``interval_s`` and once at the end, never a
carriage return or an escape sequence; with ``--quiet`` nothing. Results always go to standard output, errors
always to standard error, whatever the flags.

Usage::

    add_quiet(parser)
    with Progress("eval plus-one on prod", total=200, unit="case", quiet=args.quiet) as bar:
        ...; bar.update()
    note(args, "turnout export: 120 lines")   # informational: standard error, not with --quiet
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config import ConfigError


def add_quiet(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress and no notes on stderr (results and errors still)"
    )


def config_failed(exc: ConfigError) -> int:
    """Print a config file's errors, one ``path: key.path: message`` line each, on standard error; exit code 2."""
    for line in exc.errors:
        print(f"{exc.path}: {line}", file=sys.stderr)
    return 2


def note(args: argparse.Namespace, message: str) -> None:
    """An informational line on standard error, unless ``--quiet``."""
    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        unit: str = "item",
        *,
        quiet: bool = False,
        stream: IO[str] | None = None,
        interval_s: float = 2.0,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._quiet = quiet
        self._interval = interval_s
        self._last = time.monotonic()
        self._bar: Any = None
        if not quiet and self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=label, unit=unit, file=self._stream, leave=False)

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif not self._quiet and time.monotonic() - self._last >= self._interval:
            self._line()

    def _line(self) -> None:
        self._last = time.monotonic()
        of = f"/{self.total}" if self.total is not None else ""
        print(f"{self.label}: {self.done}{of} {self.unit}s", file=self._stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif not self._quiet:
            self._line()
            self._quiet = True  # one closing line

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
