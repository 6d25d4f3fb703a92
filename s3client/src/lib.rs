//! The cloud's one S3 client (design.md, "One S3 client"): requests signed with SigV4
//! (the project's signer in `euca-aws`, which shares its canonicalisation with the
//! verifier), bodies streamed from files and to files, retries with backoff on 5xx and
//! connection errors. Used by the bundle commands; snapshots, image install and the
//! cache daemon will use it too.
use base64::Engine;
use bytes::Bytes;
use euca_aws::checksum::ChecksumAlgorithm;
use euca_aws::hash::Md5;
use euca_aws::sign::Signer;
use futures::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

const ATTEMPTS: u32 = 4;
const CHUNK: usize = 256 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum S3ClientError {
    #[error("invalid endpoint {0}")]
    Endpoint(String),
    #[error("{method} {path}: HTTP {status} {code}: {message}")]
    Status {
        method: String,
        path: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("{0}")]
    Http(String),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl S3ClientError {
    /// The S3 error code (e.g. `NoSuchKey`), if the server sent one.
    pub fn code(&self) -> Option<&str> {
        match self {
            S3ClientError::Status { code, .. } => Some(code),
            _ => None,
        }
    }
    /// Whether the server answered 404 (no such key or bucket).
    pub fn is_not_found(&self) -> bool {
        matches!(self, S3ClientError::Status { status: 404, .. })
    }
    fn retryable(&self) -> bool {
        match self {
            S3ClientError::Status { status, .. } => *status >= 500,
            S3ClientError::Http(_) => true,
            _ => false,
        }
    }
}

pub struct S3Client {
    client: Client<HttpConnector, Body>,
    signer: Signer,
    /// Scheme and authority, e.g. `http://127.0.0.1:8773`.
    origin: String,
    host: String,
    /// Path prefix of the service, e.g. `/services/Walrus` (empty for most).
    prefix: String,
}

/// Encodes a key for the request path the way the signer canonicalises it.
fn encode_key(key: &str) -> String {
    euca_aws::encoding::uri_encode(key.as_bytes(), true)
}

fn xml_tag<'a>(body: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(&body[start..end])
}

impl S3Client {
    /// `endpoint` is S3_URL as users have it, e.g. `http://host:8773/` or
    /// `http://host:8773/services/Walrus`.
    pub fn new(
        endpoint: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
    ) -> Result<Self, S3ClientError> {
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| S3ClientError::Endpoint(endpoint.into()))?;
        if uri.scheme_str() != Some("http") {
            return Err(S3ClientError::Endpoint(format!(
                "{endpoint} (only http:// endpoints are supported yet)"
            )));
        }
        let host = uri
            .authority()
            .ok_or_else(|| S3ClientError::Endpoint(endpoint.into()))?
            .to_string();
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        Ok(Self {
            client: Client::builder(TokioExecutor::new()).build(conn),
            signer: Signer {
                access_key: access_key.into(),
                secret_key: secret_key.into(),
                region: region.into(),
                service: "s3".into(),
            },
            origin: format!("http://{host}"),
            host,
            prefix: uri.path().trim_end_matches('/').to_string(),
        })
    }

    fn path(&self, bucket: &str, key: Option<&str>) -> String {
        match key {
            Some(k) => format!("{}/{bucket}/{}", self.prefix, encode_key(k)),
            None => format!("{}/{bucket}", self.prefix),
        }
    }

    /// One signed request; the body is made anew by `body()` for every attempt.
    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &[(&str, String)],
        body: &(dyn Fn() -> futures::future::BoxFuture<'static, Result<(Body, u64), S3ClientError>>
              + Sync),
    ) -> Result<http::Response<hyper::body::Incoming>, S3ClientError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = async {
                let (b, len) = body().await?;
                let mut h = http::HeaderMap::new();
                h.insert(
                    "host",
                    self.host
                        .parse()
                        .map_err(|_| S3ClientError::Endpoint(self.host.clone()))?,
                );
                for (k, v) in headers {
                    let name = http::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|e| S3ClientError::Http(e.to_string()))?;
                    h.insert(
                        name,
                        v.parse().map_err(|_| {
                            S3ClientError::Http(format!("bad header value for {k}"))
                        })?,
                    );
                }
                self.signer.sign(
                    method,
                    path,
                    query,
                    &mut h,
                    euca_aws::sigv4::UNSIGNED_PAYLOAD,
                    time::OffsetDateTime::now_utc(),
                );
                h.insert("content-length", len.into());
                let uri = if query.is_empty() {
                    format!("{}{path}", self.origin)
                } else {
                    format!("{}{path}?{query}", self.origin)
                };
                let mut req = http::Request::builder()
                    .method(method)
                    .uri(uri)
                    .body(b)
                    .map_err(|e| S3ClientError::Http(e.to_string()))?;
                *req.headers_mut() = h;
                let resp = self
                    .client
                    .request(req)
                    .await
                    .map_err(|e| S3ClientError::Http(e.to_string()))?;
                if resp.status().is_success() {
                    return Ok(resp);
                }
                let status = resp.status().as_u16();
                let text = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let text = String::from_utf8_lossy(&text);
                Err(S3ClientError::Status {
                    method: method.into(),
                    path: path.into(),
                    status,
                    code: xml_tag(&text, "Code").unwrap_or("").into(),
                    message: xml_tag(&text, "Message").unwrap_or("").into(),
                })
            }
            .await;
            match result {
                Err(e) if e.retryable() && attempt < ATTEMPTS => {
                    let wait = Duration::from_millis(200 * 2u64.pow(attempt - 1));
                    tracing::warn!(error = %e, attempt, "S3 request failed; retrying in {wait:?}");
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    fn empty() -> futures::future::BoxFuture<'static, Result<(Body, u64), S3ClientError>> {
        Box::pin(async { Ok((Full::new(Bytes::new()).map_err(|e| match e {}).boxed(), 0)) })
    }

    /// Makes sure a bucket exists: creates it unless a HEAD finds it there already,
    /// and succeeds if the caller already owns it. The HEAD comes first because S3
    /// in us-east-1 answers a repeated CreateBucket by its owner with 200 and resets
    /// the bucket's ACL to the request's (private), which would drop the grants the
    /// cloud (the nodes' READ on `euca-images`) or a user set on it.
    pub async fn create_bucket(&self, bucket: &str) -> Result<(), S3ClientError> {
        if self
            .send("HEAD", &self.path(bucket, None), "", &[], &Self::empty)
            .await
            .is_ok()
        {
            return Ok(());
        }
        match self
            .send("PUT", &self.path(bucket, None), "", &[], &Self::empty)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("BucketAlreadyOwnedByYou") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Uploads a file, streaming it, with its Content-MD5 (computed first) and an
    /// optional canned ACL. Returns the ETag.
    pub async fn put_file(
        &self,
        bucket: &str,
        key: &str,
        file: &Path,
        acl: Option<&str>,
    ) -> Result<String, S3ClientError> {
        let (md5, len) = md5_of_file(file).await?;
        let mut headers = vec![(
            "content-md5",
            base64::engine::general_purpose::STANDARD.encode(md5),
        )];
        if let Some(a) = acl {
            headers.push(("x-amz-acl", a.to_string()));
        }
        let file = file.to_path_buf();
        let body =
            move || -> futures::future::BoxFuture<'static, Result<(Body, u64), S3ClientError>> {
                let file = file.clone();
                Box::pin(async move {
                    let f = tokio::fs::File::open(&file).await?;
                    let stream = futures::stream::try_unfold(f, |mut f| async move {
                        let mut buf = vec![0u8; CHUNK];
                        let n = f.read(&mut buf).await?;
                        if n == 0 {
                            return Ok(None);
                        }
                        buf.truncate(n);
                        Ok(Some((http_body::Frame::data(Bytes::from(buf)), f)))
                    });
                    Ok((BodyExt::boxed(StreamBody::new(stream)), len))
                })
            };
        let resp = self
            .send("PUT", &self.path(bucket, Some(key)), "", &headers, &body)
            .await?;
        Ok(etag(&resp))
    }

    /// Uploads an in-memory object with its CRC32C (`x-amz-checksum-crc32c`, which
    /// the server checks before it stores the object, as the AWS SDKs now send by
    /// default instead of Content-MD5: the same end-to-end check for a tenth of
    /// MD5's CPU). The body is cheap to clone (`Bytes`), so every attempt sends it
    /// afresh. Returns the ETag.
    pub async fn put_bytes(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
    ) -> Result<String, S3ClientError> {
        self.put_bytes_with(bucket, key, data, &[]).await
    }

    /// [`Self::put_bytes`] with extra request headers (e.g. `x-amz-grant-read`).
    pub async fn put_bytes_with(
        &self,
        bucket: &str,
        key: &str,
        data: Bytes,
        extra: &[(&str, String)],
    ) -> Result<String, S3ClientError> {
        let crc = ChecksumAlgorithm::Crc32c;
        let mut hasher = crc.hasher();
        hasher.update(&data);
        let mut headers = vec![(crc.header(), hasher.finish_base64())];
        headers.extend(extra.iter().cloned());
        let body =
            move || -> futures::future::BoxFuture<'static, Result<(Body, u64), S3ClientError>> {
                let data = data.clone();
                Box::pin(async move {
                    let len = data.len() as u64;
                    Ok((Full::new(data).map_err(|e| match e {}).boxed(), len))
                })
            };
        let resp = self
            .send("PUT", &self.path(bucket, Some(key)), "", &headers, &body)
            .await?;
        Ok(etag(&resp))
    }

    /// The object's size, or `None` if it does not exist (404).
    pub async fn head(&self, bucket: &str, key: &str) -> Result<Option<u64>, S3ClientError> {
        match self
            .send("HEAD", &self.path(bucket, Some(key)), "", &[], &Self::empty)
            .await
        {
            Ok(resp) => {
                let len = resp
                    .headers()
                    .get("content-length")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .ok_or_else(|| {
                        S3ClientError::Http(format!("HEAD {bucket}/{key}: no Content-Length"))
                    })?;
                Ok(Some(len))
            }
            Err(S3ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Downloads an object into `file` (written to a temp name, then renamed).
    pub async fn get_to_file(
        &self,
        bucket: &str,
        key: &str,
        file: &Path,
    ) -> Result<u64, S3ClientError> {
        let resp = self
            .send("GET", &self.path(bucket, Some(key)), "", &[], &Self::empty)
            .await?;
        let mut tmp_name = file.as_os_str().to_owned();
        tmp_name.push(".download");
        let tmp = std::path::PathBuf::from(tmp_name);
        let mut out = tokio::fs::File::create(&tmp).await?;
        let mut body = resp.into_body().into_data_stream();
        let mut n = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tokio::fs::remove_file(&tmp).await;
                    return Err(S3ClientError::Http(e.to_string()));
                }
            };
            n += chunk.len() as u64;
            out.write_all(&chunk).await?;
        }
        out.sync_all().await?;
        tokio::fs::rename(&tmp, file).await?;
        Ok(n)
    }

    /// Starts a GET of an object and returns its body as a stream of chunks, as
    /// they arrive (nothing is buffered beyond what the connection holds).
    pub async fn get_stream(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<
        impl futures::Stream<Item = Result<Bytes, S3ClientError>> + Send + Unpin,
        S3ClientError,
    > {
        let resp = self
            .send("GET", &self.path(bucket, Some(key)), "", &[], &Self::empty)
            .await?;
        Ok(resp
            .into_body()
            .into_data_stream()
            .map(|c| c.map_err(|e| S3ClientError::Http(e.to_string()))))
    }

    /// Reads a small object into memory (at most `max` bytes).
    pub async fn get_bytes(
        &self,
        bucket: &str,
        key: &str,
        max: usize,
    ) -> Result<Bytes, S3ClientError> {
        let resp = self
            .send("GET", &self.path(bucket, Some(key)), "", &[], &Self::empty)
            .await?;
        let mut body = resp.into_body().into_data_stream();
        let mut out = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| S3ClientError::Http(e.to_string()))?;
            if out.len() + chunk.len() > max {
                return Err(S3ClientError::Http(format!(
                    "{bucket}/{key} is larger than {max} bytes"
                )));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(Bytes::from(out))
    }

    pub async fn delete(&self, bucket: &str, key: &str) -> Result<(), S3ClientError> {
        self.send(
            "DELETE",
            &self.path(bucket, Some(key)),
            "",
            &[],
            &Self::empty,
        )
        .await
        .map(|_| ())
    }

    /// Every object whose key starts with `prefix` (ListObjectsV2, following
    /// continuation tokens), in key order. Keys are asked for URL-encoded and
    /// decoded here, so they come back byte for byte, whitespace included.
    pub async fn list_objects(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<ObjectInfo>, S3ClientError> {
        let enc = |v: &str| euca_aws::encoding::uri_encode(v.as_bytes(), false);
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        // Each page lists at least one key, so this ends; the bound only guards
        // against a server that keeps answering "truncated" with nothing.
        for _ in 0..MAX_LIST_PAGES {
            // Values URI-encoded; the signer canonicalises (decodes, sorts) itself.
            let mut query = String::new();
            if let Some(t) = &token {
                query.push_str(&format!("continuation-token={}&", enc(t)));
            }
            query.push_str(&format!(
                "encoding-type=url&list-type=2&prefix={}",
                enc(prefix)
            ));
            let resp = self
                .send("GET", &self.path(bucket, None), &query, &[], &Self::empty)
                .await?;
            let mut body = resp.into_body().into_data_stream();
            let mut xml = Vec::new();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| S3ClientError::Http(e.to_string()))?;
                if xml.len() + chunk.len() > MAX_LIST_RESPONSE {
                    return Err(S3ClientError::Http(format!(
                        "listing of {bucket} is larger than {MAX_LIST_RESPONSE} bytes per page"
                    )));
                }
                xml.extend_from_slice(&chunk);
            }
            let page = parse_list_page(&xml)?;
            let listed = page.objects.len();
            out.extend(page.objects);
            match page.next {
                Some(t) if page.truncated && listed > 0 => token = Some(t),
                _ => return Ok(out),
            }
        }
        Err(S3ClientError::Http(format!(
            "listing of {bucket}/{prefix} did not end after {MAX_LIST_PAGES} pages"
        )))
    }

    /// The object's ACL document (`?acl`).
    pub async fn get_acl(&self, bucket: &str, key: &str) -> Result<String, S3ClientError> {
        let resp = self
            .send(
                "GET",
                &self.path(bucket, Some(key)),
                "acl=",
                &[],
                &Self::empty,
            )
            .await?;
        let b = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| S3ClientError::Http(e.to_string()))?
            .to_bytes();
        Ok(String::from_utf8_lossy(&b).into_owned())
    }
}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    /// `LastModified`, if the server sent one that parses as RFC 3339.
    pub last_modified: Option<time::OffsetDateTime>,
}

/// Pages a listing may take (1000 keys each: a billion keys).
const MAX_LIST_PAGES: usize = 1_000_000;
/// Largest ListObjectsV2 response page read (1000 keys of 1 KiB, URL-encoded).
const MAX_LIST_RESPONSE: usize = 16 << 20;

struct ListPage {
    objects: Vec<ObjectInfo>,
    truncated: bool,
    next: Option<String>,
}

/// Parses a ListObjectsV2 result asked for with `encoding-type=url`.
fn parse_list_page(xml: &[u8]) -> Result<ListPage, S3ClientError> {
    use quick_xml::events::Event;
    let bad = |m: String| S3ClientError::Http(format!("bad ListObjectsV2 response: {m}"));
    let text = std::str::from_utf8(xml).map_err(|e| bad(e.to_string()))?;
    let mut reader = quick_xml::Reader::from_str(text);
    let mut path: Vec<String> = Vec::new();
    let mut value = String::new();
    let mut page = ListPage {
        objects: Vec::new(),
        truncated: false,
        next: None,
    };
    let mut current: Option<(Option<String>, u64, Option<time::OffsetDateTime>)> = None;
    loop {
        match reader.read_event().map_err(|e| bad(e.to_string()))? {
            Event::Start(e) => {
                let name = String::from(e.local_name().as_ref());
                if name == "Contents" && path.len() == 1 {
                    current = Some((None, 0, None));
                }
                path.push(name);
                value.clear();
            }
            Event::Text(t) => value.push_str(&t.xml10_content()),
            Event::CData(t) => value.push_str(&t.into_inner()),
            Event::GeneralRef(r) => {
                let s = format!("&{};", r.into_inner());
                let s = quick_xml::escape::unescape(&s).map_err(|e| bad(e.to_string()))?;
                value.push_str(&s);
            }
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                match (path.len(), name.as_str(), current.as_mut()) {
                    (1, "IsTruncated", _) => page.truncated = value == "true",
                    (1, "NextContinuationToken", _) => page.next = Some(value.clone()),
                    (1, "Contents", Some(_)) => {
                        if let Some((key, size, last_modified)) = current.take() {
                            let key = key.ok_or_else(|| bad("Contents without Key".into()))?;
                            page.objects.push(ObjectInfo {
                                key,
                                size,
                                last_modified,
                            });
                        }
                    }
                    (2, "Key", Some(c)) => {
                        let raw = euca_aws::encoding::uri_decode(&value);
                        c.0 = Some(String::from_utf8(raw).map_err(|e| bad(e.to_string()))?);
                    }
                    (2, "Size", Some(c)) => {
                        c.1 = value.parse().map_err(|_| bad(format!("Size {value:?}")))?;
                    }
                    (2, "LastModified", Some(c)) => {
                        c.2 = time::OffsetDateTime::parse(
                            &value,
                            &time::format_description::well_known::Rfc3339,
                        )
                        .ok();
                    }
                    _ => {}
                }
                value.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(page)
}

/// The response's ETag without its quotes.
fn etag<B>(resp: &http::Response<B>) -> String {
    resp.headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim_matches('"')
        .to_string()
}

async fn md5_of_file(path: &Path) -> Result<([u8; 16], u64), S3ClientError> {
    let mut f = tokio::fs::File::open(path).await?;
    let mut h = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        len += n as u64;
    }
    Ok((h.finalize(), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_pages_decode_keys_exactly() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>chunks%2F</Prefix><KeyCount>3</KeyCount>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>a&amp;b&#x3d;</NextContinuationToken>
  <Contents><Key>chunks/%20a%0D%0A</Key><LastModified>2026-12-03T13:52:08.000Z</LastModified><Size>4194304</Size></Contents>
  <Contents><Key>_%20</Key><Size>0</Size></Contents>
  <Contents><Key>%E2%82%AC%09</Key><LastModified>garbage</LastModified><Size>7</Size></Contents>
</ListBucketResult>"#;
        let page = parse_list_page(xml).unwrap();
        assert!(page.truncated);
        assert_eq!(page.next.as_deref(), Some("a&b="));
        let keys: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["chunks/ a\r\n", "_ ", "€\t"]);
        assert_eq!(page.objects[0].size, 4 << 20);
        assert_eq!(
            page.objects[0].last_modified.map(|t| t.unix_timestamp()),
            Some(1_796_305_928)
        );
        assert_eq!(page.objects[1].last_modified, None);
        assert_eq!(page.objects[2].last_modified, None);
        assert!(parse_list_page(
            b"<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>"
        )
        .is_err());
    }
}
