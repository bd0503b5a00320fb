"""schemathesis hooks for chat-server: real member tokens, so authenticated endpoints are
tested past 401.

- Every generated case (examples, coverage and fuzzing phases) gets a member of its own: the
  auth provider creates a fresh room over REST and sends its creator's token as
  `Authorization: Bearer`. When the generated `roomId` is a valid room id, it is replaced by
  that room's id (a valid id for another valid id, so the case stays what it was generated
  as), so the request reaches the handler instead of stopping at 401.
- In the stateful phase the links carry `roomId` and `username` from one response to the
  next; the token is the one the server handed out for that room, remembered from every
  `201` join or create response; each post gets an idempotency key of its own
  (`before_call`), so the message a post's `201` names is one that post made.

The server's URL comes from `CHAT_SERVER_URL` (scripts/schema-test sets it).
"""

import os
import re
import uuid

import requests
import schemathesis

BASE_URL = os.environ["CHAT_SERVER_URL"].rstrip("/")
ROOM_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Room ids that HTTP clients rewrite as dot-segments: never swapped in or out.
DOT_SEGMENTS = {".", ".."}

# roomId -> token of a member, from every join or create response seen.
TOKENS: dict[str, str] = {}


def new_member() -> dict[str, str]:
    room = f"st-{uuid.uuid4().hex[:16]}"
    response = requests.post(
        f"{BASE_URL}/rooms",
        json={"roomId": room, "username": "schema-tester"},
        timeout=5,
    )
    response.raise_for_status()
    body = response.json()
    return {"roomId": body["roomId"], "username": body["username"], "token": body["token"]}


@schemathesis.auth(refresh_interval=None).apply_to(path_regex="^/rooms/")
class MemberToken:
    def get(self, case, context):
        if case.meta is not None and case.meta.phase.name == "stateful":
            return {}
        return new_member()

    def set(self, case, data, context):
        if not data:
            # Stateful: the token of the room the link chose, if any member of it is known.
            room = (case.path_parameters or {}).get("roomId")
            token = TOKENS.get(room) if isinstance(room, str) else None
            if token is not None:
                case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}
            return
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data['token']}"}
        room = (case.path_parameters or {}).get("roomId")
        if isinstance(room, str) and ROOM_ID.fullmatch(room) and room not in DOT_SEGMENTS:
            case.path_parameters["roomId"] = data["roomId"]
            # Leaving: about half the cases name the member itself (204, or 403 with
            # `ban=true`), the others someone else (the token is the room owner's: 404, no
            # member has that name) or an invalid name (400). Decided by the generated name,
            # so a seed replays the same way.
            name = case.path_parameters.get("username")
            if isinstance(name, str) and len(name) % 2 == 0 and name.strip() == name and name:
                case.path_parameters["username"] = data["username"]


@schemathesis.hook
def after_call(context, case, response):
    if response.status_code != 201:
        return
    try:
        body = response.json()
    except ValueError:
        return
    if isinstance(body, dict) and isinstance(body.get("token"), str):
        TOKENS[body.get("roomId")] = body["token"]


IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@schemathesis.hook
def before_call(context, case, **kwargs):
    """The stateful phase follows a post's 201 to the message it answers (an edit, a delete)
    and takes a 404 there for a message that was never made. A post under an Idempotency-Key
    used before answers the message stored the first time, as API.md says, which may have been
    deleted since: so each stateful post gets a valid key of its own (replays are tested by the
    Rust suite, tests/api)."""
    if case.meta is None or case.meta.phase.name != "stateful":
        return
    if case.method.upper() != "POST" or case.path != "/rooms/{roomId}/messages":
        return
    headers = case.headers or {}
    for name, value in list(headers.items()):
        if name.lower() == "idempotency-key" and isinstance(value, str) and IDEMPOTENCY_KEY.fullmatch(value):
            headers[name] = uuid.uuid4().hex
