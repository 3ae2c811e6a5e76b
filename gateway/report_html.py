"""The experiment report as one self-contained HTML page: inline CSS and SVG, no script, no network.

It shows the decision and its reasons first (in words a product manager reads), then the share of users per
variant against the weights, each difference from the control over time with its always-valid interval band
(and the tolerated harm for guardrails), and the per-variant table.

Usage: ``Path("report.html").write_text(render_html(report))``
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from html import escape
from typing import Any

COLOURS = {"promote": "#1a7f37", "rollback": "#cf222e", "continue": "#9a6700", "inconclusive": "#57606a"}
HEADLINES = {
    "promote": "Promote {winner}: it is better than the control and no guardrail is harmed.",
    "rollback": "Roll back: a candidate does harm beyond what is tolerated.",
    "continue": "Keep the experiment running: no decision yet.",
    "inconclusive": "Inconclusive: the maximum duration passed without a clear result.",
}
W, H, PAD = 560, 180, 40


def _scale(metric: str, x: float) -> float:
    return math.expm1(x) * 100 if metric == "latency" else x


def _unit(metric: str) -> str:
    return "% slower (+) / faster (-)" if metric == "latency" else "difference from control"


def _chart(points: list[tuple[float, float, float, float]], tolerance: float | None, title: str, unit: str) -> str:
    """A line (estimate) with a band (interval) over time, a zero line and the tolerated harm line."""
    if not points:
        return f"<figure><figcaption>{escape(title)}</figcaption><p>no data yet</p></figure>"
    ts = [p[0] for p in points]
    values = [v for p in points for v in p[1:] if math.isfinite(v)] + [0.0]
    if tolerance is not None:
        values.append(tolerance)
    lo, hi = min(values), max(values)
    lo, hi = (lo - 1, hi + 1) if hi - lo < 1e-12 else (lo - 0.05 * (hi - lo), hi + 0.05 * (hi - lo))
    t0, t1 = min(ts), max(ts) if max(ts) > min(ts) else min(ts) + 1

    def x(t: float) -> float:
        return PAD + (W - 2 * PAD) * (t - t0) / (t1 - t0)

    def y(v: float) -> float:
        v = min(max(v, lo), hi) if math.isfinite(v) else (hi if v > 0 else lo)
        return H - PAD / 2 - (H - PAD) * (v - lo) / (hi - lo)

    band = [f"{x(t):.1f},{y(h):.1f}" for t, _, _, h in points] + [f"{x(t):.1f},{y(low):.1f}" for t, _, low, _ in
                                                                       reversed(points)]  # fmt: skip
    line = " ".join(f"{x(t):.1f},{y(e):.1f}" for t, e, _, _ in points)
    parts = [
        f'<svg viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{escape(title)}">',
        f'<polygon points="{" ".join(band)}" fill="#0969da" fill-opacity="0.18"/>',
        f'<polyline points="{line}" fill="none" stroke="#0969da" stroke-width="2"/>',
        f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#57606a" stroke-dasharray="4 3"/>',
        f'<text x="{W - PAD + 4}" y="{y(0) + 4:.1f}" font-size="11">0</text>',
    ]
    if tolerance is not None:
        parts += [
            f'<line x1="{PAD}" x2="{W - PAD}" y1="{y(tolerance):.1f}" y2="{y(tolerance):.1f}" stroke="#cf222e"/>',
            f'<text x="{PAD}" y="{y(tolerance) - 4:.1f}" font-size="11" fill="#cf222e">tolerated harm</text>',
        ]
    parts += [
        f'<text x="{PAD}" y="{H - 4}" font-size="11">{escape(_when(t0))}</text>',
        f'<text x="{W - PAD}" y="{H - 4}" font-size="11" text-anchor="end">{escape(_when(t1))}</text>',
        f'<text x="4" y="14" font-size="11">{hi:.3g}</text><text x="4" y="{H - PAD / 2:.0f}" font-size="11">'
        f"{lo:.3g}</text></svg>",
    ]
    return f"<figure><figcaption>{escape(title)} ({escape(unit)})</figcaption>{''.join(parts)}</figure>"


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _shares(report: Mapping[str, Any]) -> str:
    weights = report["weights"]
    total_w = sum(weights.values()) or 1
    users = {v: m["users"] for v, m in report["variants"].items()}
    total_u = sum(users.values()) or 1
    rows = []
    for i, v in enumerate(sorted(set(weights) | set(users))):
        share, expected = users.get(v, 0) / total_u, weights.get(v, 0) / total_w
        y = 10 + i * 34
        rows.append(
            f'<text x="0" y="{y + 12}" font-size="12">{escape(v)}</text>'
            f'<rect x="120" y="{y}" width="{360 * share:.1f}" height="14" fill="#0969da"/>'
            f'<rect x="120" y="{y + 16}" width="{360 * expected:.1f}" height="6" fill="#57606a"/>'
            f'<text x="{126 + 360 * share:.1f}" y="{y + 12}" font-size="12">{share:.1%} of users '
            f"(weight {expected:.1%})</text>"
        )
    height = 20 + 34 * len(rows)
    srm = report["srm_p"]
    verdict = "the split matches the weights" if srm >= 0.001 else "MISMATCH: assignment or logging is broken"
    return (
        f'<svg viewBox="0 0 {W + 80} {height}" width="{W + 80}" height="{height}" role="img" '
        f'aria-label="users per variant">{"".join(rows)}</svg>'
        f"<p>Sample ratio check: p = {srm:.3g}, {escape(verdict)}.</p>"
    )


def _sampled(report: Mapping[str, Any]) -> str:
    share = report.get("series_share", 1.0)
    if share >= 1.0:
        return ""
    return (f" These charts are drawn from a random {share:.1%} of the users (their bands are wider for it); "
            "the decision above uses every user.")  # fmt: skip


def _table(report: Mapping[str, Any]) -> str:
    cols = [("users", "{:d}"), ("requests", "{:d}"), ("error_rate", "{:.2%}"), ("latency_p50_ms", "{:.0f}"),
            ("latency_p95_ms", "{:.0f}"), ("feedback_score", "{:.3f}"), ("thumbs_up", "{:.1%}"),
            ("task_completed", "{:.1%}"), ("tokens_per_request", "{:.0f}"), ("cost_usd", "${:.4f}"),
            ("cost_per_request_usd", "${:.6f}")]  # fmt: skip
    head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c, _ in cols)
    body = ""
    for v, m in report["variants"].items():
        cells = "".join(f"<td>{'-' if m.get(c) is None else escape(f.format(m[c]))}</td>" for c, f in cols)
        body += f"<tr><th>{escape(v)}</th>{cells}</tr>"
    return f"<table><tr><th>variant</th>{head}</tr>{body}</table>"


def _client(report: Mapping[str, Any]) -> str:
    client = report.get("client")
    return f" for client <code>{escape(client)}</code>" if client else ""


def _span(seconds: float) -> str:
    """A duration in the largest unit it fills: "7 days", "1.5 hours", "10 s"."""
    for unit, size in (("days", 86400), ("hours", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def render_html(report: Mapping[str, Any]) -> str:
    decision = report["decision"]
    headline = HEADLINES[decision].format(winner=report.get("winner") or "")
    reasons = "".join(f"<li>{escape(r)}</li>" for r in report["reasons"])
    charts = []
    for c in report["comparisons"]:
        pts = []
        for point in report["series"]:
            for pc in point["comparisons"]:
                if (pc["variant"], pc["metric"], pc["role"]) == (c["variant"], c["metric"], c["role"]) and (
                    "difference" in pc
                ):
                    m = c["metric"]
                    pts.append((point["t"], _scale(m, pc["difference"]), _scale(m, pc["low"]), _scale(m, pc["high"])))
        tol = None
        if c["role"] == "guardrail":
            harm = math.expm1(c["tolerance"]) * 100 if c["metric"] == "latency" else c["tolerance"]
            tol = harm if c["metric"] in ("error_rate", "latency") else -harm
        title = f"{c['variant']} vs {report['settings']['control']}: {c['metric']} ({c['role']}, {c['verdict']})"
        charts.append(_chart(pts, tol, title, _unit(c["metric"])))
    s = report["settings"]
    w = report["window"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Experiment {escape(report["experiment"])}</title>
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'">
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 980px; color: #1f2328; }}
.decision {{ border-left: 8px solid {COLOURS[decision]}; padding: .6rem 1rem; background: #f6f8fa; }}
.decision h2 {{ margin: 0; color: {COLOURS[decision]}; }}
table {{ border-collapse: collapse; margin: 1rem 0; }} td, th {{ border: 1px solid #d0d7de; padding: 4px 8px; }}
td {{ text-align: right; }} figure {{ margin: 1rem 0; }} figcaption {{ font-weight: 600; }}
</style></head><body>
<h1>Experiment <code>{escape(report["experiment"])}</code> on route <code>{escape(report["route"])}</code>
{_client(report)}</h1>
<p>{escape(w["what"])}: {escape(_when(w["since"]))} to {escape(_when(w["until"]))} UTC.
Primary metric <b>{escape(s["primary"])}</b>, control <b>{escape(s["control"])}</b>, alpha {s["alpha"]},
at least {s["min_users"]} users per variant and {_span(s["min_duration_s"])}.</p>
<section class="decision" id="decision" data-decision="{escape(decision)}">
<h2>Decision: {escape(decision.upper())}</h2><p>{escape(headline)}</p><ul>{reasons}</ul></section>
<h2>Who saw what</h2>{_shares(report)}
<h2>Differences from the control over time</h2>
<p>The line is the estimated difference, the band its always-valid 1-alpha interval: the report may be read
every day without inflating false decisions. A band wholly on one side of 0 is a result.{_sampled(report)}</p>
{"".join(charts)}
<h2>Per variant</h2>{_table(report)}{_evals(report)}
</body></html>
"""


def _evals(report: Mapping[str, Any]) -> str:
    """The eval suite comparison behind ``primary: eval_score`` (one paragraph per candidate)."""
    out = []
    for v, e in report.get("evals", {}).items():
        out.append(
            f"<p>Eval score of <b>{escape(v)}</b> on suite <code>{escape(e['suite'])}</code>: "
            f"{e['candidate_score']:.3f} against the control's {e['control_score']:.3f} over the same "
            f"{e['cases']} cases (runs <code>{escape(e['control_run'])}</code> and "
            f"<code>{escape(e['candidate_run'])}</code>; the band above is a paired t-interval over the cases, "
            "not an always-valid one: the suite does not grow with traffic).</p>"
        )
    return "<h2>Eval suite</h2>" + "".join(out) if out else ""
