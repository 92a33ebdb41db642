"""Train a pairwise reward model (Bradley–Terry) on preference pairs: `ragkit align reward`.

Defaults: the packaged SmolLM2-135M-Instruct backbone and the Anthropic HH "harmless" pairs at
../shared/data/hh_harmless_test.jsonl.gz (run from the repository root). The options are the
command's (`--help`): --config, --limit, --output, --model, --max-steps, --threads, --resume,
--no-progress, --from-feedback.

    python examples/train_reward_model.py --config examples/configs/reward.yaml --limit 300
    python examples/train_reward_model.py --config examples/configs/reward.yaml --resume
    accelerate launch examples/train_reward_model.py --config examples/configs/reward.yaml
"""

from __future__ import annotations

import logging
import sys

from ragkit.cli import run


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = sys.argv[1:] if argv is None else argv
    return run(["align", "reward", *args], prog_name="train_reward_model.py")


if __name__ == "__main__":
    sys.exit(main())
