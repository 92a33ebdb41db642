"""Fault: SIGKILL a process writing feedback (several threads) at random moments, five times
over one database: after each kill the database passes ``integrity_check``, every row whose
write returned is there, and the next writer carries on."""

from __future__ import annotations

import contextlib
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from pathlib import Path

WRITER = textwrap.dedent(
    """
    import sys, threading
    from ragkit.feedback import FeedbackStore

    store = FeedbackStore(sys.argv[1])
    round_, lock = sys.argv[2], threading.Lock()

    def ack(line):
        with lock:
            sys.stdout.write(line + "\\n")
            sys.stdout.flush()

    def write(t):
        try:
            loop(t)
        except BaseException as exc:
            ack("crash " + repr(exc).replace(" ", "_"))
            raise

    def loop(t):
        i = 0
        while True:
            first, second = f"{round_}-{t}-{i}-a", f"{round_}-{t}-{i}-b"
            store.record_answer(first, f"Q{t}?", "x" * 500, [], "m")
            ack("answer " + first)
            store.record_answer(second, f"q{t}? ", "y" * 500, [], "m")
            ack("answer " + second)
            store.vote(first, 1)
            ack("vote " + first + " 1")
            store.vote(second, -1)
            ack("vote " + second + " -1")
            store.choose(first, second)
            ack("choice " + first + " " + second)
            i += 1

    ack("ready")
    for t in range(4):
        threading.Thread(target=write, args=(t,), daemon=True).start()
    threading.Event().wait()
    """
)


def _run_and_kill(db: Path, round_: int, rng: random.Random) -> list[str]:
    """Start a writer, SIGKILL it after a random time; the lines it acknowledged before."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(db), f"r{round_}"], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        reader.start()
        time.sleep(rng.uniform(0.15, 0.8))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    reader.join(30)
    return [line.strip() for line in lines if line.endswith("\n")]  # a cut line was not acked


def test_feedback_survives_sigkill_at_random_moments(tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    rng = random.Random(22)
    answers: set[str] = set()
    votes: Counter[tuple[str, int]] = Counter()
    choices: Counter[tuple[str, str]] = Counter()
    for round_ in range(20):  # the target: zero lost rows across 20 kill -9 trials
        for line in _run_and_kill(db, round_, rng):
            kind, *rest = line.split()
            if kind == "answer":
                answers.add(rest[0])
            elif kind == "vote":
                votes[(rest[0], int(rest[1]))] += 1
            elif kind == "choice":
                choices[(rest[0], rest[1])] += 1
            else:
                raise AssertionError(f"writer failed: {line}")
        with contextlib.closing(sqlite3.connect(db)) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {r[0] for r in conn.execute("SELECT id FROM answers")}
            stored_votes = Counter(conn.execute("SELECT answer_id, value FROM votes").fetchall())
            stored_choices = Counter(
                conn.execute("SELECT chosen_id, rejected_id FROM choices").fetchall()
            )
        assert answers <= stored, sorted(answers - stored)[:5]
        # at most the one write in flight per thread and kill may be stored without its
        # acknowledgement (4 writer threads, one kill per round so far)
        assert len(stored) - len(answers) <= 4 * (round_ + 1)
        assert not votes - stored_votes
        assert not choices - stored_choices
    assert len(answers) >= 10 and votes and choices  # the writers did get work done
