//! The iSCSI target's errors (a connection's end, never a panic).
use std::io;

#[derive(Debug, thiserror::Error)]
pub enum IscsiError {
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    #[error("login refused (status {0:#06x})")]
    LoginRefused(u16),
}
