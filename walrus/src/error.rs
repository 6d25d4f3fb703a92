//! S3 errors, rendered as S3's error XML at the edge.
use crate::blob::BlobError;
use crate::meta::MetaError;
use euca_aws::chunked::ChunkedError;
use euca_aws::xml::XmlWriter;
use euca_aws::AuthError;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{code}: {message}")]
pub struct S3Error {
    pub code: &'static str,
    pub status: u16,
    pub message: String,
    /// The bucket or key the error is about, echoed in `<Resource>`.
    pub resource: Option<String>,
    /// Extra elements, e.g. `<ArgumentName>` or `<BucketName>`.
    pub extra: Vec<(&'static str, String)>,
    /// Response headers the error carries (e.g. `x-amz-delete-marker`).
    pub headers: Vec<(&'static str, String)>,
}

impl S3Error {
    pub fn new(code: &'static str, status: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            status,
            message: message.into(),
            resource: None,
            extra: Vec::new(),
            headers: Vec::new(),
        }
    }
    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
    pub fn with_resource(mut self, r: impl Into<String>) -> Self {
        self.resource = Some(r.into());
        self
    }
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.extra.push((name, value.into()));
        self
    }

    /// 412 `PreconditionFailed`, naming the condition that did not hold.
    pub fn precondition_failed(condition: &str) -> Self {
        Self::new(
            "PreconditionFailed",
            412,
            "At least one of the pre-conditions you specified did not hold",
        )
        .with("Condition", condition)
    }
    pub fn access_denied() -> Self {
        Self::new("AccessDenied", 403, "Access Denied")
    }
    pub fn no_such_bucket(b: &str) -> Self {
        Self::new("NoSuchBucket", 404, "The specified bucket does not exist").with("BucketName", b)
    }
    pub fn no_such_key(k: &str) -> Self {
        Self::new("NoSuchKey", 404, "The specified key does not exist.").with("Key", k)
    }
    pub fn no_such_upload(u: &str) -> Self {
        Self::new("NoSuchUpload", 404, "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.")
            .with("UploadId", u)
    }
    pub fn invalid_argument(msg: impl Into<String>) -> Self {
        Self::new("InvalidArgument", 400, msg)
    }
    pub fn invalid_request(msg: impl Into<String>) -> Self {
        Self::new("InvalidRequest", 400, msg)
    }
    pub fn method_not_allowed() -> Self {
        Self::new(
            "MethodNotAllowed",
            405,
            "The specified method is not allowed against this resource.",
        )
    }
    pub fn malformed_xml() -> Self {
        Self::new("MalformedXML", 400, "The XML you provided was not well-formed or did not validate against our published schema.")
    }
    pub fn internal(msg: impl std::fmt::Display) -> Self {
        tracing::error!(error = %msg, "internal error");
        Self::new(
            "InternalError",
            500,
            "We encountered an internal error. Please try again.",
        )
    }
    pub fn not_implemented(what: &str) -> Self {
        Self::new("NotImplemented", 501, format!("{what} is not implemented"))
    }
    pub fn bad_digest() -> Self {
        Self::new(
            "BadDigest",
            400,
            "The Content-MD5 or checksum you specified did not match what we received.",
        )
    }
    pub fn incomplete_body() -> Self {
        Self::new(
            "IncompleteBody",
            400,
            "You did not provide the number of bytes specified by the Content-Length HTTP header.",
        )
    }

    pub fn to_xml(&self, request_id: &str) -> String {
        let mut w = XmlWriter::new();
        w.open("Error")
            .elem("Code", self.code)
            .elem("Message", &self.message);
        if let Some(r) = &self.resource {
            w.elem("Resource", r);
        }
        for (k, v) in &self.extra {
            w.elem(k, v);
        }
        w.elem("RequestId", request_id);
        w.finish()
    }
}

impl From<AuthError> for S3Error {
    fn from(e: AuthError) -> Self {
        let (code, status) = e.code();
        S3Error::new(code, status, e.to_string())
    }
}

impl From<MetaError> for S3Error {
    fn from(e: MetaError) -> Self {
        match e {
            MetaError::NoSuchBucket => {
                S3Error::new("NoSuchBucket", 404, "The specified bucket does not exist")
            }
            MetaError::NoSuchKey => {
                S3Error::new("NoSuchKey", 404, "The specified key does not exist.")
            }
            MetaError::NoSuchUpload => {
                S3Error::new("NoSuchUpload", 404, "The specified upload does not exist.")
            }
            MetaError::BucketNotEmpty => S3Error::new(
                "BucketNotEmpty",
                409,
                "The bucket you tried to delete is not empty",
            ),
            MetaError::BucketExists { .. } => S3Error::new(
                "BucketAlreadyExists",
                409,
                "The requested bucket name is not available.",
            ),
            MetaError::PartChanged => S3Error::new(
                "InvalidPart",
                400,
                "A part was replaced while the upload was being completed; retry.",
            ),
            MetaError::ObjectLocked => S3Error::new(
                "AccessDenied",
                403,
                "Access Denied because object protected by object lock.",
            ),
            MetaError::RetentionLocked => S3Error::new(
                "AccessDenied",
                403,
                "Access Denied because the retention may not be shortened or removed.",
            ),
            MetaError::PreconditionFailed => S3Error::new(
                "PreconditionFailed",
                412,
                "At least one of the pre-conditions you specified did not hold",
            ),
            MetaError::Changed => S3Error::new(
                "OperationAborted",
                409,
                "A conflicting operation replaced the object while this request was made; try again.",
            ),
            MetaError::Busy(m) => {
                tracing::warn!("metadata store busy: {m}");
                S3Error::new(
                    "ServiceUnavailable",
                    503,
                    "The metadata store is busy; please try again.",
                )
            }
            MetaError::Backend(m) | MetaError::CommitUnknown(m) => S3Error::internal(m),
        }
    }
}

impl From<BlobError> for S3Error {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::NoSpace => S3Error::new(
                "ServiceUnavailable",
                503,
                "The server is out of storage space; please try again later.",
            ),
            other => S3Error::internal(other),
        }
    }
}

impl From<ChunkedError> for S3Error {
    fn from(e: ChunkedError) -> Self {
        match e {
            ChunkedError::BadSignature => S3Error::new(
                "SignatureDoesNotMatch",
                403,
                "The chunk signature does not match.",
            ),
            ChunkedError::Truncated => S3Error::incomplete_body(),
            ChunkedError::Malformed(m) => S3Error::new(
                "InvalidRequest",
                400,
                format!("Malformed aws-chunked body: {m}"),
            ),
        }
    }
}

pub type S3Result<T> = Result<T, S3Error>;
