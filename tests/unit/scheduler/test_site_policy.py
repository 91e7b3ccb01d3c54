"""The cadence policy per site (issue 22): the site profile's hours, slots, closures and
quiet hours, then its own cadence overrides, laid over the policy file's rules."""

from __future__ import annotations

from datetime import date, time

import pytest

from common.sites import SiteError, Sites
from services.scheduler.policy import DEFAULT_POLICY_PATH, CadencePolicy

SITES = """\
sites:
  sofia:
    timezone: Europe/Sofia
    holidays_country: BG
    closures: [2026-12-24]
    business_hours: {mon: "09:00-19:00", tue: "09:00-19:00", wed: "09:00-19:00",
                     thu: "09:00-19:00", fri: "09:00-18:00", sat: "10:00-14:00", sun: null}
    quiet_hours: {hours: "20:00-09:00", channels: [sms, email]}
    escalation: {supervisor_id: sof-supervisor}
    cadence:
      defaults: {max_attempts: 4}
      departments:
        physio: {max_attempts: 2}
  vilnius:
    timezone: Europe/Vilnius
"""


def test_a_site_reads_its_profile_and_overrides_over_the_file() -> None:
    policy = CadencePolicy.load(DEFAULT_POLICY_PATH)
    policy.adopt_sites(Sites.from_text(SITES))
    base = policy.rules_for("surgery", "no_show")
    sofia = policy.rules_for("surgery", "no_show", "sofia")
    assert base.country == "LT" and sofia.country == "BG"
    assert sofia.business_hours["sat"] is not None and base.business_hours["sat"] is None
    assert sofia.quiet_hours.hours.start == time(20, 0)
    assert sofia.escalation.supervisor_id == "sof-supervisor"
    assert sofia.max_attempts == 4 and base.max_attempts == 6
    assert policy.rules_for("physio", "no_show", "sofia").max_attempts == 2
    assert sofia.closed_on(date(2026, 12, 24)) and sofia.closed_on(date(2026, 3, 3))  # BG day
    assert not base.closed_on(date(2026, 3, 3))
    # A site without overrides, or no site: the file's own rules.
    assert policy.rules_for("surgery", "no_show", "vilnius") == base
    assert policy.rules_for("surgery", "no_show", None) is base


def test_a_wrong_site_override_is_refused_and_the_rules_in_force_stay() -> None:
    policy = CadencePolicy.load(DEFAULT_POLICY_PATH)
    policy.adopt_sites(Sites.from_text(SITES))
    wrong = SITES.replace("{max_attempts: 4}", "{max_attempts: 0}")
    with pytest.raises(SiteError, match=r"sites.yaml: sites.sofia.cadence: max_attempts: "):
        policy.adopt_sites(Sites.from_text(wrong, "sites.yaml"))
    assert policy.rules_for("surgery", "no_show", "sofia").max_attempts == 4
