"""The text a person reads from ``turnout drift report|check``: which descriptors moved, by how much, in which
bins, and the terms that rose and fell, so the change is visible ("refund" -> "subscription"), not only a
number.

Usage: ``print(render(check))`` for a ``collectors.drift.store.Check``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from collectors.drift.store import Check


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _share(x: float) -> str:
    return f"{100 * x:.0f}%" if x == 0 or x >= 0.01 else f"{100 * x:.1f}%"


def _p(p: float) -> str:
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _signal_line(s: dict[str, Any]) -> str:
    change = "; ".join(f"{b['label']}: {_share(b['reference'])} -> {_share(b['current'])}" for b in s["shifts"][:2])
    if s["distance"] == "js":
        change = "see the terms below"
    mark = "MOVED" if s["moved"] else ""
    return f"  {s['signal']:<18} {s['side']:<6} {s['score']:>7.3f} {_p(s['p_value']):>7}  {mark:<5}  {change}"


def _terms(title: str, terms: list[dict[str, Any]]) -> list[str]:
    if not terms:
        return [f"{title}: none"]
    return [f"{title}:", *(f"  {t['term']:<24} {_share(t['reference']):>5} -> {_share(t['current'])}" for t in terms)]


def render(check: Check) -> str:
    data = check.data()
    lines = [
        f"Drift of route {check.route}, checked {_when(check.checked_at)}",
        f"current window: {_when(check.window_start)} .. {_when(check.window_end)} ({data['n_current']} interactions)",
        f"reference: {check.reference} ({data['n_reference']} interactions)",
    ]
    if not check.published:
        need = data["min_samples"]
        if data["n_reference"] < need:
            why = "the next check compares with this window" if check.closed else "check the reference"
            lines.append(f"not published: the reference has fewer than {need} interactions; {why}")
        else:
            lines.append(f"not published: the current window needs {need} interactions and stays open until then")
        return "\n".join(lines) + "\n"
    scores = data["scores"]
    verdict = "DRIFT" if scores["overall"] > data["max_psi"] else "no drift"
    lines += [
        f"{verdict}: input {scores['input']:.3f}, output {scores['output']:.3f} (max_psi {data['max_psi']:g}; a signal"
        f" moved when its score is above it and its Holm-adjusted p-value below {data['alpha']:g})",
        "",
        f"  {'signal':<18} {'side':<6} {'score':>7} {'p':>7}  {'':<5}  biggest changes (reference -> current)",
    ]
    ranked = sorted(data["signals"], key=lambda s: (not s["moved"], -s["score"]))
    lines += [_signal_line(s) for s in ranked]
    lines += ["", *_terms("Terms that rose (share of prompts containing them)", data["rose"])]
    lines += _terms("Terms that fell", data["fell"])
    return "\n".join(lines) + "\n"
