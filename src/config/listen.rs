//! Where the server listens, where `/metrics` goes, and how long it takes to stop.

use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU16;

section! {
    /// The listening sockets and the stop.
    pub struct Listen {
        /// Cloud Run sets it.
        pub port: u16 = 8080,
        pub host: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        /// When set, `/metrics` is served on this port only (and answers 404 on `PORT`); it
        /// must differ from `PORT`, which `Config` checks.
        pub metrics_port: Option<NonZeroU16> = None,
        /// On SIGTERM: stop accepting, close streams, and exit within this many seconds.
        pub shutdown_grace_secs: u64 = 8,
    }
}
