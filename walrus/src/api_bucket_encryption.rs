//! Bucket default encryption: GetBucketEncryption, PutBucketEncryption,
//! DeleteBucketEncryption. The configuration is kept as its canonical
//! `ServerSideEncryptionConfiguration` document in the bucket's
//! [`BucketConfig::ENCRYPTION`] entry; [`crate::sse::for_write`] applies it to
//! writes that name no encryption: AES256 (SSE-S3), or `aws:kms` with a
//! `KMSMasterKeyID` this cloud knows (none: `aws/s3`). The bucket owner only (or whom
//! the bucket policy allows).
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
            let doc = parse(&node, |id| crate::sse::kms_key_id(st, id))?;
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

/// Validates a `ServerSideEncryptionConfiguration` (`kms_key`: the KMS key id a
/// default names, checked) and returns its canonical form.
fn parse(node: &Node, kms_key: impl Fn(Option<&str>) -> S3Result<String>) -> S3Result<String> {
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
    let algorithm = match by_default.token_of("SSEAlgorithm") {
        Some(a @ (crate::sse::ALGORITHM | crate::sse::KMS)) => a,
        _ => return Err(S3Error::malformed_xml()),
    };
    let key_id =
        match (algorithm, by_default.text_of("KMSMasterKeyID")) {
            (crate::sse::KMS, id) => Some(kms_key(id)?),
            (_, None) => None,
            (_, Some(_)) => return Err(S3Error::invalid_argument(
                "a KMSMasterKeyID is not applicable if the default sse algorithm is not aws:kms",
            )
            .with("ArgumentName", "ApplyServerSideEncryptionByDefault")),
        };
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
        .elem("SSEAlgorithm", algorithm);
    if let Some(id) = &key_id {
        w.elem("KMSMasterKeyID", id);
    }
    w.close();
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
        parse(
            &crate::xmlin::parse(
                format!("<ServerSideEncryptionConfiguration xmlns=\"{S3_NS}\">{inner}</ServerSideEncryptionConfiguration>").as_bytes(),
            )?,
            |id| match id.unwrap_or("aws/s3") {
                k @ ("aws/s3" | "k1") => Ok(k.to_string()),
                _ => Err(S3Error::new("KMS.NotFoundException", 400, "Invalid keyId")),
            },
        )
    }

    #[test]
    fn only_aes256_defaults() {
        let d = doc("<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm></ApplyServerSideEncryptionByDefault><BucketKeyEnabled>true</BucketKeyEnabled></Rule>").unwrap();
        assert!(d.contains("<SSEAlgorithm>AES256</SSEAlgorithm>"));
        assert!(d.contains("<BucketKeyEnabled>true</BucketKeyEnabled>"));
        // aws:kms: the default key, or a known one; an unknown key id is refused.
        let kms = doc("<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>").unwrap();
        assert!(kms.contains(
            "<SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>aws/s3</KMSMasterKeyID>"
        ));
        let k1 = doc("<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>k1</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule>").unwrap();
        assert!(k1.contains("<KMSMasterKeyID>k1</KMSMasterKeyID>"));
        let unknown = doc("<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>aws:kms</SSEAlgorithm><KMSMasterKeyID>k2</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule>").unwrap_err();
        assert_eq!(
            (unknown.code, unknown.status),
            ("KMS.NotFoundException", 400)
        );
        let mixed = doc("<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>AES256</SSEAlgorithm><KMSMasterKeyID>k1</KMSMasterKeyID></ApplyServerSideEncryptionByDefault></Rule>").unwrap_err();
        assert_eq!(mixed.code, "InvalidArgument");
        for bad in [
            "",
            "<Rule></Rule>",
            "<Rule><ApplyServerSideEncryptionByDefault><SSEAlgorithm>DES</SSEAlgorithm></ApplyServerSideEncryptionByDefault></Rule>",
        ] {
            assert_eq!(doc(bad).unwrap_err().code, "MalformedXML", "{bad}");
        }
    }
}
