"""Soak: many clients (threads, then separate processes) load one server with searches,
questions and feedback; zero 5xx, zero 429 (loopback is not rate-limited by default), zero
connection errors, and every acknowledged feedback row is in the store.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from soak_load import merge, run_clients
from soak_support import HERE, assert_clean, assert_feedback_complete, serve

ROUTES = ("/v1/search", "/v1/query", "/v1/feedback")


def test_threads_mixed_load(soak_rag: Any, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    with serve(soak_rag, feedback_db=db) as base:  # default limits: 120/min per caller
        result = run_clients(base, seconds=4.0, tag="t", seed=1, threads=16)
    assert_clean(result, ROUTES)
    assert_feedback_complete(db, result)


def test_processes_mixed_load(soak_rag: Any, tmp_path: Path) -> None:
    db = tmp_path / "feedback.db"
    script = str(HERE / "soak_load.py")
    with serve(soak_rag, feedback_db=db) as base:
        procs = [
            subprocess.Popen(
                [sys.executable, script, base, "4", f"p{n}", str(n + 10), "4"],
                stdout=subprocess.PIPE,
                text=True,
            )
            for n in range(4)
        ]
        outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0, 0, 0]
    result = merge([json.loads(out) for out in outputs])
    assert_clean(result, ROUTES)
    assert_feedback_complete(db, result)
