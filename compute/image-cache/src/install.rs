//! Installing an image: a bundle in Walrus becomes an installed image, once,
//! centrally (the cloud's side; nodes never see bundles or the cloud's key).
//!
//! One stream, nothing staged on the cloud's disk:
//!
//! 1. The bundle manifest is read and its signature checked with the signer's
//!    certificate (before any part is downloaded).
//! 2. The parts are downloaded in order (the next part's GET is started while
//!    the current one streams) and fed, as their bytes arrive, to `euca-image`'s
//!    unbundler with the cloud's private key (part digests, AES, gunzip, tar,
//!    image size and digest — all checked).
//! 3. The image coming out of it is cut into pieces of [`PIECE_SIZE`]; each
//!    piece's SHA-256 is computed as it is cut (and the whole image's on the
//!    same pass), and the piece is stored as `chunks/<sha256>` in
//!    [`IMAGES_BUCKET`] unless it is already there (identical pieces, e.g.
//!    zeros, are stored once), through the shared content-addressed chunk store
//!    (`euca-chunks`), 4 at a time.
//! 4. Only once the unbundler has verified the whole bundle is the
//!    [`ImageManifest`] stored, as `images/<image-id>.json`: a bundle that fails
//!    a check late (a corrupt last part, a wrong image digest) may leave pieces
//!    behind — named by their own hash, referenced by no image, and removed by
//!    the chunk store's garbage collection — but never an image.
//!
//! Every object is written with a read grant for the nodes' account (when one is
//! given), so the cache daemons read images with their own, read-only, key.
//! Memory in flight is bounded: a few MiB of part data between the download and
//! the decrypting thread, and at most [`PARALLEL`] × 2 + 3 pieces (the one being
//! cut, one queued for and one in the hashing thread, [`PARALLEL`] queued for
//! upload and [`PARALLEL`] uploading): 44 MiB.
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use euca_chunks::{put_chunk_if_absent, ChunkStore, WalrusChunks};

use crate::manifest::{
    ImageManifest, FORMAT, IMAGES_BUCKET, IMAGE_MANIFEST_PREFIX, MAX_MANIFEST_BYTES, PIECE_SIZE,
};
use crate::{CacheError, ImageId};

/// Piece uploads in flight (and pieces queued for upload).
const PARALLEL: usize = 4;
/// Body chunks queued between the part download and the decrypting thread.
const PART_CHUNKS: usize = 32;

/// Where the bundle is, and what opens it.
pub struct InstallRequest {
    pub bucket: String,
    /// The manifest's key, e.g. `images/fixture.img.manifest.xml`.
    pub manifest_key: String,
    /// The cloud's private key (opens `ec2_encrypted_key`).
    pub private_key: Arc<euca_image::PrivateKey>,
    /// The certificate of the user who signed the bundle.
    pub signer: Arc<euca_image::SignerCert>,
    /// Canonical id granted READ on every stored object (the nodes' account).
    pub grant_read: Option<String>,
    /// The installing account's canonical id: with explicit grants S3 gives the
    /// owner nothing implicitly, so it is granted FULL_CONTROL alongside.
    pub owner_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Installed {
    pub id: ImageId,
    pub manifest: ImageManifest,
    /// Pieces uploaded (the rest were already stored).
    pub pieces_uploaded: u32,
}

/// `BUCKET/PREFIX.manifest.xml` → (bucket, key).
pub fn split_location(loc: &str) -> Result<(String, String), CacheError> {
    let loc = loc.trim_start_matches('/');
    match loc.split_once('/') {
        Some((b, k)) if !b.is_empty() && k.ends_with(".manifest.xml") => {
            Ok((b.to_string(), k.to_string()))
        }
        _ => Err(CacheError::InvalidManifest(format!(
            "{loc:?}: want BUCKET/PREFIX.manifest.xml"
        ))),
    }
}

/// Runs the install; `progress` counts bytes of the image stored so far.
///
/// (Boxed: compiled here once, not in every binary that installs; see
/// `euca_service::serve_api`.)
pub fn install<'a>(
    s3: &'a Arc<euca_s3::S3Client>,
    req: &'a InstallRequest,
    progress: Option<Arc<AtomicU64>>,
) -> futures::future::LocalBoxFuture<'a, Result<Installed, CacheError>> {
    futures::FutureExt::boxed_local(installing(s3, req, progress))
}

async fn installing(
    s3: &Arc<euca_s3::S3Client>,
    req: &InstallRequest,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Installed, CacheError> {
    let raw = s3
        .get_bytes(
            &req.bucket,
            &req.manifest_key,
            euca_image::MAX_MANIFEST_BYTES as usize,
        )
        .await?;
    let bundle = Arc::new(euca_image::Manifest::from_bytes(&raw)?);
    bundle.verify_signature(&req.signer)?;
    let prefix = match req.manifest_key.rfind('/') {
        Some(i) => &req.manifest_key[..=i],
        None => "",
    };
    let mut extra: Vec<(&'static str, String)> = Vec::new();
    if let Some(nodes) = &req.grant_read {
        extra.push(("x-amz-grant-read", format!("id=\"{nodes}\"")));
        if let Some(owner) = &req.owner_id {
            extra.push(("x-amz-grant-full-control", format!("id=\"{owner}\"")));
        }
    }
    let store = WalrusChunks::new(s3.clone(), IMAGES_BUCKET, IMAGE_MANIFEST_PREFIX)
        .with_max_manifest_bytes(MAX_MANIFEST_BYTES)
        .with_put_headers(extra);
    store.ensure_bucket().await?;

    // The parts, downloaded in order, into the decrypting thread.
    let keys = bundle
        .image
        .parts
        .iter()
        .map(|p| format!("{prefix}{}", p.filename))
        .collect();
    let (part_tx, part_rx) = mpsc::channel(PART_CHUNKS);
    let download = tokio::spawn(download_parts(
        s3.clone(),
        req.bucket.clone(),
        keys,
        part_tx,
    ));
    let mut stop_download = Some(AbortOnDrop(download));

    // The unbundler, writing pieces into `piece_rx` as it extracts the image.
    let (piece_tx, piece_rx) = mpsc::channel::<(String, Bytes)>(PARALLEL);
    let unbundler = {
        let (b, key, signer) = (bundle.clone(), req.private_key.clone(), req.signer.clone());
        tokio::task::spawn_blocking(move || {
            let parts = StreamedParts {
                rx: part_rx,
                cur: Bytes::new(),
            };
            let mut pieces = PieceWriter::new(piece_tx).map_err(euca_image::ImageError::Sink)?;
            euca_image::unbundle_to(&b, parts, &key, Some(&signer), &mut pieces, None)?;
            pieces.finish().map_err(euca_image::ImageError::Sink)
        })
    };

    let (uploaded, upload_err) = upload_pieces(&store, piece_rx, progress).await;
    if upload_err.is_some() {
        // Do not download the rest of the bundle for an install that failed.
        stop_download.take();
    }
    let unbundled = unbundler
        .await
        .map_err(|e| CacheError::Io(io::Error::other(e.to_string())));
    // A failed upload explains the unbundler's "cannot store the image".
    if let Some(e) = upload_err {
        return Err(e);
    }
    let (pieces, sha256, size) = unbundled??;
    let manifest = ImageManifest {
        format: FORMAT,
        name: bundle.image.name.clone(),
        size,
        piece_size: PIECE_SIZE,
        sha256,
        pieces,
    };
    let id = manifest.id();
    store
        .put_manifest_bytes(id.as_str(), Bytes::from(manifest.to_bytes()))
        .await?;
    Ok(Installed {
        id,
        manifest,
        pieces_uploaded: uploaded,
    })
}

/// Stores the pieces from `pieces` (those not stored yet), [`PARALLEL`] at a
/// time, until the unbundler ends or an upload fails; returns how many were
/// uploaded and the first failure. Returning drops `pieces`, so a failure makes
/// the unbundler's next piece fail, which ends it.
async fn upload_pieces(
    store: &WalrusChunks,
    pieces: mpsc::Receiver<(String, Bytes)>,
    progress: Option<Arc<AtomicU64>>,
) -> (u32, Option<CacheError>) {
    let uploads = tokio_stream_from(pieces).map(|(h, data)| async move {
        let n = data.len() as u64;
        let uploaded = put_chunk_if_absent(store, &h, data).await?;
        Ok::<_, CacheError>((n, uploaded))
    });
    let mut uploads = std::pin::pin!(uploads.buffer_unordered(PARALLEL));
    let mut uploaded = 0u32;
    while let Some(r) = uploads.next().await {
        match r {
            Ok((n, up)) => {
                uploaded += up as u32;
                if let Some(p) = &progress {
                    p.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(e) => return (uploaded, Some(e)),
        }
    }
    (uploaded, None)
}

/// What the part download hands the decrypting thread, per part in order:
/// `Opened` (or `Failed`) once the GET is answered, its body's chunks, `End`.
enum PartData {
    Opened,
    Chunk(Bytes),
    End,
    Failed(io::Error),
}

/// Downloads `keys` in order into `tx`, the next part's GET started while the
/// current one streams (its body waits in the connection meanwhile).
async fn download_parts(
    s3: Arc<euca_s3::S3Client>,
    bucket: String,
    keys: Vec<String>,
    tx: mpsc::Sender<PartData>,
) {
    let as_io = |e: euca_s3::S3ClientError| {
        let kind = if e.is_not_found() {
            io::ErrorKind::NotFound
        } else {
            io::ErrorKind::Other
        };
        io::Error::new(kind, e.to_string())
    };
    let gets = futures::stream::iter(keys).map(|key| {
        let (s3, bucket) = (s3.clone(), bucket.clone());
        AbortOnDrop(tokio::spawn(
            async move { s3.get_stream(&bucket, &key).await },
        ))
    });
    let mut gets = std::pin::pin!(gets.buffered(2));
    while let Some(got) = gets.next().await {
        let mut body = match got {
            Ok(Ok(body)) => body,
            Ok(Err(e)) => {
                let _ = tx.send(PartData::Failed(as_io(e))).await;
                return;
            }
            Err(e) => {
                let _ = tx.send(PartData::Failed(io::Error::other(e))).await;
                return;
            }
        };
        if tx.send(PartData::Opened).await.is_err() {
            return;
        }
        while let Some(chunk) = body.next().await {
            let msg = match chunk {
                Ok(c) => PartData::Chunk(c),
                Err(e) => PartData::Failed(as_io(e)),
            };
            let failed = matches!(msg, PartData::Failed(_));
            if tx.send(msg).await.is_err() || failed {
                return;
            }
        }
        if tx.send(PartData::End).await.is_err() {
            return;
        }
    }
}

/// The downloaded parts, as the unbundler reads them (on its decrypting thread).
struct StreamedParts {
    rx: mpsc::Receiver<PartData>,
    cur: Bytes,
}

impl StreamedParts {
    fn next(&mut self) -> io::Result<PartData> {
        match self.rx.blocking_recv() {
            Some(PartData::Failed(e)) => Err(e),
            Some(d) => Ok(d),
            None => Err(io::Error::other("the part download stopped")),
        }
    }
}

impl euca_image::PartSource for StreamedParts {
    fn open(&mut self, _part: &euca_image::Part) -> io::Result<()> {
        match self.next()? {
            PartData::Opened => Ok(()),
            _ => Err(io::Error::other("the part download is out of step")),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.next()? {
                PartData::Chunk(c) => self.cur = c,
                PartData::End => return Ok(0),
                _ => return Err(io::Error::other("the part download is out of step")),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Cuts the image into pieces as the unbundler writes it and hands each to a
/// hashing thread of its own (off the unbundler's critical path), which hashes
/// the piece and the whole image and queues the piece for upload.
struct PieceWriter {
    cur: Vec<u8>,
    tx: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    hasher: Option<std::thread::JoinHandle<io::Result<Hashed>>>,
}

/// (piece hashes in order, image hash, image size).
type Hashed = (Vec<String>, String, u64);

impl PieceWriter {
    fn new(upload: mpsc::Sender<(String, Bytes)>) -> io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(1);
        let hasher = std::thread::Builder::new()
            .name("install-hash".into())
            .spawn(move || {
                let (mut whole, mut hashes, mut size) = (Sha256::new(), Vec::new(), 0u64);
                for piece in rx {
                    whole.update(&piece);
                    size += piece.len() as u64;
                    let h = crate::manifest::sha256_hex(&piece);
                    hashes.push(h.clone());
                    upload
                        .blocking_send((h, Bytes::from(piece)))
                        .map_err(|_| io::Error::other("the piece upload stopped"))?;
                }
                Ok((hashes, hex::encode(whole.finalize()), size))
            })?;
        Ok(PieceWriter {
            cur: Vec::with_capacity(PIECE_SIZE as usize),
            tx: Some(tx),
            hasher: Some(hasher),
        })
    }

    fn emit(&mut self) -> io::Result<()> {
        let piece = std::mem::replace(&mut self.cur, Vec::with_capacity(PIECE_SIZE as usize));
        let sent = self.tx.as_ref().map(|tx| tx.send(piece).is_ok());
        if sent != Some(true) {
            // The hashing thread stopped: its result says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the piece hashing stopped")));
        }
        Ok(())
    }

    fn join(&mut self) -> io::Result<Hashed> {
        self.tx = None;
        match self.hasher.take().map(|h| h.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(io::Error::other("the piece hashing thread panicked")),
            None => Err(io::Error::other("the piece hashing already ended")),
        }
    }

    /// Queues the last, short piece; returns (piece hashes, image hash, size).
    fn finish(mut self) -> io::Result<Hashed> {
        if !self.cur.is_empty() {
            self.emit()?;
        }
        self.join()
    }
}

impl io::Write for PieceWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = PIECE_SIZE as usize - self.cur.len();
        let n = buf.len().min(room);
        self.cur.extend_from_slice(&buf[..n]);
        if self.cur.len() == PIECE_SIZE as usize {
            self.emit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Aborts a spawned task when dropped (an install that stops early leaves no
/// download running).
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> std::future::Future for AbortOnDrop<T> {
    type Output = Result<T, tokio::task::JoinError>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(cx)
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
