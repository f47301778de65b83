"""TrainingJob runs: one Job per step, results into status."""
