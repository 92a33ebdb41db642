"""Do the default generator's hidden states know when the passages hold no answer? (issue 18)

The default's output likelihoods carry no answerability signal on the held-out article
(``abstention_signal.py``: ROC AUC ≈ 0.50). Models often represent more than they say, so this
reads the hidden state of the prompt's last token (the ``Answer:`` the answer continues from) at
every layer of the default generator (Gemma 3 270M with the shipped ``grounded-qa-gemma``
adapter) and fits one L2-regularised logistic regression per layer: "answerable from these
passages" vs not. Nothing is chosen on the held-out article:

- ``features``: hidden states of the prompts ``ragkit ask`` builds (k = 4 hybrid retrieval),
  for SFT demonstration files (label: the target is a span) or a split of squad_small (label:
  the question is answerable), saved as ``.npz`` (no pickle);
- ``fit``: per layer and regularisation strength, 5-fold cross-validated AUC on the training
  features picks the layer and strength; then AUC (bootstrap 95 % interval) on each evaluation
  file; ``--save FOLDER`` writes the chosen probe into an adapter folder
  (:mod:`ragkit.generation.answerability`), where the generator loads it with the adapter.

    .venv/bin/python benchmarks/answerability_probe.py features \\
        --demos benchmarks/.work/answer_quality/sft-mixed.jsonl --out F_train.npz
    .venv/bin/python benchmarks/answerability_probe.py features --split dev --out F_dev.npz
    .venv/bin/python benchmarks/answerability_probe.py fit --train F_train.npz --eval F_dev.npz
    # several training sets, or row ranges of one: --train A.npz --train B.npz:0:480
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from abstention_signal import auc
from answer_quality import RESULTS, SPLITS, build_pipeline, ensure_index, sample, split_items


def prompts_for_split(split: str, limit: int | None) -> tuple[list[str], list[str], list[int]]:
    """(ids, prompts, labels) of a squad_small split; label 1 = the question is answerable."""
    from ragkit.rag import PromptBuilder
    from ragkit.retrieval import make_retriever

    items, index_dir = split_items(split)
    items = sample(items, limit)
    retriever = make_retriever(index_dir, "hybrid", k=4)
    builder = PromptBuilder("grounded_qa_completion")
    prompts = [
        builder.run(i.question, retriever.run(question=i.question).hits).prompt for i in items
    ]
    return [i.id for i in items], prompts, [0 if i.impossible else 1 for i in items]


def prompts_for_demos(
    path: Path, limit: int | None = None, seed: int = 0
) -> tuple[list[str], list[str], list[int]]:
    """(ids, prompts, labels) of an SFT demonstration file; label 1 = the target is a span.

    ``limit``: a seeded random sample of that many demonstrations, in file order (a probe for a
    new adapter on a budget: each prompt is one forward pass of several seconds here)."""
    from ragkit.generation.grounded import ABSTAIN_PHRASE

    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
        prompts, responses = [r["prompt"] for r in rows], [r["response"] for r in rows]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"error: {path} is not a demonstration file ({exc})") from None
    labels = [0 if r.strip() == ABSTAIN_PHRASE else 1 for r in responses]
    keep = list(range(len(rows)))
    if limit is not None and limit < len(rows):
        keep = sorted(random.Random(seed).sample(keep, limit))
    return (
        [f"{path.name}:{n}" for n in keep],
        [prompts[n] for n in keep],
        [labels[n] for n in keep],
    )


def last_token_states(model: Any, tokenizer: Any, prompts: list[str]) -> np.ndarray:
    """[prompts, layers + 1, hidden] float32: each layer's state at the prompt's last token."""
    import torch

    out = []
    started = time.perf_counter()
    for n, prompt in enumerate(prompts, 1):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        with torch.no_grad():
            states = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states
        out.append(torch.stack([s[0, -1] for s in states]).float().numpy())
        if n % 25 == 0:
            rate = n / (time.perf_counter() - started)
            print(f"  {n}/{len(prompts)} ({rate:.2f}/s)", file=sys.stderr, flush=True)
    return np.stack(out)


def cmd_features(args: argparse.Namespace) -> int:
    if args.demos:
        ids, prompts, labels = prompts_for_demos(Path(args.demos), args.limit)
    else:
        ids, prompts, labels = prompts_for_split(args.split, args.limit)
    rag = build_pipeline("gemma-adapter-grounded", ensure_index(), -4.0, adapter=args.adapter)
    rag.generator.warm_up()
    states = last_token_states(rag.generator.model, rag.generator.tokenizer, prompts)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, states=states, labels=np.array(labels), ids=np.array(ids))
    print(f"{len(ids)} prompts ({sum(labels)} positive), states {states.shape} -> {out}")
    return 0


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, steps: int = 200) -> np.ndarray:
    """Weights (bias last) of L2-regularised logistic regression by Newton's method."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    w = np.zeros(xb.shape[1])
    penalty = np.full(xb.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(xb @ w, -30, 30)))
        grad = xb.T @ (p - y) + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-6:
            break
    return w


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0)
    std = x.std(axis=0) + 1e-6
    return mean, std


def split_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for label 1 against label 0."""
    return auc(list(scores[labels == 1]), list(scores[labels == 0]))


def cross_validated_auc(
    x: np.ndarray, y: np.ndarray, l2: float, folds: int = 5, block: int = 1
) -> float:
    """AUC of out-of-fold scores; ``block`` consecutive rows (the questions of one paragraph,
    which share retrieved passages) always fall in the same fold."""
    blocks = np.random.default_rng(0).permutation((len(y) + block - 1) // block)
    fold_of = np.empty(len(y), dtype=int)
    for rank, b in enumerate(blocks):
        fold_of[b * block : (b + 1) * block] = rank % folds
    scores = np.zeros(len(y))
    for fold in range(folds):
        test = np.flatnonzero(fold_of == fold)
        train = np.flatnonzero(fold_of != fold)
        mean, std = standardiser(x[train])
        w = fit_logistic((x[train] - mean) / std, y[train], l2)
        scores[test] = ((x[test] - mean) / std) @ w[:-1] + w[-1]
    return split_auc(scores, y)


def bootstrap_auc(scores: np.ndarray, y: np.ndarray, rounds: int = 1000) -> list[float]:
    rng = np.random.default_rng(0)
    values = []
    for _ in range(rounds):
        pick = rng.integers(0, len(y), len(y))
        s, t = scores[pick], y[pick]
        if 0 < t.sum() < len(t):
            values.append(split_auc(s, t))
    values.sort()
    return [
        round(values[int(0.025 * len(values))], 3),
        round(values[int(0.975 * len(values)) - 1], 3),
    ]


def _load_one(spec: str) -> dict[str, np.ndarray]:
    """``FILE[:START:END]``: a ``features`` output, or a slice of its rows; a missing or
    foreign file ends the script in one line."""
    path, *bounds = spec.split(":")
    try:
        data = np.load(path, allow_pickle=False)
        missing = {"states", "labels", "ids"} - set(data.files)
        if missing:
            raise KeyError(", ".join(sorted(missing)))
        rows = slice(*(int(b) if b else None for b in bounds)) if bounds else slice(None)
        return {key: data[key][rows] for key in ("states", "labels", "ids")}
    except (OSError, ValueError, KeyError) as exc:
        raise SystemExit(f"error: {spec} is not a features file or row range ({exc})") from None


def _features(specs: str | list[str]) -> dict[str, np.ndarray]:
    """The rows of one or more ``FILE[:START:END]`` specs, concatenated (states, labels, ids)."""
    parts = [_load_one(spec) for spec in ([specs] if isinstance(specs, str) else specs)]
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def cmd_fit(args: argparse.Namespace) -> int:
    train = _features(args.train)
    states, y = train["states"], train["labels"].astype(float)
    # hidden state 0 (the embeddings) is the same for every prompt's last token (":")
    layers = range(1, states.shape[1]) if args.layer is None else [args.layer]
    grid = []
    for layer in layers:
        for l2 in args.l2:
            value = cross_validated_auc(states[:, layer], y, l2, block=args.block)
            grid.append({"layer": layer, "l2": l2, "cv_auc": round(value, 4)})
            print(json.dumps(grid[-1]), flush=True)
    best = max(grid, key=lambda g: g["cv_auc"])
    if args.prefer_layer is not None:  # e.g. the final layer, which every backend can read
        preferred = [g for g in grid if g["layer"] == args.prefer_layer]
        if preferred:
            top = max(preferred, key=lambda g: g["cv_auc"])
            if top["cv_auc"] >= best["cv_auc"] - args.within:
                best = top
    x = states[:, best["layer"]]
    mean, std = standardiser(x)
    w = fit_logistic((x - mean) / std, y, best["l2"])
    report: dict[str, Any] = {"train": args.train, "chosen": best, "eval": {}}
    for path in args.eval:
        data = _features(path)
        xe, ye = data["states"][:, best["layer"]], data["labels"]
        scores = ((xe - mean) / std) @ w[:-1] + w[-1]
        report["eval"][path] = {
            "questions": len(ye),
            "answerable": int(ye.sum()),
            "auc": round(split_auc(scores, ye), 3),
            "auc_ci": bootstrap_auc(scores, ye),
            "per_layer_auc": [
                round(_layer_auc(states[:, layer], y, data["states"][:, layer], ye, best["l2"]), 3)
                for layer in range(1, states.shape[1])
            ]
            if args.all_layers
            else None,
        }
    if args.save:
        from ragkit.generation.answerability import AnswerabilityProbe

        probe = AnswerabilityProbe(
            layer=int(best["layer"]),
            mean=tuple(float(v) for v in mean),
            scale=tuple(float(v) for v in std),
            weight=tuple(float(v) for v in w[:-1]),
            bias=float(w[-1]),
        )
        report["saved"] = str(probe.save(args.save))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"answerability-probe-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"grid": grid, **report}, indent=1), encoding="utf-8")
    print(json.dumps(report))
    return 0


def _layer_auc(x: np.ndarray, y: np.ndarray, xe: np.ndarray, ye: np.ndarray, l2: float) -> float:
    mean, std = standardiser(x)
    w = fit_logistic((x - mean) / std, y, l2)
    scores = ((xe - mean) / std) @ w[:-1] + w[-1]
    return split_auc(scores, ye)


def cmd_reestimate(args: argparse.Namespace) -> int:
    """A veto-off eval run's rows with another probe's estimates, vetoed at ``--threshold``.

    Exact without re-answering: a veto only turns an answer into the abstention, and the
    answers above the threshold are those written without one. The features must be of the
    same questions, read by the same adapter (``features --split``).
    """
    from answer_quality import _rows, summarise_vetoed, vetoed_rows

    from ragkit.generation.answerability import AnswerabilityProbe, ProbeError

    rows = _rows(args.result)
    data = _features(args.features)
    ids, states = [str(i) for i in data["ids"]], data["states"]
    try:
        probe = AnswerabilityProbe.load(args.probe)
    except ProbeError as exc:
        raise SystemExit(f"error: {exc}") from None
    if probe is None:
        raise SystemExit(f"error: {args.probe} holds no answerability probe")
    if set(ids) != set(rows):
        raise SystemExit(
            f"error: {args.features} and {args.result} hold different questions "
            f"({len(set(ids) ^ set(rows))} differ)"
        )
    for qid, state in zip(ids, states, strict=True):
        rows[qid] = dict(rows[qid], answerability=probe.probability(state[probe.layer].tolist()))
    ordered = list(rows.values())
    labels = np.array([0 if r["impossible"] else 1 for r in ordered])
    scores = np.array([r["answerability"] for r in ordered])
    scored = vetoed_rows(ordered, args.threshold)
    summary = summarise_vetoed(scored, args.threshold)
    summary["auc"] = round(split_auc(scores, labels), 3)
    summary["auc_ci"] = bootstrap_auc(scores, labels)
    summary.update(probe=str(args.probe), source=args.result)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {"configs": {"reestimated": {"summary": summary, "rows": scored}}}
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(json.dumps(summary))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features", help="hidden states of prompts -> .npz")
    source = f.add_mutually_exclusive_group(required=True)
    source.add_argument("--demos", help="an SFT demonstration file (.jsonl)")
    source.add_argument("--split", choices=SPLITS)
    f.add_argument("--limit", type=int, help="a seeded random sample of this many prompts")
    f.add_argument("--adapter", help="an adapter folder in place of grounded-qa-gemma")
    f.add_argument("--out", required=True)
    f.set_defaults(run=cmd_features)
    r = sub.add_parser("reestimate", help="a veto-off run's rows under another probe")
    r.add_argument(
        "--result", required=True, help="FILE[:CONFIG], an eval run with --abstain-below 0"
    )
    r.add_argument("--features", required=True, help="features of the same questions (.npz)")
    r.add_argument(
        "--probe", required=True, help="a folder holding answerability_probe.safetensors"
    )
    r.add_argument("--threshold", type=float, default=0.0)
    r.add_argument("--out", required=True)
    r.set_defaults(run=cmd_reestimate)
    t = sub.add_parser("fit", help="per-layer probes; cross-validated choice; held-out AUC")
    t.add_argument(
        "--train",
        action="append",
        required=True,
        help="FILE[:START:END], repeatable: the rows are concatenated",
    )
    t.add_argument("--eval", action="append", default=[], help="FILE[:START:END], repeatable")
    t.add_argument("--layer", type=int)
    t.add_argument("--l2", type=float, nargs="+", default=[1.0, 10.0, 100.0, 1000.0, 10000.0])
    t.add_argument("--all-layers", action="store_true", help="also each layer's held-out AUC")
    t.add_argument("--save", help="write the chosen probe into this adapter folder")
    t.add_argument("--prefer-layer", type=int, help="take this layer if it is within --within")
    t.add_argument("--within", type=float, default=0.02, help="cross-validated AUC margin")
    t.add_argument("--block", type=int, default=1, help="consecutive rows kept in one fold")
    t.set_defaults(run=cmd_fit)
    args = parser.parse_args(argv)
    return int(args.run(args))


if __name__ == "__main__":
    raise SystemExit(main())
