//! The node controller's errors, mapped once to the NC API's statuses and codes.
use euca_compute_proto::codes;

#[derive(Debug, thiserror::Error)]
pub enum NcError {
    #[error("instance {0} is not on this node")]
    InstanceNotFound(String),
    #[error("instance {0} already runs here with a different spec")]
    InstanceExists(String),
    #[error("{0}")]
    IncorrectState(String),
    #[error("volume {volume} is not attached to {instance}")]
    VolumeNotAttached { instance: String, volume: String },
    #[error("the guest did not release {0} in time; it stays attached (detach with force)")]
    DetachTimeout(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
}

impl NcError {
    /// HTTP status and API error code.
    pub fn status_code(&self) -> (u16, &'static str) {
        match self {
            NcError::InstanceNotFound(_) => (404, codes::INSTANCE_NOT_FOUND),
            NcError::InstanceExists(_) => (409, codes::INSTANCE_EXISTS),
            NcError::IncorrectState(_) => (409, codes::INCORRECT_STATE),
            NcError::VolumeNotAttached { .. } => (404, codes::VOLUME_NOT_ATTACHED),
            NcError::DetachTimeout(_) => (409, codes::DETACH_TIMEOUT),
            NcError::BadRequest(_) => (400, "BadRequest"),
            NcError::Config(_) | NcError::Io(_) | NcError::Internal(_) => (500, "InternalError"),
        }
    }
}
