//! The browser chat client: `GET /` (the page) and `GET /client/{file}` (its stylesheet and
//! JavaScript modules), embedded in the binary at build time, so the server is the whole
//! deployment and there is no build step or CDN.
//!
//! The files keep their names across versions, so they are served with `Cache-Control:
//! no-cache` and a strong `ETag` (a hash of the content): a browser revalidates on every load
//! and gets `304 Not Modified` unless the binary changed, so a deploy is picked up at once at
//! the price of one small request per file. The page's Content-Security-Policy allows only
//! same-origin scripts, styles and connections, as a second line of defence behind the
//! client's rule of rendering every message and name as text.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// An embedded file of `src/http/client/`.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("client/", $name)),
        }
    };
}

/// The page first, then what `/client/{file}` serves; nothing else is reachable.
const ASSETS: [Asset; 5] = [
    asset!("index.html", HTML),
    asset!("style.css", CSS),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("connection.js", JS),
];

/// Same-origin everything; `connect-src 'self'` covers `ws://` / `wss://` on this host too.
/// `img-src data:` is for the empty inline favicon, which spares every load a 404.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

/// The ETags of `ASSETS`, in the same order, computed once from the embedded bytes.
static ETAGS: LazyLock<Vec<HeaderValue>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|asset| {
            let digest = Sha256::digest(asset.body);
            HeaderValue::try_from(format!("\"{}\"", hex::encode(&digest[..12])))
                .expect("hex digits are a valid header value")
        })
        .collect()
});

/// `GET /`: the chat page.
pub async fn index(headers: HeaderMap) -> Response {
    let mut response = serve(0, &headers);
    let page_headers = response.headers_mut();
    page_headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(PAGE_POLICY),
    );
    // EventSource URLs carry the member token: never leak a URL to another site.
    page_headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// `GET /client/{file}`: the page's stylesheet and modules.
pub async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // Index 0 is the page, which is served at `/` only (with its policy headers).
    match ASSETS.iter().skip(1).position(|asset| asset.name == name) {
        Some(at) => serve(at + 1, &headers),
        None => super::with_status(ApiError::invalid("no such file"), StatusCode::NOT_FOUND),
    }
}

fn serve(index: usize, request: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = request
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/").as_bytes() == etag.as_bytes()
        });
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ];
    if fresh {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(asset.content_type),
        )],
        asset.body,
    )
        .into_response()
}
