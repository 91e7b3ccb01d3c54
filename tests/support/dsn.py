"""A delivery status notification as a mail server sends it back (RFC 3464)."""

from __future__ import annotations


def dsn_report(
    message_id: str,
    *,
    action: str = "failed",
    status: str = "5.1.1",
    returned: str = "headers",
    boundary: str = "=_dsn_boundary",
) -> bytes:
    """A ``multipart/report`` bounce of the message ``message_id``, with the original's
    headers (``text/rfc822-headers``) or the whole original (``message/rfc822``)."""
    original_headers = (
        "From: followup@clinic.example\r\n"
        "To: ona@example.org\r\n"
        "Subject: Your treatment\r\n"
        f"Message-ID: {message_id}\r\n"
    )
    if returned == "headers":
        returned_part = f"Content-Type: text/rfc822-headers\r\n\r\n{original_headers}"
    else:
        returned_part = (
            "Content-Type: message/rfc822\r\n\r\n"
            f"{original_headers}Content-Type: text/plain\r\n\r\nWe missed you.\r\n"
        )
    return (
        "From: MAILER-DAEMON@mx.example.org\r\n"
        "To: followup@clinic.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
        f"--{boundary}\r\n"
        "Content-Type: text/plain\r\n\r\n"
        "This is the mail system. Your message could not be delivered.\r\n"
        f"--{boundary}\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n"
        "Arrival-Date: Mon, 2 Mar 2026 10:00:00 +0200\r\n"
        "\r\n"
        "Final-Recipient: rfc822; ona@example.org\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        "Diagnostic-Code: smtp; 550 5.1.1 <ona@example.org>: Recipient address rejected\r\n"
        f"--{boundary}\r\n"
        f"{returned_part}"
        f"--{boundary}--\r\n"
    ).encode()
