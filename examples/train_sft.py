"""Supervised fine-tuning (loss on response tokens only) on demonstrations.

Defaults: the packaged SmolLM2-135M-Instruct with a LoRA adapter, trained on the chosen answers
of ../shared/data/hh_harmless_test.jsonl.gz (run from the repository root).

    python examples/train_sft.py --config examples/configs/sft.yaml --limit 300
    python examples/train_sft.py --config examples/configs/sft.yaml --resume
    accelerate launch examples/train_sft.py --config examples/configs/sft.yaml
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from alignment import SFTJobConfig, load_config, train_sft
from alignment.config import override
from ragkit.errors import RagkitError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="job config (YAML); defaults otherwise")
    parser.add_argument("--limit", type=int, help="use only the first N records (quick run)")
    parser.add_argument("--output", type=Path, help="output folder (overrides output_dir)")
    parser.add_argument("--model", help="base model: Hugging Face id or local folder")
    parser.add_argument("--max-steps", type=int, help="stop after N optimizer steps")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def build_config(args: argparse.Namespace) -> SFTJobConfig:
    config = load_config(SFTJobConfig, args.config) if args.config else SFTJobConfig()
    return override(
        config,
        {
            "data.limit": args.limit,
            "output_dir": args.output,
            "model.name_or_path": args.model,
            "training.max_steps": args.max_steps,
            "training.threads": args.threads,
            "training.progress": False if args.no_progress else None,
        },
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        result = train_sft(build_config(args), resume=args.resume)
    except RagkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = result.summary()
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
