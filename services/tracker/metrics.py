"""The tracker's metrics, named exactly as the ops dashboards expect. No ids in labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter(
    "followup_tracker_events_total",
    "Events taken in, by way in (hl7|fhir|kafka) and type (appointment|plan|contact|outcome).",
    ["source", "type"],
)
INGEST_REJECTED = Counter(
    "followup_tracker_ingest_rejected_total",
    "Inputs refused (negative ACK, HTTP 4xx, dead letter), by way in and reason code.",
    ["source", "reason"],
)
# By site too (a bounded label: the sites file's ids, "other", or "none" without a file).
TRIGGERS = Counter(
    "followup_tracker_triggers_total", "Triggers emitted, by kind and site.", ["kind", "site"]
)
DETECTION_LAG = Histogram(
    "followup_tracker_detection_lag_seconds",
    "From the moment a fact became detectable to the trigger's emission.",
    buckets=(0.1, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 86400),
)
WATERMARK_LAG = Gauge(
    "followup_tracker_watermark_lag_seconds",
    "How far the detection watermark (the clock time up to which every input partition this "
    "replica owns has been read to its end) is behind the clock; timer detections wait for it.",
)
TRACKED_APPOINTMENTS = Gauge(
    "followup_tracker_tracked_appointments", "Appointments held in this replica's state."
)
HL7_DOUBLED_LOCAL_TIMES = Counter(
    "followup_tracker_hl7_doubled_local_times_total",
    "HL7 times without offset that the autumn clock change shows twice (first one taken).",
)
MLLP_CONNECTIONS = Gauge("followup_tracker_mllp_connections", "Open MLLP connections.")
MLLP_CONNECTIONS_REFUSED = Counter(
    "followup_tracker_mllp_connections_refused_total",
    "MLLP connections closed at once because FOLLOWUP_MLLP_MAX_CONNECTIONS were open.",
)
MLLP_STRAY_BYTES = Counter(
    "followup_tracker_mllp_stray_bytes_total",
    "Bytes skipped between MLLP frames (CR/LF after the end block, noise, abandoned frames).",
)

# Per site of a chain (a bounded label: the ids of the sites file, "other" for none of
# them, "none" in a deployment without one).
SITE_EVENTS = Counter(
    "followup_tracker_site_events_total",
    "Canonical appointments and plans taken in, by site and type.",
    ["site", "type"],
)
SITE_TRIGGERS = Counter(
    "followup_tracker_site_triggers_total", "Triggers emitted, by site and kind.", ["site", "kind"]
)
