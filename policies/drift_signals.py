"""One route's drift check: descriptors of reference and current interactions -> a score per signal, which
signals moved, the overall scores and the terms that rose and fell.

Pure: stdlib only. A descriptor is the plain dict ``collectors.drift.descriptors.describe`` makes (flat keys,
numbers, strings, booleans, a list of terms); a key absent or None is "no data" for that interaction.

Usage::

    result = compare(reference_descriptors, current_descriptors, max_psi=0.2)
    result.published, result.scores["input"], [s.signal for s in result.signals if s.moved], result.rose
"""

from __future__ import annotations

import math
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from policies.drift import (
    ALPHA,
    MIN_SAMPLES,
    histogram,
    holm,
    homogeneity_p,
    js_on_psi_scale,
    psi,
    quantile_edges,
)

# signal -> (side, kind): numeric values are cut at the reference's deciles, categories keep the most
# frequent few, terms are hashed into TERM_BINS bins (sparse: Jensen-Shannon instead of PSI)
SIGNALS: dict[str, tuple[str, str]] = {
    "prompt_chars": ("input", "numeric"),
    "prompt_tokens": ("input", "numeric"),
    "prompt_nonletter": ("input", "numeric"),
    "prompt_turns": ("input", "numeric"),
    "prompt_script": ("input", "category"),
    "prompt_tools": ("input", "category"),
    "prompt_json_mode": ("input", "category"),
    "system_prompt": ("input", "category"),
    "prompt_terms": ("input", "terms"),
    "answer_chars": ("output", "numeric"),
    "answer_tokens": ("output", "numeric"),
    "answer_refusal": ("output", "category"),
    "answer_json": ("output", "category"),
    "finish_reason": ("output", "category"),
    "answer_tool_calls": ("output", "category"),
}
SIDES = ("input", "output")
NUMERIC_BINS = 10
CATEGORIES = 9  # the most frequent categories (pooled) keep their own bin, the rest share "other"
TERM_BINS = 256
TOP_TERMS = 10


@dataclass(frozen=True)
class BinShift:
    label: str
    reference: float  # share of the reference in this bin
    current: float


@dataclass(frozen=True)
class SignalResult:
    signal: str
    side: str
    distance: str  # psi | js
    score: float
    p_value: float  # Holm-adjusted over the route's signals
    moved: bool  # significant and above max_psi
    n_reference: int
    n_current: int
    shifts: tuple[BinShift, ...]  # the bins whose share changed most, largest first


@dataclass(frozen=True)
class TermShift:
    term: str
    reference: float  # share of reference interactions containing the term
    current: float


@dataclass(frozen=True)
class Comparison:
    n_reference: int
    n_current: int
    published: bool  # both sides have min_samples interactions
    signals: tuple[SignalResult, ...]
    scores: dict[str, float]  # input / output / overall: the largest significant score (0 when none)
    rose: tuple[TermShift, ...]
    fell: tuple[TermShift, ...]


def _values(descriptors: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [d[key] for d in descriptors if d.get(key) is not None]


def _category(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _numeric(ref: list[float], cur: list[float]) -> tuple[list[int], list[int], list[str]]:
    """Bins at the reference's deciles, plus one below its minimum and one above its maximum, so values the
    reference never had (a constant that changed) land in bins of their own."""
    lo, hi = min(ref), max(ref)
    edges = [lo, *quantile_edges(ref, NUMERIC_BINS)]
    edges.append(math.nextafter(hi, math.inf))

    def label(i: int) -> str:
        if i == 0:
            return f"< {lo:g}"
        if i == len(edges):
            return f"> {hi:g}"
        return f"{hi:g}" if edges[i - 1] == hi else f"{edges[i - 1]:g} .. {edges[i]:g}"

    return histogram(ref, edges), histogram(cur, edges), [label(i) for i in range(len(edges) + 1)]


def _categorical(ref: list[Any], cur: list[Any]) -> tuple[list[int], list[int], list[str]]:
    r, c = Counter(map(_category, ref)), Counter(map(_category, cur))
    ranked = sorted((r + c).items(), key=lambda kv: (-kv[1], kv[0]))
    keep = [k for k, _ in ranked[:CATEGORIES]] if len(ranked) > CATEGORIES + 1 else [k for k, _ in ranked]
    labels = [*keep, "other"] if len(keep) < len(ranked) else keep

    def counts(found: Counter[str]) -> list[int]:
        own = [found.get(k, 0) for k in keep]
        return [*own, sum(found.values()) - sum(own)] if len(labels) > len(keep) else own

    return counts(r), counts(c), labels


def term_bin(term: str) -> int:
    return zlib.crc32(term.encode()) % TERM_BINS


def _terms(ref: list[list[str]], cur: list[list[str]]) -> tuple[list[int], list[int], float]:
    r, c = [0] * TERM_BINS, [0] * TERM_BINS
    for side, docs in ((r, ref), (c, cur)):
        for doc in docs:
            for term in set(doc):
                side[term_bin(term)] += 1
    n_docs = len(ref) + len(cur)
    mean_terms = (sum(r) + sum(c)) / n_docs if n_docs else 1.0
    return r, c, mean_terms


def _shifts(ref: list[int], cur: list[int], labels: list[str]) -> tuple[BinShift, ...]:
    nr, nc = max(sum(ref), 1), max(sum(cur), 1)
    found = [BinShift(lab, a / nr, b / nc) for lab, a, b in zip(labels, ref, cur, strict=True)]
    found.sort(key=lambda s: -abs(s.current - s.reference))
    return tuple(s for s in found[:3] if s.current != s.reference)


class _Raw(NamedTuple):
    side: str
    distance: str
    score: float
    p_value: float  # unadjusted
    n_reference: int
    n_current: int
    shifts: tuple[BinShift, ...]


def _signal(
    name: str, ref_d: Sequence[Mapping[str, Any]], cur_d: Sequence[Mapping[str, Any]], min_samples: int
) -> _Raw | None:
    side, kind = SIGNALS[name]
    ref, cur = _values(ref_d, name), _values(cur_d, name)
    if len(ref) < min_samples or len(cur) < min_samples:
        return None
    if kind == "terms":
        r, c, mean_terms = _terms(ref, cur)
        if not sum(r) or not sum(c):
            return None
        score, p = js_on_psi_scale(r, c), homogeneity_p(r, c, design_effect=mean_terms)
        return _Raw(side, "js", score, p, len(ref), len(cur), ())
    r, c, labels = _numeric(ref, cur) if kind == "numeric" else _categorical(ref, cur)
    return _Raw(side, "psi", psi(r, c), homogeneity_p(r, c), len(ref), len(cur), _shifts(r, c, labels))


def top_terms(
    reference: Sequence[Sequence[str]], current: Sequence[Sequence[str]], k: int = TOP_TERMS
) -> tuple[tuple[TermShift, ...], tuple[TermShift, ...]]:
    """The terms whose share of interactions rose most and fell most (each seen in >= 3 and >= 2% of a side)."""
    if not reference or not current:
        return (), ()
    r = Counter(t for doc in reference for t in set(doc))
    c = Counter(t for doc in current for t in set(doc))
    nr, nc = len(reference), len(current)
    floor_r, floor_c = max(3, 0.02 * nr), max(3, 0.02 * nc)
    shifts = [TermShift(t, r[t] / nr, c[t] / nc) for t in set(r) | set(c) if r[t] >= floor_r or c[t] >= floor_c]
    rose = sorted((s for s in shifts if s.current > s.reference), key=lambda s: (s.reference - s.current, s.term))
    fell = sorted((s for s in shifts if s.current < s.reference), key=lambda s: (s.current - s.reference, s.term))
    return tuple(rose[:k]), tuple(fell[:k])


def compare(
    reference: Sequence[Mapping[str, Any]],
    current: Sequence[Mapping[str, Any]],
    *,
    max_psi: float,
    alpha: float = ALPHA,
    min_samples: int = MIN_SAMPLES,
) -> Comparison:
    """Score every signal with data on both sides; nothing is published below ``min_samples`` a side."""
    n_ref, n_cur = len(reference), len(current)
    if n_ref < min_samples or n_cur < min_samples:
        return Comparison(n_ref, n_cur, False, (), {}, (), ())
    raw = {name: found for name in SIGNALS if (found := _signal(name, reference, current, min_samples))}
    adjusted = dict(zip(raw, holm([found.p_value for found in raw.values()]), strict=True))
    signals = tuple(
        SignalResult(
            name, r.side, r.distance, r.score, p, p < alpha and r.score > max_psi, r.n_reference, r.n_current, r.shifts
        )
        for name, r in raw.items()
        for p in (adjusted[name],)
    )
    scores = {
        side: max((s.score for s in signals if s.side == side and s.p_value < alpha), default=0.0) for side in SIDES
    }
    scores["overall"] = max(scores.values())
    rose, fell = top_terms(_values(reference, "prompt_terms"), _values(current, "prompt_terms"))
    return Comparison(n_ref, n_cur, True, signals, scores, rose, fell)
