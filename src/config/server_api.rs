//! The server API (`/api/`): an app's backend acting on rooms with a shared key. Unset, the
//! API does not exist (every `/api/` path is 404, as before it was written).

use super::values::ServerApiKey;

section! {
    /// The server API's key.
    pub struct ServerApi {
        /// Enables `/api/` for `Authorization: ApiKey <key>`: 32-256 visible ASCII
        /// characters (e.g. `openssl rand -hex 32`). Unset: every `/api/` path is 404.
        pub server_api_key: Option<ServerApiKey> = None,
    }
}
