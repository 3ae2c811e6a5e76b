"""What holds a rollout step, as the controller logs it at each check and ``turnout rollout status`` prints it:
each of the analysis's conditions (the step's minimum time, users per arm, nothing stored since the window
opened, a sample-ratio mismatch) named with its figures, against a real SQLite store."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from collectors.store import open_store
from gateway.cli import main
from gateway.config import load_config
from gateway.rollouts import check, start, waiting
from tests.gateway.test_deploy import traffic, write_config

NO_ERRORS, SAME_UP = {"prod": 0.0, "cand": 0.0}, {"prod": 0.6, "cand": 0.6}


async def test_the_controller_and_rollout_status_say_what_holds_a_step(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    config = load_config(path).config
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    await store.open()
    t0 = time.time() - 100  # the step began 100 s ago: `turnout rollout status` below judges it now
    try:
        state = await start(store, config, "bot", actor="alice", now=t0)
        assert (state.phase, state.step) == ("step", 0)  # 20 %, interval 2 s, 30 users an arm needed
        assert await waiting(store, config, "bot", now=t0 + 1) == [
            "the step has run 1 of its 2 s",
            "the analysis window opens 5 s into the step, once every replica serves its weights",
        ]
        assert await waiting(store, config, "bot", now=t0 + 6) == [
            "users cand 0, prod 0; 30 each needed",
            "no interaction of the route stored since the window opened (none stored yet): no traffic, or the "
            "capture is behind (turnout_capture_queue_depth)",
        ]
        # a few users, assigned by the step's weights: only their number holds it
        truth = await traffic(
            store, users=40, weights={"prod": 80, "cand": 20}, since=t0 + 6, seed=4, error=NO_ERRORS, up=SAME_UP
        )
        cand = sum(1 for t in truth if t[1] == "cand")
        assert 0 < cand < 30
        assert await waiting(store, config, "bot", now=t0 + 20) == [
            f"users cand {cand}, prod {len(truth) - cand}; 30 each needed"
        ]
        # then many users split 50/50 while the step serves 20 %: a sample-ratio mismatch holds it, and the
        # controller's check logs it
        await traffic(
            store, users=400, weights={"prod": 50, "cand": 50}, since=t0 + 21, seed=5, error=NO_ERRORS, up=SAME_UP
        )
        waits = await waiting(store, config, "bot", now=t0 + 40)
        assert len(waits) == 1 and waits[0].startswith("sample ratio mismatch: p = "), waits
        with caplog.at_level(logging.INFO, logger="gateway.rollouts"):
            held = await check(store, config, "bot", now=t0 + 40)
        assert held is not None and (held.phase, held.step) == ("step", 0)
        assert f"rollout bot: step 20 waits: {waits[0]}" in caplog.text
    finally:
        await store.close()
    assert await asyncio.to_thread(main, ["rollout", "status", "bot", "-c", str(path)]) == 0
    out = capsys.readouterr().out
    assert "route bot: candidate cand, step, 20 % of users" in out
    assert "\n  waiting: sample ratio mismatch: p = " in out


async def test_a_step_that_can_advance_waits_for_nothing(tmp_path: Path) -> None:
    path = write_config(tmp_path, f"sqlite:///{tmp_path / 't.db'}")
    config = load_config(path).config
    store = open_store(f"sqlite:///{tmp_path / 't.db'}")
    await store.open()
    try:
        t0 = 10_000.0
        await start(store, config, "bot", actor="alice", now=t0)
        await traffic(
            store, users=400, weights={"prod": 80, "cand": 20}, since=t0 + 6, seed=2, error=NO_ERRORS, up=SAME_UP
        )
        assert await waiting(store, config, "bot", now=t0 + 20) == []
        moved = await check(store, config, "bot", now=t0 + 20)
        assert moved is not None
        assert (moved.phase, moved.step) == ("step", 1), moved.reason
        assert await waiting(store, config, "bot", now=t0 + 26) == [
            "users cand 0, prod 0; 30 each needed",
            "no interaction of the route stored since the window opened (the newest is 10 s old): no traffic, or the "
            "capture is behind (turnout_capture_queue_depth)",
        ]
    finally:
        await store.close()
