//! Object lock (WORM): the bucket's ObjectLockConfiguration (on at creation with
//! `x-amz-bucket-object-lock-enabled`, or later on a bucket with versioning enabled;
//! never off again, and versioning can no longer be suspended), retention and legal
//! hold per version (headers on PUT/Copy/CreateMultipartUpload, the bucket's default
//! retention otherwise, `?retention` and `?legal-hold`), and the headers GET/HEAD
//! return. The store enforces it (`MetaError::ObjectLocked`, `RetentionLocked`): a
//! locked version cannot be deleted by anyone; an overwrite adds a version.
//!
//! Choices where S3's permissions are IAM-based: setting retention or legal hold and
//! bypassing governance retention (`x-amz-bypass-governance-retention: true`) are the
//! bucket owner's; reading them needs READ on the object.
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, set_header, xml, Req, Resp};
use crate::meta::{
    millis_to_time, now_millis, BucketConfig, BucketMeta, MetaOp, ObjectMeta, Retention,
    RetentionMode, Versioning,
};
use crate::state::State;
use crate::xmlin::Node;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::{HeaderMap, StatusCode};
use std::sync::Arc;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

const DAY_MS: i64 = 24 * 3600 * 1000;

/// A bucket's object lock configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockConfig {
    /// The default retention: mode and period in days (years are 365 days).
    pub default: Option<(RetentionMode, i64)>,
}

impl LockConfig {
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.root("ObjectLockConfiguration", S3_NS)
            .elem("ObjectLockEnabled", "Enabled");
        if let Some((mode, days)) = self.default {
            w.open("Rule")
                .open("DefaultRetention")
                .elem("Mode", mode.name())
                .elem("Days", days.to_string())
                .close()
                .close();
        }
        w.finish()
    }

    /// The configuration stored on `b`, if object lock is on.
    pub fn of(b: &BucketMeta) -> S3Result<Option<LockConfig>> {
        match b.config(BucketConfig::OBJECT_LOCK) {
            None => Ok(None),
            Some(doc) => parse_config(&crate::xmlin::parse(doc.as_bytes())?).map(Some),
        }
    }
}

fn invalid(msg: &str) -> S3Error {
    S3Error::new("InvalidRequest", 400, msg)
}

/// An `<ObjectLockConfiguration>` body.
pub fn parse_config(node: &Node) -> S3Result<LockConfig> {
    if node.name != "ObjectLockConfiguration"
        || node.token_of("ObjectLockEnabled") != Some("Enabled")
    {
        return Err(S3Error::malformed_xml());
    }
    let default = match node.child("Rule").map(|r| r.child("DefaultRetention")) {
        None => None,
        Some(None) => return Err(S3Error::malformed_xml()),
        Some(Some(d)) => {
            let mode = d
                .token_of("Mode")
                .and_then(RetentionMode::parse)
                .ok_or_else(S3Error::malformed_xml)?;
            let num = |n| {
                d.token_of(n)
                    .map(|v| v.parse::<i64>().ok().filter(|v| *v > 0))
            };
            let days = match (num("Days"), num("Years")) {
                (Some(Some(d)), None) if d <= 36500 => d,
                (None, Some(Some(y))) if y <= 100 => y * 365,
                (Some(_), Some(_)) => {
                    return Err(S3Error::malformed_xml());
                }
                _ => {
                    return Err(S3Error::invalid_argument(
                        "Default retention period must be a positive integer value",
                    ))
                }
            };
            Some((mode, days))
        }
    };
    Ok(LockConfig { default })
}

/// PutObjectLockConfiguration (the caller checked the bucket owner).
pub async fn put_config(st: &Arc<State>, r: &mut Req, b: &BucketMeta) -> S3Result<Resp> {
    let node = r.xml_body(64 * 1024).await?;
    let cfg = parse_config(&node)?;
    if b.versioning() != Versioning::Enabled {
        return Err(S3Error::new(
            "InvalidBucketState",
            409,
            "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration",
        ));
    }
    st.set_bucket_config(&b.name, BucketConfig::OBJECT_LOCK, Some(cfg.to_xml()))
        .await?;
    Ok(empty(StatusCode::OK))
}

/// GetObjectLockConfiguration.
pub fn get_config(b: &BucketMeta) -> S3Result<Resp> {
    match LockConfig::of(b)? {
        Some(c) => Ok(xml(StatusCode::OK, c.to_xml())),
        None => Err(S3Error::new(
            "ObjectLockConfigurationNotFoundError",
            404,
            "Object Lock configuration does not exist for this bucket",
        )
        .with("BucketName", &b.name)),
    }
}

fn parse_until(v: &str) -> S3Result<i64> {
    let t = OffsetDateTime::parse(v, &Rfc3339).map_err(|_| {
        S3Error::invalid_argument("The retain until date is not a valid date")
            .with("ArgumentName", "x-amz-object-lock-retain-until-date")
    })?;
    let ms = (t.unix_timestamp_nanos() / 1_000_000) as i64;
    if ms <= now_millis() {
        return Err(S3Error::invalid_argument(
            "The retain until date must be in the future!",
        ));
    }
    Ok(ms)
}

/// The retention and legal hold a new object gets: from the request's
/// `x-amz-object-lock-*` headers, else the bucket's default retention.
pub fn for_new_object(r: &Req, b: &BucketMeta) -> S3Result<(Option<Retention>, bool)> {
    let mode = r.header("x-amz-object-lock-mode");
    let until = r.header("x-amz-object-lock-retain-until-date");
    let hold = r.header("x-amz-object-lock-legal-hold");
    let cfg = LockConfig::of(b)?;
    if cfg.is_none() {
        if mode.is_some() || until.is_some() || hold.is_some() {
            return Err(invalid("Bucket is missing Object Lock Configuration"));
        }
        return Ok((None, false));
    }
    let legal_hold = match hold {
        None | Some("OFF") => false,
        Some("ON") => true,
        Some(_) => {
            return Err(
                S3Error::invalid_argument("Legal Hold must be either of 'ON' or 'OFF'")
                    .with("ArgumentName", "x-amz-object-lock-legal-hold"),
            )
        }
    };
    let retention = match (mode, until) {
        (Some(m), Some(u)) => Some(Retention {
            mode: RetentionMode::parse(m).ok_or_else(|| {
                S3Error::invalid_argument("Unknown wormMode directive.")
                    .with("ArgumentName", "x-amz-object-lock-mode")
            })?,
            until: parse_until(u)?,
        }),
        (None, None) => cfg.and_then(|c| c.default).map(|(mode, days)| Retention {
            mode,
            until: now_millis() + days * DAY_MS,
        }),
        _ => return Err(S3Error::invalid_argument(
            "x-amz-object-lock-retain-until-date and x-amz-object-lock-mode must both be supplied",
        )),
    };
    Ok((retention, legal_hold))
}

/// The object lock headers of a GET/HEAD answer.
pub fn set_headers(h: &mut HeaderMap, o: &ObjectMeta) -> S3Result<()> {
    if let Some(ret) = &o.retention {
        set_header(h, "x-amz-object-lock-mode", ret.mode.name())?;
        set_header(
            h,
            "x-amz-object-lock-retain-until-date",
            &format_iso8601(millis_to_time(ret.until)),
        )?;
    }
    if o.legal_hold {
        set_header(h, "x-amz-object-lock-legal-hold", "ON")?;
    }
    Ok(())
}

/// Whether the request asks to bypass governance retention and may.
pub fn bypass_governance(r: &Req, b: &BucketMeta) -> bool {
    r.header("x-amz-bypass-governance-retention")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
        && r.principal.as_ref().map(|p| &p.canonical_id) == Some(&b.owner.id)
}

/// PutObjectRetention / PutObjectLegalHold (the caller checked the bucket owner).
pub async fn put_object_lock(st: &Arc<State>, r: &mut Req, b: &BucketMeta) -> S3Result<Resp> {
    if LockConfig::of(b)?.is_none() {
        return Err(invalid("Bucket is missing Object Lock Configuration"));
    }
    let node = r.xml_body(64 * 1024).await?;
    let (retention, legal_hold) = if r.has("retention") {
        r.op = "PutObjectRetention";
        if node.name != "Retention" {
            return Err(S3Error::malformed_xml());
        }
        let ret = match (node.token_of("Mode"), node.token_of("RetainUntilDate")) {
            (None, None) => None,
            (Some(m), Some(u)) => Some(Retention {
                mode: RetentionMode::parse(m).ok_or_else(S3Error::malformed_xml)?,
                until: parse_until(u)?,
            }),
            _ => return Err(S3Error::malformed_xml()),
        };
        (Some(ret), None)
    } else {
        r.op = "PutObjectLegalHold";
        if node.name != "LegalHold" {
            return Err(S3Error::malformed_xml());
        }
        let on = match node.token_of("Status") {
            Some("ON") => true,
            Some("OFF") => false,
            _ => return Err(S3Error::malformed_xml()),
        };
        (None, Some(on))
    };
    let version_id = r.q("versionId").map(String::from);
    // The version must exist (the caller is allowed to know: it may set the lock).
    let key = r.key().to_string();
    match crate::handler::find_object(st, b, &key, version_id.as_deref()).await? {
        crate::handler::Found::Object(_) => {}
        missing => return Err(missing.missing_error(r, &key)),
    }
    st.meta
        .apply(MetaOp::SetObjectLock {
            bucket: r.bucket().into(),
            key: r.key().into(),
            version_id,
            retention,
            legal_hold,
            bypass_governance: bypass_governance(r, b),
        })
        .await?;
    Ok(empty(StatusCode::OK))
}

/// GetObjectRetention / GetObjectLegalHold.
pub async fn get_object_lock(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let b = crate::handler::load_bucket(st, r.bucket()).await?;
    let locking = LockConfig::of(&b)?.is_some();
    let action = if r.has("retention") {
        "s3:GetObjectRetention"
    } else {
        "s3:GetObjectLegalHold"
    };
    let o = crate::authz::object(
        st,
        r,
        &b,
        r.key(),
        r.q("versionId"),
        action,
        crate::acl::Permission::Read,
    )
    .await?;
    // Only after the caller was found allowed to read the object's lock: 400 for a
    // bucket without Object Lock, as S3 answers for both reads.
    if !locking {
        return Err(invalid("Bucket is missing Object Lock Configuration"));
    }
    let mut w = XmlWriter::new();
    if r.has("retention") {
        r.op = "GetObjectRetention";
        let Some(ret) = &o.retention else {
            return Err(S3Error::new(
                "NoSuchObjectLockConfiguration",
                404,
                "The specified object does not have a ObjectLock configuration",
            ));
        };
        w.root("Retention", S3_NS)
            .elem("Mode", ret.mode.name())
            .elem("RetainUntilDate", format_iso8601(millis_to_time(ret.until)));
    } else {
        r.op = "GetObjectLegalHold";
        w.root("LegalHold", S3_NS)
            .elem("Status", if o.legal_hold { "ON" } else { "OFF" });
    }
    Ok(xml(StatusCode::OK, w.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmlin::parse;

    #[test]
    fn configurations() {
        let c = parse_config(&parse(b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>COMPLIANCE</Mode><Years>1</Years></DefaultRetention></Rule></ObjectLockConfiguration>").unwrap()).unwrap();
        assert_eq!(c.default, Some((RetentionMode::Compliance, 365)));
        let again = parse_config(&parse(c.to_xml().as_bytes()).unwrap()).unwrap();
        assert_eq!(again, c);
        for bad in [
            &b"<ObjectLockConfiguration/>"[..],
            b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>X</Mode><Days>1</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
            b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>0</Days></DefaultRetention></Rule></ObjectLockConfiguration>",
            b"<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled><Rule><DefaultRetention><Mode>GOVERNANCE</Mode><Days>1</Days><Years>1</Years></DefaultRetention></Rule></ObjectLockConfiguration>",
        ] {
            assert!(parse_config(&parse(bad).unwrap()).is_err());
        }
    }
}
