"""ST-2 at the catalogue's size: kill -9 the gateway at random moments under load 20 times, restarting it each
time; every request the client saw complete is stored exactly once. The same rounds and checks as
``tests/e2e/test_crash.py``, which CI runs 8 times (each round is mostly a gateway start).

Not run in CI. Usage: python -m bench.crash [--rounds 20] [--seed 20261126]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

from tests.e2e.test_crash import sigkill_rounds
from tests.fakes.openai_server import Behavior, FakeOpenAI


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261126)
    args = parser.parse_args()
    fake = FakeOpenAI()
    try:
        fake.set("m-ok", Behavior(chunk_delay_s=0.003))
        with tempfile.TemporaryDirectory(prefix="turnout-crash-") as directory:
            print(asyncio.run(sigkill_rounds(Path(directory), fake.url, args.rounds, args.seed)))
    finally:
        fake.close()


if __name__ == "__main__":
    main()
