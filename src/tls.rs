//! The process's TLS crypto provider. reqwest 0.13 (the OTLP exporter's blocking client and the
//! JWKS client) is built with rustls and no provider of its own, and a reqwest client then
//! fails to build unless one is installed for the process: without this, an OTLP exporter
//! over HTTP could not be made and no span left the process. ring is the one rustls backend in
//! the tree (redis's `rediss://` uses it too).

/// Installs ring as the process's default rustls provider, once; a later call, or a provider
/// an embedding program installed first, leaves the installed one in place.
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _an_embedder_may_have_installed_one =
            rustls::crypto::ring::default_provider().install_default();
    });
}
