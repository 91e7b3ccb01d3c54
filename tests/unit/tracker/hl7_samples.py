"""Real-shaped HL7 v2.5 SIU messages, as a scheduling system sends them."""

from __future__ import annotations


def siu(
    trigger: str,
    control_id: str,
    *,
    appointment_id: str = "APT-100",
    patient_id: str = "PAT-1",
    start: str = "20260302093000+0200",
    filler_status: str = "Booked",
    reason: str = "",
    death: str = "",
    plan: str = "",
    stage: str = "",
) -> str:
    sch = ["SCH", f"{appointment_id}^HIS", f"{appointment_id}^HIS", "", "", "", reason, stage]
    sch += ["", "", "", f"^^^{start}^20260302100000+0200"] + [""] * 13 + [filler_status, plan]
    pid = ["PID", "1", "", f"{patient_id}^^^HIS^MR", "", "Kazlauskiene^Ona", "", "19800101", "F"]
    pid += [""] * 4 + ["+37060000001^PRN^PH~^NET^Internet^ona@example.org", "", "lt"]
    pid += [""] * 13 + ["20260301120000+0200" if death else "", death]
    segments = [
        f"MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|20260301120000+0200||SIU^{trigger}^SIU_S12|"
        f"{control_id}|P|2.5",
        "|".join(sch),
        "|".join(pid),
        "PV1|1|O|DENTAL^^^CLINIC||||DR-7^House^Greg",
        "RGS|1",
        "AIS|1||IMPLANT^Implant visit|20260302093000+0200",
        "AIL|1||DENTAL^^^CLINIC",
        "AIP|1||DR-7^House^Greg",
    ]
    return "\r".join(segments) + "\r"


def adt_a03(
    control_id: str,
    *,
    patient_id: str = "PAT-1",
    disposition: str = "02",
    discharged_at: str = "20260301113000+0200",
    death: str = "",
) -> str:
    """A discharge: PV1-36 discharge disposition (table 0112), PV1-45 discharge date/time."""
    pid = ["PID", "1", "", f"{patient_id}^^^HIS^MR", "", "Kazlauskiene^Ona", "", "19800101", "F"]
    pid += [""] * 4 + ["+37060000001^PRN^PH", "", "lt"]
    pid += [""] * 13 + ["20260301120000+0200" if death else "", death]
    pv1 = ["PV1", "1", "I", "SURGERY^101^1^CLINIC"] + [""] * 42
    pv1[7] = "DR-7^House^Greg"
    pv1[36] = disposition
    pv1[37] = "KLAIPEDA-HOSP^Klaipeda University Hospital" if disposition else ""
    pv1[45] = discharged_at
    segments = [
        f"MSH|^~\\&|HIS|CLINIC|FOLLOWUP|TRACKER|20260301120000+0200||ADT^A03^ADT_A03|"
        f"{control_id}|P|2.5",
        "EVN|A03|20260301120000+0200",
        "|".join(pid),
        "|".join(pv1),
    ]
    return "\r".join(segments) + "\r"
