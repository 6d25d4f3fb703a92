//! Server access log records (bucket logging): one request as a line of S3's server
//! access log format ([`Record::line`]), and the capped in-memory queue of lines
//! waiting for delivery ([`AccessLogs`]); [`crate::logging`] configures and delivers
//! them.
use crate::meta::{BucketConfig, BucketMeta};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::sync::Notify;

/// Records waiting that wake the delivery task before its interval ends.
pub const FLUSH_AT: usize = 5_000;
/// Bytes waiting (lines, source names and configurations) that wake it too.
pub const FLUSH_AT_BYTES: usize = 4 << 20;
/// Records waiting beyond which new ones are dropped.
pub const MAX_PENDING: usize = 100_000;
/// Bytes waiting beyond which new records are dropped: a line carries the request
/// line, User-Agent, Referer and Host as sent (up to the request head's limit), so
/// the count alone would let anyone make the queue hold gigabytes.
pub const MAX_PENDING_BYTES: usize = 32 << 20;

/// One request's log record, before it is a line.
pub struct Record<'a> {
    pub bucket_owner: &'a str,
    pub bucket: &'a str,
    /// Unix milliseconds when the request arrived.
    pub time: i64,
    pub remote_ip: Option<std::net::IpAddr>,
    pub requester: Option<&'a str>,
    pub request_id: &'a str,
    pub operation: String,
    pub key: Option<&'a str>,
    pub request_line: &'a str,
    pub status: u16,
    pub error_code: Option<&'a str>,
    pub bytes_sent: Option<u64>,
    pub object_size: Option<u64>,
    pub total_ms: u64,
    pub turnaround_ms: u64,
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub version_id: Option<&'a str>,
    pub signature_version: Option<&'a str>,
    pub auth_type: Option<&'a str>,
    pub host: Option<&'a str>,
    pub tls: bool,
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `06/Feb/2019:00:00:38 +0000`.
fn log_time(ms: i64) -> String {
    let t = crate::meta::millis_to_time(ms);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        t.day(),
        MONTHS[usize::from(u8::from(t.month())) - 1],
        t.year(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// A field between quotes: a `"` or a control byte inside would end or break the
/// line, so those (only) are percent-escaped.
fn quoted(v: Option<&str>) -> String {
    match v {
        None => "\"-\"".into(),
        Some(v) => {
            let mut out = String::with_capacity(v.len() + 2);
            out.push('"');
            for c in v.chars() {
                if c == '"' || c.is_control() {
                    let mut buf = [0u8; 4];
                    for b in c.encode_utf8(&mut buf).bytes() {
                        out.push_str(&format!("%{b:02X}"));
                    }
                } else {
                    out.push(c);
                }
            }
            out.push('"');
            out
        }
    }
}

fn dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

impl Record<'_> {
    /// The line in S3's server access log format: bucket owner, bucket, time, remote
    /// IP, requester, request id, operation, key (URL-encoded), "request-URI",
    /// status, error code, bytes sent, object size, total time, turn-around time,
    /// "referer", "user-agent", version id, host id, signature version, cipher suite,
    /// authentication type, host header, TLS version, access point ARN, ACL required.
    pub fn line(&self) -> String {
        let fields = [
            self.bucket_owner.to_string(),
            self.bucket.to_string(),
            format!("[{}]", log_time(self.time)),
            dash(self.remote_ip),
            dash(self.requester),
            self.request_id.to_string(),
            self.operation.clone(),
            dash(
                self.key
                    .map(|k| euca_aws::encoding::uri_encode(k.as_bytes(), true)),
            ),
            quoted(Some(self.request_line)),
            self.status.to_string(),
            dash(self.error_code),
            dash(self.bytes_sent.filter(|n| *n > 0)),
            dash(self.object_size),
            self.total_ms.to_string(),
            self.turnaround_ms.to_string(),
            quoted(self.referer),
            quoted(self.user_agent),
            dash(self.version_id),
            // Host id: S3's x-amz-id-2, which Walrus sets to the request id.
            self.request_id.to_string(),
            dash(self.signature_version),
            "-".into(),
            dash(self.auth_type),
            dash(self.host.map(|h| h.replace(' ', "%20"))),
            if self.tls { "TLSv1.2" } else { "-" }.into(),
            "-".into(),
            "-".into(),
        ];
        fields.join(" ")
    }
}

/// S3's operation name: `REST.<METHOD>.<RESOURCE>` (REST.GET.OBJECT,
/// REST.PUT.ACL, REST.POST.UPLOADS, REST.COPY.OBJECT, ...).
pub fn operation(
    method: &http::Method,
    has_key: bool,
    query: &[(String, String)],
    copy: bool,
) -> String {
    const SUBRESOURCES: &[(&str, &str)] = &[
        ("acl", "ACL"),
        ("tagging", "TAGGING"),
        ("versioning", "VERSIONING"),
        ("logging", "LOGGING_STATUS"),
        ("policy", "BPOLICY"),
        ("policyStatus", "BPOLICY_STATUS"),
        ("cors", "CORS"),
        ("lifecycle", "LIFECYCLE"),
        ("location", "LOCATION"),
        ("versions", "BUCKETVERSIONS"),
        ("object-lock", "OBJECT_LOCK_CONFIGURATION"),
        ("retention", "OBJECT_RETENTION"),
        ("legal-hold", "OBJECT_LEGAL_HOLD"),
        ("attributes", "OBJECT_ATTRIBUTES"),
        ("ownershipControls", "OWNERSHIP_CONTROLS"),
        ("publicAccessBlock", "PUBLIC_ACCESS_BLOCK"),
        ("encryption", "ENCRYPTION"),
        ("delete", "MULTI_OBJECT_DELETE"),
        ("uploads", "UPLOADS"),
    ];
    let has = |n: &str| query.iter().any(|(k, _)| k == n);
    let resource = if let Some((_, r)) = SUBRESOURCES.iter().find(|(n, _)| has(n)) {
        (*r).to_string()
    } else if has("uploadId") {
        if *method == http::Method::PUT {
            "PART".into()
        } else {
            "UPLOAD".into()
        }
    } else if has_key {
        "OBJECT".into()
    } else {
        "BUCKET".into()
    };
    let verb = if copy { "COPY" } else { method.as_str() };
    format!("REST.{verb}.{resource}")
}

/// A record waiting for delivery.
pub(crate) struct Pending {
    pub source: String,
    /// The source's configuration when the request was made, serialized (records of
    /// one source under one configuration go to one object).
    pub config: String,
    pub time: i64,
    pub line: String,
}

/// The records waiting for delivery, and whether any bucket has logging on (when
/// none has, requests skip the lookup altogether).
#[derive(Default)]
pub struct AccessLogs {
    pub(crate) active: AtomicBool,
    /// The records, and the bytes they hold.
    pending: Mutex<(Vec<Pending>, usize)>,
    pub(crate) wake: Notify,
    pub(crate) dropped: AtomicU64,
}

impl AccessLogs {
    /// Whether a request should look up its bucket's logging.
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    /// Queues a record of `source` (never blocks on delivery, never fails).
    pub fn push(&self, source: &BucketMeta, rec: &Record) {
        let Some(config) = source.config(BucketConfig::LOGGING) else {
            return;
        };
        // Formatted before the lock is taken: the lock only guards a push.
        let line = rec.line();
        let cost = line.len() + config.len() + source.name.len();
        let Ok(mut guard) = self.pending.lock() else {
            return;
        };
        let (p, bytes) = &mut *guard;
        if p.len() >= MAX_PENDING || *bytes + cost > MAX_PENDING_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        p.push(Pending {
            source: source.name.clone(),
            config: config.to_string(),
            time: rec.time,
            line,
        });
        *bytes += cost;
        if p.len() >= FLUSH_AT || *bytes >= FLUSH_AT_BYTES {
            self.wake.notify_one();
        }
    }

    pub(crate) fn take(&self) -> Vec<Pending> {
        self.pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p).0)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(user_agent: &str) -> Record<'_> {
        Record {
            bucket_owner: "owner",
            bucket: "b",
            time: 1_549_411_238_000,
            remote_ip: Some("192.0.2.3".parse().unwrap()),
            requester: None,
            request_id: "3E57427F33A59F07",
            operation: operation(&http::Method::GET, true, &[], false),
            key: Some("a b/c"),
            request_line: "GET /b/a%20b/c HTTP/1.1",
            status: 200,
            error_code: None,
            bytes_sent: Some(0),
            object_size: Some(10),
            total_ms: 7,
            turnaround_ms: 6,
            referer: None,
            user_agent: Some(user_agent),
            version_id: None,
            signature_version: Some("SigV4"),
            auth_type: Some("AuthHeader"),
            host: Some("localhost:8773"),
            tls: false,
        }
    }

    #[test]
    fn the_queue_is_capped_in_bytes() {
        let owner = crate::acl::Owner {
            id: "bo".into(),
            display_name: "bo".into(),
        };
        let mut configs = std::collections::BTreeMap::new();
        configs.insert(BucketConfig::LOGGING.to_string(), "{}".to_string());
        let b = BucketMeta {
            name: "b".into(),
            owner: owner.clone(),
            created: 0,
            region: "us-east-1".into(),
            acl: crate::acl::Acl::private(owner),
            configs,
            account_block: None,
        };
        let logs = AccessLogs::default();
        // 1000 records of ~60 KB (a long User-Agent): far fewer than MAX_PENDING,
        // far more bytes than MAX_PENDING_BYTES.
        let ua = "x".repeat(60_000);
        for _ in 0..1000 {
            logs.push(&b, &sample(&ua));
        }
        let kept = logs.take();
        let bytes: usize = kept.iter().map(|p| p.line.len()).sum();
        assert!(!kept.is_empty() && kept.len() < 1000, "{}", kept.len());
        assert!(bytes <= MAX_PENDING_BYTES, "{bytes}");
        assert_eq!(
            logs.dropped.load(Ordering::Relaxed) as usize,
            1000 - kept.len()
        );
        // Taken: the bytes are free again.
        logs.push(&b, &sample(&ua));
        assert_eq!(logs.take().len(), 1);
    }

    #[test]
    fn lines_and_operations() {
        let rec = sample("say \"hi\"\n");
        assert_eq!(
            rec.line(),
            "owner b [06/Feb/2019:00:00:38 +0000] 192.0.2.3 - 3E57427F33A59F07 REST.GET.OBJECT a%20b/c \"GET /b/a%20b/c HTTP/1.1\" 200 - - 10 7 6 \"-\" \"say %22hi%22%0A\" - 3E57427F33A59F07 SigV4 - AuthHeader localhost:8773 - - -"
        );
        let q = |k: &str| vec![(k.to_string(), String::new())];
        assert_eq!(
            operation(&http::Method::PUT, true, &q("uploadId"), false),
            "REST.PUT.PART"
        );
        assert_eq!(
            operation(&http::Method::PUT, true, &[], true),
            "REST.COPY.OBJECT"
        );
        assert_eq!(
            operation(&http::Method::GET, false, &[], false),
            "REST.GET.BUCKET"
        );
        assert_eq!(
            operation(&http::Method::GET, false, &q("logging"), false),
            "REST.GET.LOGGING_STATUS"
        );
    }
}
