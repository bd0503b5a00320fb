//! The server API, `/api/`: an app's backend acting on rooms with `Authorization: ApiKey
//! <key>` (`SERVER_API_KEY`). Without the key configured these routes are not in the router
//! at all, so every `/api/` path is the plain 404 it was before.
//!
//! [`require_api_key`] guards every route: a client locked out for wrong keys gets 429 before
//! its key is looked at; a missing or wrong key is 401 and counts against its address
//! (`RATE_SECRET_FAILURES_PER_MIN`); the key is compared in constant time
//! ([`ServerApiKey::matches`]) and appears in no log, span or error. The REST limit per
//! client address does not apply: a backend's calls are its users' actions, and the key
//! already says who it is.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::extract::{ApiJson, ApiPath, ApiQuery, page_limit};
use super::openapi;
use super::rest::{MemberPath, RemoveQuery, RoomPath};
use crate::config::ServerApiKey;
use crate::domain::{ChatMessage, EventId, RoomId, Username};
use crate::error::{ApiError, ErrorBody};
use crate::limits::ClientIp;

/// The routes, guarded by the key; `None` (no key configured) adds nothing.
pub fn routes(state: &AppState) -> Option<axum::Router<AppState>> {
    use axum::routing::{delete, get, post};
    state.server_api_key.as_ref()?;
    let routes = axum::Router::new()
        .route("/api/rooms", get(list_rooms))
        .route("/api/rooms/{roomId}", delete(delete_room))
        .route("/api/rooms/{roomId}/messages", post(post_message))
        .route(
            "/api/rooms/{roomId}/members/{username}",
            delete(remove_member),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    Some(routes)
}

/// Admits a request that presents the server API key; see the module documentation.
async fn require_api_key(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(key) = state.server_api_key.as_deref() else {
        // The routes exist only with a key; a router built otherwise admits nobody.
        return ApiError::UnauthorizedApiKey.into_response();
    };
    let ClientIp(client) = request
        .extensions()
        .get::<ClientIp>()
        .copied()
        .unwrap_or(ClientIp(std::net::IpAddr::from([127, 0, 0, 1])));
    if let Err(limited) = state.limits.check_api_key_attempt(client) {
        return limited.into_response();
    }
    if !presents(&request, key) {
        state.limits.record_wrong_api_key(client);
        metrics::counter!("chat_api_key_failures_total").increment(1);
        return ApiError::UnauthorizedApiKey.into_response();
    }
    next.run(request).await
}

/// Whether the request's `Authorization` is `ApiKey <key>` (the scheme in any case).
fn presents(request: &Request, key: &ServerApiKey) -> bool {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return false;
    };
    let value = value.as_bytes();
    let scheme = b"apikey ";
    value.len() > scheme.len()
        && value[..scheme.len()].eq_ignore_ascii_case(scheme)
        && key.matches(value[scheme.len()..].trim_ascii())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRoomsQuery {
    /// How many rooms, 1-200 (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200)]
    pub limit: Option<String>,
    /// Only rooms whose id sorts after this one (the `nextAfter` of the previous page).
    #[param(schema_with = openapi::room_id)]
    pub after: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomEntry {
    pub room_id: String,
    /// How many members the room has.
    pub members: usize,
    /// How many of them a WebSocket, SSE or socket.io connection holds now.
    pub online: usize,
    /// The id of the room's last event.
    #[schema(value_type = String, example = "1732560000000-0")]
    pub last_event_id: EventId,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoomsResponse {
    /// Rooms sorted by id.
    pub rooms: Vec<RoomEntry>,
    /// The `after` of the next page; null on the last page.
    #[schema(value_type = Option<String>)]
    pub next_after: Option<String>,
}

/// `POST /api/rooms/{roomId}/messages`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ServerMessageRequest {
    /// Any valid username (a system or bot name); it need not be a member.
    #[schema(schema_with = openapi::username)]
    pub username: String,
    /// Not blank; at most `MAX_MESSAGE_BYTES` bytes of UTF-8 (default 4096; more is 413).
    #[schema(schema_with = openapi::message)]
    pub message: String,
}

/// List rooms, sorted by id, a page at a time.
#[utoipa::path(
    get, path = "/api/rooms", tag = "server",
    params(ListRoomsQuery),
    security(("server_api_key" = [])),
    responses(
        (status = 200, body = RoomsResponse),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no server API key, or a wrong one"),
    )
)]
pub async fn list_rooms(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListRoomsQuery>,
) -> Result<Json<RoomsResponse>, ApiError> {
    let limit = page_limit(query.limit.as_deref())?;
    let after = query.after.as_deref().map(RoomId::parse).transpose()?;
    let page = state.rooms.list_rooms(after, limit).await?;
    Ok(Json(RoomsResponse {
        rooms: page
            .rooms
            .into_iter()
            .map(|summary| RoomEntry {
                room_id: summary.room.to_string(),
                members: summary.members,
                online: summary.online,
                last_event_id: summary.last_event_id,
            })
            .collect(),
        next_after: page.next_after.map(|room| room.to_string()),
    }))
}

/// Post a message as a system or bot name (not necessarily a member).
#[utoipa::path(
    post, path = "/api/rooms/{roomId}/messages", tag = "server",
    params(RoomPath),
    request_body = ServerMessageRequest,
    security(("server_api_key" = [])),
    responses(
        (status = 201, body = ChatMessage, description = "stored and sent to the room"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no server API key, or a wrong one"),
        (status = 404, body = ErrorBody, description = "room_not_found"),
        (status = 413, body = ErrorBody, description = "payload_too_large: the body, or the message over MAX_MESSAGE_BYTES"),
        (status = 415, body = ErrorBody, description = "unsupported_media_type"),
    )
)]
pub async fn post_message(
    State(state): State<AppState>,
    ApiPath(room): ApiPath<String>,
    ApiJson(body): ApiJson<ServerMessageRequest>,
) -> Result<(StatusCode, Json<ChatMessage>), ApiError> {
    let room = RoomId::parse(&room)?;
    let username = Username::parse(&body.username)?;
    let stored = state.rooms.post_as(room, username, body.message).await?;
    Ok((StatusCode::CREATED, Json(stored)))
}

/// Remove a member (`kicked`); with `?ban=true` also ban its name (`banned`).
#[utoipa::path(
    delete, path = "/api/rooms/{roomId}/members/{username}", tag = "server",
    params(MemberPath, RemoveQuery),
    security(("server_api_key" = [])),
    responses(
        (status = 204, description = "removed (with a ban: banned, member or not)"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no server API key, or a wrong one"),
        (status = 404, body = ErrorBody, description = "room_not_found, or not_member: no member has that name"),
    )
)]
pub async fn remove_member(
    State(state): State<AppState>,
    ApiPath((room, username)): ApiPath<(String, String)>,
    ApiQuery(query): ApiQuery<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let room = RoomId::parse(&room)?;
    let username = Username::parse(&username)?;
    let ban = query.ban()?;
    state.rooms.remove_member(&room, &username, ban).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a room: its connections get `room:deleted` and stop receiving it.
#[utoipa::path(
    delete, path = "/api/rooms/{roomId}", tag = "server",
    params(RoomPath),
    security(("server_api_key" = [])),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, body = ErrorBody, description = "invalid_request"),
        (status = 401, body = ErrorBody, description = "unauthorized: no server API key, or a wrong one"),
        (status = 404, body = ErrorBody, description = "room_not_found"),
    )
)]
pub async fn delete_room(
    State(state): State<AppState>,
    ApiPath(room): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let room = RoomId::parse(&room)?;
    state.rooms.delete_room(&room).await?;
    Ok(StatusCode::NO_CONTENT)
}
