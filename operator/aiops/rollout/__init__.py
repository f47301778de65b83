"""The ModelDeployment rollout: validate, check GPUs, deploy Triton, load, health-check, promote or
roll back (seed 2.1). `reconciler` drives it; the other modules are the pure parts."""
