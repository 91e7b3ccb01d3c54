"""The call-task channel: a task for an administrator, fanned out to the configured sinks,
withdrawn through the same sinks, and the routes by which the call's result comes back.

The task id is the creating command's idempotency key. A withdrawal is its own command
(its own key, so it is not dropped as a repeat) and names the task by case and attempt
number; the sinks receive ``action: withdraw`` under the task's own id, so every receiver
can match it (the webhook's ``Idempotency-Key``, the VTODO's UID, the topic's task id).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal
from urllib.parse import quote

from aiohttp import web

from common.logs import get_logger
from schemas.events import CallTaskEvent, NotificationCommand
from schemas.vocabulary import NUMBER_WRONG
from services.notifier import metrics
from services.notifier.call_reports import ReportError, parse_call_report, report_outcome, valid_id
from services.notifier.calltasks import build_call_task, call_script
from services.notifier.channels import (
    ChannelRules,
    Job,
    Parts,
    PermanentSendError,
    Route,
    Sent,
    TransientSendError,
    require_bearer,
)
from services.notifier.contacts import Contact

log = get_logger(__name__)

# An administrator calls the number on the task, or finds one: no address is required.
RULES = ChannelRules(
    consent="call", reaches_patient=False, resend_when_unsure=True, missing=lambda _: None
)


def for_the_task(contact: Contact | None) -> Contact | None:
    """The contact as the front desk sees it: a number the carrier found wrong is not given
    (the task is then to find the right one); a landline is, a call reaches it."""
    if contact is not None and contact.phone_mark == NUMBER_WRONG:
        return replace(contact, phone=None, phone_raw=None)
    return contact


class CallTaskChannel:
    name: Literal["call_task"] = "call_task"
    rules = RULES

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self.sinks = list(parts.sinks)

    def render(
        self,
        command: NotificationCommand,
        contact: Contact | None,
        action: Literal["create", "withdraw"] = "create",
    ) -> CallTaskEvent:
        """The task ``command`` created (its key is the task id), as ``action``."""
        v = self._parts.voice
        language = contact.language if contact else v.default_language
        script = call_script(
            self._parts.book,
            command,
            contact,
            clinic_name=v.name_for(language),
            clinic_phone=v.clinic_phone,
            rebook_url=v.rebook_url,
            default_language=v.default_language,
        )
        task_id = command.idempotency_key
        return build_call_task(
            command,
            contact,
            task_id=task_id,
            action=action,
            script=script,
            now=self._parts.clock.now(),
            report_url=f"{self._parts.public_base_url}/calltasks/{quote(task_id, safe=':')}/result",
            default_language=v.default_language,
        )

    async def send(self, job: Job) -> Sent:
        command = job.command
        if command.purpose != "withdrawal":
            await self._deliver(job, self.render(command, for_the_task(job.contact)))
            return Sent("task_created", respond_by=command.window_end)
        found = await self._parts.ledger.withdrawn_task(command)
        if found is None:
            return Sent("withdrawn", detail="no_task")
        original, state = found
        now = self._parts.clock.now()
        if state == "pending" and await self._parts.ledger.cancel_if_unsent(original, now):
            # Never went out: cancelling it in the ledger is the whole withdrawal.
            return Sent("withdrawn", detail="never_sent")
        if state == "sending":
            # The create is at the sinks right now: withdrawing first could reach a
            # receiver before the task itself. Retried with the usual backoff.
            raise TransientSendError("ledger", "task_being_sent")
        await self._deliver(job, self.render(original, job.contact, "withdraw"))
        return Sent("withdrawn")

    async def _deliver(self, job: Job, task: CallTaskEvent) -> None:
        if not self.sinks:
            raise PermanentSendError("none", "no_call_task_sink")
        for sink in self.sinks:
            if sink.name in job.sinks_done:
                continue  # delivered before a retry or a restart
            try:
                receipt = await sink.deliver(task)
            except (TransientSendError, PermanentSendError):
                metrics.CALL_TASKS.labels(sink.name, "error").inc()
                raise
            if receipt.report is not None:
                # Published before the sink is marked done: after a crash the task goes out
                # again, the receiver answers again, and the repeated report id is dropped.
                await self._parts.publish_outcome(
                    report_outcome(receipt.report, job.command, self._parts.clock.now())
                )
            result = "created" if task.action == "create" else "withdrawn"
            metrics.CALL_TASKS.labels(sink.name, result).inc()
            metrics.SENDS.labels(self.name, sink.name, "sent").inc()
            await self._parts.ledger.sink_done(job.command, sink.name)

    # --- results back --------------------------------------------------------------------

    def routes(self) -> Sequence[Route]:
        return (
            Route("POST", "/calltasks/{task_id}/result", self.call_result),
            Route("POST", "/call-tasks/outcomes", self.call_outcome),
        )

    async def close(self) -> None:
        return None  # the sinks are plug-ins of their own, closed by the composition root

    async def call_result(self, request: web.Request) -> web.Response:
        """``POST /calltasks/{task_id}/result``: the task's own report URL."""
        return await self._report(request, lambda body: request.match_info["task_id"])

    async def call_outcome(self, request: web.Request) -> web.Response:
        """``POST /call-tasks/outcomes``: the agreed route; the body names the task by its
        idempotency key (``<case_id>:<n>``, which is also the task id)."""

        def task_of(body: dict[str, Any]) -> str:
            key = body.get("idempotency_key")
            if not valid_id(key):
                raise web.HTTPBadRequest(text="idempotency_key: the call task's key is required")
            return str(key)

        return await self._report(request, task_of)

    async def _report(
        self, request: web.Request, task_of: Callable[[dict[str, Any]], str]
    ) -> web.Response:
        require_bearer(request, self._parts.settings.api_token)
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body is not JSON") from None
        try:
            report = parse_call_report(body)
        except ReportError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        command = await self._parts.ledger.call_task(self.name, task_of(body))
        if command is None:
            raise web.HTTPNotFound(text="unknown call task")
        event = report_outcome(report, command, self._parts.clock.now())
        await self._parts.publish_outcome(event)
        return web.json_response({"event_id": event.event_id, "outcome": event.outcome}, status=202)
