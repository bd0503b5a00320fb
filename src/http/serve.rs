//! The accept loop: hyper's HTTP/1 connections with upgrades (WebSocket), instead of
//! `axum::serve`, because a public server needs three things that does not offer:
//!
//! - a header read timeout, so slowloris clients (who never finish their request) are
//!   dropped instead of holding a connection forever;
//! - a cap on open connections (`MAX_CONNECTIONS`): beyond it a new connection gets one 503
//!   and is closed, so the platform's load balancer sends the client to another instance;
//!   and, when the peer is the client itself (no trusted proxy), a cap per client address
//!   (`MAX_HTTP_CONNECTIONS_PER_IP`, at most half the instance): beyond it, one 429;
//! - a write timeout on every socket (`WRITE_TIMEOUT_SECS`): a write that cannot proceed for
//!   that long fails and ends the connection, whatever is writing (a response, an SSE body,
//!   a WebSocket after its upgrade, which keeps this socket), so a client that stops reading
//!   frees its task, its slots and its presence instead of pinning them;
//! - TCP_NODELAY on every connection: chat frames are small and latency matters.
//!
//! Shutdown stops accepting at once and lets connections in flight finish; the caller bounds
//! how long that may take.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::write_timeout::WriteTimeout;
use crate::error::ApiError;
use crate::limits::Limits;

pub struct ServeSettings {
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub write_timeout: Duration,
}

/// Serves `router` on `listener` until `stopping` is cancelled, then waits for the
/// connections in flight (the caller bounds the wait).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Arc<Limits>,
    settings: ServeSettings,
    stopping: CancellationToken,
) -> std::io::Result<()> {
    // Every connection task, so shutdown can wait for them.
    let connections = tokio_util::task::TaskTracker::new();
    // HTTP connections not (yet) upgraded; WebSockets are counted by `limits`.
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            () = stopping.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before accept: keep
                    // serving the others, and do not spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Err(err) = stream.set_nodelay(true) {
            tracing::debug!(error = %err, "could not set TCP_NODELAY");
        }
        let full =
            open.load(Ordering::Relaxed) + limits.open_websockets() >= settings.max_connections;
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_read_timeout);
        let io = TokioIo::new(WriteTimeout::new(stream, settings.write_timeout));
        let slot = if full {
            metrics::counter!("chat_connections_refused_total", "reason" => "instance_full")
                .increment(1);
            Err(ApiError::Unavailable)
        } else if limits.trusted_proxy_hops == 0 {
            limits.open_http(peer.ip()).map(Some)
        } else {
            Ok(None)
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(refusal) => {
                let refuse = tower::service_fn(move |_request| {
                    let refusal = refusal.clone();
                    async move {
                        let mut response = refusal.into_response();
                        response.headers_mut().insert(
                            axum::http::header::CONNECTION,
                            axum::http::HeaderValue::from_static("close"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                builder.keep_alive(false);
                let connection = builder.serve_connection(io, TowerToHyperService::new(refuse));
                // Tracked like any connection, so shutdown waits for it too; a refused
                // client's errors are of no interest.
                connections.spawn(async move {
                    let _ = connection.await;
                });
                continue;
            }
        };
        let service = router
            .clone()
            .map_request(move |mut request: axum::extract::Request<_>| {
                request
                    .extensions_mut()
                    .insert(ConnectInfo::<SocketAddr>(peer));
                request
            });
        let connection = builder
            .serve_connection(io, TowerToHyperService::new(service))
            .with_upgrades();
        let open = open.clone();
        let stopping = stopping.clone();
        open.fetch_add(1, Ordering::Relaxed);
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stopping.cancelled() => {
                    // Finish the request in flight, then close (upgraded sockets are the
                    // WebSocket task's, which closes them itself).
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = ended {
                tracing::debug!(error = %err, "connection ended with an error");
            }
            open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}
