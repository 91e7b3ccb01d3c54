"""The notifier benchmark runs on a small size: every command of each channel reached its
server through the notifier process (the benchmark waits for each), and the bare loops
sent as many. No duration is asserted (the machine is shared)."""

from __future__ import annotations

import pytest

from bench.__main__ import SUITES
from bench.harness import Figure, Reading
from bench.notifier_bench import NotifierBench

pytestmark = pytest.mark.integration


async def test_notifier_bench_delivers_on_every_channel(
    kafka_bootstrap: str, database_url: str
) -> None:
    assert "notifier" in SUITES
    bench = NotifierBench(kafka_bootstrap, database_url, 20)
    results = await bench.figures()
    figures = [r for r in results if isinstance(r, Figure)]
    assert [f.name.split(" (")[0] for f in figures] == [
        "notifier: emails/s to aiosmtpd",
        "notifier: SMS/s to the stand-in",
        "notifier: call tasks/s to a webhook",
        "notifier: emails/s, smallest message",
    ]
    assert all(isinstance(f, Figure) and f.baseline_ops_per_second > 0 for f in figures)
    # 20 through the notifier, 20 from the bare loop, on each server (email: two loops).
    assert bench.mail.count == 60
    assert len(bench.sms.messages) == 40
    assert bench.tasks.count == 40
    # CPU per delivery, the notifier's and the servers', and each bare loop's.
    readings = [r for r in results if isinstance(r, Reading)]
    assert [r.name for r in readings] == [
        "notifier: CPU per email, with the server",
        "notifier: CPU per SMS, with the server",
        "notifier: CPU per call task, with the server",
    ]
    assert all(r.value > 0 and r.baseline_value > 0 for r in readings)
