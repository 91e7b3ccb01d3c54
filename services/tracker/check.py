"""Offline connection check: what followup would make of an HL7 v2 message, sending nothing.

    python -m services.tracker.check message.hl7
    printf 'MSH|^~\\&|...' | python -m services.tracker.check -

Prints the canonical events (JSON, one per line) and the ACK followup would answer, or the
negative ACK and why. The file may hold one message, several separated by blank lines, or
MLLP frames (0x0b ... 0x1c 0x0d) as captured from the wire. The exit status is 0 when every
message would be accepted, 1 when one would be refused, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from common.codec import encode
from services.tracker.hl7_siu import Rejected, ack, read, read_header
from services.tracker.mllp import Framer


def split_messages(data: bytes) -> list[bytes]:
    """MLLP frames if there are any, else messages split where a new MSH begins a line."""
    if b"\x0b" in data:
        return [body for body, _ in Framer(len(data) + 1).feed(data)]
    text = data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")
    parts = re.split(rb"\r+(?=MSH)", text.strip(b"\r \t"))
    return [p for p in parts if p.strip()]


def check(
    raw: bytes, *, zone: ZoneInfo, department: str, now: datetime, patient_id_type: str = ""
) -> tuple[bool, str]:
    """(accepted, report) for one message."""
    header = read_header(raw)
    lines: list[str] = []
    try:
        result = read(
            raw, zone=zone, now=now, department=department, patient_id_type=patient_id_type
        )
    except Rejected as rejected:
        lines.append(f"REFUSED {rejected.ack_code} {rejected.error_code}: {rejected.reason}")
        lines.append("the sender should " + _advice(rejected.ack_code))
        lines.append(_show(ack(header, code=rejected.ack_code, now=now, rejected=rejected)))
        return False, "\n".join(lines)
    lines.append(f"ACCEPTED {result.message_type} control id {result.control_id}")
    for event in result.events():
        lines.append(f"{getattr(event, 'type')}: {encode(event).decode()}")  # noqa: B009
    for where in result.doubled:
        lines.append(f"note: {where} is in the doubled autumn hour; the first one was taken")
    lines.append("(AA is sent only once these are stored on the broker)")
    lines.append(_show(ack(header, code="AA", now=now)))
    return True, "\n".join(lines)


def _advice(code: str) -> str:
    if code == "AR":
        return "resend later, or not send this kind of message (see the reason)"
    return "fix the message (the field named) and send it again"


def _show(answer: str) -> str:
    return "ACK:\n  " + answer.strip("\r").replace("\r", "\n  ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.tracker.check",
        description="Parse HL7 v2 messages offline and print what followup would make of "
        "them (canonical events and the ACK), without sending anything.",
    )
    parser.add_argument("file", help="a file of HL7 messages or MLLP frames, or - for stdin")
    parser.add_argument(
        "--timezone",
        default="UTC",
        help="the clinic's zone (FOLLOWUP_CLINIC_TIMEZONE) for times without an offset",
    )
    parser.add_argument(
        "--department", default="general", help="FOLLOWUP_DEFAULT_DEPARTMENT, when none is named"
    )
    parser.add_argument(
        "--patient-id-type",
        default="",
        help="FOLLOWUP_HL7_PATIENT_ID_TYPE: the PID-3.5 type of the patient id (e.g. MR)",
    )
    args = parser.parse_args(argv)
    try:
        zone = ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        parser.error(f"unknown time zone {args.timezone!r}")
    try:
        data = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        parser.error(f"cannot read {args.file}: {exc.strerror}")
    messages = split_messages(data)
    if not messages:
        parser.error("no message found")
    now = datetime.now(UTC)
    all_accepted = True
    for n, raw in enumerate(messages, 1):
        accepted, report = check(
            raw,
            zone=zone,
            department=args.department,
            now=now,
            patient_id_type=args.patient_id_type,
        )
        all_accepted &= accepted
        if len(messages) > 1:
            print(f"--- message {n}")
        print(report)
    return 0 if all_accepted else 1


if __name__ == "__main__":
    sys.exit(main())
