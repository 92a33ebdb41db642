"""Where training metrics go: a JSONL file always, TensorBoard and a PNG plot when installed.

JSONL is the record of truth (one object a line: ``step``, ``split``, metric values), readable
without any library; TensorBoard (``tensorboard``) and the PNG (``matplotlib``) are
conveniences, skipped with a log line when their package is missing.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from ragkit.atomic import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "curves.png"
TENSORBOARD_DIR = "tensorboard"


def average_over_processes(accelerator: Any, metrics: dict[str, float]) -> dict[str, float]:
    """Mean of each metric over data-parallel processes, so the logs describe the global batch
    rather than one process's share of it (identity on one process)."""
    if accelerator.num_processes == 1:
        return metrics
    import torch

    keys = sorted(metrics)
    values = torch.tensor(
        [metrics[k] for k in keys], dtype=torch.float64, device=accelerator.device
    )
    mean = accelerator.reduce(values, reduction="mean")
    return {k: float(v) for k, v in zip(keys, mean.tolist(), strict=True)}


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics JSONL file (an absent file has none)."""
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


class MetricsSink:
    """Appends metric records to ``metrics.jsonl`` (and TensorBoard when ``tensorboard=True``).

    ``resume_step``: records after that step (written by the interrupted run after its last
    checkpoint) are dropped, so the file reads as one uninterrupted run.
    """

    def __init__(self, output_dir: Path, *, resume_step: int = 0, tensorboard: bool = True) -> None:
        self.path = output_dir / METRICS_FILE
        kept = [r for r in read_metrics(self.path) if int(r.get("step", 0)) <= resume_step]
        output_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._fh = self.path.open("a", encoding="utf-8")
        self._writer: Any = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                logger.info("tensorboard is not installed: metrics go to %s only", self.path)
            else:
                self._writer = SummaryWriter(
                    str(output_dir / TENSORBOARD_DIR),
                    purge_step=resume_step + 1 if resume_step else None,
                )

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        """Record ``values`` for ``split`` (``train`` or ``eval``) at optimizer step ``step``."""
        record = {"step": step, "split": split, **values}
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self._writer.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        """Flush and close the files."""
        self._fh.close()
        if self._writer is not None:
            self._writer.close()


def plot_curves(
    metrics_path: Path, out_path: Path, keys: tuple[str, ...] = ("loss", "accuracy")
) -> bool:
    """Draw train and eval curves of ``keys`` into a PNG; False when matplotlib is missing.

    Where records carry ``<key>_se`` (the PPO job's held-out score), the curve gets a band of
    ± one standard error, so a rise can be read against its noise."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no plot of the curves")
        return False
    records = read_metrics(metrics_path)
    present = [k for k in keys if any(k in r for r in records)]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 3.5), squeeze=False)
    for ax, key in zip(axes[0], present, strict=True):
        series: dict[str, tuple[list[int], list[float], list[float | None]]] = defaultdict(
            lambda: ([], [], [])
        )
        for r in records:
            if key in r:
                xs, ys, ses = series[r["split"]]
                xs.append(int(r["step"]))
                ys.append(float(r[key]))
                se = r.get(f"{key}_se")
                ses.append(float(se) if se is not None else None)
        for split, (xs, ys, ses) in sorted(series.items()):
            line = ax.plot(
                xs, ys, marker="o" if split == "eval" else None, markersize=3, label=split
            )[0]
            if all(se is not None for se in ses):
                low = [y - (se or 0.0) for y, se in zip(ys, ses, strict=True)]
                high = [y + (se or 0.0) for y, se in zip(ys, ses, strict=True)]
                ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("optimizer step")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True
