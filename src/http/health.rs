//! Liveness (`/healthz`: the process serves), readiness (`/readyz`: the store answers) and
//! `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;

/// 200 while the process serves requests.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// 200 when the store answers, else 503: Cloud Run's startup probe and load balancers use it.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, body = String), (status = 503, body = String))
)]
pub async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.rooms.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unavailable"),
    }
}

/// Prometheus text exposition of the server's metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String)))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
