"""``turnout dataset build|list|show|diff|export`` and ``turnout lineage UPSTREAM``.

``build NAME`` writes the next version (what the ``dataset:NAME`` job does on its schedule; ``--dry-run`` only
says what it would write); ``list [NAME]`` the versions; ``show NAME@vN`` a manifest; ``diff NAME@vA NAME@vB``
what entered, left and changed with summary statistics (exit 0 whether or not they differ); ``export NAME@vN -o
FILE`` the training file, checked against its sha256. ``lineage UPSTREAM`` prints the model, its dataset version
and that version's parents with their dates and counts. Errors go to stderr, exit 1 (2 for a config file that
does not validate).

Usage: ``turnout dataset build support-sft -c turnout.yaml`` (arguments in ``gateway/subcommands.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from collectors.datasets.diff import diff
from collectors.datasets.lineage import chain
from collectors.datasets.manifest import UnknownVersion, latest, read_manifest, version_dir, versions
from collectors.store import UnknownStore, open_store
from collectors.store.base import StoreUnavailable
from gateway.config import ConfigError, Loaded, load_config
from gateway.datasets import build_dataset, datasets_root
from gateway.progress import Progress, config_failed


def _load(path: str) -> Loaded:
    return load_config(path, store_only=True)


def _build(args: argparse.Namespace, loaded: Loaded) -> int:
    config = loaded.config
    if args.name not in config.datasets:
        print(f"turnout dataset: datasets.{args.name}: no such dataset in {loaded.path}", file=sys.stderr)
        return 1

    async def run() -> Any:
        store = open_store(loaded.secrets.store_dsn)
        try:
            await store.open()
            with Progress(f"dataset {args.name}: reading", unit="interaction", quiet=args.quiet) as bar:
                return await build_dataset(
                    store, config, loaded.path, args.name, now=time.time(), dry_run=args.dry_run, on_read=bar.update
                )
        finally:
            await store.close()

    result = asyncio.run(run())
    counts = result.manifest.get("counts", {})
    if args.json:
        doc = {
            "dataset": args.name, "version": result.version, "reason": result.reason, "counts": counts,
            "parent": result.manifest.get("parent"), "sha256": result.manifest.get("sha256"),
            "path": str(result.path) if result.path else None, "dry_run": args.dry_run,
        }  # fmt: skip
        sys.stdout.buffer.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if result.version is None:
        print(f"{args.name}: {result.reason} ({counts.get('examples', 0)} examples match)")
        return 0
    print(
        f"{args.name}: wrote {result.version} ({counts['examples']} examples, parent {result.manifest['parent']}, "
        f"{counts['collapsed']} near-duplicates collapsed) -> {result.path}"
    )
    return 0


def _list(args: argparse.Namespace, loaded: Loaded) -> int:
    root = datasets_root(loaded.config, loaded.path)
    names = [args.name] if args.name else sorted(set(loaded.config.datasets) | _on_disk(root))
    for name in names:
        found = versions(root, name)
        if not found:
            print(f"{name}: no versions in {root / name}")
        for v in found:
            m = read_manifest(root, f"{name}@{v}")
            print(
                f"{name}@{v}  {m['created_at']}  {m['counts']['examples']:>7} examples  sha256 {m['sha256'][:12]}  "
                f"parent {m['parent'] or '-'}"
            )
    return 0


def _on_disk(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")} if root.is_dir() else set()


def _show(args: argparse.Namespace, loaded: Loaded) -> int:
    manifest = read_manifest(datasets_root(loaded.config, loaded.path), args.ref)
    if not args.ids:
        manifest = {**manifest, "ids": f"[{len(manifest['ids'])} interaction ids; --ids to list them]"}
    sys.stdout.buffer.write(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _lengths(stats: dict[str, Any]) -> str:
    p, a = stats["prompt_chars"], stats["answer_chars"]
    return f"prompt chars p50 {p['p50']} p90 {p['p90']}; answer chars p50 {a['p50']} p90 {a['p90']}"


def _diff(args: argparse.Namespace, loaded: Loaded) -> int:
    d = diff(datasets_root(loaded.config, loaded.path), args.a, args.b)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(d, option=orjson.OPT_INDENT_2))
    a, b = d["stats"]["a"], d["stats"]["b"]
    print(f"{d['a']['ref']} ({d['a']['created_at']}, {a['examples']} examples) -> "
          f"{d['b']['ref']} ({d['b']['created_at']}, {b['examples']} examples)")  # fmt: skip
    if d["identical"]:
        print("identical (same sha256)")
    print(f"added {len(d['added'])}, removed {len(d['removed'])}, changed {len(d['changed'])}")
    for side in ("a", "b", "added", "removed"):
        s = d["stats"][side]
        print(f"  {side:>7}: by label {s['by_label']}, by source {s['by_source']}; {_lengths(s)}")
    if d["top_new_terms"]:
        print("  top new terms: " + ", ".join(f"{t['term']} (+{t['count']})" for t in d["top_new_terms"]))
    return 0


def _export(args: argparse.Namespace, loaded: Loaded) -> int:
    root = datasets_root(loaded.config, loaded.path)
    source = version_dir(root, args.ref) / "train.jsonl"
    expected = read_manifest(root, args.ref)["sha256"]
    if hashlib.sha256(source.read_bytes()).hexdigest() != expected:
        print(f"turnout dataset: {source}: sha256 differs from the manifest's (the file was changed)", file=sys.stderr)
        return 1
    if args.output in (None, "-"):
        sys.stdout.buffer.write(source.read_bytes())
    else:
        shutil.copyfile(source, args.output)
        print(f"{args.ref}: {args.output} (sha256 {expected})", file=sys.stderr)
    return 0


def dataset(args: argparse.Namespace) -> int:
    try:
        loaded = _load(args.config)
    except ConfigError as exc:
        return config_failed(exc)
    actions = {"build": _build, "list": _list, "show": _show, "diff": _diff, "export": _export}
    try:
        return actions[args.action](args, loaded)
    except (UnknownVersion, UnknownStore, StoreUnavailable, OSError) as exc:
        print(f"turnout dataset: {exc}", file=sys.stderr)
        return 1


def lineage(args: argparse.Namespace) -> int:
    try:
        loaded = _load(args.config)
    except ConfigError as exc:
        return config_failed(exc)
    upstream = loaded.config.upstreams.get(args.upstream)
    if upstream is None:
        print(f"turnout lineage: upstreams.{args.upstream}: no such upstream in {loaded.path}", file=sys.stderr)
        return 1
    trained = upstream.trained_at.date().isoformat() if upstream.trained_at else "unknown"
    print(f"{args.upstream}: model {upstream.model}, trained {trained}")
    if not upstream.dataset:
        print(f"turnout lineage: upstreams.{args.upstream}.dataset is not set", file=sys.stderr)
        return 1
    try:
        found = chain(datasets_root(loaded.config, loaded.path), upstream.dataset)
    except UnknownVersion as exc:
        print(f"turnout lineage: {exc}", file=sys.stderr)
        return 1
    for depth, entry in enumerate(found):
        lead = "  " * depth + ("<- " if depth else "-> ")
        if entry.get("missing"):
            print(f"{lead}{entry['ref']} (missing)")
        else:
            sha = entry["sha256"][:12]
            print(f"{lead}{entry['ref']}  {entry['created_at']}  {entry['examples']} examples  sha256 {sha}")
    return 0


def check_warnings(loaded: Loaded) -> list[str]:
    """``turnout check``: each ``upstreams.X.dataset`` naming a version missing from ``datasets_dir``."""
    root = datasets_root(loaded.config, loaded.path)
    warnings = []
    for name, up in loaded.config.upstreams.items():
        if up.dataset:
            try:
                version_dir(root, up.dataset)
            except UnknownVersion:
                newest = latest(root, up.dataset.split("@")[0])
                hint = f" (latest is {newest['version']})" if newest else ""
                warnings.append(f"upstreams.{name}.dataset: {up.dataset} is not in {root}{hint}")
    return warnings
