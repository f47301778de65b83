"""The project's own worker: programs that run in Job pods (`aiops worker ...`), not in the
operator process.

Heavy or risky work — starting a Triton server, running a model on samples — happens here, in a
pod the operator can give a deadline and throw away; the result goes back to the operator through
the Kubernetes API (the container's termination message), never through shared disk.
"""
