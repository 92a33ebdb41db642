"""Run a test file as a 2-process DDP job on the CPU (gloo), as the distributed tests do.

``ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2`` makes accelerate run
``MULTI_CPU`` DDP: the code path of ``accelerate launch --num_processes 2`` except for the
backend. Skips the calling test when torchrun is not installed next to the interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_two_processes(script: Path, *args: str | Path, timeout: int = 300) -> None:
    """Launch ``script args...`` on 2 processes; fail the test with the output if it fails."""
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():  # pragma: no cover - torch ships it
        pytest.skip("torchrun not installed next to the interpreter")
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "1",
        "OMP_NUM_THREADS": "1",
        # the script imports its own test module: the project and the shared test helpers
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
        "TRANSFORMERS_VERBOSITY": "error",
    }
    command = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script)]
    done = subprocess.run(
        [*command, *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
