//! A device connector's life in the live server, against the recording Hexnode on loopback:
//!
//! - **stale**: a connector failing for longer than its `stale_after` makes its devices
//!   stop counting as compliant — the user's next request shows the blocked page saying in
//!   plain words that the device's management status could not be confirmed recently — and
//!   `/readyz?details` says so; one successful sync lets the user back in;
//! - **metrics**: a successful and a failing sync move exactly their series, and promtool
//!   accepts the scrape;
//! - **reload**: a real SIGHUP adds, removes and replaces connectors without a restart; a
//!   reload whose connector cannot be built is refused whole and the old ones keep running;
//! - **hostile answers**: an answer over 32 MB, a page over 1000 devices, one device listed
//!   twice with different details, a device given to an account in another mail domain,
//!   dates in the future or unreadable, a detail describing another device;
//! - **another node**: a successful sync another node recorded in the shared store keeps
//!   this node's view of the connector fresh even while this node cannot reach the UEM.
//!
//! One file a part of that life: `stale`, `sync_metrics`, `reload`, `hostile`; what they
//! share is in `common`.

#[path = "../support/mod.rs"]
mod support;

mod common;
mod hostile;
mod reload;
mod stale;
mod sync_metrics;
