"""InstructGPT's three steps end to end: SFT → reward model → PPO, on the HH data.

Defaults: the packaged SmolLM2-135M-Instruct and ../shared/data/hh_harmless_test.jsonl.gz (run
from the repository root), sized for a 2-core CPU: SFT with LoRA on the chosen answers
(examples/configs/sft.yaml, few steps), a reward model (examples/configs/reward_quick.yaml),
then PPO of the SFT model against it (examples/configs/ppo.yaml). Each step writes its own
folder under --output with metrics.jsonl, curves.png and model/; the script prints them.

    python examples/rlhf_train.py                       # the whole recipe
    python examples/rlhf_train.py --limit 40 --sft-steps 2 --reward-steps 2 --updates 1  # smoke
    python examples/rlhf_train.py --resume              # continue each step where it stopped
    python examples/rlhf_train.py --ptx-coef 1.0        # PPO-ptx on the SFT demonstrations

For several GPUs, run the PPO step on its own under ``accelerate launch`` (docs/ppo.md,
"Multi-GPU"); this script is sized for, and was only run on, one CPU process.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from alignment import (
    RewardJobConfig,
    SFTJobConfig,
    load_config,
    train_reward_model,
    train_sft,
    validate_config,
)
from alignment.ppo import PPOJobConfig, train_ppo
from ragkit.errors import RagkitError

CONFIGS = Path(__file__).resolve().parent / "configs"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("runs/rlhf"), help="root folder")
    parser.add_argument("--data", type=Path, help="HH JSONL file (default: the shared HH file)")
    parser.add_argument("--model", help="starting model: HF id or folder (default: SmolLM2)")
    parser.add_argument("--limit", type=int, help="read only the first N HH lines in each step")
    parser.add_argument("--sft-steps", type=int, default=40, help="SFT optimizer steps")
    parser.add_argument("--reward-steps", type=int, help="reward-model optimizer steps")
    parser.add_argument("--updates", type=int, help="PPO updates (default: ppo.yaml's)")
    parser.add_argument(
        "--ptx-coef",
        type=float,
        help="PPO-ptx γ: mix the SFT demonstrations' LM loss into PPO (default: ppo.yaml's, 0)",
    )
    parser.add_argument(
        "--gradient-checkpointing", action="store_true", help="recompute activations in PPO"
    )
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast in PPO (for CUDA)")
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's, one per core)"
    )
    parser.add_argument("--resume", action="store_true", help="resume every step")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def _data(section: dict[str, Any], args: argparse.Namespace) -> None:
    if args.data is not None:
        section["path"] = args.data
    if args.limit is not None:
        section["limit"] = args.limit


def sft_config(args: argparse.Namespace) -> SFTJobConfig:
    data = load_config(SFTJobConfig, CONFIGS / "sft.yaml").model_dump()
    data["model"]["name_or_path"] = args.model
    _data(data["data"], args)
    if data["data"]["limit"] is None:
        data["data"]["limit"] = 400
    data["max_length"] = 256
    data["training"].update(
        max_steps=args.sft_steps,
        eval_every=None,
        checkpoint_every=20,
        threads=args.threads,
        progress=not args.no_progress,
    )
    data["output_dir"] = args.output / "sft"
    return validate_config(SFTJobConfig, data, "rlhf_train (sft)")


def reward_config(args: argparse.Namespace) -> RewardJobConfig:
    data = load_config(RewardJobConfig, CONFIGS / "reward_quick.yaml").model_dump()
    data["model"]["name_or_path"] = args.model
    _data(data["data"], args)
    data["training"].update(threads=args.threads, progress=not args.no_progress)
    if args.reward_steps is not None:
        data["training"]["max_steps"] = args.reward_steps
    data["output_dir"] = args.output / "reward"
    return validate_config(RewardJobConfig, data, "rlhf_train (reward)")


def ppo_config(args: argparse.Namespace, policy: Path, reward_model: Path) -> PPOJobConfig:
    data = load_config(PPOJobConfig, CONFIGS / "ppo.yaml").model_dump()
    data["policy"]["name_or_path"] = str(policy)
    data["reward"]["model_dir"] = reward_model
    _data(data["data"], args)
    if data.get("ptx") is not None:  # PPO-ptx: the same HH chosen answers the SFT step used
        _data(data["ptx"]["data"], args)
    if args.ptx_coef is not None:
        data["ppo"]["ptx_coef"] = args.ptx_coef
    if args.gradient_checkpointing:
        data["ppo"]["gradient_checkpointing"] = True
    if args.bf16:
        data["ppo"]["bf16"] = True
    if args.updates is not None:
        data["updates"] = args.updates
    data["threads"] = args.threads
    data["output_dir"] = args.output / "ppo"
    return validate_config(PPOJobConfig, data, "rlhf_train (ppo)")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    timings: dict[str, float] = {}
    try:
        start = time.perf_counter()
        sft = train_sft(sft_config(args), resume=args.resume)
        timings["sft"] = time.perf_counter() - start
        start = time.perf_counter()
        reward = train_reward_model(reward_config(args), resume=args.resume)
        timings["reward"] = time.perf_counter() - start
        start = time.perf_counter()
        ppo_settings = ppo_config(args, sft.model_dir, reward.model_dir)
        ppo = train_ppo(ppo_settings, resume=args.resume)
        timings["ppo"] = time.perf_counter() - start
    except RagkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = {
        "seconds": {k: round(v, 1) for k, v in timings.items()},
        "sft": {
            "model": str(sft.model_dir),
            "curves": str(sft.output_dir / "curves.png"),
            "validation": sft.validation,
        },
        "reward": {
            "model": str(reward.model_dir),
            "curves": str(reward.output_dir / "curves.png"),
            "validation": reward.validation,
        },
        "ppo": {
            "model": str(ppo.model_dir),
            "metrics": str(ppo.metrics_path),
            "curves": str(ppo.plot_path) if ppo.plot_path else None,
            "samples": str(ppo.samples_path),
            "heldout_score_start": ppo.heldout_start.get("score"),
            "heldout_score_end": ppo.heldout_end.get("score"),
            "updates": ppo.updates,
            "ptx_coef": ppo_settings.ppo.ptx_coef,
        },
    }
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
