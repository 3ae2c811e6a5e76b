"""The config of a route's A/B analysis and guarded rollout: ``routes.<name>.analysis`` and
``routes.<name>.rollout`` (SPEC "Deployment workflow"), and the checks that need the route around them.

``rollout.gates.manual: true`` holds the rollout before the candidate serves everyone until a person runs
``turnout rollout approve`` (Flagger's confirm-promotion, Argo Rollouts' ``pause: {}``); the analysis keeps
running while it waits, so a guardrail breach still rolls back.

Usage: ``RouteConfig.rollout: Rollout | None``; ``errors += rollout_errors(name, variants, analysis, rollout)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Annotated, Literal

from pydantic import Field, field_validator

from gateway.config_types import Duration, Model, Share

Metric = Literal["feedback_score", "thumbs_up", "task_completed", "error_rate", "latency", "eval_score"]
Guardrail = Literal["feedback_score", "thumbs_up", "task_completed", "error_rate", "latency", "latency_p95"]


class Analysis(Model):
    """How an A/B split is judged (``turnout experiment report``, rollout steps): see policies/experiments.py."""

    control: str  # the variant serving now
    primary: Metric = "feedback_score"  # the metric that decides (eval_score: the eval suite's paired comparison)
    guardrails: dict[Guardrail, Annotated[float, Field(ge=0)]] = {}  # most harm tolerated (latency: relative)
    alpha: float = Field(0.05, gt=0, lt=0.5)  # error rate of the decision
    min_users: int = Field(200, ge=2)  # per variant
    min_duration: Duration = 7 * 86400.0  # no promote before this
    max_duration: Duration = 28 * 86400.0  # no decision by then: inconclusive


class ShadowGate(Model):
    min_samples: int = Field(200, ge=1)  # comparisons needed
    min_agreement: Share = 0.8  # mean agreement needed
    max_error_rate: Share = 0.05  # shadow error rate allowed


class Gates(Model):
    eval: str | None = None  # an eval suite file (relative to the config file): candidate vs control
    shadow: ShadowGate | None = None  # shadow gate: comparisons, agreement, errors
    manual: bool = False  # wait for `turnout rollout approve` before the candidate serves everyone


class Rollout(Model):
    candidate: str  # a variant of the route (weight 0 in the file)
    gates: Gates = Gates()  # before the first step
    steps: list[Annotated[int, Field(ge=1, le=100)]] = [1, 10, 50, 100]  # percent of users on the candidate
    interval: Duration = 3600.0  # at least this long on a step
    on_failure: Literal["rollback", "pause"] = "rollback"  # rollback or pause

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if not steps or any(b <= a for a, b in itertools.pairwise(steps)):
            raise ValueError("steps: expected increasing percentages, e.g. [1, 10, 50, 100]")
        return steps


def rollout_errors(
    name: str, variants: Mapping[str, float], analysis: Analysis | None, rollout: Rollout | None
) -> list[str]:
    """What is wrong with route ``name``'s analysis and rollout given its variants (key paths in each)."""
    errors = []
    if analysis and analysis.control not in variants:
        errors.append(f"routes.{name}.analysis.control: {analysis.control!r} is not a variant of the route")
    if rollout:
        if rollout.candidate not in variants:
            errors.append(
                f"routes.{name}.rollout.candidate: {rollout.candidate!r} is not a variant of the "
                "route (add it to variants, at weight 0)"
            )
        if analysis is None:
            errors.append(f"routes.{name}.rollout: needs routes.{name}.analysis (its control and guardrails)")
        elif analysis.control == rollout.candidate:
            errors.append(f"routes.{name}.rollout.candidate: the candidate cannot be the control")
        if rollout.gates.manual and rollout.steps[0] >= 100:
            errors.append(
                f"routes.{name}.rollout.gates.manual: the approval is asked before the candidate serves everyone, "
                "so steps need one below 100 first (e.g. [10, 50, 100])"
            )
    return errors
