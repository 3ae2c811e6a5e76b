"""Detection delay and false-alarm rate of the drift check on the synthetic month-1 / month-6 traffic.

Detection delay: interactions in the current window needed before the check flags input drift (score above
max_psi with a Holm-adjusted p-value below 0.01) in at least 95% of trials, against a reference of 1,000
month-1 interactions, for current traffic where a share of the interactions is month-6 traffic (1.0: all of
it). False alarms: month-1 against month-1, fresh samples each trial, at several sample sizes.

Usage: ``python -m bench.drift_delay [--trials 100]`` (about a minute per 100 trials).
"""

from __future__ import annotations

import argparse
import random
from typing import Any

from collectors.drift.descriptors import describe
from policies.drift import MIN_SAMPLES
from policies.drift_signals import compare
from tests.drift_traffic import mixed, month1

MAX_PSI = 0.2
SIZES = (MIN_SAMPLES, 75, 100, 150, 200, 300, 400, 600)
SHARES = (1.0, 0.5, 0.3, 0.2, 0.1)


def _described(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [describe(r["request"], r["response"], r["usage"]) for r in records]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=100)
    args = parser.parse_args()
    rng = random.Random(2026)
    reference = _described(month1(rng, 1000))
    print(f"detection: share of {args.trials} trials flagged (reference 1000 month-1 interactions)")
    print("month-6 share | " + " | ".join(f"n={n}" for n in SIZES) + " | delay (95%)")
    for share in SHARES:
        rates = []
        for n in SIZES:
            hits = sum(
                compare(reference, _described(mixed(rng, n, share)), max_psi=MAX_PSI).scores["input"] > MAX_PSI
                for _ in range(args.trials)
            )
            rates.append(hits / args.trials)
        delay = next((f"{n}" for n, r in zip(SIZES, rates, strict=True) if r >= 0.95), f"> {SIZES[-1]}")
        print(f"{share:>13} | " + " | ".join(f"{r:.2f}" for r in rates) + f" | {delay}")
    print(f"false alarms: month-1 against month-1, {args.trials * 5} trials per size (overall > max_psi)")
    for n in (MIN_SAMPLES, 200, 1000):
        alarms = sum(
            compare(_described(month1(rng, n)), _described(month1(rng, n)), max_psi=MAX_PSI).scores["overall"] > MAX_PSI
            for _ in range(args.trials * 5)
        )
        print(f"  n={n} a side: {alarms}/{args.trials * 5} = {alarms / (args.trials * 5):.3%}")


if __name__ == "__main__":
    main()
