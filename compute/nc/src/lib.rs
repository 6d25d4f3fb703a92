//! The node controller (`euca nc`): runs instances on this machine and answers the
//! cluster controller's polls and calls (the NC API, `euca_compute_proto::nc`).
//!
//! - [`node::Node`]: what a node does, behind the API; two kinds:
//!   - [`hypervisor::QemuNode`]: real instances, one `qemu-system-x86_64` each
//!     (accelerator from config), root disk a qcow2 overlay on the image cache's
//!     file (pinned while the instance lives), an ephemeral disk, serial console to
//!     a file, one QMP socket; volumes hot-plugged over NBD; adopts the QEMUs of
//!     an earlier NC process after a restart; the NIC's tap plugged into the
//!     instance's network segment (`[nc.net]`), and in SYSTEM mode the guest's
//!     address learned from its DHCP/ARP traffic.
//!   - [`simulate::SimNode`]: answers the same protocol without QEMU (`euca nc
//!     --simulate N`: N nodes on one listener, for scale and counting tests).
//! - [`api`]: the NC API over `euca-service`'s serve loop, cluster token checked
//!   before any body is read.
//! - [`register`]: the node joining its CC (at start, every 30 s, with backoff).
//! - [`config`]: the `nc` table of the config file.
pub mod api;
pub mod config;
pub mod error;
pub mod hypervisor;
pub mod node;
pub mod register;
pub mod simulate;

pub use error::NcError;
pub use node::Node;
