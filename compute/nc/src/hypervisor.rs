//! Real instances: one `qemu-system-x86_64` per instance. (Being written; the
//! signatures below are the contract `euca nc` and `euca up` use.)
use std::sync::Arc;

use async_trait::async_trait;
use euca_compute_proto::{
    AttachSpec, ConsoleOutput, InstanceReport, InstanceSpec, NodeReport, VolumeReport,
};

use crate::config::NcConfig;
use crate::node::{ImageSource, Node};
use crate::NcError;

pub struct QemuNode {
    #[allow(dead_code)]
    cfg: NcConfig,
    #[allow(dead_code)]
    images: Arc<dyn ImageSource>,
}

impl QemuNode {
    /// Opens the node on `cfg.dir`: checks QEMU and the accelerator, and adopts the
    /// instances an earlier NC process left running (same QEMU process).
    pub async fn open(
        cfg: NcConfig,
        images: Arc<dyn ImageSource>,
    ) -> Result<Arc<QemuNode>, NcError> {
        Ok(Arc::new(QemuNode { cfg, images }))
    }

    /// Stops every instance's QEMU gracefully (powerdown, then kill after
    /// `shutdown_timeout_secs`), keeping their records: `euca up`'s shutdown.
    pub async fn shutdown_all(&self) {}
}

#[async_trait]
impl Node for QemuNode {
    fn report(&self) -> NodeReport {
        unimplemented!("being written")
    }
    async fn run(&self, _spec: InstanceSpec) -> Result<InstanceReport, NcError> {
        Err(NcError::Internal("not yet".into()))
    }
    async fn terminate(&self, _id: &str) -> Result<InstanceReport, NcError> {
        Err(NcError::Internal("not yet".into()))
    }
    async fn reboot(&self, _id: &str) -> Result<InstanceReport, NcError> {
        Err(NcError::Internal("not yet".into()))
    }
    async fn console(&self, _id: &str) -> Result<ConsoleOutput, NcError> {
        Err(NcError::Internal("not yet".into()))
    }
    async fn attach(&self, _id: &str, _spec: AttachSpec) -> Result<VolumeReport, NcError> {
        Err(NcError::Internal("not yet".into()))
    }
    async fn detach(
        &self,
        _id: &str,
        _volume: &str,
        _force: bool,
    ) -> Result<VolumeReport, NcError> {
        Err(NcError::Internal("not yet".into()))
    }
}
