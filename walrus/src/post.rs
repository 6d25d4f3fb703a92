//! Browser POST uploads (S3 POST Object): an HTML form posted to the bucket URL as
//! `multipart/form-data`, authorized by a signed policy document in the form itself.
//!
//! The fields before `file` are read (at most [`MAX_PRE_FILE_BYTES`] of them, S3's
//! limit), then — before any byte of the file is stored — the policy's signature
//! (V4: `x-amz-algorithm`/`-credential`/`-date`/`-signature`; V2: `AWSAccessKeyId`/
//! `signature`), its expiration and every condition are checked, and every field must
//! be covered by a condition (S3's rule). A form without a policy is anonymous and
//! needs WRITE for everyone on the bucket. The file part is then streamed into the
//! blob store with the policy's `content-length-range` enforced as it arrives; nothing
//! is committed unless the whole file arrived within the range. Fields after `file`
//! are ignored, as S3 does.
use crate::acl::{Acl, CannedContext, Owner, Permission};
use crate::body::Hashes;
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, load_bucket, set_header, xml, Req, Resp, MAX_KEY_BYTES};
use crate::meta::{now_millis, BlobRef, ContentHeaders, ObjectData, ObjectMeta};
use crate::state::State;
use base64::Engine;
use bytes::Bytes;
use euca_aws::auth::PostFormSignature;
use euca_aws::credential::AuthConfig;
use euca_aws::encoding::uri_encode;
use euca_aws::xml::XmlWriter;
use http::StatusCode;
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use time::OffsetDateTime;

/// The most bytes of field values (names included) before `file` (S3: 20 KiB).
pub const MAX_PRE_FILE_BYTES: usize = 20 * 1024;
/// The most bytes of the body that may be taken in before the file part begins:
/// the fields, their part headers and whatever of the file the parser read ahead.
/// Bounds what the form parser buffers while it looks for part boundaries.
const MAX_PRE_FILE_STREAM: u64 = 2 << 20;
/// Most fields before `file` (a form has a dozen or so).
const MAX_FIELDS: usize = 1000;
/// Form framing allowed on top of the largest object.
const FORM_OVERHEAD: u64 = 1 << 20;
/// Most bytes of `x-amz-meta-*` (names and values), as PutObject.
const MAX_USER_META: usize = 2048;

/// The file part's MD5 (ETag) and CRC64NVME (S3's default checksum: a browser
/// upload declares none): computed in place while the file is small, on a
/// blocking thread (in parallel with receiving) once it is past [`OFFLOAD_AFTER`].
enum FileDigest {
    Inline(Box<Hashes>),
    Offloaded {
        tx: tokio::sync::mpsc::Sender<Bytes>,
        handle: tokio::task::JoinHandle<Hashes>,
    },
}

const OFFLOAD_AFTER: u64 = 1 << 20;

impl FileDigest {
    async fn update(&mut self, seen: u64, chunk: &Bytes) -> S3Result<()> {
        match self {
            FileDigest::Inline(h) => {
                h.update(chunk);
                if seen >= OFFLOAD_AFTER {
                    let h = std::mem::replace(h.as_mut(), Hashes::new(None));
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
                    let handle = tokio::task::spawn_blocking(move || {
                        let mut h = h;
                        while let Some(b) = rx.blocking_recv() {
                            h.update(&b);
                        }
                        h
                    });
                    *self = FileDigest::Offloaded { tx, handle };
                }
                Ok(())
            }
            FileDigest::Offloaded { tx, .. } => tx
                .send(chunk.clone())
                .await
                .map_err(|_| S3Error::internal("hashing thread stopped")),
        }
    }

    /// The MD5 and the CRC64NVME (base64).
    async fn finish(self) -> S3Result<([u8; 16], String)> {
        let h = match self {
            FileDigest::Inline(h) => *h,
            FileDigest::Offloaded { tx, handle } => {
                drop(tx);
                handle.await.map_err(S3Error::internal)?
            }
        };
        let crc = h.checksum.map(|c| c.finish_base64()).unwrap_or_default();
        Ok((h.md5.finalize(), crc))
    }
}

/// Fields no policy condition needs to cover.
fn exempt(name_lower: &str) -> bool {
    matches!(
        name_lower,
        "file" | "policy" | "x-amz-signature" | "signature" | "awsaccesskeyid"
    ) || name_lower.starts_with("x-ignore-")
}

fn policy_denied(why: impl std::fmt::Display) -> S3Error {
    S3Error::new(
        "AccessDenied",
        403,
        format!("Invalid according to Policy: {why}"),
    )
}

fn invalid_policy(why: &str) -> S3Error {
    S3Error::new(
        "InvalidPolicyDocument",
        400,
        format!("Invalid Policy: {why}"),
    )
}

fn missing_field(name: &'static str) -> S3Error {
    S3Error::invalid_argument(format!(
        "Bucket POST must contain a field named '{name}'.  If it is specified, please check the order of the fields."
    ))
    .with("ArgumentName", name)
}

/// One condition of a POST policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    /// The field (lower-case name) equals the value exactly.
    Eq(String, String),
    /// The field starts with the prefix.
    StartsWith(String, String),
    /// The file's size is within the range, inclusive.
    LengthRange(u64, u64),
}

impl Condition {
    /// The condition as S3 quotes it in a refusal.
    fn describe(&self) -> String {
        match self {
            Condition::Eq(f, v) => format!("[\"eq\", \"${f}\", \"{v}\"]"),
            Condition::StartsWith(f, v) => format!("[\"starts-with\", \"${f}\", \"{v}\"]"),
            Condition::LengthRange(a, b) => format!("[\"content-length-range\", {a}, {b}]"),
        }
    }
    fn field(&self) -> Option<&str> {
        match self {
            Condition::Eq(f, _) | Condition::StartsWith(f, _) => Some(f),
            Condition::LengthRange(..) => None,
        }
    }
}

/// A decoded POST policy document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostPolicy {
    pub expiration: OffsetDateTime,
    pub conditions: Vec<Condition>,
}

/// `"$name"` → `name` (lower-case: form field names are case-insensitive).
fn field_ref(v: &serde_json::Value) -> S3Result<String> {
    v.as_str()
        .and_then(|s| s.strip_prefix('$'))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| invalid_policy("Condition field names must start with '$'."))
}

/// A number or a string holding one (both are seen in the wild).
fn json_u64(v: &serde_json::Value) -> S3Result<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .ok_or_else(|| invalid_policy("Invalid content-length-range."))
}

impl PostPolicy {
    /// Decodes the form's `policy` field (base64 JSON).
    pub fn parse(policy_b64: &str) -> S3Result<Self> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(policy_b64.as_bytes())
            .map_err(|_| invalid_policy("Invalid Policy document encoding."))?;
        let doc: serde_json::Value =
            serde_json::from_slice(&raw).map_err(|_| invalid_policy("Invalid JSON."))?;
        let exp = doc
            .get("expiration")
            .ok_or_else(|| invalid_policy("Policy missing expiration."))?;
        // ISO 8601 in UTC, as S3 takes it ("2007-12-01T12:00:00.000Z"): RFC 3339 would
        // also take a space for the `T` and any offset.
        let expiration = exp
            .as_str()
            .filter(|s| s.as_bytes().get(10) == Some(&b'T') && s.ends_with('Z'))
            .and_then(|s| {
                OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
            })
            .ok_or_else(|| invalid_policy("Invalid 'expiration' value."))?;
        let list = doc
            .get("conditions")
            .and_then(|c| c.as_array())
            .ok_or_else(|| invalid_policy("Policy missing conditions."))?;
        let mut conditions = Vec::new();
        for c in list {
            match c {
                serde_json::Value::Object(m) => {
                    if m.is_empty() {
                        return Err(invalid_policy("Invalid Condition: {}"));
                    }
                    for (k, v) in m {
                        let v = v
                            .as_str()
                            .ok_or_else(|| invalid_policy("Condition values must be strings."))?;
                        conditions.push(Condition::Eq(k.to_ascii_lowercase(), v.to_string()));
                    }
                }
                serde_json::Value::Array(a) => {
                    let op = a.first().and_then(|o| o.as_str()).unwrap_or("");
                    let c = match (op.to_ascii_lowercase().as_str(), a.len()) {
                        ("eq", 3) | ("starts-with", 3) => {
                            let f = field_ref(&a[1])?;
                            let v = a[2].as_str().ok_or_else(|| {
                                invalid_policy("Condition values must be strings.")
                            })?;
                            if op.eq_ignore_ascii_case("eq") {
                                Condition::Eq(f, v.to_string())
                            } else {
                                Condition::StartsWith(f, v.to_string())
                            }
                        }
                        ("content-length-range", 3) => {
                            let (lo, hi) = (json_u64(&a[1])?, json_u64(&a[2])?);
                            if lo > hi {
                                return Err(invalid_policy("Invalid content-length-range."));
                            }
                            Condition::LengthRange(lo, hi)
                        }
                        _ => {
                            return Err(invalid_policy(&format!(
                                "Invalid Condition: {}",
                                serde_json::Value::Array(a.clone())
                            )))
                        }
                    };
                    conditions.push(c);
                }
                _ => return Err(invalid_policy("Invalid Condition.")),
            }
        }
        Ok(Self {
            expiration,
            conditions,
        })
    }

    /// Checks everything but the file's size: expiration, every condition against the
    /// fields (`value_of` answers a lower-case field name; a field not sent is empty),
    /// and that every field sent is covered by a condition. Returns the size range.
    pub fn check(
        &self,
        now: OffsetDateTime,
        sent: &[String],
        value_of: impl Fn(&str) -> String,
    ) -> S3Result<(u64, u64)> {
        if now >= self.expiration {
            return Err(policy_denied("Policy expired."));
        }
        let mut range = (0u64, u64::MAX);
        for c in &self.conditions {
            let ok = match c {
                Condition::Eq(f, v) => value_of(f) == *v,
                // S3: a Content-Type may list several types, each must match.
                Condition::StartsWith(f, p) if f == "content-type" => value_of(f)
                    .split(',')
                    .all(|t| t.trim_start_matches(' ').starts_with(p.as_str())),
                Condition::StartsWith(f, p) => value_of(f).starts_with(p.as_str()),
                Condition::LengthRange(lo, hi) => {
                    range = (range.0.max(*lo), range.1.min(*hi));
                    true
                }
            };
            if !ok {
                return Err(policy_denied(format!(
                    "Policy Condition failed: {}",
                    c.describe()
                )));
            }
        }
        for name in sent {
            if !exempt(name) && !self.conditions.iter().any(|c| c.field() == Some(name)) {
                return Err(policy_denied(format!("Extra input fields: {name}")));
            }
        }
        Ok(range)
    }
}

/// The form fields before `file`, names as sent.
/// How much of an upload past its size limit is read (and dropped) before the
/// answer, so the client sees the 400 and not a reset.
const POST_DRAIN_MAX: u64 = 16 << 20;

struct Fields(Vec<(String, String)>);

impl Fields {
    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Maps a form-parsing error back to the S3 error that caused it, if the body stream
/// failed (too large, too slow, cut short); otherwise the form is malformed.
fn form_error(e: multer::Error) -> S3Error {
    if let multer::Error::StreamReadFailed(inner) = &e {
        if let Some(s3) = inner.downcast_ref::<S3Error>() {
            return s3.clone();
        }
    }
    S3Error::new(
        "MalformedPOSTRequest",
        400,
        "The body of your POST request is not well-formed multipart/form-data.",
    )
}

fn pre_data_too_large() -> S3Error {
    S3Error::new(
        "MaxPostPreDataLengthExceeded",
        400,
        "Your POST request fields preceding the upload file were too large.",
    )
    .with("MaxPostPreDataLengthBytes", MAX_PRE_FILE_BYTES.to_string())
}

/// PostObject: a browser form upload to the bucket URL.
pub async fn post_object(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "PostObject";
    let bucket = load_bucket(st, r.bucket()).await?;
    let boundary = r
        .header("content-type")
        .and_then(|ct| multer::parse_boundary(ct).ok())
        .ok_or_else(|| {
            S3Error::precondition_failed(
                "Bucket POST must be of the enclosure-type multipart/form-data",
            )
        })?;
    // Who the upload is by is decided by the form alone (its signed policy), never by
    // request-level credentials.
    r.principal = None;

    // The raw body, not a `VerifiedBody`: a form's authority is its signed policy, not a
    // request signature, so nothing is verified over the whole body, and hashing all of
    // it would double the work done for the file. Same idle timeout and a cap.
    let limit = st.cfg.max_put_bytes.saturating_add(FORM_OVERHEAD);
    let declared = r
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(crate::body::entity_too_large());
    }
    let body = r
        .body
        .take()
        .ok_or_else(|| S3Error::internal("body taken twice"))?;
    let in_file = Arc::new(AtomicBool::new(false));
    let taken = Arc::new(AtomicU64::new(0));
    let (flag, count) = (in_file.clone(), taken.clone());
    let stream = futures::stream::try_unfold(body, move |mut b| {
        let (flag, count) = (flag.clone(), count.clone());
        async move {
            loop {
                let frame = tokio::time::timeout(crate::body::BODY_IDLE_TIMEOUT, b.frame())
                    .await
                    .map_err(|_| {
                        S3Error::new("RequestTimeout", 400, "Your socket connection to the server was not read from or written to within the timeout period.")
                    })?;
                let data = match frame {
                    None => return Ok(None),
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "request body failed");
                        return Err(S3Error::incomplete_body());
                    }
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                };
                let n = count.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
                if n > limit {
                    return Err(crate::body::entity_too_large());
                }
                if !flag.load(Ordering::Relaxed) && n > MAX_PRE_FILE_STREAM {
                    return Err(pre_data_too_large());
                }
                return Ok(Some((data, b)));
            }
        }
    });
    let mut form = multer::Multipart::new(stream, boundary);

    // The fields before `file`.
    let mut fields = Fields(Vec::new());
    let mut pre = 0usize;
    let mut seen = std::collections::HashSet::new();
    let mut file = loop {
        let Some(mut field) = form.next_field().await.map_err(form_error)? else {
            return Err(S3Error::invalid_argument(
                "POST requires exactly one file upload per request.",
            )
            .with("ArgumentName", "file"));
        };
        let name = field.name().unwrap_or("").to_string();
        // Empty parts cost no field bytes: their number is capped on its own.
        if name.is_empty() || seen.len() >= MAX_FIELDS {
            return Err(S3Error::invalid_argument(
                "A form field has no name, or the form has too many fields.",
            ));
        }
        if name.eq_ignore_ascii_case("file") {
            in_file.store(true, Ordering::Relaxed);
            break field;
        }
        pre += name.len();
        let mut value = Vec::new();
        while let Some(chunk) = field.chunk().await.map_err(form_error)? {
            pre += chunk.len();
            if pre > MAX_PRE_FILE_BYTES {
                return Err(pre_data_too_large());
            }
            value.extend_from_slice(&chunk);
        }
        let value = String::from_utf8(value).map_err(|_| {
            S3Error::invalid_argument(format!("The value of the form field {name} is not UTF-8."))
        })?;
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(S3Error::invalid_argument(format!(
                "The form field {name} appears more than once."
            )));
        }
        fields.0.push((name, value));
    };

    // The key, with `${filename}` replaced by the name of the uploaded file.
    let key_field = fields.get("key").ok_or_else(|| missing_field("key"))?;
    let key = key_field.replace("${filename}", file.file_name().unwrap_or(""));
    if key.is_empty() {
        return Err(
            S3Error::invalid_argument("User key must have a length greater than 0.")
                .with("ArgumentName", "key"),
        );
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(S3Error::new("KeyTooLongError", 400, "Your key is too long")
            .with("MaxSizeAllowed", MAX_KEY_BYTES.to_string()));
    }

    // Who signed the policy, and what it allows: all before a byte is stored.
    let (principal, range) = match fields.get("policy") {
        None => {
            if [
                "x-amz-signature",
                "signature",
                "awsaccesskeyid",
                "x-amz-credential",
            ]
            .iter()
            .any(|f| fields.get(f).is_some())
            {
                return Err(missing_field("policy"));
            }
            (None, (0, u64::MAX))
        }
        Some(policy) => {
            let sig = if let Some(algorithm) = fields.get("x-amz-algorithm") {
                PostFormSignature::V4 {
                    algorithm,
                    credential: fields
                        .get("x-amz-credential")
                        .ok_or_else(|| missing_field("x-amz-credential"))?,
                    amz_date: fields
                        .get("x-amz-date")
                        .ok_or_else(|| missing_field("x-amz-date"))?,
                    signature: fields
                        .get("x-amz-signature")
                        .ok_or_else(|| missing_field("x-amz-signature"))?,
                }
            } else if let Some(access_key) = fields.get("AWSAccessKeyId") {
                PostFormSignature::V2 {
                    access_key,
                    signature: fields
                        .get("signature")
                        .ok_or_else(|| missing_field("signature"))?,
                }
            } else {
                return Err(missing_field("AWSAccessKeyId"));
            };
            let p = euca_aws::auth::verify_post_policy(
                policy,
                sig,
                st.identity.as_ref(),
                &AuthConfig::s3(&st.cfg.region),
            )
            .await?;
            let doc = PostPolicy::parse(policy)?;
            let sent: Vec<String> = fields
                .0
                .iter()
                .map(|(k, _)| k.to_ascii_lowercase())
                .collect();
            let range = doc.check(OffsetDateTime::now_utc(), &sent, |f| match f {
                "bucket" => bucket.name.clone(),
                "key" => key.clone(),
                other => fields.get(other).unwrap_or("").to_string(),
            })?;
            (Some(p), range)
        }
    };
    // The form's signer (or anonymous) against the bucket policy and ACL, as PutObject.
    r.principal = principal;
    crate::authz::check(
        r,
        &bucket,
        "s3:PutObject",
        Some(&key),
        crate::authz::AclRule::Grant(&bucket.acl, Permission::Write),
    )?;
    crate::system::check_writable(st, r)?;

    let writer = r
        .principal
        .as_ref()
        .map(Owner::of)
        .unwrap_or_else(|| bucket.owner.clone());
    let (owner, fixed) =
        crate::ownership::new_object_owner(&bucket, writer, fields.get("acl"), false)?;
    let acl = match (fixed, fields.get("acl")) {
        (Some(acl), _) => acl,
        (None, None) => Acl::private(owner.clone()),
        (None, Some(c)) => {
            let ctx = CannedContext {
                system_id: &st.system_id,
                bucket_owner: Some(&bucket.owner),
            };
            Acl::canned(c, owner.clone(), &ctx)
                .ok_or_else(|| S3Error::invalid_argument(format!("Unknown canned ACL {c}")))?
        }
    };
    crate::authz::check_acl_allowed(&bucket, &acl)?;
    let g = |n: &str| fields.get(n).map(String::from);
    let headers = ContentHeaders {
        content_type: g("content-type"),
        content_encoding: g("content-encoding"),
        content_disposition: g("content-disposition"),
        content_language: g("content-language"),
        cache_control: g("cache-control"),
        expires: g("expires"),
        website_redirect: g("x-amz-website-redirect-location"),
    };
    let mut user_meta: Vec<(String, String)> = fields
        .0
        .iter()
        .filter_map(|(k, v)| {
            let lower = k.to_ascii_lowercase();
            lower
                .strip_prefix("x-amz-meta-")
                .map(|n| (n.to_string(), v.clone()))
        })
        .collect();
    if user_meta
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum::<usize>()
        > MAX_USER_META
    {
        return Err(S3Error::new(
            "MetadataTooLarge",
            400,
            "Your metadata headers exceed the maximum allowed metadata size.",
        ));
    }
    user_meta.sort();
    // Tags (a `Tagging` document in the `tagging` field) and object lock (the bucket's
    // default retention) as for PutObject.
    let tags = match fields.get("tagging") {
        None => Vec::new(),
        Some(doc) => crate::tags::from_xml(
            &crate::xmlin::parse(doc.as_bytes())?,
            crate::tags::TagTarget::Object,
        )?,
    };
    let (retention, legal_hold) = crate::objectlock::for_new_object(r, &bucket)?;
    // Server-side encryption: the form's SSE-C key (checked as PUT's headers are:
    // algorithm, key, its MD5, TLS) or `x-amz-server-side-encryption` (with
    // `…-aws-kms-key-id` for aws:kms), else the bucket default.
    let customer = crate::sse::form_customer_key(st, r, |n| fields.get(n))?;
    let enc = crate::sse::for_post(
        st,
        fields.get("x-amz-server-side-encryption"),
        fields.get("x-amz-server-side-encryption-aws-kms-key-id"),
        customer,
        &bucket,
    )
    .await?;
    let inline_max = if enc.is_some() {
        0
    } else {
        st.cfg.inline_max_bytes
    };

    // The file, streamed, within the policy's range and the server's cap.
    let max = range.1.min(st.cfg.max_put_bytes);
    let too_large = || {
        S3Error::new(
            "EntityTooLarge",
            400,
            "Your proposed upload exceeds the maximum allowed size",
        )
        .with("MaxSizeAllowed", max.to_string())
    };
    let mut digest = FileDigest::Inline(Box::new(Hashes::new(Some(
        crate::checksums::DEFAULT_ALGORITHM,
    ))));
    let mut size = 0u64;
    let mut head: Vec<u8> = Vec::new();
    let mut writer: Option<crate::blob::BlobWriter> = None;
    let streamed: S3Result<()> = async {
        while let Some(chunk) = file.chunk().await.map_err(form_error)? {
            size += chunk.len() as u64;
            if size > max {
                // Read and drop what the client is still sending (a bounded amount,
                // for a bounded time), so it reads this answer rather than a reset
                // of a connection closed with its data unread.
                let drain = async {
                    let mut extra = 0u64;
                    while extra < POST_DRAIN_MAX {
                        match file.chunk().await {
                            Ok(Some(c)) => extra += c.len() as u64,
                            _ => break,
                        }
                    }
                };
                let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
                return Err(too_large());
            }
            st.metrics
                .bytes_in
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            digest.update(size, &chunk).await?;
            match writer.as_mut() {
                None if head.len() + chunk.len() <= inline_max => head.extend_from_slice(&chunk),
                None => {
                    // Encrypted as written; nothing is inlined then (`head` is empty).
                    let key = enc.as_ref().map(|e| &e.key);
                    let mut w = crate::sse_keys::create_blob(&st.blobs, key).await?;
                    let first = Bytes::from(std::mem::take(&mut head));
                    // Kept before the writes so a failed write is aborted below.
                    let res = async {
                        if !first.is_empty() {
                            w.write(first).await?;
                        }
                        w.write(chunk).await
                    }
                    .await;
                    writer = Some(w);
                    res?;
                }
                Some(w) => w.write(chunk).await?,
            }
        }
        if size < range.0 {
            return Err(S3Error::new(
                "EntityTooSmall",
                400,
                "Your proposed upload is smaller than the minimum allowed size",
            )
            .with("MinSizeAllowed", range.0.to_string()));
        }
        Ok(())
    }
    .await;
    if let Err(e) = streamed {
        if let Some(w) = writer {
            w.abort().await;
        }
        return Err(e);
    }
    drop(file);
    drop(form);
    let data = match writer {
        None => ObjectData::Inline(head),
        Some(w) => {
            let size = w.size();
            let id = w.finish().await?;
            ObjectData::Blobs(vec![BlobRef { id, size }])
        }
    };
    let (md5, crc) = digest.finish().await?;
    let etag = hex::encode(md5);
    let meta = ObjectMeta {
        size,
        etag: etag.clone(),
        last_modified: now_millis(),
        owner,
        headers,
        user_meta,
        checksums: vec![(crate::checksums::DEFAULT_ALGORITHM.name().to_string(), crc)],
        acl,
        data,
        part_sizes: Vec::new(),
        checksum_type: Some(
            euca_aws::checksum::ChecksumType::FullObject
                .name()
                .to_string(),
        ),
        part_checksums: Vec::new(),
        tags,
        version_id: None,
        retention,
        legal_hold,
        sse: enc.as_ref().map(|e| e.sse.clone()),
    };
    r.key = Some(key.clone());
    let version = crate::api_object::put::commit_object(st, r, meta, None).await?;
    let mut resp = respond(r, &fields, &key, &etag)?;
    crate::handler::set_written_version_header(resp.headers_mut(), version.as_deref())?;
    if let Some(e) = &enc {
        e.set_headers(resp.headers_mut())?;
    }
    Ok(resp)
}

/// The answer to a stored upload: a redirect, or the status the form asked for.
fn respond(r: &Req, fields: &Fields, key: &str, etag: &str) -> S3Result<Resp> {
    let bucket = r.bucket();
    let quoted = format!("\"{etag}\"");
    let redirect = fields
        .get("success_action_redirect")
        .or_else(|| fields.get("redirect"))
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
    if let Some(url) = redirect {
        let sep = if url.contains('?') { '&' } else { '?' };
        let location = format!(
            "{url}{sep}bucket={}&key={}&etag={}",
            uri_encode(bucket.as_bytes(), false),
            uri_encode(key.as_bytes(), false),
            uri_encode(quoted.as_bytes(), false)
        );
        let mut resp = empty(StatusCode::SEE_OTHER);
        set_header(resp.headers_mut(), "location", &location)?;
        set_header(resp.headers_mut(), "etag", &quoted)?;
        return Ok(resp);
    }
    let host = r.header("host").unwrap_or("localhost");
    let vhost = r
        .header("host")
        .is_some_and(|h| h.starts_with(&format!("{bucket}.")));
    let location = if vhost {
        format!("http://{host}/{}", uri_encode(key.as_bytes(), true))
    } else {
        format!(
            "http://{host}/{}/{}",
            uri_encode(bucket.as_bytes(), false),
            uri_encode(key.as_bytes(), true)
        )
    };
    let mut resp = match fields.get("success_action_status") {
        Some("200") => empty(StatusCode::OK),
        Some("201") => {
            let mut w = XmlWriter::new();
            w.open("PostResponse")
                .elem("Location", &location)
                .elem("Bucket", bucket)
                .elem("Key", key)
                .elem("ETag", &quoted);
            xml(StatusCode::CREATED, w.finish())
        }
        _ => empty(StatusCode::NO_CONTENT),
    };
    set_header(resp.headers_mut(), "etag", &quoted)?;
    set_header(resp.headers_mut(), "location", &location)?;
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn policy_parse_and_check() {
        let p = PostPolicy::parse(&b64(r#"{"expiration":"2030-01-01T00:00:00.000Z","conditions":[{"bucket":"b"},["starts-with","$key","up/"],["eq","$Content-Type","text/plain"],["content-length-range",1,"10"],{"x-amz-meta-a":"1"}]}"#)).unwrap();
        assert_eq!(p.conditions.len(), 5);
        // Operators and field names are case-insensitive; values are not.
        let ci = PostPolicy::parse(&b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[{"bUcKeT":"B"},["StArTs-WiTh","$KeY","Up/"]]}"#)).unwrap();
        assert_eq!(
            ci.conditions,
            vec![
                Condition::Eq("bucket".into(), "B".into()),
                Condition::StartsWith("key".into(), "Up/".into())
            ]
        );
        let now = OffsetDateTime::now_utc();
        let vals = |f: &str| match f {
            "bucket" => "b".to_string(),
            "key" => "up/x".to_string(),
            "content-type" => "text/plain".to_string(),
            "x-amz-meta-a" => "1".to_string(),
            _ => String::new(),
        };
        let sent: Vec<String> = [
            "key",
            "content-type",
            "x-amz-meta-a",
            "policy",
            "x-ignore-z",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(p.check(now, &sent, vals).unwrap(), (1, 10));
        // A field no condition names.
        let mut extra = sent.clone();
        extra.push("acl".into());
        let e = p.check(now, &extra, vals).unwrap_err();
        assert_eq!((e.code, e.status), ("AccessDenied", 403));
        assert!(
            e.message.contains("Extra input fields: acl"),
            "{}",
            e.message
        );
        // A key outside the prefix.
        let e = p
            .check(now, &sent, |f| {
                if f == "key" {
                    "other".into()
                } else {
                    vals(f)
                }
            })
            .unwrap_err();
        assert!(e.message.contains("starts-with"), "{}", e.message);
        // Content-Type: each of a list must match a starts-with.
        let ct = PostPolicy::parse(&b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["starts-with","$Content-Type","image/"]]}"#)).unwrap();
        let with = |v: &'static str| {
            move |f: &str| {
                if f == "content-type" {
                    v.to_string()
                } else {
                    String::new()
                }
            }
        };
        let sent = vec!["content-type".to_string()];
        assert!(ct.check(now, &sent, with("image/png, image/jpeg")).is_ok());
        assert!(ct.check(now, &sent, with("image/png, text/html")).is_err());
        // Expired.
        let later = OffsetDateTime::parse(
            "2030-01-01T00:00:00Z",
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        let e = p.check(later, &sent, vals).unwrap_err();
        assert!(e.message.contains("Policy expired"), "{}", e.message);

        for bad in [
            "not base64!",
            &b64("{}"),
            &b64(r#"{"expiration":"soon","conditions":[]}"#),
            &b64(r#"{"expiration":"2030-01-01 00:00:00.000Z","conditions":[]}"#),
            &b64(r#"{"expiration":"2030-01-01T00:00:00+00:00","conditions":[]}"#),
            &b64(r#"{"expiration":"2030-01-01T00:00:00Z"}"#),
            &b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["in","$key","a"]]}"#),
            &b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[{}]}"#),
            &b64(r#"{"EXPIRATION":"2030-01-01T00:00:00Z","conditions":[]}"#),
            &b64(
                r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["content-length-range",0]]}"#,
            ),
            &b64(
                r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["content-length-range",-1,0]]}"#,
            ),
            &b64(r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["eq","key","a"]]}"#),
            &b64(
                r#"{"expiration":"2030-01-01T00:00:00Z","conditions":[["content-length-range",5,1]]}"#,
            ),
        ] {
            let e = PostPolicy::parse(bad).unwrap_err();
            assert_eq!(e.code, "InvalidPolicyDocument", "{bad}");
        }
    }
}
