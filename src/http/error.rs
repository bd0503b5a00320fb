//! API errors as HTTP responses: each code's status (API.md's table), the JSON body
//! `{"error": {"code", "message"}}`, and `Retry-After` where the error has one.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorBody};

/// The HTTP status of an error code.
pub fn status_of(error: &ApiError) -> StatusCode {
    match error {
        ApiError::InvalidRequest(_) => StatusCode::BAD_REQUEST,
        ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ApiError::Unauthorized | ApiError::SignInRequired | ApiError::UnauthorizedApiKey => {
            StatusCode::UNAUTHORIZED
        }
        ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
        ApiError::RoomNotFound | ApiError::NotMember | ApiError::NotFound => StatusCode::NOT_FOUND,
        ApiError::RoomExists | ApiError::UsernameTaken => StatusCode::CONFLICT,
        ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = status_of(&self);
        let retry_after = self.retry_after_secs();
        let mut response = (status, Json(ErrorBody { error: self.body() })).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
