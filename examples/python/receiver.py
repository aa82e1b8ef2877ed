"""A webhook receiver for Herald in Python: verifies each request with the
`standardwebhooks` package and acts on the conversation platform's events.

    pip install standardwebhooks==1.1.0
    WEBHOOK_SECRET=whsec_... python receiver.py [port]

Prints "listening on http://127.0.0.1:PORT/webhooks", then one line per
event. Answers 204 to events it handled, 401 to requests whose signature
does not verify (Herald retries those; a forger gets nothing)."""

import http.server
import json
import os
import sys

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])


def update_crm(call):
    print(f"CRM: call {call['callId']} with {call.get('contactId')} lasted {call['durationSeconds']} s", flush=True)


def notify_chat(contact):
    print(f"chat: new contact {contact.get('firstName')} {contact.get('lastName')} ({contact['contactId']})", flush=True)


def follow_up(call):
    print(f"task: call back {call['to']} (call {call['callId']} failed: {call['reason']})", flush=True)


ACTIONS = {
    "call.completed": update_crm,
    "contact.created": notify_chat,
    "call.failed": follow_up,
}


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            event = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError as error:
            print(f"rejected: {error}", flush=True)
            self.send_response(401)
            self.end_headers()
            return
        action = ACTIONS.get(event["type"])
        if action:
            action(event["data"])
        else:
            print(f"ignored: {event['type']}", flush=True)
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/webhooks", flush=True)
    server.serve_forever()
