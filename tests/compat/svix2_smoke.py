"""Drives a running Herald with the current Svix Python SDK (2.x), whose
field names differ from 1.x (`event_types`, `throttle_rate`) and which
reads the new secret from a rotation. Every answer is parsed by the SDK's
own models. Reads HERALD_URL and HERALD_TOKEN; prints "svix 2 smoke passed"
at the end."""

import datetime
import os
import time
import uuid

from svix.exceptions import HttpError
from svix.api import (
    AppPortalAccessIn,
    ApplicationIn,
    ApplicationTokenExpireIn,
    EndpointIn,
    EndpointSecretRotateIn,
    MessageIn,
    MessagePrecheckIn,
    RecoverIn,
    Svix,
    SvixOptions,
)

svix = Svix(os.environ["HERALD_TOKEN"], SvixOptions(server_url=os.environ["HERALD_URL"]))
uid = "sdk2-" + uuid.uuid4().hex[:10]

app = svix.application.create(ApplicationIn(name="Acme", uid=uid, throttle_rate=5))
assert app.throttle_rate == 5, app
crm = svix.endpoint.create(
    uid, EndpointIn(url="http://127.0.0.1:9/crm", event_types=["call.completed"], throttle_rate=2)
)
assert crm.event_types == ["call.completed"], crm
assert crm.throttle_rate == 2, crm

# A precheck knows who listens.
assert svix.message.precheck(uid, MessagePrecheckIn(event_type="call.completed")).active
assert not svix.message.precheck(uid, MessagePrecheckIn(event_type="contact.created")).active

# The subscription holds: a contact event goes nowhere, a call event to the CRM.
contact = svix.message.create(uid, MessageIn(event_type="contact.created", payload={"contactId": "c1"}))
call = svix.message.create(uid, MessageIn(event_type="call.completed", payload={"callId": "k1"}))
to_contact = svix.message_attempt.list_attempted_destinations(uid, contact.id).data
to_call = svix.message_attempt.list_attempted_destinations(uid, call.id).data
assert to_contact == [], to_contact
assert [d.id for d in to_call] == [crm.id], to_call

# The endpoint's attempted messages: the call only.
attempted = svix.message_attempt.list_attempted_messages(uid, crm.id).data
assert [m.id for m in attempted] == [call.id], attempted

# An attempt's response body can be removed (the CRM is down: attempts
# fail with connection errors, recorded within moments).
deadline = time.monotonic() + 20
attempts = []
while not attempts and time.monotonic() < deadline:
    attempts = svix.message_attempt.list_by_msg(uid, call.id).data
    time.sleep(0.05)  # polls for the first attempt to be recorded
assert attempts, "an attempt was recorded"
svix.message_attempt.expunge_content(uid, call.id, attempts[0].id)
assert svix.message_attempt.get(uid, call.id, attempts[0].id).response == ""

# Attempt stats: the CRM is down, so every attempt failed.
stats = svix.endpoint.get_attempt_stats(uid, crm.id)
assert stats.success == 0 and stats.fail >= 1, stats

# Background tasks: a recovery, listed and read back.
recovery = svix.endpoint.recover(uid, crm.id, RecoverIn(since=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)))
listed_tasks = svix.background_task.list().data
assert recovery.id in [t.id for t in listed_tasks], listed_tasks
assert svix.background_task.get(recovery.id).id == recovery.id

# A rotation answers the new secret, which is then the endpoint's secret.
rotated = svix.endpoint.rotate_secret(uid, crm.id, EndpointSecretRotateIn())
assert rotated.key.startswith("whsec_"), rotated
assert svix.endpoint.get_secret(uid, crm.id).key == rotated.key

# A portal session logs out; expire-all ends the others.
session = svix.authentication.app_portal_access(uid, AppPortalAccessIn()).token
Svix(session, SvixOptions(server_url=os.environ["HERALD_URL"])).authentication.logout()
other = svix.authentication.app_portal_access(uid, AppPortalAccessIn()).token
svix.authentication.expire_all(uid, ApplicationTokenExpireIn())
for ended in (session, other):
    try:
        Svix(ended, SvixOptions(server_url=os.environ["HERALD_URL"])).application.get(uid)
        raise AssertionError("a session still works after it ended")
    except HttpError as error:
        assert error.status_code == 401, error

listed = svix.endpoint.list(uid).data
assert [e.id for e in listed] == [crm.id], listed
svix.endpoint.delete(uid, crm.id)
svix.application.delete(uid)
print("svix 2 smoke passed")
