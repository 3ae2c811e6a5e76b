"""What changed between two versions of a dataset: examples added, removed and changed (same interaction, another
line: an edit, a new correction, different redaction), with summary statistics of each side and of the change.

Examples are matched by interaction id (``index.jsonl``); "changed" compares the sha256 of the canonical line.
Statistics: counts per route, variant, label and source; prompt and answer lengths (characters: min, p50, p90,
max, mean); and the top new terms, the words (three letters or more, lower case) whose count in the added
examples most exceeds their count in the removed ones.

Usage::

    d = diff(root, "support@v3", "support@v4")
    d["added"], d["removed"], d["changed"]      # lists of interaction ids
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from collectors.datasets.build import lengths
from collectors.datasets.manifest import read_index, read_manifest, read_rows

_WORD = re.compile(r"[^\W\d_]{3,}", re.UNICODE)
TOP_TERMS = 15


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def _prompt(line: dict[str, Any]) -> str:
    return "\n".join(_text(m.get("content")) for m in line["messages"][:-1])


def _answer(line: dict[str, Any]) -> str:
    return _text(line["messages"][-1].get("content"))


def _stats(index: list[dict[str, Any]], lines: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "examples": len(index),
        "by_route": dict(sorted(Counter(i["route"] for i in index).items())),
        "by_variant": dict(sorted(Counter(i["variant"] for i in index).items())),
        "by_label": dict(sorted(Counter(i["label"] or "none" for i in index).items())),
        "by_source": dict(sorted(Counter(i["source"] for i in index).items())),
        "prompt_chars": lengths([len(_prompt(line)) for line in lines]),
        "answer_chars": lengths([len(_answer(line)) for line in lines]),
    }


def _terms(lines: list[dict[str, Any]]) -> Counter[str]:
    found: Counter[str] = Counter()
    for line in lines:
        found.update(w.lower() for w in _WORD.findall(_prompt(line) + "\n" + _answer(line)))
    return found


def diff(root: Path, ref_a: str, ref_b: str) -> dict[str, Any]:
    """The difference from version ``ref_a`` to ``ref_b`` (see the module docstring)."""
    ma, mb = read_manifest(root, ref_a), read_manifest(root, ref_b)
    ia, ib = read_index(root, ref_a), read_index(root, ref_b)
    la, lb = list(read_rows(root, ref_a)), list(read_rows(root, ref_b))
    sha_a = {i["id"]: i["sha256"] for i in ia}
    sha_b = {i["id"]: i["sha256"] for i in ib}
    added = [i["id"] for i in ib if i["id"] not in sha_a]
    removed = [i["id"] for i in ia if i["id"] not in sha_b]
    changed = [i["id"] for i in ib if i["id"] in sha_a and sha_a[i["id"]] != i["sha256"]]
    added_set, removed_set = set(added), set(removed)
    new_lines = [line for i, line in zip(ib, lb, strict=True) if i["id"] in added_set]
    old_lines = [line for i, line in zip(ia, la, strict=True) if i["id"] in removed_set]
    growth = _terms(new_lines)
    growth.subtract(_terms(old_lines))
    top = [{"term": t, "count": n} for t, n in sorted(growth.items(), key=lambda kv: (-kv[1], kv[0])) if n > 0]
    return {
        "a": {"ref": f"{ma['name']}@{ma['version']}", "sha256": ma["sha256"], "created_at": ma["created_at"]},
        "b": {"ref": f"{mb['name']}@{mb['version']}", "sha256": mb["sha256"], "created_at": mb["created_at"]},
        "identical": ma["sha256"] == mb["sha256"],
        "added": added,
        "removed": removed,
        "changed": changed,
        "stats": {
            "a": _stats(ia, la),
            "b": _stats(ib, lb),
            "added": _stats([i for i in ib if i["id"] in added_set], new_lines),
            "removed": _stats([i for i in ia if i["id"] in removed_set], old_lines),
        },
        "top_new_terms": top[:TOP_TERMS],
    }
