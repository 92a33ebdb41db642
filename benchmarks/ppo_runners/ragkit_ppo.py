"""ragkit's side of the PPO benchmark: ``alignment.ppo.PPOTrainer``, one ``step`` per update.

Run by ``benchmarks/ppo_trl_bench.py`` in the project's ``.venv``:

    .venv/bin/python benchmarks/ppo_runners/ragkit_ppo.py SPEC.json OUT.json

Models (all float32, from the folders in the spec, the same files TRL loads): the policy
(``AutoModelForCausalLM``), its frozen reference (the trainer's deep copy), the value model (a
copy of the reward model's backbone and head, as TRL's value model is) and the reward model
(``AutoModelForSequenceClassification``), scored by :func:`common.score_texts`. The trainer adds
its dedicated pad token (one embedding row) after the held-out "before" evaluation, so that
evaluation runs on exactly the weights TRL starts from.
"""

from __future__ import annotations

import copy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch
from common import (
    PhaseClock,
    cpu_seconds,
    heldout_due,
    load_spec,
    peak_rss_mb,
    reset_peak,
    rss_mb,
    score_texts,
    setup_torch,
    spec_heldout_eval,
    timed_heldout_eval,
    write_result,
)


def eval_view(policy: Any, vocab_size: int) -> Any:
    """A copy of the trained policy without the trainer's extra pad row (embedding and head).

    The held-out evaluation samples with a fixed seed; with one more logit the sampler draws
    different tokens from the same seed, and the before/after pairing (and the comparison with
    TRL, whose policy never gets the row) would be lost. The pad token is never a real token.
    """
    view = copy.deepcopy(policy)
    if view.get_input_embeddings().num_embeddings != vocab_size:
        view.resize_token_embeddings(vocab_size)
    return view


def build_config(spec: dict[str, Any]) -> Any:
    """ragkit's PPOConfig with the benchmark's settings (see the orchestrator's docstring)."""
    from alignment.ppo import PPOConfig

    return PPOConfig(
        batch_size=spec["batch_size"],
        mini_batches=spec["mini_batches"],
        grad_accumulation=1,
        ppo_epochs=spec["ppo_epochs"],
        response_length=spec["response_length"],
        max_prompt_length=spec["max_prompt_tokens"],
        temperature=spec["temperature"],
        kl_coef=spec["kl_coef"],
        learning_rate=spec["learning_rate"],
        adam_eps=spec["adam_eps"],
        lr_schedule="linear",
        max_grad_norm=None,  # TRL's PPO loop does not clip gradients
        value=spec.get("ragkit_value", "model"),
        seed=spec["seed"],
        **spec.get("ragkit_overrides", {}),
    )


def main(argv: Sequence[str]) -> None:
    spec_path, out_path = argv[0], argv[1]
    spec = load_spec(spec_path)
    setup_torch(spec["threads"], spec["seed"])
    clock = PhaseClock()

    marks = clock.start()
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    import alignment
    from alignment.backbone import disable_dropout
    from alignment.ppo import PPOTrainer
    from alignment.ppo.value import ValueModel
    from alignment.tokenization import ensure_pad_token

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    score_tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    policy = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    reward = AutoModelForSequenceClassification.from_pretrained(
        spec["reward_dir"], num_labels=1, dtype=torch.float32
    ).eval()
    disable_dropout(policy)
    disable_dropout(reward)
    reward.requires_grad_(False)
    clock.stop("load", marks)

    before = timed_heldout_eval("eval_before", clock, policy, score_tokenizer, reward, spec)

    marks = clock.start()
    # the trainer's own setup: pad token (the value model must know it too), reference copy
    ensure_pad_token(tokenizer, policy)
    value_model: ValueModel | None = None
    if spec.get("ragkit_value", "model") == "model":
        value_backbone = copy.deepcopy(reward.model)
        ensure_pad_token(tokenizer, value_backbone)
        value_model = ValueModel(value_backbone, copy.deepcopy(reward.score))
        value_model.requires_grad_(True)

    def reward_fn(prompts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        return score_texts(
            reward, score_tokenizer, prompts, responses, append_eos=bool(spec.get("reward_eos"))
        )

    config = build_config(spec)
    trainer = PPOTrainer(
        policy,
        None,
        value_model,
        reward_fn,
        tokenizer,
        config,
        device="cpu",
        total_updates=spec["updates"],
    )
    clock.stop("setup", marks)

    updates: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    prompts = spec["train_prompts"]
    batch = spec["batch_size"]
    marks = clock.start()
    for u in range(spec["updates"]):
        wall0, cpu0 = time.perf_counter(), cpu_seconds()
        metrics = trainer.step(prompts[u * batch : (u + 1) * batch])
        wall, cpu = time.perf_counter() - wall0, cpu_seconds() - cpu0
        row = {
            "update": u + 1,
            "wall_s": wall,
            "cpu_s": cpu,
            "generation_s": metrics["time_generation"],
            "rollout_stats_s": metrics["time_scoring"],
            "training_s": metrics["time_training"],
            "rss_mb": rss_mb(),
            "peak_rss_so_far_mb": peak_rss_mb(),
            "score": metrics["score"],
            "kl": metrics["kl"],
            "entropy": metrics["entropy"],
            "approx_kl": metrics["approx_kl"],
            "clip_fraction": metrics["clip_fraction"],
            "policy_loss": metrics["policy_loss"],
            "value_loss": metrics["value_loss"],
            "ratio_mean": metrics["ratio_mean"],
            "response_length": metrics["response_length"],
            "eos_rate": metrics["eos_rate"],
            "lr": metrics["lr"],
            "first_ratio_max_deviation": metrics["first_ratio_max_deviation"],
        }
        updates.append(row)
        print(
            f"[ragkit] update {u + 1}/{spec['updates']}: {wall:.1f} s wall, {cpu:.1f} s cpu, "
            f"gen {row['generation_s']:.1f} s, score {row['score']:+.3f}, kl {row['kl']:.4f}, "
            f"rss {row['rss_mb']:.0f} MiB, peak {row['peak_rss_so_far_mb']:.0f} MiB",
            flush=True,
        )
        if heldout_due(u + 1, spec):  # outside the timed step
            view = eval_view(trainer.policy, len(score_tokenizer))
            result = spec_heldout_eval(view, score_tokenizer, reward, spec)
            del view
            curve.append({"update": u + 1, **result})
            print(f"[ragkit] held-out after update {u + 1}: {result['score']:+.3f}", flush=True)
    clock.stop("train", marks)

    # the trainer's policy has one extra (pad) logit: evaluated without it, like the "before"
    view = eval_view(trainer.policy, len(score_tokenizer))
    after = timed_heldout_eval("eval_after", clock, view, score_tokenizer, reward, spec)
    reset_peak()
    write_result(
        out_path,
        {
            "system": "ragkit",
            "variant": spec.get("ragkit_value", "model"),
            "versions": {
                "torch": torch.__version__,
                "transformers": __import__("transformers").__version__,
                "ragkit_alignment": getattr(alignment, "__version__", "tree"),
            },
            "config": build_config(spec).model_dump(mode="json"),
            "threads": torch.get_num_threads(),
            "phases": clock.phases,
            "peak_rss_mb": clock.overall_peak,
            "updates": updates,
            "heldout_before": before,
            "heldout_curve": curve,
            "heldout_after": after,
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
