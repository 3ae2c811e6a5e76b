"""Outcome -> Interaction: every field lands where its name says (the record is built from positions)."""

from __future__ import annotations

from collectors.cost import Price
from collectors.record import Interaction
from gateway.decide import Facts
from gateway.outcome import Outcome


def facts() -> Facts:
    return Facts(
        request_id="req", ts=1000.0, t0=50.0, route="bot", experiment="exp", variant="prod", body={"model": "bot"},
        stream=True, capture=False, client="team-a", tags=("x", "y"), caller="who", correlation_id="corr",
    )  # fmt: skip


def answered(upstream: str) -> Outcome:
    outcome = Outcome(upstream=upstream, status=201, outcome="ok", price=Price(input_per_1m=1e6, output_per_1m=0.0))
    outcome.answered({"id": "resp-1", "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    outcome.error, outcome.first_token_at = "an error", 50.25
    return outcome


def test_a_primary_record_has_every_field_by_name() -> None:
    it = answered("fallback").primary(facts(), "chat.completions", now=51.0, extra={"unit": "u"})
    assert it == Interaction(
        request_id="req", ts=1000.0, route="bot", experiment="exp", variant="prod", role="primary", parent_id=None,
        upstream="fallback", endpoint="chat.completions", request={"model": "bot"},
        response={"id": "resp-1", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}, status=201, outcome="ok",
        latency_ms=1000.0, ttft_ms=250.0, usage={"prompt_tokens": 3, "completion_tokens": 4}, error="an error",
        stream=True, capture=False, response_id="resp-1", client="team-a", tags=("x", "y"), cost_usd=3.0,
        extra={"unit": "u"}, caller="who", correlation_id="corr",
    )  # fmt: skip


def test_a_shadow_record_has_its_own_id_and_upstream_and_the_primary_as_parent() -> None:
    it = answered("cand").shadow(facts(), "embeddings", {"model": "bot", "n": 1}, ts=1001.0, latency_ms=7.5)
    assert len(it.request_id) == 44 and it.request_id != "req"
    assert it == Interaction(
        request_id=it.request_id, ts=1001.0, route="bot", experiment="exp", variant="cand", role="shadow",
        parent_id="req", upstream="cand", endpoint="embeddings", request={"model": "bot", "n": 1},
        response={"id": "resp-1", "usage": {"prompt_tokens": 3, "completion_tokens": 4}}, status=201, outcome="ok",
        latency_ms=7.5, ttft_ms=None, usage={"prompt_tokens": 3, "completion_tokens": 4}, error="an error",
        stream=False, capture=False, response_id="resp-1", client="team-a", tags=("x", "y"), cost_usd=3.0, extra={},
        caller="who", correlation_id="corr",
    )  # fmt: skip
