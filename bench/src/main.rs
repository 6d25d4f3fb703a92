//! walrus-bench: a small S3 load generator. Signs with SigV4 (UNSIGNED-PAYLOAD, so
//! the client does no hashing), streams bodies from memory and discards what it reads,
//! so the server is what gets measured.
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Parser;
use euca_aws::sign::Signer;
use futures::StreamExt;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use md5::Digest;
use std::sync::Arc;
use std::time::Instant;

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

#[derive(Parser, Clone)]
struct Args {
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    access_key: String,
    #[arg(long)]
    secret_key: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "bench")]
    bucket: String,
    /// Comma-separated: md5,put,get,mpput,rangeget,small-put,small-get,concurrent-put
    #[arg(long, default_value = "md5,put,get,mpput,rangeget,small-put,small-get")]
    scenarios: String,
    /// Size of the large object in MiB.
    #[arg(long, default_value_t = 2048)]
    large_mib: u64,
    /// Number of small (4 KiB) objects.
    #[arg(long, default_value_t = 20000)]
    small_count: usize,
    /// Concurrent 256 MiB PUTs in `concurrent-put`.
    #[arg(long, default_value_t = 16)]
    concurrent: usize,
    #[arg(long, default_value_t = 256)]
    concurrent_mib: u64,
    /// Label printed in every result line.
    #[arg(long, default_value = "server")]
    label: String,
}

struct S3 {
    client: Client<HttpConnector, Body>,
    signer: Signer,
    base: String,
    host: String,
}

const CHUNK: usize = 1 << 20;
const MIB: u64 = 1 << 20;

fn pattern() -> Bytes {
    static P: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
    P.get_or_init(make_pattern).clone()
}

/// Incompressible-looking bytes (xorshift), generated once.
fn make_pattern() -> Bytes {
    let mut v = vec![0u8; CHUNK];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for b in v.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Bytes::from(v)
}

fn body_of(len: u64) -> Body {
    let chunk = pattern();
    let n_full = len / CHUNK as u64;
    let rem = (len % CHUNK as u64) as usize;
    let s = futures::stream::iter(
        (0..n_full)
            .map(move |_| chunk.clone())
            .chain((rem > 0).then(|| pattern().slice(..rem))),
    );
    BodyExt::boxed(StreamBody::new(
        s.map(|b| Ok::<_, std::convert::Infallible>(http_body::Frame::data(b))),
    ))
}

impl S3 {
    fn new(a: &Args) -> Result<Self> {
        let uri: http::Uri = a.endpoint.parse()?;
        let host = uri
            .authority()
            .context("endpoint needs host:port")?
            .to_string();
        let mut conn = HttpConnector::new();
        conn.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(64)
            .build(conn);
        Ok(Self {
            client,
            signer: Signer {
                access_key: a.access_key.clone(),
                secret_key: a.secret_key.clone(),
                region: a.region.clone(),
                service: "s3".into(),
            },
            base: a.endpoint.trim_end_matches('/').to_string(),
            host,
        })
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, String)],
        body: Body,
        len: Option<u64>,
    ) -> Result<http::Response<hyper::body::Incoming>> {
        let mut h = http::HeaderMap::new();
        h.insert("host", self.host.parse()?);
        for (k, v) in extra {
            h.insert(http::HeaderName::from_bytes(k.as_bytes())?, v.parse()?);
        }
        self.signer.sign(
            method,
            path,
            query,
            &mut h,
            euca_aws::sigv4::UNSIGNED_PAYLOAD,
            time::OffsetDateTime::now_utc(),
        );
        if let Some(l) = len {
            h.insert("content-length", l.to_string().parse()?);
        }
        let uri = if query.is_empty() {
            format!("{}{}", self.base, path)
        } else {
            format!("{}{}?{}", self.base, path, query)
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .body(body)?;
        *req.headers_mut() = h;
        Ok(self.client.request(req).await?)
    }

    /// Sends, requires a 2xx, drains the body. Returns the headers, the body length and
    /// the first 64 KiB of the body.
    async fn ok(
        &self,
        method: &str,
        path: &str,
        query: &str,
        extra: &[(&str, String)],
        body: Body,
        len: Option<u64>,
    ) -> Result<(http::HeaderMap, u64, Vec<u8>)> {
        let resp = self.send(method, path, query, extra, body, len).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut b = resp.into_body();
        let mut n = 0u64;
        let mut text = Vec::new();
        while let Some(f) = b.frame().await {
            if let Ok(d) = f?.into_data() {
                n += d.len() as u64;
                if text.len() < 64 * 1024 {
                    text.extend_from_slice(&d[..d.len().min(64 * 1024 - text.len())]);
                }
            }
        }
        if !status.is_success() {
            bail!(
                "{method} {path}?{query}: {status}: {}",
                String::from_utf8_lossy(&text)
            );
        }
        Ok((headers, n, text))
    }

    async fn put(&self, key: &str, len: u64) -> Result<()> {
        self.ok("PUT", &format!("/{key}"), "", &[], body_of(len), Some(len))
            .await
            .map(|_| ())
    }
}

fn empty() -> Body {
    BodyExt::boxed(Empty::new())
}

fn report(label: &str, scenario: &str, value: f64, unit: &str) {
    println!("RESULT {label} {scenario} {value:.1} {unit}");
}

/// MiB/s of one core hashing 1 GiB with `update`: Walrus's MD5 (OpenSSL's, see
/// `euca_aws::hash::Md5`) and, for comparison, the `md-5` crate's.
fn md5_speed(mut update: impl FnMut(&[u8])) -> f64 {
    let buf = pattern();
    let total = 1024 * MIB;
    let t = Instant::now();
    let mut done = 0;
    while done < total {
        update(&buf);
        done += buf.len() as u64;
    }
    total as f64 / MIB as f64 / t.elapsed().as_secs_f64()
}

fn xml_value(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{tag}>"))? + start;
    Some(body[start..end].to_string())
}

async fn multipart_put(s3: &Arc<S3>, key: &str, total: u64, ways: u64) -> Result<()> {
    let (_, _, body) = s3
        .ok(
            "POST",
            &format!("/{key}"),
            "uploads=",
            &[],
            empty(),
            Some(0),
        )
        .await?;
    let upload = xml_value(&String::from_utf8_lossy(&body), "UploadId").context("no UploadId")?;
    let part = total / ways;
    let mut tasks = Vec::new();
    for i in 0..ways {
        let s3 = s3.clone();
        let (key, upload) = (key.to_string(), upload.clone());
        let len = if i == ways - 1 {
            total - part * (ways - 1)
        } else {
            part
        };
        tasks.push(tokio::spawn(async move {
            let q = format!("partNumber={}&uploadId={upload}", i + 1);
            let (h, _, _) = s3
                .ok("PUT", &format!("/{key}"), &q, &[], body_of(len), Some(len))
                .await?;
            Ok::<_, anyhow::Error>(
                h.get("etag")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
            )
        }));
    }
    let mut xml = String::from("<CompleteMultipartUpload>");
    for (i, t) in tasks.into_iter().enumerate() {
        let etag = t.await??;
        xml.push_str(&format!(
            "<Part><PartNumber>{}</PartNumber><ETag>{}</ETag></Part>",
            i + 1,
            etag
        ));
    }
    xml.push_str("</CompleteMultipartUpload>");
    let len = xml.len() as u64;
    s3.ok(
        "POST",
        &format!("/{key}"),
        &format!("uploadId={upload}"),
        &[],
        BodyExt::boxed(Full::new(Bytes::from(xml))),
        Some(len),
    )
    .await?;
    Ok(())
}

async fn run_parallel<F, Fut>(n: usize, inflight: usize, f: F) -> Result<f64>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let t = Instant::now();
    let results: Vec<Result<()>> = futures::stream::iter(0..n)
        .map(f)
        .buffer_unordered(inflight)
        .collect()
        .await;
    for r in results {
        r?;
    }
    Ok(n as f64 / t.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let a = Args::parse();
    let s3 = Arc::new(S3::new(&a)?);
    let b = a.bucket.clone();
    let large = a.large_mib * MIB;
    let _ = s3
        .ok("PUT", &format!("/{b}"), "", &[], empty(), Some(0))
        .await;
    for sc in a.scenarios.split(',') {
        match sc {
            "md5" => {
                let mut ours = euca_aws::hash::Md5::new();
                report(
                    &a.label,
                    "md5-single-core",
                    md5_speed(|b| ours.update(b)),
                    "MiB/s",
                );
                std::hint::black_box(ours.finalize());
                let mut other = md5::Md5::new();
                let crate_speed = md5_speed(|b| other.update(b));
                std::hint::black_box(other.finalize());
                report(&a.label, "md5-single-core-md-5-crate", crate_speed, "MiB/s");
            }
            "put" => {
                let t = Instant::now();
                s3.put(&format!("{b}/large"), large).await?;
                report(
                    &a.label,
                    "put-single-stream",
                    a.large_mib as f64 / t.elapsed().as_secs_f64(),
                    "MiB/s",
                );
            }
            "get" => {
                let t = Instant::now();
                let (_, n, _) = s3
                    .ok("GET", &format!("/{b}/large"), "", &[], empty(), None)
                    .await?;
                if n != large {
                    bail!("GET returned {n} bytes, expected {large}");
                }
                report(
                    &a.label,
                    "get-single-stream",
                    a.large_mib as f64 / t.elapsed().as_secs_f64(),
                    "MiB/s",
                );
            }
            "mpput" => {
                let t = Instant::now();
                multipart_put(&s3, &format!("{b}/mp"), large, 8).await?;
                report(
                    &a.label,
                    "put-multipart-8way",
                    a.large_mib as f64 / t.elapsed().as_secs_f64(),
                    "MiB/s",
                );
            }
            "rangeget" => {
                let part = large / 8;
                let t = Instant::now();
                let s = s3.clone();
                let b2 = b.clone();
                run_parallel(8, 8, move |i| {
                    let s = s.clone();
                    let b = b2.clone();
                    async move {
                        let r = format!("bytes={}-{}", i as u64 * part, (i as u64 + 1) * part - 1);
                        let (_, n, _) = s
                            .ok(
                                "GET",
                                &format!("/{b}/large"),
                                "",
                                &[("range", r)],
                                empty(),
                                None,
                            )
                            .await?;
                        if n != part {
                            bail!("range GET returned {n} bytes");
                        }
                        Ok(())
                    }
                })
                .await?;
                report(
                    &a.label,
                    "get-ranged-8way",
                    a.large_mib as f64 / t.elapsed().as_secs_f64(),
                    "MiB/s",
                );
            }
            "small-put" => {
                let s = s3.clone();
                let b2 = b.clone();
                let ops = run_parallel(a.small_count, 16, move |i| {
                    let s = s.clone();
                    let b = b2.clone();
                    async move { s.put(&format!("{b}/small/{i:08}"), 4096).await }
                })
                .await?;
                report(&a.label, "put-4KiB-16-inflight", ops, "ops/s");
            }
            "small-get" => {
                let s = s3.clone();
                let b2 = b.clone();
                let ops = run_parallel(a.small_count, 16, move |i| {
                    let s = s.clone();
                    let b = b2.clone();
                    async move {
                        let (_, n, _) = s
                            .ok("GET", &format!("/{b}/small/{i:08}"), "", &[], empty(), None)
                            .await?;
                        if n != 4096 {
                            bail!("small GET returned {n} bytes");
                        }
                        Ok(())
                    }
                })
                .await?;
                report(&a.label, "get-4KiB-16-inflight", ops, "ops/s");
            }
            "concurrent-put" => {
                let s = s3.clone();
                let b2 = b.clone();
                let len = a.concurrent_mib * MIB;
                let t = Instant::now();
                run_parallel(a.concurrent, a.concurrent, move |i| {
                    let s = s.clone();
                    let b = b2.clone();
                    async move { s.put(&format!("{b}/conc/{i}"), len).await }
                })
                .await?;
                report(
                    &a.label,
                    &format!("put-{}x{}MiB-concurrent", a.concurrent, a.concurrent_mib),
                    (a.concurrent as u64 * a.concurrent_mib) as f64 / t.elapsed().as_secs_f64(),
                    "MiB/s",
                );
            }
            other => bail!("unknown scenario {other}"),
        }
    }
    Ok(())
}
