//! `ApiError`: exactly API.md's error codes, and the one body shape every transport sends
//! (`{"code", "message"}`, inside `{"error": …}` for REST).
//!
//! Messages are written for the client and never carry an internal cause: store failures are
//! logged where they happen and reach the client only as `unavailable`. This is the core's
//! error: it knows nothing of HTTP; `http::error` maps each code to its status.

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error("request bodies must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    #[error("a valid member token for this room is required")]
    Unauthorized,
    /// A join without a valid JWT when identity is required; one answer for every reason.
    #[error("sign-in required: joining needs a valid ID token from the app's identity provider")]
    SignInRequired,
    /// `unauthorized` on the server API: the key is missing or wrong.
    #[error("a valid server API key is required: Authorization: ApiKey <key>")]
    UnauthorizedApiKey,
    #[error("{0}")]
    Forbidden(String),
    #[error("room not found")]
    RoomNotFound,
    #[error("not a member of this room")]
    NotMember,
    /// `not_found`: no chat message of this room has that id (unknown, another room's, not a
    /// chat message, deleted, or no longer kept in history).
    #[error("no such message in this room")]
    NotFound,
    #[error("room already exists")]
    RoomExists,
    #[error("Username already exists, please choose another username.")]
    UsernameTaken,
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("too many requests, retry after {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the service is temporarily unavailable, retry shortly")]
    Unavailable,
}

impl ApiError {
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidRequest(message.into())
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    /// The stable, machine-readable code from API.md.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest(_) => "invalid_request",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unauthorized | ApiError::SignInRequired | ApiError::UnauthorizedApiKey => {
                "unauthorized"
            }
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RoomNotFound => "room_not_found",
            ApiError::NotMember => "not_member",
            ApiError::NotFound => "not_found",
            ApiError::RoomExists => "room_exists",
            ApiError::UsernameTaken => "username_taken",
            ApiError::PayloadTooLarge(_) => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Unavailable => "unavailable",
        }
    }

    /// The seconds a client should wait before retrying, for the errors that have them.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_secs } => Some((*retry_after_secs).max(1)),
            ApiError::Unavailable => Some(1),
            _ => None,
        }
    }

    /// The `data` of a WebSocket `error` event and the `error` member of a REST error body.
    pub fn body(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

/// `{"code": "…", "message": "…"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// One of API.md's error codes.
    #[schema(example = "invalid_request")]
    pub code: &'static str,
    /// A human-readable explanation.
    pub message: String,
}

/// The REST error body: `{"error": {"code": "…", "message": "…"}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}
