//! The cloud controller's errors, each with the EC2 error code and HTTP status the
//! EC2 Query API answers with (rendered once, in [`crate::api`], as EC2 XML with a
//! `RequestID`). Clients retry only 500/503 and throttling codes, so everything
//! that is the caller's mistake is a 4xx.
use std::borrow::Cow;

#[derive(Debug, thiserror::Error)]
pub enum Ec2Error {
    /// 403 `AuthFailure`: the request is not signed by a known, enabled key.
    #[error("{0}")]
    AuthFailure(String),
    /// Another authentication code (`RequestExpired`, `MissingAuthenticationToken`…).
    #[error("{message}")]
    Auth {
        code: &'static str,
        status: u16,
        message: String,
    },
    #[error("The action {0} is not valid for this web service.")]
    InvalidAction(String),
    #[error("The request must contain the parameter {0}")]
    MissingParameter(String),
    #[error("{0}")]
    InvalidParameterValue(String),
    /// `InvalidParameterCombination`, `InvalidParameter`, … : other 400s about parameters.
    #[error("{message}")]
    Parameter { code: &'static str, message: String },
    /// `Invalid<Thing>.NotFound`: no such resource, or one the caller may not see.
    #[error("The {what} '{id}' does not exist")]
    NotFound {
        code: &'static str,
        what: &'static str,
        id: String,
    },
    /// `<Thing>.Duplicate`, `InvalidPermission.Duplicate`, …
    #[error("{message}")]
    Duplicate { code: &'static str, message: String },
    /// The resource is not in a state that allows this (`IncorrectState`,
    /// `VolumeInUse`, `DependencyViolation`, `InvalidGroup.Reserved`…).
    #[error("{message}")]
    State { code: &'static str, message: String },
    /// A service the cloud controller needs (the storage controller, Walrus) did not
    /// answer: retryable.
    #[error("{0}")]
    Unavailable(String),
    /// The cloud controller's own state could not be read or written.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Ec2Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Ec2Error::InvalidParameterValue(msg.into())
    }
    pub fn not_found(code: &'static str, what: &'static str, id: impl Into<String>) -> Self {
        Ec2Error::NotFound {
            code,
            what,
            id: id.into(),
        }
    }
    /// `InvalidVolume.NotFound` (used by volumes, snapshots and attachments).
    pub fn volume_not_found(id: &str) -> Self {
        Ec2Error::not_found("InvalidVolume.NotFound", "volume", id)
    }
    pub fn state(code: &'static str, msg: impl Into<String>) -> Self {
        Ec2Error::State {
            code,
            message: msg.into(),
        }
    }
    pub fn duplicate(code: &'static str, msg: impl Into<String>) -> Self {
        Ec2Error::Duplicate {
            code,
            message: msg.into(),
        }
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Ec2Error::Internal(e.to_string())
    }

    /// The EC2 error code.
    pub fn code(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Ec2Error::AuthFailure(_) => "AuthFailure",
            Ec2Error::Auth { code, .. } => code,
            Ec2Error::InvalidAction(_) => "InvalidAction",
            Ec2Error::MissingParameter(_) => "MissingParameter",
            Ec2Error::InvalidParameterValue(_) => "InvalidParameterValue",
            Ec2Error::Parameter { code, .. } => code,
            Ec2Error::NotFound { code, .. } => code,
            Ec2Error::Duplicate { code, .. } => code,
            Ec2Error::State { code, .. } => code,
            Ec2Error::Unavailable(_) => "ServiceUnavailable",
            Ec2Error::Internal(_) => "InternalError",
        })
    }

    /// The HTTP status.
    pub fn status(&self) -> u16 {
        match self {
            Ec2Error::AuthFailure(_) => 403,
            Ec2Error::Auth { status, .. } => *status,
            Ec2Error::Unavailable(_) => 503,
            Ec2Error::Internal(_) => 500,
            _ => 400,
        }
    }
}

impl From<redb::Error> for Ec2Error {
    fn from(e: redb::Error) -> Self {
        Ec2Error::internal(e)
    }
}

macro_rules! redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for Ec2Error {
            fn from(e: $t) -> Self {
                Ec2Error::internal(e)
            }
        }
    )*};
}
redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<serde_json::Error> for Ec2Error {
    fn from(e: serde_json::Error) -> Self {
        Ec2Error::internal(format!("record encoding: {e}"))
    }
}
