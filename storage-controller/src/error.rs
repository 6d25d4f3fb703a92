//! The SC's error type, with the EC2-style code and HTTP status each maps to at the
//! API edge (the cloud controller passes the codes on in EC2 error XML).
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum ScError {
    #[error("the volume '{0}' does not exist")]
    NoSuchVolume(String),
    #[error("the snapshot '{0}' does not exist")]
    NoSuchSnapshot(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    IncorrectState(String),
    #[error("volume {0} is already attached")]
    VolumeInUse(String),
    #[error("state store: {0}")]
    State(String),
    #[error("snapshot store: {0}")]
    Chunks(String),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
}

impl ScError {
    /// The EC2 error code.
    pub fn code(&self) -> &'static str {
        match self {
            ScError::NoSuchVolume(_) => "InvalidVolume.NotFound",
            ScError::NoSuchSnapshot(_) => "InvalidSnapshot.NotFound",
            ScError::Invalid(_) => "InvalidParameterValue",
            ScError::IncorrectState(_) => "IncorrectState",
            ScError::VolumeInUse(_) => "VolumeInUse",
            ScError::State(_) | ScError::Chunks(_) | ScError::Io(_) => "InternalError",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ScError::NoSuchVolume(_) | ScError::NoSuchSnapshot(_) => 404,
            ScError::Invalid(_) => 400,
            ScError::IncorrectState(_) | ScError::VolumeInUse(_) => 409,
            ScError::State(_) | ScError::Chunks(_) | ScError::Io(_) => 500,
        }
    }
}
