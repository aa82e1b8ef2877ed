// A webhook receiver for Herald in Node.js: verifies each request with the
// `standardwebhooks` npm package and acts on the conversation platform's
// events.
//
//   npm ci
//   WEBHOOK_SECRET=whsec_... node receiver.mjs [port]
//
// Prints "listening on http://127.0.0.1:PORT/webhooks", then one line per
// event. Answers 204 to events it handled, 401 to requests whose signature
// does not verify.
import http from 'node:http';
import { Webhook } from 'standardwebhooks';

// The npm package takes the secret's base64 without the `whsec_` prefix.
const webhook = new Webhook(process.env.WEBHOOK_SECRET.replace(/^whsec_/, ''));

const actions = {
  'call.completed': (call) =>
    console.log(`CRM: call ${call.callId} with ${call.contactId} lasted ${call.durationSeconds} s`),
  'contact.created': (contact) =>
    console.log(`chat: new contact ${contact.firstName} ${contact.lastName} (${contact.contactId})`),
  'call.failed': (call) =>
    console.log(`task: call back ${call.to} (call ${call.callId} failed: ${call.reason})`),
};

const server = http.createServer((request, response) => {
  const chunks = [];
  request.on('data', (chunk) => chunks.push(chunk));
  request.on('end', () => {
    const body = Buffer.concat(chunks).toString('utf8');
    let event;
    try {
      event = webhook.verify(body, request.headers);
    } catch (error) {
      console.log(`rejected: ${error.message}`);
      response.writeHead(401).end();
      return;
    }
    const action = actions[event.type];
    if (action) action(event.data);
    else console.log(`ignored: ${event.type}`);
    response.writeHead(204).end();
  });
});

server.listen(Number(process.argv[2] ?? 3000), '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/webhooks`);
});
