// The chat page: the join form, the room view, and the member's session.
//
// The session (room, name, token, the id of the last room event processed and the messages
// not yet acknowledged) lives in sessionStorage, so a reload resumes where the page was:
// the newest history is fetched again, the stream resumes after the last processed id, and
// unsent messages are sent with the ids they already had. Every message is rendered once,
// keyed by its event id, in event id order, whichever way it arrived (history, WebSocket,
// SSE, or the reply to our own post).
//
// Everything from the server or the user is put into the page with `textContent`, never as
// HTML, so a message or a name can only ever show up as text. Every username is also
// isolated from the text around it (a `<bdi>` element, or U+2068/U+2069 inside a sentence),
// so a right-to-left name cannot reorder the time, "(you)" or the rest of the sentence.

import * as api from './api.js';
import { Connection } from './connection.js';

const STORAGE_KEY = 'chat-server:session';
/** How much history a join or reload shows. */
const HISTORY_LIMIT = 50;
/** Online flags are not events: the member list is polled this often. */
const MEMBERS_POLL_MS = 10000;
/** A newcomer usually opens its stream right after joining: look again this much later. */
const NEWCOMER_RECHECK_MS = 1500;

const $ = (id) => document.getElementById(id);
const ui = {
  transport: $('transport'),
  status: $('status'),
  joinView: $('join-view'),
  joinForm: $('join-form'),
  room: $('room'),
  username: $('username'),
  secret: $('secret'),
  join: $('join'),
  create: $('create'),
  chatView: $('chat-view'),
  chatTitle: $('chat-title'),
  leave: $('leave'),
  members: $('members'),
  messages: $('messages'),
  outbox: $('outbox'),
  composer: $('composer'),
  message: $('message'),
};

/** `?transport=sse` forces SSE, `?transport=websocket` forbids the fallback. */
const mode = (() => {
  const asked = new URLSearchParams(location.search).get('transport');
  return asked === 'sse' || asked === 'websocket' ? asked : 'auto';
})();

let session = null;
let connection = null;
/** Ids of the chat messages on screen. */
let shown = new Set();
let historyLoaded = false;
let membersTimer = null;
let recheckTimer = null;

// ---- session storage -------------------------------------------------------------------

function loadSession() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? 'null');
    const valid = saved && typeof saved.roomId === 'string' && typeof saved.username === 'string' &&
      typeof saved.token === 'string' && Array.isArray(saved.outbox);
    return valid ? saved : null;
  } catch {
    return null;
  }
}

function saveSession() {
  try {
    if (session) {
      sessionStorage.setItem(STORAGE_KEY, JSON.stringify(session));
    } else {
      sessionStorage.removeItem(STORAGE_KEY);
    }
  } catch {
    // Storage disabled or full: the page still works, it just cannot survive a reload.
  }
}

// ---- event ids -------------------------------------------------------------------------

/** Event ids are `<milliseconds>-<sequence>`, ordered part by part. */
function compareIds(a, b) {
  const [aMs, aSeq] = String(a).split('-').map(Number);
  const [bMs, bSeq] = String(b).split('-').map(Number);
  return aMs - bMs || aSeq - bSeq;
}

function isNewer(id, than) {
  return !than || compareIds(id, than) > 0;
}

/** A `clientMsgId` / `Idempotency-Key`: 96 random bits (crypto.randomUUID needs https). */
function newClientMsgId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return `m-${Array.from(bytes, (byte) => byte.toString(16).padStart(2, '0')).join('')}`;
}

/** Usernames are one name when their NFKC forms, lowercased, are equal (API.md). */
function sameName(a, b) {
  return String(a).normalize('NFKC').toLowerCase() === String(b).normalize('NFKC').toLowerCase();
}

// ---- rendering -------------------------------------------------------------------------

/** A name inside a sentence of plain text: first-strong isolate … pop directional isolate,
 * what `<bdi>` does for an element. */
function isolated(name) {
  return `\u2068${name}\u2069`;
}

function setStatus(text, { state, kind = 'info' } = {}) {
  ui.status.textContent = text;
  ui.status.dataset.kind = kind;
  if (state) ui.status.dataset.state = state;
}

function formatTime(ts) {
  const date = new Date(ts);
  return Number.isNaN(date.getTime())
    ? ''
    : date.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function renderMessage({ id, username, message, ts }) {
  if (typeof id !== 'string' || shown.has(id)) return;
  shown.add(id);
  const item = document.createElement('li');
  item.dataset.id = id;
  if (sameName(username, session.username)) item.classList.add('mine');
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('bdi');
  author.className = 'author';
  author.textContent = username;
  const time = document.createElement('time');
  time.dateTime = ts;
  time.textContent = formatTime(ts);
  meta.append(author, time);
  const text = document.createElement('p');
  text.className = 'text';
  text.textContent = message;
  item.append(meta, text);

  const list = ui.messages;
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  // Usually the newest: walk back from the end to the first message with a smaller id.
  let before = null;
  for (let node = list.lastElementChild; node && compareIds(node.dataset.id, id) > 0;
    node = node.previousElementSibling) {
    before = node;
  }
  list.insertBefore(item, before);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function renderOutbox() {
  const items = (session?.outbox ?? []).map((pending) => {
    const item = document.createElement('li');
    item.dataset.clientMsgId = pending.clientMsgId;
    item.textContent = `${pending.message} (sending…)`;
    return item;
  });
  ui.outbox.replaceChildren(...items);
}

function renderMembers(members) {
  const sorted = [...members].sort((a, b) => a.username.localeCompare(b.username));
  ui.members.replaceChildren(...sorted.map((member) => {
    const item = document.createElement('li');
    item.dataset.online = member.online ? 'true' : 'false';
    item.dataset.username = member.username;
    item.title = member.online ? 'online' : 'offline';
    const name = document.createElement('bdi');
    name.className = 'name';
    name.textContent = member.username;
    item.append(name);
    if (sameName(member.username, session.username)) {
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = '(you)';
      item.append(you);
    }
    return item;
  }));
}

// ---- the room --------------------------------------------------------------------------

async function refreshMembers() {
  const current = session;
  if (!current) return;
  try {
    const reply = await api.members(current);
    if (session === current) renderMembers(reply.members);
  } catch {
    // The connection notices a lost server or membership by itself and says so.
  }
}

async function loadHistory() {
  const current = session;
  try {
    const page = await api.history(current, HISTORY_LIMIT);
    if (session !== current) return;
    historyLoaded = true;
    for (const message of page.messages) renderMessage(message);
  } catch {
    // Tried again when the next link is ready.
  }
}

function onRoomEvent(id, name, data) {
  if (!session || data?.roomId !== session.roomId) return;
  // Streams start after the last processed id; anything at or before it was handled.
  if (!isNewer(id, session.lastEventId)) return;
  session.lastEventId = id;
  saveSession();
  switch (name) {
    case 'create:chat:success':
      renderMessage({ id, ...data });
      break;
    case 'add:member:success':
      refreshMembers();
      clearTimeout(recheckTimer);
      recheckTimer = setTimeout(refreshMembers, NEWCOMER_RECHECK_MS);
      break;
    case 'remove:member:success':
      if (sameName(data.username, session.username)) {
        exitRoom(data.reason === 'timeout'
          ? 'You were away too long and have left the room. Join it again to go on.'
          : 'You left the room (from another tab or device).', 'info');
        return;
      }
      ui.members.querySelector(`li[data-username="${CSS.escape(data.username)}"]`)?.remove();
      refreshMembers();
      break;
    default:
      break;
  }
}

const connectionEvents = {
  transport(name, fellBack) {
    ui.transport.textContent = name;
    ui.transport.title = fellBack
      ? 'Server-Sent Events: WebSocket does not get through on this network'
      : name === 'sse' ? 'Server-Sent Events' : 'WebSocket';
  },
  state(state, text, kind) {
    setStatus(text, { state, kind });
  },
  ready(_name, { complete }) {
    const via = connection?.fellBack
      ? ' WebSocket does not get through on this network, so this page uses SSE.'
      : '';
    setStatus(`Connected to ${session.roomId} as ${isolated(session.username)}.${via}`,
      { state: 'ready' });
    if (!complete) connectionEvents.gap();
    if (!historyLoaded) loadHistory();
    refreshMembers();
  },
  event: onRoomEvent,
  gap() {
    setStatus('Some messages from while you were away are too old to be shown.', { kind: 'error' });
  },
  members(list) {
    renderMembers(list);
  },
  sent(item, stored) {
    session.outbox = session.outbox.filter((pending) => pending.clientMsgId !== item.clientMsgId);
    saveSession();
    renderOutbox();
    renderMessage(stored);
  },
  rejected(item, error) {
    session.outbox = session.outbox.filter((pending) => pending.clientMsgId !== item.clientMsgId);
    saveSession();
    renderOutbox();
    setStatus(`Not sent: ${api.describe(error)}`, { kind: 'error' });
  },
  problem(error) {
    setStatus(api.describe(error), { kind: 'error' });
  },
  ended(error) {
    exitRoom(api.describe(error), 'error');
  },
};

function connect() {
  connection = new Connection({
    session,
    mode,
    lastEventId: () => session?.lastEventId ?? null,
    outbox: () => session?.outbox ?? [],
    on: connectionEvents,
  });
  connection.start();
}

function enterRoom(joined) {
  session = joined;
  saveSession();
  shown = new Set();
  historyLoaded = false;
  ui.messages.replaceChildren();
  ui.members.replaceChildren();
  renderOutbox();
  ui.chatTitle.textContent = session.roomId;
  document.title = `${session.roomId} · chat-server`;
  ui.secret.value = '';
  ui.joinView.hidden = true;
  ui.chatView.hidden = false;
  connect();
  membersTimer = setInterval(refreshMembers, MEMBERS_POLL_MS);
  ui.message.focus();
}

function exitRoom(text, kind) {
  connection?.stop();
  connection = null;
  clearInterval(membersTimer);
  clearTimeout(recheckTimer);
  if (session) {
    ui.room.value = session.roomId;
    ui.username.value = session.username;
  }
  session = null;
  saveSession();
  document.title = 'chat-server';
  ui.chatView.hidden = true;
  ui.joinView.hidden = false;
  setStatus(text, { state: 'idle', kind });
  ui.join.focus();
}

// ---- the app's sign-in ------------------------------------------------------------------

// When the server requires the app's own users (AUTH_JWKS_URL), a join needs an ID token
// (a JWT) from the app's identity provider. This client embeds no provider SDK: the page
// that serves it may define `window.chatIdentity = { getIdToken: async () => '<jwt>' }`
// (e.g. Firebase's `auth.currentUser.getIdToken()`), and it is asked when a join answers 401.
async function signIn() {
  try {
    const token = await window.chatIdentity?.getIdToken?.();
    return typeof token === 'string' && token ? token : null;
  } catch {
    return null;
  }
}

// ---- the forms -------------------------------------------------------------------------

ui.joinForm.addEventListener('submit', async (event) => {
  event.preventDefault();
  const create = event.submitter === ui.create;
  const roomId = ui.room.value.trim();
  const username = ui.username.value;
  // A signed-in app (see signIn) may leave the name to its identity provider.
  if (!roomId || (!username.trim() && !window.chatIdentity)) {
    setStatus('Enter a room name and your name.', { kind: 'error', state: 'idle' });
    (roomId ? ui.username : ui.room).focus();
    return;
  }
  ui.join.disabled = ui.create.disabled = true;
  setStatus(create ? `Creating ${roomId}…` : `Joining ${roomId}…`, { state: 'idle' });
  const enter = (idToken) => create
    ? api.createRoom(roomId, username, ui.secret.value, idToken)
    : api.joinRoom(roomId, username, ui.secret.value, idToken);
  try {
    let joined;
    try {
      joined = await enter(undefined);
    } catch (error) {
      // A join answers 401 only when the server requires the app's sign-in (API.md,
      // "Identity"): ask the app for an ID token and try once more with it.
      const idToken = error?.status === 401 ? await signIn() : null;
      if (!idToken) throw error;
      joined = await enter(idToken);
    }
    enterRoom({
      roomId: joined.roomId,
      username: joined.username,
      token: joined.token,
      lastEventId: joined.lastEventId,
      outbox: [],
    });
  } catch (error) {
    // A join's 401 is about signing in, never about a membership that ended.
    const sentence = error?.status === 401 ? api.SIGN_IN_REQUIRED : api.describe(error);
    setStatus(sentence, { kind: 'error', state: 'idle' });
  } finally {
    ui.join.disabled = ui.create.disabled = false;
  }
});

ui.composer.addEventListener('submit', (event) => {
  event.preventDefault();
  if (!session || !connection) return;
  const message = ui.message.value;
  if (!message.trim()) return;
  session.outbox.push({ clientMsgId: newClientMsgId(), message });
  saveSession();
  renderOutbox();
  ui.message.value = '';
  connection.flush();
});

ui.leave.addEventListener('click', async () => {
  if (!session) return;
  ui.leave.disabled = true;
  connection?.stop();
  const roomId = session.roomId;
  try {
    await api.leaveRoom(session);
    exitRoom(`You left ${roomId}.`, 'info');
  } catch (error) {
    if (api.isMembershipGone(error)) {
      exitRoom(`You left ${roomId}.`, 'info');
    } else {
      // Still a member: say why leaving failed and carry on in the room.
      connect();
      setStatus(`Could not leave: ${api.describe(error)}`, { kind: 'error' });
    }
  } finally {
    ui.leave.disabled = false;
  }
});

// ---- start -----------------------------------------------------------------------------

ui.transport.textContent = mode === 'sse' ? 'sse' : 'websocket';
ui.room.value = new URLSearchParams(location.search).get('room') ?? '';
const saved = loadSession();
if (saved) {
  enterRoom(saved);
} else {
  setStatus('Join a room, or create one.', { state: 'idle' });
  ui.room.focus();
}
