//! What a node does, whatever runs its instances (QEMU or the simulation). The API
//! ([`crate::api`]) calls these; every call answers at once and long work (boot,
//! disk preparation, device removal) goes on in the background, visible in
//! [`Node::report`].
use async_trait::async_trait;
use euca_compute_proto::{
    AttachSpec, ConsoleOutput, InstanceReport, InstanceSpec, NodeReport, VolumeReport,
};

use crate::NcError;

#[async_trait]
pub trait Node: Send + Sync + 'static {
    /// The poll's answer: capacity and every instance (terminated ones for ≥ 10 min).
    fn report(&self) -> NodeReport;

    /// Starts `spec` (state `pending`). The same id with the same spec again answers
    /// the instance as it is; with another spec, `InstanceExists`.
    async fn run(&self, spec: InstanceSpec) -> Result<InstanceReport, NcError>;

    /// Stops the guest (QEMU killed if it does not quit), removes its disks,
    /// unpins its images. Terminating a terminated instance answers it as it is.
    async fn terminate(&self, id: &str) -> Result<InstanceReport, NcError>;

    /// Resets the guest (QMP `system_reset`).
    async fn reboot(&self, id: &str) -> Result<InstanceReport, NcError>;

    /// The last [`euca_compute_proto::CONSOLE_TAIL`] bytes of the serial console.
    async fn console(&self, id: &str) -> Result<ConsoleOutput, NcError>;

    /// Hot-plugs the volume (state `attaching`, then `attached`). Idempotent.
    async fn attach(&self, id: &str, spec: AttachSpec) -> Result<VolumeReport, NcError>;

    /// Unplugs the volume (`detaching`, then `detached`); without `force` a guest
    /// that does not release it in time leaves it attached (`failed` with the
    /// reason); with `force` the block node is torn down anyway.
    async fn detach(&self, id: &str, volume: &str, force: bool) -> Result<VolumeReport, NcError>;
}

/// Where a node gets image files: the node's image cache (`euca nc-cache`'s daemon,
/// in the same process), or a directory in tests.
#[async_trait]
pub trait ImageSource: Send + Sync + 'static {
    /// Fetches `installed_id` if needed (waiting until complete) and pins it for
    /// `holder` (an instance id) so it is never evicted while pinned; returns the
    /// path of the image's bytes (read-only: overlays are made on it).
    async fn acquire(
        &self,
        installed_id: &str,
        holder: &str,
    ) -> Result<std::path::PathBuf, NcError>;

    /// Drops `holder`'s pin (idempotent).
    async fn release(&self, installed_id: &str, holder: &str) -> Result<(), NcError>;
}
