"""The world ``turnout demo`` runs in: a support bot's questions and right answers, two built-in models that
get a different share of them wrong, the config and eval suite that describe them, simulated users who ask
and rate what they get, and a simulated reviewer.

Everything is deterministic given its seed. Users have stable ids (``user-17``), so the A/B split is sticky
for them as for real users; their feedback depends on the answer they got: a right answer is rated good
9 times in 10, a wrong one bad 8 times in 10 (people are noisy raters).

Usage::

    world = World(seed=7)
    (directory / "turnout.yaml").write_text(world.config(port=8080, candidate_dataset=None))
    async with aiohttp.ClientSession() as http:
        tally = await world.traffic(http, url, requests=400, month=1, concurrency=16)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

ROUTE = "support-bot"
PROD, CAND = "prod-v1", "cand-v2"
PROD_WRONG, CAND_WRONG = 0.35, 0.08  # the dummy's quality knob: share of questions answered wrong
USERS = 400

_THINGS = ("order", "invoice", "parcel", "refund", "password", "warranty", "receipt", "delivery", "account", "coupon")
_ASKS = (
    ("Where is my {t}?", "Your {t} is listed under Account, then History, with its current status."),
    ("How do I change my {t}?", "Open Account, choose the {t}, then Edit; changes are saved at once."),
    ("Can I get help with my {t}?", "Yes: write to help@example.com with your {t} number and we answer within a day."),
    ("Why was my {t} delayed?", "A {t} can be delayed by carrier backlogs; you get an e-mail when it moves again."),
)
# month 6: the product grew a subscription business, and users ask about it in a different way
_MONTH6 = (
    "hey, so my premium subscription renewal charged me twice?? what gives",
    "is there a family plan for the streaming add-on and does it include offline downloads",
    "cancel subscription immediately and refund the annual membership fee please",
    "why does the app say my trial expired when I upgraded to premium yesterday",
    "how do I switch my yearly membership to monthly billing without losing credits",
    "the streaming add-on keeps buffering on my smart tv, is my subscription broken",
)


def questions() -> dict[str, str]:
    """Month-1 questions and their right answers (the dummies' ``answers`` table)."""
    return {ask.format(t=t): answer.format(t=t) for t in _THINGS for ask, answer in _ASKS}


def config(port: int, admin_key_env: str, *, candidate_dataset: str | None, fast: bool) -> str:
    """The demo's config file: production at 100 %, a better candidate at 0 % with a rollout planned."""
    answers = orjson.dumps(questions()).decode()
    dataset = f", trained_at: {dt.date.today()}, dataset: {candidate_dataset}" if candidate_dataset else ""
    # the full demo holds each step 20 s: at the rollout's pace (gateway/demo.py) the 50 % step then sees ~150
    # users an arm, enough for the report to show the primary better, not only the candidate no worse
    steps, interval, min_duration, min_users = (
        ("[50, 100]", "2s", "2s", 20) if fast else ("[10, 50, 100]", "20s", "10s", 30)
    )
    return f"""# Written by `turnout demo`: two built-in models of different quality behind one route.
server: {{host: 127.0.0.1, port: {port}, state_dir: ./state}}
store: sqlite:///turnout.db
auth: {{admin_key_env: {admin_key_env}}}
datasets_dir: ./datasets
upstreams:
  {PROD}:   # production: answers {PROD_WRONG:.0%} of questions wrong
    provider: dummy
    model: support-v1
    trained_at: 2026-06-01
    answers: &answers {answers}
    wrong_share: {PROD_WRONG}
  {CAND}: {{provider: dummy, model: support-v2, answers: *answers, wrong_share: {CAND_WRONG}{dataset}}}   # retrained
routes:
  {ROUTE}:
    variants: {{{PROD}: 100, {CAND}: 0}}
    experiment: v2-rollout
    sticky_by: user
    retraining: {{max_model_age: 30d, min_feedback_score: 0.8, min_ratings: 20}}
    drift: {{reference: window:1h, every: 1h, max_psi: 0.2}}
    analysis:
      control: {PROD}
      primary: thumbs_up
      guardrails: {{error_rate: 0.05}}
      min_users: {min_users}
      min_duration: {min_duration}
      max_duration: 1h
    rollout:
      candidate: {CAND}
      gates: {{eval: evals/support.yaml, shadow: {{min_samples: 40, min_agreement: 0.5}}}}
      steps: {steps}
      interval: {interval}
review: {{sample: 0.15, flag: {{label: bad}}}}
datasets:
  support: {{route: {ROUTE}, include: {{reviewed: approved}}}}
"""


def suite() -> str:
    """The eval suite: every month-1 question, its right answer expected word for word."""
    cases = [
        {
            "id": f"q{i:02d}",
            "messages": [{"role": "user", "content": q}],
            "expected": a,
            "assert": [{"type": "equals"}, {"type": "not_contains", "value": ["sorry", "not sure"]}],
        }
        for i, (q, a) in enumerate(sorted(questions().items()))
    ]
    head = "# Written by `turnout demo`: the golden set of the support bot.\nsuite: support-golden\n"
    return head + "threshold: {pass_rate: 0.85}\ncases:\n" + "".join(f"  - {orjson.dumps(c).decode()}\n" for c in cases)


@dataclass
class Tally:
    requests: int = 0
    errors: int = 0
    right: int = 0
    feedback: int = 0
    by_variant: Counter[str] = field(default_factory=Counter)
    right_by_variant: Counter[str] = field(default_factory=Counter)


class World:
    def __init__(self, seed: int = 7) -> None:
        self.rng = random.Random(seed)
        self.answers = questions()
        self.asked = list(self.answers)

    def prompt(self, month: int) -> str:
        return self.rng.choice(self.asked if month == 1 else _MONTH6)

    async def traffic(
        self, http: aiohttp.ClientSession, url: str, *, requests: int, month: int = 1, concurrency: int = 16,
        rate: float | None = None, progress: Any = None,
    ) -> Tally:  # fmt: skip
        """``requests`` chat requests from random users, each followed by that user's feedback; with ``rate``,
        the i-th request starts no earlier than i / rate seconds after the first (at most that many a second)."""
        tally = Tally()
        work = [(f"user-{self.rng.randrange(USERS)}", self.prompt(month), self.rng.random()) for _ in range(requests)]
        queue: asyncio.Queue[tuple[int, tuple[str, str, float]]] = asyncio.Queue()
        for item in enumerate(work):
            queue.put_nowait(item)
        began = time.monotonic()

        async def worker() -> None:
            while not queue.empty():
                i, (user, prompt, luck) = queue.get_nowait()
                if rate is not None:
                    await asyncio.sleep(began + i / rate - time.monotonic())
                await self._one(http, url, user, prompt, luck, tally)
                if progress is not None:
                    progress.update(1)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return tally

    async def _one(
        self, http: aiohttp.ClientSession, url: str, user: str, prompt: str, luck: float, tally: Tally
    ) -> None:
        body = {"model": ROUTE, "user": user, "messages": [{"role": "user", "content": prompt}]}
        headers = {"x-turnout-user": user}
        async with http.post(f"{url}/v1/chat/completions", json=body, headers=headers) as reply:
            tally.requests += 1
            if reply.status != 200:
                tally.errors += 1
                return
            answer = (await reply.json())["choices"][0]["message"]["content"]
            request_id, variant = reply.headers["x-turnout-request-id"], reply.headers["x-turnout-variant"]
        right = answer == self.answers.get(prompt)
        tally.by_variant[variant] += 1
        if right:
            tally.right += 1
            tally.right_by_variant[variant] += 1
        good = luck < 0.9 if right else luck >= 0.8
        feedback = {"request_id": request_id, "label": "good" if good else "bad", "score": 1.0 if good else 0.0}
        async with http.post(f"{url}/v1/feedback", json=feedback, headers=headers) as fb:
            tally.feedback += fb.status == 202

    async def review(self, http: aiohttp.ClientSession, url: str, admin_key: str) -> Counter[str]:
        """The reviewer: approves right answers, corrects wrong ones it knows, rejects the rest."""
        done: Counter[str] = Counter()
        auth = {"authorization": f"Bearer {admin_key}"}
        for _ in range(100):  # pages of pending items until none is left (decided items leave the list)
            async with http.get(f"{url}/admin/review/items", params={"status": "pending"}, headers=auth) as reply:
                reply.raise_for_status()
                items = (await reply.json())["items"]
            if not items:
                break
            await self._decide(http, url, auth, items, done)
        return done

    async def _decide(
        self, http: aiohttp.ClientSession, url: str, auth: dict[str, str], items: list[Any], done: Counter[str]
    ) -> None:
        for item in items:
            messages = (item.get("request") or {}).get("messages") or [{}]
            prompt = messages[-1].get("content")
            choices = (item.get("response") or {}).get("choices") or [{}]
            answer = (choices[0].get("message") or {}).get("content")
            right = self.answers.get(prompt) if isinstance(prompt, str) else None
            if right is not None and answer == right:
                decision: dict[str, Any] = {"action": "approve"}
            elif right is not None:
                decision = {"action": "edit", "answer": right}
            else:
                decision = {"action": "reject"}
            decision["reviewer"] = "demo-reviewer"
            async with http.post(f"{url}/admin/review/items/{item['id']}", json=decision, headers=auth) as reply:
                reply.raise_for_status()
            done[decision["action"]] += 1
