//! The REST endpoints for rooms, members and messages: thin handlers that parse, call
//! [`crate::rooms::Rooms`] and shape the reply. Their request and response types are the ones
//! `/openapi.json` is generated from, so the document cannot drift from the code.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, BearerToken, bearer_text, page_limit};
use super::openapi;
use crate::domain::{ChatMessage, ClientMsgId, EventId, RoomId, RoomSecret, Username};
use crate::error::{ApiError, ErrorBody};
use crate::identity::{IdToken, Joiner};
use crate::limits::ClientIp;
pub use crate::session::JoinedResponse;

/// `POST /rooms`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateRoomRequest {
    /// 1-64 characters of `A-Z a-z 0-9 . _ -`.
    #[schema(schema_with = openapi::room_id)]
    pub room_id: String,
    /// 1-32 characters after trimming white space, no control or format characters, not only
    /// invisible ones; unique in the room (case-, width- and look-alike-insensitive).
    #[schema(schema_with = openapi::username)]
    pub username: String,
    /// Optional, 1-128 characters: joining then needs it.
    #[serde(default)]
    #[schema(schema_with = openapi::secret)]
    pub secret: Option<String>,
}

/// `POST /rooms/{roomId}/members`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct JoinRequest {
    /// 1-32 characters after trimming white space, no control or format characters, not only
    /// invisible ones; unique in the room (case-, width- and look-alike-insensitive).
    #[schema(schema_with = openapi::username)]
    pub username: String,
    /// The room's secret, if it has one (ignored by an open room).
    #[serde(default)]
    #[schema(schema_with = openapi::secret)]
    pub secret: Option<String>,
}

/// `POST /rooms` when identity is required (`AUTH_*` set): the JWT is the Bearer token and
/// `username` may be left out (the token's name is the member's).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedInCreateRoomRequest {
    pub room_id: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

/// `POST /rooms/{roomId}/members` when identity is required.
#[derive(Debug, Deserialize)]
pub struct SignedInJoinRequest {
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub secret: Option<String>,
}

/// `POST /rooms/{roomId}/messages`, and `PATCH /rooms/{roomId}/messages/{id}` (the new text).
#[derive(Debug, Deserialize, ToSchema)]
pub struct PostMessageRequest {
    /// Not blank; at most `MAX_MESSAGE_BYTES` bytes of UTF-8 (default 4096; more is 413).
    #[schema(schema_with = openapi::message)]
    pub message: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many messages, 1-200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// Only messages before this event id (the `nextBefore` of the previous page).
    #[param(schema_with = openapi::event_id)]
    pub before: Option<String>,
}

/// `{roomId}` in a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct RoomPath {
    /// The room: 1-64 characters of `A-Z a-z 0-9 . _ -`.
    #[param(rename = "roomId", schema_with = openapi::room_id)]
    pub room_id: String,
}

/// `{roomId}` and `{username}` in a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MemberPath {
    /// The room: 1-64 characters of `A-Z a-z 0-9 . _ -`.
    #[param(rename = "roomId", schema_with = openapi::room_id)]
    pub room_id: String,
    /// The member: its name as it joined (compared case- and width-insensitively).
    #[param(schema_with = openapi::username)]
    pub username: String,
}

/// `{roomId}` and a message's `{id}` in a path.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct MessagePath {
    /// The room: 1-64 characters of `A-Z a-z 0-9 . _ -`.
    #[param(rename = "roomId", schema_with = openapi::room_id)]
    pub room_id: String,
    /// The message: the event id of its `create:chat:success` (its `id` in history). Not an
    /// event id at all: 404 `not_found`, as an id no message has.
    #[param(schema_with = openapi::event_id)]
    pub id: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryResponse {
    /// Chat messages, oldest first, each as last edited; deleted messages are left out.
    pub messages: Vec<ChatMessage>,
    /// The `before` for the previous page; null when there is none.
    #[schema(value_type = Option<String>)]
    pub next_before: Option<EventId>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberEntry {
    pub username: String,
    /// Whether a WebSocket or SSE connection holds this member now.
    pub online: bool,
    /// Whether this member is the room's owner: its creator, as long as it has not left (no
    /// one is the owner after that, not even a later member of the same name).
    pub owner: bool,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// `true` also bans the name (and names compared equal to it) for the room's lifetime.
    #[param(value_type = Option<bool>)]
    pub ban: Option<String>,
}

impl RemoveQuery {
    /// Whether a ban is asked: `true` or `false`, absent is `false`, anything else is 400.
    pub fn ban(&self) -> Result<bool, ApiError> {
        match self.ban.as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::invalid("ban must be true or false")),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MembersResponse {
    pub members: Vec<MemberEntry>,
}

fn optional_secret(raw: Option<String>) -> Result<Option<RoomSecret>, ApiError> {
    raw.map(RoomSecret::parse).transpose()
}

/// Create a room; its creator joins it.
#[utoipa::path(
    post, path = "/rooms", tag = "rooms",
    request_body = CreateRoomRequest,
    responses(
        (status = 201, body = JoinedResponse, description = "room created, creator joined"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 409, body = ErrorBody, description = "room_exists"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
    )
)]
pub async fn create_room(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiJson(body): ApiJson<CreateRoomRequest>,
) -> Result<(StatusCode, Json<JoinedResponse>), ApiError> {
    let joiner = anonymous(&body.username);
    enter(&state, client, &body.room_id, joiner, body.secret, true).await
}

/// [`create_room`] when identity is required (the router picks one of the two at start, so
/// without identity the body rules and their errors stay exactly as they were).
pub async fn create_room_signed_in(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignedInCreateRoomRequest>,
) -> Result<(StatusCode, Json<JoinedResponse>), ApiError> {
    let joiner = signed_in(&headers, body.username.as_deref());
    enter(&state, client, &body.room_id, joiner, body.secret, true).await
}

/// [`join_room`] when identity is required.
pub async fn join_room_signed_in(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiPath(room): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SignedInJoinRequest>,
) -> Result<(StatusCode, Json<JoinedResponse>), ApiError> {
    let joiner = signed_in(&headers, body.username.as_deref());
    enter(&state, client, &room, joiner, body.secret, false).await
}

/// A create (`create`) or a join, its parts checked in the order they always were: room,
/// name, secret.
async fn enter(
    state: &AppState,
    client: std::net::IpAddr,
    room: &str,
    joiner: Result<Joiner, ApiError>,
    secret: Option<String>,
    create: bool,
) -> Result<(StatusCode, Json<JoinedResponse>), ApiError> {
    let room = RoomId::parse(room)?;
    let (joiner, secret) = (joiner?, optional_secret(secret)?);
    let rooms = &state.rooms;
    let joined = if create {
        rooms.create_room(client, room, joiner, secret).await?
    } else {
        rooms.join(client, room, joiner, secret).await?
    };
    Ok((StatusCode::CREATED, Json(joined.into())))
}

fn anonymous(username: &str) -> Result<Joiner, ApiError> {
    Ok(Joiner {
        username: Some(Username::parse(username)?),
        id_token: None,
    })
}

/// The joiner of a signed-in REST join: the JWT in `Authorization: Bearer`, and the name
/// the body may carry.
fn signed_in(headers: &HeaderMap, username: Option<&str>) -> Result<Joiner, ApiError> {
    Ok(Joiner {
        username: username.map(Username::parse).transpose()?,
        id_token: bearer_text(headers).map(IdToken::presented),
    })
}

/// Join a room.
#[utoipa::path(
    post, path = "/rooms/{roomId}/members", tag = "rooms",
    params(RoomPath),
    request_body = JoinRequest,
    responses(
        (status = 201, body = JoinedResponse, description = "joined"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 403, body = ErrorBody, description = "forbidden: wrong or missing secret, or the room is full"),
        (status = 404, body = ErrorBody, description = "room_not_found"),
        (status = 409, body = ErrorBody, description = "username_taken"),
        (status = 413, body = ErrorBody, description = "payload_too_large"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
    )
)]
pub async fn join_room(
    State(state): State<AppState>,
    ClientIp(client): ClientIp,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<JoinRequest>,
) -> Result<(StatusCode, Json<JoinedResponse>), ApiError> {
    let joiner = anonymous(&body.username);
    enter(&state, client, &room, joiner, body.secret, false).await
}

/// Leave a room; or, with the room owner's token, remove another member (`kicked`), and with
/// `?ban=true` ban its name too (`banned`).
#[utoipa::path(
    delete, path = "/rooms/{roomId}/members/{username}", tag = "rooms",
    params(MemberPath, RemoveQuery),
    security(("member_token" = [])),
    responses(
        (status = 204, description = "left, or (the owner's token, another name) kicked or banned"),
        (status = 400, body = ErrorBody, description = "invalid_request: a bad name or `ban`"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
        (status = 403, body = ErrorBody, description = "forbidden: another member's name, and the token is not the room owner's; or `ban=true` on one's own name"),
        (status = 404, body = ErrorBody, description = "not_member: the owner named no member"),
    )
)]
pub async fn leave_room(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath((room, username)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let room = RoomId::parse(&room)?;
    let username = Username::parse(&username)?;
    let ban = query.ban()?;
    state
        .rooms
        .remove_by_member(&room, &token, &username, ban)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Post a chat message. With an `Idempotency-Key`, a retry returns the first message.
#[utoipa::path(
    post, path = "/rooms/{roomId}/messages", tag = "messages",
    params(
        RoomPath,
        ("Idempotency-Key" = Option<String>, Header, pattern = r"^[A-Za-z0-9._:-]{1,64}$",
            description = "1-64 of A-Z a-z 0-9 . _ : -; a retry with the same key lands once"),
    ),
    request_body = PostMessageRequest,
    security(("member_token" = [])),
    responses(
        (status = 201, body = ChatMessage, description = "stored (or stored earlier under this key)"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
        (status = 413, body = ErrorBody, description = "payload_too_large: the body, or the message over MAX_MESSAGE_BYTES"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
    )
)]
pub async fn post_message(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath(room): ApiPath<String>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<PostMessageRequest>,
) -> Result<(StatusCode, Json<ChatMessage>), ApiError> {
    let room = RoomId::parse(&room)?;
    let idempotency_key = match headers.get("idempotency-key") {
        Some(value) => Some(ClientMsgId::parse(value.to_str().map_err(|_| {
            ApiError::invalid("idempotency key must be 1-64 characters of A-Z a-z 0-9 . _ : -")
        })?)?),
        None => None,
    };
    let message = state.rooms.message(body.message)?;
    let stored = state
        .rooms
        .post(room, token, message, idempotency_key)
        .await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Edit a chat message (its author only). Editing to the text it has already changes
/// nothing and answers the same, so a retry lands once.
#[utoipa::path(
    patch, path = "/rooms/{roomId}/messages/{id}", tag = "messages",
    params(MessagePath),
    request_body = PostMessageRequest,
    security(("member_token" = [])),
    responses(
        (status = 200, body = ChatMessage, description = "the message as it stands, with editedTs"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
        (status = 403, body = ErrorBody, description = "forbidden: the message is another member's"),
        (status = 404, body = ErrorBody, description = "not_found: no chat message of this room has this id (or it was deleted, or is no longer kept)"),
        (status = 413, body = ErrorBody, description = "payload_too_large: the body, or the message over MAX_MESSAGE_BYTES"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
    )
)]
pub async fn edit_message(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath((room, id)): ApiPath<(String, String)>,
    ApiJson(body): ApiJson<PostMessageRequest>,
) -> Result<Json<ChatMessage>, ApiError> {
    let room = RoomId::parse(&room)?;
    let id = EventId::of_message(&id)?;
    let message = state.rooms.message(body.message)?;
    let edited = state.rooms.edit_message(&room, &token, id, message).await?;
    Ok(Json(edited))
}

/// Delete a chat message (its author, or the room's owner). A retry gets 404: the message is
/// gone.
#[utoipa::path(
    delete, path = "/rooms/{roomId}/messages/{id}", tag = "messages",
    params(MessagePath),
    security(("member_token" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
        (status = 403, body = ErrorBody, description = "forbidden: another member's message, and not the room's owner"),
        (status = 404, body = ErrorBody, description = "not_found: no chat message of this room has this id (or it was deleted already, or is no longer kept)"),
    )
)]
pub async fn delete_message(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath((room, id)): ApiPath<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let room = RoomId::parse(&room)?;
    let id = EventId::of_message(&id)?;
    state.rooms.delete_message(&room, &token, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Say that the member is typing: the room's live connections get a `typing` event (at most
/// one per member per 2 s; more are taken and dropped). No body.
#[utoipa::path(
    post, path = "/rooms/{roomId}/typing", tag = "messages",
    params(RoomPath),
    security(("member_token" = [])),
    responses(
        (status = 204, description = "taken: broadcast, or dropped when this member's last typing went out less than 2 s ago"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
    )
)]
pub async fn typing(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath(room): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let room = RoomId::parse(&room)?;
    state.rooms.typing(&room, &token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Read chat history, newest page first, each page oldest first.
#[utoipa::path(
    get, path = "/rooms/{roomId}/messages", tag = "messages",
    params(RoomPath, HistoryQuery),
    security(("member_token" = [])),
    responses(
        (status = 200, body = HistoryResponse),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
    )
)]
pub async fn history(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath(room): ApiPath<String>,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryResponse>, ApiError> {
    let room = RoomId::parse(&room)?;
    let limit = page_limit(query.limit.as_deref())?;
    let before = query
        .before
        .as_deref()
        .map(str::parse::<EventId>)
        .transpose()?;
    let page = state.rooms.history(&room, &token, before, limit).await?;
    Ok(Json(HistoryResponse {
        messages: page.messages,
        next_before: page.next_before,
    }))
}

/// List a room's members, whether each is online, and which one is the room's owner.
#[utoipa::path(
    get, path = "/rooms/{roomId}/members", tag = "rooms",
    params(RoomPath),
    security(("member_token" = [])),
    responses(
        (status = 200, body = MembersResponse),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no token, or not a member's token in this room"),
    )
)]
pub async fn members(
    State(state): State<AppState>,
    BearerToken(token): BearerToken,
    ApiPath(room): ApiPath<String>,
) -> Result<Json<MembersResponse>, ApiError> {
    let room = RoomId::parse(&room)?;
    let members = state.rooms.members(&room, &token).await?;
    Ok(Json(MembersResponse {
        members: members
            .into_iter()
            .map(|member| MemberEntry {
                username: member.username,
                online: member.online,
                owner: member.owner,
            })
            .collect(),
    }))
}
