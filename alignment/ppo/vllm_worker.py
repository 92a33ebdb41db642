"""Methods mixed into every vLLM worker so the PPO trainer can push weights by method name.

vLLM's engine core runs in another process (V1 multiprocessing) and refuses to serialise a
Python callable for ``LLM.apply_model`` / ``collective_rpc`` unless
``VLLM_ALLOW_INSECURE_SERIALIZATION=1`` re-enables pickle between the processes. ragkit does not
switch pickle on behind the user's back. Instead the engine is started with
``worker_extension_cls`` naming :class:`RolloutWorkerExtension` (vLLM mixes it into its worker
class) and the trainer calls ``collective_rpc("ragkit_load_weights", args=(weights,))``: a
method name, a string and a list of ``(name, tensor)`` pairs, all of which vLLM's msgpack
encoder carries natively. The same pattern as vLLM's own RLHF examples, OpenRLHF and NeMo-RL.

This module must stay importable inside a vLLM worker: it imports nothing from vLLM and only
torch at call time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

WORKER_EXTENSION = "alignment.ppo.vllm_worker.RolloutWorkerExtension"
"""The qualified name handed to ``vllm.LLM(worker_extension_cls=...)``."""


def _worker_model(worker: Any) -> Any:
    """The ``nn.Module`` a vLLM worker runs (``get_model()`` where the worker has it)."""
    get = getattr(worker, "get_model", None)
    if callable(get):
        return get()
    return worker.model_runner.model


class RolloutWorkerExtension:
    """Mixed into vLLM's worker class; ``self`` is the worker. Subclass it to add methods of
    your own and pass the subclass as the rollout engine's ``worker_extension_cls``."""

    def ragkit_load_weights(self, weights: Sequence[Sequence[Any]]) -> int:
        """Load ``(transformers name, tensor)`` pairs with the model's own ``load_weights``
        (which also shards them for tensor parallelism); returns how many were sent."""
        pairs = [(str(name), tensor) for name, tensor in weights]
        _worker_model(self).load_weights(weights=pairs)
        return len(pairs)

    def ragkit_weight(self, name: str) -> Any:
        """One parameter as a float32 CPU tensor (this worker's shard), for checks."""
        parameters = dict(_worker_model(self).named_parameters())
        if name not in parameters:
            raise KeyError(f"the vLLM model has no parameter {name!r}")
        return parameters[name].detach().float().cpu()
