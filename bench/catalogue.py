"""Reliability catalogue items at their catalogue size, with the same code and checks as the CI tests, which run
them shorter:

- ``st-2``: kill -9 the gateway at random moments under load 20 times, restarting it each time; every request the
  client saw complete is stored exactly once (``tests/e2e/test_crash.py``; CI: 8 rounds, each mostly a gateway
  start).
- ``ld-4``: after warm-up, 10 x 100 requests per path (plain, stream, error, cancel) grow the gateway's traced
  memory by less than 25 % (``tests/gateway/test_bounds.py``; CI: 5 x 100 under 12.5 %).
- ``ld-5``: 20,000 requests with random keys, users and unknown model names; the /metrics series stay those after
  the first 1,000, under a fixed bound (``tests/gateway/test_bounds.py``; CI: 8,000 requests).
- ``cf-5``: 50 config writes in a second under traffic, then 1,000 reloads: traced memory under 25 % more,
  descriptors flat (``tests/gateway/test_reload_bounds.py``; CI: 500 reloads under 11.1 %).

Not run in CI. Usage: python -m bench.catalogue st-2 [--rounds 20] | ld-4 [--batches 10] | ld-5 [--requests 20000]
| cf-5 [--reloads 900]
A failed check exits non-zero with its assertion.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from pathlib import Path

from tests.e2e.test_crash import sigkill_rounds
from tests.fakes.openai_server import Behavior, FakeOpenAI
from tests.gateway.test_bounds import series_after, traced_growth
from tests.gateway.test_reload_bounds import reload_storm


def st_2(directory: Path, args: argparse.Namespace) -> str:
    fake = FakeOpenAI()
    try:
        fake.set("m-ok", Behavior(chunk_delay_s=0.003))
        return asyncio.run(sigkill_rounds(directory, fake.url, args.rounds))
    finally:
        fake.close()


def ld_4(directory: Path, args: argparse.Namespace) -> str:
    return asyncio.run(traced_growth(directory, args.batches))


def ld_5(directory: Path, args: argparse.Namespace) -> str:
    return asyncio.run(series_after(directory, args.requests))


def cf_5(directory: Path, args: argparse.Namespace) -> str:
    os.environ["T_ADMIN"] = "adm"  # the config's admin key, read at every reload
    return reload_storm(directory, args.reloads)


def main() -> None:
    parser = argparse.ArgumentParser(description="reliability catalogue items at their catalogue size")
    items = parser.add_subparsers(required=True)
    st2 = items.add_parser("st-2", help="SIGKILLs under load: nothing completed is lost or duplicated")
    st2.add_argument("--rounds", type=int, default=20)
    st2.set_defaults(run=st_2)
    ld4 = items.add_parser("ld-4", help="traced memory flat over repeated requests on every path")
    ld4.add_argument("--batches", type=int, default=10)
    ld4.set_defaults(run=ld_4)
    ld5 = items.add_parser("ld-5", help="/metrics series bounded whatever clients send")
    ld5.add_argument("--requests", type=int, default=20_000)
    ld5.set_defaults(run=ld_5)
    cf5 = items.add_parser("cf-5", help="memory and descriptors flat over config reloads")
    cf5.add_argument("--reloads", type=int, default=900, help="after 100 warm-up reloads")
    cf5.set_defaults(run=cf_5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="turnout-catalogue-") as directory:
        print(args.run(Path(directory), args))


if __name__ == "__main__":
    main()
