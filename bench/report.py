"""Turn a run's raw figures into Markdown: median (min-max) per subject and figure, ratios, goals, machine.

`results[subject][figure]` holds one value per repetition; `ratios[name]` holds one value per repetition
too, each computed from two subjects measured in the same repetition of the same run.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import subprocess

Series = dict[str, list[float]]


def _fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(values: list[float] | None) -> str:
    if not values:
        return "—"
    median = statistics.median(values)
    if len(values) == 1:
        return _fmt(median)
    return f"{_fmt(median)} ({_fmt(min(values))}-{_fmt(max(values))})"


def median(values: list[float] | None) -> float | None:
    return statistics.median(values) if values else None


def table(title: str, rows: dict[str, Series], columns: list[tuple[str, str]]) -> str:
    """A Markdown table: one row per subject, one column per (figure key, heading)."""
    lines = [f"**{title}**", "", "| subject | " + " | ".join(h for _, h in columns) + " |"]
    lines.append("|---|" + "---|" * len(columns))
    for name, series in rows.items():
        if not any(series.get(key) for key, _ in columns):
            continue
        lines.append(f"| {name} | " + " | ".join(cell(series.get(key)) for key, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def machine() -> str:
    model = "unknown"
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"{os.cpu_count()} CPUs (`nproc`), {model}, Python {platform.python_version()}, {when}"


GOALS = [
    # (description, ratio or figure, subject or None for a ratio, bound, True: at most the bound / False: at least)
    ("turnout CPU/request at c=64 <= 1.0x passthrough", "turnout/passthrough cpu_us_c64", None, 1.0, True),
    ("turnout streaming CPU/event <= 1.0x passthrough", "turnout/passthrough stream_cpu_us_per_event", None, 1.0, True),
    ("one 100 % shadow <= 1.5x no-shadow CPU/request (c=64)", "turnout-shadow/turnout cpu_us_c64", None, 1.5, True),
    ("turnout added p50 at c=1 <= the passthrough's", "turnout/passthrough added_p50_ms_c1", None, 1.0, True),
    ("`--workers 2` >= 1.8x the requests/s of one worker (c=64)", "turnout-w2/turnout rps_c64", None, 1.8, False),
    ("`turnout serve` ready <= 1 s", "startup_s", "turnout", 1.0, True),
]


def goals(results: dict[str, Series], ratios: Series) -> str:
    lines = ["**Goals (issue 20)**", "", "| goal | measured (median) | met |", "|---|---|---|"]
    for description, key, subject, bound, at_most in GOALS:
        values = ratios.get(key) if subject is None else results.get(subject, {}).get(key)
        value = median(values)
        if value is None:
            lines.append(f"| {description} | not measured | — |")
        else:
            met = value <= bound if at_most else value >= bound
            lines.append(f"| {description} | {_fmt(value)} | {'yes' if met else 'NO'} |")
    return "\n".join(lines) + "\n"


def render(results: dict[str, Series], ratios: Series, connections: list[int], settings: str) -> str:
    cpu = [(f"cpu_us_c{c}", f"c={c}") for c in connections]
    rps = [(f"rps_c{c}", f"c={c}") for c in connections]
    rps.append(("upstream_calls", f"upstream calls per request (c={max(connections)})"))
    latency = [
        ("p50_ms_c1", "p50"),
        ("p99_ms_c1", "p99"),
        ("added_p50_ms_c1", "added p50"),
        ("added_p99_ms_c1", "added p99"),
        ("rate_p50_ms", "fixed rate p50"),
        ("rate_p99_ms", "fixed rate p99"),
        ("added_rate_p50_ms", "fixed rate added p50"),
    ]
    stream = [
        ("stream_cpu_us_per_event", "CPU µs/event (c=16)"),
        ("ttfe_p50_ms", "first event p50 ms (c=1)"),
        ("added_ttfe_p50_ms", "added first event p50 ms"),
        ("ttfe_p99_ms", "first event p99 ms"),
    ]
    parts = [
        f"Machine: {machine()}. {settings}",
        "Cells: median (min-max) over the repetitions.",
        table("CPU µs per request of the proxy process (wrk, connections)", results, cpu),
        table(
            "Requests/s (wrk, connections; the proxy has one core, turnout-w2 two, shared with the load)", results, rps
        ),
        table(
            "Latency ms at concurrency 1 (wrk) and at a fixed open-loop rate; added = minus direct",
            results,
            latency,
        ),
        table("Streaming (SSE)", results, stream),
    ]
    startup = {name: {"startup_s": s["startup_s"]} for name, s in results.items() if "startup_s" in s}
    if startup:
        parts.append(table("Start-up: process start to /readyz 200 (s)", startup, [("startup_s", "seconds")]))
    ratio_lines = [
        "**Ratios and differences (each computed within one repetition)**",
        "",
        "| ratio or difference | median (min-max) |",
        "|---|---|",
    ]
    ratio_lines += [f"| {name} | {cell(values)} |" for name, values in ratios.items()]
    parts.append("\n".join(ratio_lines) + "\n")
    parts.append(goals(results, ratios))
    return "\n".join(parts)
