// The REST half of API.md as the page uses it, one sentence a person can act on for every
// error code, and the page's other sentences (kept here, free of the DOM, so the browser
// tests import the very words they expect). Every request has a deadline, so a hung network
// shows up as an error instead of a page that waits forever.

const REQUEST_TIMEOUT_MS = 10000;

/** An API error (`code` is one of API.md's codes), or `network` when no answer came. */
export class ApiError extends Error {
  constructor(code, detail, status = 0, retryAfterSecs = null) {
    super(detail || code);
    this.code = code;
    this.detail = detail;
    this.status = status;
    this.retryAfterSecs = retryAfterSecs;
  }
}

// API.md's codes, in the order of its table. `network` is the page's own: no reply at all.
export const SENTENCES = {
  invalid_request: 'That was not accepted.',
  unsupported_media_type: 'The server did not understand how this page sent its request. Reload the page.',
  unauthorized: 'Your membership of this room has ended (you left, were away too long, or were removed). Join the room again.',
  forbidden: 'Not allowed: this room needs its secret and the one given is missing or wrong, or this name is banned from it.',
  room_not_found: 'There is no room with that name. Check the name, or create the room.',
  not_member: 'You are not a member of this room any more. Join it again.',
  room_exists: 'A room with that name already exists. Join it, or choose another name.',
  username_taken: 'That name is already taken in this room. Please choose another one.',
  payload_too_large: 'That message is too long to send. Shorten it and try again.',
  rate_limited: 'You are sending too fast.',
  unavailable: 'The server cannot reach its storage right now. Trying again shortly.',
  network: 'Cannot reach the server. Check your connection; trying again shortly.',
};

/**
 * What `forbidden` and `not_found` mean for an action on a message or a member (API.md,
 * "Editing, deleting and moderating"), where the join sentence above would mislead.
 */
export const ACTION_SENTENCES = {
  edit: {
    forbidden: 'Only its author may edit a message.',
    not_found: 'That message was deleted.',
  },
  delete: {
    forbidden: 'Only its author or the room\'s owner may delete a message.',
    not_found: 'That message was already deleted.',
  },
  remove: {
    forbidden: 'Only the room\'s owner may remove other members.',
    // A kick of a name no member holds (any more): the page's own membership is fine.
    not_member: 'That member has already left.',
  },
};

/** What a member whose membership ended is told, by `remove:member:success` reason. */
export const REMOVED = {
  left: 'You left the room (from another tab or device).',
  timeout: 'You were away too long and have left the room. Join it again to go on.',
  kicked: 'You were removed from the room by its owner.',
  banned: 'You were removed from the room by its owner and banned.',
};

/** A name inside a sentence of plain text: first-strong isolate … pop directional isolate,
 * what `<bdi>` does for an element, so a right-to-left name cannot reorder the sentence. */
export function isolated(name) {
  return `\u2068${name}\u2069`;
}

/** "alice is typing…", "alice and bob are typing…", "alice, bob and 2 others are typing…". */
export function typingSentence(names) {
  const shown = names.slice(0, names.length > 3 ? 2 : 3).map(isolated);
  const others = names.length - shown.length;
  if (others > 0) shown.push(`${others} others`);
  if (shown.length === 0) return '';
  const list = shown.length === 1
    ? shown[0]
    : `${shown.slice(0, -1).join(', ')} and ${shown[shown.length - 1]}`;
  return `${list} ${names.length === 1 ? 'is' : 'are'} typing…`;
}

/** A join answered 401: the server requires the app's sign-in (API.md, "Identity"). */
export const SIGN_IN_REQUIRED =
  'This chat is for the app\'s signed-in users: sign in with the app, then join again.';

/** The sentence shown in `#status` for an error; `action` (a key of ACTION_SENTENCES) names
 * what was refused when it was not a join or a post. */
export function describe(error, action) {
  if (!(error instanceof ApiError)) {
    return 'Something went wrong in this page. Reload it to try again.';
  }
  const sentence = ACTION_SENTENCES[action]?.[error.code] ?? SENTENCES[error.code] ??
    `The server answered with an error (${error.code}).`;
  if (error.code === 'invalid_request' && error.detail) {
    // The server's own explanation says which field and which rule: worth showing.
    return `${sentence} ${error.detail}`;
  }
  if (error.code === 'rate_limited' && error.retryAfterSecs) {
    return `${sentence} Trying again in ${error.retryAfterSecs} s.`;
  }
  return sentence;
}

/** Errors worth retrying as they are: the request may succeed later unchanged. */
export function isTransient(error) {
  return error instanceof ApiError &&
    (error.code === 'network' || error.code === 'unavailable' || error.code === 'rate_limited');
}

/** Errors that mean the member token no longer names a member of the room. */
export function isMembershipGone(error) {
  return error instanceof ApiError &&
    (error.code === 'unauthorized' || error.code === 'not_member' || error.code === 'room_not_found');
}

const segment = encodeURIComponent;

async function request(method, path, { token, body, idempotencyKey } = {}) {
  const headers = {};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (token) headers.Authorization = `Bearer ${token}`;
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  } catch {
    throw new ApiError('network', '');
  }
  if (response.status === 204) return null;
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    // A proxy's HTML error page, or a body cut off: handled as "no API answer" below.
  }
  if (response.ok && payload !== null) return payload;
  const error = payload?.error;
  if (typeof error?.code === 'string') {
    const retryAfter = Number.parseInt(response.headers.get('Retry-After') ?? '', 10);
    throw new ApiError(error.code, String(error.message ?? ''), response.status,
      Number.isFinite(retryAfter) ? retryAfter : null);
  }
  // Not our server answering (a gateway timeout, a captive portal): as good as no answer.
  throw new ApiError('network', '', response.status);
}

/**
 * `POST /rooms`: creates the room and joins it. With `idToken` (the app's sign-in, when the
 * server requires it) the JWT is the Bearer token and an empty name is left out: the
 * token's name is the member's.
 */
export function createRoom(roomId, username, secret, idToken) {
  const body = { roomId };
  // A blank name is left out: a signed-in join takes the token's (the first try, without a
  // token, then earns the 401 that asks the app for one).
  if (username.trim()) body.username = username;
  if (secret) body.secret = secret;
  return request('POST', '/rooms', { body, token: idToken });
}

/** `POST /rooms/{roomId}/members`, signed in as `createRoom` is. */
export function joinRoom(roomId, username, secret, idToken) {
  const body = {};
  if (username.trim()) body.username = username;
  if (secret) body.secret = secret;
  return request('POST', `/rooms/${segment(roomId)}/members`, { body, token: idToken });
}

/**
 * `DELETE /rooms/{roomId}/members/{username}`: leaving (one's own name), or the owner's kick
 * (another's; `ban` also bans the name).
 */
export function removeMember(session, username, ban = false) {
  const query = ban ? '?ban=true' : '';
  return request('DELETE',
    `/rooms/${segment(session.roomId)}/members/${segment(username)}${query}`,
    { token: session.token });
}

/** `POST /rooms/{roomId}/messages` with an `Idempotency-Key`, so a retry never posts twice. */
export function postMessage(session, message, idempotencyKey) {
  return request('POST', `/rooms/${segment(session.roomId)}/messages`,
    { token: session.token, body: { message }, idempotencyKey });
}

/** `PATCH /rooms/{roomId}/messages/{id}`: resolves with the message as now edited. */
export function editMessage(session, id, message) {
  return request('PATCH', `/rooms/${segment(session.roomId)}/messages/${segment(id)}`,
    { token: session.token, body: { message } });
}

/** `DELETE /rooms/{roomId}/messages/{id}`. */
export function deleteMessage(session, id) {
  return request('DELETE', `/rooms/${segment(session.roomId)}/messages/${segment(id)}`,
    { token: session.token });
}

/** `POST /rooms/{roomId}/typing` (no body); the server drops more than one per 2 s. */
export function typing(session) {
  return request('POST', `/rooms/${segment(session.roomId)}/typing`, { token: session.token });
}

/** `GET /rooms/{roomId}/messages`: the newest `limit` chat messages, oldest first. */
export function history(session, limit = 50) {
  return request('GET', `/rooms/${segment(session.roomId)}/messages?limit=${limit}`,
    { token: session.token });
}

/** `GET /rooms/{roomId}/members`. */
export function members(session) {
  return request('GET', `/rooms/${segment(session.roomId)}/members`, { token: session.token });
}

/**
 * `POST /rooms/{roomId}/events/ticket`: a single-use ticket for opening the event stream, so
 * the member token never goes into a URL (request logs record URLs whole).
 */
export function streamTicket(session) {
  return request('POST', `/rooms/${segment(session.roomId)}/events/ticket`, { token: session.token });
}

/** The URL of the room's event stream for EventSource, which cannot send headers. */
export function eventsUrl(session, ticket, lastEventId) {
  const query = new URLSearchParams({ ticket });
  if (lastEventId) query.set('lastEventId', lastEventId);
  return `/rooms/${segment(session.roomId)}/events?${query}`;
}

/** The WebSocket endpoint on this page's own origin. */
export function webSocketUrl() {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/ws`;
}
