"""Generation latency at the hardware limit (issue 21): ragkit's paths vs llama.cpp on one GGUF.

Every system reads the same packaged GGUF file (Gemma 3 270M Q4_K_M by default, ``--model
smollm2`` for SmolLM2 Q4_1), gets the same prompts as the same token ids, and runs on the same
number of threads:

- ``fp32``: ragkit's generation path today: the GGUF de-quantised to float32, transformers;
- ``int8``: the same model with every ``nn.Linear`` replaced by torch's dynamically quantised
  int8 linear (weights int8, activations quantised per batch; fbgemm kernels on x86);
- ``ragkit-llamacpp``: ragkit's llama.cpp backend (``--generator-backend llamacpp``): its
  per-step loop — llama.cpp's forward pass with KV-cache reuse, the logits copied out, the next
  token chosen by :func:`ragkit.generation.token_choice.choose_token` — on the same GGUF;
- ``ragkit-llamacpp-adapter``: the same loop on the file the backend really loads for the
  default answer: the GGUF with the grounded-qa adapter merged in (its linear layers re-quantised
  to f16, :mod:`ragkit.generation.gguf_merge`). A different model, so its agreement with the
  fp32 reference (no adapter) is not a quality measure; its speed is the default's;
- ``llamacpp``: the anchor, llama.cpp through ``llama-cpp-python`` on the GGUF as it ships
  (4-bit kernels) with nothing of ragkit around it, run with the interpreter given by
  ``--llamacpp-python`` (a benchmark-only environment) or, without one, this interpreter.

``llama_cpp`` is found on ``PYTHONPATH`` or in ``benchmarks/.work/llamacpp-site`` (a
``pip install --target`` of the compiled package; see benchmarks/README.md).

Prompts are the RAG prompts ``ragkit ask`` builds (the default completion template, k = 4
passages, hybrid retrieval over squad_small's paragraphs) for questions of the test article,
and short prompts of the question alone. For each prompt a system reads it once (prefill; time
to first token = prefill + the first token's choice) and then decodes ``--new-tokens`` greedy
tokens with EOS ignored, so every system decodes the same number of tokens. Reported per system:
prefill tokens/s, decode tokens/s, time to first token, peak RSS of its own process, and greedy
agreement with the fp32 reference (share of prompts whose greedy answer, the tokens up to the
first EOS and at most 8, is identical).

Each system runs in its own process (peak RSS is its own), systems alternate round by round
(so a noisy neighbour hurts all of them alike), and medians over rounds are reported with the
ratios to llama.cpp.

    .venv/bin/python benchmarks/latency_bench.py --quick          # 3 RAG + 3 short prompts, 1 round
    .venv/bin/python benchmarks/latency_bench.py                  # 8 + 8 prompts, 3 rounds

Building the anchor once (about 15 minutes on 2 cores):

    python3 -m venv benchmarks/.work/llamacpp-venv
    benchmarks/.work/llamacpp-venv/bin/pip install --no-binary llama-cpp-python llama-cpp-python==0.3.36 numpy
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
WORK = ROOT / "benchmarks" / ".work" / "latency"
LLAMACPP_PYTHON = ROOT / "benchmarks" / ".work" / "llamacpp-venv" / "bin" / "python"
SYSTEMS = ("fp32", "int8", "ragkit-llamacpp", "ragkit-llamacpp-adapter", "llamacpp")
AGREEMENT_TOKENS = 8


# -- prompts -----------------------------------------------------------------------------------


def build_prompts(model: str, n: int) -> list[dict[str, Any]]:
    """RAG prompts exactly as ``ragkit ask`` renders them, and short question-only prompts."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import answer_quality as aq

    from ragkit.rag import RAGPipeline

    items = [i for i in aq.select(aq.read_items(), "test", None) if not i.impossible][:n]
    rag = RAGPipeline.from_index(aq.ensure_index(), generator=model, adapter="none")
    from ragkit.pipeline import Pipeline

    steps = rag.pipeline.steps
    head = Pipeline(steps[: steps.index(rag.prompt_builder) + 1], inputs={"question": str})
    prompts = []
    for item in items:
        built = head.run(question=item.question).outputs  # retrieval + prompt only
        text = rag.generator.render(built["prompt"], apply_chat_template=False)
        prompts.append({"kind": "rag", "text": text})
    for item in items:
        prompts.append({"kind": "short", "text": f"Question: {item.question}\nAnswer:"})
    return prompts


# -- workers (one process per system and round) ------------------------------------------------


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker_torch(gguf: str, prompts: list[dict[str, Any]], new_tokens: int, int8: bool) -> dict:
    import torch

    from ragkit.generation.checkpoints import convert_gguf
    from ragkit.generation.loading import load_model
    from ragkit.generation.quantization import cache_of, quantize_int8

    folder = convert_gguf(gguf)
    model = load_model(folder, "cpu", torch.float32)
    if int8:
        model = quantize_int8(model)  # what Generator(quantize="int8") runs
    rows = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([prompt["ids"]])
            t0 = time.perf_counter()
            out = model(ids, use_cache=True, logits_to_keep=1)
            token = out.logits[:, -1].argmax(-1, keepdim=True)
            t1 = time.perf_counter()
            tokens = [int(token)]
            for _ in range(new_tokens - 1):
                out = model(token, use_cache=True, **cache_of(out))
                token = out.logits[:, -1].argmax(-1, keepdim=True)
                tokens.append(int(token))
            t2 = time.perf_counter()
            rows.append(_row(prompt, t1 - t0, t2 - t1, new_tokens - 1, tokens))
    return {"rows": rows, "peak_rss_mb": _peak_rss_mb()}


def worker_llamacpp(gguf: str, prompts: list[dict[str, Any]], new_tokens: int, threads: int):
    import llama_cpp  # only in the benchmark environment
    import numpy as np

    llm = llama_cpp.Llama(
        model_path=gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False
    )
    vocab = llm.n_vocab()

    def last_argmax() -> int:  # the last position's logits, straight from llama.cpp's context
        pointer = llama_cpp.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(pointer, shape=(vocab,)).argmax())

    rows = []
    for prompt in prompts:
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt["ids"])
        token = last_argmax()
        t1 = time.perf_counter()
        tokens = [token]
        for _ in range(new_tokens - 1):
            llm.eval([token])
            token = last_argmax()
            tokens.append(token)
        t2 = time.perf_counter()
        rows.append(_row(prompt, t1 - t0, t2 - t1, new_tokens - 1, tokens))
    return {"rows": rows, "peak_rss_mb": _peak_rss_mb()}


def worker_ragkit_llamacpp(gguf: str, prompts: list[dict[str, Any]], new_tokens: int, threads: int):
    from ragkit.generation import GenerationOptions
    from ragkit.generation.backends.llamacpp_model import LlamaModel
    from ragkit.generation.token_choice import choose_token

    model = LlamaModel(gguf, n_ctx=2048, n_threads=threads)
    opts = GenerationOptions(max_new_tokens=new_tokens)  # greedy, as LlamaCppGenerator decodes
    none: frozenset[int] = frozenset()  # EOS ignored: every system decodes new_tokens tokens

    def step(sequence: list[int], generated: list[int]) -> int:
        logits = model.logits(sequence)
        return choose_token(logits, opts, sequence=sequence, generated=generated, eos_ids=none)

    rows = []
    for prompt in prompts:
        model.reset()  # no KV reuse across prompts: every system reads each prompt whole
        sequence = list(prompt["ids"])
        t0 = time.perf_counter()
        tokens = [step(sequence, [])]
        t1 = time.perf_counter()
        for _ in range(new_tokens - 1):
            tokens.append(step(sequence + tokens, tokens))
        t2 = time.perf_counter()
        rows.append(_row(prompt, t1 - t0, t2 - t1, new_tokens - 1, tokens))
    return {"rows": rows, "peak_rss_mb": _peak_rss_mb()}


def _row(prompt: dict[str, Any], prefill: float, decode: float, decoded: int, tokens: list[int]):
    return {
        "kind": prompt["kind"],
        "prompt_tokens": len(prompt["ids"]),
        "prefill_s": prefill,
        "decode_s": decode,
        "decoded": decoded,
        "tokens": tokens,
    }


def run_worker(args: argparse.Namespace) -> int:
    job = json.loads(Path(args.job).read_text(encoding="utf-8"))
    if args.worker == "llamacpp":
        result = worker_llamacpp(job["gguf"], job["prompts"], job["new_tokens"], job["threads"])
    elif args.worker in ("ragkit-llamacpp", "ragkit-llamacpp-adapter"):
        gguf = job["gguf"] if args.worker == "ragkit-llamacpp" else job["merged_gguf"]
        result = worker_ragkit_llamacpp(gguf, job["prompts"], job["new_tokens"], job["threads"])
    else:
        import torch

        torch.set_num_threads(job["threads"])
        result = worker_torch(job["gguf"], job["prompts"], job["new_tokens"], args.worker == "int8")
    Path(args.out).write_text(json.dumps(result), encoding="utf-8")
    return 0


# -- driver ------------------------------------------------------------------------------------


def answer_tokens(tokens: list[int], eos: set[int]) -> list[int]:
    """The greedy answer: tokens up to and including the first EOS, at most 8."""
    for i, token in enumerate(tokens[:AGREEMENT_TOKENS]):
        if token in eos:
            return tokens[: i + 1]
    return tokens[:AGREEMENT_TOKENS]


def summarise(
    rows: list[dict[str, Any]], reference: list[dict[str, Any]] | None, eos: set[int]
) -> dict:
    out: dict[str, Any] = {}
    for kind in ("rag", "short"):
        mine = [r for r in rows if r["kind"] == kind]
        if not mine:
            continue
        out[kind] = {
            "prompt_tokens_mean": round(statistics.fmean(r["prompt_tokens"] for r in mine), 1),
            "prefill_tok_s": round(
                sum(r["prompt_tokens"] for r in mine) / sum(r["prefill_s"] for r in mine), 1
            ),
            "decode_tok_s": round(
                sum(r["decoded"] for r in mine) / sum(r["decode_s"] for r in mine), 2
            ),
            "ttft_s_median": round(statistics.median(r["prefill_s"] for r in mine), 3),
        }
    if reference is not None:
        same = []
        for r, ref in zip(rows, reference, strict=True):
            expected = answer_tokens(ref["tokens"], eos)
            same.append(r["tokens"][: len(expected)] == expected)
        out["greedy_agreement_with_fp32"] = round(sum(same) / len(same), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="gemma3-270m", choices=["gemma3-270m", "smollm2"])
    parser.add_argument("--prompts", type=int, default=8, help="questions (each gives 2 prompts)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--llamacpp-python", default=str(LLAMACPP_PYTHON))
    parser.add_argument("--quick", action="store_true", help="3 questions, 1 round, 16 tokens")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--job", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.quick:
        args.prompts, args.rounds, args.new_tokens = 3, 1, 16

    from generation_bench import machine_busy  # benchmarks/ is sys.path[0] for the script

    from ragkit.generation.checkpoints import packaged_model_gguf
    from ragkit.generation.loading import load_tokenizer

    gguf = packaged_model_gguf(args.model)
    if gguf is None:
        raise SystemExit(f"packaged model {args.model!r} is not installed")
    prompts = build_prompts(args.model, args.prompts)
    from ragkit.generation.checkpoints import convert_gguf

    tokenizer = load_tokenizer(convert_gguf(gguf))
    eos = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")} - {None}
    for prompt in prompts:  # one tokenisation, shared by every system
        prompt["ids"] = tokenizer(prompt["text"], add_special_tokens=True)["input_ids"]
    systems = list(args.systems)
    anchor_python = args.llamacpp_python if Path(args.llamacpp_python).is_file() else sys.executable
    from llamacpp_site import environment_with_llamacpp

    # ROOT first; an existing PYTHONPATH (e.g. a llama_cpp build not pip-installed) after
    env = environment_with_llamacpp(first=[str(ROOT)])
    for system in [s for s in systems if "llamacpp" in s]:
        python = anchor_python if system == "llamacpp" else sys.executable
        probe = subprocess.run([python, "-c", "import llama_cpp"], env=env, capture_output=True)
        if probe.returncode != 0:
            print(f"{system} skipped: llama_cpp does not import in {python}", file=sys.stderr)
            systems.remove(system)
    WORK.mkdir(parents=True, exist_ok=True)
    job_file = WORK / "job.json"
    job = {"gguf": str(gguf), "prompts": prompts, "new_tokens": args.new_tokens}
    if "ragkit-llamacpp-adapter" in systems:
        from ragkit.generation.gguf_merge import merged_gguf
        from ragkit.rag.profiles import answering_profile

        adapter = answering_profile(args.model).adapter
        job["merged_gguf"] = str(merged_gguf(gguf, adapter)) if adapter else str(gguf)  # f16
    job_file.write_text(json.dumps({**job, "threads": args.threads}), encoding="utf-8")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    busy = []
    for rnd in range(args.rounds):
        order = systems if rnd % 2 == 0 else systems[::-1]
        for system in order:
            python = anchor_python if system == "llamacpp" else sys.executable
            out = WORK / f"{system}-{rnd}.json"
            busy.append(round(machine_busy(1.0), 3))
            started = time.perf_counter()
            subprocess.run(
                [python, __file__, "--worker", system, "--job", str(job_file), "--out", str(out)],
                check=True,
                env=env,
            )
            result = json.loads(out.read_text(encoding="utf-8"))
            result["wall_s"] = time.perf_counter() - started
            runs[system].append(result)
            print(f"round {rnd + 1}: {system} done in {result['wall_s']:.1f} s", file=sys.stderr)
    reference = runs["fp32"][0]["rows"] if "fp32" in runs else None
    report: dict[str, Any] = {
        "model": args.model,
        "gguf": gguf.name,
        "threads": args.threads,
        "new_tokens": args.new_tokens,
        "rounds": args.rounds,
        "prompts": len(prompts),
        "machine_busy_before_runs": busy,
        "systems": {},
    }
    for system, results in runs.items():
        per_round = [summarise(r["rows"], reference, eos) for r in results]
        merged: dict[str, Any] = {"peak_rss_mb": round(max(r["peak_rss_mb"] for r in results))}
        for kind in ("rag", "short"):
            if kind in per_round[0]:
                merged[kind] = {
                    key: round(statistics.median(p[kind][key] for p in per_round), 3)
                    for key in per_round[0][kind]
                }
        if "greedy_agreement_with_fp32" in per_round[0]:
            merged["greedy_agreement_with_fp32"] = per_round[0]["greedy_agreement_with_fp32"]
        report["systems"][system] = merged
    if "llamacpp" in report["systems"]:
        anchor = report["systems"]["llamacpp"]
        for values in report["systems"].values():
            values["ratio_to_llamacpp"] = {
                kind: {
                    key: round(values[kind][key] / anchor[kind][key], 2)
                    for key in ("prefill_tok_s", "decode_tok_s")
                }
                for kind in ("rag", "short")
                if kind in values
            }
    print(json.dumps(report, indent=1))
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (RESULTS / f"latency-{args.model}-{stamp}.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
