//! Bucket lifecycle: Put/Get/DeleteBucketLifecycleConfiguration and the worker that
//! applies the rules: expiration by age or date (in a versioned bucket it adds a
//! delete marker, as S3), removal of delete markers left without versions, expiry of
//! noncurrent versions (keeping the newest N), and aborting incomplete multipart
//! uploads. Rules filter by prefix, tags and object size.
//!
//! Choices: transitions are refused (there are no storage classes); the worker runs
//! every `[walrus] lifecycle_interval_secs` (default one hour) over every bucket with
//! rules, and measures ages in days of `lifecycle_day_secs` (default 86400; tests
//! shorten it, as Ceph's `rgw_lc_debug_interval` does). A version object lock
//! protects is left alone. Front ends sharing a metadata store take turns under a
//! lease (`LEASE`). Every action is conditional on what the scan found (an
//! expiration deletes only the object it found due, with the tags it had,
//! [`MetaOp::DeleteObject`]'s `unchanged`; versions and uploads go by id), so a
//! newer write (or one retagged out of a rule) is never expired, and two passes
//! overlapping (a holder that outlived its lease) act at most once on each thing.
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, xml, Req, Resp};
use crate::meta::{
    now_millis, BucketConfig, BucketMeta, FoundObject, MetaError, MetaOp, ObjectMeta, Version,
    Versioning,
};
use crate::state::State;
use crate::xmlin::Node;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::watch;

const MAX_RULES: usize = 1000;

/// Which objects a rule applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub prefix: String,
    pub tags: Vec<(String, String)>,
    pub size_greater_than: Option<u64>,
    pub size_less_than: Option<u64>,
}

impl Filter {
    fn matches(&self, key: &str, o: &ObjectMeta) -> bool {
        key.starts_with(&self.prefix)
            && self.tags.iter().all(|t| o.tags.contains(t))
            && self.size_greater_than.is_none_or(|n| o.size > n)
            && self.size_less_than.is_none_or(|n| o.size < n)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expiration {
    Days(i64),
    /// Unix milliseconds (midnight UTC).
    Date(i64),
    /// Remove a delete marker that is a key's only version.
    ExpiredObjectDeleteMarker,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub id: String,
    pub enabled: bool,
    pub filter: Filter,
    /// The rule named its prefix as `<Rule><Prefix>` (S3's older form) rather than in
    /// a `<Filter>`; GET gives it back the way it was put.
    pub rule_prefix: bool,
    pub expiration: Option<Expiration>,
    /// (days after becoming noncurrent, newest noncurrent versions kept).
    pub noncurrent: Option<(i64, usize)>,
    pub abort_multipart_days: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleConfig {
    pub rules: Vec<Rule>,
}

fn malformed(msg: &str) -> S3Error {
    S3Error::new("MalformedXML", 400, msg)
}

fn invalid(msg: &str) -> S3Error {
    S3Error::invalid_argument(msg)
}

fn positive(node: &Node, name: &str) -> S3Result<Option<i64>> {
    match node.token_of(name) {
        None => Ok(None),
        Some(v) => v
            .parse::<i64>()
            .ok()
            .filter(|n| *n > 0)
            .map(Some)
            .ok_or_else(|| {
                invalid(&format!(
                    "'{name}' for lifecycle must be a positive integer"
                ))
            }),
    }
}

fn parse_tag(t: &Node) -> S3Result<(String, String)> {
    let k = t
        .text_of("Key")
        .ok_or_else(|| malformed("A tag needs a Key"))?;
    Ok((k.to_string(), t.text_of("Value").unwrap_or("").to_string()))
}

/// A rule's filter, and whether it came as `<Rule><Prefix>` (no `<Filter>`).
fn parse_filter(rule: &Node) -> S3Result<(Filter, bool)> {
    let mut f = Filter::default();
    let size = |n: &Node, name: &str| -> S3Result<Option<u64>> {
        n.token_of(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|_| invalid("Object size must be an integer"))
            })
            .transpose()
    };
    match (rule.child("Filter"), rule.text_of("Prefix")) {
        (Some(_), Some(_)) => return Err(malformed("Use Filter or Prefix, not both")),
        (None, Some(p)) => {
            f.prefix = p.to_string();
            return Ok((f, true));
        }
        (None, None) => return Err(malformed("A rule needs a Filter")),
        (Some(fl), None) => {
            let parts = [fl.child("Prefix"), fl.child("Tag"), fl.child("And")]
                .iter()
                .filter(|c| c.is_some())
                .count()
                + usize::from(fl.child("ObjectSizeGreaterThan").is_some())
                + usize::from(fl.child("ObjectSizeLessThan").is_some());
            if parts > 1 {
                return Err(malformed(
                    "A Filter holds one condition; use And for several",
                ));
            }
            let src = fl.child("And").unwrap_or(fl);
            f.prefix = src.text_of("Prefix").unwrap_or("").to_string();
            for t in src.children("Tag") {
                f.tags.push(parse_tag(t)?);
            }
            f.size_greater_than = size(src, "ObjectSizeGreaterThan")?;
            f.size_less_than = size(src, "ObjectSizeLessThan")?;
        }
    }
    Ok((f, false))
}

fn parse_rule(r: &Node) -> S3Result<Rule> {
    let id = r.text_of("ID").unwrap_or("").to_string();
    if id.chars().count() > 255 {
        return Err(invalid("ID length should not exceed allowed limit of 255"));
    }
    let enabled = match r.token_of("Status") {
        Some("Enabled") => true,
        Some("Disabled") => false,
        _ => return Err(malformed("Status must be Enabled or Disabled")),
    };
    if let Some(t) = r.child("Transition") {
        // A malformed transition is the client's error (400) before it is our gap (501).
        if let Some(d) = t.token_of("Date") {
            midnight_date(d)?;
        }
    }
    if r.child("Transition").is_some() || r.child("NoncurrentVersionTransition").is_some() {
        return Err(S3Error::not_implemented(
            "Lifecycle transitions (there are no storage classes)",
        ));
    }
    let (filter, rule_prefix) = parse_filter(r)?;
    let expiration = match r.child("Expiration") {
        None => None,
        Some(e) => {
            let days = positive(e, "Days")?;
            let date = e.token_of("Date");
            let marker = e.token_of("ExpiredObjectDeleteMarker");
            match (days, date, marker) {
                (Some(d), None, None) => Some(Expiration::Days(d)),
                (None, Some(d), None) => Some(Expiration::Date(midnight_date(d)?)),
                (None, None, Some("true")) => Some(Expiration::ExpiredObjectDeleteMarker),
                (None, None, Some(_)) => None,
                _ => {
                    return Err(malformed(
                        "Expiration holds one of Days, Date, ExpiredObjectDeleteMarker",
                    ))
                }
            }
        }
    };
    if expiration == Some(Expiration::ExpiredObjectDeleteMarker) && !filter.tags.is_empty() {
        return Err(invalid(
            "ExpiredObjectDeleteMarker cannot be specified with tags",
        ));
    }
    let noncurrent = match r.child("NoncurrentVersionExpiration") {
        None => None,
        Some(n) => {
            let days = positive(n, "NoncurrentDays")?
                .ok_or_else(|| malformed("NoncurrentVersionExpiration needs NoncurrentDays"))?;
            let keep = positive(n, "NewerNoncurrentVersions")?.unwrap_or(0);
            Some((days, keep.min(100) as usize))
        }
    };
    let abort_multipart_days = match r.child("AbortIncompleteMultipartUpload") {
        None => None,
        Some(a) => Some(positive(a, "DaysAfterInitiation")?.ok_or_else(|| {
            malformed("AbortIncompleteMultipartUpload needs DaysAfterInitiation")
        })?),
    };
    if abort_multipart_days.is_some() && !filter.tags.is_empty() {
        return Err(invalid(
            "AbortIncompleteMultipartUpload cannot be specified with tags",
        ));
    }
    if expiration.is_none() && noncurrent.is_none() && abort_multipart_days.is_none() {
        return Err(invalid(
            "At least one action needs to be specified in a rule",
        ));
    }
    Ok(Rule {
        id,
        enabled,
        filter,
        rule_prefix,
        expiration,
        noncurrent,
        abort_multipart_days,
    })
}

/// A rule's `Date`: ISO 8601 at midnight UTC, as Unix milliseconds.
fn midnight_date(d: &str) -> S3Result<i64> {
    let t = OffsetDateTime::parse(d, &Rfc3339)
        .map_err(|_| invalid("'Date' must be in ISO 8601 format"))?;
    if (t.hour(), t.minute(), t.second(), t.nanosecond()) != (0, 0, 0, 0) {
        return Err(invalid("'Date' must be at midnight GMT"));
    }
    Ok((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// A `<LifecycleConfiguration>` body.
pub fn parse_config(node: &Node) -> S3Result<LifecycleConfig> {
    if node.name != "LifecycleConfiguration" {
        return Err(S3Error::malformed_xml());
    }
    let rules = node
        .children("Rule")
        .map(parse_rule)
        .collect::<S3Result<Vec<_>>>()?;
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(S3Error::malformed_xml());
    }
    let mut ids: Vec<&str> = rules
        .iter()
        .map(|r| r.id.as_str())
        .filter(|i| !i.is_empty())
        .collect();
    ids.sort_unstable();
    if ids.windows(2).any(|w| w[0] == w[1]) {
        return Err(invalid(
            "Rule ID must be unique. Found same ID for more than one rule",
        ));
    }
    Ok(LifecycleConfig { rules })
}

fn filter_xml(w: &mut XmlWriter, f: &Filter) {
    w.open("Filter");
    let conditions = usize::from(!f.prefix.is_empty())
        + f.tags.len()
        + usize::from(f.size_greater_than.is_some())
        + usize::from(f.size_less_than.is_some());
    if conditions > 1 {
        w.open("And");
    }
    if !f.prefix.is_empty() || conditions == 0 {
        w.elem("Prefix", &f.prefix);
    }
    for (k, v) in &f.tags {
        w.open("Tag").elem("Key", k).elem("Value", v).close();
    }
    if let Some(n) = f.size_greater_than {
        w.elem("ObjectSizeGreaterThan", n.to_string());
    }
    if let Some(n) = f.size_less_than {
        w.elem("ObjectSizeLessThan", n.to_string());
    }
    if conditions > 1 {
        w.close();
    }
    w.close();
}

impl LifecycleConfig {
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.root("LifecycleConfiguration", S3_NS);
        for r in &self.rules {
            w.open("Rule");
            if !r.id.is_empty() {
                w.elem("ID", &r.id);
            }
            let f = &r.filter;
            if r.rule_prefix {
                w.elem("Prefix", &f.prefix);
            } else {
                filter_xml(&mut w, f);
            }
            w.elem("Status", if r.enabled { "Enabled" } else { "Disabled" });
            match &r.expiration {
                Some(Expiration::Days(d)) => {
                    w.open("Expiration").elem("Days", d.to_string()).close();
                }
                Some(Expiration::Date(ms)) => {
                    let t = crate::meta::millis_to_time(*ms);
                    w.open("Expiration")
                        .elem("Date", euca_aws::timefmt::format_iso8601(t))
                        .close();
                }
                Some(Expiration::ExpiredObjectDeleteMarker) => {
                    w.open("Expiration")
                        .elem("ExpiredObjectDeleteMarker", "true")
                        .close();
                }
                None => {}
            }
            if let Some((days, keep)) = r.noncurrent {
                w.open("NoncurrentVersionExpiration")
                    .elem("NoncurrentDays", days.to_string());
                if keep > 0 {
                    w.elem("NewerNoncurrentVersions", keep.to_string());
                }
                w.close();
            }
            if let Some(d) = r.abort_multipart_days {
                w.open("AbortIncompleteMultipartUpload")
                    .elem("DaysAfterInitiation", d.to_string())
                    .close();
            }
            w.close();
        }
        w.finish()
    }

    fn of(b: &BucketMeta) -> S3Result<Option<LifecycleConfig>> {
        match b.config(BucketConfig::LIFECYCLE) {
            None => Ok(None),
            Some(doc) => parse_config(&crate::xmlin::parse(doc.as_bytes())?).map(Some),
        }
    }
}

const REAL_DAY_MS: i64 = 86_400_000;

/// When a rule of `b` expires the current object `o` of `key`, as S3's
/// `x-amz-expiration` header on PUT, GET and HEAD tells it:
/// `expiry-date="<HTTP date>", rule-id="<URL-encoded rule id>"`, from the enabled rule
/// that expires it first. With real days the date is rounded up to the next midnight
/// UTC, as S3 computes it; with a shortened `lifecycle_day_secs` (tests) it is exact.
/// `None` if no rule expires it (or the stored rules cannot be read: a header is not
/// worth failing a request).
pub fn expiration_header(st: &State, b: &BucketMeta, key: &str, o: &ObjectMeta) -> Option<String> {
    b.config(BucketConfig::LIFECYCLE)?;
    let cfg = LifecycleConfig::of(b).ok()??;
    let day_ms = (st.cfg.lifecycle_day_secs.max(1) as i64).saturating_mul(1000);
    let mut first: Option<(i64, &str)> = None;
    for rule in cfg
        .rules
        .iter()
        .filter(|r| r.enabled && r.filter.matches(key, o))
    {
        let at = match rule.expiration {
            Some(Expiration::Days(d)) => {
                let at = o.last_modified.saturating_add(d.saturating_mul(day_ms));
                if day_ms == REAL_DAY_MS {
                    at.div_euclid(REAL_DAY_MS)
                        .saturating_add(i64::from(at.rem_euclid(REAL_DAY_MS) != 0))
                        .saturating_mul(REAL_DAY_MS)
                } else {
                    at
                }
            }
            Some(Expiration::Date(t)) => t,
            _ => continue,
        };
        if first.is_none_or(|(t, _)| at < t) {
            first = Some((at, &rule.id));
        }
    }
    let (at, id) = first?;
    Some(format!(
        "expiry-date=\"{}\", rule-id=\"{}\"",
        euca_aws::timefmt::format_http_date(crate::meta::millis_to_time(at)),
        euca_aws::encoding::uri_encode(id.as_bytes(), false)
    ))
}

/// PutBucketLifecycleConfiguration (the caller checked the bucket owner).
pub async fn put_config(st: &Arc<State>, r: &mut Req, b: &BucketMeta) -> S3Result<Resp> {
    let node = r.xml_body(256 * 1024).await?;
    let mut cfg = parse_config(&node)?;
    for r in cfg.rules.iter_mut().filter(|r| r.id.is_empty()) {
        // S3 names a rule put without an ID.
        r.id = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            rand::random::<u64>()
        );
    }
    st.set_bucket_config(&b.name, BucketConfig::LIFECYCLE, Some(cfg.to_xml()))
        .await?;
    Ok(empty(StatusCode::OK))
}

/// GetBucketLifecycleConfiguration.
pub fn get_config(b: &BucketMeta) -> S3Result<Resp> {
    match b.config(BucketConfig::LIFECYCLE) {
        Some(doc) => Ok(xml(StatusCode::OK, doc.to_string())),
        None => Err(S3Error::new(
            "NoSuchLifecycleConfiguration",
            404,
            "The lifecycle configuration does not exist",
        )
        .with("BucketName", &b.name)),
    }
}

/// DeleteBucketLifecycle.
pub async fn delete_config(st: &Arc<State>, b: &BucketMeta) -> S3Result<Resp> {
    st.set_bucket_config(&b.name, BucketConfig::LIFECYCLE, None)
        .await?;
    Ok(empty(StatusCode::NO_CONTENT))
}

/// Runs the rules of every bucket every `lifecycle_interval_secs` until `shutdown`.
/// The lease front ends sharing a metadata store take before a lifecycle step.
const LEASE: &str = "lifecycle";

pub async fn worker(st: Arc<State>, mut shutdown: watch::Receiver<bool>) {
    let every = Duration::from_secs(st.cfg.lifecycle_interval_secs.max(1));
    // Front ends on one store take turns: whoever holds the lease runs the pass and
    // renews it before each bucket with rules; if it stops, another takes over once
    // it expires. The holder is this front end (host and data directory), so a
    // restarted one takes its own lease back at once.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let holder = format!("{}:{}", host.trim(), st.cfg.data_dir.display());
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        match run_once(&st, &holder).await {
            Ok(n) if n > 0 => tracing::info!(actions = n, "lifecycle pass"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "lifecycle pass failed"),
        }
    }
}

/// One pass over every bucket with rules; the number of objects, versions, markers
/// and uploads it removed.
pub async fn run_once(st: &Arc<State>, holder: &str) -> S3Result<usize> {
    let day_ms = (st.cfg.lifecycle_day_secs.max(1) as i64) * 1000;
    // Three intervals: renewed before each bucket, so it lapses only when its holder
    // stops (or one bucket takes that long).
    let ttl_ms = (st.cfg.lifecycle_interval_secs.max(1) as i64).saturating_mul(3000);
    let mut done = 0;
    for b in st.meta.buckets().await? {
        let Some(cfg) = LifecycleConfig::of(&b)? else {
            continue;
        };
        if !st.meta.lease(LEASE, holder, ttl_ms).await? {
            break;
        }
        for rule in cfg.rules.iter().filter(|r| r.enabled) {
            done += apply_rule(st, &b, rule, day_ms).await?;
        }
    }
    Ok(done)
}

/// Applies a meta op the worker decided on; a version object lock protects (or one
/// that changed meanwhile) is skipped, not an error.
async fn act(st: &Arc<State>, op: MetaOp) -> S3Result<usize> {
    match st.meta.apply(op).await {
        Ok(out) => {
            crate::handler::free_blobs(st, out.freed_blobs);
            Ok(1)
        }
        Err(
            MetaError::ObjectLocked
            | MetaError::NoSuchKey
            | MetaError::NoSuchUpload
            | MetaError::Changed,
        ) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

async fn apply_rule(st: &Arc<State>, b: &BucketMeta, rule: &Rule, day_ms: i64) -> S3Result<usize> {
    let now = now_millis();
    let mut done = 0;
    let prefix = rule.filter.prefix.as_str();
    let versioned = b.versioning() != Versioning::Unversioned;
    // Current objects past their expiration.
    if let Some(exp) = rule
        .expiration
        .as_ref()
        .filter(|e| **e != Expiration::ExpiredObjectDeleteMarker)
    {
        let mut start = crate::meta::ScanStart::From(prefix.to_string());
        loop {
            let page = st.meta.scan_objects(&b.name, &start, prefix, 1000).await?;
            let Some((last, _)) = page.last() else { break };
            start = crate::meta::ScanStart::After(last.clone());
            for (key, o) in page {
                let due = match exp {
                    Expiration::Days(d) => o.last_modified + d * day_ms <= now,
                    Expiration::Date(t) => *t <= now,
                    Expiration::ExpiredObjectDeleteMarker => false,
                };
                if due && rule.filter.matches(&key, &o) {
                    done += act(
                        st,
                        MetaOp::DeleteObject {
                            bucket: b.name.clone(),
                            by: b.owner.clone(),
                            // Not an object written (or retagged) since the scan.
                            unchanged: Some(FoundObject::of(&o)),
                            key,
                        },
                    )
                    .await?;
                }
            }
        }
    }
    // Noncurrent versions and lone delete markers.
    let markers = rule.expiration == Some(Expiration::ExpiredObjectDeleteMarker);
    if versioned && (rule.noncurrent.is_some() || markers) {
        let mut after: Option<(String, String)> = None;
        // The key being walked: its versions so far (newest first).
        let mut walk: Option<(String, Vec<Version>)> = None;
        loop {
            let page = st
                .meta
                .scan_versions(
                    &b.name,
                    after.as_ref().map(|(k, v)| (k.as_str(), Some(v.as_str()))),
                    prefix,
                    1000,
                )
                .await?;
            let end = page.is_empty();
            if let Some(e) = page.last() {
                after = Some((e.key.clone(), e.version.version_id().to_string()));
            }
            for e in page {
                if walk.as_ref().is_some_and(|(k, _)| *k != e.key) {
                    if let Some((k, vs)) = walk.take() {
                        done += expire_versions(st, b, rule, &k, vs, now, day_ms).await?;
                    }
                }
                walk.get_or_insert_with(|| (e.key.clone(), Vec::new()))
                    .1
                    .push(e.version);
            }
            if end {
                break;
            }
        }
        if let Some((k, vs)) = walk.take() {
            done += expire_versions(st, b, rule, &k, vs, now, day_ms).await?;
        }
    }
    // Incomplete multipart uploads.
    if let Some(days) = rule.abort_multipart_days {
        let mut after: Option<(String, String)> = None;
        loop {
            let page = st
                .meta
                .scan_uploads(
                    &b.name,
                    after.as_ref().map(|(k, u)| (k.as_str(), u.as_str())),
                    prefix,
                    1000,
                )
                .await?;
            let Some(last) = page.last() else { break };
            after = Some((last.key.clone(), last.upload_id.clone()));
            for u in page {
                if u.initiated + days * day_ms <= now {
                    done += act(
                        st,
                        MetaOp::AbortUpload {
                            bucket: b.name.clone(),
                            key: u.key,
                            upload_id: u.upload_id,
                        },
                    )
                    .await?;
                }
            }
        }
    }
    Ok(done)
}

/// One key's versions (newest first): noncurrent ones past `NoncurrentDays` beyond the
/// newest `NewerNoncurrentVersions`, and a delete marker that is all that is left.
async fn expire_versions(
    st: &Arc<State>,
    b: &BucketMeta,
    rule: &Rule,
    key: &str,
    versions: Vec<Version>,
    now: i64,
    day_ms: i64,
) -> S3Result<usize> {
    let mut done = 0;
    let delete = |v: &Version| MetaOp::DeleteVersion {
        bucket: b.name.clone(),
        key: key.to_string(),
        version_id: v.version_id().to_string(),
        bypass_governance: false,
    };
    if let Some((days, keep)) = rule.noncurrent {
        // A version became noncurrent when the next newer one was written; the
        // newest `keep` noncurrent versions stay whatever their age.
        let mut noncurrent_since = None;
        let mut newer_noncurrent = 0;
        for v in &versions {
            let modified = match v {
                Version::Object(o) => o.last_modified,
                Version::DeleteMarker(m) => m.last_modified,
            };
            if let Some(since) = noncurrent_since {
                let matches = match v {
                    Version::Object(o) => rule.filter.matches(key, o),
                    Version::DeleteMarker(_) => rule.filter.tags.is_empty(),
                };
                if newer_noncurrent >= keep && matches && since + days * day_ms <= now {
                    done += act(st, delete(v)).await?;
                }
                newer_noncurrent += 1;
            }
            noncurrent_since = Some(modified);
        }
    }
    if rule.expiration == Some(Expiration::ExpiredObjectDeleteMarker) {
        if let [only @ Version::DeleteMarker(_)] = versions.as_slice() {
            done += act(st, delete(only)).await?;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmlin::parse;

    #[test]
    fn configurations_round_trip_and_refusals() {
        let doc = b"<LifecycleConfiguration><Rule><ID>r1</ID><Filter><And><Prefix>logs/</Prefix><Tag><Key>k</Key><Value>v</Value></Tag><ObjectSizeGreaterThan>10</ObjectSizeGreaterThan></And></Filter><Status>Enabled</Status><Expiration><Days>3</Days></Expiration><NoncurrentVersionExpiration><NoncurrentDays>2</NoncurrentDays><NewerNoncurrentVersions>1</NewerNoncurrentVersions></NoncurrentVersionExpiration></Rule><Rule><Prefix></Prefix><Status>Disabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>1</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule></LifecycleConfiguration>";
        let c = parse_config(&parse(doc).unwrap()).unwrap();
        assert_eq!(c.rules.len(), 2);
        assert_eq!(c.rules[0].filter.prefix, "logs/");
        assert_eq!(c.rules[0].filter.tags, vec![("k".into(), "v".into())]);
        assert_eq!(c.rules[0].noncurrent, Some((2, 1)));
        assert_eq!(
            parse_config(&parse(c.to_xml().as_bytes()).unwrap()).unwrap(),
            c
        );
        // The second rule named its prefix in S3's older form and keeps that form.
        assert!(!c.rules[0].rule_prefix && c.rules[1].rule_prefix);
        assert!(c
            .to_xml()
            .contains("<Rule><Prefix></Prefix><Status>Disabled</Status>"));
        for bad in [
            &b"<LifecycleConfiguration/>"[..],
            b"<LifecycleConfiguration><Rule><Filter/><Status>On</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>",
            b"<LifecycleConfiguration><Rule><Filter/><Status>Enabled</Status></Rule></LifecycleConfiguration>",
            b"<LifecycleConfiguration><Rule><Filter/><Status>Enabled</Status><Expiration><Days>0</Days></Expiration></Rule></LifecycleConfiguration>",
            b"<LifecycleConfiguration><Rule><Filter/><Status>Enabled</Status><Expiration><Date>2030-01-01T10:00:00Z</Date></Expiration></Rule></LifecycleConfiguration>",
            b"<LifecycleConfiguration><Rule><Filter><Prefix>a</Prefix><Tag><Key>k</Key></Tag></Filter><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>",
            b"<LifecycleConfiguration><Rule><ID>x</ID><Filter/><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule><Rule><ID>x</ID><Filter/><Status>Enabled</Status><Expiration><Days>1</Days></Expiration></Rule></LifecycleConfiguration>",
        ] {
            assert!(parse_config(&parse(bad).unwrap()).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        let t = b"<LifecycleConfiguration><Rule><Filter/><Status>Enabled</Status><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition></Rule></LifecycleConfiguration>";
        assert_eq!(
            parse_config(&parse(t).unwrap()).unwrap_err().code,
            "NotImplemented"
        );
        let t = b"<LifecycleConfiguration><Rule><Filter/><Status>Enabled</Status><Transition><Date>1970-08-23T00:55:27Z</Date><StorageClass>GLACIER</StorageClass></Transition></Rule></LifecycleConfiguration>";
        assert_eq!(
            parse_config(&parse(t).unwrap()).unwrap_err().code,
            "InvalidArgument"
        );
    }
}
