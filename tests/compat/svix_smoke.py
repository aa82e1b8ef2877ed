"""Drives a running Herald with the official Svix Python SDK, and verifies
the deliveries it receives with the `standardwebhooks` package and the Svix
SDK's own verifier. Reads HERALD_URL and HERALD_TOKEN."""

import http.server
import json
import os
import queue
import threading
import uuid

import standardwebhooks
from svix.api import (
    ApplicationIn,
    EndpointIn,
    MessageAttemptListByEndpointOptions,
    MessageCreateOptions,
    MessageIn,
    Svix,
    SvixOptions,
)
from svix.webhooks import Webhook

received = queue.Queue()


class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers["content-length"]))
        received.put((dict(self.headers), body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook_url = f"http://127.0.0.1:{server.server_address[1]}/hook"

    svix = Svix(os.environ["HERALD_TOKEN"], SvixOptions(server_url=os.environ["HERALD_URL"]))

    app = svix.application.create(ApplicationIn(name="Acme Telephony", uid=f"acme-{uuid.uuid4().hex[:8]}"))
    assert app.id.startswith("app_"), app
    assert svix.application.get(app.uid).id == app.id

    endpoint = svix.endpoint.create(
        app.id,
        EndpointIn(url=hook_url, filter_types=["call.*"], description="CRM"),
    )
    assert endpoint.filter_types == ["call.*"], endpoint
    secret = svix.endpoint.get_secret(app.id, endpoint.id).key
    assert secret.startswith("whsec_")

    event_types = svix.event_type.list()
    assert any(t.name == "call.completed" for t in event_types.data)

    message = svix.message.create(
        app.id,
        MessageIn(
            event_type="call.completed",
            payload={"callId": "call_1", "durationSeconds": 395},
            event_id="evt-1",
        ),
        MessageCreateOptions(idempotency_key="idem-1"),
    )
    assert message.id.startswith("msg_"), message
    again = svix.message.create(
        app.id,
        MessageIn(event_type="call.completed", payload={"callId": "call_1", "durationSeconds": 395}, event_id="evt-1"),
        MessageCreateOptions(idempotency_key="idem-1"),
    )
    assert again.id == message.id, "the idempotency key replays the first response"

    headers, body = received.get(timeout=15)
    standardwebhooks.Webhook(secret).verify(body, headers)
    Webhook(secret).verify(body, headers)
    assert json.loads(body)["data"]["callId"] == "call_1"

    messages = svix.message.list(app.id)
    assert [m.id for m in messages.data] == [message.id], messages

    attempts = svix.message_attempt.list_by_msg(app.id, message.id)
    for _ in range(50):
        if attempts.data:
            break
        threading.Event().wait(0.1)
        attempts = svix.message_attempt.list_by_msg(app.id, message.id)
    assert attempts.data and attempts.data[0].response_status_code == 204, attempts
    by_endpoint = svix.message_attempt.list_by_endpoint(
        app.id, endpoint.id, MessageAttemptListByEndpointOptions(limit=10)
    )
    assert by_endpoint.data[0].msg_id == message.id
    attempt = svix.message_attempt.get(app.id, message.id, attempts.data[0].id)
    assert attempt.id == attempts.data[0].id

    svix.endpoint.rotate_secret(app.id, endpoint.id, __import__("svix").api.EndpointSecretRotateIn())
    stats = svix.endpoint.get_stats(app.id, endpoint.id)
    assert stats.success == 1, stats
    svix.endpoint.delete(app.id, endpoint.id)
    svix.application.delete(app.id)
    print("svix smoke test passed")


if __name__ == "__main__":
    main()
