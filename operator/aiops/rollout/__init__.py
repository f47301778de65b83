"""The ModelDeployment rollout: validate, check GPUs, deploy Triton, load, health-check, promote or
roll back. `reconciler` drives it; the other modules are the pure parts."""
