//! The process's TLS crypto provider. reqwest 0.13 (the OTLP exporter's blocking client and the
//! JWKS client) is built with rustls and no provider of its own, and a reqwest client then
//! fails to build unless one is installed for the process: without this, an OTLP exporter
//! over HTTP could not be made and no span left the process. ring is the one rustls backend in
//! the tree (redis's `rediss://` uses it too).

/// Installs ring as the process's default rustls provider; when one is installed already (an
/// earlier call, or an embedding program's), that one stays.
pub fn install_crypto_provider() {
    let _one_may_be_installed_already = rustls::crypto::ring::default_provider().install_default();
}
