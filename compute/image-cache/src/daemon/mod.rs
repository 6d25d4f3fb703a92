//! The node's image cache daemon.
//!
//! Asked for an image id, it fetches the manifest from the origin (Walrus, with
//! the node's credentials) and checks it against the id, then fetches pieces:
//! from peers the tracker named (rarest first, at most [`DaemonConfig::per_peer`]
//! requests per peer), and from the origin only the pieces the tracker made this
//! node responsible for (its share as an uplink seeder) that no peer holds or is
//! already fetching. Every piece is checked against the manifest before it is
//! written or served; a bad piece is refetched elsewhere and its sender is avoided
//! for the rest of the fetch. A peer that fails or times out is avoided for
//! [`DaemonConfig::blacklist`]. Without a tracker (none configured, or it does not
//! answer) the daemon fetches from the origin directly, at most
//! [`DaemonConfig::direct_concurrency`] pieces at a time.
//!
//! It serves its pieces to peers over HTTP (`GET /v1/images/<id>/pieces/<n>`,
//! cluster token) and takes commands from `euca cache` on a Unix socket.
//!
//! Files: [`fetch`] (the fetch scheduler and the tracker client), [`peer`] (the
//! piece server), [`control`] (the control API on the Unix socket).
mod control;
mod fetch;
mod listen;
mod peer;
mod state;

pub use control::ControlEndpoint;
pub use peer::PeerEndpoint;
pub use state::{Daemon, DaemonConfig, Progress, Stats};
