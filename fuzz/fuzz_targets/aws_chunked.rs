//! `aws-chunked` framing: the decoder fed arbitrary bytes in arbitrary splits.
//!
//! Input: byte 0 picks the mode (bit 0: chunk signatures, bit 1: trailers, bit 2:
//! encode -> decode round trip), byte 1 seeds the split points, the rest is the
//! body (or, for the round trip, the payload to frame). Properties: no panic;
//! the outcome (bytes, trailers, error or not) does not depend on how the body
//! was split; what the encoder frames decodes back to the same bytes and trailers.
#![no_main]
use bytes::Bytes;
use euca_aws::auth::ChunkSigner;
use euca_aws::chunked::{ChunkedDecoder, ChunkedError};
use euca_aws::sigv4::{sha256_hex, signing_key};
use libfuzzer_sys::fuzz_target;

/// The signer the signed seeds in `corpus/aws_chunked` were made with.
fn signer() -> ChunkSigner {
    ChunkSigner {
        key: signing_key(euca_fuzz::SECRET_KEY, "20261203", euca_fuzz::REGION, "s3"),
        amz_date: "20261203T000000Z".into(),
        scope: "20261203/us-east-1/s3/aws4_request".into(),
        seed_signature: "0".repeat(64),
    }
}

/// Small deterministic split points from one seed byte.
fn splits(seed: u8, len: usize) -> Vec<usize> {
    let mut x = u32::from(seed) | 1;
    let mut at = 0;
    let mut out = Vec::new();
    while at < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let step = 1 + (x % 97) as usize;
        at = (at + step).min(len);
        out.push(at);
    }
    out
}

type Outcome = Result<(Vec<u8>, Vec<(String, String)>), ChunkedError>;

fn decode(signed: bool, trailer: bool, body: &[u8], cuts: &[usize]) -> Outcome {
    let mut d = ChunkedDecoder::new(signed.then(signer), trailer);
    let mut out = Vec::new();
    let mut from = 0;
    for &to in cuts {
        let mut pieces = Vec::new();
        d.feed(Bytes::copy_from_slice(&body[from..to]), &mut pieces)?;
        for p in pieces {
            out.extend_from_slice(&p);
        }
        from = to;
    }
    d.finish()?;
    assert_eq!(d.decoded_len(), out.len() as u64);
    Ok((out, d.trailers().to_vec()))
}

/// Frames `data` in chunks of the given sizes, as SDKs do.
fn encode(
    signed: bool,
    trailer: bool,
    data: &[u8],
    sizes: &[usize],
) -> (Vec<u8>, Vec<(String, String)>) {
    let s = signer();
    let mut prev = s.seed_signature.clone();
    let mut body = Vec::new();
    let mut chunk = |body: &mut Vec<u8>, piece: &[u8]| {
        body.extend_from_slice(format!("{:x}", piece.len()).as_bytes());
        if signed {
            prev = s.chunk_signature(&prev, &sha256_hex(piece));
            body.extend_from_slice(format!(";chunk-signature={prev}").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body.extend_from_slice(piece);
        if !piece.is_empty() {
            body.extend_from_slice(b"\r\n");
        }
    };
    let mut from = 0;
    for &to in sizes {
        if to > from {
            chunk(&mut body, &data[from..to]);
            from = to;
        }
    }
    chunk(&mut body, b"");
    let mut trailers = Vec::new();
    if trailer {
        trailers.push(("x-amz-checksum-sha256".to_string(), sha256_hex(data)));
        let mut canon = String::new();
        for (k, v) in &trailers {
            body.extend_from_slice(format!("{k}:{v}\r\n").as_bytes());
            canon.push_str(&format!("{k}:{v}\n"));
        }
        if signed {
            let sig = s.trailer_signature(&prev, &sha256_hex(canon.as_bytes()));
            body.extend_from_slice(format!("x-amz-trailer-signature:{sig}\r\n").as_bytes());
        }
    }
    body.extend_from_slice(b"\r\n");
    (body, trailers)
}

fuzz_target!(|data: &[u8]| {
    let [mode, seed, rest @ ..] = data else {
        return;
    };
    let (signed, trailer) = (mode & 1 != 0, mode & 2 != 0);
    if mode & 4 == 0 {
        let whole = decode(signed, trailer, rest, &[rest.len()]);
        let split = decode(signed, trailer, rest, &splits(*seed, rest.len()));
        match (&whole, &split) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "split changed the decoded body"),
            (Err(_), Err(_)) => {}
            _ => panic!("split changed the outcome: whole {whole:?}, split {split:?}"),
        }
    } else {
        let (body, trailers) = encode(
            signed,
            trailer,
            rest,
            &splits(seed.wrapping_add(1), rest.len()),
        );
        let got = decode(signed, trailer, &body, &splits(*seed, body.len()));
        assert_eq!(got, Ok((rest.to_vec(), trailers)), "encode -> decode");
    }
});
