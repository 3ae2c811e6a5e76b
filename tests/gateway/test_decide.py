"""``decide`` on its own: a pure function of the config, the request, the caller and an injected RNG."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from gateway.auth import Caller
from gateway.config import Config, parse_config
from gateway.decide import Facts, decide, route_views, sticky_key
from gateway.errors import BadRequest, NotFound
from policies.routing import sticky_variant

CONFIG = b"""
shadow: {max_body_mb: 1}
upstreams:
  a: {provider: dummy, model: a}
  b: {provider: dummy, model: b}
  cand: {provider: dummy, model: cand}
routes:
  bot:
    variants: {a: 1, b: 1}
    shadows: [{upstream: cand, sample: 1}]
  sampled: {variants: {a: 1, b: 3}, sticky_by: none, capture: {sample: 0.25}, shadows: [{upstream: cand, sample: 0.5}]}
  by-header: {variants: {a: 1, b: 1}, sticky_by: "header:X-Tenant", experiment: tenants}
  by-key: {variants: {a: 1, b: 1}, sticky_by: api_key}
  single: {variants: {a: 1}, capture: {sample: 0}}
"""
NOBODY = Caller(None, False)
ADMIN = Caller("admin-key", True)


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config(CONFIG, "test.yaml", {}).config


def run(config: Config, route: str, *, headers: dict[bytes, bytes] | None = None, caller: Caller = NOBODY,
        rng: random.Random | None = None, size: int = 10, **body: Any) -> Facts:  # fmt: skip
    request = {"model": route, "messages": [{"role": "user", "content": "hi"}], **body}
    return decide(
        route_views(config),
        rng or random.Random(0),
        request,
        headers or {},
        caller,
        size,
        request_id="r1",
        ts=1.5,
        t0=2.5,
    )


def test_the_facts_of_a_plain_request(config: Config) -> None:
    facts = run(config, "single", stream=True)
    assert (facts.request_id, facts.ts, facts.t0) == ("r1", 1.5, 2.5)
    assert (facts.route, facts.experiment, facts.variant) == ("single", "single", "a")
    assert facts.stream is True and facts.capture is False
    assert facts.shadows == [] and facts.skipped_shadows == []
    assert facts.body["model"] == "single"


def test_unknown_route_is_not_found(config: Config) -> None:
    with pytest.raises(NotFound) as caught:
        run(config, "nope")
    assert caught.value.status == 404 and caught.value.param == "model"


def test_same_inputs_same_facts_whatever_the_rng(config: Config) -> None:
    # a sticky key decides the variant, never the rng; the same rng seed gives the same facts everywhere
    for user in ("u1", "u2", "u3", "u4"):
        variants = {run(config, "bot", user=user, rng=random.Random(seed)).variant for seed in range(5)}
        assert variants == {sticky_variant("bot", user, {"a": 1.0, "b": 1.0})}
    assert run(config, "sampled", rng=random.Random(7)) == run(config, "sampled", rng=random.Random(7))


def test_the_sticky_key_of_each_sticky_by() -> None:
    headers = {b"x-turnout-user": b"hdr-user", b"x-tenant": b"t9"}
    assert sticky_key("user", headers, {"user": "body-user"}, "key") == "hdr-user"
    assert sticky_key("user", {}, {"user": "body-user"}, "key") == "body-user"
    assert sticky_key("user", {}, {"user": 5}, "key") == "key"
    assert sticky_key("user", {}, {}, None) is None
    assert sticky_key("header:X-Tenant", headers, {}, "key") == "t9"
    assert sticky_key("header:X-Other", headers, {}, "key") is None
    assert sticky_key("api_key", headers, {"user": "u"}, "key") == "key"
    assert sticky_key("none", headers, {"user": "u"}, "key") is None


def test_variants_follow_the_routes_sticky_by(config: Config) -> None:
    tenant = run(config, "by-header", headers={b"x-tenant": b"acme"})
    assert tenant.experiment == "tenants"
    assert tenant.variant == sticky_variant("tenants", "acme", {"a": 1.0, "b": 1.0})
    keyed = run(config, "by-key", caller=Caller("sk-1", False), user="ignored")
    assert keyed.variant == sticky_variant("by-key", "sk-1", {"a": 1.0, "b": 1.0})


def test_without_a_sticky_key_the_rng_draws_by_weight(config: Config) -> None:
    rng = random.Random(3)
    counts = Counter(run(config, "sampled", rng=rng).variant for _ in range(4000))
    assert 0.72 < counts["b"] / 4000 < 0.78  # weight 3 of 4


def test_capture_and_shadow_sampling_use_the_rng(config: Config) -> None:
    rng = random.Random(11)
    facts = [run(config, "sampled", rng=rng) for _ in range(4000)]
    captured = sum(f.capture for f in facts) / 4000
    mirrored = sum(f.shadows == ["cand"] for f in facts) / 4000
    assert 0.22 < captured < 0.28 and 0.47 < mirrored < 0.53
    assert all(f.skipped_shadows == [] for f in facts)


def test_opted_out_or_oversized_requests_skip_their_shadows(config: Config) -> None:
    opted = run(config, "bot", headers={b"x-turnout-no-capture": b"1"})
    assert opted.capture is False and opted.shadows == [] and opted.skipped_shadows == ["cand"]
    big = run(config, "bot", size=1024 * 1024 + 1)
    assert big.capture is True and big.shadows == [] and big.skipped_shadows == ["cand"]
    fits = run(config, "bot", size=1024 * 1024)
    assert fits.shadows == ["cand"] and fits.skipped_shadows == []


def test_only_the_admin_forces_a_variant(config: Config) -> None:
    headers = {b"x-turnout-variant": b"b"}
    assert run(config, "bot", headers=headers, caller=ADMIN, user="u").variant == "b"
    natural = sticky_variant("bot", "u", {"a": 1.0, "b": 1.0})
    assert run(config, "bot", headers=headers, caller=Caller("k", False), user="u").variant == natural
    with pytest.raises(BadRequest, match="'cand' is not a variant of route 'bot'"):
        run(config, "bot", headers={b"x-turnout-variant": b"cand"}, caller=ADMIN)
