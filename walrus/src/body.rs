//! Request bodies, verified while they stream.
//!
//! [`VerifiedBody`] yields the decoded payload chunk by chunk and computes the MD5
//! (for the ETag), the SHA-256 the signature bound the payload to, and any declared
//! `x-amz-checksum-*`. Only when the stream has ended and every check passed does
//! [`VerifiedBody::next`] return `None`; a caller commits nothing before that.
use crate::error::{S3Error, S3Result};
use base64::Engine;
use bytes::Bytes;
use euca_aws::checksum::{valid_value, ChecksumAlgorithm, ChecksumHasher};
use euca_aws::chunked::ChunkedDecoder;
use euca_aws::hash::Md5;
use euca_aws::PayloadCheck;
use euca_durable::buffers::AlignedBuf;
use euca_durable::DIRECT_ALIGN;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// A body that sends nothing for this long is abandoned (slow-body protection).
pub(crate) const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Bodies larger than this are hashed on a blocking thread, in parallel with receiving.
const OFFLOAD_AFTER: u64 = 1 << 20;
/// Chunk size handed on once a body is large: a pooled 256 KiB buffer less its
/// alignment padding.
const COALESCE: usize = (256 << 10) - DIRECT_ALIGN;

/// Every digest a body needs, updated together (PutObject's and UploadPart's
/// bodies here, a browser POST's file part in `post.rs`).
pub(crate) struct Hashes {
    pub(crate) md5: Md5,
    pub(crate) sha256: Option<Sha256>,
    pub(crate) checksum: Option<ChecksumHasher>,
}

impl Hashes {
    /// MD5 (the ETag) and, if given, a checksum.
    pub(crate) fn new(checksum: Option<ChecksumAlgorithm>) -> Self {
        Hashes {
            md5: Md5::new(),
            sha256: None,
            checksum: checksum.map(|a| a.hasher()),
        }
    }

    pub(crate) fn update(&mut self, b: &[u8]) {
        self.md5.update(b);
        if let Some(h) = &mut self.sha256 {
            h.update(b);
        }
        if let Some(h) = &mut self.checksum {
            h.update(b);
        }
    }
}

enum HashState {
    Inline(Box<Hashes>),
    Offloaded {
        tx: tokio::sync::mpsc::Sender<Bytes>,
        handle: tokio::task::JoinHandle<Hashes>,
    },
    Taken,
}

pub type Body = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

pub struct BodySummary {
    pub size: u64,
    pub md5: [u8; 16],
    /// The checksum computed and verified, if one was declared or requested.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

pub struct VerifiedBody {
    inner: Option<Body>,
    decoder: Option<ChunkedDecoder>,
    pending: VecDeque<Bytes>,
    hashes: HashState,
    /// The SHA-256 the signature bound the payload to.
    sha256_expected: Option<String>,
    /// The checksum algorithm and the value declared in a header, if any.
    checksum: Option<(ChecksumAlgorithm, Option<String>)>,
    /// `checksum` is the server's default ([`Self::compute_unless_declared`]), not
    /// one the request declared.
    default_checksum: bool,
    trailer_checksum: bool,
    content_md5: Option<[u8; 16]>,
    decoded_length: Option<u64>,
    size: u64,
    limit: u64,
    done: Option<BodySummary>,
}

fn header<'a>(h: &'a HeaderMap, n: &str) -> Option<&'a str> {
    h.get(n).and_then(|v| v.to_str().ok())
}

impl VerifiedBody {
    /// `limit` bounds the decoded size (EntityTooLarge past it).
    pub fn new(
        body: Body,
        headers: &HeaderMap,
        payload: &PayloadCheck,
        limit: u64,
    ) -> S3Result<Self> {
        let content_md5 = match header(headers, "content-md5") {
            None => None,
            Some(v) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(v.trim())
                    .ok()
                    .filter(|r| r.len() == 16)
                    .ok_or_else(|| {
                        S3Error::new(
                            "InvalidDigest",
                            400,
                            "The Content-MD5 you specified is not valid.",
                        )
                    })?;
                let mut a = [0u8; 16];
                a.copy_from_slice(&raw);
                Some(a)
            }
        };
        // A checksum in a header, or announced for the trailer, or only requested.
        let mut checksum = None;
        for alg in ChecksumAlgorithm::ALL {
            if let Some(v) = header(headers, alg.header()) {
                if !valid_value(alg, v) {
                    return Err(S3Error::invalid_request(format!(
                        "Value for {} header is invalid.",
                        alg.header()
                    )));
                }
                checksum = Some((alg, Some(v.trim().to_string())));
            }
        }
        let mut trailer_checksum = false;
        if let Some(t) = header(headers, "x-amz-trailer") {
            let alg = ChecksumAlgorithm::from_header(t.trim())
                .ok_or_else(|| S3Error::invalid_request(format!("Unsupported trailer {t}")))?;
            checksum = Some((alg, None));
            trailer_checksum = true;
        }
        if checksum.is_none() {
            if let Some(n) = header(headers, "x-amz-sdk-checksum-algorithm") {
                let alg = ChecksumAlgorithm::from_name(n.trim()).ok_or_else(|| {
                    S3Error::invalid_request(format!("Unsupported checksum algorithm {n}"))
                })?;
                checksum = Some((alg, None));
            }
        }
        let (decoder, sha256_expected, decoded_length) = match payload {
            PayloadCheck::Unsigned => (None, None, None),
            PayloadCheck::Sha256(h) => (None, Some(h.clone()), None),
            PayloadCheck::Chunked {
                signer,
                trailer,
                decoded_length,
            } => (
                Some(ChunkedDecoder::new(signer.clone(), *trailer)),
                None,
                *decoded_length,
            ),
        };
        if trailer_checksum && decoder.is_none() {
            return Err(S3Error::invalid_request(
                "x-amz-trailer needs an aws-chunked body",
            ));
        }
        if let Some(d) = decoded_length {
            if d > limit {
                return Err(entity_too_large());
            }
        }
        Ok(Self {
            inner: Some(body),
            decoder,
            pending: VecDeque::new(),
            hashes: HashState::Inline(Box::new(Hashes {
                md5: Md5::new(),
                sha256: sha256_expected.as_ref().map(|_| Sha256::new()),
                checksum: checksum.as_ref().map(|(alg, _)| alg.hasher()),
            })),
            sha256_expected,
            checksum,
            default_checksum: false,
            trailer_checksum,
            content_md5,
            decoded_length,
            size: 0,
            limit,
            done: None,
        })
    }

    /// The checksum algorithm the request declared (header, trailer or
    /// `x-amz-sdk-checksum-algorithm`), known before any byte is read.
    pub fn checksum_algorithm(&self) -> Option<ChecksumAlgorithm> {
        match &self.checksum {
            Some((alg, _)) if !self.default_checksum => Some(*alg),
            _ => None,
        }
    }

    /// Computes `alg` over the body if the request declared no checksum, as S3
    /// does for objects uploaded without one (CRC64NVME): the summary then
    /// carries it. Only before the first byte is read (later it does nothing).
    pub fn compute_unless_declared(&mut self, alg: ChecksumAlgorithm) {
        if self.checksum.is_some() || self.size > 0 {
            return;
        }
        if let HashState::Inline(h) = &mut self.hashes {
            h.checksum = Some(alg.hasher());
            self.checksum = Some((alg, None));
            self.default_checksum = true;
        }
    }

    /// The next chunk of payload, or `None` once the body ended and verified. Past the
    /// first MiB, frames are copied into chunks of [`COALESCE`] bytes so that the
    /// hashing and writing threads get few, large hand-offs: pooled buffers aligned
    /// in memory, each ending on a multiple of [`DIRECT_ALIGN`] in the body, so that
    /// a local blob file takes every one after the first with `O_DIRECT`
    /// ([`euca_durable::DirectWriter`]; not encrypted bodies, whose cipher makes new
    /// buffers, nor remote blob stores).
    pub async fn next(&mut self) -> S3Result<Option<Bytes>> {
        if matches!(self.hashes, HashState::Taken) {
            return Ok(None); // already finished and verified
        }
        let chunk = if self.size < OFFLOAD_AFTER {
            self.next_frame().await?
        } else {
            let want = COALESCE - (self.size % DIRECT_ALIGN as u64) as usize;
            let mut buf = AlignedBuf::take(COALESCE);
            while buf.len() < want {
                match self.next_frame().await? {
                    Some(mut b) => {
                        let room = want - buf.len();
                        if b.len() > room {
                            self.pending.push_front(b.split_off(room));
                        }
                        buf.extend_from_slice(&b)
                    }
                    None => break,
                }
            }
            (!buf.is_empty()).then(|| buf.freeze())
        };
        match chunk {
            Some(b) => self.yield_chunk(b).await,
            None => {
                self.finish().await?;
                Ok(None)
            }
        }
    }

    async fn yield_chunk(&mut self, b: Bytes) -> S3Result<Option<Bytes>> {
        self.account(&b).await?;
        Ok(Some(b))
    }

    /// The next decoded piece of the body as it arrived; `None` at its end.
    async fn next_frame(&mut self) -> S3Result<Option<Bytes>> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Ok(Some(b));
            }
            let Some(inner) = self.inner.as_mut() else {
                return Ok(None);
            };
            let frame = tokio::time::timeout(BODY_IDLE_TIMEOUT, inner.frame()).await.map_err(|_| {
                S3Error::new("RequestTimeout", 400, "Your socket connection to the server was not read from or written to within the timeout period.")
            })?;
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match &mut self.decoder {
                        Some(d) => {
                            let mut out = Vec::new();
                            d.feed(data, &mut out)?;
                            self.pending.extend(out);
                        }
                        None => self.pending.push_back(data),
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "request body failed");
                    return Err(S3Error::incomplete_body());
                }
                None => {
                    self.inner = None;
                    return Ok(None);
                }
            }
        }
    }

    async fn account(&mut self, b: &Bytes) -> S3Result<()> {
        self.size += b.len() as u64;
        if self.size > self.limit {
            return Err(entity_too_large());
        }
        match &mut self.hashes {
            HashState::Inline(h) => {
                h.update(b);
                if self.size >= OFFLOAD_AFTER {
                    // A large body: hash on another core while this task keeps receiving.
                    let HashState::Inline(mut h) =
                        std::mem::replace(&mut self.hashes, HashState::Taken)
                    else {
                        unreachable!()
                    };
                    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(2);
                    let handle = tokio::task::spawn_blocking(move || {
                        while let Some(b) = rx.blocking_recv() {
                            h.update(&b);
                        }
                        *h
                    });
                    self.hashes = HashState::Offloaded { tx, handle };
                }
            }
            HashState::Offloaded { tx, .. } => {
                tx.send(b.clone())
                    .await
                    .map_err(|_| S3Error::internal("hashing thread stopped"))?;
            }
            HashState::Taken => return Err(S3Error::internal("body read after its end")),
        }
        Ok(())
    }

    async fn finish(&mut self) -> S3Result<()> {
        let hashes = match std::mem::replace(&mut self.hashes, HashState::Taken) {
            HashState::Inline(h) => *h,
            HashState::Offloaded { tx, handle } => {
                drop(tx);
                handle.await.map_err(S3Error::internal)?
            }
            HashState::Taken => return Err(S3Error::internal("body finished twice")),
        };
        if let Some(d) = &mut self.decoder {
            d.finish()?;
            if let Some(expected) = self.decoded_length {
                if expected != self.size {
                    return Err(S3Error::incomplete_body());
                }
            }
        }
        if let (Some(h), Some(expected)) = (hashes.sha256, self.sha256_expected.take()) {
            if hex::encode(h.finalize()) != expected {
                return Err(S3Error::new(
                    "XAmzContentSHA256Mismatch",
                    400,
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                ));
            }
        }
        let md5: [u8; 16] = hashes.md5.finalize();
        if let Some(expected) = self.content_md5 {
            if expected != md5 {
                return Err(S3Error::bad_digest());
            }
        }
        let checksum = match (self.checksum.take(), hashes.checksum) {
            (Some((alg, declared)), Some(h)) => {
                let got = h.finish_base64();
                let declared = if self.trailer_checksum {
                    let trailers = self.decoder.as_ref().map(|d| d.trailers()).unwrap_or(&[]);
                    let v = trailers
                        .iter()
                        .find(|(k, _)| k == alg.header())
                        .map(|(_, v)| v.clone())
                        .ok_or_else(|| {
                            S3Error::invalid_request(format!("missing trailer {}", alg.header()))
                        })?;
                    if !valid_value(alg, &v) {
                        return Err(S3Error::invalid_request(format!(
                            "Value for {} trailer is invalid.",
                            alg.header()
                        )));
                    }
                    Some(v)
                } else {
                    declared
                };
                if let Some(d) = declared {
                    if d != got {
                        return Err(S3Error::new(
                            "BadDigest",
                            400,
                            format!(
                                "The {} you specified did not match the calculated checksum.",
                                alg.name()
                            ),
                        ));
                    }
                }
                Some((alg, got))
            }
            _ => None,
        };
        self.done = Some(BodySummary {
            size: self.size,
            md5,
            checksum,
        });
        Ok(())
    }

    /// The verified summary, after `next` returned `None`.
    pub fn summary(&mut self) -> Option<BodySummary> {
        self.done.take()
    }

    /// Reads the whole (small) body into memory, at most `limit` bytes.
    pub async fn read_all(mut self) -> S3Result<(Vec<u8>, BodySummary)> {
        let mut out = Vec::new();
        while let Some(b) = self.next().await? {
            out.extend_from_slice(&b);
        }
        let s = self
            .summary()
            .ok_or_else(|| S3Error::internal("body summary missing"))?;
        Ok((out, s))
    }
}

pub fn entity_too_large() -> S3Error {
    S3Error::new(
        "EntityTooLarge",
        400,
        "Your proposed upload exceeds the maximum allowed size",
    )
}

pub fn incoming(b: Incoming) -> Body {
    b.boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    /// A body sent as frames of the given sizes.
    fn body_of(data: &[u8], frames: &[usize]) -> Body {
        let mut out = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < data.len() {
            let n = frames[i % frames.len()].min(data.len() - at);
            out.push(Ok::<_, hyper::Error>(hyper::body::Frame::data(
                Bytes::copy_from_slice(&data[at..at + n]),
            )));
            at += n;
            i += 1;
        }
        StreamBody::new(futures::stream::iter(out)).boxed()
    }

    #[tokio::test]
    async fn a_large_body_comes_in_aligned_chunks_that_end_on_aligned_offsets() {
        // 5 MiB and a bit, in frames of odd sizes, some larger than a chunk.
        let data: Vec<u8> = (0..(5 << 20) + 12_345u32)
            .map(|i| (i % 251) as u8)
            .collect();
        for frames in [&[16_411usize, 1, 300_001][..], &[65_536], &[700_000, 9]] {
            let body = body_of(&data, frames);
            let mut v =
                VerifiedBody::new(body, &HeaderMap::new(), &PayloadCheck::Unsigned, u64::MAX)
                    .unwrap();
            let mut got = Vec::new();
            let mut coalesced = 0;
            while let Some(c) = v.next().await.unwrap() {
                let start = got.len() as u64;
                got.extend_from_slice(&c);
                let end = got.len() as u64;
                if start < OFFLOAD_AFTER {
                    continue;
                }
                coalesced += 1;
                if end == data.len() as u64 {
                    continue; // the tail
                }
                assert_eq!(end % DIRECT_ALIGN as u64, 0, "chunk ending at {end}");
                if start.is_multiple_of(DIRECT_ALIGN as u64) {
                    assert_eq!(c.as_ptr() as usize % DIRECT_ALIGN, 0);
                    assert_eq!(c.len(), COALESCE);
                }
            }
            assert!(coalesced >= 12, "{coalesced} chunks past the first MiB");
            assert_eq!(got, data);
            let s = v.summary().unwrap();
            assert_eq!(s.size, data.len() as u64);
            let mut md5 = Md5::new();
            md5.update(&data);
            assert_eq!(s.md5, md5.finalize());
        }
    }

    #[tokio::test]
    async fn an_aws_chunked_body_with_a_trailer_comes_whole_through_the_aligned_chunks() {
        // STREAMING-UNSIGNED-PAYLOAD-TRAILER: aws-chunks of 64 KiB + 7, a CRC32
        // trailer, sent in frames that cut across the chunk framing.
        let data: Vec<u8> = (0..(3 << 20) + 999u32).map(|i| (i % 241) as u8).collect();
        let alg = ChecksumAlgorithm::from_name("CRC32").unwrap();
        let mut h = alg.hasher();
        h.update(&data);
        let crc = h.finish_base64();
        let mut wire = Vec::new();
        for c in data.chunks((64 << 10) + 7) {
            wire.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
            wire.extend_from_slice(c);
            wire.extend_from_slice(b"\r\n");
        }
        wire.extend_from_slice(format!("0\r\n{}:{crc}\r\n\r\n", alg.header()).as_bytes());
        let mut headers = HeaderMap::new();
        headers.insert("x-amz-trailer", alg.header().parse().unwrap());
        let payload = PayloadCheck::Chunked {
            signer: None,
            trailer: true,
            decoded_length: Some(data.len() as u64),
        };
        for bad in [false, true] {
            let mut wire = wire.clone();
            if bad {
                let n = wire.len() / 2;
                wire[n] ^= 1; // one payload byte changed in transit
            }
            let body = body_of(&wire, &[300_001, 13, 65_536]);
            let mut v = VerifiedBody::new(body, &headers, &payload, u64::MAX).unwrap();
            let mut got = Vec::new();
            let end = loop {
                match v.next().await {
                    Ok(Some(c)) => got.extend_from_slice(&c),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            if bad {
                assert_eq!(end.unwrap_err().code, "BadDigest");
                continue;
            }
            end.unwrap();
            assert_eq!(got, data);
            let s = v.summary().unwrap();
            assert_eq!(s.checksum, Some((alg, crc.clone())));
        }
    }
}
