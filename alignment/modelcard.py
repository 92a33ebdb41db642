"""A short model card written next to every trained model.

A saved model should say what it is without its training logs: base model, data, how many
steps, the validation numbers and the exact configuration that produced it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def model_card(
    *,
    title: str,
    summary: str,
    base_model: str,
    data: Sequence[str],
    training: Mapping[str, object],
    validation: Mapping[str, object],
    config_yaml: str,
) -> str:
    """Markdown text of the card."""
    lines = [f"# {title}", "", summary, "", f"- base model: `{base_model}`"]
    lines += ["", "## Data", ""] + [f"- {line}" for line in data]
    lines += ["", "## Training", ""] + [f"- {k}: {_fmt(v)}" for k, v in training.items()]
    lines += ["", "## Validation", ""] + [f"- {k}: {_fmt(v)}" for k, v in validation.items()]
    lines += ["", "## Configuration", "", "```yaml", config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)
