//! Bucket versioning, the bucket half: PutBucketVersioning, GetBucketVersioning and
//! ListObjectVersions. The store keeps the versions (`meta_redb`: version ids,
//! delete markers, the `null` version); objects by version id are in `api_object`.
//!
//! Choices where S3 leaves room: versioning is set by the bucket owner only; a
//! configuration without `Status` leaves the state as it is; `MfaDelete` `Enabled` is
//! refused (Walrus has no MFA devices), `Disabled` is accepted.
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, xml, Req, Resp};
use crate::meta::{
    millis_to_time, BucketConfig, BucketMeta, MetaStore, Version, VersionEntry, Versioning,
};
use crate::state::State;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use std::sync::Arc;

/// PutBucketVersioning (the caller checked the bucket owner).
pub async fn put_bucket_versioning(st: &Arc<State>, r: &mut Req, b: &BucketMeta) -> S3Result<Resp> {
    let node = r.xml_body(64 * 1024).await?;
    let (status, mfa) = crate::xmlreq::versioning_configuration(&node)?;
    if mfa == Some("Enabled") {
        return Err(S3Error::not_implemented("MFA delete"));
    }
    let Some(status) = status else {
        return Ok(empty(StatusCode::OK));
    };
    if status != Versioning::ENABLED && b.config(BucketConfig::OBJECT_LOCK).is_some() {
        return Err(S3Error::new(
            "InvalidBucketState",
            409,
            "An Object Lock configuration is present on this bucket, so the versioning state cannot be changed.",
        ));
    }
    if b.config(BucketConfig::VERSIONING) != Some(status) {
        st.set_bucket_config(&b.name, BucketConfig::VERSIONING, Some(status.to_string()))
            .await?;
    }
    Ok(empty(StatusCode::OK))
}

/// GetBucketVersioning: `Status` once versioning was ever set.
pub fn get_bucket_versioning(b: &BucketMeta) -> Resp {
    let mut w = XmlWriter::new();
    w.root("VersioningConfiguration", S3_NS);
    match b.versioning() {
        Versioning::Enabled => {
            w.elem("Status", Versioning::ENABLED);
        }
        Versioning::Suspended => {
            w.elem("Status", Versioning::SUSPENDED);
        }
        Versioning::Unversioned => {}
    }
    xml(StatusCode::OK, w.finish())
}

/// What one page of a version listing holds.
struct VersionPage {
    entries: Vec<VersionEntry>,
    prefixes: Vec<String>,
    truncated: bool,
    /// Where the next page starts: (key, version id; none after a common prefix).
    next: Option<(String, Option<String>)>,
}

/// Up to `max` versions and common prefixes under `prefix` after the markers, keys
/// rolled up at the first `delimiter` after the prefix as ListObjects does.
async fn list_versions(
    meta: &dyn MetaStore,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    key_marker: Option<&str>,
    version_marker: Option<&str>,
    max: usize,
) -> S3Result<VersionPage> {
    let mut page = VersionPage {
        entries: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        next: None,
    };
    if max == 0 {
        return Ok(page);
    }
    let mut after: Option<(String, Option<String>)> = key_marker
        .filter(|k| !k.is_empty())
        .map(|k| (k.to_string(), version_marker.map(String::from)));
    let batch = (max + 1).clamp(16, 1001);
    loop {
        let got = meta
            .scan_versions(
                bucket,
                after.as_ref().map(|(k, v)| (k.as_str(), v.as_deref())),
                prefix,
                batch,
            )
            .await?;
        let n = got.len();
        let mut jumped = false;
        for e in got {
            if !delimiter.is_empty() {
                if let Some(i) = e.key[prefix.len()..].find(delimiter) {
                    let cp = e.key[..prefix.len() + i + delimiter.len()].to_string();
                    let seen = page.prefixes.last() == Some(&cp)
                        || key_marker.is_some_and(|m| cp.as_str() <= m);
                    if !seen {
                        if page.entries.len() + page.prefixes.len() >= max {
                            page.truncated = true;
                            return Ok(page);
                        }
                        page.next = Some((cp.clone(), None));
                        page.prefixes.push(cp.clone());
                    }
                    // Past every key under the prefix: after its last possible key (or
                    // after this one, if it is beyond that: always forward).
                    let jump = format!("{cp}{}", char::MAX);
                    after = Some((if jump > e.key { jump } else { e.key.clone() }, None));
                    jumped = true;
                    break;
                }
            }
            if page.entries.len() + page.prefixes.len() >= max {
                page.truncated = true;
                return Ok(page);
            }
            let id = e.version.version_id().to_string();
            after = Some((e.key.clone(), Some(id.clone())));
            page.next = Some((e.key.clone(), Some(id)));
            page.entries.push(e);
        }
        if !jumped && n < batch {
            return Ok(page);
        }
    }
}

/// ListObjectVersions (the caller checked READ on the bucket).
pub async fn list_object_versions(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "ListObjectVersions";
    let prefix = r.q("prefix").unwrap_or("").to_string();
    let delimiter = r.q("delimiter").unwrap_or("").to_string();
    let url = crate::handler::url_encoding(r)?;
    let enc = |s: &str| crate::handler::listing_text(url, s);
    let max = crate::handler::parse_max(r, "max-keys")?;
    let key_marker = r.q("key-marker").map(String::from);
    let version_marker = r.q("version-id-marker").map(String::from);
    if version_marker.is_some() && key_marker.as_deref().unwrap_or("").is_empty() {
        return Err(S3Error::invalid_argument(
            "A version-id marker cannot be specified without a key marker.",
        )
        .with("ArgumentName", "version-id-marker"));
    }
    let page = list_versions(
        st.meta.as_ref(),
        r.bucket(),
        &prefix,
        &delimiter,
        key_marker.as_deref(),
        version_marker.as_deref(),
        max,
    )
    .await?;
    let mut w = XmlWriter::new();
    w.root("ListVersionsResult", S3_NS);
    w.elem("Name", r.bucket())
        .elem("Prefix", enc(&prefix))
        .elem("KeyMarker", enc(key_marker.as_deref().unwrap_or("")))
        .elem("VersionIdMarker", version_marker.as_deref().unwrap_or(""));
    if page.truncated {
        if let Some((k, v)) = &page.next {
            w.elem("NextKeyMarker", enc(k));
            if let Some(v) = v {
                w.elem("NextVersionIdMarker", v);
            }
        }
    }
    w.elem("MaxKeys", max.to_string());
    if !delimiter.is_empty() {
        w.elem("Delimiter", enc(&delimiter));
    }
    if url {
        w.elem("EncodingType", "url");
    }
    w.elem("IsTruncated", if page.truncated { "true" } else { "false" });
    for e in &page.entries {
        let latest = if e.is_latest { "true" } else { "false" };
        match &e.version {
            Version::Object(o) => {
                w.open("Version")
                    .elem("Key", enc(&e.key))
                    .elem("VersionId", o.version())
                    .elem("IsLatest", latest)
                    .elem(
                        "LastModified",
                        format_iso8601(millis_to_time(o.last_modified)),
                    )
                    .elem("ETag", format!("\"{}\"", o.etag))
                    .elem("Size", o.size.to_string());
                w.open("Owner")
                    .elem("ID", &o.owner.id)
                    .elem("DisplayName", &o.owner.display_name)
                    .close();
                w.elem("StorageClass", "STANDARD").close();
            }
            Version::DeleteMarker(m) => {
                w.open("DeleteMarker")
                    .elem("Key", enc(&e.key))
                    .elem("VersionId", &m.version_id)
                    .elem("IsLatest", latest)
                    .elem(
                        "LastModified",
                        format_iso8601(millis_to_time(m.last_modified)),
                    );
                w.open("Owner")
                    .elem("ID", &m.owner.id)
                    .elem("DisplayName", &m.owner.display_name)
                    .close();
                w.close();
            }
        }
    }
    for p in &page.prefixes {
        w.open("CommonPrefixes").elem("Prefix", enc(p)).close();
    }
    Ok(xml(StatusCode::OK, w.finish()))
}
