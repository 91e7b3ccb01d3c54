"""The CI-sized fault run: the clinic scenario, small, as a chain of three sites, while each
service is SIGKILLed at random moments and restarted; every invariant must hold, per site
too. ``make faults`` runs every kind."""

from __future__ import annotations

import pytest

from tests.faults.suite import FaultConfig, describe, run_fault

pytestmark = [pytest.mark.integration, pytest.mark.e2e]


async def test_kill9_of_each_service_breaks_no_invariant() -> None:
    result = await run_fault(FaultConfig("kill9", patients=12, days=2, kills=4, seed=5))
    figures = result.verdict.figures
    assert figures["no_shows_expected"] > 0
    assert len(result.injected) == 4  # the faults really happened
    assert result.held, "\n".join(describe(result))
    assert figures["no_shows_detected"] == figures["no_shows_expected"]
    assert figures["false_no_show_cases"] == 0
    assert figures["max_deliveries_per_key"] == 1
    assert figures["lost_triggers"] == 0
    # Each of the three sites had cases of its own, and none broke a per-site invariant.
    assert set(figures["cases_per_site"]) == {"vilnius", "kaunas", "riga"}
    assert figures["site_breaches"] == 0
