"""TRL's side of the PPO benchmark: ``trl.experimental.ppo.PPOTrainer`` of TRL 1.12.0.

Run by ``benchmarks/ppo_trl_bench.py`` in the separate ``.bench-trl-venv`` (TRL is never a
project dependency):

    .bench-trl-venv/bin/python benchmarks/ppo_runners/trl_ppo.py SPEC.json OUT.json

Set up as TRL's own PPO example does it: policy and reference loaded separately
(``AutoModelForCausalLM``), value and reward models ``AutoModelForSequenceClassification``
(num_labels 1) from the reward folder, a ``<|pad|>`` token added to the tokenizer without
resizing (TRL replaces pad ids by 0 before every forward pass), left padding. TRL's defaults
that do not fit a CPU (bf16, gradient checkpointing) are switched off; debugging sample
generations, logging integrations and checkpoints are off.

Measurement without touching TRL's code: a callback records the end of each update
(``on_step_end``) and its logged metrics; the module-level ``batch_generation`` and ``forward``
functions that ``train()`` calls are wrapped to time-stamp generation and the first PPO
forward pass of each update (so an update splits into generation, rollout statistics and
training). The data loader is replaced by an unshuffled one over exactly the orchestrator's
prompts, so both systems see the same prompts in the same order.
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from common import (
    PhaseClock,
    cpu_seconds,
    heldout_due,
    load_spec,
    peak_rss_mb,
    reset_peak,
    rss_mb,
    setup_torch,
    spec_heldout_eval,
    timed_heldout_eval,
    write_result,
)


class UpdateTimes:
    """Time stamps of each update's phases, filled by the wrappers and the callback."""

    def __init__(self) -> None:
        self.begin = (0.0, 0.0)
        # (wall, cpu) when each update began: the previous end, or the end of the held-out
        # evaluation that followed it (evaluations are not part of any update's time)
        self.starts: list[tuple[float, float]] = []
        self.ends: list[tuple[float, float]] = []
        self.generation: list[tuple[float, float]] = []
        self.train_start: list[float] = []
        self.logs: list[dict[str, float]] = []
        self.rss: list[float] = []
        self.peaks: list[float] = []


def install_hooks(module: Any, times: UpdateTimes, training_model: list[Any]) -> None:
    """Wrap ``batch_generation`` and ``forward`` in TRL's trainer module with time stamps."""
    original_generation = module.batch_generation
    original_forward = module.forward

    def timed_generation(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        out = original_generation(*args, **kwargs)
        times.generation.append((start, time.perf_counter()))
        return out

    def timed_forward(model: Any, *args: Any, **kwargs: Any) -> Any:
        if training_model and model is training_model[0]:
            update = len(times.ends)
            if len(times.train_start) == update:  # first PPO forward of this update
                times.train_start.append(time.perf_counter())
        return original_forward(model, *args, **kwargs)

    module.batch_generation = timed_generation
    module.forward = timed_forward


def install_reward_eos(module: Any, reward_model: Any, eos_token_id: int) -> None:
    """Score ``reward_model`` at an EOS appended to responses that do not end with one.

    TRL reads the reward at the last non-pad token of the truncated response; a reward model
    trained by ragkit was trained with EOS after every response, and ragkit's side appends it
    too (``common.score_texts(append_eos=True)``). The value model is left untouched.
    """
    original = module.get_reward

    def with_eos(
        model: Any, query_responses: torch.Tensor, pad_token_id: int, context_length: int
    ) -> Any:
        if model is not reward_model:
            return original(model, query_responses, pad_token_id, context_length)
        response = query_responses[:, context_length:]
        is_pad = response == pad_token_id
        full = torch.full_like(is_pad[:, 0], response.shape[1], dtype=torch.long)
        length = torch.where(is_pad.any(1), is_pad.long().argmax(1), full).clamp(min=1)
        rows = torch.arange(query_responses.shape[0], device=query_responses.device)
        extended = torch.cat(
            [query_responses, torch.full_like(query_responses[:, :1], pad_token_id)], 1
        )
        needs = extended[rows, context_length + length - 1] != eos_token_id
        extended[rows[needs], (context_length + length)[needs]] = eos_token_id
        return original(model, extended, pad_token_id, context_length)

    module.get_reward = with_eos


def main(argv: Sequence[str]) -> None:
    spec_path, out_path = argv[0], argv[1]
    spec = load_spec(spec_path)
    setup_torch(spec["threads"], spec["seed"])
    clock = PhaseClock()

    marks = clock.start()
    import transformers
    import trl
    import trl.experimental.ppo.ppo_trainer as ppo_module
    from datasets import Dataset
    from torch.utils.data import DataLoader
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        TrainerCallback,
    )
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"], padding_side="left")
    score_tokenizer = AutoTokenizer.from_pretrained(spec["model_dir"])
    tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    policy = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    ref_policy = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32)
    value_model = AutoModelForSequenceClassification.from_pretrained(
        spec["reward_dir"], num_labels=1, dtype=torch.float32
    )
    reward_model = AutoModelForSequenceClassification.from_pretrained(
        spec["reward_dir"], num_labels=1, dtype=torch.float32
    ).eval()
    if spec.get("reward_eos"):
        install_reward_eos(ppo_module, reward_model, int(score_tokenizer.eos_token_id))
    clock.stop("load", marks)

    before = timed_heldout_eval("eval_before", clock, policy, score_tokenizer, reward_model, spec)

    marks = clock.start()
    batch = spec["batch_size"]
    updates = spec["updates"]
    prompts = spec["train_prompts"][: updates * batch]
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p)["input_ids"] for p in prompts]})
    eval_dataset = Dataset.from_dict(
        {"input_ids": [tokenizer(p)["input_ids"] for p in spec["heldout_prompts"][:batch]]}
    )
    output_dir = tempfile.mkdtemp(prefix="trl-ppo-bench-")
    args = PPOConfig(
        output_dir=output_dir,
        per_device_train_batch_size=batch // spec["mini_batches"],
        gradient_accumulation_steps=1,
        num_mini_batches=spec["mini_batches"],
        num_ppo_epochs=spec["ppo_epochs"],
        total_episodes=updates * batch,
        response_length=spec["response_length"],
        temperature=spec["temperature"],
        kl_coef=spec["kl_coef"],
        learning_rate=spec["learning_rate"],
        adam_epsilon=spec["adam_eps"],
        lr_scheduler_type="linear",
        warmup_steps=0,
        stop_token="eos",
        local_rollout_forward_batch_size=batch,
        num_sample_generations=0,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=spec["seed"],
        **spec.get("trl_overrides", {}),
    )
    times = UpdateTimes()
    curve: list[dict[str, Any]] = []
    trainer_holder: list[Any] = []

    class Recorder(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            times.begin = (time.perf_counter(), cpu_seconds())
            times.starts.append(times.begin)

        def on_log(
            self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any
        ) -> None:
            if logs and "objective/scores" in logs:
                times.logs.append({k: float(v) for k, v in logs.items()})

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            times.ends.append((time.perf_counter(), cpu_seconds()))
            times.rss.append(rss_mb())
            times.peaks.append(peak_rss_mb())
            u = len(times.ends)
            last = times.logs[-1] if times.logs else {}
            prev = times.starts[u - 1]
            gen = times.generation[-1][1] - times.generation[-1][0] if times.generation else 0
            print(
                f"[trl] update {u}/{updates}: {times.ends[-1][0] - prev[0]:.1f} s wall, "
                f"{times.ends[-1][1] - prev[1]:.1f} s cpu, gen {gen:.1f} s, "
                f"score {last.get('objective/scores', float('nan')):+.3f}, "
                f"kl {last.get('objective/kl', float('nan')):.4f}, rss {times.rss[-1]:.0f} MiB, "
                f"peak {times.peaks[-1]:.0f} MiB",
                flush=True,
            )
            if heldout_due(u, spec):
                trainer = trainer_holder[0]
                # a copy, as on ragkit's side: sampling must not touch the trained model
                policy = copy.deepcopy(trainer.accelerator.unwrap_model(trainer.model).policy)
                result = spec_heldout_eval(policy, score_tokenizer, reward_model, spec)
                del policy
                curve.append({"update": u, **result})
                print(f"[trl] held-out after update {u}: {result['score']:+.3f}", flush=True)
            times.starts.append((time.perf_counter(), cpu_seconds()))

    training_model: list[Any] = []
    install_hooks(ppo_module, times, training_model)
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=policy,
        ref_model=ref_policy,
        reward_model=reward_model,
        train_dataset=dataset,
        value_model=value_model,
        eval_dataset=eval_dataset,
        callbacks=[Recorder()],
    )
    training_model.append(trainer.model)
    trainer_holder.append(trainer)
    # the same prompts in the same order as ragkit: replace the shuffling loader
    trainer.dataloader = trainer.accelerator.prepare(
        DataLoader(
            dataset,
            batch_size=batch,
            shuffle=False,
            collate_fn=DataCollatorWithPadding(tokenizer),
            drop_last=True,
        )
    )
    clock.stop("setup", marks)

    marks = clock.start()
    trainer.train()
    clock.stop("train", marks)

    rows: list[dict[str, Any]] = []
    for u, (end, cpu_end) in enumerate(times.ends):
        prev_wall, prev_cpu = times.starts[u]
        gen_start, gen_end = times.generation[u]
        train_start = times.train_start[u] if u < len(times.train_start) else gen_end
        logs = times.logs[u] if u < len(times.logs) else {}
        rows.append(
            {
                "update": u + 1,
                "wall_s": end - prev_wall,
                "cpu_s": cpu_end - prev_cpu,
                "generation_s": gen_end - gen_start,
                "rollout_stats_s": train_start - gen_end,
                "training_s": end - train_start,
                "rss_mb": times.rss[u],
                "peak_rss_so_far_mb": times.peaks[u],
                "score": logs.get("objective/scores"),
                "kl": logs.get("objective/kl"),
                "entropy": logs.get("objective/entropy"),
                "approx_kl": logs.get("policy/approxkl_avg"),
                "clip_fraction": logs.get("policy/clipfrac_avg"),
                "policy_loss": logs.get("loss/policy_avg"),
                "value_loss": logs.get("loss/value_avg"),
                "ratio_mean": logs.get("val/ratio"),
                "eos_tokens": logs.get("val/num_eos_tokens"),
                "lr": logs.get("lr"),
            }
        )

    unwrapped = trainer.accelerator.unwrap_model(trainer.model).policy
    after = timed_heldout_eval("eval_after", clock, unwrapped, score_tokenizer, reward_model, spec)
    reset_peak()
    write_result(
        out_path,
        {
            "system": "trl",
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "trl": trl.__version__,
            },
            "config": {k: v for k, v in args.to_dict().items() if not k.startswith("_")},
            "threads": torch.get_num_threads(),
            "phases": clock.phases,
            "peak_rss_mb": clock.overall_peak,
            "updates": rows,
            "heldout_before": before,
            "heldout_curve": curve,
            "heldout_after": after,
        },
    )


if __name__ == "__main__":
    main(sys.argv[1:])
