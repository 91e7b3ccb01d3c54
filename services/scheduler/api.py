"""The case API for operators and integrators: cases, their attempts and history (ids only),
and the correction of a wrong outcome.

Mounted on the ops server's aiohttp app. Every route needs ``Authorization: Bearer <token>``
(FOLLOWUP_API_TOKEN: every case); a wrong request answers 4xx with the reason. With a sites
file, a site's token (its profile's ``api_token_env``) sees that site's cases only: the list
leaves the others out, and a case of another site is "no such case" (404), as if absent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Annotated, Any, get_args

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from common.audit import AuditLog, credential_id
from common.codec import describe
from common.http import bearer_token_ok
from schemas.base import Id, TriggerKind
from schemas.events import OutcomeKind, RiskScore
from services.scheduler.cadence import AttemptRecord
from services.scheduler.case import CaseState
from services.scheduler.cases import RESULTS, CaseFacts, earlier_no_shows, risk_score
from services.scheduler.ledger import CaseLedger, OutcomeCorrection

Route = Callable[[web.Request], Awaitable[web.StreamResponse]]
STATES = tuple(state.value for state in CaseState)
CASE_COLUMNS = (
    "case_id, patient_id, reason, department, timezone, state, resolution, trigger_event_id, "
    "opened_at, closed_at, appointment_id, appointment_start, practitioner_id, supervisor_id, "
    "plan_id, stage_id, stage_deadline, impossible_channels, first_contact_at, concern_at, "
    "child, safeguarding_at, updated_at, site"
)

ATTEMPT_COLUMNS = (
    "attempt_number, purpose, channel, template, escalate_to, state, tightened, planned_at, "
    "window_end, fired_at, outcome, outcome_detail, outcome_at, withdrawn_at"
)
MAX_LIMIT = 500
# What a read of a case shows of the patient, as the audit log names it.
LIST_FIELDS = tuple(c.strip() for c in CASE_COLUMNS.split(","))
# The sites the caller may see, left by the guard (None: every site).
SCOPE: web.RequestKey[frozenset[str] | None] = web.RequestKey("case_api_sites")
# The caller's credential as the audit log names it (its token's fingerprint).
CREDENTIAL: web.RequestKey[str] = web.RequestKey("case_api_credential")


def _json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list):
        return [_json(v) for v in value]
    return value


def _row(record: asyncpg.Record) -> dict[str, Any]:
    return {k: _json(v) for k, v in record.items()}


def _error(
    kind: type[web.HTTPError], reason: str, headers: dict[str, str] | None = None
) -> web.HTTPError:
    return kind(
        text=json.dumps({"error": reason}), content_type="application/json", headers=headers
    )


def _bad(reason: str) -> web.HTTPError:
    return _error(web.HTTPBadRequest, reason)


class CorrectionRequest(BaseModel):
    """An administrator's correction of a wrong outcome (e.g. rebooked was recorded)."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)
    correction_id: Id = Field(description="Chosen by the caller; a repeat changes nothing.")
    outcome: OutcomeKind
    reported_by: Id
    detail: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,50}$")] | None = None


class CaseApi:
    def __init__(
        self,
        pool: asyncpg.Pool,
        token: str,
        ledger: CaseLedger,
        audit: AuditLog,
        site_tokens: Mapping[str, frozenset[str]]
        | Callable[[], Mapping[str, frozenset[str]]]
        | None = None,
    ) -> None:
        if not token and not site_tokens:
            raise ValueError("the case API needs a bearer token")
        self._pool = pool
        self._token = token
        self._ledger = ledger
        # Every read of a case is a read of a patient's health data: it is recorded
        # (common/audit.py) before it is answered, by the token's fingerprint.
        self._audit = audit
        # The sites' tokens as the sites file in force names them (a callable: asked on
        # every request, so a changed file's tokens count without a restart).
        if callable(site_tokens):
            self._site_tokens = site_tokens
        else:
            fixed = dict(site_tokens or {})
            self._site_tokens = lambda: fixed

    def _scope(self, request: web.Request) -> tuple[frozenset[str] | None, str]:
        """The sites the caller may see (None: all of them) and the caller's credential id
        (a site's token is an API token too); not authorised: 401."""
        if self._token and bearer_token_ok(request, self._token):
            return None, credential_id("api_token", self._token)
        for token, sites in self._site_tokens().items():
            if bearer_token_ok(request, token):
                return sites, credential_id("api_token", token)
        raise _error(
            web.HTTPUnauthorized, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
        )

    async def _case_in_scope(self, request: web.Request, case_id: str) -> None:
        """A case of a site the token does not cover is answered as absent."""
        scope = request.get(SCOPE)
        if scope is None:
            return
        async with self._pool.acquire() as conn:
            site = await conn.fetchval("SELECT site FROM cases WHERE case_id = $1", case_id)
        if site not in scope:
            raise _error(web.HTTPNotFound, "no such case")

    def mount(self, app: web.Application) -> None:
        app.router.add_get("/cases", self._guard(self.list_cases))
        app.router.add_get("/cases/{case_id}", self._guard(self.get_case))
        app.router.add_post(
            "/cases/{case_id}/attempts/{attempt_number}/corrections",
            self._guard(self.correct),
        )

    def _guard(self, route: Route) -> Route:
        async def guarded(request: web.Request) -> web.StreamResponse:
            request[SCOPE], request[CREDENTIAL] = self._scope(request)
            # A NUL or another control character cannot be stored as PostgreSQL text: it
            # would fail in the query (500); it is the caller's mistake (400).
            if any(ord(c) < 32 for c in request.path + "".join(request.query.values())):
                raise _bad("control characters are not allowed in the path or the query")
            return await route(request)

        return guarded

    async def list_cases(self, request: web.Request) -> web.Response:
        q = request.query
        where: list[str] = []
        args: list[Any] = []

        def add(clause: str, value: Any) -> None:
            args.append(value)
            where.append(clause.format(f"${len(args)}"))

        if "state" in q:
            if q["state"] not in STATES:
                raise _bad(f"state must be one of {list(STATES)}")
            add("state = {}", q["state"])
        if "open" in q:
            # The supervisor's worklist: who is still being chased (any state but closed).
            if q["open"] not in ("true", "false"):
                raise _bad("open must be true or false")
            add("(state <> 'closed') = {}", q["open"] == "true")
        if "safeguarding" in q:
            # Children not brought to repeated visits: the safeguarding lead's worklist.
            if q["safeguarding"] not in ("true", "false"):
                raise _bad("safeguarding must be true or false")
            add("(safeguarding_at IS NOT NULL) = {}", q["safeguarding"] == "true")
        if "reason" in q:
            if q["reason"] not in get_args(TriggerKind):
                raise _bad(f"reason must be one of {list(get_args(TriggerKind))}")
            add("reason = {}", q["reason"])
        if "department" in q:
            add("department = {}", q["department"])
        if "patient_id" in q:
            add("patient_id = {}", q["patient_id"])
        if "site" in q:
            add("site = {}", q["site"])
        scope = request.get(SCOPE)
        if scope is not None:
            add("site = ANY({})", sorted(scope))
        for name, op in (("deadline_before", "<="), ("deadline_after", ">=")):
            if name in q:
                add(f"stage_deadline {op} {{}}", _moment(name, q[name]))
        if "after" in q:
            add("case_id > {}", q["after"])  # keyset paging
        try:
            limit = int(q.get("limit", "100"))
        except ValueError:
            raise _bad("limit must be an integer") from None
        if not 1 <= limit <= MAX_LIMIT:
            raise _bad(f"limit must be between 1 and {MAX_LIMIT}")
        sql = f"SELECT {CASE_COLUMNS} FROM cases"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY case_id LIMIT {limit}"
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(sql, *args)
        cases = [_row(r) for r in rows]
        patients = [r["patient_id"] for r in rows]
        await self._audit.read(
            request[CREDENTIAL], "GET /cases", patients, LIST_FIELDS, self._ledger.now()
        )
        page = {"cases": cases, "next": cases[-1]["case_id"] if len(cases) == limit else None}
        return web.json_response(page)

    async def get_case(self, request: web.Request) -> web.Response:
        case_id = request.match_info["case_id"]
        await self._case_in_scope(request, case_id)
        # One snapshot for the four reads: a case never shows a closing outcome on its
        # attempt while its own row still says contacting (the ledger commits both at once).
        async with (
            self._pool.acquire() as conn,
            conn.transaction(isolation="repeatable_read", readonly=True),
        ):
            case = await conn.fetchrow(
                f"SELECT {CASE_COLUMNS} FROM cases WHERE case_id = $1", case_id
            )
            if case is None:
                raise _error(web.HTTPNotFound, "no such case")
            attempts = await conn.fetch(
                f"SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE case_id = $1 "
                "ORDER BY attempt_number",
                case_id,
            )
            history = await conn.fetch(
                "SELECT at, event, state, detail FROM case_history WHERE case_id = $1 ORDER BY id",
                case_id,
            )
            no_shows = await conn.fetchval(
                "SELECT count(*) FROM cases WHERE patient_id = $1 AND reason = 'no_show'",
                case["patient_id"],
            )
            # The question after the recovered visit and the patient's answer (the comment
            # is for the clinic here alone: never in logs or metrics).
            feedback = await conn.fetchrow(
                """SELECT appointment_id, channel, asked_at, rating, comment, answered_at
                   FROM feedback WHERE case_id = $1""",
                case_id,
            )
        fields = [*LIST_FIELDS, "attempts", "history", *(["feedback"] if feedback else [])]
        now = self._ledger.now()
        await self._audit.read(
            request[CREDENTIAL], "GET /cases/{case_id}", [case["patient_id"]], fields, now
        )
        body = _row(case)
        body["feedback"] = _row(feedback) if feedback is not None else None
        body["risk"] = _risk(case, attempts, no_shows, self._ledger.now()).model_dump()
        body["attempts"] = [_row(a) for a in attempts]
        body["history"] = [{**_row(h), "detail": json.loads(h["detail"])} for h in history]
        return web.json_response(body)

    async def correct(self, request: web.Request) -> web.Response:
        number = request.match_info["attempt_number"]
        if not number.isdigit() or int(number) < 1:
            raise _bad("attempt_number must be a positive integer")
        try:
            correction = CorrectionRequest.model_validate_json(await request.read())
        except ValidationError as exc:
            raise _bad(describe(exc)[0]) from None
        if correction.outcome not in RESULTS:
            raise _bad(f"outcome must be one of {sorted(RESULTS)}")
        await self._case_in_scope(request, request.match_info["case_id"])
        try:
            result = await self._ledger.correct_outcome(
                request.match_info["case_id"],
                int(number),
                OutcomeCorrection(
                    correction.correction_id,
                    correction.outcome,
                    correction.reported_by,
                    correction.detail,
                ),
            )
        except LookupError:
            raise _error(web.HTTPNotFound, "no such case or fired attempt") from None
        return web.json_response({"result": result})


def _risk(
    case: asyncpg.Record, attempts: list[asyncpg.Record], no_shows: int, now: datetime
) -> RiskScore:
    """The case's risk score and its inputs, as the call task shows them."""
    facts = CaseFacts(
        case_id=case["case_id"],
        patient_id=case["patient_id"],
        reason=case["reason"],
        department=case["department"],
        timezone=case["timezone"],
        stage_id=case["stage_id"],
        stage_deadline=case["stage_deadline"],
    )
    records = [
        AttemptRecord(
            number=a["attempt_number"],
            purpose=a["purpose"],
            channel=a["channel"],
            state=a["state"],
            planned_at=a["planned_at"],
            window_end=a["window_end"],
            fired_at=a["fired_at"],
            outcome=a["outcome"],
        )
        for a in attempts
    ]
    return risk_score(facts, records, earlier_no_shows(case["reason"], no_shows), now)


def _moment(name: str, value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(f"{name} must be an ISO 8601 date-time with an offset") from None
    if moment.tzinfo is None:
        raise _bad(f"{name} must carry a time-zone offset")
    return moment
