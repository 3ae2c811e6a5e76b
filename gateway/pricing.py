"""What each upstream's tokens cost: ``upstreams.X.price``, else litellm's bundled price list where it knows the
model (read from the file litellm ships, offline and without importing litellm).

Usage: ``prices = upstream_prices(config)`` → ``{"prod-v3": Price(0.15, 0.6)}`` (USD per million tokens); an
upstream with neither (a dummy, a private fine-tune) is absent and its interactions carry no cost.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from pathlib import Path
from typing import Any

import orjson

from collectors.cost import Price
from gateway.config import Config, Upstream

log = logging.getLogger(__name__)
PRICE_FILE = "model_prices_and_context_window_backup.json"


@functools.cache
def litellm_prices() -> dict[str, Any]:
    """litellm's price list (``{model: {"input_cost_per_token", "output_cost_per_token", ...}}``); {} without it."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or spec.origin is None:
        return {}
    try:
        data = orjson.loads((Path(spec.origin).parent / PRICE_FILE).read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("litellm's price list could not be read (%s): costs only from upstreams.*.price", exc)
        return {}
    return data if isinstance(data, dict) else {}


def _listed(up: Upstream) -> Price | None:
    model = up.model
    names = [model, model.split("/", 1)[1]] if "/" in model else [model]
    for name in names:
        entry = litellm_prices().get(name)
        if isinstance(entry, dict):
            prompt, completion = entry.get("input_cost_per_token"), entry.get("output_cost_per_token")
            if isinstance(prompt, int | float) and isinstance(completion, int | float):
                return Price(prompt * 1e6, completion * 1e6)
    return None


def upstream_prices(config: Config) -> dict[str, Price]:
    prices = {}
    for name, up in config.upstreams.items():
        if up.price is not None:
            prices[name] = Price(up.price.input_per_1m, up.price.output_per_1m)
        elif up.provider != "dummy" and (listed := _listed(up)) is not None:
            prices[name] = listed
    return prices
