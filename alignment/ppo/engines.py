"""Rollout engines: a second copy of the policy's weights that samples PPO's responses.

Generation is the dominant cost of RLHF on a GPU, and ``transformers.generate`` is its slowest
option; the large open RLHF systems sample with an inference engine (vLLM) that holds its own
copy of the weights and receives the policy's weights after every update. ``PPOTrainer`` takes
such an engine (``rollout_engine=``); without one it samples with the policy itself.

Decisions:

* **The engine only chooses tokens.** The old log-probs, the reference log-probs and the values
  are recomputed by the training model on exactly those tokens (as without an engine), so the
  engine's numerics (bf16 kernels, paged attention) can make a rollout very slightly off-policy
  but never make PPO's ratio or KL inconsistent. Engine log-probs are not used.
* **Weights are pushed lazily**: before a rollout, when the policy has changed since the last
  push (every update, after a resume, at the start). LoRA adapters are merged into a copy first
  (the engine holds plain weights); rows of the embedding and LM head beyond the engine's
  vocabulary (the trainer's added pad token) are dropped: the pad id is never sampled.
* **Prompts go in as token ids, without padding**; responses come back as ids and are cut at
  EOS / stop strings by the same code as the in-process path (:mod:`.rollout`), so rewards,
  masks and the no-EOS penalty cannot differ between the two.
* **Seeds**: each call gets one seed (derived from ``config.seed``, the process and the update),
  so a resumed run samples the same responses; vLLM uses ``seed + row`` per request.

Engines here: :class:`TransformersRolloutEngine` (a separate transformers model, e.g. a bf16
copy on another device; also the reference implementation the tests check the trainer against)
and :class:`VLLMRolloutEngine` (vLLM's in-process ``LLM``; needs ``ragkit[vllm]`` and a GPU).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from alignment.backbone import merged_copy
from alignment.ppo.rollout import left_pad, plain_sampling
from alignment.ppo.vllm_worker import WORKER_EXTENSION

Weights = list[tuple[str, torch.Tensor]]


@runtime_checkable
class RolloutEngine(Protocol):
    """What the trainer needs from an engine (any object with these members)."""

    @property
    def vocab_size(self) -> int | None:
        """Rows the engine's embedding takes (None: as many as the policy has)."""
        ...

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop_token_ids: Sequence[int],
        seed: int,
    ) -> list[list[int]]:
        """Sampled response ids per prompt (plain sampling at ``temperature``, no top-k/top-p),
        ending with the stop token when one was sampled, at most ``max_new_tokens`` long."""
        ...

    def load_weights(self, weights: Weights) -> None:
        """Replace the engine's weights by these (transformers parameter names)."""
        ...


def policy_weights(policy: nn.Module, vocab_size: int | None = None) -> Weights:
    """The policy's weights as ``(name, tensor)`` pairs, LoRA merged, detached.

    Tensors whose first dimension is the policy's vocabulary (input embedding, LM head) are cut
    to ``vocab_size`` rows when that is smaller.
    """
    plain = merged_copy(policy)
    embeddings = plain.get_input_embeddings()  # type: ignore[operator]
    rows = int(embeddings.num_embeddings)
    out: Weights = []
    for name, tensor in plain.state_dict().items():
        value = tensor.detach()
        if vocab_size is not None and vocab_size < rows and value.ndim and value.shape[0] == rows:
            value = value[:vocab_size]
        out.append((name, value))
    return out


class TransformersRolloutEngine:
    """A separate transformers causal LM that samples rollouts (e.g. bf16, on another device).

    :meth:`copy_of` builds one from the policy. With the same dtype and device, it samples with
    the same kernels as the policy; the trainer's tests rely on that.
    """

    def __init__(self, model: nn.Module, pad_token_id: int) -> None:
        self.model = model.eval().requires_grad_(False)
        self.pad_token_id = int(pad_token_id)

    @classmethod
    def copy_of(
        cls,
        policy: nn.Module,
        pad_token_id: int,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> TransformersRolloutEngine:
        """An engine holding a plain copy of ``policy`` (LoRA merged), cast and moved if asked."""
        plain = merged_copy(policy)
        model = copy.deepcopy(plain) if plain is policy else plain
        if dtype is not None:
            model = model.to(dtype=dtype)
        if device is not None:
            model = model.to(device)
        return cls(model, pad_token_id)

    @property
    def device(self) -> torch.device:
        """Where the engine's weights are."""
        return next(self.model.parameters()).device

    @property
    def vocab_size(self) -> int | None:
        """Rows of the engine's input embedding."""
        return int(self.model.get_input_embeddings().num_embeddings)  # type: ignore[operator]

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop_token_ids: Sequence[int],
        seed: int,
    ) -> list[list[int]]:
        """One left-padded batched ``generate`` call under a forked RNG seeded with ``seed``."""
        if not prompts:
            return []
        empty = [row for row, prompt in enumerate(prompts) if not prompt]
        if empty:
            raise ValueError(f"prompt {empty[0]} has no tokens")
        ids, mask = left_pad(prompts, self.pad_token_id)
        width = ids.shape[1]
        config = plain_sampling(temperature, max_new_tokens, stop_token_ids, self.pad_token_id)
        device = self.device
        generate: Any = getattr(self.model, "generate")  # noqa: B009 - nn.Module typing hides it
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            out = generate(
                input_ids=ids.to(device), attention_mask=mask.to(device), generation_config=config
            )
        stops = set(int(s) for s in stop_token_ids)
        responses: list[list[int]] = []
        for row in out[:, width:].tolist():
            end = next((i + 1 for i, token in enumerate(row) if token in stops), len(row))
            responses.append(row[:end])
        return responses

    @torch.no_grad()
    def load_weights(self, weights: Weights) -> None:
        """Copy each named tensor into the engine's model (refusing unknown names or shapes)."""
        state = self.model.state_dict()
        for name, value in weights:
            if name not in state:
                raise KeyError(f"the rollout engine's model has no weight {name!r}")
            target = state[name]
            if target.shape != value.shape:
                raise ValueError(
                    f"weight {name}: the engine has shape {tuple(target.shape)}, the policy "
                    f"sent {tuple(value.shape)}"
                )
            target.copy_(value.to(device=target.device, dtype=target.dtype))


class VLLMRolloutEngine:
    """vLLM's in-process ``LLM`` as the rollout engine (``pip install 'ragkit[vllm]'``, a GPU).

    Wraps a :class:`~ragkit.generation.backends.VLLMGenerator` (its lazy import, GPU check and
    engine options). Weights reach every worker through ``collective_rpc`` and the method
    :class:`~alignment.ppo.vllm_worker.RolloutWorkerExtension` adds to vLLM's workers, which
    calls the model's own ``load_weights`` (transformers names, tensor-parallel sharding done by
    vLLM); no callable is pickled (see :mod:`alignment.ppo.vllm_worker`). They travel as CPU
    tensors: fine for small and mid-sized policies; very large ones want vLLM's NCCL/IPC
    weight-transfer paths, which are not wired here. vLLM's prefix caching is left to the engine
    options: after each weight push the cached prefixes are stale, so it is turned off unless
    asked for.
    """

    def __init__(self, generator: Any) -> None:
        self.generator = generator

    @classmethod
    def from_model(
        cls,
        model: str | None = None,
        *,
        dtype: str | None = None,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        enforce_eager: bool = False,
        require_gpu: bool = True,
        engine_options: dict[str, Any] | None = None,
    ) -> VLLMRolloutEngine:
        """An engine on ``model`` (None: the packaged SmolLM2; a hub id or folder otherwise)."""
        from alignment.backbone import DEFAULT_BACKBONE
        from ragkit.generation.backends import VLLMGenerator

        options = {
            "enable_prefix_caching": False,
            "worker_extension_cls": WORKER_EXTENSION,
            **(engine_options or {}),
        }
        generator = VLLMGenerator(
            model if model is not None else DEFAULT_BACKBONE,
            dtype=dtype,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
            require_gpu=require_gpu,
            engine_options=options,
        )
        return cls(generator)

    @property
    def vocab_size(self) -> int | None:
        """The engine model's vocabulary (from its config; starts the engine)."""
        _, llm = self.generator.engine()
        model_config = getattr(getattr(llm, "llm_engine", None), "model_config", None)
        get = getattr(model_config, "get_vocab_size", None)
        if callable(get):
            return int(get())
        value = getattr(getattr(model_config, "hf_config", None), "vocab_size", None)
        return int(value) if isinstance(value, int) else None

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        *,
        max_new_tokens: int,
        temperature: float,
        stop_token_ids: Sequence[int],
        seed: int,
    ) -> list[list[int]]:
        """One ``LLM.generate`` call; request ``i`` is seeded with ``seed + i``."""
        vllm, llm = self.generator.engine()
        params = [
            vllm.SamplingParams(
                n=1,
                temperature=temperature,
                top_p=1.0,
                top_k=0,
                min_p=0.0,
                repetition_penalty=1.0,
                max_tokens=max_new_tokens,
                min_tokens=0,
                stop_token_ids=list(stop_token_ids),
                seed=seed + i,
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        outputs = llm.generate(
            [{"prompt_token_ids": list(p)} for p in prompts], params, use_tqdm=False
        )
        stops = [int(s) for s in stop_token_ids]
        return [_response_ids(out.outputs[0], stops, max_new_tokens) for out in outputs]

    def load_weights(self, weights: Weights) -> None:
        """Push the weights into every worker (CPU tensors; vLLM shards them itself)."""
        _, llm = self.generator.engine()
        cpu = [(name, tensor.detach().to("cpu").contiguous()) for name, tensor in weights]
        llm.collective_rpc("ragkit_load_weights", args=(cpu,))


def _response_ids(completion: Any, stop_token_ids: Sequence[int], limit: int) -> list[int]:
    """A completion's token ids, with the stop token restored if vLLM left it out.

    vLLM reports a stop by token as ``finish_reason == "stop"`` with ``stop_reason`` the token
    id (or None for the model's EOS); the trainer needs the token itself to mark the row ended.
    """
    ids = [int(t) for t in completion.token_ids]
    if getattr(completion, "finish_reason", None) != "stop":
        return ids[:limit]
    if ids and ids[-1] in stop_token_ids:
        return ids[:limit]
    reason = getattr(completion, "stop_reason", None)
    if isinstance(reason, str):  # a stop string: not used for rollouts (no stop strings sent)
        return ids[:limit]
    token = int(reason) if isinstance(reason, int) else int(stop_token_ids[0])
    return [*ids, token][:limit]


def engine_seed(base: int, process: int, update: int) -> int:
    """The seed of one rollout call: distinct per process and update, stable across resumes."""
    return (base * 1_000_003 + process * 7_919 + update * 104_729) % (2**31 - 1)
