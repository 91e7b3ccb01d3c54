"""`make bench`: every benchmark prints its figures next to a baseline measured in the same
run, and writes them as ``.cache/bench/<suite>.json`` and ``.cache/bench/<suite>.png``.

``python -m bench [--big] [--out DIR] [suite ...]``; ``--big`` runs the sizes the issue's
table names (1,000,000 tracked / open cases, a 100,000-event feed), far beyond the default
15-minute budget of a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench import (
    codec_bench,
    e2e_bench,
    notifier_bench,
    report,
    scheduler_bench,
    sites_bench,
    tracker_bench,
    tracker_ops_bench,
    tracker_restore_bench,
)
from bench.harness import Result

SUITES: dict[str, Callable[[bool], Sequence[Result]]] = {
    "codec": lambda big: codec_bench.run(),
    "tracker": lambda big: tracker_bench.run(big=big),
    "tracker-ops": lambda big: tracker_ops_bench.run(big=big),
    "tracker-restore": lambda big: tracker_restore_bench.run(big=big),
    "scheduler": lambda big: scheduler_bench.run(big=big),
    "notifier": lambda big: notifier_bench.run(),
    "e2e": lambda big: e2e_bench.run(),
    "sites": lambda big: sites_bench.run(big=big),
}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("suites", nargs="*", metavar="SUITE", help=f"{', '.join(SUITES)} (all)")
    parser.add_argument("--big", action="store_true", help="the issue's full sizes")
    parser.add_argument("--out", type=Path, default=report.DEFAULT_DIR)
    args = parser.parse_args(argv)
    unknown = [s for s in args.suites if s not in SUITES]
    if unknown:
        parser.error(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}")
    for name in args.suites or list(SUITES):
        print(f"== {name}", flush=True)
        results = SUITES[name](args.big)
        for result in results:
            print(result.line(), flush=True)
        print(f"   -> {report.write(name, results, args.out)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
