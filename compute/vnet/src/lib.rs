//! Linux virtual networking for instances (issue 14), shared by the cluster
//! controller (its router namespace) and the node controller (instance taps):
//!
//! - [`link`]: named network namespaces and links (bridges, veth pairs, VXLAN, taps,
//!   addresses, routes) through iproute2's `ip`, in this namespace or a named one.
//! - [`nft`]: the router's nftables table (anti-spoofing, security groups, NAT).
//! - [`conntrack`]: forgetting the router's tracked flows of moved addresses.
//! - [`dhcp`]: the router's supervised dnsmasq (static leases only).
//! - [`port`]: a node's guard on an instance's tap (its own MAC and address only).
//! - [`router`]: the cluster's router namespace, rendering a `NetworkState`.
//!
//! Everything here needs `CAP_NET_ADMIN` (root); callers check [`can_admin_network`]
//! first and run with networking off, saying so, when it is false.
pub mod conntrack;
pub mod dhcp;
pub mod link;
pub mod nft;
pub mod port;
pub mod router;

pub use link::Ip;

/// Errors of the networking primitives.
#[derive(Debug, thiserror::Error)]
pub enum VnetError {
    /// A command (`ip`, `nft`, `dnsmasq`, `conntrack`) could not be started.
    #[error("cannot run {cmd}: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A command failed; `stderr` is its first line.
    #[error("`{cmd}` failed: {stderr}")]
    Failed { cmd: String, stderr: String },
    /// A name or value that cannot be used (too long, bad characters).
    #[error("invalid {what}: {value}")]
    Invalid { what: &'static str, value: String },
}

/// Whether this process may administer networks (effective uid 0; user namespaces
/// are not used).
pub fn can_admin_network() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
