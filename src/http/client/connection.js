// One room's live events over WebSocket or Server-Sent Events, kept alive across dropped
// connections, server restarts and networks that block WebSocket, plus the outbox that sends
// the member's messages exactly once.
//
// - A link is one attempt: a WebSocket that sends `resume`, or an EventSource opened with
//   `?lastEventId=`. Both start right after the last event the page processed, so a new link
//   never misses an event; the page drops ids it has already seen, so none shows twice.
// - A failed EventSource is replaced rather than left to its built-in reconnect: that one
//   gives up for good on an HTTP error, cannot tell a revoked token from a dead server, and
//   retries at a fixed delay with no backoff. Each EventSource is opened with a fresh
//   single-use stream ticket (`?ticket=`), never the member token: request logs keep URLs.
// - When a link fails, one authenticated REST request (the member list) tells the cases
//   apart: 401 means the membership is gone (stop), no answer means the server or network is
//   down (back off and retry the same transport), and an answer means HTTP gets through. A
//   WebSocket that cannot be opened while HTTP gets through, twice in a row (or once, when it
//   hung for OPEN_TIMEOUT_MS), is taken to be blocked: the connection switches to SSE for
//   the rest of the page's life. A restart therefore never looks like a blocked WebSocket,
//   because its probe gets no answer.
// - The outbox is sent head first, one message at a time, so messages keep the order they
//   were typed in. Each carries a client-chosen id (`clientMsgId` on WebSocket, the
//   `Idempotency-Key` header on REST): resending it after a lost reply lands it once.
// - The member's other actions (typing, editing, deleting, removing a member) go over the
//   WebSocket while one is ready, else over REST, which works whatever the link is doing.
// - Ephemeral events (presence, typing) carry no id: they are passed on as they come and
//   never move the page's last processed id.

import * as api from './api.js';

/** A link must be usable (WebSocket resumed, EventSource open) within this. */
const OPEN_TIMEOUT_MS = 4000;
/** A WebSocket request unanswered this long means the connection is dead. */
const REPLY_TIMEOUT_MS = 10000;
/** Failed WebSocket attempts (with HTTP working) before switching to SSE. */
const FALLBACK_STRIKES = 2;
const BACKOFF_FIRST_MS = 250;
const BACKOFF_MAX_MS = 8000;
/** How long to wait before resending when the server said 503 or 429 without a delay. */
const RESEND_DELAY_MS = 2000;

/** The room events of API.md, the same names on both transports. */
export const ROOM_EVENTS = [
  'create:room:success',
  'add:member:success',
  'remove:member:success',
  'create:chat:success',
  'update:chat:success',
  'delete:chat:success',
];

/** API.md's ephemeral events: no id, not in the log, never replayed. */
export const EPHEMERAL_EVENTS = ['presence', 'typing'];

function backoff(retries) {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** retries);
  // Jitter, so the clients of a restarted server do not all come back in the same instant.
  return Math.round(base * (0.8 + Math.random() * 0.4));
}

const lost = () => new api.ApiError('network', '');

/** A WebSocket on `/ws` that resumes the member's token and then carries the room. */
class WebSocketLink {
  name = 'websocket';

  constructor(connection) {
    this.connection = connection;
    this.ready = false;
    this.closed = false;
    this.replies = new Map();
    this.nextRef = 0;
  }

  open() {
    const socket = new WebSocket(api.webSocketUrl());
    this.socket = socket;
    this.openTimer = setTimeout(() => this.fail({ timedOut: true }), OPEN_TIMEOUT_MS);
    socket.onopen = () => this.resume();
    socket.onmessage = (message) => this.receive(message.data);
    // An `error` is always followed by `close`, which is where the link ends.
    socket.onclose = () => this.fail({});
  }

  async resume() {
    const { session } = this.connection;
    let ack;
    try {
      ack = await this.request('resume', {
        roomId: session.roomId,
        token: session.token,
        lastEventId: this.connection.lastEventId(),
      });
    } catch (error) {
      if (api.isMembershipGone(error)) {
        this.close();
        this.connection.membershipGone(this, error);
      } else {
        this.fail({});
      }
      return;
    }
    clearTimeout(this.openTimer);
    this.ready = true;
    this.connection.linkReady(this, { complete: ack?.complete !== false });
  }

  /** Sends a client event and resolves with its `ack` data (rejects with its `error`). */
  request(event, data, ref = `r${++this.nextRef}`) {
    return new Promise((resolve, reject) => {
      if (this.closed || this.socket.readyState !== WebSocket.OPEN) {
        reject(lost());
        return;
      }
      const timer = setTimeout(() => {
        this.replies.delete(ref);
        reject(lost());
        this.fail({});
      }, REPLY_TIMEOUT_MS);
      this.replies.set(ref, { resolve, reject, timer });
      this.socket.send(JSON.stringify({ event, ref, data }));
    });
  }

  receive(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame.event === 'ack' || frame.event === 'error') {
      const reply = this.replies.get(frame.ref);
      if (!reply) return;
      this.replies.delete(frame.ref);
      clearTimeout(reply.timer);
      if (frame.event === 'ack') {
        reply.resolve(frame.data);
      } else {
        reply.reject(new api.ApiError(String(frame.data?.code ?? 'invalid_request'),
          String(frame.data?.message ?? '')));
      }
      return;
    }
    if (typeof frame.id === 'string' && ROOM_EVENTS.includes(frame.event)) {
      this.connection.roomEvent(this, frame.id, frame.event, frame.data);
    } else if (EPHEMERAL_EVENTS.includes(frame.event)) {
      this.connection.ephemeralEvent(this, frame.event, frame.data);
    }
  }

  /** Sends one outbox message; resolves with the stored message. */
  send(item) {
    return this.request('create:chat', {
      roomId: this.connection.session.roomId,
      message: item.message,
      clientMsgId: item.clientMsgId,
    }, item.clientMsgId);
  }

  /** Ends the link without telling the connection (it asked for it). */
  close() {
    if (this.closed) return false;
    this.closed = true;
    clearTimeout(this.openTimer);
    for (const reply of this.replies.values()) {
      clearTimeout(reply.timer);
      reply.reject(lost());
    }
    this.replies.clear();
    this.socket.onopen = this.socket.onmessage = this.socket.onclose = null;
    this.socket.close();
    return true;
  }

  fail({ timedOut = false }) {
    if (this.close()) this.connection.linkFailed(this, { wasReady: this.ready, timedOut });
  }
}

/** An EventSource on `/rooms/{roomId}/events`; messages go out with REST. */
class EventSourceLink {
  name = 'sse';

  constructor(connection) {
    this.connection = connection;
    this.ready = false;
    this.closed = false;
  }

  async open() {
    const connection = this.connection;
    // Fetching the ticket is part of opening: it counts against the same deadline.
    this.openTimer = setTimeout(() => this.fail({ timedOut: true }), OPEN_TIMEOUT_MS);
    let ticket;
    try {
      ({ ticket } = await api.streamTicket(connection.session));
    } catch {
      // The probe that follows a failure tells a gone membership from a server that is down.
      this.fail({});
      return;
    }
    if (this.closed) return;
    const source = new EventSource(
      api.eventsUrl(connection.session, ticket, connection.lastEventId()));
    this.source = source;
    source.onopen = () => {
      clearTimeout(this.openTimer);
      this.ready = true;
      connection.linkReady(this, { complete: true });
    };
    const listen = (names, deliver) => {
      for (const name of names) {
        source.addEventListener(name, (message) => {
          let data;
          try {
            data = JSON.parse(message.data);
          } catch {
            return;
          }
          deliver(name, data, message.lastEventId);
        });
      }
    };
    listen(ROOM_EVENTS, (name, data, id) => connection.roomEvent(this, id, name, data));
    // Sent without an `id:` line, so `lastEventId` there is the previous event's: unused.
    listen(EPHEMERAL_EVENTS, (name, data) => connection.ephemeralEvent(this, name, data));
    source.addEventListener('resume:gap', () => connection.gap(this));
    // Our own reconnect (with the last id we processed) replaces EventSource's.
    source.onerror = () => this.fail({});
  }

  send(item) {
    return api.postMessage(this.connection.session, item.message, item.clientMsgId);
  }

  close() {
    if (this.closed) return false;
    this.closed = true;
    clearTimeout(this.openTimer);
    // Absent while the ticket is being fetched.
    this.source?.close();
    return true;
  }

  fail({ timedOut = false }) {
    if (this.close()) this.connection.linkFailed(this, { wasReady: this.ready, timedOut });
  }
}

/**
 * The member's live connection to one room.
 *
 * `on` receives: `transport(name, fellBack)`, `state(state, text, kind)`, `ready(name,
 * {complete})`, `event(id, name, data)`, `ephemeral(name, data)`, `gap()`, `members(list)`,
 * `sent(item, stored)`, `rejected(item, error)`, `problem(error)` and `ended(error)`.
 */
export class Connection {
  constructor({ session, mode, lastEventId, outbox, on }) {
    this.session = session;
    this.lastEventId = lastEventId;
    this.outbox = outbox;
    this.on = on;
    this.transport = mode === 'sse' ? 'sse' : 'websocket';
    this.canFallBack = mode === 'auto';
    this.fellBack = false;
    this.strikes = 0;
    this.retries = 0;
    this.link = null;
    this.stopped = false;
    this.reconnectTimer = null;
    this.flushTimer = null;
    this.flushing = false;
    this.onOnline = () => {
      // The browser says the network is back: skip the rest of the backoff.
      if (this.reconnectTimer !== null) {
        clearTimeout(this.reconnectTimer);
        this.connect();
      }
    };
  }

  start() {
    window.addEventListener('online', this.onOnline);
    this.on.transport(this.transport, false);
    this.connect();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this.onOnline);
    clearTimeout(this.reconnectTimer);
    clearTimeout(this.flushTimer);
    this.link?.close();
    this.link = null;
  }

  get isReady() {
    return Boolean(this.link?.ready);
  }

  connect() {
    this.reconnectTimer = null;
    if (this.stopped) return;
    const link = this.transport === 'websocket'
      ? new WebSocketLink(this)
      : new EventSourceLink(this);
    this.link = link;
    this.on.state(this.retries > 0 ? 'reconnecting' : 'connecting',
      this.retries > 0 ? 'Reconnecting…' : 'Connecting…', 'info');
    link.open();
  }

  linkReady(link, { complete }) {
    if (link !== this.link || this.stopped) return;
    this.retries = 0;
    this.strikes = 0;
    this.on.ready(link.name, { complete });
    this.flush();
  }

  roomEvent(link, id, name, data) {
    if (link !== this.link || this.stopped) return;
    this.on.event(id, name, data);
  }

  ephemeralEvent(link, name, data) {
    if (link === this.link && !this.stopped) this.on.ephemeral(name, data);
  }

  gap(link) {
    if (link === this.link && !this.stopped) this.on.gap();
  }

  membershipGone(link, error) {
    if (link !== this.link || this.stopped) return;
    this.end(error);
  }

  async linkFailed(link, { wasReady, timedOut }) {
    if (link !== this.link || this.stopped) return;
    this.link = null;
    this.on.state('reconnecting', 'Connection lost. Checking the server…', 'info');
    const probe = await this.probe();
    if (this.stopped || probe === 'gone') return;
    if (probe === 'ok' && !wasReady && this.canFallBack && this.transport === 'websocket') {
      this.strikes += timedOut ? FALLBACK_STRIKES : 1;
      if (this.strikes >= FALLBACK_STRIKES) {
        this.transport = 'sse';
        this.canFallBack = false;
        this.fellBack = true;
        this.on.transport('sse', true);
        this.connect();
        return;
      }
    }
    const delay = backoff(this.retries);
    this.retries += 1;
    const seconds = Math.max(1, Math.round(delay / 1000));
    if (probe === 'down') {
      this.on.state('reconnecting',
        `Cannot reach the server. Reconnecting in ${seconds} s…`, 'error');
    } else {
      this.on.state('reconnecting', `Connection lost. Reconnecting in ${seconds} s…`, 'info');
    }
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  /** `ok` (HTTP gets through), `down` (no answer) or `gone` (the membership ended). */
  async probe() {
    try {
      const reply = await api.members(this.session);
      if (!this.stopped) this.on.members(reply.members);
      return 'ok';
    } catch (error) {
      if (api.isMembershipGone(error)) {
        this.end(error);
        return 'gone';
      }
      return 'down';
    }
  }

  end(error) {
    if (this.stopped) return;
    this.stop();
    this.on.ended(error);
  }

  /**
   * Sends client event `event` with `data` (plus the room) over the WebSocket when one is
   * ready, else makes the REST call `overRest`; resolves with the ack data or the reply.
   */
  act(event, data, overRest) {
    const link = this.link;
    if (link?.ready && link instanceof WebSocketLink) {
      return link.request(event, { roomId: this.session.roomId, ...data });
    }
    return overRest();
  }

  /** Tells the room the member is typing. */
  typing() {
    return this.act('typing', {}, () => api.typing(this.session));
  }

  /** Replaces the text of message `id`; resolves with the message as edited. */
  editMessage(id, message) {
    return this.act('update:chat', { id, message },
      () => api.editMessage(this.session, id, message));
  }

  deleteMessage(id) {
    return this.act('delete:chat', { id }, () => api.deleteMessage(this.session, id));
  }

  /** The owner's kick of another member; `ban` also bans the name. */
  removeMember(username, ban) {
    return this.act('remove:member', ban ? { username, ban: true } : { username },
      () => api.removeMember(this.session, username, ban));
  }

  /** Sends the outbox, head first, while a link is ready. Safe to call at any time. */
  async flush() {
    if (this.flushing) return;
    this.flushing = true;
    clearTimeout(this.flushTimer);
    try {
      for (;;) {
        const link = this.link;
        const item = this.outbox()[0];
        if (this.stopped || !item || !link?.ready) return;
        try {
          const stored = await link.send(item);
          if (this.stopped) return;
          this.on.sent(item, stored);
        } catch (error) {
          if (this.stopped) return;
          if (api.isMembershipGone(error)) {
            this.end(error);
            return;
          }
          if (api.isTransient(error)) {
            // The message stays first in the outbox. A dropped WebSocket resends it when the
            // next link is ready; a REST post (or a 503 / 429) is retried after a pause.
            if (error.code !== 'network') this.on.problem(error);
            const delay = (error.retryAfterSecs ?? 0) * 1000 || RESEND_DELAY_MS;
            this.flushTimer = setTimeout(() => this.flush(), delay);
            return;
          }
          // The server refused this message for good (too long, invalid): drop it, say why.
          this.on.rejected(item, error);
        }
      }
    } finally {
      this.flushing = false;
    }
  }
}
