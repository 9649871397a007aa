"""Workers sharing a host's cores take their share of threads instead of all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from schema.settings import Settings
from tests.fixtures import ROOT
from worker.threads import available_cores, worker_threads


def test_default_threads_are_the_workers_share_of_the_cores():
    cores = available_cores()
    assert worker_threads(Settings(workers_per_host=1, torch_threads=0)) == cores
    assert worker_threads(Settings(workers_per_host=cores, torch_threads=0)) == 1
    assert worker_threads(Settings(workers_per_host=cores * 3, torch_threads=0)) == 1  # never zero
    assert worker_threads(Settings(workers_per_host=3, torch_threads=5)) == 5  # explicit wins


def test_worker_process_applies_the_limit_before_the_model_loads():
    """What a deployed worker does at start (worker.tasks.load_pinned_handler)."""
    code = (
        "import json, os, torch\n"
        "from schema.settings import get_settings\n"
        "from worker.threads import apply_thread_limits\n"
        "n = apply_thread_limits(get_settings())\n"
        "print(json.dumps({'n': n, 'torch': torch.get_num_threads(),"
        " 'omp': os.environ.get('OMP_NUM_THREADS'),"
        " 'tok': os.environ.get('TOKENIZERS_PARALLELISM')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCBATCH_", "OMP_"))}
    env.pop("TOKENIZERS_PARALLELISM", None)
    env["DOCBATCH_WORKERS_PER_HOST"] = str(available_cores() * 4)  # more workers than cores
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got == {"n": 1, "torch": 1, "omp": "1", "tok": "false"}
