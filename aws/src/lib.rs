//! AWS protocol pieces shared by every API of the cloud: request authentication
//! (SigV4 header / presigned / streaming, SigV2 header / presigned), the `aws-chunked`
//! body decoder, checksums, time formats and the XML writer used for responses.
//!
//! Services call [`auth::authenticate`] once, before routing, and hand the handlers a
//! verified [`auth::Principal`] plus a [`auth::PayloadCheck`] that the body stream
//! enforces while it is read.
//!
//! The EC2 Query API, whose small form body is itself what is signed, calls
//! [`auth::authenticate_form`] instead (with [`credential::AuthConfig::ec2`]): the key
//! is looked up before the body is read, then the signature is checked over the body,
//! and [`encoding::parse_form`] decodes its parameters; [`AuthError::ec2_code`] names
//! its errors the EC2 way.

pub mod auth;
pub mod checksum;
pub mod chunked;
pub mod credential;
pub mod encoding;
pub mod hash;
pub mod sign;
pub mod sigv2;
pub mod sigv4;
pub mod timefmt;
pub mod xml;

/// Re-exported so implementors of [`CredentialLookup`] need no direct dependency.
pub use async_trait::async_trait;
pub use auth::{authenticate, authenticate_form, FormAuthError, PayloadCheck};
pub use credential::{
    constant_time_eq, AuthError, Credential, CredentialLookup, LookupError, Principal,
};
