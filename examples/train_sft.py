"""Supervised fine-tuning (loss on response tokens only) on demonstrations: `ragkit align sft`.

Defaults: the packaged SmolLM2-135M-Instruct with a LoRA adapter, trained on the chosen answers
of ../shared/data/hh_harmless_test.jsonl.gz (run from the repository root). The options are the
command's (`--help`): --config, --limit, --output, --model, --max-steps, --threads, --resume,
--no-progress.

    python examples/train_sft.py --config examples/configs/sft.yaml --limit 300
    python examples/train_sft.py --config examples/configs/sft.yaml --resume
    accelerate launch examples/train_sft.py --config examples/configs/sft.yaml
"""

from __future__ import annotations

import logging
import sys

from ragkit.cli import run


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else argv
    return run(["align", "sft", *args], prog_name="train_sft.py")


if __name__ == "__main__":
    sys.exit(main())
