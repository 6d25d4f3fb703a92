//! The S3 operations Walrus serves, named as in the S3 API: what a request is,
//! from its head alone (method, bucket, key, sub-resources). The name labels the
//! request metrics and the access log.
use http::{HeaderMap, Method};

macro_rules! endpoints {
    ($($(#[$m:meta])* $v:ident),* $(,)?) => {
        /// One S3 operation (or one of Walrus's own requests).
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum S3Endpoint { $($(#[$m])* $v),* }
        impl S3Endpoint {
            pub fn name(self) -> &'static str {
                match self { $(S3Endpoint::$v => stringify!($v)),* }
            }
        }
    };
}

endpoints! {
    ListBuckets,
    CreateBucket, HeadBucket, DeleteBucket,
    ListObjects, ListObjectsV2, ListObjectVersions,
    GetBucketAcl, PutBucketAcl, GetBucketLocation,
    GetBucketVersioning, PutBucketVersioning,
    GetBucketLogging, PutBucketLogging, GetBucketRequestPayment,
    GetBucketOwnershipControls, PutBucketOwnershipControls, DeleteBucketOwnershipControls,
    GetBucketConfig, PutBucketConfig, DeleteBucketConfig,
    GetBucketCors, PutBucketCors, DeleteBucketCors,
    GetBucketTagging, PutBucketTagging, DeleteBucketTagging,
    GetBucketPolicy, PutBucketPolicy, DeleteBucketPolicy, GetBucketPolicyStatus,
    GetPublicAccessBlock, PutPublicAccessBlock, DeletePublicAccessBlock,
    /// S3 Control: the account's block ([`crate::account_block`]).
    GetAccountPublicAccessBlock, PutAccountPublicAccessBlock, DeleteAccountPublicAccessBlock,
    DeleteObjects, ListMultipartUploads,
    GetObject, HeadObject, PutObject, CopyObject, DeleteObject, PostObject,
    GetObjectAcl, PutObjectAcl, GetObjectAttributes,
    GetObjectTagging, PutObjectTagging, DeleteObjectTagging,
    GetObjectRetention, PutObjectRetention, GetObjectLegalHold, PutObjectLegalHold,
    CreateMultipartUpload, UploadPart, UploadPartCopy, CompleteMultipartUpload,
    AbortMultipartUpload, ListParts,
    /// A CORS preflight (`OPTIONS`).
    Preflight,
    /// No operation: the method does not apply to the resource.
    Invalid,
}

impl euca_service::Endpoint for S3Endpoint {
    fn name(&self) -> &'static str {
        S3Endpoint::name(*self)
    }
}

impl S3Endpoint {
    /// The operation of a request on `bucket`/`key` (whether present) with this
    /// method, query (raw) and headers, as the handlers dispatch it.
    pub fn parse(
        method: &Method,
        has_bucket: bool,
        has_key: bool,
        query: &str,
        headers: &HeaderMap,
    ) -> S3Endpoint {
        use S3Endpoint::*;
        let has = |name: &str| {
            query
                .split('&')
                .any(|kv| kv.split_once('=').map_or(kv, |(k, _)| k) == name)
        };
        let config = || crate::api_bucket::NO_CONFIG.iter().any(|(n, _, _)| has(n));
        if *method == Method::OPTIONS {
            return Preflight;
        }
        if !has_bucket {
            return if *method == Method::GET {
                ListBuckets
            } else {
                Invalid
            };
        }
        if !has_key {
            return match *method {
                Method::GET if has("tagging") => GetBucketTagging,
                Method::PUT if has("tagging") => PutBucketTagging,
                Method::DELETE if has("tagging") => DeleteBucketTagging,
                Method::GET if has("ownershipControls") => GetBucketOwnershipControls,
                Method::PUT if has("ownershipControls") => PutBucketOwnershipControls,
                Method::DELETE if has("ownershipControls") => DeleteBucketOwnershipControls,
                Method::PUT if has("logging") => PutBucketLogging,
                Method::GET if has("policyStatus") => GetBucketPolicyStatus,
                Method::GET if has("policy") => GetBucketPolicy,
                Method::PUT if has("policy") => PutBucketPolicy,
                Method::DELETE if has("policy") => DeleteBucketPolicy,
                Method::GET if has("publicAccessBlock") => GetPublicAccessBlock,
                Method::PUT if has("publicAccessBlock") => PutPublicAccessBlock,
                Method::DELETE if has("publicAccessBlock") => DeletePublicAccessBlock,
                Method::PUT if has("acl") => PutBucketAcl,
                Method::PUT if has("versioning") => PutBucketVersioning,
                Method::PUT if has("cors") => PutBucketCors,
                Method::PUT if config() => PutBucketConfig,
                Method::PUT => CreateBucket,
                Method::HEAD => HeadBucket,
                Method::DELETE if has("cors") => DeleteBucketCors,
                Method::DELETE if config() => DeleteBucketConfig,
                Method::DELETE => DeleteBucket,
                Method::POST if has("delete") => DeleteObjects,
                // A browser POST upload (multipart/form-data) to the bucket URL.
                Method::POST => PostObject,
                Method::GET if has("acl") => GetBucketAcl,
                Method::GET if has("cors") => GetBucketCors,
                Method::GET if config() => GetBucketConfig,
                Method::GET if has("location") => GetBucketLocation,
                Method::GET if has("versioning") => GetBucketVersioning,
                Method::GET if has("logging") => GetBucketLogging,
                Method::GET if has("requestPayment") => GetBucketRequestPayment,
                Method::GET if has("uploads") => ListMultipartUploads,
                Method::GET if has("versions") => ListObjectVersions,
                Method::GET if query.split('&').any(|kv| kv == "list-type=2") => ListObjectsV2,
                Method::GET => ListObjects,
                _ => Invalid,
            };
        }
        if has("uploads") || has("uploadId") {
            return match (method.clone(), has("uploads")) {
                (Method::POST, true) => CreateMultipartUpload,
                (Method::PUT, false) if headers.contains_key("x-amz-copy-source") => UploadPartCopy,
                (Method::PUT, false) => UploadPart,
                (Method::POST, false) => CompleteMultipartUpload,
                (Method::DELETE, false) => AbortMultipartUpload,
                (Method::GET, false) => ListParts,
                _ => Invalid,
            };
        }
        match *method {
            Method::GET if has("acl") => GetObjectAcl,
            Method::PUT if has("acl") => PutObjectAcl,
            Method::GET if has("tagging") => GetObjectTagging,
            Method::PUT if has("tagging") => PutObjectTagging,
            Method::DELETE if has("tagging") => DeleteObjectTagging,
            Method::GET if has("attributes") => GetObjectAttributes,
            Method::GET if has("retention") => GetObjectRetention,
            Method::PUT if has("retention") => PutObjectRetention,
            Method::GET if has("legal-hold") => GetObjectLegalHold,
            Method::PUT if has("legal-hold") => PutObjectLegalHold,
            Method::PUT if headers.contains_key("x-amz-copy-source") => CopyObject,
            Method::PUT => PutObject,
            Method::DELETE => DeleteObject,
            Method::GET => GetObject,
            Method::HEAD => HeadObject,
            Method::POST => PostObject,
            _ => Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::S3Endpoint::{self, *};
    use http::{HeaderMap, Method};

    fn p(m: Method, b: bool, k: bool, q: &str) -> S3Endpoint {
        S3Endpoint::parse(&m, b, k, q, &HeaderMap::new())
    }

    #[test]
    fn routes() {
        assert_eq!(p(Method::GET, false, false, ""), ListBuckets);
        assert_eq!(
            p(Method::PUT, true, false, "ownershipControls"),
            PutBucketOwnershipControls
        );
        assert_eq!(p(Method::PUT, true, false, "logging"), PutBucketLogging);
        assert_eq!(
            p(Method::GET, true, true, "attributes"),
            GetObjectAttributes
        );
        assert_eq!(
            p(Method::GET, true, false, "list-type=2&prefix=a"),
            ListObjectsV2
        );
        assert_eq!(
            p(Method::GET, true, false, "prefix=list-type=2"),
            ListObjects
        );
        assert_eq!(p(Method::GET, true, false, "cors"), GetBucketCors);
        assert_eq!(p(Method::GET, true, false, "website"), GetBucketConfig);
        assert_eq!(p(Method::POST, true, false, ""), PostObject);
        assert_eq!(p(Method::GET, true, false, "tagging"), GetBucketTagging);
        assert_eq!(p(Method::PUT, true, false, "tagging"), PutBucketTagging);
        assert_eq!(
            p(Method::DELETE, true, false, "tagging"),
            DeleteBucketTagging
        );
        assert_eq!(p(Method::PUT, true, false, ""), CreateBucket);
        assert_eq!(p(Method::PUT, true, false, "policy"), PutBucketPolicy);
        assert_eq!(
            p(Method::GET, true, false, "policyStatus"),
            GetBucketPolicyStatus
        );
        assert_eq!(
            p(Method::DELETE, true, false, "publicAccessBlock"),
            DeletePublicAccessBlock
        );
        assert_eq!(p(Method::PUT, true, true, ""), PutObject);
        assert_eq!(
            p(Method::POST, true, true, "uploads"),
            CreateMultipartUpload
        );
        assert_eq!(
            p(Method::PUT, true, true, "partNumber=1&uploadId=x"),
            UploadPart
        );
        assert_eq!(p(Method::HEAD, true, true, ""), HeadObject);
        assert_eq!(
            p(Method::DELETE, true, true, "tagging"),
            DeleteObjectTagging
        );
        assert_eq!(PutObject.name(), "PutObject");
        let mut h = HeaderMap::new();
        h.insert("x-amz-copy-source", "/b/k".parse().unwrap());
        assert_eq!(
            S3Endpoint::parse(&Method::PUT, true, true, "", &h),
            CopyObject
        );
    }
}
