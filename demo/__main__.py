"""`make demo`: a clinic running end to end on an accelerated clock, then its report.

Starts (when missing) Kafka and PostgreSQL, a real SMTP server, a Twilio-format SMS
stand-in and a webhook receiver for call tasks, the three services as separate processes
sharing one scaled clock, and the clinic simulator; prints progress, the report as a
table and writes it as JSON; removes the run's topics and schemas at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from demo import report
from demo.run import DemoConfig, run_demo


def parse_args(argv: list[str]) -> DemoConfig:
    defaults = DemoConfig()
    parser = argparse.ArgumentParser(prog="python -m demo", description=__doc__)
    parser.add_argument("--patients", type=int, default=defaults.patients)
    parser.add_argument("--days", type=int, default=defaults.days, help="virtual days to run")
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--speed", type=float, default=defaults.speed, help="virtual seconds per real second"
    )
    parser.add_argument("--output", type=Path, default=defaults.output)
    parser.add_argument(
        "--keep", action="store_true", help="keep the run's topics and schemas afterwards"
    )
    parser.add_argument(
        "--any-ports", action="store_true", help="free ports instead of 8081-8083 and 2575"
    )
    parser.add_argument("--kafka", default=defaults.kafka)
    parser.add_argument("--database-url", default=defaults.database_url)
    args = parser.parse_args(argv)
    return DemoConfig(
        patients=args.patients,
        days=args.days,
        seed=args.seed,
        speed=args.speed,
        output=args.output,
        keep=args.keep,
        demo_ports=not args.any_ports,
        kafka=args.kafka,
        database_url=args.database_url,
        workflow=True,  # issue 18's clinic: cancellations, a holiday, a full desk, a child...
        sites=True,  # issue 22: three clinics in two countries, every check per site
        chat=True,  # issue 21: patients on WhatsApp, Telegram, Viber; feedback; education; audit
        rebooking=True,  # issue 20: patients rebook by link against a real FHIR R4 server
    )


def main(argv: list[str] | None = None) -> int:
    config = parse_args(sys.argv[1:] if argv is None else argv)
    result = asyncio.run(run_demo(config))
    print(report.table(result.report, result.findings, result.where))
    if result.simulation_errors:
        print(f"\n{len(result.simulation_errors)} clinic actions failed, e.g.:")
        for line in result.simulation_errors[:5]:
            print(f"  {line}")
    print(f"\nreal time: {result.real_seconds:.0f} s")
    return 0 if all(f.ok for f in result.findings) else 1


if __name__ == "__main__":
    sys.exit(main())
