// The chat page: the join form, the room view, and the member's session.
//
// The session (room, name, token, the id of the last room event processed and the messages
// not yet acknowledged) lives in sessionStorage, so a reload resumes where the page was:
// the newest history is fetched again, the stream resumes after the last processed id, and
// unsent messages are sent with the ids they already had. Every message is rendered once,
// keyed by its event id, in event id order, whichever way it arrived (history, WebSocket,
// SSE, or the reply to our own post). Edits and deletions (`update:chat:success`,
// `delete:chat:success`) are applied by the id of the message they change, whether they come
// live, from a replay or in the reply to our own action; one that arrives before the message
// it changes (a history page still in flight) is kept and applied when the message shows up.
//
// The member list (`GET /members`) is the truth about who is in the room, who owns it and
// who is online: it is fetched on every membership event and every (re)connection. Between
// fetches, `presence` events move the online dots and `typing` events fill `#typing`.
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
/** `presence` events move the dots; this slow poll only repairs a missed one. */
const MEMBERS_POLL_MS = 30000;
/** How long "… is typing" stays after a name's last `typing` event (API.md: about 5 s). */
const TYPING_SHOWN_MS = 5000;
/** The server broadcasts at most one `typing` per member per 2 s: sending more is waste. */
const TYPING_EVERY_MS = 2000;
/** The mark of a deleted message in `changes`. */
const DELETED = 'deleted';

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
  typing: $('typing'),
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
/** Ids of the chat messages rendered (deleted ones stay, so they never come back). */
let shown = new Set();
/** Edits (`{message, editedTs}`) and deletions (`DELETED`) by message id, newest only. */
let changes = new Map();
let historyLoaded = false;
let membersTimer = null;
/** Whether the member list says this member owns the room. */
let isOwner = false;
/** `presence` events by username: `{online, seq}`; `seq` counts events, so a member list
 * fetched before an event does not undo it. */
let presence = new Map();
let presenceSeq = 0;
/** Who is typing: username → the timer that clears it. */
let typers = new Map();
/** When this page last sent `typing` (ms). */
let typingSentAt = 0;

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

const { isolated } = api;

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

function button(className, label, title) {
  const node = document.createElement('button');
  node.type = 'button';
  node.className = className;
  node.textContent = label;
  if (title) node.title = title;
  return node;
}

/** Whether edit `a` (`{editedTs}`) is as new as `b` or newer; no `editedTs` is the oldest. */
function isLaterEdit(a, b) {
  return !b?.editedTs || Date.parse(a.editedTs) >= Date.parse(b.editedTs);
}

/** Puts an edit's text and "edited" mark on a message on screen, unless it has a later one. */
function showEdit(item, { message, editedTs }) {
  if (!isLaterEdit({ editedTs }, item.dataset.editedTs ? { editedTs: item.dataset.editedTs } : null)) {
    return;
  }
  item.querySelector('.text').textContent = message;
  if (!editedTs) return;
  item.dataset.edited = 'true';
  item.dataset.editedTs = editedTs;
  let mark = item.querySelector('.edited');
  if (!mark) {
    mark = document.createElement('span');
    mark.className = 'edited';
    mark.textContent = 'edited';
    item.querySelector('.meta time').after(mark);
  }
  mark.title = `edited ${formatTime(editedTs)}`;
}

/** Edit and delete on one's own messages; delete on everyone's for the owner. */
function renderMessageControls(item) {
  const mine = sameName(item.dataset.username, session.username);
  const buttons = [];
  if (mine) buttons.push(button('edit', 'Edit', 'Edit this message'));
  if (mine || isOwner) buttons.push(button('delete', 'Delete', 'Delete this message'));
  item.querySelector('.controls').replaceChildren(...buttons);
}

function renderMessage({ id, username, message, ts, editedTs }) {
  if (typeof id !== 'string' || shown.has(id)) return;
  shown.add(id);
  const change = changes.get(id);
  if (change === DELETED) return;
  const item = document.createElement('li');
  item.dataset.id = id;
  item.dataset.username = username;
  if (sameName(username, session.username)) item.classList.add('mine');
  const meta = document.createElement('div');
  meta.className = 'meta';
  const author = document.createElement('bdi');
  author.className = 'author';
  author.textContent = username;
  const time = document.createElement('time');
  time.dateTime = ts;
  time.textContent = formatTime(ts);
  const controls = document.createElement('span');
  controls.className = 'controls';
  meta.append(author, time, controls);
  const text = document.createElement('p');
  text.className = 'text';
  item.append(meta, text);
  showEdit(item, { message, editedTs });
  if (change) showEdit(item, change);
  renderMessageControls(item);

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

function memberItem(username) {
  return ui.members.querySelector(`li[data-username="${CSS.escape(username)}"]`);
}

function showOnline(item, online) {
  item.dataset.online = online ? 'true' : 'false';
  item.title = online ? 'online' : 'offline';
}

/** Shows a member list fetched when `presenceSeq` was `since`: later events win. */
function renderMembers(members, since) {
  const wasOwner = isOwner;
  isOwner = members.some((member) => member.owner === true &&
    sameName(member.username, session.username));
  const sorted = [...members].sort((a, b) => a.username.localeCompare(b.username));
  ui.members.replaceChildren(...sorted.map((member) => {
    const item = document.createElement('li');
    item.dataset.username = member.username;
    item.dataset.owner = member.owner === true ? 'true' : 'false';
    const seen = presence.get(member.username);
    showOnline(item, seen && seen.seq > since ? seen.online : member.online);
    const name = document.createElement('bdi');
    name.className = 'name';
    name.textContent = member.username;
    item.append(name);
    if (member.owner === true) {
      const badge = document.createElement('span');
      badge.className = 'owner-badge';
      badge.textContent = 'owner';
      item.append(badge);
    }
    if (sameName(member.username, session.username)) {
      const you = document.createElement('span');
      you.className = 'you';
      you.textContent = '(you)';
      item.append(you);
    } else if (isOwner) {
      for (const [className, label, title] of [
        ['kick', 'Kick', 'Remove from the room (they may join again)'],
        ['ban', 'Ban', 'Remove from the room and ban the name'],
      ]) {
        const control = button(className, label, title);
        control.dataset.username = member.username;
        item.append(control);
      }
    }
    return item;
  }));
  if (isOwner !== wasOwner) {
    for (const item of ui.messages.children) renderMessageControls(item);
  }
}

function renderTyping() {
  ui.typing.textContent = api.typingSentence([...typers.keys()]);
}

function stopTyping(username) {
  if (!typers.has(username)) return;
  clearTimeout(typers.get(username));
  typers.delete(username);
  renderTyping();
}

function clearTyping() {
  for (const timer of typers.values()) clearTimeout(timer);
  typers = new Map();
  renderTyping();
}

// ---- the room --------------------------------------------------------------------------

async function refreshMembers() {
  const current = session;
  if (!current) return;
  const since = presenceSeq;
  try {
    const reply = await api.members(current);
    if (session === current) renderMembers(reply.members, since);
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

/** Applies an edit of message `id` (`{message, editedTs}`), now or when it shows up. */
function applyEdit(id, { message, editedTs }) {
  if (typeof message !== 'string' || typeof editedTs !== 'string') return;
  const known = changes.get(id);
  if (known === DELETED) return;
  if (!known || isLaterEdit({ editedTs }, known)) changes.set(id, { message, editedTs });
  const item = ui.messages.querySelector(`li[data-id="${CSS.escape(id)}"]`);
  if (item) showEdit(item, { message, editedTs });
}

function applyDelete(id) {
  changes.set(id, DELETED);
  ui.messages.querySelector(`li[data-id="${CSS.escape(id)}"]`)?.remove();
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
      stopTyping(data.username);
      break;
    case 'update:chat:success':
      if (typeof data.id === 'string') applyEdit(data.id, data);
      break;
    case 'delete:chat:success':
      if (typeof data.id === 'string') applyDelete(data.id);
      break;
    case 'add:member:success':
      refreshMembers();
      break;
    case 'remove:member:success': {
      if (sameName(data.username, session.username)) {
        const byOwner = data.reason === 'kicked' || data.reason === 'banned';
        exitRoom(api.REMOVED[data.reason] ?? api.REMOVED.left, byOwner ? 'error' : 'info');
        return;
      }
      memberItem(data.username)?.remove();
      presence.delete(data.username);
      stopTyping(data.username);
      refreshMembers();
      break;
    }
    default:
      break;
  }
}

function onEphemeralEvent(name, data) {
  if (!session || data?.roomId !== session.roomId || typeof data.username !== 'string') return;
  // Our own: this page knows whether it is online, and does not tell itself it types.
  if (sameName(data.username, session.username)) return;
  if (name === 'presence') {
    presenceSeq += 1;
    const online = data.online === true;
    presence.set(data.username, { online, seq: presenceSeq });
    const item = memberItem(data.username);
    if (item) {
      showOnline(item, online);
    } else {
      // Someone the list does not show yet (a join whose event is still on its way).
      refreshMembers();
    }
  } else if (name === 'typing') {
    clearTimeout(typers.get(data.username));
    typers.set(data.username, setTimeout(() => stopTyping(data.username), TYPING_SHOWN_MS));
    renderTyping();
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
  ephemeral: onEphemeralEvent,
  gap() {
    setStatus('Some messages from while you were away are too old to be shown.', { kind: 'error' });
  },
  members(list) {
    renderMembers(list, presenceSeq);
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
  changes = new Map();
  presence = new Map();
  isOwner = false;
  historyLoaded = false;
  clearTyping();
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
  clearTyping();
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

ui.message.addEventListener('input', () => {
  if (!session || !connection || !ui.message.value.trim()) return;
  const now = Date.now();
  if (now - typingSentAt < TYPING_EVERY_MS) return;
  typingSentAt = now;
  connection.typing().catch(() => {
    // A courtesy: a lost one is not worth a word, and a lost server is told by the stream.
  });
});

// ---- editing, deleting, moderating -------------------------------------------------------

function startEditing(item) {
  if (item.querySelector('.edit-form')) return;
  const text = item.querySelector('.text');
  const form = document.createElement('form');
  form.className = 'edit-form';
  form.noValidate = true;
  const input = document.createElement('input');
  input.className = 'edit-input';
  input.autocomplete = 'off';
  input.value = text.textContent;
  input.setAttribute('aria-label', 'Edit your message');
  const save = button('save', 'Save');
  save.type = 'submit';
  form.append(input, save, button('cancel secondary', 'Cancel'));
  text.hidden = true;
  item.append(form);
  input.focus();
}

function stopEditing(item) {
  item.querySelector('.edit-form')?.remove();
  item.querySelector('.text').hidden = false;
}

async function saveEdit(item, form) {
  const input = form.querySelector('.edit-input');
  const message = input.value;
  if (message === item.querySelector('.text').textContent) {
    stopEditing(item);
    return;
  }
  const current = connection;
  const fields = form.querySelectorAll('input, button');
  for (const field of fields) field.disabled = true;
  try {
    const edited = await current.editMessage(item.dataset.id, message);
    if (connection !== current) return;
    applyEdit(item.dataset.id, edited ?? {});
    stopEditing(item);
  } catch (error) {
    if (connection !== current) return;
    for (const field of fields) field.disabled = false;
    setStatus(`Not edited: ${api.describe(error, 'edit')}`, { kind: 'error' });
  }
}

/** Runs the action of button `control` (disabled meanwhile); a refusal is told in `#status`. */
async function runAction(control, action, failed, run) {
  const current = connection;
  if (!current) return;
  control.disabled = true;
  try {
    await run(current);
  } catch (error) {
    if (connection === current) setStatus(`${failed}: ${api.describe(error, action)}`, { kind: 'error' });
  } finally {
    control.disabled = false;
  }
}

ui.messages.addEventListener('click', (event) => {
  const control = event.target.closest('button');
  const item = control?.closest('#messages > li');
  if (!item) return;
  if (control.classList.contains('edit')) {
    startEditing(item);
  } else if (control.classList.contains('cancel')) {
    stopEditing(item);
  } else if (control.classList.contains('delete')) {
    const { id } = item.dataset;
    runAction(control, 'delete', 'Not deleted', async (current) => {
      await current.deleteMessage(id);
      if (connection === current) applyDelete(id);
    });
  }
});

ui.messages.addEventListener('submit', (event) => {
  event.preventDefault();
  const item = event.target.closest('#messages > li');
  if (item) saveEdit(item, event.target);
});

ui.messages.addEventListener('keydown', (event) => {
  const item = event.target.closest?.('#messages > li');
  if (event.key === 'Escape' && item && event.target.classList.contains('edit-input')) {
    stopEditing(item);
  }
});

ui.members.addEventListener('click', (event) => {
  const control = event.target.closest('button.kick, button.ban');
  if (!control) return;
  const { username } = control.dataset;
  const ban = control.classList.contains('ban');
  runAction(control, 'remove', 'Not removed', (current) => current.removeMember(username, ban));
});

ui.leave.addEventListener('click', async () => {
  if (!session) return;
  ui.leave.disabled = true;
  connection?.stop();
  const roomId = session.roomId;
  try {
    await api.removeMember(session, session.username);
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
