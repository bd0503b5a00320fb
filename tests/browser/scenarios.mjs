// Browser scenarios for the chat client, in Debian's headless Chromium driven by
// playwright-core. tests/api/browser.rs starts the servers and runs one scenario per test:
//
//   node tests/browser/scenarios.mjs <scenario>
//
// Configuration comes from the environment: CHAT_URL_A and CHAT_URL_B (server base URLs),
// CHAT_ROOM (a room id unique to the test), CHAT_SCREENSHOT (where to save the screenshot)
// and CHROMIUM (the browser binary, /usr/bin/chromium by default).
//
// Protocol with the Rust side, one line each on stdout: `control:<what>` asks it to act (stop
// or start a server) and waits for `done:<what>` on stdin; `passed:<scenario>` ends a scenario
// that passed. Everything else goes to stderr. Every wait has a deadline; nothing sleeps to
// synchronise: the scenarios wait for what the page shows.

import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

import { chromium } from 'playwright-core';

import { REMOVED, SENTENCES, SIGN_IN_REQUIRED, typingSentence } from '../../src/http/client/api.js';

const WAIT_MS = 15000;
const SCENARIO_LIMIT_MS = 100000;
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};

const log = (...parts) => console.error('[browser]', ...parts);

// ---- the Rust side ---------------------------------------------------------------------

const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the test to do something (stop or start a server) and waits until it is done. */
async function control(what) {
  process.stdout.write(`control:${what}\n`);
  const { value, done } = await stdinLines.next();
  assert.ok(!done, `stdin closed while waiting for done:${what}`);
  assert.equal(value, `done:${what}`);
}

// ---- browsers and pages ----------------------------------------------------------------

const cleanups = [];
const dialogs = [];
const pageErrors = [];

/** A separate Chromium process with a fresh profile directory: one "browser" of a person. */
async function openBrowser(name, { viewport = { width: 960, height: 640 }, initScript } = {}) {
  const profile = await mkdtemp(join(tmpdir(), `chat-browser-${name}-`));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    viewport,
    locale: 'en-GB',
    timezoneId: 'UTC',
  });
  cleanups.push(async () => {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  });
  if (initScript) await context.addInitScript(initScript);
  context.setDefaultTimeout(WAIT_MS);
  const page = context.pages()[0] ?? await context.newPage();
  watch(page, name);
  return { context, page };
}

function watch(page, name) {
  page.on('dialog', async (dialog) => {
    dialogs.push(`${name}: ${dialog.type()} ${dialog.message()}`);
    await dialog.dismiss();
  });
  page.on('pageerror', (error) => pageErrors.push(`${name}: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') {
      log(`${name} console ${message.type()}: ${message.text()}`);
    }
  });
}

async function fillJoinForm(page, { room, username, secret = '' }) {
  await page.fill('#room', room);
  await page.fill('#username', username);
  await page.fill('#secret', secret);
}

async function waitReady(page) {
  await page.waitForSelector('#status[data-state="ready"]', { timeout: WAIT_MS });
}

async function createRoom(page, details) {
  await fillJoinForm(page, details);
  await page.click('#create');
  await waitReady(page);
}

async function joinRoom(page, details) {
  await fillJoinForm(page, details);
  // Enter in the form submits with its first button, Join: the keyboard path.
  await page.press('#username', 'Enter');
  await waitReady(page);
}

/** Types a message and presses Enter. */
async function say(page, text) {
  await page.fill('#message', text);
  await page.press('#message', 'Enter');
}

/** The chat messages on screen, in screen order. */
function shownMessages(page) {
  return page.$$eval('#messages > li', (items) => items.map((item) => ({
    id: item.dataset.id,
    author: item.querySelector('.author')?.textContent,
    text: item.querySelector('.text')?.textContent,
    edited: item.dataset.edited === 'true',
  })));
}

/** The message on screen whose text is exactly `text`. */
function messageWith(page, text) {
  return page.locator('#messages > li')
    .filter({ has: page.locator('.text').getByText(text, { exact: true }) });
}

/** Each message's text with the controls it offers: `text:edit,delete`. */
function messageControls(page) {
  return page.$$eval('#messages > li', (items) => items.map((item) => {
    const controls = [...item.querySelectorAll('.controls button')].map((node) => node.className);
    return `${item.querySelector('.text')?.textContent}:${controls.join(',')}`;
  }));
}

/** Waits until the page shows exactly these `{text, edited}` messages, in this order. */
async function waitForConversation(page, expected, what) {
  try {
    await page.waitForFunction((wanted) => {
      const items = [...document.querySelectorAll('#messages > li')];
      const shown = items.map((item) => ({
        text: item.querySelector('.text')?.textContent,
        edited: item.dataset.edited === 'true',
      }));
      return JSON.stringify(shown) === JSON.stringify(wanted);
    }, expected, { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    throw new Error(`${what}: the page shows ${JSON.stringify(await shownMessages(page))}, ` +
      `expected ${JSON.stringify(expected)}`, { cause: error });
  }
}

/** The session the page keeps in sessionStorage (its member token included). */
async function sessionOf(page) {
  return JSON.parse(await page.evaluate(() => sessionStorage.getItem('chat-server:session')));
}

/** Counts the page's requests whose method and path match, from now on. */
function countRequests(page, method, pathEnd) {
  const seen = [];
  page.on('request', (request) => {
    const url = new URL(request.url());
    if (request.method() === method && url.pathname.endsWith(pathEnd)) seen.push(url.pathname);
  });
  return seen;
}

/** Waits until every text in `texts` is on screen. */
async function waitForTexts(page, texts, what) {
  try {
    await page.waitForFunction((wanted) => {
      const onScreen = new Set([...document.querySelectorAll('#messages > li .text')]
        .map((node) => node.textContent));
      return wanted.every((text) => onScreen.has(text));
    }, texts, { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    throw new Error(`${what}: not every message arrived; the page shows ` +
      `${JSON.stringify(await shownMessages(page))} (status: ${await page.textContent('#status')})`,
    { cause: error });
  }
}

function compareIds(a, b) {
  const [aMs, aSeq] = a.split('-').map(BigInt);
  const [bMs, bSeq] = b.split('-').map(BigInt);
  if (aMs !== bMs) return aMs < bMs ? -1 : 1;
  return aSeq === bSeq ? 0 : aSeq < bSeq ? -1 : 1;
}

/** Asserts each text is shown exactly once, ids are unique and in log order. */
async function expectExactlyOnce(page, texts, what) {
  const shown = await shownMessages(page);
  const ids = shown.map((message) => message.id);
  assert.equal(new Set(ids).size, ids.length, `${what}: an id is shown twice: ${JSON.stringify(shown)}`);
  for (let i = 1; i < ids.length; i += 1) {
    assert.ok(compareIds(ids[i - 1], ids[i]) < 0, `${what}: not in log order: ${JSON.stringify(ids)}`);
  }
  for (const text of texts) {
    const count = shown.filter((message) => message.text === text).length;
    assert.equal(count, 1, `${what}: "${text}" is shown ${count} times: ${JSON.stringify(shown)}`);
  }
  return shown;
}

/**
 * Waits until every page (by name) shows every text, then asserts that each shows each text
 * once and that all show the same messages in the same order; returns that list.
 */
async function expectAllSeeOnce(pages, texts, what) {
  const named = Object.entries(pages);
  for (const [name, page] of named) await waitForTexts(page, texts, `${what}: ${name}`);
  const seen = [];
  for (const [name, page] of named) seen.push(await expectExactlyOnce(page, texts, `${what}: ${name}`));
  for (const other of seen.slice(1)) {
    assert.deepEqual(other, seen[0], `${what}: the pages show different messages or orders`);
  }
  return seen[0];
}

async function waitForText(page, selector, expected, what) {
  try {
    await page.waitForFunction(([sel, text]) =>
      document.querySelector(sel)?.textContent === text, [selector, expected],
    { timeout: WAIT_MS, polling: 50 });
  } catch (error) {
    const actual = await page.textContent(selector).catch(() => null);
    throw new Error(`${what}: ${selector} shows ${JSON.stringify(actual)}, expected ` +
      `${JSON.stringify(expected)}`, { cause: error });
  }
}

async function expectStatus(page, sentence, what) {
  assert.ok(sentence, `${what}: no sentence to expect`);
  await waitForText(page, '#status', sentence, what);
}

/** Waits until the member list shows exactly these names with these online flags. */
async function waitForMembers(page, expected, what) {
  try {
    await page.waitForFunction((wanted) => {
      const items = [...document.querySelectorAll('#members > li')];
      const shown = items.map((item) => `${item.querySelector('.name')?.textContent}=${item.dataset.online}`);
      return JSON.stringify(shown.sort()) === JSON.stringify([...wanted].sort());
    }, expected, { timeout: WAIT_MS, polling: 100 });
  } catch (error) {
    const shown = await page.$$eval('#members > li', (items) =>
      items.map((item) => `${item.querySelector('.name')?.textContent}=${item.dataset.online}`));
    throw new Error(`${what}: members are ${JSON.stringify(shown)}, expected ` +
      `${JSON.stringify(expected)}`, { cause: error });
  }
}

/**
 * Does `action` (another page connecting or going away) and waits until `page` shows
 * `username`'s dot `online`, which must come from a `presence` event: the page fetches no
 * member list meanwhile (and its poll is slower than the wait). Returns how long it took.
 */
async function expectDotFlip(page, username, online, action, what) {
  const listFetches = countRequests(page, 'GET', '/members');
  const started = Date.now();
  await action();
  const selector = `#members > li[data-username="${username}"][data-online="${online}"]`;
  try {
    await page.waitForSelector(selector, { timeout: WAIT_MS });
  } catch (error) {
    const shown = await page.$$eval('#members > li', (items) =>
      items.map((item) => `${item.dataset.username}=${item.dataset.online}`));
    throw new Error(`${what}: members are ${JSON.stringify(shown)}`, { cause: error });
  }
  const took = Date.now() - started;
  assert.deepEqual(listFetches, [], `${what}: the dot moved without fetching the member list`);
  log(`${what}: ${took} ms`);
  return took;
}

/** Each member as `name:owner?:controls`, e.g. `alice:owner:` or `bob::kick,ban`. */
function memberControls(page) {
  return page.$$eval('#members > li', (items) => items.map((item) => {
    const controls = [...item.querySelectorAll('button')].map((node) =>
      `${node.className}=${node.dataset.username}`);
    const owner = item.dataset.owner === 'true' ? 'owner' : '';
    return `${item.dataset.username}:${owner}:${controls.join(',')}`;
  }));
}

/**
 * Alice creates the room on a WebSocket through instance A, Bob joins it on SSE through
 * instance B, and each sees the other online.
 */
async function aliceAndBob() {
  const room = env('CHAT_ROOM');
  const urlA = env('CHAT_URL_A');
  const urlB = `${env('CHAT_URL_B')}/?transport=sse`;
  const alice = (await openBrowser('alice')).page;
  const bob = (await openBrowser('bob')).page;
  await alice.goto(urlA);
  await bob.goto(urlB);
  await createRoom(alice, { room, username: 'alice' });
  await joinRoom(bob, { room, username: 'bob' });
  await waitForMembers(alice, ['alice=true', 'bob=true'], 'alice sees bob come online');
  await waitForMembers(bob, ['alice=true', 'bob=true'], 'bob sees both online');
  return { room, urlA, urlB, alice, bob };
}

// ---- REST, for a member without a browser ----------------------------------------------

async function rest(base, method, path, { token, body, idempotencyKey } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  const response = await fetch(`${base}${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT_MS),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function restMember(base, room, username) {
  const joined = await rest(base, 'POST', `/rooms/${room}/members`, { body: { username } });
  return {
    say: (message, idempotencyKey) => rest(base, 'POST', `/rooms/${room}/messages`,
      { token: joined.token, body: { message }, idempotencyKey }),
    history: () => rest(base, 'GET', `/rooms/${room}/messages?limit=200`, { token: joined.token }),
    typing: () => rest(base, 'POST', `/rooms/${room}/typing`, { token: joined.token }),
  };
}

// ---- scenarios -------------------------------------------------------------------------

const scenarios = {
  /** (a) and (e): WebSocket on one instance, SSE on another, one Redis; then a screenshot. */
  async 'two-instances'() {
    const room = env('CHAT_ROOM');
    const alice = (await openBrowser('alice')).page;
    const bob = (await openBrowser('bob')).page;
    await alice.goto(env('CHAT_URL_A'));
    await bob.goto(`${env('CHAT_URL_B')}/?transport=sse`);
    // Request logs keep URLs: the EventSource URL must carry a stream ticket, not the token.
    const streamUrls = [];
    bob.on('request', (request) => {
      const url = new URL(request.url());
      if (request.method() === 'GET' && url.pathname.endsWith('/events')) streamUrls.push(url);
    });
    await createRoom(alice, { room, username: 'alice' });
    await joinRoom(bob, { room, username: 'bob' });
    assert.equal(await alice.textContent('#transport'), 'websocket');
    assert.equal(await bob.textContent('#transport'), 'sse');

    // Both type without waiting for each other: the server decides one order for everyone.
    const lines = [
      [alice, 'Hi Bob! I am on a WebSocket, through instance A.'],
      [bob, 'Hi Alice. Server-Sent Events here, through instance B.'],
      [alice, 'Same Redis behind both of us, so we see one order.'],
      [bob, 'And every message exactly once.'],
      [alice, 'Even after a reload or a server restart.'],
      [bob, 'Nice. Ship it!'],
    ];
    for (const [page, text] of lines) await say(page, text);
    const texts = lines.map(([, text]) => text);
    const seenByAlice = await expectAllSeeOnce({ alice, bob }, texts, 'the conversation');
    // Each one's own lines come in the order they were typed.
    for (const [page, name] of [[alice, 'alice'], [bob, 'bob']]) {
      const own = seenByAlice.filter((message) => message.author === name).map((m) => m.text);
      assert.deepEqual(own, lines.filter(([p]) => p === page).map(([, text]) => text));
    }

    assert.ok(streamUrls.length > 0, 'bob opened an event stream');
    for (const url of streamUrls) {
      assert.ok(url.searchParams.get('ticket'), 'the event stream URL has a ticket');
      assert.equal(url.searchParams.get('token'), null, 'the event stream URL has no member token');
    }

    await waitForMembers(alice, ['alice=true', 'bob=true'], 'alice sees both online');
    await waitForMembers(bob, ['alice=true', 'bob=true'], 'bob sees both online');
    await alice.locator('#message').blur();
    await alice.screenshot({ path: env('CHAT_SCREENSHOT') });
    log(`screenshot saved to ${env('CHAT_SCREENSHOT')}`);
  },

  /** (b): WebSocket upgrades fail, or hang; the page switches to SSE by itself and chats on. */
  async fallback() {
    const room = env('CHAT_ROOM');
    const base = env('CHAT_URL_A');
    // As a proxy that refuses upgrades does: every WebSocket handshake gets a 404 from the
    // real server, and the browser reports a failed connection.
    const initScript = () => {
      const RealWebSocket = window.WebSocket;
      window.webSocketAttempts = 0;
      window.WebSocket = class extends RealWebSocket {
        constructor(url, protocols) {
          window.webSocketAttempts += 1;
          super(String(url).replace(/\/ws$/, '/ws-blocked-by-proxy'), protocols);
        }
      };
    };
    const carol = (await openBrowser('carol', { initScript })).page;
    await carol.goto(base);
    assert.equal(await carol.textContent('#transport'), 'websocket');
    const started = Date.now();
    await fillJoinForm(carol, { room, username: 'carol' });
    await carol.click('#create');
    await waitForText(carol, '#transport', 'sse', 'carol falls back');
    await waitReady(carol);
    log(`fell back to SSE ${Date.now() - started} ms after creating the room`);
    const attempts = await carol.evaluate(() => window.webSocketAttempts);
    assert.ok(attempts >= 2, `the page tried WebSocket first (${attempts} attempts)`);
    assert.match(await carol.textContent('#status'), /uses SSE/);

    const dave = await restMember(base, room, 'dave');
    await say(carol, 'Can anyone read me over SSE?');
    // Posted (and shown) before Dave answers, so the log order is the order of `texts`.
    await waitForTexts(carol, ['Can anyone read me over SSE?'], 'carol sees her question');
    // Dave's client retries its post with the same key: it must land once.
    await dave.say('Loud and clear.', 'dave-1');
    await dave.say('Loud and clear.', 'dave-1');
    await say(carol, 'Great, chatting without WebSocket.');
    const texts = ['Can anyone read me over SSE?', 'Loud and clear.', 'Great, chatting without WebSocket.'];
    await waitForTexts(carol, texts, 'carol');
    await expectExactlyOnce(carol, texts, 'carol');
    const history = await dave.history();
    assert.deepEqual(history.messages.map((message) => message.message), texts,
      "dave's history has carol's messages, in order, once");
    await waitForMembers(carol, ['carol=true', 'dave=false'], 'carol sees dave (offline: no stream)');
    assert.equal(await carol.textContent('#transport'), 'sse');

    // A WebSocket that never opens (a proxy that swallows the upgrade) costs one open
    // timeout, then the page switches to SSE.
    const hangingWebSocket = () => {
      window.webSocketAttempts = 0;
      window.WebSocket = class extends EventTarget {
        static CONNECTING = 0;
        static OPEN = 1;
        static CLOSING = 2;
        static CLOSED = 3;

        constructor(url) {
          super();
          window.webSocketAttempts += 1;
          this.url = String(url);
          this.readyState = 0;
        }

        send() {
          throw new DOMException('still connecting', 'InvalidStateError');
        }

        close() {
          this.readyState = 3;
        }
      };
    };
    const oscar = (await openBrowser('oscar', { initScript: hangingWebSocket })).page;
    await oscar.goto(base);
    const joining = Date.now();
    await joinRoom(oscar, { room, username: 'oscar' });
    const took = Date.now() - joining;
    assert.equal(await oscar.textContent('#transport'), 'sse');
    assert.equal(await oscar.evaluate(() => window.webSocketAttempts), 1);
    assert.ok(took >= 3500, `waited for the WebSocket open timeout first (${took} ms)`);
    log(`a hanging WebSocket fell back to SSE ${took} ms after joining`);
    await say(oscar, 'Here too, after a WebSocket that never opened.');
    texts.push('Here too, after a WebSocket that never opened.');
    await waitForTexts(carol, texts, 'carol sees oscar');
    await waitForTexts(oscar, texts.slice(-1), 'oscar sees himself');
    await expectExactlyOnce(carol, texts, 'carol');
  },

  /** (c): the server under two pages (WebSocket and SSE) restarts; they resume, lose nothing. */
  async restart() {
    const room = env('CHAT_ROOM');
    const restarted = env('CHAT_URL_A');
    const other = env('CHAT_URL_B');
    const erin = (await openBrowser('erin')).page;
    const frank = (await openBrowser('frank')).page;
    await erin.goto(restarted);
    await frank.goto(`${restarted}/?transport=sse`);
    await createRoom(erin, { room, username: 'erin' });
    await joinRoom(frank, { room, username: 'frank' });
    const grace = await restMember(other, room, 'grace');
    await say(erin, 'Before the restart.');
    const texts = ['Before the restart.'];
    await waitForTexts(erin, texts, 'erin');
    await waitForTexts(frank, texts, 'frank');

    await control('stop-a');
    for (const page of [erin, frank]) {
      await page.waitForSelector('#status:not([data-state="ready"])', { timeout: WAIT_MS });
    }
    const meanwhile = ['Sent while A was down (1).', 'Sent while A was down (2).',
      'Sent while A was down (3).'];
    for (const text of meanwhile) await grace.say(text);
    await say(erin, 'Typed while the server was down.');
    await waitForText(erin, '#outbox', 'Typed while the server was down. (sending…)',
      'erin sees her message waiting');
    texts.push(...meanwhile, 'Typed while the server was down.');
    await control('start-a');

    await waitForTexts(erin, texts, 'erin after the restart');
    await waitForTexts(frank, texts, 'frank after the restart');
    await waitReady(erin);
    await waitReady(frank);
    // A marker sent last: once it is on screen, anything before it (a late duplicate from a
    // replay) would be too.
    await grace.say('Marker after the restart.');
    texts.push('Marker after the restart.');
    const afterRestart = await expectAllSeeOnce({ erin, frank }, texts, 'after the restart');
    assert.equal(await erin.textContent('#outbox'), '', 'nothing left to send');
    assert.equal(await erin.textContent('#transport'), 'websocket',
      'a restart is not mistaken for a blocked WebSocket');
    assert.equal(await frank.textContent('#transport'), 'sse');

    // A reload keeps the session (sessionStorage): same room, same messages, once each.
    for (const page of [erin, frank]) {
      await page.reload();
      await waitReady(page);
    }
    await grace.say('After the reloads.');
    texts.push('After the reloads.');
    const afterReload = await expectAllSeeOnce({ erin, frank }, texts, 'after the reloads');
    assert.deepEqual(afterReload.slice(0, afterRestart.length), afterRestart,
      'a reload shows the same messages as before it');
  },

  /**
   * JWT joins (API.md, "Identity"): a page without the app's hook is told to sign in; a page
   * whose app defines `window.chatIdentity.getIdToken` is asked for the ID token once the join
   * answers 401, joins with it under the token's name, and chats.
   */
  async 'sign-in'() {
    const room = env('CHAT_ROOM');
    const base = env('CHAT_URL_A');
    const anonymous = (await openBrowser('anonymous')).page;
    await anonymous.goto(base);
    await fillJoinForm(anonymous, { room, username: 'mallory' });
    await anonymous.click('#create');
    await expectStatus(anonymous, SIGN_IN_REQUIRED, 'a join without the app\'s sign-in');

    const hook = `window.chatIdentity = { getIdToken: async () => {
      window.idTokensGiven = (window.idTokensGiven || 0) + 1;
      return ${JSON.stringify(env('CHAT_ID_TOKEN'))};
    } };`;
    const ada = (await openBrowser('ada', { initScript: hook })).page;
    await ada.goto(base);
    // The name is the identity provider's: the field may stay empty.
    await createRoom(ada, { room, username: '' });
    assert.equal(await ada.evaluate(() => window.idTokensGiven), 1, 'the hook was asked once');
    await say(ada, 'Signed in with the app.');
    await waitForTexts(ada, ['Signed in with the app.'], 'ada\'s message');
    const [shown] = await expectExactlyOnce(ada, ['Signed in with the app.'], 'ada\'s message');
    assert.equal(shown.author, env('CHAT_ID_NAME'), 'the author is the token\'s name');
    await waitForMembers(ada, [`${env('CHAT_ID_NAME')}=true`], 'the member list');
  },

  /**
   * Presence and typing across two instances: WebSocket on A, SSE on B. Each page's dot for
   * the other flips when the other goes away and comes back (same tab: it resumes), from
   * `presence` events alone; typing shows on the other page, joined for several names, for
   * about 5 s, and a member's message clears it at once.
   */
  async 'presence-and-typing'() {
    const { room, urlA, urlB, alice, bob } = await aliceAndBob();

    // The SSE page goes away and comes back; then the WebSocket page does.
    await expectDotFlip(alice, 'bob', false, () => bob.goto('about:blank'),
      'alice sees bob (SSE) go offline');
    await expectDotFlip(alice, 'bob', true, () => bob.goto(urlB),
      'alice sees bob (SSE) come back');
    await waitReady(bob);
    await expectDotFlip(bob, 'alice', false, () => alice.goto('about:blank'),
      'bob sees alice (WebSocket) go offline');
    await expectDotFlip(bob, 'alice', true, () => alice.goto(urlA),
      'bob sees alice (WebSocket) come back');
    await waitReady(alice);
    await waitForMembers(alice, ['alice=true', 'bob=true'], 'alice after coming back');

    // A burst of keys sends one `typing` (REST on the SSE page); the other page says so.
    const typingPosts = countRequests(bob, 'POST', '/typing');
    await bob.locator('#message').pressSequentially('Hello th', { delay: 20 });
    await waitForText(alice, '#typing', typingSentence(['bob']), 'alice sees bob typing');
    const shownAt = Date.now();
    assert.equal(typingPosts.length, 1, `one typing for a burst of keys: ${typingPosts.length}`);
    assert.equal(await bob.textContent('#typing'), '', 'bob is not told that he types');
    // Several names are joined in one sentence.
    const carol = await restMember(env('CHAT_URL_B'), room, 'carol');
    await carol.typing();
    await waitForText(alice, '#typing', typingSentence(['bob', 'carol']),
      'alice sees bob and carol typing');
    // Nobody types any more: the line goes after about 5 s.
    await waitForText(alice, '#typing', '', 'the typing line clears by itself');
    const shownFor = Date.now() - shownAt;
    assert.ok(shownFor >= 4000, `the typing line stayed about 5 s (${shownFor} ms)`);

    // Over the WebSocket the other way; the message itself clears the line at once.
    await alice.locator('#message').pressSequentially('On my', { delay: 20 });
    await waitForText(bob, '#typing', typingSentence(['alice']), 'bob sees alice typing');
    const typingSeenAt = Date.now();
    await alice.locator('#message').pressSequentially(' way');
    await alice.press('#message', 'Enter');
    await waitForTexts(bob, ['On my way'], 'bob sees her message');
    assert.equal(await bob.textContent('#typing'), '', 'her message clears the line');
    const cleared = Date.now() - typingSeenAt;
    assert.ok(cleared < 4000, `cleared by the message, not the timeout (${cleared} ms)`);
  },

  /**
   * Editing and deleting, WebSocket (alice, the owner, on A) and SSE + REST (bob, on B): the
   * controls each page offers, live changes on the other page, a reload's history, and a
   * return whose history is stale so only the resumed stream's replay brings the changes.
   */
  async 'edit-and-delete'() {
    const { room, urlB, alice, bob } = await aliceAndBob();
    const lines = [
      [alice, 'Helo Bob'],
      [bob, 'Hi Alice'],
      [bob, 'Buy cheap watches'],
      [bob, 'A line to take back'],
    ];
    for (const [page, text] of lines) {
      await say(page, text);
      // One at a time, so the order on screen is the order here.
      await waitForTexts(page, [text], 'the sender sees it');
    }
    await expectAllSeeOnce({ alice, bob }, lines.map(([, text]) => text), 'before the changes');

    // Authors edit and delete their own; the owner (alice) also deletes others'.
    assert.deepEqual(await messageControls(alice), ['Helo Bob:edit,delete', 'Hi Alice:delete',
      'Buy cheap watches:delete', 'A line to take back:delete'], 'the owner\'s controls');
    assert.deepEqual(await messageControls(bob), ['Helo Bob:', 'Hi Alice:edit,delete',
      'Buy cheap watches:edit,delete', 'A line to take back:edit,delete'], 'a member\'s controls');

    // Alice edits inline over the WebSocket.
    await messageWith(alice, 'Helo Bob').locator('.edit').click();
    await alice.fill('#messages .edit-input', 'Hello Bob');
    await alice.press('#messages .edit-input', 'Enter');
    // Bob edits (PATCH), then deletes one of his (DELETE); alice deletes his spam (delete:chat).
    await messageWith(bob, 'Hi Alice').locator('.edit').click();
    await bob.fill('#messages .edit-input', 'Hi Alice!');
    await bob.press('#messages .edit-input', 'Enter');
    await messageWith(bob, 'A line to take back').locator('.delete').click();
    await messageWith(alice, 'Buy cheap watches').locator('.delete').click();
    const changed = [
      { text: 'Hello Bob', edited: true },
      { text: 'Hi Alice!', edited: true },
    ];
    await waitForConversation(alice, changed, 'alice sees the changes');
    await waitForConversation(bob, changed, 'bob sees the changes');
    assert.deepEqual(await bob.$$eval('#messages > li .edited', (nodes) =>
      nodes.map((node) => node.textContent)), ['edited', 'edited'], 'each edit is marked');

    // A reload loads history: edits shown as last edited, deleted messages left out.
    await bob.reload();
    await waitReady(bob);
    await waitForConversation(bob, changed, 'bob after a reload');

    // Bob goes away; his history then comes from before the next changes (stale on purpose),
    // so only the stream's replay after his last event id can bring them.
    const { token } = await sessionOf(bob);
    const stale = await rest(env('CHAT_URL_B'), 'GET', `/rooms/${room}/messages?limit=50`, { token });
    await bob.goto('about:blank');
    await messageWith(alice, 'Hello Bob').locator('.edit').click();
    await alice.fill('#messages .edit-input', 'Hello Bob, welcome back');
    await alice.press('#messages .edit-input', 'Enter');
    await messageWith(alice, 'Hi Alice!').locator('.delete').click();
    await say(alice, 'Said while Bob was away');
    const final = [
      { text: 'Hello Bob, welcome back', edited: true },
      { text: 'Said while Bob was away', edited: false },
    ];
    await waitForConversation(alice, final, 'alice after her changes');
    let staleServed = 0;
    await bob.route((url) => url.pathname === `/rooms/${room}/messages`, async (route) => {
      if (route.request().method() !== 'GET') return route.continue();
      staleServed += 1;
      return route.fulfill({ json: stale });
    });
    await bob.goto(urlB);
    await waitReady(bob);
    await waitForConversation(bob, final, 'bob after the replay');
    assert.ok(staleServed > 0, 'bob\'s page loaded the stale history');
    const ids = (await shownMessages(bob)).map((message) => message.id);
    assert.deepEqual(ids, (await shownMessages(alice)).map((message) => message.id),
      'the same messages by id');
  },

  /**
   * The owner (alice) kicks, then bans, bob: WebSocket owner and SSE member first, then each
   * page switched to the other transport (same tab, same session). The removed page says so
   * in words, goes back to the form and stays there; a kicked name joins again, a banned one
   * (or a look-alike of it) is refused.
   */
  async moderation() {
    const { room, urlA, alice, bob } = await aliceAndBob();
    assert.deepEqual(await memberControls(alice), ['alice:owner:', 'bob::kick=bob,ban=bob'],
      'the owner is marked and may kick and ban the others');
    assert.deepEqual(await memberControls(bob), ['alice:owner:', 'bob::'],
      'a member sees the owner, and no controls');

    // A kick over the WebSocket; bob (SSE) is told and may come back.
    await alice.click('#members .kick[data-username="bob"]');
    await bob.waitForSelector('#join-view:not([hidden])', { timeout: WAIT_MS });
    await expectStatus(bob, REMOVED.kicked, 'bob is told he was kicked');
    await waitForMembers(alice, ['alice=true'], 'alice sees bob go');
    await joinRoom(bob, { room, username: 'bob' });
    await waitForMembers(alice, ['alice=true', 'bob=true'], 'bob is back');

    // Each page on the other transport now: alice on SSE (a ban is REST), bob on WebSocket.
    await alice.goto(`${urlA}/?transport=sse`);
    await waitReady(alice);
    assert.equal(await alice.textContent('#transport'), 'sse');
    await bob.goto(env('CHAT_URL_B'));
    await waitReady(bob);
    assert.equal(await bob.textContent('#transport'), 'websocket');
    await waitForMembers(alice, ['alice=true', 'bob=true'], 'both back');

    await alice.click('#members .ban[data-username="bob"]');
    await bob.waitForSelector('#join-view:not([hidden])', { timeout: WAIT_MS });
    await expectStatus(bob, REMOVED.banned, 'bob is told he was banned');
    // From here on bob's page must stay put: no reconnects, no probes, no word changed.
    const bobRequests = [];
    bob.on('request', (request) => bobRequests.push(`${request.method()} ${request.url()}`));
    await waitForMembers(alice, ['alice=true'], 'alice sees bob go');
    await say(alice, 'Bob is banned.');
    await waitForTexts(alice, ['Bob is banned.'], 'alice chats on');
    assert.equal(await bob.textContent('#status'), REMOVED.banned, 'the line stays');
    assert.deepEqual(bobRequests, [], 'the removed page does not retry');
    assert.equal(await bob.isVisible('#chat-view'), false);

    // A banned name, or a look-alike of it, cannot join again.
    for (const username of ['bob', 'BOB', 'b\u043eb']) {
      await fillJoinForm(bob, { room, username });
      await bob.click('#join');
      // The click has already put "Joining …" in #status, so this is this attempt's answer.
      await expectStatus(bob, SENTENCES.forbidden, `joining again as ${username}`);
    }
    assert.equal(await bob.isVisible('#join-view'), true);
  },

  /** (d) and errors: markup is shown as text; each refusal gets its sentence; phone size. */
  async 'text-and-errors'() {
    const room = env('CHAT_ROOM');
    const base = env('CHAT_URL_A');
    const { context, page: mallory } = await openBrowser('mallory',
      { viewport: { width: 360, height: 640 } });
    await mallory.goto(base);
    await fillJoinForm(mallory, { room, username: 'mallory' });
    await mallory.click('#join');
    await expectStatus(mallory, SENTENCES.room_not_found, 'joining a room that does not exist');
    const name = '<i>mallory</i>';
    await createRoom(mallory, { room, username: name, secret: 'open sesame' });

    const trent = await context.newPage();
    watch(trent, 'trent');
    await trent.goto(base);
    await fillJoinForm(trent, { room, username: 'trent' });
    await trent.click('#create');
    await expectStatus(trent, SENTENCES.room_exists, 'creating a room that exists');
    await fillJoinForm(trent, { room, username: 'trent', secret: 'wrong' });
    await trent.click('#join');
    await expectStatus(trent, SENTENCES.forbidden, 'joining with the wrong secret');
    await fillJoinForm(trent, { room, username: '<I>MALLORY</I>', secret: 'open sesame' });
    await trent.click('#join');
    await expectStatus(trent, SENTENCES.username_taken, 'joining with a taken name');
    // A look-alike (Cyrillic а) is the same name too.
    await fillJoinForm(trent, { room, username: '<i>m\u0430llory</i>', secret: 'open sesame' });
    await trent.click('#join');
    await expectStatus(trent, SENTENCES.username_taken, 'joining with a look-alike name');
    await joinRoom(trent, { room, username: 'trent', secret: 'open sesame' });

    const markup = '<img src=x onerror=alert(1)>';
    await say(mallory, markup);
    for (const page of [mallory, trent]) {
      await waitForTexts(page, [markup], 'markup message');
      await expectExactlyOnce(page, [markup], 'markup message');
      assert.equal(await page.locator('img').count(), 0, 'no img element anywhere');
      assert.equal(await page.locator('#members i').count(), 0, 'the name is not markup');
    }
    await waitForMembers(trent, [`${name}=true`, 'trent=true'], 'the name is shown as text');
    // Every name is isolated, so a right-to-left name cannot reorder what is around it.
    const isolated = await trent.evaluate(() => ({
      members: [...document.querySelectorAll('#members .name')].map((node) => node.localName),
      authors: [...document.querySelectorAll('#messages .author')].map((node) => node.localName),
      status: document.getElementById('status').textContent,
    }));
    assert.deepEqual(isolated.members, ['bdi', 'bdi'], 'member names are <bdi>');
    assert.ok(isolated.authors.length > 0 && isolated.authors.every((tag) => tag === 'bdi'),
      `authors are <bdi>: ${JSON.stringify(isolated.authors)}`);
    assert.ok(isolated.status.includes('as \u2068trent\u2069.'),
      `the status isolates the name: ${JSON.stringify(isolated.status)}`);

    const tooLong = 'x'.repeat(5000);
    await say(mallory, tooLong);
    await expectStatus(mallory, `Not sent: ${SENTENCES.payload_too_large}`, 'a message too long');
    assert.equal(await mallory.textContent('#outbox'), '');

    // A phone-sized screen: nothing is wider than it, and the composer is on screen.
    await mallory.screenshot({ path: env('CHAT_SCREENSHOT') });
    const overflow = await mallory.evaluate(() =>
      document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `the page is ${overflow}px wider than a 360px screen`);
    for (const selector of ['#message', '#send', '#leave']) {
      const box = await mallory.locator(selector).boundingBox();
      assert.ok(box && box.x >= 0 && box.x + box.width <= 360, `${selector} fits the screen`);
    }
    // The keyboard: from the message field, Tab reaches Send.
    await mallory.focus('#message');
    await mallory.keyboard.press('Tab');
    assert.equal(await mallory.evaluate(() => document.activeElement?.id), 'send');

    // Leaving goes back to the form; the other member sees the name go.
    await mallory.click('#leave');
    await mallory.waitForSelector('#join-view:not([hidden])', { timeout: WAIT_MS });
    await waitForMembers(trent, ['trent=true'], 'trent sees mallory leave');

    // Trent's membership ends elsewhere (another client of his leaves with his token): the
    // page sees its own removal and goes back to the form.
    const saved = await trent.evaluate(() => sessionStorage.getItem('chat-server:session'));
    const { token } = JSON.parse(saved);
    await rest(base, 'DELETE', `/rooms/${room}/members/trent`, { token });
    await trent.waitForSelector('#join-view:not([hidden])', { timeout: WAIT_MS });
    await expectStatus(trent, 'You left the room (from another tab or device).',
      'a removal seen on the stream');
    // A page that comes back with a revoked token says so, in words.
    await trent.evaluate((session) => sessionStorage.setItem('chat-server:session', session), saved);
    await trent.reload();
    await expectStatus(trent, SENTENCES.unauthorized, 'resuming with a revoked token');
    assert.equal(await trent.isVisible('#join-view'), true);

    assert.deepEqual(dialogs, [], 'no dialog opened');
  },
};

// ---- main ------------------------------------------------------------------------------

const name = process.argv[2];
const scenario = scenarios[name];
if (!scenario) {
  log(`unknown scenario ${JSON.stringify(name)}; known: ${Object.keys(scenarios).join(', ')}`);
  process.exit(2);
}
const limit = setTimeout(() => {
  log(`scenario ${name} did not finish within ${SCENARIO_LIMIT_MS} ms`);
  process.exit(1);
}, SCENARIO_LIMIT_MS);
let failed = false;
try {
  await scenario();
  assert.deepEqual(pageErrors, [], 'no uncaught errors in the pages');
  assert.deepEqual(dialogs, [], 'no dialog opened');
} catch (error) {
  failed = true;
  log(`scenario ${name} failed:`, error?.stack ?? error);
} finally {
  for (const cleanup of cleanups.reverse()) {
    await cleanup().catch((error) => log('cleanup:', error?.message ?? error));
  }
  clearTimeout(limit);
}
if (failed) process.exit(1);
process.stdout.write(`passed:${name}\n`);
process.exit(0);
