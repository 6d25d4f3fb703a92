//! What a call to a CC or an NC can fail with, as the caller sees it.
use std::time::Duration;

/// A failed call. `code` values are the internal APIs' error codes (see
/// [`crate::types::codes`]).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The peer answered with an error of its own (4xx/5xx, `{"error":{code,message}}`).
    #[error("{code}: {message}")]
    Refused {
        status: u16,
        code: String,
        message: String,
    },
    /// No answer in time: the peer may still carry the call out (repeat it; every
    /// call is idempotent).
    #[error("no answer within {0:?}")]
    TimedOut(Duration),
    /// Could not reach the peer, or its answer was cut short.
    #[error("{0}")]
    Transport(String),
    /// The answer was not what the protocol says.
    #[error("bad answer: {0}")]
    BadAnswer(String),
}

impl ProtoError {
    /// The error code when the peer refused (`None` for transport failures).
    pub fn code(&self) -> Option<&str> {
        match self {
            ProtoError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }

    /// Whether the peer could not be asked or did not answer (the call may be
    /// repeated; its outcome is unknown).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, ProtoError::TimedOut(_) | ProtoError::Transport(_))
            || matches!(self, ProtoError::Refused { status, .. } if (502..=504).contains(status))
    }
}
