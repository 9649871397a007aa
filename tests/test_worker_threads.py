"""Workers sharing a host's cores take their share of threads instead of all of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from docbatch.schema.settings import Settings
from docbatch.worker.threads import CoreShare, available_cores, cgroup_cpu_limit, worker_threads
from tests.fixtures import ROOT


@pytest.mark.fast
def test_default_threads_are_the_workers_share_of_the_cores():
    cores = available_cores()
    assert worker_threads(Settings(workers_per_host=1, torch_threads=0)) == cores
    assert worker_threads(Settings(workers_per_host=cores, torch_threads=0)) == 1
    assert worker_threads(Settings(workers_per_host=cores * 3, torch_threads=0)) == 1  # never zero
    assert worker_threads(Settings(workers_per_host=3, torch_threads=5)) == 5  # explicit wins


def _apply_in_a_new_process(extra: dict[str, str]) -> dict[str, object]:
    """What a deployed worker does at start (docbatch.worker.tasks.load_stage): the limits,
    then torch (whose OpenMP reads its environment as it loads)."""
    code = (
        "import json, os\n"
        "from docbatch.schema.settings import get_settings\n"
        "from docbatch.worker.threads import apply_thread_limits\n"
        "n = apply_thread_limits(get_settings())\n"
        "import torch\n"
        "print(json.dumps({'n': n, 'torch': torch.get_num_threads(),"
        " 'omp': os.environ.get('OMP_NUM_THREADS'),"
        " 'wait': os.environ.get('OMP_WAIT_POLICY'),"
        " 'tok': os.environ.get('TOKENIZERS_PARALLELISM')}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DOCBATCH_", "OMP_"))}
    env.pop("TOKENIZERS_PARALLELISM", None)
    env["DOCBATCH_WORKERS_PER_HOST"] = str(available_cores() * 4)  # more workers than cores
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**env, **extra},
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_worker_process_applies_the_limit_before_the_model_loads():
    got = _apply_in_a_new_process({})
    assert got == {"n": 1, "torch": 1, "omp": "1", "wait": "PASSIVE", "tok": "false"}
    # An operator's own OpenMP wait policy (dedicated cores: ACTIVE) is kept.
    assert _apply_in_a_new_process({"OMP_WAIT_POLICY": "ACTIVE"})["wait"] == "ACTIVE"


@pytest.mark.fast
def test_a_cgroup_cpu_quota_lowers_the_cores(tmp_path):
    """A container's `cpus: 1.5` / a pod's CPU limit is a CFS quota, which affinity hides."""
    v2, v1 = tmp_path / "cpu.max", tmp_path / "v1" / "cpu.cfs_quota_us"
    v1.parent.mkdir()
    missing = tmp_path / "none"
    v2.write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2, missing) == 2  # 1.5 CPUs: two threads, rounded up
    v2.write_text("max 100000\n")
    assert cgroup_cpu_limit(v2, missing) is None
    v1.write_text("300000\n")
    (v1.parent / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(missing, v1) == 3
    v1.write_text("-1\n")  # cgroup v1's "no limit"
    assert cgroup_cpu_limit(missing, v1) is None
    assert cgroup_cpu_limit(missing, missing) is None


HOLDER = (
    "import sys, time\n"
    "from pathlib import Path\n"
    "from docbatch.worker.threads import CoreShare\n"
    "share = CoreShare(Path(sys.argv[1]), 4)\n"
    "with share.busy():\n"
    "    print(share.threads, flush=True)\n"
    "    time.sleep(60)\n"
)


def test_busy_workers_split_the_cores_and_a_killed_one_frees_its_share(tmp_path):
    folder = tmp_path / "cores"
    me = CoreShare(folder, 4)
    assert me.busy_workers() == 0
    with me.busy():
        assert me.threads == 4  # alone: every core
    holders = []
    try:
        for expected in ("4", "2"):  # the second holder sees me idle and the first busy
            p = subprocess.Popen(
                [sys.executable, "-c", HOLDER, str(folder)],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            holders.append(p)
            line = p.stdout.readline().strip() if p.stdout else ""
            assert line == expected
        assert me.busy_workers() == 2
        with me.busy():
            assert me.busy_workers() == 3
            assert me.threads == 1  # 4 // 3
            holders[0].kill()  # SIGKILL: no clean-up ran, its lock went with it
            holders[0].wait()
            assert me.busy_workers() == 2
            assert me.rebalance() == 2
        assert me.busy_workers() == 1
        assert not me.marker.exists()
    finally:
        for p in holders:
            p.kill()
            p.wait()
