//! Small request bodies, read with a cap.
use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is (or announces to be) longer than the cap; answer 413 (JSON
    /// APIs) or the protocol's equivalent.
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the request body: {0}")]
    Read(String),
}

/// Reads the whole body if it is at most `cap` bytes. A `Content-Length` above the
/// cap is refused before a byte is read; a body that grows past it is abandoned
/// there. Call it only after the caller is authenticated and authorized.
pub async fn read_capped<B>(headers: &HeaderMap, body: B, cap: usize) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if let Some(n) = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if n > cap as u64 {
            return Err(BodyError::TooLarge(cap));
        }
    }
    match Limited::new(body, cap).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(BodyError::TooLarge(cap)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    #[tokio::test]
    async fn caps() {
        let h = HeaderMap::new();
        let ok = read_capped(&h, Full::new(Bytes::from_static(b"abcd")), 4).await;
        assert_eq!(ok.unwrap(), Bytes::from_static(b"abcd"));
        let big = read_capped(&h, Full::new(Bytes::from_static(b"abcde")), 4).await;
        assert!(matches!(big, Err(BodyError::TooLarge(4))));
        let mut h = HeaderMap::new();
        h.insert("content-length", "5".parse().unwrap());
        let announced = read_capped(&h, Full::new(Bytes::new()), 4).await;
        assert!(matches!(announced, Err(BodyError::TooLarge(4))));
    }
}
