//! Extractors whose rejections come back in API.md's error format: JSON bodies, path
//! segments, query strings and the member token (`Authorization: Bearer …`, or `?token=` where
//! a browser cannot set headers).

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use serde::de::DeserializeOwned;

use crate::domain::{MemberToken, TokenHash};
use crate::error::ApiError;
use crate::limits::ClientIp;

/// A JSON body. Wrong content type → 415, too large → 413, anything else unreadable → 400.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType,
        StatusCode::PAYLOAD_TOO_LARGE => body_too_large(),
        _ => match rejection {
            JsonRejection::JsonDataError(err) => {
                ApiError::invalid(format!("invalid request body: {}", err.body_text()))
            }
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::invalid("request body is not valid JSON")
            }
            _ => ApiError::invalid("request body could not be read"),
        },
    }
}

/// A request body over [`super::MAX_BODY_BYTES`].
pub fn body_too_large() -> ApiError {
    ApiError::PayloadTooLarge("request bodies are limited to 64 KiB".to_owned())
}

/// Path parameters, with a 400 in our format when they cannot be decoded.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|_: PathRejection| ApiError::invalid("malformed path"))
    }
}

/// A query string, with a 400 in our format when it does not fit.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|err: QueryRejection| {
                ApiError::invalid(format!("invalid query string: {}", err.body_text()))
            })
    }
}

/// A page's `?limit=`: 50 when absent; a number, whose range the operation checks (history
/// and the server API's room list both take 1-200).
pub fn page_limit(raw: Option<&str>) -> Result<usize, ApiError> {
    match raw {
        None => Ok(50),
        Some(raw) => raw
            .parse::<usize>()
            .map_err(|_| ApiError::invalid("limit must be between 1 and 200")),
    }
}

/// The hash of the member token a request presents as `Authorization: Bearer <token>`. Its
/// absence (or another scheme) is 401 before anything else is looked at.
pub struct BearerToken(pub TokenHash);

impl<S: Send + Sync> FromRequestParts<S> for BearerToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        bearer_from(&parts.headers)
            .map(Self)
            .ok_or(ApiError::Unauthorized)
    }
}

/// The hash of the token in the `Authorization` header, if it holds a Bearer token.
pub fn bearer_from(headers: &HeaderMap) -> Option<TokenHash> {
    bearer_text(headers).and_then(presented_token)
}

/// The credential of an `Authorization: Bearer` header as sent (a member token, or the JWT
/// of a signed-in join).
pub fn bearer_text(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// The hash of a token as presented in the `Authorization` header or `?token=`: white space
/// around it is dropped (one rule for both, so a token that works in one works in the other),
/// and nothing left is no token.
pub fn presented_token(raw: &str) -> Option<TokenHash> {
    let token = raw.trim();
    (!token.is_empty()).then(|| MemberToken::presented(token).hash())
}

/// The client's IP address, as the `identify_client` middleware decided it.
impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The middleware runs on every route; without it (a router built elsewhere) the
        // request is treated as local.
        Ok(parts
            .extensions
            .get::<ClientIp>()
            .copied()
            .unwrap_or(ClientIp(std::net::IpAddr::from([127, 0, 0, 1]))))
    }
}
