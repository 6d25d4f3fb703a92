//! Bucket default encryption: GetBucketEncryption, PutBucketEncryption,
//! DeleteBucketEncryption. The configuration is kept as its canonical
//! `ServerSideEncryptionConfiguration` document in the bucket's
//! [`BucketConfig::ENCRYPTION`] entry; [`crate::sse::for_write`] applies it to
//! writes that name no encryption. Only AES256 (SSE-S3) can be a default: this cloud
//! has no KMS. The bucket owner only (or whom the bucket policy allows).
use crate::authz::{self, AclRule};
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, load_bucket, xml, Req, Resp};
use crate::meta::BucketConfig;
use crate::state::State;
use crate::xmlin::Node;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::{Method, StatusCode};
use std::sync::Arc;

const MAX_BODY: u64 = 64 * 1024;

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let name = r.bucket().to_string();
    let b = load_bucket(st, &name).await?;
    let (op, action) = match r.method {
        Method::GET => ("GetBucketEncryption", "s3:GetEncryptionConfiguration"),
        Method::PUT => ("PutBucketEncryption", "s3:PutEncryptionConfiguration"),
        _ => ("DeleteBucketEncryption", "s3:PutEncryptionConfiguration"),
    };
    r.op = op;
    authz::check(r, &b, action, None, AclRule::BucketOwner)?;
    match r.method {
        Method::GET => match b.config(BucketConfig::ENCRYPTION) {
            Some(doc) => Ok(xml(StatusCode::OK, doc.to_string())),
            None => Err(S3Error::new(
                "ServerSideEncryptionConfigurationNotFoundError",
                404,
                "The server side encryption configuration was not found",
            )
            .with("BucketName", &name)),
        },
        Method::PUT => {
            let node = r.xml_body(MAX_BODY).await?;
            let doc = parse(&node)?;
            st.set_bucket_config(&name, BucketConfig::ENCRYPTION, Some(doc))
                .await?;
            Ok(empty(StatusCode::OK))
        }
        _ => {
            st.set_bucket_config(&name, BucketConfig::ENCRYPTION, None)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
    }
}

/// Validates a `ServerSideEncryptionConfiguration` and returns its canonical form.
fn parse(node: &Node) -> S3Result<String> {
    if node.name != "ServerSideEncryptionConfiguration" {
        return Err(S3Error::malformed_xml());
    }
    let rules: Vec<&Node> = node.children("Rule").collect();
    let [rule] = rules[..] else {
        return Err(S3Error::malformed_xml());
    };
    let by_default = rule
        .child("ApplyServerSideEncryptionByDefault")
        .ok_or_else(S3Error::malformed_xml)?;
    match by_default.token_of("SSEAlgorithm") {
        Some(crate::sse::ALGORITHM) => {}
        Some(v) if v.starts_with("aws:kms") => return Err(crate::sse::kms_unavailable(v)),
        _ => return Err(S3Error::malformed_xml()),
    }
    if by_default.child("KMSMasterKeyID").is_some() {
        return Err(S3Error::invalid_argument(
            "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms",
        )
        .with("ArgumentName", "ApplyServerSideEncryptionByDefault"));
    }
    let bucket_key = match rule.token_of("BucketKeyEnabled") {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(S3Error::malformed_xml()),
    };
    let mut w = XmlWriter::new();
    w.root("ServerSideEncryptionConfiguration", S3_NS)
        .open("Rule")
        .open("ApplyServerSideEncryptionByDefault")
        .elem("SSEAlgorithm", crate::sse::ALGORITHM)
        .close();
    if let Some(k) = bucket_key {
        w.elem("BucketKeyEnabled", if k { "true" } else { "false" });
    }
    w.close();
    Ok(w.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(inner: &str) -> S3Result<String> {
        parse(&crate::xmlin::parse(
            format!("<ServerSideEncryptionConfiguration xmlns=\"{S3_NS}\">{inner}</ServerSideEncryptionConfiguration>").as_bytes(),
        )?)
    }

    #[test]
    fn only_aes256_defaults() {
        let d = doc("<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault><BucketKeyEnabled>true</BucketKeyEnabled></Rule>").unwrap();
        assert!(d.contains("<SSEAlgorithm>AES256</SSEAlgorithm>"));
        assert!(d.contains("<BucketKeyEnabled>true</BucketKeyEnabled>"));
        let kms = doc("<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>").unwrap_err();
        assert_eq!((kms.code, kms.status), ("InvalidArgument", 400));
        for bad in [
            "",
            "<Rule></Rule>",
            "<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>DES</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>",
        ] {
            assert_eq!(doc(bad).unwrap_err().code, "MalformedXML", "{bad}");
        }
    }
}
