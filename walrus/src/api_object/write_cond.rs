//! Conditional writes: `If-None-Match: *` (create only) and `If-Match: "<etag>"`
//! (replace only that version) on PutObject, CopyObject (the destination) and
//! CompleteMultipartUpload.
//!
//! A condition is checked twice: once against the current object before the body is
//! read ([`precheck`], a cheap metadata read, so a refused write does not stream its
//! body first), and again inside the metadata commit (the store's [`WriteCondition`]),
//! which is the check that counts: of racing conditional writers exactly one commits
//! and the others get 412.
use crate::error::{S3Error, S3Result};
use crate::meta::{MetaError, ObjectMeta, WriteCondition};
use crate::state::State;
use http::HeaderMap;

/// S3's answer to a write condition that does not hold.
fn failed(c: &WriteCondition) -> S3Error {
    S3Error::precondition_failed(match c {
        WriteCondition::Absent => "If-None-Match",
        WriteCondition::EtagIs(_) => "If-Match",
    })
}

fn not_implemented(header: &'static str) -> S3Error {
    S3Error::new(
        "NotImplemented",
        501,
        "A header you provided implies functionality that is not implemented",
    )
    .with("Header", header)
}

/// The write condition a request asks for, if any. `If-None-Match` takes only `*` on
/// a write (anything else is 501 NotImplemented, as in S3); `If-Match` takes one
/// ETag, quoted or not. Both at once, or `If-Match: *`, are not implemented either.
pub fn from_headers(h: &HeaderMap) -> S3Result<Option<WriteCondition>> {
    let inm = h.get("if-none-match");
    let im = h.get("if-match");
    match (inm, im) {
        (None, None) => Ok(None),
        (Some(_), Some(_)) => Err(not_implemented("If-Match")),
        (Some(v), None) => {
            if v.as_bytes() == b"*" {
                Ok(Some(WriteCondition::Absent))
            } else {
                Err(not_implemented("If-None-Match"))
            }
        }
        (None, Some(v)) => {
            let v = v.to_str().map_err(|_| not_implemented("If-Match"))?;
            // One ETag; S3's are hex (or hex-N), so quotes are the only wrapping.
            let etag = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            if etag == "*" || etag.contains(',') || etag.is_empty() {
                return Err(not_implemented("If-Match"));
            }
            Ok(Some(WriteCondition::EtagIs(etag.to_string())))
        }
    }
}

/// Whether `cond` holds for `current`: Ok, or the error S3 answers. `If-Match` on a
/// key with no object is 404 NoSuchKey, as in S3; any other miss is 412.
pub fn evaluate(cond: &WriteCondition, key: &str, current: Option<&ObjectMeta>) -> S3Result<()> {
    if cond.holds(current) {
        return Ok(());
    }
    match (cond, current) {
        (WriteCondition::EtagIs(_), None) => Err(S3Error::no_such_key(key)),
        _ => Err(failed(cond)),
    }
}

/// The early check, before the body is read. The caller must already be authorized
/// to write the key.
pub async fn precheck(
    st: &State,
    bucket: &str,
    key: &str,
    cond: Option<&WriteCondition>,
) -> S3Result<()> {
    match cond {
        None => Ok(()),
        Some(c) => evaluate(c, key, st.meta.object(bucket, key).await?.as_ref()),
    }
}

/// The S3 error for a failed commit, once [`precheck`] had passed. A condition the
/// store found false means another write got there first: the object that is there
/// now answers 412, as in S3 ("the first write to finish wins"); for `If-Match`, an
/// object deleted while this write was under way is S3's 409
/// `ConditionalRequestConflict` (retry after fetching the ETag again).
pub async fn commit_error(
    st: &State,
    bucket: &str,
    key: &str,
    cond: Option<&WriteCondition>,
    e: MetaError,
) -> S3Error {
    match (e, cond) {
        (MetaError::PreconditionFailed, Some(c)) => match st.meta.object(bucket, key).await {
            Ok(None) if matches!(c, WriteCondition::EtagIs(_)) => S3Error::new(
                "ConditionalRequestConflict",
                409,
                "The conditional request cannot succeed due to a conflicting operation against this resource.",
            ),
            Ok(_) => failed(c),
            Err(e) => e.into(),
        },
        (e, _) => e.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.insert(*k, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn headers() {
        assert_eq!(from_headers(&h(&[])).unwrap(), None);
        assert_eq!(
            from_headers(&h(&[("if-none-match", "*")])).unwrap(),
            Some(WriteCondition::Absent)
        );
        assert_eq!(
            from_headers(&h(&[("if-match", "\"abc\"")])).unwrap(),
            Some(WriteCondition::EtagIs("abc".into()))
        );
        assert_eq!(
            from_headers(&h(&[("if-match", "abc-2")])).unwrap(),
            Some(WriteCondition::EtagIs("abc-2".into()))
        );
        for bad in [
            h(&[("if-none-match", "\"abc\"")]),
            h(&[("if-match", "*")]),
            h(&[("if-match", "\"a\", \"b\"")]),
            h(&[("if-match", "\"a\""), ("if-none-match", "*")]),
        ] {
            let e = from_headers(&bad).unwrap_err();
            assert_eq!((e.code, e.status), ("NotImplemented", 501));
        }
    }

    #[test]
    fn evaluation() {
        let absent = WriteCondition::Absent;
        assert!(evaluate(&absent, "k", None).is_ok());
        let e = evaluate(&WriteCondition::EtagIs("x".into()), "k", None).unwrap_err();
        assert_eq!((e.code, e.status), ("NoSuchKey", 404));
    }
}
