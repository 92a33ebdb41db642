"""RAG answering benchmark (issue 3): batched throughput, ``ragkit ask`` cold start, SQuAD quality.

Three measurements on the answerable questions of ``../shared/data/squad_small.json`` (the first
``--limit`` in file order), with the packaged SmolLM2-135M-Instruct unless ``--model`` says
otherwise:

1. **Throughput.** ``RAGPipeline.ask_batch`` against a loop of single ``RAGPipeline.ask`` calls
   and against plain ``model.generate`` batched on the *same prompts* (the ones ragkit's
   retriever and prompt builder produce, rendered through the same chat template, so all three
   read identical token ids). Greedy decoding and the same ``max_new_tokens`` everywhere, so the
   three should write the same answers (the script checks it) and tokens/s compare like with
   like. ragkit's two systems are timed end to end (retrieval, prompt building, generation,
   citation mapping); the plain baseline is given its prompts for free, so ragkit's whole
   overhead counts against it. ``--systems ...,prefill`` adds ``ask_batch``'s generation cut
   at one token: the cost of reading the prompts, which batching cannot shrink on a
   compute-bound CPU, so ``loop time / prefill time`` bounds what batching can gain.
2. **Cold start** of ``ragkit ask "..." --index DIR`` (model cache warm): a fresh process on a
   pseudo-terminal, as a user runs it, timed from spawn to the first byte of streamed output.
3. **Quality.** SQuAD exact match and token F1 (the official normalisation: lower case, no
   punctuation, no articles, single spaces; max over the gold answers) with retrieval (k=4)
   against the gold paragraph given as the only passage, plus retrieval recall@k (is the gold
   paragraph among the hits).

The corpus is every SQuAD paragraph written as a small text file into
``benchmarks/.work/squad_paragraphs/`` and indexed once with ``ragkit index`` into
``benchmarks/.work/squad_index`` (both git-ignored; reused while present).

    .venv/bin/python benchmarks/rag_bench.py --limit 8                      # quick (3-6 min)
    .venv/bin/python benchmarks/rag_bench.py --threads 1 --wait-quiet 600   # 64 questions (~15 min)
    .venv/bin/python benchmarks/rag_bench.py --limit 32 --threads 1 \
        --systems batched,loop,prefill --skip-cold-start --skip-quality     # the prefill ceiling

This machine is shared: the script samples the load before it starts, records how much CPU
*other* processes used during every timed run, alternates the systems (A B C, C B A, ...) and
reports tokens per CPU-second of its own process next to wall-clock tokens/s, because the latter
moves with other people's work and the former much less. ``--threads 1`` keeps torch's OpenMP
threads from waiting on each other when a co-tenant holds a core (with two threads under load a
decode step was measured 16 x slower); the cold-start processes keep torch's default, as a user's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pty
import re
import select
import shutil
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "squad_small.json"
WORK = ROOT / "benchmarks" / ".work"
PARAGRAPHS = WORK / "squad_paragraphs"
INDEX = WORK / "squad_index"
RESULTS = ROOT / "benchmarks" / "results"
HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

BATCHED = "ragkit ask_batch"
LOOP = "ragkit ask loop"
PLAIN = "plain model.generate batched"
PREFILL = "ragkit prefill only (1 token)"
SYSTEM_KEYS = {"batched": BATCHED, "plain": PLAIN, "loop": LOOP, "prefill": PREFILL}
COLD_QUESTION = "In what country is Normandy located?"


# ----------------------------------------------------------------------------- data


@dataclass(frozen=True)
class QA:
    """One answerable SQuAD question with its gold paragraph (as a corpus file)."""

    id: str
    question: str
    answers: tuple[str, ...]
    context: str
    paragraph_file: str


def paragraph_name(title: str, index: int) -> str:
    """A stable, readable file name for one paragraph (the gold "document" of its questions)."""
    safe = re.sub(r"[^A-Za-z0-9]+", "_", title).strip("_")
    return f"{safe}_{index:03d}.txt"


def load_squad(path: Path) -> tuple[dict[str, str], list[QA]]:
    """All paragraphs (file name → text) and the answerable questions, in file order."""
    data = json.loads(path.read_text(encoding="utf-8"))["data"]
    paragraphs: dict[str, str] = {}
    qas: list[QA] = []
    for article in data:
        for i, paragraph in enumerate(article["paragraphs"]):
            name = paragraph_name(article["title"], i)
            paragraphs[name] = paragraph["context"]
            for qa in paragraph["qas"]:
                if qa.get("is_impossible") or not qa.get("answers"):
                    continue
                qas.append(
                    QA(
                        id=qa["id"],
                        question=qa["question"],
                        answers=tuple(a["text"] for a in qa["answers"]),
                        context=paragraph["context"],
                        paragraph_file=name,
                    )
                )
    return paragraphs, qas


def ragkit_cli() -> list[str]:
    """The ``ragkit`` console script of this interpreter's environment (as a user runs it)."""
    script = Path(sys.executable).with_name("ragkit")
    if script.exists():
        return [str(script)]
    found = shutil.which("ragkit")
    return [found] if found else [sys.executable, "-m", "ragkit"]


def ensure_index(paragraphs: dict[str, str], rebuild: bool) -> Path:
    """Write the paragraphs as files and index them with the ragkit CLI, unless already done.

    Going through the CLI (not the library) indexes the corpus exactly as a user would; files
    whose content is unchanged keep their mtime, so a re-run re-embeds nothing.
    """
    PARAGRAPHS.mkdir(parents=True, exist_ok=True)
    for name, text in paragraphs.items():
        target = PARAGRAPHS / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
    if rebuild and INDEX.exists():
        shutil.rmtree(INDEX)
    if (INDEX / "manifest.json").exists():
        print(f"index: reusing {INDEX.relative_to(ROOT)}", flush=True)
        return INDEX
    command = [*ragkit_cli(), "index", str(PARAGRAPHS), "--index", str(INDEX)]
    print("index: " + " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    print(f"index: built in {time.perf_counter() - started:.1f}s", flush=True)
    return INDEX


# ----------------------------------------------------------------------------- machine load


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat; (0, 0) off Linux."""
    try:
        first = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0, 0
    fields = [int(x) for x in first]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def machine_busy(seconds: float = 2.0) -> float:
    """Fraction of all cores busy while this process sleeps, i.e. other people's load."""
    b0, t0 = cpu_ticks()
    time.sleep(seconds)
    b1, t1 = cpu_ticks()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else float("nan")


def busiest_processes(count: int = 4) -> list[str]:
    """The processes with most CPU time right now (to say *who* loaded the machine)."""
    try:
        out = subprocess.run(
            ["ps", "-eo", "pcpu,etime,args", "--sort=-pcpu"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    return [line.strip()[:160] for line in out.splitlines()[1 : count + 1]]


def wait_quiet(limit_s: float, threshold: float = 0.25) -> float:
    """Wait (up to ``limit_s``) until others use under ``threshold`` of the CPU; return the load."""
    deadline = time.monotonic() + limit_s
    busy = machine_busy()
    while busy > threshold and time.monotonic() < deadline:
        print(f"machine busy {busy:.0%}: waiting for it to quiet down", flush=True)
        time.sleep(10)
        busy = machine_busy()
    return busy


@dataclass
class Timed:
    """Wall time, this process's CPU time and the cores other processes used meanwhile."""

    wall_s: float
    cpu_s: float
    others_cores: float


def timed(action: Callable[[], Any]) -> tuple[Any, Timed]:
    """Run ``action`` and measure it; CPU time covers all of this process's threads."""
    b0, t0 = cpu_ticks()
    c0 = time.process_time()
    w0 = time.perf_counter()
    value = action()
    wall = time.perf_counter() - w0
    own = time.process_time() - c0
    b1, t1 = cpu_ticks()
    others = max(0.0, (b1 - b0) / HZ - own) / wall if t1 > t0 else float("nan")
    return value, Timed(wall, own, others)


# ----------------------------------------------------------------------------- SQuAD metrics

_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)
_ABSTAIN = re.compile(
    r"(context|passages?) (does|do) not (say|provide|mention|contain)|not (mentioned|provided) in",
    re.IGNORECASE,
)
"""Answers that decline ("The context does not say.", or the model's own wording of it)."""


def strip_citations(text: str) -> str:
    """Remove ``[n]`` markers: they are ragkit's citation syntax, not part of the answer."""
    return _CITATION.sub("", text)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when the normalised prediction equals any normalised gold answer."""
    pred = normalize_answer(prediction)
    return float(any(pred == normalize_answer(g) for g in golds))


def token_f1(prediction: str, golds: Sequence[str]) -> float:
    """The official SQuAD token F1, maximised over the gold answers."""
    pred_tokens = normalize_answer(prediction).split()
    best = 0.0
    for gold in golds:
        gold_tokens = normalize_answer(gold).split()
        if not pred_tokens or not gold_tokens:
            best = max(best, float(pred_tokens == gold_tokens))
            continue
        common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
        if common == 0:
            continue
        precision, recall = common / len(pred_tokens), common / len(gold_tokens)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_gold(prediction: str, golds: Sequence[str]) -> float:
    """1.0 when a normalised gold answer occurs inside the normalised prediction.

    Not a SQuAD metric: a lenient view for a chatty model that answers in whole sentences,
    where EM is near zero even when the answer is right.
    """
    pred = f" {normalize_answer(prediction)} "
    return float(any(f" {normalize_answer(g)} " in pred for g in golds if normalize_answer(g)))


# ----------------------------------------------------------------------------- systems


@dataclass
class SystemRun:
    """What one system produced in one timed run."""

    texts: list[str]
    tokens: int
    timing: Timed


@dataclass
class Prepared:
    """The prompts ragkit builds for each question, and what retrieval returned."""

    prompts: list[Any]
    rendered: list[str]
    add_special_tokens: bool
    hit_sources: list[list[str]]
    passages_text: list[str]


def generated_of(answer: Any) -> tuple[str, int]:
    """The raw generated text and its token count, read from the answer's trace."""
    for step in answer.trace.steps if answer.trace else []:
        if "completion_tokens" in step.outputs:
            return str(step.outputs["text"]), int(step.outputs["completion_tokens"])
    raise RuntimeError("no generation step with completion_tokens in the trace")


def count_completion(new_ids: list[int], terminators: set[int]) -> int:
    """Generated tokens up to and including the first terminator (what ragkit reports)."""
    for i, token in enumerate(new_ids):
        if token in terminators:
            return i + 1
    return len(new_ids)


def prepare(rag: Any, questions: Sequence[str], k: int) -> Prepared:
    """Retrieve and build each prompt with ragkit's own steps (what ``ask`` would send)."""
    from ragkit.generation.chat import render_prompt

    gen = rag.generator
    prompts, rendered, sources, texts = [], [], [], []
    flags: set[bool] = set()
    for question in questions:
        hits = rag.retriever.search(question, k)
        built = rag.prompt_builder.run(question, hits)
        final = render_prompt(gen.tokenizer, built.prompt, None)
        prompts.append(built.prompt)
        rendered.append(final.text)
        flags.add(final.add_special_tokens)
        sources.append([Path(h.chunk.source).name for h in hits])
        texts.append("\n".join(p.text for p in built.passages))
    if len(flags) > 1:
        raise RuntimeError("prompts disagree on special tokens; cannot batch them plainly")
    return Prepared(prompts, rendered, flags.pop() if flags else False, sources, texts)


def plain_generate(gen: Any, prepared: Prepared, max_new_tokens: int) -> tuple[list[str], int]:
    """What a user without ragkit writes: tokenizer padding + ``model.generate``, file order."""
    import torch

    tok, model = gen.tokenizer, gen.model
    terminators = set(gen.eos_token_ids) | {gen.pad_token_id}
    side = tok.padding_side
    tok.padding_side = "left"
    texts: list[str] = []
    tokens = 0
    try:
        for start in range(0, len(prepared.rendered), gen.batch_size):
            chunk = prepared.rendered[start : start + gen.batch_size]
            enc = tok(
                chunk,
                return_tensors="pt",
                padding=True,
                add_special_tokens=prepared.add_special_tokens,
            )
            enc = {key: value.to(gen.device) for key, value in enc.items()}
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    pad_token_id=gen.pad_token_id,
                )
            for row in out[:, enc["input_ids"].shape[1] :].tolist():
                n = count_completion(row, terminators)
                tokens += n
                kept = row[: n - 1] if row[n - 1] in terminators else row[:n]
                texts.append(tok.decode(kept, skip_special_tokens=True).strip())
    finally:
        tok.padding_side = side
    return texts, tokens


def throughput(
    rag: Any,
    questions: list[str],
    prepared: Prepared,
    max_new_tokens: int,
    rounds: int,
    chosen: Sequence[str],
) -> tuple[dict[str, list[SystemRun]], list[Any]]:
    """Time the chosen systems, alternating their order round by round (A B C, C B A, ...)."""

    def batched() -> tuple[list[Any], list[str], int]:
        answers = rag.ask_batch(questions)
        pairs = [generated_of(a) for a in answers]
        return answers, [p[0] for p in pairs], sum(p[1] for p in pairs)

    def loop() -> tuple[list[Any], list[str], int]:
        answers = [rag.ask(q) for q in questions]
        pairs = [generated_of(a) for a in answers]
        return answers, [p[0] for p in pairs], sum(p[1] for p in pairs)

    def plain() -> tuple[list[Any], list[str], int]:
        texts, tokens = plain_generate(rag.generator, prepared, max_new_tokens)
        return [], texts, tokens

    def prefill() -> tuple[list[Any], list[str], int]:
        # ragkit's batched generation stopped after one token: the cost of reading the prompts,
        # which batching cannot shrink on a compute-bound CPU (see the README)
        results = rag.generator.generate(
            prepared.prompts, rag.generate_step.options, max_new_tokens=1
        )
        return [], [], sum(r.completion_tokens for r in results)

    available: dict[str, Callable[[], tuple[list[Any], list[str], int]]] = {
        BATCHED: batched,
        PLAIN: plain,
        LOOP: loop,
        PREFILL: prefill,
    }
    systems = {SYSTEM_KEYS[key]: available[SYSTEM_KEYS[key]] for key in chosen}
    runs: dict[str, list[SystemRun]] = {name: [] for name in systems}
    batched_answers: list[Any] = []
    for round_index in range(rounds):
        names = list(systems) if round_index % 2 == 0 else list(reversed(systems))
        for name in names:
            (answers, texts, tokens), timing = timed(systems[name])
            if name == BATCHED and not batched_answers:
                batched_answers = answers
            runs[name].append(SystemRun(texts, tokens, timing))
            print(
                f"  round {round_index + 1} {name:<30} {timing.wall_s:7.1f}s {tokens:6d} tokens "
                f"{tokens / timing.wall_s:7.1f} tok/s {tokens / timing.cpu_s:7.1f} tok/CPU-s "
                f"(others used {timing.others_cores:.1f} cores)",
                flush=True,
            )
    return runs, batched_answers


def summarise_throughput(runs: dict[str, list[SystemRun]]) -> dict[str, Any]:
    """Medians per system, ratios against ragkit batched, and answer agreement.

    ``loop_ceiling`` is the one-by-one loop's time over the batched prefill's time: the best
    ``ask_batch / ask loop`` ratio possible even if batched decoding cost nothing at all.
    """
    summary: dict[str, Any] = {"systems": {}}
    with_text = [name for name in runs if name != PREFILL]
    reference = runs[with_text[0]][0].texts if with_text else []
    for name, items in runs.items():
        wall = statistics.median(r.timing.wall_s for r in items)
        cpu = statistics.median(r.timing.cpu_s for r in items)
        tokens = items[0].tokens
        same = (
            sum(a == b for a, b in zip(items[0].texts, reference, strict=True)) / len(reference)
            if name != PREFILL and reference
            else None
        )
        summary["systems"][name] = {
            "tokens": tokens,
            "wall_s": [r.timing.wall_s for r in items],
            "cpu_s": [r.timing.cpu_s for r in items],
            "others_cores": [r.timing.others_cores for r in items],
            "median_wall_s": wall,
            "median_cpu_s": cpu,
            "tokens_per_s": tokens / wall,
            "tokens_per_cpu_s": tokens / cpu,
            "same_text_as_first": same,
        }
    systems = summary["systems"]
    if BATCHED in systems:
        for other, key in ((PLAIN, "vs_plain"), (LOOP, "vs_loop")):
            if other in systems:
                summary[key] = {
                    "wall": systems[BATCHED]["tokens_per_s"] / systems[other]["tokens_per_s"],
                    "cpu": systems[BATCHED]["tokens_per_cpu_s"]
                    / systems[other]["tokens_per_cpu_s"],
                }
    if LOOP in systems and PREFILL in systems:
        summary["loop_ceiling"] = {
            unit: systems[LOOP][f"median_{unit}_s"] / systems[PREFILL][f"median_{unit}_s"]
            for unit in ("wall", "cpu")
        }
    return summary


# ----------------------------------------------------------------------------- cold start


def first_output(command: list[str], env: dict[str, str], timeout_s: float) -> dict[str, Any]:
    """Spawn ``command`` with stdout on a pseudo-terminal; time the first byte and the exit.

    Every read is kept with its time, so the report shows whether the answer arrived piece by
    piece (streaming) or in one block at the end.

    A terminal (not a pipe) is what a user's shell gives the process, so the child's output
    buffering is the real one; stderr goes to a file so warnings cannot block the child.
    """
    master, slave = pty.openpty()
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(
            command, stdout=slave, stderr=errors, stdin=subprocess.DEVNULL, env=env
        )
        os.close(slave)
        first: float | None = None
        reads: list[tuple[float, int]] = []  # (seconds, bytes): shows the output streamed
        output = b""
        deadline = started + timeout_s
        try:
            while time.perf_counter() < deadline:
                ready, _, _ = select.select([master], [], [], 0.05)
                if ready:
                    try:
                        data = os.read(master, 4096)
                    except OSError:  # EIO: the child closed the terminal
                        break
                    if not data:
                        break
                    arrived = time.perf_counter() - started
                    if first is None:
                        first = arrived
                    reads.append((round(arrived, 3), len(data)))
                    output += data
                elif proc.poll() is not None:
                    break
            else:
                proc.kill()
        finally:
            os.close(master)
        code = proc.wait()
        total = time.perf_counter() - started
        errors.seek(0)
        stderr = errors.read().decode("utf-8", "replace")
    return {
        "first_byte_s": first,
        "total_s": total,
        "returncode": code,
        "reads": reads,
        "stdout_head": output.decode("utf-8", "replace")[:300],
        "stderr_tail": stderr[-600:],
    }


PHASES_SCRIPT = """
import json, sys, time
t0 = time.perf_counter()
marks = {}
from ragkit.rag import RAGPipeline
marks["import ragkit.rag"] = time.perf_counter()
extra = {"retriever": sys.argv[5]} if sys.argv[5] else {}
rag = RAGPipeline.from_index(sys.argv[1], generator=sys.argv[2] or None, k=4,
                             options={"max_new_tokens": int(sys.argv[3])}, **extra)
marks["open index"] = time.perf_counter()
import torch
marks["import torch"] = time.perf_counter()
import sentence_transformers
marks["import sentence_transformers"] = time.perf_counter()
rag.retriever.search(sys.argv[4])
marks["first retrieval (loads the embedder)"] = time.perf_counter()
rag.generator.warm_up()
marks["load the generator"] = time.perf_counter()
stream = iter(rag.stream(sys.argv[4]))
next(stream)
marks["retrieve + prompt + prefill to the first piece"] = time.perf_counter()
for _ in stream:  # finish: leaving the worker thread running at exit aborts the process
    pass
last, out = t0, {}
for name, at in marks.items():
    out[name] = round(at - last, 3)
    last = at
print(json.dumps(out))
"""


def cold_phases(
    index: Path, model: str | None, retriever: str | None, max_new_tokens: int, env: dict[str, str]
) -> Any:
    """Where a cold start's time goes, phase by phase, in one fresh process."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            PHASES_SCRIPT,
            str(index),
            model or "",
            str(max_new_tokens),
            COLD_QUESTION,
            retriever or "",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        return {"error": done.stderr[-600:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def cold_start(
    index: Path, model: str | None, retriever: str | None, repeats: int, max_new_tokens: int
) -> dict[str, Any]:
    """Median time to the first streamed byte of ``ragkit ask`` over fresh processes.

    One untimed run first makes the model conversion cache and the OS page cache warm (the
    issue's condition); ``ragkit --help`` is timed too, as the floor of interpreter start-up
    plus CLI import that no amount of lazy loading removes.
    """
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    cli = ragkit_cli()
    has_ask = (
        subprocess.run(
            [*cli, "ask", "--help"], capture_output=True, env=env, check=False
        ).returncode
        == 0
    )
    if has_ask:
        command = [
            *cli,
            "ask",
            COLD_QUESTION,
            "--index",
            str(index),
            "--max-new-tokens",
            str(max_new_tokens),
        ]
        if model:
            command += ["--generator", model]
        if retriever:
            command += ["--retriever", retriever]
        what = "ragkit ask (CLI, streaming)"
    else:
        code = (
            "import sys\nfrom ragkit.rag import RAGPipeline\n"
            f"rag = RAGPipeline.from_index({str(index)!r}, generator={model!r}, k=4, "
            f"options={{'max_new_tokens': {max_new_tokens}}}"
            + (f", retriever={retriever!r})\n" if retriever else ")\n")
            + f"for piece in rag.stream({COLD_QUESTION!r}):\n"
            "    sys.stdout.write(piece); sys.stdout.flush()\n"
        )
        command = [sys.executable, "-c", code]
        what = "python -c RAGPipeline.stream (the ask command does not exist yet)"
    print(f"cold start: {what}", flush=True)
    warm = first_output(command, env, 300)
    if warm["returncode"] != 0:
        print(f"  warm-up run failed: {warm['stderr_tail']}", flush=True)
    runs = []
    for i in range(repeats):
        busy_before = machine_busy(1.0)
        result = first_output(command, env, 300)
        result["busy_before"] = busy_before
        runs.append(result)
        print(
            f"  run {i + 1}: first byte {result['first_byte_s'] or float('nan'):.2f}s, "
            f"exit {result['returncode']} after {result['total_s']:.2f}s "
            f"(machine busy {busy_before:.0%} just before)",
            flush=True,
        )
    helps = [first_output([*cli, "--help"], env, 60)["total_s"] for _ in range(repeats)]
    phases = cold_phases(index, model, retriever, max_new_tokens, env)
    print(f"  phases in a fresh process: {phases}", flush=True)
    firsts = [r["first_byte_s"] for r in runs if r["first_byte_s"] is not None]
    return {
        "what": what,
        "command": command,
        "runs": runs,
        "first_byte_median_s": statistics.median(firsts) if firsts else None,
        "cli_help_median_s": statistics.median(helps),
        "phases_s": phases,
        "sample_output": runs[-1]["stdout_head"] if runs else warm["stdout_head"],
    }


# ----------------------------------------------------------------------------- quality


def quality(
    rag: Any,
    qas: list[QA],
    retrieved_texts: list[str],
    prepared: Prepared,
    k: int,
) -> dict[str, Any]:
    """EM/F1 with retrieval vs with the gold paragraph as the only passage, and recall@k."""
    from ragkit.schema import Chunk, Hit

    gen = rag.generator
    gold_prompts = []
    for qa in qas:
        chunk = Chunk(
            id=f"gold-{qa.id}",
            document_id=qa.paragraph_file,
            text=qa.context,
            start=0,
            end=len(qa.context),
            source=str(PARAGRAPHS / qa.paragraph_file),
        )
        gold_prompts.append(
            rag.prompt_builder.run(qa.question, [Hit(chunk=chunk, score=1.0)]).prompt
        )
    (gold_results, gold_timing) = timed(
        lambda: gen.generate(gold_prompts, rag.generate_step.options)
    )
    print(
        f"quality: gold-paragraph answers in {gold_timing.wall_s:.1f}s "
        f"(others used {gold_timing.others_cores:.1f} cores)",
        flush=True,
    )
    rows = []
    for i, qa in enumerate(qas):
        with_retrieval = strip_citations(retrieved_texts[i]).strip()
        with_gold = strip_citations(gold_results[i].text).strip()
        rows.append(
            {
                "id": qa.id,
                "question": qa.question,
                "gold_answers": list(dict.fromkeys(qa.answers)),
                "retrieval_hit": qa.paragraph_file in prepared.hit_sources[i][:k],
                "answer_in_passages": any(a in prepared.passages_text[i] for a in qa.answers),
                "retrieval_answer": retrieved_texts[i],
                "gold_passage_answer": gold_results[i].text,
                "retrieval": {
                    "em": exact_match(with_retrieval, qa.answers),
                    "f1": token_f1(with_retrieval, qa.answers),
                    "contains": contains_gold(with_retrieval, qa.answers),
                },
                "gold_passage": {
                    "em": exact_match(with_gold, qa.answers),
                    "f1": token_f1(with_gold, qa.answers),
                    "contains": contains_gold(with_gold, qa.answers),
                },
            }
        )

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    summary = {
        setting: {
            metric: mean([r[setting][metric] for r in rows]) for metric in ("em", "f1", "contains")
        }
        for setting in ("retrieval", "gold_passage")
    }
    summary["recall_at_k"] = mean([float(r["retrieval_hit"]) for r in rows])
    summary["answer_in_passages"] = mean([float(r["answer_in_passages"]) for r in rows])
    summary["abstained"] = {
        setting: mean(
            [float(bool(_ABSTAIN.search(r[key]))) for r in rows],
        )
        for setting, key in (
            ("retrieval", "retrieval_answer"),
            ("gold_passage", "gold_passage_answer"),
        )
    }
    summary["k"] = k
    summary["questions"] = len(rows)
    return {"summary": summary, "rows": rows}


# ----------------------------------------------------------------------------- main


@dataclass
class Report:
    """Everything the run measured, written as JSON."""

    settings: dict[str, Any]
    environment: dict[str, Any]
    machine: dict[str, Any] = field(default_factory=dict)
    throughput: dict[str, Any] | None = None
    cold_start: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None


def environment() -> dict[str, Any]:
    """Versions and hardware, so numbers from different runs can be compared honestly."""
    import torch
    import transformers

    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_default_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "git_commit": commit,
    }


def print_table(report: Report) -> None:
    """A human-readable summary of the three measurements."""
    print("\n=== RAG answering benchmark ===")
    if report.throughput:
        t = report.throughput
        print(
            f"throughput ({report.settings['questions']} questions, max_new_tokens="
            f"{report.settings['max_new_tokens']}, greedy, "
            f"medians over {report.settings['rounds']} round(s)):"
        )
        print(
            f"  {'system':<30} {'wall s':>7} {'tokens':>7} {'tok/s':>8} {'tok/CPU-s':>10} "
            f"{'same text':>10}"
        )
        for name, s in t["systems"].items():
            same = "-" if s["same_text_as_first"] is None else f"{s['same_text_as_first']:.0%}"
            print(
                f"  {name:<30} {s['median_wall_s']:7.1f} {s['tokens']:7d} "
                f"{s['tokens_per_s']:8.1f} {s['tokens_per_cpu_s']:10.1f} {same:>10}"
            )
        if "vs_plain" in t:
            print(
                f"  ask_batch / plain generate: {t['vs_plain']['wall']:.2f} wall, "
                f"{t['vs_plain']['cpu']:.2f} CPU   (target >= 0.9)"
            )
        if "vs_loop" in t:
            print(
                f"  ask_batch / ask loop:       {t['vs_loop']['wall']:.2f} wall, "
                f"{t['vs_loop']['cpu']:.2f} CPU   (target >= 3)"
            )
        if "loop_ceiling" in t:
            print(
                f"  ask loop / batched prefill: {t['loop_ceiling']['wall']:.2f} wall, "
                f"{t['loop_ceiling']['cpu']:.2f} CPU   (the most batching could gain)"
            )
    if report.cold_start:
        c = report.cold_start
        first = c["first_byte_median_s"]
        print(
            f"cold start ({c['what']}): first byte median "
            f"{first if first is None else round(first, 2)}s "
            f"(target < 10 s); `ragkit --help` {c['cli_help_median_s']:.2f}s"
        )
    if report.quality:
        q = report.quality["summary"]
        print(f"quality ({q['questions']} answerable questions, k={q['k']}):")
        print(f"  {'setting':<22} {'EM':>6} {'F1':>6} {'contains':>9} {'abstained':>10}")
        for setting in ("retrieval", "gold_passage"):
            print(
                f"  {setting:<22} {q[setting]['em']:6.1%} {q[setting]['f1']:6.1%} "
                f"{q[setting]['contains']:9.1%} {q['abstained'][setting]:10.1%}"
            )
        print(
            f"  retrieval recall@{q['k']}: {q['recall_at_k']:.1%}; "
            f"a gold answer string in the passages: {q['answer_in_passages']:.1%}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=64, help="questions (default 64)")
    parser.add_argument("-k", type=int, default=4, help="passages retrieved (default 4)")
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=64,
        help="for every system and the quality runs (default 64; SQuAD answers are short)",
    )
    parser.add_argument("--rounds", type=int, default=1, help="alternated throughput rounds")
    parser.add_argument("--model", default=None, help="generator (default: packaged SmolLM2)")
    parser.add_argument(
        "--retriever",
        choices=["dense", "bm25", "hybrid"],
        default=None,
        help="default: RAGPipeline.from_index's default (recorded in the JSON)",
    )
    parser.add_argument("--cold-repeats", type=int, default=3, help="timed cold starts")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads in this process (default: torch's choice, all cores); 1 is far "
        "less sensitive to other processes on a busy machine (see README)",
    )
    parser.add_argument(
        "--systems",
        default="batched,plain,loop",
        help="throughput systems, comma-separated, from: batched (ask_batch), plain "
        "(model.generate batched), loop (ask one by one), prefill (ask_batch's generation "
        "cut at 1 token: the prompt-reading floor); default batched,plain,loop",
    )
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--skip-cold-start", action="store_true")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--rebuild-index", action="store_true", help="re-index from scratch")
    parser.add_argument(
        "--wait-quiet", type=float, default=0.0, help="wait up to S seconds for a quiet machine"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument(
        "--json", type=Path, default=None, help="default: benchmarks/results/rag-<n>-<time>.json"
    )
    args = parser.parse_args(argv)
    systems = [key.strip() for key in args.systems.split(",") if key.strip()]
    unknown = sorted(set(systems) - set(SYSTEM_KEYS))
    if unknown or not systems:
        parser.error(f"--systems: unknown {unknown}; choose from {sorted(SYSTEM_KEYS)}")
    if not args.data.exists():
        parser.error(f"{args.data} not found (the shared data lives next to the repository)")

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    paragraphs, qas = load_squad(args.data)
    qas = qas[: args.limit]
    questions = [qa.question for qa in qas]
    index = ensure_index(paragraphs, args.rebuild_index)

    busy = wait_quiet(args.wait_quiet) if args.wait_quiet else machine_busy()
    report = Report(
        settings={
            "questions": len(qas),
            "k": args.k,
            "max_new_tokens": args.max_new_tokens,
            "rounds": args.rounds,
            "systems": systems,
            "model": args.model or "packaged SmolLM2-135M-Instruct",
            "data": str(args.data),
            "argv": sys.argv[1:] if argv is None else argv,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
        environment=environment(),
        machine={"busy_before": busy, "busiest_before": busiest_processes()},
    )
    print(f"machine busy before start (others): {busy:.0%}", flush=True)
    for line in report.machine["busiest_before"]:
        print(f"  {line}", flush=True)

    if not args.skip_cold_start:
        # first, while this process holds no model: the cold start must not compete with it
        report.cold_start = cold_start(index, args.model, args.retriever, args.cold_repeats, 16)

    if args.skip_throughput and args.skip_quality:
        return finish(report, args.json)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ragkit.rag import RAGPipeline

    extra = {"retriever": args.retriever} if args.retriever else {}
    rag = RAGPipeline.from_index(
        index,
        generator=args.model,
        k=args.k,
        options={"max_new_tokens": args.max_new_tokens},
        **extra,
    )
    (_, load) = timed(rag.generator.warm_up)
    prepared = prepare(rag, questions, args.k)  # also loads the embedder before any timing
    gen = rag.generator
    lengths = [gen.count_tokens(p) for p in prepared.prompts]
    report.settings |= {
        "torch_threads": torch.get_num_threads(),
        "retriever": type(rag.retriever).__name__,
        "device": gen.device,
        "dtype": str(gen.dtype),
        "batch_size": gen.batch_size,
        "model_load_s": load.wall_s,
        "prompt_tokens": {
            "mean": statistics.mean(lengths),
            "min": min(lengths),
            "max": max(lengths),
        },
    }
    print(
        f"retriever: {type(rag.retriever).__name__} (k={args.k}); "
        f"generator: {gen.source} on {gen.device} ({gen.dtype}), batch {gen.batch_size}, "
        f"{torch.get_num_threads()} thread(s), "
        f"loaded in {load.wall_s:.1f}s; prompts {min(lengths)}-{max(lengths)} tokens "
        f"(mean {statistics.mean(lengths):.0f})",
        flush=True,
    )
    rag.ask_batch(questions[:2])  # warm-up: first calls pay one-off allocator/kernel costs

    retrieved_texts: list[str] | None = None
    if not args.skip_throughput:
        print("throughput:", flush=True)
        runs, answers = throughput(
            rag, questions, prepared, args.max_new_tokens, args.rounds, systems
        )
        report.throughput = summarise_throughput(runs)
        if answers:
            report.throughput["batched_prompts_match_prepared"] = sum(
                a.trace is not None and a.trace.prompt == r
                for a, r in zip(answers, prepared.rendered, strict=True)
            ) / len(answers)
            retrieved_texts = [generated_of(a)[0] for a in answers]
    if not args.skip_quality:
        if retrieved_texts is None:
            retrieved_texts = [generated_of(a)[0] for a in rag.ask_batch(questions)]
        report.quality = quality(rag, qas, retrieved_texts, prepared, args.k)
    return finish(report, args.json)


def finish(report: Report, path: Path | None) -> int:
    """Sample the load once more, print the table and write the JSON report."""
    report.machine["busy_after"] = machine_busy()
    print_table(report)
    if path is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = RESULTS / f"rag-{report.settings['questions']}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report.__dict__, indent=2, default=str), encoding="utf-8")
    print(f"results written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
