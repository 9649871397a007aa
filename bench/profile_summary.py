"""Summarise a ``py-spy record -f raw`` file as a small text profile (inclusive % per frame).

py-spy record -p PID -d 15 -f raw -o /tmp/worker.raw
python -m bench.profile_summary /tmp/worker.raw --match docbatch,schema/,worker/ > out.txt
"""

from __future__ import annotations

import argparse
import collections


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("raw")
    p.add_argument("--top", type=int, default=40)
    p.add_argument("--match", default="", help="comma-separated substrings of frames to keep")
    args = p.parse_args(argv)
    keep = [m for m in args.match.split(",") if m]
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    with open(args.raw, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            own[frames[-1]] += n
            for f in set(frames):
                if not keep or any(k in f for k in keep):
                    inclusive[f] += n
    print(f"samples: {total}\n\ninclusive (frames matching {keep or 'all'}):")
    for f, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {f[:140]}")
    print("\nself time (leaf frames):")
    for f, n in own.most_common(15):
        print(f"{100 * n / total:5.1f}%  {f[:140]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
