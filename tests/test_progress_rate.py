"""Rates a user can read: results land in unit-sized bursts, and neither the dashboard's
chart nor the terminal's progress line should show that comb as the rate."""

from __future__ import annotations

import datetime as dt
import io

import pytest

from docbatch.domain.stats import progress
from docbatch.progress import ProgressBar, RateMeter, counts_table

pytestmark = pytest.mark.fast

T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _bursts(every: int, size: int, seconds: int, bucket: int) -> list[dict]:
    """``throughput`` rows for a worker writing ``size`` results every ``every`` seconds."""
    return [
        {"t": (T0 + dt.timedelta(seconds=t)).isoformat(), "task": "tags", "documents": size}
        for t in range(every, seconds + 1, every)
        if t % bucket == 0
    ]


def test_progress_smooths_unit_bursts_into_the_real_rate():
    # 30 documents every 12 s is 2.5 docs/s; in 2 s buckets that is 15 docs/s then nothing.
    data = _bursts(every=12, size=30, seconds=240, bucket=2)
    raw = {d["documents"] / 2 for d in data}
    assert raw == {15.0}
    series = progress(data, bucket_seconds=2, window_seconds=30)
    times = [s["t"] for s in series]
    assert times == sorted(times) and len(times) == (240 - 12) // 2 + 1  # gaps filled
    assert [s["done"] for s in series] == sorted(s["done"] for s in series)
    assert series[-1]["done"] == 30 * 20
    steady = [s["rate"] for s in series[15:]]  # after the first window
    assert min(steady) >= 2.5 * 0.7 and max(steady) <= 2.5 * 1.4


def test_progress_is_per_task_and_empty_without_results():
    assert progress([], 2, 30) == []
    t = T0.isoformat()
    series = progress(
        [{"t": t, "task": "tags", "documents": 4}, {"t": t, "task": "embed", "documents": 2}],
        2,
        30,
    )
    assert {(s["task"], s["done"], s["rate"]) for s in series} == {
        ("tags", 4, 2.0),
        ("embed", 2, 1.0),
    }


def test_terminal_rate_and_eta_follow_the_average_not_the_bursts():
    meter = RateMeter(window=20)
    done = 0
    for tick in range(0, 61 * 4):  # polled every 0.25 s for 61 s; 30 results every 12 s
        now = tick / 4
        if tick and tick % 48 == 0:
            done += 30
        meter.add(now, done)
    assert meter.rate() == pytest.approx(2.5, rel=0.3)
    assert meter.eta(100) == pytest.approx(40, rel=0.3)
    assert RateMeter().rate() is None  # nothing finished yet: no rate, no ETA


def test_progress_line_shows_rate_and_eta_and_final_table():
    out = io.StringIO()
    bar = ProgressBar(out)
    counts = {"tags": {"total": 10, "succeeded": 0, "failed": 0, "cancelled": 0}}
    bar.update({"status": "running", "counts": counts})
    bar.meter.samples[0] = (bar.meter.samples[0][0] - 4.0, 0)  # as if 4 s ago
    counts["tags"]["succeeded"] = 4
    bar.update({"status": "running", "counts": counts})
    last = out.getvalue().splitlines()[-1]
    assert "4/10" in last and "/s" in last and "ETA" in last
    table = counts_table(
        {
            "tags": {
                "total": 396,
                "succeeded": 395,
                "failed": 1,
                "cancelled": 0,
                "chunks": 1300,
                "tokens": 112345,
            },
            "summarize": {
                "total": 396,
                "succeeded": 396,
                "failed": 0,
                "cancelled": 0,
                "chunks": 9000,
                "tokens": 120000,
            },
        },
        seconds=50.0,
    ).splitlines()
    assert table[0].split() == [
        "task",
        "succeeded",
        "failed",
        "cancelled",
        "total",
        "chunks",
        "tokens",
        "docs/s",
    ]
    assert table[1].split() == ["tags", "395", "1", "0", "396", "1,300", "112,345", "7.9"]
    assert table[2].split()[0] == "summarize"
    assert len({len(line) for line in table}) == 1  # columns aligned (right-justified)
