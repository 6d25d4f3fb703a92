//! Incremental decoder for `aws-chunked` bodies.
//!
//! Frames: `hex-size[;chunk-signature=SIG]\r\n<data>\r\n` … a zero-size chunk, then
//! optional trailing headers (`name:value\r\n`, ending with an empty line). Data is
//! passed through as zero-copy slices of the input; chunk signatures are checked at
//! the end of each chunk, before the next chunk's data is released.
use crate::auth::ChunkSigner;
use crate::credential::constant_time_eq;
use bytes::{Buf, Bytes, BytesMut};
use sha2::{Digest, Sha256};

const MAX_LINE: usize = 4096;
const MAX_TRAILER: usize = 16 * 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChunkedError {
    #[error("malformed aws-chunked body: {0}")]
    Malformed(&'static str),
    #[error("chunk signature does not match")]
    BadSignature,
    #[error("the body ended before the final chunk")]
    Truncated,
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    Header,
    Data(u64),
    DataEnd,
    Trailer,
    Done,
}

pub struct ChunkedDecoder {
    state: State,
    line: BytesMut,
    signer: Option<ChunkSigner>,
    prev_sig: String,
    expected_sig: Option<String>,
    chunk_hash: Sha256,
    trailer_expected: bool,
    trailer_bytes: usize,
    trailers: Vec<(String, String)>,
    trailer_sig: Option<String>,
    decoded: u64,
    final_seen: bool,
}

impl ChunkedDecoder {
    pub fn new(signer: Option<ChunkSigner>, trailer: bool) -> Self {
        let prev_sig = signer
            .as_ref()
            .map(|s| s.seed_signature.clone())
            .unwrap_or_default();
        Self {
            state: State::Header,
            line: BytesMut::new(),
            signer,
            prev_sig,
            expected_sig: None,
            chunk_hash: Sha256::new(),
            trailer_expected: trailer,
            trailer_bytes: 0,
            trailers: Vec::new(),
            trailer_sig: None,
            decoded: 0,
            final_seen: false,
        }
    }

    /// Decoded bytes so far.
    pub fn decoded_len(&self) -> u64 {
        self.decoded
    }

    pub fn trailers(&self) -> &[(String, String)] {
        &self.trailers
    }

    /// Takes a line (without CRLF) from `input`, buffering partial lines.
    fn take_line(
        &mut self,
        input: &mut Bytes,
        limit: usize,
    ) -> Result<Option<Bytes>, ChunkedError> {
        if let Some(pos) = input.iter().position(|&b| b == b'\n') {
            let part = input.split_to(pos + 1);
            let mut line = if self.line.is_empty() {
                part
            } else {
                self.line.extend_from_slice(&part);
                self.line.split().freeze()
            };
            if line.len() > limit {
                return Err(ChunkedError::Malformed("line too long"));
            }
            line.truncate(line.len() - 1);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            Ok(Some(line))
        } else {
            if self.line.len() + input.len() > limit {
                return Err(ChunkedError::Malformed("line too long"));
            }
            self.line.extend_from_slice(input);
            input.clear();
            Ok(None)
        }
    }

    fn end_chunk(&mut self) -> Result<(), ChunkedError> {
        if let (Some(signer), Some(expected)) = (&self.signer, self.expected_sig.take()) {
            let h = std::mem::take(&mut self.chunk_hash);
            let sig = signer.chunk_signature(&self.prev_sig, &hex::encode(h.finalize()));
            if !constant_time_eq(sig.as_bytes(), expected.as_bytes()) {
                return Err(ChunkedError::BadSignature);
            }
            self.prev_sig = sig;
        }
        Ok(())
    }

    /// Feeds body bytes; decoded data slices are pushed to `out`.
    pub fn feed(&mut self, mut input: Bytes, out: &mut Vec<Bytes>) -> Result<(), ChunkedError> {
        while !input.is_empty() {
            match self.state {
                State::Header => {
                    let Some(line) = self.take_line(&mut input, MAX_LINE)? else {
                        break;
                    };
                    let s = std::str::from_utf8(&line)
                        .map_err(|_| ChunkedError::Malformed("non-UTF-8 chunk header"))?;
                    let (size_s, ext) = s.split_once(';').unwrap_or((s, ""));
                    let size = u64::from_str_radix(size_s.trim(), 16)
                        .map_err(|_| ChunkedError::Malformed("bad chunk size"))?;
                    if self.signer.is_some() {
                        let sig = ext
                            .trim()
                            .strip_prefix("chunk-signature=")
                            .ok_or(ChunkedError::Malformed("missing chunk-signature"))?;
                        self.expected_sig = Some(sig.to_string());
                        self.chunk_hash = Sha256::new();
                    }
                    if size == 0 {
                        self.end_chunk()?;
                        self.final_seen = true;
                        self.state = if self.trailer_expected {
                            State::Trailer
                        } else {
                            State::DataEnd
                        };
                    } else {
                        self.state = State::Data(size);
                    }
                }
                State::Data(remaining) => {
                    let n = remaining.min(input.len() as u64) as usize;
                    let data = input.split_to(n);
                    if self.signer.is_some() {
                        self.chunk_hash.update(&data);
                    }
                    self.decoded += n as u64;
                    let left = remaining - n as u64;
                    if left == 0 {
                        self.end_chunk()?;
                        self.state = State::DataEnd;
                    } else {
                        self.state = State::Data(left);
                    }
                    out.push(data);
                }
                State::DataEnd => {
                    let Some(line) = self.take_line(&mut input, MAX_LINE)? else {
                        break;
                    };
                    if !line.is_empty() {
                        return Err(ChunkedError::Malformed("missing CRLF after chunk data"));
                    }
                    // After the zero-size chunk without trailers, this CRLF ends the body.
                    self.state = if self.expected_final() {
                        State::Done
                    } else {
                        State::Header
                    };
                }
                State::Trailer => {
                    let Some(line) = self.take_line(&mut input, MAX_LINE)? else {
                        break;
                    };
                    self.trailer_bytes += line.len() + 2;
                    if self.trailer_bytes > MAX_TRAILER {
                        return Err(ChunkedError::Malformed("trailer too large"));
                    }
                    if line.is_empty() {
                        self.finish_trailer()?;
                        self.state = State::Done;
                        continue;
                    }
                    self.push_trailer(&line)?;
                }
                State::Done => {
                    if input.iter().all(|b| b.is_ascii_whitespace()) {
                        input.advance(input.len());
                    } else {
                        return Err(ChunkedError::Malformed("data after the final chunk"));
                    }
                }
            }
        }
        Ok(())
    }

    fn expected_final(&self) -> bool {
        self.final_seen
    }

    fn push_trailer(&mut self, line: &[u8]) -> Result<(), ChunkedError> {
        let s =
            std::str::from_utf8(line).map_err(|_| ChunkedError::Malformed("non-UTF-8 trailer"))?;
        let (k, v) = s
            .split_once(':')
            .ok_or(ChunkedError::Malformed("trailer without ':'"))?;
        let k = k.trim().to_ascii_lowercase();
        let v = v.trim().to_string();
        if k == "x-amz-trailer-signature" {
            self.trailer_sig = Some(v);
        } else {
            self.trailers.push((k, v));
        }
        Ok(())
    }

    fn finish_trailer(&mut self) -> Result<(), ChunkedError> {
        if let Some(signer) = &self.signer {
            let given = self
                .trailer_sig
                .as_deref()
                .ok_or(ChunkedError::Malformed("missing x-amz-trailer-signature"))?;
            let mut canon = String::new();
            for (k, v) in &self.trailers {
                canon.push_str(k);
                canon.push(':');
                canon.push_str(v);
                canon.push('\n');
            }
            let sig = signer
                .trailer_signature(&self.prev_sig, &crate::hash::sha256_hex(canon.as_bytes()));
            if !constant_time_eq(sig.as_bytes(), given.as_bytes()) {
                return Err(ChunkedError::BadSignature);
            }
        }
        Ok(())
    }

    /// Called at the end of the body: the framing must be complete.
    pub fn finish(&mut self) -> Result<(), ChunkedError> {
        match self.state {
            State::Done => Ok(()),
            // Tolerate a missing last CRLF after the trailers or the final chunk.
            State::Trailer if self.line.is_empty() && !self.trailers.is_empty() => {
                self.finish_trailer()?;
                self.state = State::Done;
                Ok(())
            }
            State::DataEnd if self.final_seen && self.line.is_empty() => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(ChunkedError::Truncated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(
        dec: &mut ChunkedDecoder,
        body: &[u8],
        step: usize,
    ) -> Result<Vec<u8>, ChunkedError> {
        let mut out = Vec::new();
        for piece in body.chunks(step.max(1)) {
            let mut v = Vec::new();
            dec.feed(Bytes::copy_from_slice(piece), &mut v)?;
            for b in v {
                out.extend_from_slice(&b);
            }
        }
        dec.finish()?;
        Ok(out)
    }

    #[test]
    fn unsigned_with_trailer_any_split() {
        let body = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            let mut d = ChunkedDecoder::new(None, true);
            assert_eq!(decode_all(&mut d, body, step).unwrap(), b"hello world");
            assert_eq!(
                d.trailers(),
                &[("x-amz-checksum-crc32".to_string(), "DUoRhQ==".to_string())]
            );
        }
        let mut d = ChunkedDecoder::new(None, true);
        assert_eq!(
            decode_all(&mut d, b"5\r\nhel", 100),
            Err(ChunkedError::Truncated)
        );
        let mut d = ChunkedDecoder::new(None, true);
        assert!(decode_all(&mut d, b"zz\r\n", 100).is_err());
    }

    /// The streaming example of the S3 SigV4 documentation (64 KiB + 1 KiB of 'a').
    #[test]
    fn aws_documented_streaming_example() {
        let key = crate::sigv4::signing_key(
            "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "20130524",
            "us-east-1",
            "s3",
        );
        let signer = ChunkSigner {
            key,
            amz_date: "20130524T000000Z".into(),
            scope: "20130524/us-east-1/s3/aws4_request".into(),
            seed_signature: "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
                .into(),
        };
        let s1 = "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648";
        let s2 = "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497";
        let s3 = "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9";
        let mut body = Vec::new();
        body.extend_from_slice(format!("10000;chunk-signature={s1}\r\n").as_bytes());
        body.extend_from_slice(&[b'a'; 65536]);
        body.extend_from_slice(format!("\r\n400;chunk-signature={s2}\r\n").as_bytes());
        body.extend_from_slice(&[b'a'; 1024]);
        body.extend_from_slice(format!("\r\n0;chunk-signature={s3}\r\n\r\n").as_bytes());
        let mut d = ChunkedDecoder::new(Some(signer.clone()), false);
        assert_eq!(decode_all(&mut d, &body, 1000).unwrap().len(), 66560);
        let mut bad = body.clone();
        bad[70] ^= 1; // a data byte of the first chunk
        let mut d = ChunkedDecoder::new(Some(signer), false);
        assert_eq!(
            decode_all(&mut d, &bad, 1000),
            Err(ChunkedError::BadSignature)
        );
    }
}
