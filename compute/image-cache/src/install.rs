//! Installing an image: a bundle in Walrus becomes an installed image, once,
//! centrally (the cloud's side; nodes never see bundles or the cloud's key).
//!
//! 1. The bundle manifest is read and its signature checked with the signer's
//!    certificate (before any part is downloaded).
//! 2. The parts are downloaded (4 at a time) into a temporary directory, then
//!    unbundled with the cloud's private key by `euca-image` (part digests, AES,
//!    gunzip, tar, image digest — all checked).
//! 3. The raw image is cut into pieces of [`PIECE_SIZE`]; each piece's SHA-256 is
//!    computed as it is read (and the whole image's on the same pass), and the
//!    piece is stored as `chunks/<sha256>` in [`IMAGES_BUCKET`] unless it is
//!    already there (identical pieces, e.g. zeros, are stored once), through the
//!    shared content-addressed chunk store (`euca-chunks`).
//! 4. The [`ImageManifest`] is stored last, as `images/<image-id>.json`.
//!
//! Every object is written with a read grant for the nodes' account (when one is
//! given), so the cache daemons read images with their own, read-only, key.
//! Disk use while installing: the bundle plus the image, in `work_dir`.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use euca_chunks::{put_chunk_if_absent, ChunkStore, WalrusChunks};

use crate::manifest::{
    ImageManifest, FORMAT, IMAGES_BUCKET, IMAGE_MANIFEST_PREFIX, MAX_MANIFEST_BYTES, PIECE_SIZE,
};
use crate::{CacheError, ImageId};

/// Parallel part downloads and piece uploads.
const PARALLEL: usize = 4;

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
    /// Where the bundle and image are staged (removed afterwards).
    pub work_dir: PathBuf,
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
    std::fs::create_dir_all(&req.work_dir)?;
    let work = tempfile::Builder::new()
        .prefix(".install-")
        .tempdir_in(&req.work_dir)?;
    let parts_dir = work.path().to_path_buf();
    let downloads = bundle.image.parts.iter().map(|p| {
        let (key, file) = (
            format!("{prefix}{}", p.filename),
            parts_dir.join(&p.filename),
        );
        async move { s3.get_to_file(&req.bucket, &key, &file).await.map(|_| ()) }
    });
    let results: Vec<_> = futures::stream::iter(downloads)
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    for r in results {
        r?;
    }
    let image_path = parts_dir.join("image.raw");
    {
        let (b, dir, out) = (bundle.clone(), parts_dir.clone(), image_path.clone());
        let (key, signer) = (req.private_key.clone(), req.signer.clone());
        tokio::task::spawn_blocking(move || euca_image::unbundle(&b, &dir, &key, &signer, &out))
            .await
            .map_err(|e| CacheError::Io(std::io::Error::other(e.to_string())))??;
    }
    // Remove the parts now: only the image is needed from here on.
    for p in &bundle.image.parts {
        let _ = std::fs::remove_file(parts_dir.join(&p.filename));
    }
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
    let (pieces, sha256, size, uploaded) = store_pieces(&store, &image_path, progress).await?;
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

/// Reads `image` piece by piece on a blocking thread (hashing each piece and the
/// whole), storing each piece that is not in the store yet. At most a few pieces
/// are in memory at once. Returns (piece hashes, image hash, size, pieces uploaded).
async fn store_pieces(
    store: &WalrusChunks,
    image: &Path,
    progress: Option<Arc<AtomicU64>>,
) -> Result<(Vec<String>, String, u64, u32), CacheError> {
    let (tx, rx) = tokio::sync::mpsc::channel::<(String, Bytes)>(PARALLEL);
    let path = image.to_path_buf();
    let reader =
        tokio::task::spawn_blocking(move || -> Result<(Vec<String>, String, u64), CacheError> {
            use std::io::Read;
            let mut f = std::fs::File::open(&path)?;
            let (mut whole, mut hashes, mut size) = (Sha256::new(), Vec::new(), 0u64);
            loop {
                let mut buf = Vec::with_capacity(PIECE_SIZE as usize);
                (&mut f).take(PIECE_SIZE).read_to_end(&mut buf)?;
                if buf.is_empty() {
                    break;
                }
                whole.update(&buf);
                size += buf.len() as u64;
                let h = crate::manifest::sha256_hex(&buf);
                hashes.push(h.clone());
                if tx.blocking_send((h, Bytes::from(buf))).is_err() {
                    break;
                }
            }
            Ok((hashes, hex::encode(whole.finalize()), size))
        });
    let uploads = tokio_stream_from(rx).map(|(h, data)| async move {
        let n = data.len() as u64;
        let uploaded = put_chunk_if_absent(store, &h, data).await?;
        Ok::<_, CacheError>((n, uploaded))
    });
    let mut uploads = std::pin::pin!(uploads.buffer_unordered(PARALLEL));
    let mut uploaded = 0u32;
    let mut first_err = None;
    while let Some(r) = uploads.next().await {
        match r {
            Ok((n, up)) => {
                uploaded += up as u32;
                if let Some(p) = &progress {
                    p.fetch_add(n, Ordering::Relaxed);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let (hashes, whole, size) = reader
        .await
        .map_err(|e| CacheError::Io(std::io::Error::other(e.to_string())))??;
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok((hashes, whole, size, uploaded))
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
