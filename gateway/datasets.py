"""Datasets from the config: where versions live, how a configured dataset is built (by the CLI or its scheduled
job), and the stored figures every replica exports (review backlog, dataset size, age and pending approvals).

``datasets_dir`` is relative to the config file's directory (like eval suite paths), or absolute (a volume).

Usage::

    result = await build_dataset(store, config, config_path, "support", now=time.time())
    jobs = dataset_jobs(config)              # one "dataset:NAME" job per dataset with `every`
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from collectors.datasets.stored import latest_versions, pending, record_version
from collectors.review.items import status_counts
from collectors.store.base import Store
from collectors.stored_metrics import Snapshot
from gateway.config import Config
from gateway.schedule import Job, JobContext, Schedule

if TYPE_CHECKING:
    from collectors.datasets.build import BuildResult, Spec


class Reading(Protocol):
    """What ``read_datasets`` needs of ``gateway.stored_state.ReadContext`` (which imports this module)."""

    @property
    def store(self) -> Store: ...
    @property
    def config(self) -> Config: ...
    @property
    def out(self) -> Snapshot: ...
    @property
    def now(self) -> float: ...


log = logging.getLogger(__name__)


def datasets_root(config: Config, config_path: Path) -> Path:
    root = Path(config.datasets_dir)
    return root if root.is_absolute() else config_path.absolute().parent / root


def spec(config: Config, name: str) -> Spec:
    from collectors.datasets.build import Spec  # here: every serving process imports this module for its reader

    dataset = config.datasets[name]
    inc = dataset.include
    redact = frozenset(config.routes[dataset.route].capture.redact)
    return Spec(name, dataset.route, inc.reviewed, inc.label, inc.min_score, inc.since, redact)


async def build_dataset(
    store: Store,
    config: Config,
    config_path: Path,
    name: str,
    *,
    now: float,
    dry_run: bool = False,
    on_read: Callable[[], None] | None = None,
) -> BuildResult:
    """Build the next version of the configured dataset ``name`` (and record it in the store)."""
    from collectors.datasets.build import build

    root = datasets_root(config, config_path)
    result = await build(store, root, spec(config, name), now=now, dry_run=dry_run, on_read=on_read)
    if result.version is not None:
        await record_version(store, result.manifest, created=now)
    return result


def dataset_jobs(config: Config) -> list[Job]:
    def run(name: str) -> Callable[[JobContext], Awaitable[None]]:
        async def job(ctx: JobContext) -> None:
            result = await build_dataset(ctx.store, ctx.config, ctx.config_path, name, now=ctx.now())
            log.info("dataset %s: %s", name, result.reason if result.version is None else f"wrote {result.version}")

        return job

    return [
        Job(f"dataset:{name}", Schedule.parse(d.every), run(name)) for name, d in config.datasets.items() if d.every
    ]


async def read_datasets(ctx: Reading) -> None:
    """``review_backlog{route}`` and ``review_decided_total{route}``; for every configured dataset
    ``dataset_examples``, ``dataset_version_timestamp_seconds``, ``dataset_pending`` (approved items decided since
    the latest version) and ``dataset_build_interval_seconds`` (its schedule, for TurnoutDatasetStale)."""
    config = ctx.config
    if config.review is None and not config.datasets:
        return
    by_status = await status_counts(ctx.store)
    for route in sorted(set(config.routes) | {r for r, _ in by_status}):
        labels = {"route": route}
        left = by_status.get((route, "pending"), 0)
        decided = sum(n for (r, status), n in by_status.items() if r == route and status != "pending")
        ctx.out.gauge("review_backlog", "Interactions waiting for a person's review", labels, left)
        ctx.out.counter(
            "review_decided_total", "Review items a person decided (approved, rejected, scored)", labels, decided
        )
    latest = await latest_versions(ctx.store)
    for name, dataset in sorted(config.datasets.items()):
        version = latest.get(name)
        labels = {"dataset": name}
        if version is not None:
            ctx.out.gauge("dataset_examples", "Examples in the dataset's latest version", labels, version[2])
            ctx.out.gauge("dataset_version_timestamp_seconds", "When the latest version was built", labels, version[1])
        reviewed = dataset.include.reviewed == "approved"  # a dataset built from feedback has no approvals to wait
        waiting = await pending(ctx.store, dataset.route, after=version[1] if version else None) if reviewed else 0
        ctx.out.gauge("dataset_pending", "Approved examples not yet in a version", labels, waiting)
        if dataset.every:
            schedule = Schedule.parse(dataset.every)
            interval = schedule.next_after(schedule.next_after(ctx.now)) - schedule.next_after(ctx.now)
            ctx.out.gauge("dataset_build_interval_seconds", "Time between scheduled builds", labels, interval)
