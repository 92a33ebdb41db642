"""Ray ingestion throughput: plain ``index_paths`` vs Ray with 1 and 2 local workers (issue 9).

On the Python 3.11 docs (reStructuredText sources), each configuration indexes the same files
into a fresh index with the same, explicitly fixed embedding backend:

* **plain** – ``ragkit.index.index_paths`` (one process; embedding in a worker thread);
* **ray-1** – ``index_paths_ray(workers=1)`` on a local Ray instance (one embedding actor with
  all cores' threads);
* **ray-2** – ``index_paths_ray(workers=2)`` (two actors, cores split between them).

Every configuration runs in its own child process. Ray's workers are separate processes
(children of the raylet, not of the driver), so the CPU time of a run is measured by sampling
``/proc`` every 0.2 s for the whole process tree under the child and summing each process's
last ``utime + stime`` — the driver, GCS, raylet and every worker. The CPU the *rest* of the
machine used during the run is recorded next to it, because the machine may be shared.

For Ray, the local instance is started before the timed ingest and reported separately
("ray start"): on a cluster it is paid once, not per run. The ingest time still includes
starting the embedding actors and loading the model in them.

Quick check (the first 60 files, one round)::

    .venv/bin/python benchmarks/ray_ingest_bench.py

Full corpus, alternating rounds, medians reported::

    .venv/bin/python benchmarks/ray_ingest_bench.py --max-files 0 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingest_bench import _cpu_jiffies, describe_sample, sample_machine, select_corpus, unpack_corpus

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "python-docs-3.11.tar.gz"
CONFIGS = ("plain", "ray-1", "ray-2")
SAMPLE_EVERY_S = 0.2


# --------------------------------------------------------------------------------------------
# CPU of a process tree
# --------------------------------------------------------------------------------------------
def _proc_table() -> dict[int, tuple[int, int, int]]:
    """pid -> (ppid, start time, utime + stime) in clock ticks, for every readable process."""
    table: dict[int, tuple[int, int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2 :].split()
        table[int(entry.name)] = (int(rest[1]), int(rest[19]), int(rest[11]) + int(rest[12]))
    return table


class TreeCpu:
    """Samples the CPU time of ``root`` and all its descendants until stopped.

    Processes are keyed by (pid, start time) so that a recycled pid is not mistaken for an
    earlier process; each one's latest reading counts, so at most one sampling period of a
    short-lived process's CPU is missed.
    """

    def __init__(self, root: int) -> None:
        self.root = root
        self.seen: dict[tuple[int, int], tuple[int, int]] = {}  # -> (ticks, ppid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        table = _proc_table()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in table.items():
            children.setdefault(ppid, []).append(pid)
        stack = [self.root]
        while stack:
            pid = stack.pop()
            if pid in table:
                ppid, start, ticks = table[pid]
                self.seen[(pid, start)] = (ticks, ppid)
            stack.extend(children.get(pid, []))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(SAMPLE_EVERY_S)

    def start(self) -> TreeCpu:
        self._thread.start()
        return self

    def stop(self) -> float:
        """CPU seconds of the whole tree."""
        self._stop.set()
        self._thread.join()
        return sum(t for t, _ in self.seen.values()) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------
# One configuration, in a child process
# --------------------------------------------------------------------------------------------
def run_one(config: str, corpus: Path, index_dir: Path, backend: str, result: Path) -> None:
    """Index ``corpus`` into ``index_dir`` with one configuration; write timings to ``result``."""
    from ragkit.embedding import Embedder
    from ragkit.index import Index, index_paths

    phases: dict[str, float] = {}
    started = time.perf_counter()
    embedder = Embedder(None, backend=backend).warm_up()
    phases["load_model_s"] = time.perf_counter() - started
    ray: Any = None
    workers = 0
    if config.startswith("ray-"):
        from ragkit.index.ray_ingest import DEFAULT_OBJECT_STORE_BYTES, ray_session

        workers = int(config.split("-", 1)[1])
        t = time.perf_counter()
        # started here, outside the timed ingest; index_paths_ray then uses this instance
        session = ray_session(workers, None, DEFAULT_OBJECT_STORE_BYTES)
        ray = session.__enter__()
        phases["ray_start_s"] = time.perf_counter() - t
    with Index.create(index_dir, embedder) as index:
        t = time.perf_counter()
        if ray is not None:
            from ragkit.index.ray_ingest import index_paths_ray

            report = index_paths_ray(index, [corpus], workers=workers)
        else:
            report = index_paths(index, [corpus])
        phases["ingest_s"] = time.perf_counter() - t
        backend_used = index.manifest.embed_backend
    if ray is not None:
        t = time.perf_counter()
        session.__exit__(None, None, None)
        phases["ray_stop_s"] = time.perf_counter() - t
    result.write_text(
        json.dumps(
            {
                "phases": phases,
                "embed_backend": backend_used,
                "report": report.model_dump(mode="json", exclude={"skipped"}),
                "skipped": len(report.skipped),
            }
        )
    )


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------
@dataclass
class Run:
    config: str
    round: int
    wall_s: float
    cpu_s: float
    other_cpu_s: float
    returncode: int
    result: dict[str, Any] = field(default_factory=dict)
    log: str = ""

    @property
    def ingest_s(self) -> float:
        return float(self.result.get("phases", {}).get("ingest_s", float("nan")))

    @property
    def chunks(self) -> int:
        return int(self.result.get("report", {}).get("chunks_added", 0))


def launch(config: str, round_: int, corpus: Path, work: Path, backend: str) -> Run:
    index_dir = work / f"index-{config}-{round_}"
    shutil.rmtree(index_dir, ignore_errors=True)
    result = work / f"result-{config}-{round_}.json"
    log = work / f"log-{config}-{round_}.txt"
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--run-one",
        config,
        "--corpus-dir",
        str(corpus),
        "--index-dir",
        str(index_dir),
        "--embed-backend",
        backend,
        "--result",
        str(result),
    ]
    busy_before = _cpu_jiffies()[0]
    started = time.perf_counter()
    with log.open("w") as out:
        child = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT)
        tree = TreeCpu(child.pid).start()
        returncode = child.wait()
    wall = time.perf_counter() - started
    cpu = tree.stop()
    machine = (_cpu_jiffies()[0] - busy_before) / os.sysconf("SC_CLK_TCK")
    data = json.loads(result.read_text()) if result.is_file() else {}
    return Run(config, round_, wall, cpu, max(machine - cpu, 0.0), returncode, data, str(log))


def check_same_index(work: Path, configs: list[str]) -> dict[str, Any]:
    """Compare the round-0 indexes with plain's: same chunk ids and texts, vector distance.

    With ``torch`` the vectors match to float rounding. ``onnx-int8`` quantises activations
    per batch (dynamic ranges), so a chunk's vector depends on the texts it was batched with:
    the plain path and the Ray actors batch differently, and their vectors differ within that
    backend's own tolerance (cosine ~0.98-1.0 per vector).
    """
    import sqlite3

    import numpy as np

    def load(config: str) -> tuple[list[tuple[str, str]], Any]:
        conn = sqlite3.connect(work / f"index-{config}-0" / "store.sqlite")
        rows = conn.execute("SELECT id, text, vector FROM chunks ORDER BY id").fetchall()
        conn.close()
        return [(r[0], r[1]) for r in rows], np.stack(
            [np.frombuffer(r[2], np.float32) for r in rows]
        )

    if "plain" not in configs:
        return {}
    base_rows, base_vectors = load("plain")
    out: dict[str, Any] = {}
    for config in configs:
        if config == "plain":
            continue
        rows, vectors = load(config)
        same = rows == base_rows
        out[config] = {
            "same_chunks": same,
            "max_abs_vector_diff": float(np.abs(vectors - base_vectors).max()) if same else None,
            "min_cosine": float((vectors * base_vectors).sum(1).min()) if same else None,
            "mean_cosine": float((vectors * base_vectors).sum(1).mean()) if same else None,
        }
    return out


def render(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"{meta['files']} files ({meta['megabytes']:.1f} MB), embed backend `{meta['embed_backend']}`, "
        f"{meta['rounds']} round(s), medians",
        "",
        "| config | ingest s | chunks/s | CPU s (whole tree) | ray start s | process wall s | others' CPU s during run |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for config, row in summary.items():
        lines.append(
            f"| {config} | {row['ingest_s']:.1f} | {row['chunks_per_s']:.1f} | {row['cpu_s']:.1f} | "
            f"{row['ray_start_s']:.1f} | {row['wall_s']:.1f} | {row['other_cpu_s']:.1f} |"
        )
    return "\n".join(lines)


def summarise(runs: list[Run]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for config in dict.fromkeys(r.config for r in runs):
        mine = [r for r in runs if r.config == config and r.returncode == 0]
        if not mine:
            continue
        ingest = statistics.median(r.ingest_s for r in mine)
        summary[config] = {
            "ingest_s": ingest,
            "chunks": mine[0].chunks,
            "chunks_per_s": mine[0].chunks / ingest if ingest else 0.0,
            "cpu_s": statistics.median(r.cpu_s for r in mine),
            "wall_s": statistics.median(r.wall_s for r in mine),
            "other_cpu_s": statistics.median(r.other_cpu_s for r in mine),
            "ray_start_s": statistics.median(
                r.result["phases"].get("ray_start_s", 0.0) for r in mine
            ),
        }
    return summary


def ratios(summary: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Throughput ratios (>1: the first is faster) and CPU-time ratios."""
    out: dict[str, float] = {}
    pairs = [("ray-2", "ray-1"), ("ray-1", "plain"), ("ray-2", "plain")]
    for a, b in pairs:
        if a in summary and b in summary:
            out[f"throughput {a}/{b}"] = summary[a]["chunks_per_s"] / summary[b]["chunks_per_s"]
            out[f"cpu_s {a}/{b}"] = summary[a]["cpu_s"] / summary[b]["cpu_s"]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the docs archive")
    parser.add_argument(
        "--max-files", type=int, default=60, help="first N files by path (0: all 497)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternating rounds; medians")
    parser.add_argument(
        "--embed-backend",
        default="onnx-int8",
        help="fixed for every configuration (default onnx-int8: what `auto` picks on a CPU here)",
    )
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / ".work")
    parser.add_argument("--keep-indexes", action="store_true")
    # internal: one configuration in a child process
    parser.add_argument("--run-one", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--corpus-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--index-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run_one:
        run_one(args.run_one, args.corpus_dir, args.index_dir, args.embed_backend, args.result)
        return 0
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    work = args.work_dir.resolve()
    docs = unpack_corpus(args.corpus, work)
    corpus, n_files, n_bytes = select_corpus(docs, work, args.max_files or None)
    # export/quantise the model once, outside every timed run
    from ragkit.embedding import Embedder

    backend = Embedder(None, backend=args.embed_backend).warm_up().backend_name
    sample = sample_machine()
    print(describe_sample(sample), flush=True)
    scratch = Path(tempfile.mkdtemp(prefix="ray-bench-", dir=work))
    runs: list[Run] = []
    for round_ in range(args.rounds):
        order = configs if round_ % 2 == 0 else list(reversed(configs))
        for config in order:
            run = launch(config, round_, corpus, scratch, backend)
            runs.append(run)
            print(
                f"round {round_} {config}: rc={run.returncode} ingest {run.ingest_s:.1f} s, "
                f"{run.chunks} chunks, tree CPU {run.cpu_s:.1f} s, wall {run.wall_s:.1f} s, "
                f"others' CPU {run.other_cpu_s:.1f} s",
                flush=True,
            )
            if run.returncode != 0:
                print(Path(run.log).read_text()[-3000:], file=sys.stderr)
    summary = summarise(runs)
    same = check_same_index(scratch, [c for c in configs if c in summary])
    meta = {
        "files": n_files,
        "megabytes": n_bytes / 1e6,
        "embed_backend": backend,
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "ray": _version("ray"),
        "started_load": asdict(sample),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    table = render(summary, meta)
    print()
    print(table)
    rat = ratios(summary)
    for name, value in rat.items():
        print(f"{name}: {value:.2f}")
    for config, check in same.items():
        print(f"{config} vs plain: {check}")
    results = BENCH_DIR / "results"
    results.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"ray-ingest-{n_files}-{backend}-{stamp}.json"
    payload = {
        "meta": meta,
        "summary": summary,
        "ratios": rat,
        "same_index": same,
        "runs": [asdict(r) for r in runs],
        "table": table,
    }
    (results / name).write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote benchmarks/results/{name}")
    if not args.keep_indexes:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0 if all(r.returncode == 0 for r in runs) else 1


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    raise SystemExit(main())
