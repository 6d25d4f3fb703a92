//! The CC's errors, mapped once to the internal APIs' JSON error shape.
use euca_compute_proto::codes;
use euca_compute_proto::ProtoError;

#[derive(Debug, thiserror::Error)]
pub enum CcError {
    #[error("bad configuration: {0}")]
    Config(String),
    /// The journal (redb in `state_dir`) failed: nothing was placed.
    #[error("journal: {0}")]
    Journal(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("fewer than {min} instances fit (only {fit})")]
    InsufficientCapacity { min: u32, fit: u32 },
    #[error("no such instance: {0}")]
    InstanceNotFound(String),
    #[error("no such node: {0}")]
    NodeNotFound(String),
    #[error("node {0} is DOWN")]
    NodeUnavailable(String),
    #[error("this cluster controller serves zone {serves}, not {asked}")]
    ZoneMismatch { serves: String, asked: String },
    /// The router namespace could not be made to match the network state.
    #[error("network: {0}")]
    Network(String),
    /// The node refused or failed the forwarded call (its own status and code).
    #[error("node: {0}")]
    Node(ProtoError),
}

impl CcError {
    pub fn status(&self) -> u16 {
        match self {
            CcError::Config(_) | CcError::Journal(_) | CcError::Network(_) => 500,
            CcError::BadRequest(_) => 400,
            CcError::InsufficientCapacity { .. } | CcError::ZoneMismatch { .. } => 409,
            CcError::InstanceNotFound(_) | CcError::NodeNotFound(_) => 404,
            CcError::NodeUnavailable(_) => 503,
            CcError::Node(e) => match e {
                ProtoError::Refused { status, .. } => *status,
                e if e.is_unavailable() => 503,
                _ => 502,
            },
        }
    }

    pub fn code(&self) -> &str {
        match self {
            CcError::Config(_) | CcError::Journal(_) | CcError::Network(_) => "InternalError",
            CcError::BadRequest(_) => "BadRequest",
            CcError::InsufficientCapacity { .. } => codes::INSUFFICIENT_CAPACITY,
            CcError::InstanceNotFound(_) => codes::INSTANCE_NOT_FOUND,
            CcError::NodeNotFound(_) => "NotFound",
            CcError::NodeUnavailable(_) => codes::NODE_UNAVAILABLE,
            CcError::ZoneMismatch { .. } => codes::ZONE_MISMATCH,
            CcError::Node(e) => match e {
                ProtoError::Refused { code, .. } => code,
                e if e.is_unavailable() => codes::NODE_UNAVAILABLE,
                _ => "InternalError",
            },
        }
    }

    /// The message without the variant's prefix for a node's own refusal.
    pub fn message(&self) -> String {
        match self {
            CcError::Node(ProtoError::Refused { message, .. }) => message.clone(),
            e => e.to_string(),
        }
    }
}

impl From<redb::Error> for CcError {
    fn from(e: redb::Error) -> Self {
        CcError::Journal(e.to_string())
    }
}
