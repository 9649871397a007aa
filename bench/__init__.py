"""Benchmarks: scripts that print figures (``python -m bench.run``, ``bench.unit_overhead``...).

The direct model calls a figure compares with run in the bench process under the same
OpenMP wait policy as the workers (docbatch.worker.threads sets it in each worker before
torch loads), set here before anything imports torch.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
