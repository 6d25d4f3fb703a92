//! Bundling: image file → tar (one GNU member, as euca2ools 3.x writes it)
//! → gzip → AES-128-CBC → parts, plus the signed manifest.
//!
//! One pass over the input with bounded memory. The calling thread reads the
//! image, frames it as a tar stream and hashes that stream (the manifest's
//! image digest); fixed-size blocks of the tar stream are compressed on
//! worker threads (one per core), each into a separate gzip member; a writer
//! thread takes the members back in order, encrypts them, splits the
//! ciphertext into parts and hashes each part. Concatenated gzip members are
//! a valid gzip stream for every reader (GNU gzip, zlib, Python, euca2ools,
//! Eucalyptus, our own [`crate::unbundle`]).
//!
//! Parts are written to temporary names in the destination directory and
//! renamed at the end, the manifest last; on any error the temporary files
//! are removed and nothing is left under the final names.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use flate2::{Compression, GzBuilder};
use openssl::symm::{Cipher, Crypter, Mode};
use sha1::{Digest, Sha1};
use tempfile::TempPath;

use crate::crypto::{PrivateKey, SignerCert};
use crate::error::ImageError;
use crate::manifest::{BlockDeviceMapping, Bundler, Manifest, Sha1Digest};
use crate::manifest_write::{manifest_xml, ManifestFields};

/// euca2ools' (and AWS ami-tools') default part size: 10 MiB.
pub const DEFAULT_PART_SIZE: u64 = 10 * 1024 * 1024;

/// An X.509 certificate to wrap the bundle key for (the user's or the
/// cloud's `cloud-cert.pem`). Same type as the signer certificate.
pub type Certificate = SignerCert;

/// Tar stream bytes per gzip member (one unit of work for a compressor).
const BLOCK: usize = 1024 * 1024;
/// AES input chunk on the writer thread.
const AES_CHUNK: usize = 256 * 1024;
/// Buffered writer size for part files.
const PART_BUF: usize = 256 * 1024;
/// gzip level (GNU gzip's and pigz's default).
const GZIP_LEVEL: u32 = 6;

/// `<image><type>`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ImageType {
    #[default]
    Machine,
    /// Written as `<type>kernel</type>` and `<kernel_id>true</kernel_id>`
    /// (what `euca-bundle-image --kernel true` does).
    Kernel,
    /// Written as `<type>ramdisk</type>` and `<ramdisk_id>true</ramdisk_id>`.
    Ramdisk,
}

impl ImageType {
    /// The `<type>` text.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageType::Machine => "machine",
            ImageType::Kernel => "kernel",
            ImageType::Ramdisk => "ramdisk",
        }
    }
}

/// Architectures euca2ools 3.x accepts for `-r/--arch`.
pub const ARCHITECTURES: &[&str] = &["i386", "x86_64", "armhf", "ppc", "ppc64", "ppc64le"];

/// What to bundle and how. Build with [`BundleOptions::new`], then set the
/// optional fields.
#[derive(Clone)]
pub struct BundleOptions {
    /// The raw image file (a regular file; read once, front to back).
    pub image: PathBuf,
    /// Directory the parts and the manifest are written to (must exist).
    pub destination: PathBuf,
    /// Bundle prefix: part names `<prefix>.part.NN`, manifest
    /// `<prefix>.manifest.xml`, tar member name and `<image><name>`.
    /// Default: the image's file name.
    pub prefix: Option<String>,
    /// The owner's account id (`<image><user>`); dashes are stripped.
    pub user: String,
    /// `<architecture>`: one of [`ARCHITECTURES`]. Default `x86_64`.
    pub arch: String,
    /// `<kernel_id>` (`eki-…`), machine images only.
    pub kernel_id: Option<String>,
    /// `<ramdisk_id>` (`eri-…`), machine images only.
    pub ramdisk_id: Option<String>,
    /// Written sorted by virtual name (as euca2ools does); machine images only.
    pub block_device_mappings: Vec<BlockDeviceMapping>,
    /// Machine images only.
    pub product_codes: Vec<String>,
    /// Part size in bytes. Default [`DEFAULT_PART_SIZE`].
    pub part_size: u64,
    pub image_type: ImageType,
    /// The user's certificate (`user_encrypted_*`).
    pub user_cert: Certificate,
    /// The user's private key: signs the manifest; must match `user_cert`.
    pub user_key: PrivateKey,
    /// The cloud's certificate (`ec2_encrypted_*`).
    pub cloud_cert: Certificate,
    /// Fixed AES key and IV (for reproducible tests). Default: 16 random
    /// bytes each from OpenSSL's CSPRNG.
    pub key_iv: Option<([u8; 16], [u8; 16])>,
    /// `<bundler>`. Default: what euca2ools 3.4.1 writes (`euca2ools`,
    /// `3.4-devel`, `0`), so services that look at it treat our bundles like
    /// euca2ools 3.x ones.
    pub bundler: Bundler,
    /// Compression threads. Default: the number of available cores.
    pub threads: Option<usize>,
    /// Image bytes read so far are added here as bundling goes (for a
    /// progress display; the total is the image's size).
    pub progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl std::fmt::Debug for BundleOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleOptions")
            .field("image", &self.image)
            .field("destination", &self.destination)
            .field("prefix", &self.prefix)
            .field("user", &self.user)
            .field("arch", &self.arch)
            .field("image_type", &self.image_type)
            .field("part_size", &self.part_size)
            .finish_non_exhaustive()
    }
}

impl BundleOptions {
    /// Options with euca2ools' defaults for everything not given.
    pub fn new(
        image: impl Into<PathBuf>,
        destination: impl Into<PathBuf>,
        user: impl Into<String>,
        user_cert: Certificate,
        user_key: PrivateKey,
        cloud_cert: Certificate,
    ) -> BundleOptions {
        BundleOptions {
            image: image.into(),
            destination: destination.into(),
            prefix: None,
            user: user.into(),
            arch: "x86_64".into(),
            kernel_id: None,
            ramdisk_id: None,
            block_device_mappings: Vec::new(),
            product_codes: Vec::new(),
            part_size: DEFAULT_PART_SIZE,
            image_type: ImageType::Machine,
            user_cert,
            user_key,
            cloud_cert,
            key_iv: None,
            bundler: Bundler {
                name: "euca2ools".into(),
                version: "3.4-devel".into(),
                release: "0".into(),
            },
            threads: None,
            progress: None,
        }
    }
}

/// What [`bundle_image`] produced.
#[derive(Clone, Debug)]
pub struct BundleResult {
    /// `<destination>/<prefix>.manifest.xml`.
    pub manifest_path: PathBuf,
    /// The part files, in index order.
    pub part_paths: Vec<PathBuf>,
    /// The manifest as written (parsed back from the file's bytes).
    pub manifest: Manifest,
    /// Raw image size.
    pub size: u64,
    /// SHA-1 of the tar stream (`<image><digest>`).
    pub image_digest: Sha1Digest,
    /// Ciphertext length (sum of part sizes).
    pub bundled_size: u64,
}

/// Makes a euca2ools 3.x-compatible bundle of `opts.image` in
/// `opts.destination`; see the module docs for the pipeline and
/// `research/euca-bundle-format.md` for the format.
pub fn bundle_image(opts: &BundleOptions) -> Result<BundleResult, ImageError> {
    let v = validate(opts)?;

    let input_err = |source| ImageError::Input {
        path: opts.image.clone(),
        source,
    };
    let file = File::open(&opts.image).map_err(input_err)?;
    let meta = file.metadata().map_err(input_err)?;
    if !meta.is_file() {
        return Err(input_err(io::Error::other("not a regular file")));
    }
    let size = meta.len();

    let (key, iv) = match opts.key_iv {
        Some(kv) => kv,
        None => {
            let mut k = [0u8; 16];
            let mut i = [0u8; 16];
            openssl::rand::rand_bytes(&mut k).map_err(|e| ImageError::Crypto(e.to_string()))?;
            openssl::rand::rand_bytes(&mut i).map_err(|e| ImageError::Crypto(e.to_string()))?;
            (k, i)
        }
    };

    let tar = TarStream::new(&v.prefix, file, size, opts.progress.clone())?;
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1);
    let parts = PartWriter::new(&opts.destination, &v.prefix, opts.part_size);
    let (image_digest, parts) = run_pipeline(tar, threads, &key, &iv, parts, &opts.image)?;

    // Key and IV are wrapped as their 32-char lowercase hex text.
    let key_hex = hex::encode(key);
    let iv_hex = hex::encode(iv);
    let ec2_key = opts.cloud_cert.encrypt_pkcs1(key_hex.as_bytes())?;
    let ec2_iv = opts.cloud_cert.encrypt_pkcs1(iv_hex.as_bytes())?;
    let user_key = opts.user_cert.encrypt_pkcs1(key_hex.as_bytes())?;
    let user_iv = opts.user_cert.encrypt_pkcs1(iv_hex.as_bytes())?;

    let part_list: Vec<(String, Sha1Digest)> = parts
        .done
        .iter()
        .map(|p| (p.name.clone(), p.digest))
        .collect();
    let fields = ManifestFields {
        bundler: &opts.bundler,
        architecture: &opts.arch,
        block_device_mappings: &v.mappings,
        product_codes: &v.product_codes,
        kernel_id: v.kernel_id.as_deref(),
        ramdisk_id: v.ramdisk_id.as_deref(),
        name: &v.prefix,
        user: &v.user,
        image_type: opts.image_type.as_str(),
        digest: image_digest,
        size,
        bundled_size: parts.total,
        ec2_encrypted_key: &ec2_key,
        user_encrypted_key: &user_key,
        ec2_encrypted_iv: &ec2_iv,
        user_encrypted_iv: &user_iv,
        parts: &part_list,
    };
    let xml = manifest_xml(&fields, &opts.user_key, &opts.user_cert)?;
    let manifest = Manifest::from_bytes(xml.as_bytes())?;

    let manifest_name = format!("{}.manifest.xml", v.prefix);
    let manifest_path = opts.destination.join(&manifest_name);
    let out_err = |path: &Path, source| ImageError::Output {
        path: path.to_path_buf(),
        source,
    };
    let mprefix = format!(".{manifest_name}.");
    let mut mtmp = temp_builder(&mprefix)
        .tempfile_in(&opts.destination)
        .map_err(|e| out_err(&manifest_path, e))?;
    mtmp.write_all(xml.as_bytes())
        .and_then(|_| mtmp.as_file().sync_all())
        .map_err(|e| out_err(&manifest_path, e))?;
    let mtmp = mtmp.into_temp_path();

    // Rename parts, then the manifest. If any rename fails, remove what was
    // already renamed (and the rest is removed when the temp paths drop).
    let mut renamed: Vec<PathBuf> = Vec::new();
    let mut part_paths = Vec::with_capacity(parts.done.len());
    let result = (|| {
        for p in parts.done {
            let dst = opts.destination.join(&p.name);
            p.tmp.persist(&dst).map_err(|e| out_err(&dst, e.error))?;
            renamed.push(dst.clone());
            part_paths.push(dst);
        }
        mtmp.persist(&manifest_path)
            .map_err(|e| out_err(&manifest_path, e.error))?;
        renamed.push(manifest_path.clone());
        File::open(&opts.destination)
            .and_then(|d| d.sync_all())
            .map_err(|e| out_err(&opts.destination, e))
    })();
    if let Err(e) = result {
        for p in &renamed {
            let _ = std::fs::remove_file(p);
        }
        return Err(e);
    }

    Ok(BundleResult {
        manifest_path,
        part_paths,
        manifest,
        size,
        image_digest,
        bundled_size: parts.total,
    })
}

/// Temporary files `.<final name>.XXXXXX.bundling`, created 0644 (less the
/// umask) like euca2ools' files rather than tempfile's default 0600: parts
/// and manifest hold only ciphertext and wrapped keys.
/// `prefix` is `.<final name>.`.
fn temp_builder(prefix: &str) -> tempfile::Builder<'_, 'static> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix).suffix(".bundling");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        b.permissions(std::fs::Permissions::from_mode(0o644));
    }
    b
}

struct Validated {
    prefix: String,
    user: String,
    mappings: Vec<BlockDeviceMapping>,
    product_codes: Vec<String>,
    kernel_id: Option<String>,
    ramdisk_id: Option<String>,
}

fn invalid(msg: impl Into<String>) -> ImageError {
    ImageError::InvalidOptions(msg.into())
}

fn validate(opts: &BundleOptions) -> Result<Validated, ImageError> {
    let prefix = match &opts.prefix {
        Some(p) => p.clone(),
        None => opts
            .image
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| invalid("the image path has no UTF-8 file name; give a prefix"))?
            .to_string(),
    };
    if prefix.is_empty() || prefix.contains(['/', '\\', '\0']) || prefix.contains("..") {
        return Err(invalid(format!(
            "prefix {prefix:?} must be a plain file name (not empty, no '/', '\\', '..')"
        )));
    }
    if prefix.chars().any(|c| c.is_control()) {
        return Err(invalid(format!(
            "prefix {prefix:?} contains control characters"
        )));
    }
    if opts.part_size == 0 {
        return Err(invalid("part size must be at least 1 byte"));
    }
    if !ARCHITECTURES.contains(&opts.arch.as_str()) {
        return Err(invalid(format!(
            "architecture {:?} is not one of {ARCHITECTURES:?}",
            opts.arch
        )));
    }
    let user: String = opts.user.chars().filter(|&c| c != '-').collect();
    if user.is_empty() {
        return Err(invalid("user (account id) is empty"));
    }
    let (kernel_id, ramdisk_id) = match opts.image_type {
        ImageType::Machine => (opts.kernel_id.clone(), opts.ramdisk_id.clone()),
        t => {
            if opts.kernel_id.is_some()
                || opts.ramdisk_id.is_some()
                || !opts.block_device_mappings.is_empty()
                || !opts.product_codes.is_empty()
            {
                return Err(invalid(format!(
                    "kernel/ramdisk ids, block-device mappings and product codes apply to machine images only, not to a {} image",
                    t.as_str()
                )));
            }
            match t {
                ImageType::Kernel => (Some("true".to_string()), None),
                _ => (None, Some("true".to_string())),
            }
        }
    };
    for (what, s) in [
        ("user", Some(&user)),
        ("kernel id", kernel_id.as_ref()),
        ("ramdisk id", ramdisk_id.as_ref()),
    ] {
        if let Some(s) = s {
            if s.trim() != s || s.is_empty() {
                return Err(invalid(format!(
                    "{what} {s:?} is empty or has surrounding whitespace"
                )));
            }
        }
    }
    let mut mappings = opts.block_device_mappings.clone();
    mappings.sort_by(|a, b| a.virtual_name.cmp(&b.virtual_name));
    for m in &mappings {
        if m.virtual_name.trim().is_empty() || m.device.trim().is_empty() {
            return Err(invalid(format!(
                "block-device mapping {}={} has an empty side",
                m.virtual_name, m.device
            )));
        }
    }
    Ok(Validated {
        prefix,
        user,
        mappings,
        product_codes: opts.product_codes.clone(),
        kernel_id,
        ramdisk_id,
    })
}

// ---------------------------------------------------------------------------
// The tar stream, as Python 2.7's tarfile writes it in stream mode ('w|')
// for the synthetic TarInfo euca2ools 3.x builds: GNU format, mode 0644,
// uid/gid/mtime 0, empty uname/gname.

const TAR_BLOCK: u64 = 512;
const TAR_RECORD: u64 = 20 * TAR_BLOCK;

/// Python's `itn()`: octal digits + NUL, or for GNU format GNU base-256
/// (0x80, then big-endian) when the value does not fit.
fn itn(field: &mut [u8], n: u64) -> Result<(), ImageError> {
    let digits = field.len() - 1;
    if digits * 3 >= 64 || n < 1u64 << (3 * digits) {
        let s = format!("{n:0digits$o}");
        field[..digits].copy_from_slice(s.as_bytes());
        field[digits] = 0;
    } else {
        let mut v = n;
        for b in field[1..].iter_mut().rev() {
            *b = (v & 0xff) as u8;
            v >>= 8;
        }
        if v != 0 {
            return Err(invalid("image too large for a tar header"));
        }
        field[0] = 0x80;
    }
    Ok(())
}

/// One 512-byte header as Python 2.7 `TarInfo._create_header` makes it.
fn tar_header(name: &[u8], size: u64, mode: u64, typeflag: u8) -> Result<[u8; 512], ImageError> {
    let mut h = [0u8; 512];
    let n = name.len().min(100);
    h[..n].copy_from_slice(&name[..n]);
    itn(&mut h[100..108], mode)?;
    itn(&mut h[108..116], 0)?; // uid
    itn(&mut h[116..124], 0)?; // gid
    itn(&mut h[124..136], size)?;
    itn(&mut h[136..148], 0)?; // mtime
    h[148..156].copy_from_slice(b"        ");
    h[156] = typeflag;
    // linkname empty; GNU magic "ustar  \0"
    h[257..265].copy_from_slice(b"ustar  \0");
    // uname, gname empty
    itn(&mut h[329..337], 0)?; // devmajor
    itn(&mut h[337..345], 0)?; // devminor
    let sum: u32 = h.iter().map(|&b| b as u32).sum();
    let s = format!("{sum:06o}\0");
    h[148..155].copy_from_slice(s.as_bytes());
    Ok(h)
}

/// Header blocks for a member named `name` (with a GNU `././@LongLink`
/// member first when the name is longer than 100 bytes, as tarfile does).
fn member_headers(name: &str, size: u64) -> Result<Vec<u8>, ImageError> {
    let name = name.as_bytes();
    let mut out = Vec::new();
    if name.len() > 100 {
        let mut long = name.to_vec();
        long.push(0);
        out.extend_from_slice(&tar_header(b"././@LongLink", long.len() as u64, 0, b'L')?);
        out.extend_from_slice(&long);
        out.resize(out.len().next_multiple_of(TAR_BLOCK as usize), 0);
    }
    out.extend_from_slice(&tar_header(name, size, 0o644, b'0')?);
    Ok(out)
}

/// A reader producing the whole tar stream: headers, the image bytes,
/// zero padding (data to 512, two end blocks, record to 10240).
struct TarStream {
    header: Vec<u8>,
    header_pos: usize,
    file: File,
    file_left: u64,
    zeros_left: u64,
    progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl TarStream {
    fn new(
        prefix: &str,
        file: File,
        size: u64,
        progress: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
    ) -> Result<TarStream, ImageError> {
        let header = member_headers(prefix, size)?;
        let body = header.len() as u64 + size.next_multiple_of(TAR_BLOCK) + 2 * TAR_BLOCK;
        let total = body.next_multiple_of(TAR_RECORD);
        Ok(TarStream {
            zeros_left: total - header.len() as u64 - size,
            header,
            header_pos: 0,
            file,
            file_left: size,
            progress,
        })
    }

    /// Fills `buf` completely unless the stream ends; returns the length.
    fn fill(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut n = 0;
        while n < buf.len() {
            if self.header_pos < self.header.len() {
                let k = (self.header.len() - self.header_pos).min(buf.len() - n);
                buf[n..n + k].copy_from_slice(&self.header[self.header_pos..self.header_pos + k]);
                self.header_pos += k;
                n += k;
            } else if self.file_left > 0 {
                let want =
                    (buf.len() - n).min(usize::try_from(self.file_left).unwrap_or(usize::MAX));
                let k = match self.file.read(&mut buf[n..n + want]) {
                    Ok(0) => {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the image file got shorter while it was being bundled",
                        ))
                    }
                    Ok(k) => k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                self.file_left -= k as u64;
                n += k;
                if let Some(p) = &self.progress {
                    p.fetch_add(k as u64, std::sync::atomic::Ordering::Relaxed);
                }
            } else if self.zeros_left > 0 {
                let k = (buf.len() - n).min(usize::try_from(self.zeros_left).unwrap_or(usize::MAX));
                buf[n..n + k].fill(0);
                self.zeros_left -= k as u64;
                n += k;
            } else {
                break;
            }
        }
        Ok(n)
    }
}

// ---------------------------------------------------------------------------
// The pipeline.

type Job = (Vec<u8>, SyncSender<io::Result<Vec<u8>>>);

fn gzip_member(data: &[u8]) -> io::Result<Vec<u8>> {
    // mtime 0, OS 3 (Unix): GNU gzip's header on a pipe.
    let mut enc = GzBuilder::new().operating_system(3).write(
        Vec::with_capacity(data.len() / 2 + 1024),
        Compression::new(GZIP_LEVEL),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// Runs tar → (workers) gzip → (writer) AES → parts. Returns the tar
/// stream's SHA-1 and the finished (still temporary) parts.
fn run_pipeline(
    mut tar: TarStream,
    threads: usize,
    key: &[u8; 16],
    iv: &[u8; 16],
    parts: PartWriter,
    image_path: &Path,
) -> Result<(Sha1Digest, PartWriter), ImageError> {
    let mut crypter = Crypter::new(Cipher::aes_128_cbc(), Mode::Encrypt, key, Some(iv))
        .map_err(|e| ImageError::Crypto(e.to_string()))?;
    crypter.pad(true);

    // Bounded queues: at most `threads` jobs waiting, `threads` being
    // compressed and `2 * threads + 2` results waiting for the writer.
    let (job_tx, job_rx) = sync_channel::<Job>(threads);
    let job_rx = Arc::new(Mutex::new(job_rx));
    let (order_tx, order_rx) = sync_channel::<Receiver<io::Result<Vec<u8>>>>(2 * threads + 2);

    std::thread::scope(|s| {
        for _ in 0..threads {
            let job_rx = Arc::clone(&job_rx);
            s.spawn(move || loop {
                let job = {
                    let Ok(rx) = job_rx.lock() else { return };
                    rx.recv()
                };
                let Ok((data, reply)) = job else { return };
                let _ = reply.send(gzip_member(&data));
            });
        }
        let writer = s.spawn(move || writer_loop(order_rx, crypter, parts));

        // Reader: frame, hash, hand out blocks in order.
        let mut hasher = Sha1::new();
        let read_result: Result<(), ImageError> = (|| {
            loop {
                let mut block = vec![0u8; BLOCK];
                let n = tar.fill(&mut block).map_err(|source| ImageError::Input {
                    path: image_path.to_path_buf(),
                    source,
                })?;
                if n == 0 {
                    return Ok(());
                }
                block.truncate(n);
                hasher.update(&block);
                let (reply_tx, reply_rx) = sync_channel(1);
                // A closed channel means the writer stopped on an error,
                // which it reports itself.
                if order_tx.send(reply_rx).is_err() || job_tx.send((block, reply_tx)).is_err() {
                    return Ok(());
                }
                if n < BLOCK {
                    return Ok(());
                }
            }
        })();
        drop(job_tx);
        drop(order_tx);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(ImageError::Crypto("bundle writer thread panicked".into())));
        read_result?;
        let parts = written?;
        let mut d = [0u8; 20];
        d.copy_from_slice(&hasher.finalize());
        Ok((Sha1Digest(d), parts))
    })
}

/// Takes the gzip members in order, encrypts and writes them into parts.
fn writer_loop(
    order_rx: Receiver<Receiver<io::Result<Vec<u8>>>>,
    mut crypter: Crypter,
    mut parts: PartWriter,
) -> Result<PartWriter, ImageError> {
    let mut out = vec![0u8; AES_CHUNK + 16];
    for reply in order_rx {
        let member = reply
            .recv()
            .map_err(|_| ImageError::Crypto("a gzip worker thread died".into()))?
            .map_err(|e| ImageError::Crypto(format!("gzip failed: {e}")))?;
        for chunk in member.chunks(AES_CHUNK) {
            let n = crypter
                .update(chunk, &mut out)
                .map_err(|e| ImageError::Crypto(e.to_string()))?;
            parts.write(&out[..n])?;
        }
    }
    let n = crypter
        .finalize(&mut out)
        .map_err(|e| ImageError::Crypto(e.to_string()))?;
    parts.write(&out[..n])?;
    parts.finish()?;
    Ok(parts)
}

/// A finished part, still under its temporary name.
struct DonePart {
    name: String,
    tmp: TempPath,
    digest: Sha1Digest,
}

struct OpenPart {
    name: String,
    file: BufWriter<File>,
    tmp: TempPath,
    len: u64,
    hasher: Sha1,
}

/// Splits the ciphertext into `<prefix>.part.NN` (temporary names until
/// renamed), hashing each part. Only one part file is open at a time.
struct PartWriter {
    dir: PathBuf,
    prefix: String,
    part_size: u64,
    current: Option<OpenPart>,
    done: Vec<DonePart>,
    total: u64,
}

impl PartWriter {
    fn new(dir: &Path, prefix: &str, part_size: u64) -> PartWriter {
        PartWriter {
            dir: dir.to_path_buf(),
            prefix: prefix.to_string(),
            part_size,
            current: None,
            done: Vec::new(),
            total: 0,
        }
    }

    fn err(&self, name: &str, source: io::Error) -> ImageError {
        ImageError::Output {
            path: self.dir.join(name),
            source,
        }
    }

    fn open(&mut self) -> Result<(), ImageError> {
        // euca2ools 3.x: '{prefix}.part.{n:02}'.
        let name = format!("{}.part.{:02}", self.prefix, self.done.len());
        let tprefix = format!(".{name}.");
        let tmp = temp_builder(&tprefix)
            .tempfile_in(&self.dir)
            .map_err(|e| self.err(&name, e))?;
        let (file, tmp) = tmp.into_parts();
        self.current = Some(OpenPart {
            name,
            file: BufWriter::with_capacity(PART_BUF, file),
            tmp,
            len: 0,
            hasher: Sha1::new(),
        });
        Ok(())
    }

    fn close(&mut self) -> Result<(), ImageError> {
        let Some(p) = self.current.take() else {
            return Ok(());
        };
        let file = p
            .file
            .into_inner()
            .map_err(|e| self.err(&p.name, e.into_error()))?;
        file.sync_all().map_err(|e| self.err(&p.name, e))?;
        let mut d = [0u8; 20];
        d.copy_from_slice(&p.hasher.finalize());
        self.done.push(DonePart {
            name: p.name,
            tmp: p.tmp,
            digest: Sha1Digest(d),
        });
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> Result<(), ImageError> {
        while !data.is_empty() {
            if self.current.is_none() {
                self.open()?;
            }
            let part_size = self.part_size;
            let p = self.current.as_mut().expect("opened above");
            let room = part_size - p.len;
            let k = usize::try_from(room).unwrap_or(usize::MAX).min(data.len());
            if let Err(e) = p.file.write_all(&data[..k]) {
                let name = p.name.clone();
                return Err(self.err(&name, e));
            }
            p.hasher.update(&data[..k]);
            p.len += k as u64;
            self.total += k as u64;
            data = &data[k..];
            if p.len == part_size {
                self.close()?;
            }
        }
        Ok(())
    }

    /// Closes the last part. When the ciphertext filled the last part
    /// exactly, euca2ools writes one more, empty, part; so do we.
    fn finish(&mut self) -> Result<(), ImageError> {
        if self.current.is_none() {
            self.open()?;
        }
        self.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn itn_octal_and_base256() {
        let mut f = [0u8; 12];
        itn(&mut f, 3145728).unwrap();
        assert_eq!(&f, b"00014000000\0");
        itn(&mut f, 8u64 << 30).unwrap();
        assert_eq!(f[0], 0x80);
        assert_eq!(&f[1..], &[0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0]);
    }

    #[test]
    fn header_checksum_format() {
        let h = tar_header(b"fixture.img", 3145728, 0o644, b'0').unwrap();
        assert_eq!(&h[100..108], b"0000644\0");
        assert_eq!(h[154], 0);
        assert_eq!(h[155], b' ');
        assert_eq!(&h[257..265], b"ustar  \0");
    }
}
