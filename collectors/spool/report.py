"""What the loader process tells the serving process: one ``Report`` per batch or change of state, sent as one
orjson line on a pipe; the serving process applies it to its metrics and its journal's accounting.

Usage::

    report = Report(degraded=False, adopted=0, own=Position(1, 4096), own_lines=12, captured={"bot": 12})
    os.write(fd, report.line())             # in the loader
    report = Report.parse(line)             # in the serving process
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson

from collectors.spool.journal import Position
from collectors.store.base import Claimed


@dataclass
class Report:
    degraded: bool  # the store is unavailable (the journal spools)
    adopted: int  # journals of dead processes not yet fully replayed
    own: Position | None = None  # the serving process's journal is stored up to here
    own_lines: int = 0  # lines of that journal stored since the last report
    stored: int = 0  # lines stored since the last report, every journal
    captured: dict[str, int] = field(default_factory=dict)  # route -> interactions stored
    claimed: list[Claimed] = field(default_factory=list)  # feedback joined to its interaction for the first time
    dropped: dict[str, int] = field(default_factory=dict)  # reason (journal_error, store_rejected) -> count

    def line(self) -> bytes:
        data = {**vars(self), "claimed": [tuple(c) for c in self.claimed]}
        data["own"] = None if self.own is None else (self.own.segment, self.own.offset)
        return orjson.dumps(data) + b"\n"

    @classmethod
    def parse(cls, line: bytes) -> Report:
        data = orjson.loads(line)
        own = data.pop("own")
        claimed = [Claimed(*c) for c in data.pop("claimed")]
        return cls(**data, own=None if own is None else Position(*own), claimed=claimed)
