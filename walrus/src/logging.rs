//! Bucket logging: Put/GetBucketLogging and the delivery of server access logs.
//!
//! A bucket with logging on has each request naming it recorded as one line of S3's
//! server access log format (see [`Record::line`]). Records wait in memory
//! ([`AccessLogs`]) and a background task ([`worker`]) delivers them every
//! `[walrus] access_log_flush_secs`, or sooner once [`crate::access_logs::FLUSH_AT`]
//! records or [`crate::access_logs::FLUSH_AT_BYTES`] are waiting, as
//! objects `TargetPrefix + YYYY-mm-dd-HH-MM-SS-<unique>` (or S3's partitioned key
//! format) in the target bucket, owned by the target bucket's owner, written through
//! the same metadata and blob operations as a PutObject.
//!
//! Choices: the target bucket must belong to the source bucket's owner (checked when
//! logging is configured and again at every delivery, so a target deleted and
//! re-created by another account never receives the logs); S3's log-delivery
//! principal in the target's policy is not needed or consulted. A request never
//! waits for or fails because of logging: past [`crate::access_logs::MAX_PENDING`]
//! waiting records or [`crate::access_logs::MAX_PENDING_BYTES`] new ones are dropped
//! (and counted in the log), and records still in memory when the process dies are
//! lost. Requests refused at authentication (a bad signature, an anonymous request
//! denied) are recorded with no requester, as S3 does; bytes sent is the response's Content-Length and total time is the time
//! to the response head (the body's streaming is not awaited).
use crate::access_logs::Pending;
use crate::acl::{Acl, Grant, Owner, Permission};
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, xml, Req, Resp};
use crate::meta::{
    now_millis, BlobRef, BucketConfig, BucketMeta, ContentHeaders, MetaOp, ObjectData, ObjectMeta,
};
use crate::state::State;
use bytes::Bytes;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Where the date of a partitioned key comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartitionDate {
    EventTime,
    DeliveryTime,
}

/// A bucket's `LoggingEnabled`, as stored (JSON in [`BucketConfig::LOGGING`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggingConfig {
    pub target_bucket: String,
    pub target_prefix: String,
    pub target_grants: Vec<Grant>,
    /// `None`: SimplePrefix keys.
    pub partitioned: Option<PartitionDate>,
    /// Whether the request named `TargetObjectKeyFormat` (echoed by GET as given).
    pub key_format_given: bool,
    /// The source bucket owner's account id (partitioned keys name it).
    pub source_account: String,
}

impl LoggingConfig {
    pub fn of(b: &BucketMeta) -> Option<Self> {
        serde_json::from_str(b.config(BucketConfig::LOGGING)?).ok()
    }

    /// The `BucketLoggingStatus` document GetBucketLogging answers.
    pub fn to_xml(cfg: Option<&Self>) -> String {
        let mut w = XmlWriter::new();
        w.root("BucketLoggingStatus", S3_NS);
        if let Some(c) = cfg {
            w.open("LoggingEnabled")
                .elem("TargetBucket", &c.target_bucket)
                .elem("TargetPrefix", &c.target_prefix);
            if !c.target_grants.is_empty() {
                w.open("TargetGrants");
                crate::acl::write_grants(&mut w, &c.target_grants);
                w.close();
            }
            if c.key_format_given {
                w.open("TargetObjectKeyFormat");
                match c.partitioned {
                    None => {
                        w.open("SimplePrefix").close();
                    }
                    Some(d) => {
                        let src = match d {
                            PartitionDate::EventTime => "EventTime",
                            PartitionDate::DeliveryTime => "DeliveryTime",
                        };
                        w.open("PartitionedPrefix")
                            .elem("PartitionDateSource", src)
                            .close();
                    }
                }
                w.close();
            }
            w.close();
        }
        w.finish()
    }
}

fn invalid_target(msg: &str) -> S3Error {
    S3Error::new("InvalidTargetBucketForLogging", 400, msg)
}

/// Parses a `BucketLoggingStatus` document: `None` turns logging off.
fn parse_status(node: &crate::xmlin::Node, account: &str) -> S3Result<Option<LoggingConfig>> {
    if node.name != "BucketLoggingStatus" {
        return Err(S3Error::malformed_xml());
    }
    let Some(le) = node.child("LoggingEnabled") else {
        return Ok(None);
    };
    let target_bucket = le
        .token_of("TargetBucket")
        .filter(|b| !b.is_empty())
        .ok_or_else(S3Error::malformed_xml)?
        .to_string();
    // A key prefix: bytes as given.
    let target_prefix = le.text_of("TargetPrefix").unwrap_or("").to_string();
    let target_grants = match le.child("TargetGrants") {
        None => Vec::new(),
        Some(g) => crate::handler::grants_from_xml(g)?,
    };
    if target_grants.iter().any(|g| {
        !matches!(
            g.permission,
            Permission::FullControl | Permission::Read | Permission::Write
        )
    }) {
        return Err(S3Error::new(
            "InvalidArgument",
            400,
            "Logging target grants support only FULL_CONTROL, READ and WRITE",
        ));
    }
    let format = le.child("TargetObjectKeyFormat");
    let partitioned = match format {
        None => None,
        Some(f) => match (f.child("SimplePrefix"), f.child("PartitionedPrefix")) {
            (Some(_), None) => None,
            (None, Some(p)) => Some(match p.token_of("PartitionDateSource") {
                None | Some("EventTime") => PartitionDate::EventTime,
                Some("DeliveryTime") => PartitionDate::DeliveryTime,
                Some(_) => return Err(S3Error::malformed_xml()),
            }),
            _ => return Err(S3Error::malformed_xml()),
        },
    };
    Ok(Some(LoggingConfig {
        target_bucket,
        target_prefix,
        target_grants,
        partitioned,
        key_format_given: format.is_some(),
        source_account: account.to_string(),
    }))
}

/// The target bucket, if logs of `source` may go there: it exists, belongs to the
/// source's owner and has no default object lock retention (a log object must not be
/// locked by a rule its writer never chose; S3 refuses such targets too).
async fn usable_target(st: &State, source: &BucketMeta, target: &str) -> S3Result<BucketMeta> {
    let t = st
        .meta
        .bucket(target)
        .await?
        .ok_or_else(|| invalid_target("The target bucket for logging does not exist"))?;
    if t.owner.id != source.owner.id {
        return Err(invalid_target(
            "The owner of the target bucket for logging must own the source bucket",
        ));
    }
    if crate::objectlock::LockConfig::of(&t)?.is_some_and(|c| c.default.is_some()) {
        return Err(invalid_target(
            "The target bucket for logging must not have a default retention period",
        ));
    }
    Ok(t)
}

/// PutBucketLogging (the caller checked the bucket owner or the policy).
pub async fn put_logging(st: &Arc<State>, r: &mut Req, b: &BucketMeta) -> S3Result<Resp> {
    let account = r
        .principal
        .as_ref()
        .map(|p| p.account_id.clone())
        .unwrap_or_default();
    let node = r.xml_body(64 * 1024).await?;
    let mut cfg = parse_status(&node, &account)?;
    if let Some(c) = &mut cfg {
        usable_target(st, b, &c.target_bucket).await?;
        crate::handler::resolve_grantees(st, &b.owner, &mut c.target_grants).await?;
    }
    let doc = cfg
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| S3Error::internal(format!("logging config: {e}")))?;
    st.set_bucket_config(&b.name, BucketConfig::LOGGING, doc)
        .await?;
    if cfg.is_some() {
        st.access_logs.active.store(true, Ordering::Relaxed);
    }
    Ok(empty(StatusCode::OK))
}

/// GetBucketLogging.
pub fn get_logging(b: &BucketMeta) -> Resp {
    xml(
        StatusCode::OK,
        LoggingConfig::to_xml(LoggingConfig::of(b).as_ref()),
    )
}

/// Delivers the waiting records every `access_log_flush_secs` (or at
/// [`crate::access_logs::FLUSH_AT`]) until `shutdown` (the server delivers the rest
/// once its requests have drained).
pub async fn worker(st: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    // Buckets configured before this process started.
    notice_logging(&st).await;
    let every = Duration::from_secs(st.cfg.access_log_flush_secs.max(1));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = st.access_logs.wake.notified() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Another front end on a shared store may have turned logging on: noticed
        // within one flush interval, from one row (the buckets are read only once
        // it says some bucket has had logging on).
        if st.meta.shared() && !st.access_logs.active() {
            match st.meta.logging_seen().await {
                Ok(true) => notice_logging(&st).await,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "bucket logging: reading the store failed"),
            }
        }
        deliver(&st).await;
    }
}

/// Turns request logging on if any bucket has a logging config.
async fn notice_logging(st: &State) {
    match st.meta.buckets().await {
        Ok(bs) if bs.iter().any(|b| b.config(BucketConfig::LOGGING).is_some()) => {
            st.access_logs.active.store(true, Ordering::Relaxed);
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "bucket logging: listing buckets failed"),
    }
}

/// One delivery of everything waiting.
pub async fn deliver(st: &Arc<State>) {
    let dropped = st.access_logs.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        tracing::warn!(dropped, "bucket logging: records dropped (buffer full)");
    }
    let mut groups: BTreeMap<(String, String), Vec<Pending>> = BTreeMap::new();
    for p in st.access_logs.take() {
        groups
            .entry((p.source.clone(), p.config.clone()))
            .or_default()
            .push(p);
    }
    for ((source, config), records) in groups {
        let n = records.len();
        if let Err(e) = deliver_one(st, &source, &config, records).await {
            tracing::warn!(bucket = %source, records = n, error = %e, "bucket logging: delivery failed; records lost");
        }
    }
}

async fn deliver_one(
    st: &Arc<State>,
    source: &str,
    config: &str,
    records: Vec<Pending>,
) -> S3Result<()> {
    let cfg: LoggingConfig = serde_json::from_str(config)
        .map_err(|e| S3Error::internal(format!("stored logging config unreadable: {e}")))?;
    let Some(src) = st.meta.bucket(source).await? else {
        return Ok(()); // the source is gone: so are its logs
    };
    let target = usable_target(st, &src, &cfg.target_bucket).await?;
    let now = now_millis();
    let key = log_key(&cfg, source, &st.cfg.region, now, records[0].time);
    let mut body = String::new();
    for r in &records {
        body.push_str(&r.line);
        body.push('\n');
    }
    let bytes = Bytes::from(body);
    let size = bytes.len() as u64;
    let etag = hex::encode(euca_aws::hash::Md5::digest(&bytes));
    // The target bucket's default encryption (SSE-S3) applies to log objects, as in
    // S3; an encrypted object is never inlined.
    let enc = crate::sse::for_post(st, None, None, None, &target).await?;
    let data = match &enc {
        Some(e) => {
            let mut w = crate::sse_keys::create_blob(&st.blobs, Some(&e.key)).await?;
            if let Err(err) = w.write(bytes).await {
                w.abort().await;
                return Err(err.into());
            }
            ObjectData::Blobs(vec![BlobRef {
                id: w.finish().await?,
                size,
            }])
        }
        None if bytes.len() <= st.cfg.inline_max_bytes => ObjectData::Inline(bytes.to_vec()),
        None => {
            let id = st.blobs.put(bytes).await?;
            ObjectData::Blobs(vec![BlobRef { id, size }])
        }
    };
    let owner: Owner = target.owner.clone();
    let mut acl = Acl::private(owner.clone());
    acl.grants.extend(cfg.target_grants.iter().cloned());
    let meta = ObjectMeta {
        size,
        etag,
        last_modified: now,
        owner,
        headers: ContentHeaders {
            content_type: Some("text/plain".into()),
            ..Default::default()
        },
        user_meta: Vec::new(),
        checksums: Vec::new(),
        acl,
        data: data.clone(),
        part_sizes: Vec::new(),
        checksum_type: None,
        part_checksums: Vec::new(),
        tags: Vec::new(),
        version_id: None,
        retention: None,
        legal_hold: false,
        sse: enc.map(|e| e.sse),
    };
    let op = MetaOp::PutObject {
        bucket: target.name.clone(),
        key,
        meta,
        cond: None,
    };
    match st.meta.apply(op).await {
        Ok(out) => {
            crate::handler::free_blobs(st, out.freed_blobs);
            Ok(())
        }
        Err(e) => {
            crate::handler::free_uncommitted(st, data.blobs().to_vec(), &e);
            Err(e.into())
        }
    }
}

/// `TargetPrefix + YYYY-mm-dd-HH-MM-SS-<unique>`, or with PartitionedPrefix
/// `TargetPrefix + account/region/bucket/YYYY/MM/DD/YYYY-mm-dd-HH-MM-SS-<unique>`.
fn log_key(cfg: &LoggingConfig, source: &str, region: &str, now: i64, first: i64) -> String {
    let stamp = |ms: i64| {
        let t = crate::meta::millis_to_time(ms);
        (
            format!(
                "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}",
                t.year(),
                u8::from(t.month()),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            ),
            format!("{:04}/{:02}/{:02}", t.year(), u8::from(t.month()), t.day()),
        )
    };
    let unique = format!("{:016X}", rand::random::<u64>());
    let (name, _) = stamp(now);
    match cfg.partitioned {
        None => format!("{}{name}-{unique}", cfg.target_prefix),
        Some(d) => {
            let (_, day) = stamp(match d {
                PartitionDate::EventTime => first,
                PartitionDate::DeliveryTime => now,
            });
            format!(
                "{}{}/{region}/{source}/{day}/{name}-{unique}",
                cfg.target_prefix, cfg.source_account
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_documents() {
        let doc = br#"<BucketLoggingStatus xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><LoggingEnabled><TargetBucket>logs</TargetBucket><TargetPrefix> p/ </TargetPrefix><TargetGrants><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="Group"><URI>http://acs.amazonaws.com/groups/global/AuthenticatedUsers</URI></Grantee><Permission>READ</Permission></Grant></TargetGrants><TargetObjectKeyFormat><PartitionedPrefix><PartitionDateSource>DeliveryTime</PartitionDateSource></PartitionedPrefix></TargetObjectKeyFormat></LoggingEnabled></BucketLoggingStatus>"#;
        let c = parse_status(&crate::xmlin::parse(doc).unwrap(), "123")
            .unwrap()
            .unwrap();
        assert_eq!(c.target_bucket, "logs");
        assert_eq!(c.target_prefix, " p/ ");
        assert_eq!(c.target_grants.len(), 1);
        assert_eq!(c.partitioned, Some(PartitionDate::DeliveryTime));
        // What GET answers reads back the same.
        let again = LoggingConfig::to_xml(Some(&c));
        let back = parse_status(&crate::xmlin::parse(again.as_bytes()).unwrap(), "123")
            .unwrap()
            .unwrap();
        assert_eq!(back, c);
        let off = parse_status(
            &crate::xmlin::parse(b"<BucketLoggingStatus/>").unwrap(),
            "1",
        )
        .unwrap();
        assert!(off.is_none());
        for bad in [
            &b"<Other/>"[..],
            b"<BucketLoggingStatus><LoggingEnabled><TargetPrefix>p</TargetPrefix></LoggingEnabled></BucketLoggingStatus>",
            b"<BucketLoggingStatus><LoggingEnabled><TargetBucket>l</TargetBucket><TargetObjectKeyFormat/></LoggingEnabled></BucketLoggingStatus>",
            b"<BucketLoggingStatus><LoggingEnabled><TargetBucket>l</TargetBucket><TargetGrants><Grant><Grantee><URI>u</URI></Grantee><Permission>WRITE_ACP</Permission></Grant></TargetGrants></LoggingEnabled></BucketLoggingStatus>",
        ] {
            assert!(
                parse_status(&crate::xmlin::parse(bad).unwrap(), "1").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn keys() {
        let mut cfg = LoggingConfig {
            target_bucket: "t".into(),
            target_prefix: "logs/".into(),
            target_grants: Vec::new(),
            partitioned: None,
            key_format_given: false,
            source_account: "123".into(),
        };
        let k = log_key(&cfg, "src", "us-east-1", 1_549_411_238_000, 0);
        assert!(
            k.starts_with("logs/2019-02-06-00-00-38-") && k.len() == 41,
            "{k}"
        );
        cfg.partitioned = Some(PartitionDate::EventTime);
        let k = log_key(
            &cfg,
            "src",
            "us-east-1",
            1_549_411_238_000,
            1_549_000_000_000,
        );
        assert!(
            k.starts_with("logs/123/us-east-1/src/2019/02/01/2019-02-06-00-00-38-"),
            "{k}"
        );
    }
}
