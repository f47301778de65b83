"""How a new version takes over in the running Triton pods: beside the serving one, or in its
place. Triton loads a new version list before it unloads what left it, so "beside" needs room
for both on each GPU. An LLM engine takes a fixed share of each GPU's memory when it loads
(vLLM's gpu_memory_utilization, 0.9 unless model.json says less; TensorRT-LLM's KV cache takes
0.9 of what is free by default), so two versions of a large model do not fit: the serving one is
unloaded first, and the time nothing answers is measured and stated (status.history, an Event),
unless a node has room for a new pod: then the rollout surges new pods made for the new version
beside the serving ones (deploy.py), and nothing stops answering.
A failed load then ends the rollout, and the rollback loads the serving version back by the same
rule, so a failed load never leaves nothing serving for longer than that reload."""

from __future__ import annotations

from typing import Literal

from aiops.api.modeldeployment import LLM_GPU_ENGINES, ModelDeploymentSpec

Swap = Literal["Beside", "Replace"]  # and "Surge", decided by the rollout where a node has room
ENGINE_DEFAULT_SHARE = 0.9  # vLLM's gpu_memory_utilization and TensorRT-LLM's free-memory fraction
BESIDE_LIMIT = 0.95  # two versions' shares at most this much of a GPU: the rest is CUDA's own


def swap_strategy(spec: ModelDeploymentSpec) -> tuple[Swap, str]:
    """(how versions swap in the running pods, why), from what the spec says each version takes
    of a GPU: the engine's default share, or llm.gpuMemoryUtilization (for a Python model too)."""
    llm = spec.llm
    if llm is None or spec.resources.gpus == 0 or (llm.engine not in LLM_GPU_ENGINES
                                                   and llm.gpu_memory_utilization is None):
        return "Beside", "the model is loaded beside the serving version"
    share = llm.gpu_memory_utilization or ENGINE_DEFAULT_SHARE
    if 2 * share <= BESIDE_LIMIT:
        return "Beside", f"two versions take {2 * share:.0%} of each GPU's memory (llm.gpuMemoryUtilization)"
    return "Replace", (f"one version takes {share:.0%} of each GPU's memory (llm.gpuMemoryUtilization"
                       f"{'' if llm.gpu_memory_utilization else ', the engine default'}), so two do not fit: "
                       "the serving version is unloaded first")
