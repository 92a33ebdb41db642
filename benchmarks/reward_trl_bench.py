"""Reward-model training throughput: ragkit's own loop vs TRL's ``RewardTrainer`` (issue 5).

ragkit trains reward models with its own loop (``alignment/reward_training.py`` on
``alignment/training_loop.py``), not with ``transformers.Trainer``. This script measures what that costs
or saves against TRL's ``RewardTrainer`` on the same work:

* **same data, token for token**: the first ``--pairs`` lines of the HH file, read and tokenized
  by ragkit (``alignment.job_setup.load_pairs`` + ``alignment.tokenization.tokenize_pairs``: prompt
  cut from the left, EOS appended, dedicated pad token). TRL gets those token ids as a
  pre-tokenized ``datasets.Dataset`` (``chosen_ids``/``rejected_ids``), so neither side
  tokenizes differently or drops different pairs;
* **same backbone**: the packaged SmolLM2-135M-Instruct through ragkit's resolver (or
  ``--model``), float32, dropout off, the same added pad token; ragkit puts its own scalar head
  on ``AutoModel``, TRL uses ``AutoModelForSequenceClassification(num_labels=1)``;
* **same optimisation**: full fine-tuning (every weight), AdamW, the same learning rate, linear
  decay, no warm-up, gradient clipping at 1.0, batch size, 1 epoch, seed; no evaluation, no
  checkpoints. TRL's defaults that differ from ragkit (bf16, gradient checkpointing) are
  switched off;
* ``torch.set_num_threads(--threads)`` (default 2) in both.

Each run is a fresh subprocess (peak RSS is the child's ``ru_maxrss``), alternating ragkit, TRL,
ragkit, TRL for ``--rounds``. Timed: the training loop only (ragkit: ``LoopResult.seconds``
with no validation; TRL: ``on_train_begin`` to ``on_train_end``), so model loading and saving
are excluded from both. The one difference left in: ragkit batches pairs grouped by prompt and
length (less padding), TRL samples them at random (its default).

    .venv/bin/python benchmarks/reward_trl_bench.py --pairs 16            # quick check
    .venv/bin/python benchmarks/reward_trl_bench.py                       # 64 pairs, 2 rounds

The summary is printed and written to ``benchmarks/results/reward-trl-<n>-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh_harmless_test.jsonl.gz"
RESULTS = ROOT / "benchmarks" / "results"


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reward_config(args: argparse.Namespace, output_dir: Path) -> Any:
    """The ragkit reward job for this benchmark (full fine-tuning, no validation, no bias)."""
    from alignment import RewardJobConfig

    return RewardJobConfig.model_validate(
        {
            "model": {"name_or_path": args.model, "finetune": "full", "freeze_layers": 0},
            "data": {
                "path": str(args.data),
                "format": "hh",
                "limit": args.pairs,
                "validation_fraction": 0.0,
            },
            "training": {
                "learning_rate": args.learning_rate,
                "batch_size": args.batch_size,
                "epochs": 1,
                "warmup_steps": 0,
                "lr_schedule": "linear",
                "max_grad_norm": 1.0,
                "seed": args.seed,
                "threads": args.threads,
                "progress": False,
                "log_every": 1,
            },
            "normalisation": {"reference": "none"},
            "max_length": args.max_length,
            "output_dir": str(output_dir),
        }
    )


def run_ragkit(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One ragkit reward-training run; the loop's own timing."""
    from alignment.reward_training import train_reward_model

    result = train_reward_model(reward_config(args, work / "ragkit"))
    loop = result.loop
    return {
        "pairs": result.train_pairs,
        "steps": loop.steps,
        "loop_seconds": loop.seconds,
        "final_loss": loop.train.get("loss"),
    }


def tokenized_pairs(args: argparse.Namespace, tokenizer: Any) -> list[Any]:
    """ragkit's tokenization of the benchmark pairs (the tokenizer gets ragkit's pad token)."""
    from alignment.job_setup import load_pairs
    from alignment.tokenization import PromptResponseEncoder, tokenize_pairs

    config = reward_config(args, Path(tempfile.gettempdir()))
    split, _ = load_pairs(config.data)
    encoder = PromptResponseEncoder(
        tokenizer, max_length=config.max_length, min_prompt_tokens=config.min_prompt_tokens
    )
    pairs, _ = tokenize_pairs(split.train, encoder, source="train split")
    return pairs


def run_trl(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """One TRL RewardTrainer run on the same token ids, model and settings."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from alignment.backbone import disable_dropout, load_tokenizer, resolve_backbone
    from alignment.tokenization import ensure_pad_token

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    path = resolve_backbone(args.model)
    tokenizer = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32
    )
    ensure_pad_token(tokenizer, model)
    disable_dropout(model)
    pairs = tokenized_pairs(args, tokenizer)
    dataset = Dataset.from_list(
        [
            {"chosen_ids": list(p.chosen.input_ids), "rejected_ids": list(p.rejected.input_ids)}
            for p in pairs
        ]
    )

    class Timer(TrainerCallback):
        began = ended = 0.0

        def on_train_begin(self, *a: Any, **k: Any) -> None:
            Timer.began = time.perf_counter()

        def on_train_end(self, *a: Any, **k: Any) -> None:
            Timer.ended = time.perf_counter()

    config = RewardConfig(
        output_dir=str(work / "trl"),
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        warmup_steps=0,
        lr_scheduler_type="linear",
        max_grad_norm=1.0,
        weight_decay=0.0,
        seed=args.seed,
        max_length=args.max_length,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        use_cpu=True,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        logging_steps=1,
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    output = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "pairs": len(trainer.train_dataset),
        "steps": output.global_step,
        "loop_seconds": Timer.ended - Timer.began,
        "final_loss": losses[-1] if losses else None,
    }


def child(args: argparse.Namespace) -> None:
    """Run one side in this process and print one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="reward-trl-") as tmp:
        fn = run_ragkit if args.child == "ragkit" else run_trl
        result = fn(args, Path(tmp))
    result["pairs_per_second"] = result["pairs"] / result["loop_seconds"]
    result["peak_rss_mb"] = peak_rss_mb()
    result["threads"] = torch.get_num_threads()
    print("RESULT " + json.dumps(result), flush=True)


def versions() -> dict[str, str]:
    import datasets
    import torch
    import transformers
    import trl

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
        "datasets": datasets.__version__,
        "machine": platform.machine(),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HH preference JSONL(.gz)")
    parser.add_argument("--pairs", type=int, default=64, help="first N lines of the file")
    parser.add_argument("--model", help="backbone folder or id (default: packaged SmolLM2)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="pairs per optimizer step")
    parser.add_argument("--learning-rate", type=float, default=5e-5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=2, help="ragkit, TRL pairs of runs")
    parser.add_argument("--child", choices=["ragkit", "trl"], help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def child_argv(args: argparse.Namespace, side: str) -> list[str]:
    argv = [sys.executable, __file__, "--child", side, "--data", str(args.data)]
    argv += ["--pairs", str(args.pairs), "--max-length", str(args.max_length)]
    argv += ["--batch-size", str(args.batch_size), "--learning-rate", str(args.learning_rate)]
    argv += ["--threads", str(args.threads), "--seed", str(args.seed)]
    if args.model:
        argv += ["--model", args.model]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child(args)
        return 0
    runs: dict[str, list[dict[str, Any]]] = {"ragkit": [], "trl": []}
    errors: dict[str, str] = {}
    for round_ in range(args.rounds):
        for side in ("ragkit", "trl"):
            if side in errors:
                continue
            started = time.perf_counter()
            proc = subprocess.run(
                child_argv(args, side), cwd=ROOT, capture_output=True, text=True, check=False
            )
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                errors[side] = proc.stderr.strip()[-3000:]
                print(f"{side} round {round_ + 1} FAILED:\n{errors[side]}", file=sys.stderr)
                continue
            result = json.loads(lines[-1][len("RESULT ") :])
            result["wall_seconds"] = time.perf_counter() - started
            runs[side].append(result)
            print(f"round {round_ + 1} {side}: {json.dumps(result)}", flush=True)
    summary: dict[str, Any] = {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "finetune": "full",
        "versions": versions(),
        "runs": runs,
        "errors": errors,
    }
    for side, items in runs.items():
        if items:
            summary[side] = {
                "pairs_per_second": statistics.median(r["pairs_per_second"] for r in items),
                "peak_rss_mb": statistics.median(r["peak_rss_mb"] for r in items),
                "loop_seconds": statistics.median(r["loop_seconds"] for r in items),
            }
    if runs["ragkit"] and runs["trl"]:
        summary["ratio_ragkit_over_trl"] = (
            summary["ragkit"]["pairs_per_second"] / summary["trl"]["pairs_per_second"]
        )
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"reward-trl-{args.pairs}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"written to {out}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
