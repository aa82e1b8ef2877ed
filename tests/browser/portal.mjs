// Walks Herald's portal in Debian's Chromium as a customer would, asserting
// what each page shows. Run by crates/herald/tests/api/browser.rs with:
//   HERALD_TEST_BROWSER  the Chromium executable
//   PORTAL_LINK          a link from POST /api/v1/auth/app-portal-access/{app}/
//   ENDPOINT_URL         the URL of the app's endpoint, expected in the list
//   NEW_ENDPOINT_URL     a receiver URL to create an endpoint for (answers 200 "received")
//   OTHER_APP_PATH       a portal path of another app, expected to be "not found"
//   READ_ONLY_LINK       a `readOnly: true` portal link of the same app
//   SCREENSHOTS          the folder screenshots are saved to
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import fs, { mkdirSync } from 'node:fs';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const screenshots = env('SCREENSHOTS');

// Every page: under 100 KB, every visible field labelled, one h1, and the
// stylesheet loaded from the binary.
const checked = new Set();
async function checkPage(page) {
  const path = new URL(page.url()).pathname.replace(/(app|ep)_[0-9A-Z]+/g, '$1_*');
  const report = await page.evaluate(() => {
    const unlabelled = [...document.querySelectorAll('input, select, textarea')]
      .filter((field) => field.type !== 'hidden')
      .filter((field) => !(field.labels && field.labels.length) && !field.getAttribute('aria-label'))
      .map((field) => field.name || field.id);
    return {
      bytes: new TextEncoder().encode(document.documentElement.outerHTML).length,
      unlabelled,
      headings: document.querySelectorAll('h1').length,
      styled: getComputedStyle(document.body).fontFamily.includes('system-ui'),
    };
  });
  assert.ok(report.bytes < 100 * 1024, `${path} is ${report.bytes} bytes`);
  assert.deepEqual(report.unlabelled, [], `${path}: fields without a label`);
  assert.equal(report.headings, 1, `${path}: one h1`);
  assert.ok(report.styled, `${path}: the stylesheet applies`);
  checked.add(path);
}
mkdirSync(screenshots, { recursive: true });
const browser = await chromium.launch({
  executablePath: env('HERALD_TEST_BROWSER'),
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
try {
  const page = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  // Each page is checked as it loads; a page that navigates on at once
  // (the login page posting a link's token) is checked at its next load.
  page.on('load', () => {
    page.pendingCheck = checkPage(page).catch((e) => {
      if (!String(e).includes('Execution context was destroyed')) page.failedCheck ??= e;
    });
  });

  // The link logs the customer in and lands on their endpoints; the token
  // leaves the address bar.
  await page.goto(env('PORTAL_LINK'));
  await page.waitForURL(/\/portal\/app\//);
  assert.ok(!page.url().includes('token='), `the token left the URL: ${page.url()}`);
  assert.equal(await page.locator('h1').innerText(), 'Endpoints');
  const row = page.locator('table.endpoints tbody tr');
  assert.equal(await row.count(), 1);
  assert.ok((await row.first().innerText()).includes(env('ENDPOINT_URL')));
  assert.ok((await row.first().locator('.badge').first().innerText()).includes('enabled'));
  await page.screenshot({ path: `${screenshots}/endpoints.png`, fullPage: true });

  // On a phone's width the table becomes a list, still readable.
  await page.setViewportSize({ width: 390, height: 800 });
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal scrolling on a phone (${width}px)`);
  await page.screenshot({ path: `${screenshots}/endpoints-phone.png`, fullPage: true });
  await page.setViewportSize({ width: 1200, height: 800 });

  // Create an endpoint for call.* and contact.created; a bad URL first.
  await page.getByRole('link', { name: 'Add endpoint' }).click();
  await page.waitForURL(/endpoints\/new$/);
  await page.fill('#url', 'ftp://example.com/hook');
  await page.locator('#url').evaluate((input) => { input.type = 'text'; });
  await page.check('#some-events');
  await page.check('input[value="call.*"]');
  await page.check('input[value="contact.created"]');
  await page.getByRole('button', { name: 'Create endpoint' }).click();
  const refusal = await page.locator('p.error').innerText();
  assert.ok(refusal.includes('URL') && refusal.includes('ftp'), `the server's rule is shown: ${refusal}`);
  assert.ok(await page.isChecked('input[value="call.*"]'), 'the choices are kept');
  await page.screenshot({ path: `${screenshots}/new-endpoint.png`, fullPage: true });
  await page.fill('#url', env('NEW_ENDPOINT_URL'));
  await page.getByRole('button', { name: 'Check URL' }).click();
  await page.waitForSelector('#url-check');
  assert.ok((await page.locator('#url-check').innerText()).includes('answered 200'));
  assert.ok(await page.isChecked('input[value="contact.created"]'), 'the choices are kept');
  await page.getByRole('button', { name: 'Create endpoint' }).click();
  await page.waitForURL(/\/endpoint\/ep_/);
  assert.equal(await page.locator('#events').innerText(), 'call.*, contact.created');

  // Send a test call.completed and see the receiver's answer.
  await page.selectOption('#event_type', 'call.completed');
  await page.getByRole('button', { name: 'Send test event' }).click();
  await page.waitForSelector('#test-result');
  assert.equal(await page.locator('#result-status').innerText(), '200');
  assert.equal(await page.locator('#result-body').innerText(), 'received');
  assert.ok((await page.locator('#result-outcome').innerText()).includes('success'));
  await page.screenshot({ path: `${screenshots}/endpoint.png`, fullPage: true });
  // The result has an address of its own: reloading shows it again and
  // sends nothing (the receiver's next scripted answer is still the 500).
  assert.match(page.url(), /\?test=msg_/);
  await page.reload();
  assert.equal(await page.locator('#result-status').innerText(), '200');
  const endpointPage = page.url().replace(/[?#].*$/, '');

  // The receiver fails the next one: the failure shows in the activity log.
  await page.selectOption('#event_type', 'call.completed');
  await page.getByRole('button', { name: 'Send test event' }).click();
  await page.waitForSelector('#test-result');
  assert.equal(await page.locator('#result-status').innerText(), '500');
  await page.goto(endpointPage);
  await page.click('#activity-link');
  await page.waitForURL(/\/activity/);
  const newest = page.locator('li.attempt').first();
  assert.equal(await newest.getAttribute('data-status'), 'failed');
  assert.ok((await newest.locator('.badge').innerText()).includes('500'));
  await newest.locator('summary').click();
  assert.ok((await newest.locator('pre').first().innerText()).includes('"call.completed"'));
  const headers = await newest.locator('table.headers').innerText();
  assert.ok(headers.includes('webhook-signature') && headers.includes('<redacted>'), headers);
  await page.screenshot({ path: `${screenshots}/activity.png`, fullPage: true });

  // The receiver is fixed (it answers 200 from now on): retry, and see success.
  await newest.getByRole('button', { name: 'Retry' }).click();
  await page.waitForURL(/notice=retried/);
  for (let tries = 0; ; tries++) {
    const top = page.locator('li.attempt').first();
    if ((await top.getAttribute('data-status')) === 'succeeded') {
      assert.ok((await top.innerText()).includes('manual'));
      break;
    }
    assert.ok(tries < 50, 'the retry succeeded within 10 s');
    await page.waitForTimeout(200);
    await page.reload();
  }

  // Filters: failed call.completed attempts are one; contact.created none.
  await page.selectOption('#status', 'failed');
  await page.fill('#event_type_filter', 'call.completed');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/status=failed/);
  assert.equal(await page.locator('li.attempt').count(), 1);
  await page.selectOption('#status', '');
  await page.fill('#event_type_filter', 'contact.created');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/event_type=contact.created/);
  assert.equal(await page.locator('li.attempt').count(), 0);
  assert.ok(await page.locator('p.empty').isVisible());

  // The app-wide log has the same attempts, each naming its endpoint, and
  // keeps its own filters.
  await page.goto(new URL(endpointPage).href.replace(/\/endpoint\/.*$/, ''));
  await page.click('#app-activity-link');
  await page.waitForURL(/\/portal\/app\/app_[^/]+\/activity$/);
  assert.equal(await page.locator('li.attempt').count(), 3);
  // Each names the URL it went to (the endpoint's, which the walk-through
  // edits at one point).
  assert.ok((await page.locator('li.attempt a.endpoint').first().innerText()).startsWith(env('ENDPOINT_URL')));
  await page.selectOption('#status', 'failed');
  await page.getByRole('button', { name: 'Filter' }).click();
  await page.waitForURL(/\/activity\?status=failed/);
  assert.equal(await page.locator('li.attempt').count(), 1);
  // Export what the filters keep, all pages, as CSV and as JSON Lines.
  const downloaded = async (link) => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(link)]);
    return fs.readFileSync(await download.path(), 'utf8');
  };
  const csv = (await downloaded('#export-csv')).trim().split('\r\n');
  assert.equal(csv.length, 2, csv.join('\n'));
  assert.ok(csv[0].startsWith('id,timestamp,msgId,endpointId,url,status,statusText'), csv[0]);
  assert.ok(csv[1].includes(',fail,500,'), csv[1]);
  const lines = (await downloaded('#export-jsonl')).trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.length, 1);
  assert.equal(lines[0].statusText, 'fail');

  // The endpoint's chart of the last 24 hours counts the three attempts
  // (health is aggregated once a second).
  for (let tries = 0; ; tries++) {
    await page.goto(endpointPage);
    const label = await page.locator('#day-chart').getAttribute('aria-label');
    if (label.includes('3 in all, 1 failed')) break;
    assert.ok(tries < 25, `the chart caught up within 5 s: ${label}`);
    await page.waitForTimeout(200);
  }
  assert.equal(await page.locator('p.recent .dot').count(), 3);
  assert.equal(await page.locator('p.recent .dot.off').count(), 1);
  await page.screenshot({ path: `${screenshots}/endpoint-health.png`, fullPage: true });

  // Rotate the secret: revealed before and after, and different.
  let confirmations = 0;
  page.on('dialog', (dialog) => { confirmations += 1; dialog.accept(); });
  await page.goto(endpointPage);
  await page.click('#reveal');
  const before = await page.locator('#secret').innerText();
  assert.ok(before.startsWith('whsec_'), before);
  await page.click('#rotate');
  await page.waitForURL(/notice=rotated/);
  assert.equal(confirmations, 1, 'rotating asked first');
  await page.click('#reveal');
  const after = await page.locator('#secret').innerText();
  assert.ok(after.startsWith('whsec_') && after !== before, 'a new secret');

  // Disable, then enable again.
  await page.click('#disable');
  await page.waitForURL(/notice=disabled/);
  assert.ok((await page.locator('dl.facts .badge').first().innerText()).startsWith('disabled'));
  await page.click('#enable');
  await page.waitForURL(/notice=enabled/);
  assert.equal(await page.locator('dl.facts .badge').first().innerText(), 'enabled');

  // Edit: a description and a rate limit; the events stay as chosen.
  await page.click('#edit-link');
  await page.waitForURL(/\/edit$/);
  assert.ok(await page.isChecked('input[value="contact.created"]'), 'the form shows the current events');
  await page.fill('#description', 'CRM updates');
  await page.fill('#rate_limit', '10');
  await page.selectOption('#retry_kind', 'exponential');
  await page.fill('#retry_initial', '5s');
  await page.fill('#retry_factor', '2');
  await page.fill('#retry_max_attempts', '4');
  await page.fill('#headers', 'Authorization: Bearer crm-token-77\nX-Tenant: acme');
  // A filter and a transformation, tried on the catalog's example first.
  const slack = '{"text": "Call " + data.callId + " completed in " + string(data.durationSeconds) + " s"}';
  const tryIt = async () => {
    await page.getByRole('button', { name: 'Try it' }).click();
    await page.waitForSelector('#expression-preview');
    return page.locator('#expression-preview').innerText();
  };
  await page.fill('#filter', 'data.direction == "outbound"');
  await page.fill('#transformation', slack);
  await page.selectOption('#preview_type', 'call.completed');
  assert.ok((await tryIt()).includes('filtered out'));
  await page.fill('#filter', 'data.direction == "inbound"');
  assert.ok((await tryIt()).includes('passes'));
  assert.equal(JSON.parse(await page.locator('#preview-body').innerText()).text,
    'Call call_2Nf8sK1xQ completed in 395 s');
  await page.screenshot({ path: `${screenshots}/try-expressions.png`, fullPage: true });
  await page.fill('#transformation', '{"text": data.callId +}');
  assert.ok((await tryIt()).includes('syntax error'));
  await page.fill('#transformation', slack);
  assert.equal(await page.inputValue('#description'), 'CRM updates', 'trying keeps the form');
  await page.getByRole('button', { name: 'Save changes' }).click();
  const missing = await page.locator('p.error').innerText();
  assert.ok(missing.includes('maxDelay'), `the policy's missing field is named: ${missing}`);
  await page.fill('#retry_max_delay', '1h');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.waitForURL(/notice=saved/);
  assert.equal(await page.locator('#events').innerText(), 'call.*, contact.created');
  // Editing again shows the credential masked; saving keeps it.
  await page.click('#edit-link');
  const shown = await page.inputValue('#headers');
  assert.ok(shown.includes('authorization: <redacted>') && shown.includes('x-tenant: acme'), shown);
  assert.ok(!(await page.content()).includes('crm-token-77'), 'the credential never reaches the page');
  assert.equal(await page.inputValue('#filter'), 'data.direction == "inbound"');
  assert.equal(await page.inputValue('#transformation'), slack);
  assert.equal(await page.inputValue('#retry_kind'), 'exponential');
  await page.getByRole('button', { name: 'Save changes' }).click();
  await page.waitForURL(/notice=saved/);

  // Recover what failed in the last hour.
  await page.goto(endpointPage);
  const hourAgo = new Date(Date.now() - 3600 * 1000);
  const local = new Date(hourAgo.getTime() - hourAgo.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
  await page.fill('#since', local);
  await page.getByRole('button', { name: 'Recover' }).click();
  await page.waitForURL(/notice=recovering/);
  assert.ok((await page.locator('p.notice').innerText()).includes('Recovery started'));

  // The event catalog: every type with its description, example and schema.
  await page.goto(new URL(endpointPage).href.replace(/\/endpoint\/.*$/, '/catalog'));
  const completed = page.locator('section.event-type[id="call.completed"]');
  await completed.locator('summary', { hasText: 'Example payload' }).click();
  assert.ok((await completed.locator('pre.example').innerText()).includes('callId'));
  await completed.locator('summary', { hasText: 'JSON Schema' }).click();
  assert.ok((await completed.locator('pre.schema').innerText()).includes('"properties"'));
  await page.screenshot({ path: `${screenshots}/catalog.png`, fullPage: true });

  // Alert rules: a bad address is refused with the field named; then
  // only failures of call.completed, after 3 in a row, also e-mailed.
  await page.goto(new URL(endpointPage).href.replace(/\/endpoint\/.*$/, '/alerts'));
  await page.fill('#email_to', 'nobody');
  await page.getByRole('button', { name: 'Save alert rules' }).click();
  assert.ok((await page.locator('p.error').innerText()).includes('emailTo'));
  for (const event of ['endpoint.disabled', 'endpoint.success_rate_dropped', 'message.attempt.recovered']) {
    await page.uncheck(`input[value="${event}"]`);
  }
  await page.fill('#filter_types', 'call.completed');
  await page.fill('#failing_after', '3');
  await page.fill('#email_to', 'crm-team@example.com');
  await page.getByRole('button', { name: 'Save alert rules' }).click();
  await page.waitForURL(/saved=1/);
  assert.equal(await page.inputValue('#failing_after'), '3');
  assert.ok(!(await page.isChecked('input[value="endpoint.disabled"]')));
  await page.screenshot({ path: `${screenshots}/alerts.png`, fullPage: true });
  await page.goto(new URL(endpointPage).href.replace(/\/endpoint\/.*$/, '/egress'));
  assert.ok(await page.locator('#egress-none').isVisible());

  // The test inspector: create an address, send it a request, see it.
  await page.goto(new URL(endpointPage).href.replace(/\/endpoint\/.*$/, '/inspector'));
  await page.getByRole('button', { name: 'Create an inspector address' }).click();
  const inspectorUrl = await page.locator('#inspector-url').innerText();
  assert.match(inspectorUrl, /\/inspect\/[A-Za-z0-9_-]{43}$/);
  assert.ok(await page.locator('#inspector-empty').isVisible());
  const sent = await page.request.post(`${inspectorUrl}/crm?via=browser-test`, {
    data: { type: 'contact.created', data: { contactId: 'ct_9' } },
  });
  assert.equal(sent.status(), 200);
  await page.getByRole('link', { name: 'Refresh' }).click();
  const inspected = page.locator('#inspected tbody tr').first();
  assert.match(await inspected.innerText(), /POST \/crm\?via=browser-test/);
  assert.match(await inspected.locator('td.signature').innerText(), /unsigned/);
  await inspected.getByText('Body').click();
  assert.match(await inspected.locator('pre').innerText(), /"contactId": "ct_9"/);
  await page.screenshot({ path: `${screenshots}/inspector.png`, fullPage: true });
  await page.getByRole('link', { name: 'Add an endpoint pointing here' }).click();
  assert.equal(await page.inputValue('#url'), inspectorUrl);

  // The list shows the description under the URL.
  await page.goto(new URL(endpointPage).href.replace(/\/endpoint\/.*$/, ''));
  assert.ok((await page.locator('table.endpoints').innerText()).includes('CRM updates'));

  // Another app's page is not found.
  const other = await page.goto(new URL(env('OTHER_APP_PATH'), page.url()).href);
  assert.equal(other.status(), 404);

  // A delivery waiting for its retry (an hour away) shows in its
  // endpoint's log with the time it is due.
  const api = async (path, body) => {
    const answer = await fetch(`${env('API_BASE')}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env('API_TOKEN')}`, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
    const text = await answer.text();
    assert.ok(answer.ok, `${path}: ${answer.status} ${text}`);
    return JSON.parse(text);
  };
  const appId = env('APP_ID');
  const waiting = await api(`/app/${appId}/endpoint/`, {
    url: env('PENDING_URL'), filterTypes: ['campaign.started'],
    retryPolicy: { type: 'schedule', schedule: ['1h'] },
  });
  await api(`/app/${appId}/msg/`, {
    eventType: 'campaign.started', payload: { campaignId: 'cmp_1', name: 'Spring', channel: 'voice' },
  });
  const appBase = new URL(endpointPage).href.replace(/\/endpoint\/.*$/, '');
  for (let tries = 0; ; tries++) {
    await page.goto(`${appBase}/endpoint/${waiting.id}/activity`);
    const row = page.locator('table.pending tbody tr').first();
    if ((await row.count()) === 1 && (await row.getAttribute('data-status')) === 'pending') {
      const text = await row.innerText();
      assert.ok(text.includes('campaign.started') && /\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/.test(text), text);
      break;
    }
    assert.ok(tries < 50, 'the retry waits, pending, within 10 s');
    await page.waitForTimeout(200);
  }
  assert.equal(await page.locator('li.attempt').first().getAttribute('data-status'), 'failed');
  await page.screenshot({ path: `${screenshots}/pending.png`, fullPage: true });
  // The message's own page: where it went, and when its retry is due.
  await page.locator('li.attempt a.message').first().click();
  await page.waitForURL(/\/msg\/msg_/);
  assert.equal(await page.locator('#message-type').innerText(), 'campaign.started');
  const destination = page.locator('table.destinations tbody tr');
  assert.equal(await destination.count(), 1);
  assert.equal(await destination.getAttribute('data-status'), 'pending');
  assert.match(await destination.innerText(), /waiting to be sent\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC/);
  assert.ok((await page.locator('#message-payload').innerText()).includes('"campaignId": "cmp_1"'));
  await page.screenshot({ path: `${screenshots}/message.png`, fullPage: true });

  // Logging out ends the session.
  await page.goto(endpointPage);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL(/\/portal\/login/);
  await page.screenshot({ path: `${screenshots}/login.png`, fullPage: true });
  const back = await page.goto(new URL('/portal', page.url()).href);
  assert.ok(page.url().endsWith('/portal/login'), `logged out: ${page.url()} (${back.status()})`);
  await page.pendingCheck;
  if (page.failedCheck) throw page.failedCheck;

  // A read-only link shows the same app with no control that changes
  // anything: the only buttons left log out, filter and reveal the secret.
  const viewer = await (await browser.newContext({ viewport: { width: 1200, height: 800 } })).newPage();
  await viewer.goto(env('READ_ONLY_LINK'));
  await viewer.waitForURL(/\/portal\/app\//);
  const appPage = viewer.url();
  assert.ok(await viewer.locator('#read-only').isVisible(), 'the list says read-only');
  assert.equal(await viewer.getByRole('link', { name: 'Add endpoint' }).count(), 0);
  await viewer.locator('table.endpoints tbody tr a').first().click();
  await viewer.waitForURL(/\/endpoint\/ep_/);
  const viewerEndpoint = viewer.url();
  for (const path of [appPage, viewerEndpoint, `${viewerEndpoint}/activity`, `${appPage}/activity`,
    `${appPage}/alerts`, `${appPage}/inspector`, `${appPage}/catalog`]) {
    await viewer.goto(path);
    const buttons = await viewer.locator('button').evaluateAll(
      (all) => all.map((b) => b.textContent.trim()));
    const changing = buttons.filter((b) => !['Log out', 'Filter', 'Reveal secret', 'Copy'].includes(b));
    assert.deepEqual(changing, [], `${path} offers ${changing.join(', ')}`);
    assert.equal(await viewer.getByRole('link', { name: 'Edit' }).count(), 0, `${path}: no edit link`);
  }
  await viewer.goto(viewerEndpoint);
  await viewer.getByRole('button', { name: 'Reveal secret' }).click();
  assert.ok((await viewer.locator('#secret').innerText()).startsWith('whsec_'), 'reading the secret works');
  await viewer.screenshot({ path: `${screenshots}/read-only-endpoint.png`, fullPage: true });

  // The API reference renders from the vendored Redoc, with nothing
  // refused by its content security policy and no script error.
  const docs = await browser.newPage({ viewport: { width: 1200, height: 800 } });
  const problems = [];
  docs.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  docs.on('pageerror', (e) => problems.push(String(e)));
  docs.on('requestfailed', (r) => problems.push(`${r.url()}: ${r.failure()?.errorText}`));
  await docs.goto(new URL('/docs', page.url()).href);
  await docs.getByRole('heading', { name: 'Create an endpoint.' }).waitFor({ timeout: 20000 });
  assert.equal(await docs.title(), 'Herald API');
  assert.ok(await docs.getByRole('heading', { name: 'Send a message: it fans out to every matching endpoint.' }).isVisible());
  assert.deepEqual(problems, [], 'the docs page loads cleanly');
  await docs.screenshot({ path: `${screenshots}/docs.png` });

  assert.ok(checked.size >= 9, `pages checked: ${[...checked].join(', ')}`);
  console.log(`portal walk-through passed; pages checked: ${[...checked].sort().join(', ')}`);
} finally {
  await browser.close();
}
