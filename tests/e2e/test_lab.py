"""A small outcome lab: one seeded population under the status quo (one call, never again)
and under followup's default policy, each through the three real services. The default
policy must bring back at least twice as many patients before their stage deadline, and no
run may contact anyone after an opt-out, in quiet hours, after a death or after a deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

from demo.lab import render
from demo.lab.lab import LabConfig, LabResult, run_lab

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(480)]


@pytest.fixture(scope="module")
def lab(
    tmp_path_factory: pytest.TempPathFactory, kafka_bootstrap: str, database_url: str
) -> LabResult:
    config = LabConfig(
        # 120 patients, every slip on one day, two weeks at four virtual hours a second.
        patients=120,
        weeks=2,
        seeds=(3,),
        speed=14400.0,
        output=Path(tmp_path_factory.mktemp("lab")),
        show_progress=False,
        kafka=kafka_bootstrap,
        database_url=database_url,
    )
    return run_lab(config, say=lambda _: None)


def test_default_policy_recovers_twice_the_status_quo(lab: LabResult) -> None:
    by = {o.policy: o for o in lab.outcomes}
    quo, default = by["status quo"], by["followup default"]
    assert quo.slipped > 0 and default.slipped > 0
    assert default.recovered_before_deadline >= 2 * quo.recovered_before_deadline, (
        quo.recovered_before_deadline,
        default.recovered_before_deadline,
    )
    assert default.recovered_before_deadline <= default.reachable_maximum
    # The status quo makes one call per case and nothing else.
    assert quo.messages == 0
    assert quo.call_tasks <= quo.slipped * 2


@pytest.mark.parametrize(
    "check", ["after_opt_out", "in_quiet_hours", "after_death", "after_deadline"]
)
def test_no_unsafe_contact_under_any_policy(lab: LabResult, check: str) -> None:
    assert {o.policy: o.safety[check] for o in lab.outcomes} == {
        "status quo": 0,
        "followup default": 0,
    }


def test_the_report_is_written(lab: LabResult) -> None:
    written = render.write(lab, lab.config.output)
    assert written["html"].read_text().count("data:image/png;base64,") == 3
    assert "rebooked before their stage deadline" in render.table(lab)
