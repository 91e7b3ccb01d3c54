"""The sites file (common/sites.py): validation with file:line, attribution, reload."""

from __future__ import annotations

import os
from datetime import time
from pathlib import Path

import pytest

from common.config import ConfigError, Settings
from common.sites import SiteError, SiteRegistry, Sites, UnknownSite

CHAIN = Path(__file__).parents[2] / "deploy" / "sites" / "chain.yaml"
SECRETS = {"FOLLOWUP_VILNIUS_WEBHOOK_SECRET": "whsec_test"}

TWO = """\
sites:
  vilnius:
    facilities: [VLN]
    timezone: Europe/Vilnius
  sofia:
    facilities: [SOF, Location/sofia-1]
    timezone: Europe/Sofia
"""


def test_the_chain_example_validates() -> None:
    sites = Sites.load(CHAIN, SECRETS)
    assert set(sites.profiles) == {"vilnius", "kaunas", "sofia"}
    sofia = sites.profiles["sofia"]
    assert sofia.zone.key == "Europe/Sofia"
    assert sofia.policy_overlay()["country"] == "BG"
    assert sofia.policy_overlay()["business_hours"]["sat"] == "10:00-14:00"


def test_attribution_by_id_or_facility_first_named_field_decides() -> None:
    sites = Sites.from_text(TWO)
    found = sites.attribute([("MSH-4", "SOF"), ("PV1-3.4", "VLN")])
    assert found is not None and found.id == "sofia"
    found = sites.attribute([("MSH-4", ""), ("PV1-3.4", "Location/sofia-1")])
    assert found is not None and found.id == "sofia"
    found = sites.attribute([("site", "vilnius")])
    assert found is not None and found.id == "vilnius"


def test_an_unknown_site_is_refused_naming_the_field() -> None:
    sites = Sites.from_text(TWO)
    with pytest.raises(UnknownSite) as caught:
        sites.attribute([("MSH-4", "RIGA"), ("PV1-3.4", "VLN")])
    assert caught.value.field == "MSH-4"
    assert "RIGA" not in str(caught.value)  # a name from the message is not echoed
    with pytest.raises(UnknownSite) as caught:
        sites.attribute([("MSH-4", ""), ("PV1-3.4", None)])
    assert caught.value.field == "MSH-4"


def test_a_default_site_takes_messages_that_name_none() -> None:
    sites = Sites.from_text(TWO + "default_site: vilnius\n")
    found = sites.attribute([("MSH-4", "")])
    assert found is not None and found.id == "vilnius"
    with pytest.raises(UnknownSite):
        sites.attribute([("MSH-4", "RIGA")])  # a wrong name is still wrong


def test_without_a_file_nothing_is_attributed() -> None:
    sites = Sites.implicit()
    assert not sites.explicit
    assert sites.attribute([("MSH-4", "anything")]) is None
    assert sites.label(None) == "none"


def test_metric_labels_are_bounded_by_the_file() -> None:
    sites = Sites.from_text(TWO)
    assert sites.label("sofia") == "sofia"
    assert sites.label("riga") == "other"


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (TWO.replace("Europe/Sofia", "Europe/Sofa"), 7, "sites.sofia.timezone: "),
        (TWO.replace("[SOF, Location/sofia-1]", "[SOF, VLN]"), 6, "'VLN' also names site"),
        (TWO + "    holidays_country: XX\n", 8, "sites.sofia.holidays_country"),
        (TWO + "    colour: blue\n", 8, "sites.sofia.colour: Extra inputs"),
        (TWO + "default_site: riga\n", 8, "default_site: not one of the sites"),
        ("sites:\n  Vilnius!:\n    timezone: UTC\n", 2, "sites.Vilnius!"),
        ("sites: [\n", 2, "not valid YAML"),
        (
            TWO + "    departments: [dental]\n    default_department: physio\n",
            9,
            "default_department: not one of the site's departments",
        ),
    ],
)
def test_a_wrong_file_names_the_line(text: str, line: int, words: str) -> None:
    with pytest.raises(SiteError) as caught:
        Sites.from_text(text, "sites.yaml")
    assert str(caught.value).startswith(f"sites.yaml:{line}: "), str(caught.value)
    assert words in str(caught.value)


def test_credentials_are_named_by_variable_never_inline() -> None:
    inline = TWO + "    call_task_sinks:\n      - {kind: webhook, url: 'https://x', secret: abc}\n"
    with pytest.raises(SiteError, match="secret: not a sink field; name a credential by its"):
        Sites.from_text(inline, "sites.yaml")
    named = TWO + "    call_task_sinks:\n      - {kind: webhook, url: 'https://x', secret_env: S}\n"
    with pytest.raises(SiteError, match="secret_env: S is not set"):
        Sites.from_text(named, "sites.yaml", environ={})
    sites = Sites.from_text(named, "sites.yaml", environ={"S": "whsec"})
    assert sites.profiles["sofia"].call_task_sinks[0].credential_variables() == {"secret_env": "S"}


def test_tokens_are_scoped_to_the_sites_that_name_them() -> None:
    text = TWO.replace("[VLN]", "[VLN]\n    api_token_env: T_VLN").replace(
        "sofia-1]", "sofia-1]\n    api_token_env: T_SOF"
    )
    sites = Sites.from_text(text)
    assert sites.tokens({"T_VLN": "v", "T_SOF": "s"}) == {
        "v": frozenset({"vilnius"}),
        "s": frozenset({"sofia"}),
    }
    assert sites.tokens({"T_VLN": "both", "T_SOF": "both"}) == {
        "both": frozenset({"vilnius", "sofia"})
    }
    assert sites.tokens({}) == {}


def test_the_registry_reloads_a_changed_file_and_keeps_the_last_good_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "sites.yaml"
    path.write_text(TWO)
    ticks = [0.0]
    heard: list[int] = []
    registry = SiteRegistry(path, recheck_seconds=5, monotonic=lambda: ticks[0])
    registry.on_change(lambda sites: heard.append(len(sites.profiles)))
    assert set(registry.current().profiles) == {"vilnius", "sofia"}

    path.write_text(TWO + "  kaunas:\n    timezone: Europe/Vilnius\n")
    os.utime(path, (1, 1))
    assert set(registry.current().profiles) == {"vilnius", "sofia"}  # not rechecked yet
    ticks[0] = 6.0
    assert set(registry.current().profiles) == {"vilnius", "sofia", "kaunas"}
    assert heard == [2, 3]

    path.write_text(TWO + "  riga:\n    timezone: Europe/Riga-ish\n")
    os.utime(path, (2, 2))
    ticks[0] = 12.0
    assert set(registry.current().profiles) == {"vilnius", "sofia", "kaunas"}  # refused
    assert heard == [2, 3]


def test_settings_without_a_file_give_the_implicit_site(tmp_path: Path) -> None:
    assert not Settings().site_registry().current().explicit
    wrong = tmp_path / "sites.yaml"
    wrong.write_text("sites: {}\n")
    with pytest.raises(ConfigError, match=r"sites.yaml:1: sites: "):
        Settings(sites_path=str(wrong)).site_registry()


def test_quiet_hours_read_as_local_times() -> None:
    sites = Sites.from_text(TWO + '    quiet_hours: {hours: "20:30-24:00"}\n')
    assert sites.profiles["sofia"].quiet_times() == (time(20, 30), time(23, 59))
    assert sites.profiles["vilnius"].quiet_times() is None
    with pytest.raises(SiteError, match=r"sites.yaml:8: sites.sofia.quiet_hours.hours: hours are"):
        Sites.from_text(TWO + '    quiet_hours: {hours: "25:00-08:00"}\n', "sites.yaml")


def test_a_sites_sms_sender_is_a_number_or_an_alphanumeric_id() -> None:
    number = Sites.from_text(TWO + '    sms_from: "+35929000000"\n')
    assert number.profiles["sofia"].sms_from == "+35929000000"
    assert number.profiles["vilnius"].sms_from is None  # the deployment's own
    assert Sites.from_text(TWO + "    sms_from: KlinikaSOF\n").profiles["sofia"].sms_from
    for wrong in ('"029000000"', "Sofia-Dental-Clinic"):  # no country code; past 11
        with pytest.raises(SiteError, match="sms_from"):
            Sites.from_text(TWO + f"    sms_from: {wrong}\n", "sites.yaml")
