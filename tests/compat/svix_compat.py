"""Drives a running Herald with the official Svix Python SDK, unchanged, and
verifies the deliveries it receives with the `standardwebhooks` package and
the Svix SDK's own verifier. Every call the compatibility promise names is
made here and its answer parsed by the SDK's own models. Reads HERALD_URL and
HERALD_TOKEN; prints "svix compatibility suite passed" at the end."""

import csv
import datetime
import http.server
import io
import json
import urllib.request
import os
import queue
import threading
import time
import uuid

import standardwebhooks
from svix.api import (
    AppPortalAccessIn,
    ApplicationIn,
    ApplicationListOptions,
    EndpointIn,
    EndpointListOptions,
    EndpointSecretRotateIn,
    EndpointUpdate,
    EventTypeIn,
    MessageAttemptListByEndpointOptions,
    MessageAttemptListByMsgOptions,
    MessageCreateOptions,
    MessageIn,
    MessageListOptions,
    RecoverIn,
    Svix,
    SvixOptions,
)
from svix.exceptions import HttpError, HTTPValidationError
from svix.models import MessageStatus, MessageStatusText
from svix.webhooks import Webhook

received = queue.Queue()
# Path -> status the receiver answers; anything else gets 204.
answers = {}


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        received.put((self.path, dict(self.headers), body))
        self.send_response(answers.get(self.path, 204))
        self.end_headers()

    def log_message(self, *args):
        pass


def wait_for(what, check, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def next_delivery(path):
    while True:
        got_path, headers, body = received.get(timeout=20)
        if got_path == path:
            return headers, body


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    svix = Svix(os.environ["HERALD_TOKEN"], SvixOptions(server_url=os.environ["HERALD_URL"]))
    suffix = uuid.uuid4().hex[:8]

    # Applications: create, get (by id and by uid), list, update, delete.
    app = svix.application.create(ApplicationIn(name="Acme Telephony", uid=f"acme-{suffix}"))
    assert app.id.startswith("app_"), app
    assert svix.application.get(app.uid).id == app.id
    other = svix.application.create(ApplicationIn(name="Scratch", metadata={"team": "ops"}))
    listed = svix.application.list(ApplicationListOptions(limit=50))
    assert {app.id, other.id} <= {a.id for a in listed.data}, listed
    renamed = svix.application.update(other.id, ApplicationIn(name="Scratch 2", metadata={"team": "sre"}))
    assert renamed.name == "Scratch 2" and renamed.metadata == {"team": "sre"}, renamed
    svix.application.delete(other.id)
    assert other.id not in {a.id for a in svix.application.list().data}

    # Event types: create, get, list.
    created_type = svix.event_type.create(
        EventTypeIn(name=f"campaign.finished{suffix}", description="A campaign ran to its end")
    )
    assert created_type.name == f"campaign.finished{suffix}", created_type
    assert svix.event_type.get(created_type.name).description == "A campaign ran to its end"
    event_types = svix.event_type.list()
    names = {t.name for t in event_types.data}
    assert "call.completed" in names and created_type.name in names, names

    # Endpoints: create with filter types, get, list, update, secret, delete.
    endpoint = svix.endpoint.create(
        app.id, EndpointIn(url=f"{base}/hook", filter_types=["call.*"], description="CRM")
    )
    assert endpoint.filter_types == ["call.*"], endpoint
    failing = svix.endpoint.create(app.id, EndpointIn(url=f"{base}/down", description="Flaky"))
    answers["/down"] = 500
    assert svix.endpoint.get(app.id, endpoint.id).url == f"{base}/hook"
    endpoints = svix.endpoint.list(app.id, EndpointListOptions(limit=10))
    assert {endpoint.id, failing.id} == {e.id for e in endpoints.data}, endpoints
    updated = svix.endpoint.update(
        app.id,
        endpoint.id,
        EndpointUpdate(url=f"{base}/hook", filter_types=["call.*", created_type.name], description="CRM v2"),
    )
    assert sorted(updated.filter_types) == sorted(["call.*", created_type.name]), updated
    assert updated.description == "CRM v2"
    secret = svix.endpoint.get_secret(app.id, endpoint.id).key
    assert secret.startswith("whsec_")

    # Messages: create with eventId and an idempotency key, replay, list, get.
    payload = {"callId": "call_1", "durationSeconds": 395}
    message = svix.message.create(
        app.id,
        MessageIn(event_type="call.completed", payload=payload, event_id=f"evt-{suffix}"),
        MessageCreateOptions(idempotency_key=f"idem-{suffix}"),
    )
    assert message.id.startswith("msg_") and message.event_id == f"evt-{suffix}", message
    again = svix.message.create(
        app.id,
        MessageIn(event_type="call.completed", payload=payload, event_id=f"evt-{suffix}"),
        MessageCreateOptions(idempotency_key=f"idem-{suffix}"),
    )
    assert again.id == message.id, "the idempotency key replays the first answer"
    listed = svix.message.list(app.id, MessageListOptions(limit=10))
    assert [m.id for m in listed.data] == [message.id], listed
    assert svix.message.get(app.id, message.id).payload == payload

    # Receiver side: both verifiers accept Herald's signature.
    headers, body = next_delivery("/hook")
    standardwebhooks.Webhook(secret).verify(body, headers)
    Webhook(secret).verify(body, headers)
    assert json.loads(body)["data"]["callId"] == "call_1"

    # Attempts: by message, by endpoint, one by id.
    attempts = wait_for(
        "the attempts to be recorded",
        lambda: [
            a
            for a in svix.message_attempt.list_by_msg(app.id, message.id, MessageAttemptListByMsgOptions(limit=10)).data
            if a.endpoint_id == endpoint.id
        ],
    )
    assert attempts[0].response_status_code == 204, attempts
    by_endpoint = svix.message_attempt.list_by_endpoint(
        app.id, endpoint.id, MessageAttemptListByEndpointOptions(limit=10)
    )
    assert by_endpoint.data[0].msg_id == message.id, by_endpoint
    assert svix.message_attempt.get(app.id, message.id, attempts[0].id).id == attempts[0].id

    # Resend to the endpoint: a second signed delivery of the same message.
    svix.message_attempt.resend(app.id, message.id, endpoint.id)
    headers, body = next_delivery("/hook")
    Webhook(secret).verify(body, headers)
    assert headers.get("webhook-id", headers.get("Webhook-Id")) == message.id

    # Recover the failing endpoint once it answers again.
    wait_for(
        "a failed attempt at the failing endpoint",
        lambda: svix.message_attempt.list_by_endpoint(app.id, failing.id).data,
    )

    # Where the message stands at each endpoint (list_attempted_destinations):
    # delivered to /hook, waiting for its next attempt at /down.
    def destinations_of(msg_id, ready):
        return wait_for(
            "the message's destinations",
            lambda: (lambda d: d if ready({e.id: e for e in d.data}) else None)(
                svix.message_attempt.list_attempted_destinations(app.id, msg_id)
            ),
        )

    # The resend above was received, but its attempt is recorded only once
    # Herald has read the answer: until then the endpoint stands at "sending".
    now = datetime.datetime.now(datetime.timezone.utc)
    stand = destinations_of(
        message.id,
        lambda by_id: by_id[failing.id].next_attempt is not None
        and by_id[endpoint.id].status != MessageStatus.SENDING,
    )
    by_id = {e.id: e for e in stand.data}
    assert by_id[endpoint.id].status == MessageStatus.SUCCESS, by_id
    assert by_id[endpoint.id].status_text == MessageStatusText.SUCCESS, by_id
    assert by_id[endpoint.id].url == f"{base}/hook" and by_id[endpoint.id].next_attempt is None
    assert by_id[failing.id].status == MessageStatus.PENDING, by_id
    assert by_id[failing.id].next_attempt > now, by_id

    # Content removal (expunge_content): the payload is gone for good, the
    # pending delivery ends as failed, and the message cannot be resent.
    secret_payload = {"contactId": "ct_1", "email": "someone@example.test"}
    private = svix.message.create(app.id, MessageIn(event_type="contact.updated", payload=secret_payload))
    destinations_of(private.id, lambda by_id: by_id.get(failing.id) and by_id[failing.id].next_attempt is not None)
    svix.message.expunge_content(app.id, private.id)
    assert svix.message.get(app.id, private.id).payload == {}
    ended = {e.id: e for e in svix.message_attempt.list_attempted_destinations(app.id, private.id).data}
    assert ended[failing.id].status == MessageStatus.FAIL and ended[failing.id].next_attempt is None, ended
    try:
        svix.message_attempt.resend(app.id, private.id, failing.id)
        raise AssertionError("a message whose content was removed was resent")
    except (HttpError, HTTPValidationError) as refused:
        assert refused.status_code == 400 and refused.code == "content_removed", refused

    # A 422 parses as the SDK's validation error (a list of {loc, msg, type}).
    try:
        svix.message.create(app.id, MessageIn(event_type="no.such.type", payload={}))
        raise AssertionError("an unknown event type was accepted")
    except HTTPValidationError as invalid:
        assert invalid.status_code == 422, invalid
        assert invalid.detail and invalid.detail[0].loc and invalid.detail[0].msg, invalid

    answers["/down"] = 200
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    recovery = svix.endpoint.recover(app.id, failing.id, RecoverIn(since=since))
    assert recovery.id and recovery.status is not None, recovery
    next_delivery("/down")

    # Stats, rotation, portal access.
    # Stats count messages by their state at the endpoint (resends included).
    stats = svix.endpoint.get_stats(app.id, endpoint.id)
    assert (stats.success, stats.fail) == (1, 0), stats
    recovered = wait_for(
        "the recovered message to count as delivered",
        lambda: (lambda s: s if s.success == 1 else None)(svix.endpoint.get_stats(app.id, failing.id)),
    )
    # The message whose content was removed stays failed: never resent.
    assert recovered.fail == 1, recovered
    svix.endpoint.rotate_secret(app.id, endpoint.id, EndpointSecretRotateIn())
    rotated = svix.endpoint.get_secret(app.id, endpoint.id).key
    assert rotated != secret and rotated.startswith("whsec_")
    access = svix.authentication.app_portal_access(app.id, AppPortalAccessIn())
    assert access.url.startswith("http") and access.token, access
    portal = Svix(access.token, SvixOptions(server_url=os.environ["HERALD_URL"]))
    assert portal.endpoint.get(app.id, endpoint.id).id == endpoint.id, "the portal token reads its app"

    # Herald's export of the activity log parses back with Python's own json
    # and csv modules and holds what the SDK lists, in both formats.
    def export(query):
        request = urllib.request.Request(
            f"{os.environ['HERALD_URL']}/api/v1/app/{app.id}/attempt/export/?{query}",
            headers={"Authorization": f"Bearer {os.environ['HERALD_TOKEN']}"},
        )
        with urllib.request.urlopen(request, timeout=20) as answer:
            return answer.headers["content-type"], answer.read().decode()

    listed = svix.message_attempt.list_by_endpoint(
        app.id, failing.id, MessageAttemptListByEndpointOptions(limit=250)
    ).data
    kind, lines = export(f"format=jsonl&endpoint={failing.id}")
    assert kind == "application/x-ndjson", kind
    rows = [json.loads(line) for line in lines.splitlines()]
    assert [r["id"] for r in rows] == [a.id for a in listed], (rows, listed)
    assert {r["endpointId"] for r in rows} == {failing.id}
    kind, text = export("format=csv")
    assert kind.startswith("text/csv"), kind
    records = list(csv.DictReader(io.StringIO(text, newline="")))
    assert {a.id for a in listed} <= {r["id"] for r in records}, records
    assert {r["endpointId"] for r in records} == {endpoint.id, failing.id}, records
    failed = [r for r in records if r["statusText"] == "fail"]
    assert failed and all(r["responseStatusCode"] == "500" for r in failed if r["errorClass"] == "http_status"), failed
    _, only_failed = export("format=csv&status=2")
    assert len(list(csv.DictReader(io.StringIO(only_failed, newline="")))) == len(failed)

    # Herald's filter and transformation (set over plain HTTP: the SDK's
    # models do not know them): the chat gets a body of its own shape for
    # the inbound call only, signed, and both verifiers accept it.
    chat_app = svix.application.create(ApplicationIn(name="Chat"))
    created = urllib.request.Request(
        f"{os.environ['HERALD_URL']}/api/v1/app/{chat_app.id}/endpoint/",
        method="POST",
        data=json.dumps({
            "url": f"{base}/chat",
            "filter": 'data.direction == "inbound"',
            "transformation": '{"text": "Call " + data.callId + " completed in " + string(data.durationSeconds) + " s"}',
        }).encode(),
        headers={"Authorization": f"Bearer {os.environ['HERALD_TOKEN']}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(created, timeout=20) as answer:
        chat = json.loads(answer.read())
    assert chat["filter"] == 'data.direction == "inbound"', chat
    chat_secret = svix.endpoint.get_secret(chat_app.id, chat["id"]).key
    for call_id, direction in [("call_out", "outbound"), ("call_in", "inbound")]:
        svix.message.create(chat_app.id, MessageIn(
            event_type="call.completed",
            payload={"callId": call_id, "direction": direction, "durationSeconds": 42},
        ))
    headers, body = next_delivery("/chat")
    standardwebhooks.Webhook(chat_secret).verify(body, headers)
    Webhook(chat_secret).verify(body, headers)
    assert json.loads(body) == {"text": "Call call_in completed in 42 s"}, body
    svix.application.delete(chat_app.id)

    svix.endpoint.delete(app.id, failing.id)
    svix.endpoint.delete(app.id, endpoint.id)
    assert svix.endpoint.list(app.id).data == []
    svix.application.delete(app.id)
    print("svix compatibility suite passed")


if __name__ == "__main__":
    main()
