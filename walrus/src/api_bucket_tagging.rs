//! Bucket tagging: GetBucketTagging, PutBucketTagging, DeleteBucketTagging. The tag
//! set is kept as its canonical `Tagging` document in the bucket's
//! [`BucketConfig::TAGGING`] entry, which GetBucketTagging answers with verbatim.
//! Only the bucket's owner may read or change it (S3 grants these actions through
//! policies only, never through ACLs).
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, load_bucket, xml, Req, Resp};
use crate::meta::BucketConfig;
use crate::state::State;
use crate::tags::{self, TagTarget, MAX_TAGGING_BODY};
use http::{Method, StatusCode};
use std::sync::Arc;

fn no_tag_set(bucket: &str) -> S3Error {
    S3Error::new("NoSuchTagSet", 404, "The TagSet does not exist").with("BucketName", bucket)
}

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let name = r.bucket().to_string();
    r.op = match r.method {
        Method::GET => "GetBucketTagging",
        Method::PUT => "PutBucketTagging",
        _ => "DeleteBucketTagging",
    };
    let b = load_bucket(st, &name).await?;
    if r.principal.as_ref().map(|p| &p.canonical_id) != Some(&b.owner.id) {
        return Err(S3Error::access_denied());
    }
    match r.method {
        Method::GET => match b.config(BucketConfig::TAGGING) {
            Some(doc) => Ok(xml(StatusCode::OK, doc.to_string())),
            None => Err(no_tag_set(&name)),
        },
        Method::PUT => {
            let node = r.xml_body(MAX_TAGGING_BODY).await?;
            let tags = tags::from_xml(&node, TagTarget::Bucket)?;
            // An empty tag set leaves the bucket without one, as a delete does.
            let doc = (!tags.is_empty()).then(|| tags::to_xml(&tags));
            st.set_bucket_config(&name, BucketConfig::TAGGING, doc)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        _ => {
            st.set_bucket_config(&name, BucketConfig::TAGGING, None)
                .await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
    }
}
