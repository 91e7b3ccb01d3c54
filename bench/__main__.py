"""`make bench`: every benchmark prints its figures next to a baseline measured in the same run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from bench import codec_bench, scheduler_bench, tracker_bench
from bench.harness import Figure, Reading

SUITES: dict[str, Callable[[], Sequence[Figure | Reading]]] = {
    "codec": codec_bench.run,
    "tracker": tracker_bench.run,
    "scheduler": scheduler_bench.run,
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"{', '.join(SUITES)} (all)")
    wanted = parser.parse_args(argv).suites or list(SUITES)
    if unknown := [name for name in wanted if name not in SUITES]:
        parser.error(f"no suite {unknown[0]!r}; choose from {', '.join(SUITES)}")
    for name in wanted:
        print(f"== {name}")
        for figure in SUITES[name]():
            print(figure.line())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
