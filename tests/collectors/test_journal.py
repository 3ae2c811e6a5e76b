from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from collectors.spool.journal import Cursor, Journal, Position, SpoolFull, adopt
from tests.harness import ROOT

CHILD = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from collectors.spool.journal import Journal
    journal = Journal(Path(sys.argv[1]))
    journal.open()
    for i in range(3):
        journal.append(b'{"n": %d}\\n' % i)
    print("ready", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
    """
)


def _child(root: Path, mode: str) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(root), mode],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ready = proc.stdout.readline().strip()
    proc.stdout.close()
    assert ready == "ready"
    return proc


def test_append_read_commit_rotates_and_deletes(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=100)
    journal.open()
    lines = [b'{"n": %d, "pad": "%s"}' % (i, b"x" * 30) for i in range(10)]
    for line in lines:
        journal.append(line + b"\n")
    assert journal.directory is not None
    assert len(list(journal.directory.glob("*.jsonl"))) > 3
    cursor = Cursor(journal.directory, owned=True)
    seen = []
    while True:
        batch, end = cursor.read(max_lines=3)
        if not batch:
            break
        seen += batch
        cursor.commit(end)
    assert seen == lines
    assert len(list(journal.directory.glob("*.jsonl"))) == 1  # only the segment being written remains
    journal.append(b'{"n": 10}\n')
    assert cursor.read()[0] == [b'{"n": 10}']
    journal.close(remove=True)
    assert not journal.directory.exists()


def test_checkpoint_survives_a_new_cursor(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j")
    journal.open()
    for i in range(5):
        journal.append(b"%d\n" % i)
    cursor = Cursor(journal.directory, owned=True)
    _, end = cursor.read(max_lines=2)
    cursor.commit(end)
    assert Cursor(journal.directory, owned=True).read()[0] == [b"2", b"3", b"4"]
    journal.close(remove=False)


def test_spool_bound(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", max_pending_bytes=100)
    journal.open()
    journal.append(b"x" * 60 + b"\n")
    with pytest.raises(SpoolFull):
        journal.append(b"y" * 60 + b"\n")
    journal.stored_bytes += 61  # the writer stored the first line
    journal.append(b"y" * 60 + b"\n")
    journal.close(remove=True)


def test_the_loaders_checkpoint_gives_the_pending_bytes_and_lines(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j", segment_bytes=100)
    journal.open()
    for i in range(10):
        journal.append(b'{"n": %d, "pad": "%s"}\n' % (i, b"x" * 30))
    assert journal.directory is not None
    cursor = Cursor(journal.directory, owned=True)  # as the loader process reads it
    for _ in range(2):  # two lines a segment: one read each
        lines, end = cursor.read()
        cursor.commit(end)
        journal.loaded(end, len(lines))
    assert end.segment == 2  # past the first rotation
    assert journal.pending_bytes == 6 * 50
    assert journal.pending_lines == 6
    while lines:
        lines, end = cursor.read()
        cursor.commit(end)
    journal.loaded(cursor.position, 0)  # a restarted loader does not know how many lines its predecessor reported
    assert journal.pending_bytes == 0 and journal.pending_lines == 0
    journal.loaded(Position(cursor.position.segment, cursor.position.offset), 0)  # the same again: no change
    assert journal.pending_bytes == 0
    journal.close(remove=True)


def test_a_live_journal_is_not_adopted_a_dead_one_is(tmp_path: Path) -> None:
    root = tmp_path / "j"
    live = _child(root, "live")
    try:
        mine = Journal(root)
        mine.open()
        assert adopt(root, mine.directory) == []
        dead = _child(root, "die")
        assert dead.wait(10) == -signal.SIGKILL
        adopted = adopt(root, mine.directory)
        assert len(adopted) == 1
        cursor, _ = adopted[0]
        assert cursor.read()[0] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
        assert not cursor.torn
    finally:
        live.kill()
        live.wait()
    again = Journal(root)
    again.open()
    assert len(adopt(root, again.directory)) == 1  # the live one died now; ours still holds its lock
    mine.close(remove=True)
    again.close(remove=True)


def test_a_torn_last_line_is_reported(tmp_path: Path) -> None:
    root = tmp_path / "j"
    dead = _child(root, "die")
    dead.wait(10)
    (segment,) = root.glob("*/*.jsonl")
    with segment.open("ab") as f:
        f.write(b'{"n": 3, "cut sh')
    mine = Journal(root)
    mine.open()
    ((cursor, _),) = adopt(root, mine.directory)
    lines, end = cursor.read()
    assert len(lines) == 3
    cursor.commit(end)
    assert cursor.read()[0] == []
    assert cursor.torn
    mine.close(remove=True)


FULL_DISK = textwrap.dedent(
    """
    import resource, signal, sys
    from pathlib import Path
    from collectors.spool.journal import Cursor, Journal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # past the limit a write fails with EFBIG, like ENOSPC
    journal = Journal(Path(sys.argv[1]))
    journal.open()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
    failed = 0
    for i in range(5):
        try:
            journal.append(b'{"n": %d, "pad": "%s"}\\n' % (i, b"x" * 280))
        except OSError:
            failed += 1
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    journal.append(b'{"n": 5}\\n')
    cursor = Cursor(journal.directory, owned=True)
    lines, end = cursor.read()
    cursor.commit(end)
    journal.stored_bytes += sum(len(line) + 1 for line in lines)
    journal.stored_lines += len(lines)
    print(failed, len(lines), journal.pending_bytes, journal.pending_lines, str(lines[-1], "utf-8"))
    """
)


def test_a_write_cut_short_by_a_full_disk_does_not_spoil_the_next_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path / "j")], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    failed, count, pending_bytes, pending_lines, last = done.stdout.strip().split(maxsplit=4)
    assert failed == "2"  # the fourth line was cut short, the fifth could not start
    assert count == "5"  # three whole lines, the fragment, and the line after the disk recovered
    assert last == '{"n": 5}' and pending_bytes == "0" and pending_lines == "0"
