"""Building a dataset version from what people reviewed (or from feedback), deterministically.

The examples are the route's primary chat interactions that pass the filters: with ``reviewed: approved`` the
items a person approved (an edited answer replaces the model's); otherwise those whose latest feedback passes
``label`` / ``min_score``, never one a person rejected. A feedback ``correction`` replaces the answer unless a
reviewer's edit came later in the pipeline (an edit always wins). Redaction reuses the capture redaction: captured
text had secrets and the route's ``capture.redact`` kinds masked when it was journaled, a reviewer's edit gets the
whole redaction here, and the route's current kinds apply to every line (a kind added since capture too). Then
near-duplicate prompts are collapsed: two examples whose prompts (every message before the answer, plus tools) are
equal after Unicode NFKC, case-folding, dropping punctuation and collapsing whitespace are one, and the latest
interaction wins (its review is the most recent judgement). Lines are canonical JSON (sorted keys, no spaces,
UTF-8) in interaction order (time, then id), so the same inputs give the same bytes and the same sha256 on any
machine. A build whose ``train.jsonl`` would equal the latest version's writes nothing.

Usage::

    result = await build(store, root, Spec("support", route="support-bot"), now=time.time())
    result.version      # "v0004", or None when nothing changed (result.reason says why)
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import re
import unicodedata
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from collectors.datasets.manifest import build_lock, latest, publish, version_name, versions
from collectors.export import chat_line, iso
from collectors.redact import Redactor
from collectors.review.items import feedback_by_owner
from collectors.store.base import Query, Store, feedback_summary, joined

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")
PAGE = 2000  # approved items read per query


@dataclass(frozen=True)
class Spec:
    name: str
    route: str
    reviewed: str | None = "approved"
    label: str | None = None
    min_score: float | None = None
    since: float | None = None  # seconds before the build
    redact: frozenset[str] = frozenset()
    secrets: Sequence[str] = ()

    def filters(self, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {"route": self.route, "reviewed": self.reviewed}
        out.update({"label": self.label, "min_score": self.min_score, "since_seconds": self.since})
        out["since"] = None if self.since is None else iso(now - self.since)
        return out


@dataclass
class BuildResult:
    name: str
    version: str | None  # None: nothing written
    reason: str
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


@dataclass(frozen=True)
class Example:
    id: str
    ts: float
    route: str
    variant: str
    label: str | None
    source: str  # approved | edited | feedback
    line: dict[str, Any]
    data: bytes = b""  # the canonical, redacted line of train.jsonl


def prompt_key(line: dict[str, Any]) -> str:
    """The near-duplicate key: the prompt (messages before the answer, tools) normalised."""
    parts = []
    for message in line["messages"][:-1]:
        content = message.get("content")
        text = content if isinstance(content, str) else orjson.dumps(content, option=orjson.OPT_SORT_KEYS).decode()
        parts.append(f"{message.get('role')}:{text}")
    if "tools" in line:
        parts.append(orjson.dumps(line["tools"], option=orjson.OPT_SORT_KEYS).decode())
    text = unicodedata.normalize("NFKC", "\n".join(parts)).casefold()
    return _SPACE.sub(" ", _PUNCT.sub(" ", text)).strip()


async def _reviewed(store: Store, spec: Spec, cutoff: float | None) -> AsyncIterator[tuple[dict[str, Any], str | None]]:
    """Approved items with their stored interaction, a page at a time (one join, then the page's feedback)."""
    after: tuple[float, str] = (float("-inf"), "")
    while True:
        rows = await store.fetch(
            "SELECT r.ts, r.id, r.answer, i.response_id, i.record, i.caller FROM review_items r "
            "JOIN interactions i ON i.request_id = r.id WHERE r.route = $1 AND r.status = 'approved' AND r.ts >= $2 "
            "AND (r.ts > $3 OR (r.ts = $3 AND r.id > $4)) ORDER BY r.ts, r.id LIMIT $5",
            spec.route, float("-inf") if cutoff is None else cutoff, after[0], after[1], PAGE,
        )  # fmt: skip
        if not rows:
            return
        after = (float(rows[-1][0]), str(rows[-1][1]))
        feedback = await feedback_by_owner(store, [(str(r[1]), r[3], r[5]) for r in rows])
        for _, item_id, answer, _, record, _ in rows:
            data = orjson.loads(record)
            data["feedback"] = feedback.get(str(item_id), [])
            yield data, answer
        if len(rows) < PAGE:
            return


async def _by_feedback(store: Store, spec: Spec, cutoff: float | None) -> AsyncIterator[tuple[dict[str, Any], None]]:
    rows = await store.fetch("SELECT id, status FROM review_items WHERE route = $1 AND status = 'rejected'", spec.route)
    rejected = {str(r[0]) for r in rows}
    async for record in joined(store, Query(route=spec.route, since=cutoff, role="primary")):
        if record["request_id"] not in rejected:
            yield record, None


def _example(record: dict[str, Any], answer: str | None, spec: Spec, redactor: Redactor) -> Example | None:
    label, score, correction = feedback_summary(record.get("feedback", []))
    if spec.label is not None and label != spec.label:
        return None
    if spec.min_score is not None and (score is None or score < spec.min_score):
        return None
    if answer is not None:  # a reviewer's text never went through capture: all of the redaction
        edit = {"correction": {"content": redactor.text(answer)}}
        record = {**record, "feedback": [*record.get("feedback", []), edit]}
    line = chat_line(record)
    if line is None:
        return None
    source = "edited" if answer is not None else ("feedback" if spec.reviewed is None else "approved")
    if answer is None and correction is not None:
        source = "corrected"
    line = redactor.optional(line)  # captured text had its secrets masked at capture; kinds added since apply too
    it = (record["request_id"], float(record["ts"]), record["route"], record["variant"], label, source)
    return Example(*it, line, canonical(line))


async def collect(
    store: Store, spec: Spec, *, now: float, on_read: Callable[[], None] | None = None
) -> tuple[list[Example], dict[str, int]]:
    """The examples of a build, redacted, near-duplicates collapsed, in order; and what was left out.
    ``on_read`` is called for each interaction read (the CLI's progress)."""
    cutoff = None if spec.since is None else now - spec.since
    source = _reviewed(store, spec, cutoff) if spec.reviewed == "approved" else _by_feedback(store, spec, cutoff)
    redactor = Redactor(spec.redact, spec.secrets)
    kept: dict[str, Example] = {}
    skipped = collapsed = 0
    async for record, answer in source:
        if on_read is not None:
            on_read()
        example = _example(record, answer, spec, redactor)
        if example is None:
            skipped += 1
            continue
        key = prompt_key(example.line)
        previous = kept.get(key)
        if previous is not None:
            collapsed += 1
            if (previous.ts, previous.id) > (example.ts, example.id):
                continue
        kept[key] = example
    ordered = sorted(kept.values(), key=lambda e: (e.ts, e.id))
    return ordered, {"skipped": skipped, "collapsed": collapsed}


def canonical(line: dict[str, Any]) -> bytes:
    return orjson.dumps(line, option=orjson.OPT_SORT_KEYS) + b"\n"


def lengths(values: list[int]) -> dict[str, float]:
    if not values:
        return {"min": 0, "p50": 0, "p90": 0, "max": 0, "mean": 0.0}
    s = sorted(values)
    return {
        "min": s[0],
        "p50": s[(len(s) - 1) // 2],
        "p90": s[min(len(s) - 1, int(0.9 * len(s)))],
        "max": s[-1],
        "mean": round(sum(s) / len(s), 3),
    }


def counts(examples: Sequence[Example], left_out: dict[str, int]) -> dict[str, Any]:
    return {
        "examples": len(examples),
        "by_route": dict(sorted(Counter(e.route for e in examples).items())),
        "by_variant": dict(sorted(Counter(e.variant for e in examples).items())),
        "by_label": dict(sorted(Counter(e.label or "none" for e in examples).items())),
        "by_source": dict(sorted(Counter(e.source for e in examples).items())),
        **left_out,
    }


async def build(
    store: Store,
    root: Path,
    spec: Spec,
    *,
    now: float,
    dry_run: bool = False,
    on_read: Callable[[], None] | None = None,
) -> BuildResult:
    """Build the next version of ``spec.name`` under ``root`` (see the module docstring)."""
    examples, left_out = await collect(store, spec, now=now, on_read=on_read)
    return await asyncio.to_thread(write_version, root, spec, examples, left_out, now=now, dry_run=dry_run)


def write_version(
    root: Path, spec: Spec, examples: list[Example], left_out: dict[str, int], *, now: float, dry_run: bool
) -> BuildResult:
    """Write ``examples`` as the next version unless it would equal the latest (blocking file work)."""
    lines = [e.data for e in examples]
    train = b"".join(lines)
    digest = hashlib.sha256(train).hexdigest()
    index = b"".join(
        orjson.dumps(
            {"id": e.id, "route": e.route, "variant": e.variant, "label": e.label, "source": e.source,
             "sha256": hashlib.sha256(line).hexdigest()},
            option=orjson.OPT_SORT_KEYS,
        ) + b"\n"
        for e, line in zip(examples, lines, strict=True)
    )  # fmt: skip
    manifest: dict[str, Any] = {
        "name": spec.name,
        "sha256": digest,
        "created_at": dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "filters": spec.filters(now),
        "counts": counts(examples, left_out),
        "ids": [e.id for e in examples],
    }
    if not examples:
        return BuildResult(spec.name, None, "no examples match the filters", manifest)
    root.mkdir(parents=True, exist_ok=True)
    with build_lock(root, spec.name) as building:
        parent = latest(root, spec.name)
        if parent is not None and parent["sha256"] == digest:
            return BuildResult(spec.name, None, f"nothing new since {parent['version']}", parent)
        found = versions(root, spec.name)
        version = version_name(int(found[-1][1:]) + 1 if found else 1)
        manifest = {**manifest, "version": version, "parent": parent["version"] if parent else None}
        if dry_run:
            return BuildResult(spec.name, None, f"dry run: would write {version}", manifest)
        files = {
            "train.jsonl": train,
            "index.jsonl": index,
            "manifest.json": orjson.dumps(manifest, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS),
        }
        path = publish(building, root, spec.name, version, files)
    return BuildResult(spec.name, version, f"wrote {len(examples)} examples", manifest, path)
