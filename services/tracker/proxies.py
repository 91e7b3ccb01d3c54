"""Whom to contact instead of the patient: a guardian of a child, or a proxy an adult named.

Pure, shared by the HL7 (NK1) and FHIR (Patient.contact) mappings. A next of kin or an
emergency contact (HL7 0063 / v2-0131 N, C, EMC) is not a proxy: they are told nothing
unless the patient is a minor and they are a parent or guardian, or the patient named them
guardian, caregiver or attorney.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

from common.ages import age_on
from schemas.events import ProxyContact

Relationship = Literal["guardian", "parent", "caregiver", "attorney", "other"]
ADULT_AGE = 18

# HL7 v2 table 0063 and FHIR's v3 RoleCode / v2-0131, upper-cased.
RELATIONSHIPS: dict[str, Relationship] = {
    "GRD": "guardian",
    "GUARD": "guardian",
    "GUARDIAN": "guardian",
    "PAR": "parent",
    "PRN": "parent",
    "MTH": "parent",
    "FTH": "parent",
    "NMTH": "parent",
    "NFTH": "parent",
    "STPPRN": "parent",
    "CGV": "caregiver",
    "CAREGIVER": "caregiver",
    "POWATT": "attorney",
    "HPOWATT": "attorney",
    "DPOWATT": "attorney",
    "SPOWATT": "attorney",
}
FOR_A_MINOR: frozenset[Relationship] = frozenset({"guardian", "parent"})
NAMED: frozenset[Relationship] = frozenset({"guardian", "caregiver", "attorney"})


@dataclass(frozen=True)
class Candidate:
    """One related person as the source gave them."""

    codes: Sequence[str]
    given_name: str | None
    family_name: str | None
    phone: str | None
    email: str | None

    @property
    def relationship(self) -> Relationship:
        found = (RELATIONSHIPS.get(c.strip().upper()) for c in self.codes)
        return next((r for r in found if r is not None), "other")


def is_minor(birth: date | None, today: date) -> bool:
    return birth is not None and age_on(birth, today) < ADULT_AGE


def choose_proxy(candidates: Iterable[Candidate], *, minor: bool) -> ProxyContact | None:
    """The first reachable guardian or parent of a minor, else the first guardian,
    caregiver or attorney an adult named; None when nobody fits."""
    wanted = FOR_A_MINOR | {"guardian"} if minor else NAMED
    for person in candidates:
        relationship = person.relationship
        if relationship in wanted and (person.phone or person.email):
            return ProxyContact(
                relationship=relationship,
                given_name=_short(person.given_name),
                family_name=_short(person.family_name),
                phone=_short(person.phone),
                email=_short(person.email),
                reason="minor" if minor else "named",
            )
    return None


def _short(value: str | None) -> str | None:
    return value.strip()[:200] or None if value else None
