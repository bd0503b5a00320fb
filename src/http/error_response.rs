//! The one mapping of [`ApiError`] to HTTP: its status, its JSON body, and `Retry-After` where
//! API.md promises one.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorBody};

/// The HTTP status of each error code, as API.md lists them.
pub fn status(error: &ApiError) -> StatusCode {
    match error {
        ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::RoomNotFound | ApiError::NotMember => StatusCode::NOT_FOUND,
        ApiError::RoomExists | ApiError::UsernameTaken => StatusCode::CONFLICT,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status(&self);
        let retry_after = match self {
            ApiError::RateLimited { retry_after_secs } => Some(retry_after_secs.max(1)),
            ApiError::Unavailable => Some(1),
            _ => None,
        };
        let mut response = (status, Json(ErrorBody { error: self.body() })).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
