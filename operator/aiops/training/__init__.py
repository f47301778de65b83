"""The built-in TrainingJob task: versioned training data, a text classifier on
the packaged MiniLM, training with checkpoints and memory techniques, 8-bit quantization and
pruning behind a quality gate, and export to a Triton model repository.

Run by `aiops worker train` in Job pods; the operator never imports torch.
"""
