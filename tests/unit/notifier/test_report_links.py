"""Signed report links and the words administrators read (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.events import CALL_RESULTS
from services.notifier import localise, report_links
from services.notifier.report_links import LinkError, ReportLink

NOW = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
SECRET = "link-secret"


def token(result: str = "rebooked", expires: datetime = NOW + timedelta(hours=1)) -> str:
    return report_links.sign(SECRET, ReportLink("c-1:1", result, int(expires.timestamp())))


def test_a_link_names_its_task_and_result_and_nothing_personal() -> None:
    links = report_links.links_for(SECRET, "https://fu.clinic", "c-1:1", NOW + timedelta(days=1))
    assert set(links) == set(report_links.LINK_RESULTS)
    assert set(report_links.LINK_RESULTS.values()) <= CALL_RESULTS
    link = report_links.verify(SECRET, links["call_back"].rsplit("/", 1)[1], NOW)
    assert (link.task_id, link.outcome, link.report_id) == (
        "c-1:1",
        "callback_requested",
        "link:c-1:1",
    )
    assert report_links.links_for("", "https://fu.clinic", "c-1:1", NOW) == {}


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # the mac
        lambda t: "x" + t,  # the payload
        lambda t: t.split(".")[0],  # no mac at all
        lambda t: "",
    ],
)
def test_a_tampered_token_is_invalid(tamper: object) -> None:
    with pytest.raises(LinkError) as refused:
        report_links.verify(SECRET, tamper(token()), NOW)  # type: ignore[operator]
    assert refused.value.why == "invalid"


def test_a_token_of_another_key_or_purpose_is_invalid_and_an_old_one_expired() -> None:
    with pytest.raises(LinkError, match="invalid"):
        report_links.verify("other-secret", token(), NOW)
    with pytest.raises(LinkError, match="expired"):
        report_links.verify(SECRET, token(expires=NOW), NOW)


def test_only_our_own_page_may_post() -> None:
    base = "https://fu.clinic"
    assert report_links.same_site("https://fu.clinic", None, base)
    assert not report_links.same_site("https://evil.example", "same-origin", base)
    assert not report_links.same_site(None, "cross-site", base)
    assert report_links.same_site(None, None, base)  # an old client: the token decides


def test_the_page_shows_the_first_name_only_and_escapes_it() -> None:
    link = report_links.verify(SECRET, token("call_back"), NOW)
    html = report_links.form_page("lt", link, token("call_back"), "<Ona>", "Europe/Vilnius")
    assert "&lt;Ona&gt;" in html and "<Ona>" not in html
    assert 'name="callback_at"' in html and "Perskambinti (Europe/Vilnius)" in html
    assert 'lang="lt"' in html


def test_every_language_has_every_word_and_label() -> None:
    for table in (localise.WORDS, localise.RESULTS, localise.REASONS, localise.CHANNELS):
        for language in localise.LANGUAGES:
            assert set(table[language]) == set(table["en"]), language
    for outcome in CALL_RESULTS:
        assert outcome in localise.RESULTS["en"]


def test_times_are_in_the_clinics_zone_and_language_with_the_zone_named() -> None:
    assert localise.local_datetime(NOW, "Europe/Vilnius", "lt") == (
        "2026 m. kovo 2 d. 10:00 (Europe/Vilnius)"
    )
    assert localise.local_datetime(NOW, "Europe/Vilnius", "en").startswith("March 2, 2026 10:00")
    assert localise.local_date(NOW, "Europe/Sofia", "bg") == "2 март 2026\u202fг."  # noqa: RUF001


def test_the_page_language_follows_the_browser_then_the_clinic() -> None:
    assert localise.pick_language("ru-RU,ru;q=0.9,en;q=0.8", "lt") == "ru"
    assert localise.pick_language("de-DE,bg;q=0.5", "lt") == "bg"
    assert localise.pick_language("de-DE", "lt") == "lt"
    assert localise.pick_language(None, "xx") == "en"
