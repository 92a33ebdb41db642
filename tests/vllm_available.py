"""Whether the GPU-only vLLM tests can run here, and the reason they are skipped when not."""

from __future__ import annotations

from ragkit.generation.backends.vllm_engine import vllm_installed


def real_vllm() -> tuple[bool, str]:
    """``(True, "")`` where vLLM is installed and a CUDA GPU is visible, else the reason."""
    if not vllm_installed():
        return False, "vLLM is not installed (pip install 'ragkit[vllm]')"
    import torch

    if not torch.cuda.is_available():
        return False, "vLLM is installed but no CUDA GPU is visible"
    return True, ""
