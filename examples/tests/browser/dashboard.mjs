// Drives Debian's headless Chromium (through playwright-core) through the dashboard of a
// running job, as examples/tests/dashboard_browser.rs asks:
//
//   node dashboard.mjs --url http://127.0.0.1:PORT/ --token-file CHECKPOINT/control-token \
//       --screenshot target/test-artifacts/dashboard.png --tools target/browser-tools
//
// It waits until the input-rate chart has at least 3 points and every chart has exactly one
// point per completed batch that /api/v1/batches lists, checks the supervision tree shows
// receiver-0 with 0 restarts, opens a batch's detail, kills receiver-0 through
// POST /api/v1/actors/receiver-0/kill with the token, and waits until the same page (never
// reloaded) shows data-restarts="1" for it, then the actor running again. Then it saves a full-page screenshot and prints
// one JSON line of what it saw; on a failure the line has "error" (and a screenshot is still
// taken) and the exit code is 1. Every wait is bounded.
import { createRequire } from 'node:module';
import { readFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    url: { type: 'string' },
    'token-file': { type: 'string' },
    screenshot: { type: 'string' },
    tools: { type: 'string' },
    actor: { type: 'string', default: 'receiver-0' },
    chromium: { type: 'string', default: '/usr/bin/chromium' },
    'timeout-ms': { type: 'string', default: '60000' },
  },
});
for (const required of ['url', 'token-file', 'screenshot', 'tools']) {
  if (!args[required]) {
    console.error(`dashboard.mjs: --${required} is required`);
    process.exit(2);
  }
}

// playwright-core lives under target/ (setup.sh), not beside this script.
const require = createRequire(join(resolve(args.tools), 'package.json'));
const { chromium } = require('playwright-core');

const base = args.url.endsWith('/') ? args.url : args.url + '/';
const timeout = Number(args['timeout-ms']);
const actor = args.actor;
const seen = { url: base, actor, page_errors: [], console_errors: [] };

async function api(path, init) {
  const res = await fetch(new URL(path, base), init);
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch (_) {
    body = text;
  }
  return { status: res.status, body };
}

async function completedBatches() {
  const { status, body } = await api('api/v1/batches?limit=1000');
  if (status !== 200) throw new Error(`GET /api/v1/batches answered ${status}`);
  return body.batches.filter((b) => b.status === 'completed').length;
}

const CHARTS = ['chart-input-rate', 'chart-scheduling-delay', 'chart-processing-time', 'chart-total-delay'];

async function chartPoints(page) {
  return page.evaluate((ids) => Object.fromEntries(ids.map((id) => {
    const node = document.getElementById(id);
    return [id, node ? Number(node.getAttribute('data-points')) : null];
  })), CHARTS);
}

async function restartsShown(page) {
  return page.evaluate((name) => {
    const row = document.querySelector(`[data-actor="${CSS.escape(name)}"]`);
    return row ? Number(row.getAttribute('data-restarts')) : null;
  }, actor);
}

const browser = await chromium.launch({
  executablePath: args.chromium,
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  timeout,
});
let page;
let failed = false;
try {
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(timeout);
  page.on('pageerror', (err) => seen.page_errors.push(String(err)));
  page.on('console', (msg) => {
    if (msg.type() === 'error') seen.console_errors.push(msg.text());
  });

  await page.goto(base, { waitUntil: 'domcontentloaded' });
  seen.title = await page.title();

  // The stream is up and the charts have points.
  await page.waitForFunction(() => document.getElementById('live-badge').textContent === 'live');
  seen.badge_before = await page.textContent('#live-badge');
  await page.waitForFunction(
    () => Number(document.getElementById('chart-input-rate').getAttribute('data-points')) >= 3);

  // One point per completed batch: batches keep completing, so wait (bounded) for a moment
  // where the API's count and every chart's agree.
  const deadline = Date.now() + timeout;
  for (;;) {
    const before = await completedBatches();
    const points = await chartPoints(page);
    const after = await completedBatches();
    seen.api_completed = after;
    seen.points = points;
    if (before === after && Object.values(points).every((n) => n === after)) break;
    if (Date.now() > deadline) throw new Error(`the charts never matched the API: ${JSON.stringify(seen)}`);
    await page.waitForTimeout(100);
  }

  // The tree lists the actor, not restarted yet.
  await page.waitForSelector(`[data-actor="${actor}"]`);
  seen.restarts_before = await restartsShown(page);
  seen.tree_actors = await page.$$eval('[data-actor]', (rows) => rows.length);

  // A click on the newest completed batch that read records opens its detail: its outputs
  // and its records per source.
  await page.waitForFunction(() => [...document.querySelectorAll('#batch-rows tr[data-batch]')]
    .some((row) => row.querySelector('.state-completed') && row.cells[2].textContent !== '0'));
  const batch = await page.evaluate(() => [...document.querySelectorAll('#batch-rows tr[data-batch]')]
    .find((row) => row.querySelector('.state-completed') && row.cells[2].textContent !== '0')
    .getAttribute('data-batch'));
  await page.click(`#batch-rows tr[data-batch="${batch}"]`);
  await page.waitForSelector('#batch-detail:not([hidden])');
  seen.detail_title = await page.textContent('#detail-title');
  seen.detail_outputs = await page.$$eval('#detail-outputs tr:not(.empty)', (rows) => rows.length);
  seen.detail_sources = await page.$$eval('#detail-sources tr:not(.empty)', (rows) =>
    rows.map((row) => [...row.cells].slice(0, 2).map((cell) => cell.textContent)));

  // Kill the actor through the API, with the token; the same page must show the restart.
  // The event log keeps only its last 50 lines, which a few batches fill, so the events it
  // shows are recorded as they appear.
  await page.evaluate(() => {
    window.__weirNotReloaded = true;
    window.__weirLogged = [];
    new MutationObserver((changes) => {
      for (const change of changes) {
        for (const node of change.addedNodes) {
          if (node.getAttribute) {
            const actorNode = node.querySelector('.event-actor');
            window.__weirLogged.push(
              `${node.getAttribute('data-kind')} ${actorNode ? actorNode.textContent : ''}`);
          }
        }
      }
    }).observe(document.getElementById('event-log'), { childList: true });
  });
  const token = readFileSync(args['token-file'], 'utf8').trim();
  const kill = await api(`api/v1/actors/${encodeURIComponent(actor)}/kill`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${token}` },
  });
  seen.kill = kill;
  if (kill.status !== 200) throw new Error(`the kill answered ${kill.status}: ${JSON.stringify(kill.body)}`);
  const killedAt = Date.now();
  await page.waitForSelector(`[data-actor="${actor}"][data-restarts="1"]`);
  seen.restart_shown_after_ms = Date.now() - killedAt;
  seen.restarts_after = await restartsShown(page);
  // ... and then the actor running again (its supervisor restarts it after a backoff).
  await page.waitForSelector(`[data-actor="${actor}"][data-restarts="1"][data-state="running"]`);
  seen.running_again_after_ms = Date.now() - killedAt;
  seen.not_reloaded = await page.evaluate(() => window.__weirNotReloaded === true);
  const logged = await page.evaluate(() => window.__weirLogged);
  seen.failure_in_event_log = logged.includes(`actor_failed ${actor}`);
  seen.restart_in_event_log = logged.includes(`actor_restarted ${actor}`);
  seen.badge_after = await page.textContent('#live-badge');
} catch (err) {
  failed = true;
  seen.error = String(err && err.stack ? err.stack : err);
} finally {
  if (page) {
    try {
      mkdirSync(dirname(args.screenshot), { recursive: true });
      await page.evaluate(() => window.scrollTo(0, 0)); // the sticky tabs at the top
      await page.screenshot({ path: args.screenshot, fullPage: true });
      seen.screenshot = args.screenshot;
    } catch (err) {
      seen.screenshot_error = String(err);
      failed = true;
    }
  }
  await browser.close();
}
console.log(JSON.stringify(seen));
process.exit(failed ? 1 : 0);
