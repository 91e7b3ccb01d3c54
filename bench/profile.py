"""Summarises py-spy's collapsed stacks (``FOLLOWUP_BENCH_PROFILE``): the functions with the
most samples on the stack (inclusive) and on top (self), as a share of all samples.

``python -m bench.profile <file.txt> [--top N] [--match TEXT]``
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def summarise(path: Path, top: int = 25, match: str = "") -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if match and not any(match in frame for frame in frames):
            continue
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    lines = [f"{path.name}: {total} samples" + (f" with {match!r} on the stack" if match else "")]
    for title, counter in (("inclusive", inclusive), ("self", own)):
        lines.append(f"-- {title}")
        for frame, count in counter.most_common(top):
            lines.append(f"{100 * count / max(total, 1):5.1f}%  {frame}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--match", default="")
    args = parser.parse_args(argv)
    for path in args.files:
        print(summarise(path, args.top, args.match))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
