"""A Slack-shaped chat receiver for Herald: what an incoming-webhook URL of
a team chat receives when the endpoint carries a transformation, so that
Herald posts straight to the chat with no relay of your own.

The endpoint is created with a transformation that yields the chat's body,
for example (a CEL expression over the message):

    {"text": "Call " + data.callId + " completed in "
             + string(data.durationSeconds) + " s"}

and a filter such as `data.direction == "inbound"`. This stand-in verifies
the Standard Webhooks signature (which Herald puts on a transformed body
as on any other) with the `standardwebhooks` package, checks the body has
the chat's shape (a `text` string and nothing else), and prints the line
the channel would show.

    pip install standardwebhooks==1.1.0
    WEBHOOK_SECRET=whsec_... python chat_receiver.py [port]

Prints "listening on http://127.0.0.1:PORT/chat", then "chat: <text>" per
message. Answers 200 "ok" as the chat does; 401 to a bad signature, 400 to
a body that is not the chat's shape."""

import http.server
import os
import sys

from standardwebhooks import Webhook, WebhookVerificationError

webhook = Webhook(os.environ["WEBHOOK_SECRET"])


class Handler(http.server.BaseHTTPRequestHandler):
    def answer(self, status, text):
        body = text.encode()
        self.send_response(status)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        try:
            message = webhook.verify(body, dict(self.headers))
        except WebhookVerificationError as error:
            print(f"rejected: {error}", flush=True)
            return self.answer(401, "invalid_signature")
        if not isinstance(message, dict) or set(message) != {"text"} or not isinstance(message["text"], str):
            print(f"not a chat message: {body!r}", flush=True)
            return self.answer(400, "invalid_payload")
        print(f"chat: {message['text']}", flush=True)
        self.answer(200, "ok")

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 3001
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/chat", flush=True)
    server.serve_forever()
