"""Harnesses the tests and the benchmarks share (bench/ puts tests/ on sys.path): a real Triton
serving a model whose faults switch at run time, and synthetic traffic for the analysis."""
