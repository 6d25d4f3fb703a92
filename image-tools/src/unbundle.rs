//! Unbundling: parts → AES-128-CBC decrypt → gunzip → tar → output file (or
//! any writer, [`unbundle_to`]), streamed through bounded buffers on three
//! threads: one reads the parts (from a directory, or from any [`PartSource`]),
//! checks each part's SHA-1 and decrypts; the caller's thread inflates, walks
//! the tar stream and writes the image; a third hashes the tar stream
//! ([`BgSha1`]).

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::bghash::BgSha1;
use flate2::read::MultiGzDecoder;
use openssl::symm::{Cipher, Crypter, Mode};
use sha1::{Digest, Sha1};

use crate::crypto::{BundleKey, KeySource, PrivateKey, SignerCert};
use crate::error::ImageError;
use crate::manifest::{Manifest, Part, Sha1Digest};

/// Size of the read and decrypt buffers.
const BUF: usize = 256 * 1024;
/// How many tar bytes may precede the first member's data (its header plus
/// any pax / GNU long-name / sparse extension headers, which the tar reader
/// holds in memory).
const TAR_HEADER_BUDGET: u64 = 1024 * 1024;
/// How many tar bytes may follow the first member's data (block padding, the
/// two end blocks, record padding: about 11 KiB for euca2ools).
const TAR_TRAILER_BUDGET: u64 = 16 * 1024 * 1024;

/// What [`unbundle`] produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unbundled {
    /// The output file (the path that was asked for).
    pub path: PathBuf,
    /// Bytes written (= `<image><size>`).
    pub size: u64,
    /// SHA-1 of the decrypted, decompressed tar stream (= `<image><digest>`
    /// unless [`Manifest::image_digest_is_advisory`]).
    pub tar_sha1: Sha1Digest,
    /// Which wrapped copy of the AES key the private key opened.
    pub key_source: KeySource,
}

/// What [`unbundle_to`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Streamed {
    /// Bytes written (= `<image><size>`).
    pub size: u64,
    /// SHA-1 of the decrypted, decompressed tar stream.
    pub tar_sha1: Sha1Digest,
    /// Which wrapped copy of the AES key the private key opened.
    pub key_source: KeySource,
}

/// Where [`unbundle_to`] reads a bundle's parts from: each part of the
/// manifest is opened once, in index order, and read to its end before the
/// next is opened. Runs on the unbundler's decrypting thread, so it may block.
pub trait PartSource: Send + 'static {
    /// Starts reading `part`. An error of kind `NotFound` is reported as
    /// [`ImageError::MissingPart`], any other as [`ImageError::PartRead`].
    fn open(&mut self, part: &Part) -> io::Result<()>;
    /// Reads from the part opened last; `Ok(0)` at its end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize>;
}

/// The parts as files in one directory.
struct DirParts {
    dir: PathBuf,
    file: Option<File>,
}

impl PartSource for DirParts {
    fn open(&mut self, part: &Part) -> io::Result<()> {
        self.file = Some(File::open(self.dir.join(&part.filename))?);
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &mut self.file {
            Some(f) => f.read(buf),
            None => Ok(0),
        }
    }
}

/// Verifies and unbundles a bundle whose parts come from `parts`, writing the
/// image to `out` as it is extracted (nothing is staged on disk).
///
/// The same checks as [`unbundle`] are made (the signature first, when
/// `signer` is given, then every part's SHA-1, the parts' total size, AES
/// padding, gzip, tar, the image's size and the tar stream's SHA-1), but the
/// last ones can only be made once everything has been written: **what was
/// written to `out` is verified only when this returns `Ok`**, and the caller
/// must not commit or publish it before. An error writing to `out` is
/// [`ImageError::Sink`].
pub fn unbundle_to(
    manifest: &Manifest,
    parts: impl PartSource,
    key: &PrivateKey,
    signer: Option<&SignerCert>,
    out: &mut impl Write,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Streamed, ImageError> {
    if let Some(signer) = signer {
        manifest.verify_signature(signer)?;
    }
    let bundle_key = manifest.decrypt_bundle_key(key)?;
    let (size, tar_sha1) = extract(
        manifest,
        Box::new(parts),
        &bundle_key,
        progress,
        out,
        &ImageError::Sink,
    )?;
    Ok(Streamed {
        size,
        tar_sha1,
        key_source: bundle_key.source,
    })
}

/// Reads the manifest at `manifest_path`, then [`unbundle`]s it.
pub fn unbundle_file(
    manifest_path: &Path,
    parts_dir: &Path,
    key: &PrivateKey,
    signer: &SignerCert,
    output: &Path,
) -> Result<Unbundled, ImageError> {
    let manifest = Manifest::from_file(manifest_path)?;
    unbundle(&manifest, parts_dir, key, signer, output)
}

/// Verifies and unbundles a bundle into the file `output`.
///
/// In order, before anything is written: the signature is checked with
/// `signer`; the AES key and IV are unwrapped with `key` (user's or cloud's);
/// every part named in the manifest must exist in `parts_dir` and the part
/// sizes must add up to `<bundled_size>`. (Unsafe part names were already
/// refused when the manifest was parsed.)
///
/// Then the parts are streamed in index order, each part's SHA-1 checked as
/// it is read, through AES-128-CBC (PKCS#7), gunzip (concatenated members
/// accepted) and tar; the first tar member (a regular or GNU sparse file) is
/// written to a temporary file next to `output`. The SHA-1 of the whole tar
/// stream must equal `<image><digest>` and the member must be exactly
/// `<image><size>` bytes. Only then is the temporary file fsynced and renamed
/// to `output` (replacing any file there) and the directory fsynced. On any
/// error the temporary file is removed and `output` is left untouched.
///
/// When data fails to decrypt or decompress, the remaining part bytes are
/// still hashed so that a corrupted part is reported as
/// [`ImageError::PartDigestMismatch`] rather than as a symptom further down.
pub fn unbundle(
    manifest: &Manifest,
    parts_dir: &Path,
    key: &PrivateKey,
    signer: &SignerCert,
    output: &Path,
) -> Result<Unbundled, ImageError> {
    unbundle_inner(manifest, parts_dir, key, Some(signer), output, None)
}

/// [`unbundle`], adding the number of part bytes read so far to `progress`
/// as it goes (for a progress display; the total is `<bundled_size>`).
///
/// With `signer` `None` the manifest's signature is not checked (as
/// euca2ools' `euca-unbundle` never checks it): every part's SHA-1, the tar
/// stream's SHA-1 and the image size still are, but they only prove that the
/// parts match this manifest, not who made it. The caller should say so.
pub fn unbundle_with_progress(
    manifest: &Manifest,
    parts_dir: &Path,
    key: &PrivateKey,
    signer: Option<&SignerCert>,
    output: &Path,
    progress: Arc<AtomicU64>,
) -> Result<Unbundled, ImageError> {
    unbundle_inner(manifest, parts_dir, key, signer, output, Some(progress))
}

fn unbundle_inner(
    manifest: &Manifest,
    parts_dir: &Path,
    key: &PrivateKey,
    signer: Option<&SignerCert>,
    output: &Path,
    progress: Option<Arc<AtomicU64>>,
) -> Result<Unbundled, ImageError> {
    if let Some(signer) = signer {
        manifest.verify_signature(signer)?;
    }
    let bundle_key = manifest.decrypt_bundle_key(key)?;
    locate_parts(manifest, parts_dir)?;
    let parts = DirParts {
        dir: parts_dir.to_path_buf(),
        file: None,
    };

    let out_err = |source: io::Error| ImageError::Output {
        path: output.to_path_buf(),
        source,
    };
    let file_name = output
        .file_name()
        .ok_or_else(|| out_err(io::Error::other("output path has no file name")))?;
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut prefix = std::ffi::OsString::from(".");
    prefix.push(file_name);
    prefix.push(".");
    // Dropping `tmp` (any early return below) deletes the temporary file.
    let mut tmp = tempfile::Builder::new()
        .prefix(&prefix)
        .suffix(".unbundling")
        .tempfile_in(dir)
        .map_err(out_err)?;

    let (size, tar_sha1) = {
        let mut w =
            BufWriter::with_capacity(BUF, euca_durable::WriteBehind::new(tmp.as_file_mut()));
        let r = extract(
            manifest,
            Box::new(parts),
            &bundle_key,
            progress,
            &mut w,
            &out_err,
        )?;
        w.flush().map_err(out_err)?;
        r
    };
    tmp.as_file().sync_all().map_err(out_err)?;
    tmp.persist(output).map_err(|e| out_err(e.error))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(out_err)?;

    Ok(Unbundled {
        path: output.to_path_buf(),
        size,
        tar_sha1,
        key_source: bundle_key.source,
    })
}

/// Checks, before anything is read, that every part exists and that their
/// sizes add up to `bundled_size` (the parts reader checks both again as it
/// reads).
fn locate_parts(manifest: &Manifest, dir: &Path) -> Result<(), ImageError> {
    let mut total: u64 = 0;
    for p in &manifest.image.parts {
        let path = dir.join(&p.filename);
        let meta = std::fs::metadata(&path).map_err(|source| {
            if source.kind() == io::ErrorKind::NotFound {
                ImageError::MissingPart {
                    index: p.index,
                    filename: p.filename.clone(),
                    source,
                }
            } else {
                ImageError::PartRead {
                    index: p.index,
                    filename: p.filename.clone(),
                    source,
                }
            }
        })?;
        if !meta.is_file() {
            return Err(ImageError::PartRead {
                index: p.index,
                filename: p.filename.clone(),
                source: io::Error::other("not a regular file"),
            });
        }
        total = total.saturating_add(meta.len());
    }
    if total != manifest.image.bundled_size {
        return Err(ImageError::Truncated {
            expected: manifest.image.bundled_size,
            actual: total,
        });
    }
    Ok(())
}

/// Where the layers of the pipeline leave the real error before handing an
/// opaque `io::Error` up through flate2 and tar. The innermost layer that
/// fails first wins.
type Slot = Rc<RefCell<Option<ImageError>>>;

fn fail(slot: &Slot, err: ImageError) -> io::Error {
    let msg = err.to_string();
    let mut s = slot.borrow_mut();
    if s.is_none() {
        *s = Some(err);
    }
    io::Error::other(msg)
}

fn sha1_of(h: Sha1) -> Sha1Digest {
    let mut out = [0u8; 20];
    out.copy_from_slice(&h.finalize());
    Sha1Digest(out)
}

/// The concatenated parts, each part's SHA-1 checked when its end is reached,
/// their total checked against `<bundled_size>`.
struct PartsReader {
    parts: Vec<Part>,
    source: Box<dyn PartSource>,
    next: usize,
    opened: bool,
    /// Bytes read so far, and how many the manifest says there are.
    total: u64,
    bundled_size: u64,
    hasher: Sha1,
    failed: bool,
    slot: Slot,
    /// Part bytes read so far, for a progress display.
    progress: Option<Arc<AtomicU64>>,
}

impl PartsReader {
    fn new(
        parts: Vec<Part>,
        bundled_size: u64,
        source: Box<dyn PartSource>,
        slot: Slot,
        progress: Option<Arc<AtomicU64>>,
    ) -> Self {
        PartsReader {
            parts,
            source,
            next: 0,
            opened: false,
            total: 0,
            bundled_size,
            hasher: Sha1::new(),
            failed: false,
            slot,
            progress,
        }
    }

    fn error(&mut self, err: ImageError) -> io::Error {
        self.failed = true;
        fail(&self.slot, err)
    }

    /// Reads (and hashes) whatever has not been read yet; returns the first
    /// part error found, if any.
    fn verify_rest(&mut self) -> Option<ImageError> {
        let mut buf = vec![0u8; BUF];
        loop {
            match self.read(&mut buf) {
                Ok(0) => return None,
                Ok(_) => {}
                Err(_) => return self.slot.borrow_mut().take(),
            }
        }
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("bundle parts already failed"));
        }
        if buf.is_empty() {
            // A zero-length read must not be mistaken for the end of a part.
            return Ok(0);
        }
        loop {
            let Some(part) = self.parts.get(self.next) else {
                if self.total != self.bundled_size {
                    let e = ImageError::Truncated {
                        expected: self.bundled_size,
                        actual: self.total,
                    };
                    return Err(self.error(e));
                }
                return Ok(0);
            };
            if !self.opened {
                match self.source.open(part) {
                    Ok(()) => self.opened = true,
                    Err(source) => {
                        let e = if source.kind() == io::ErrorKind::NotFound {
                            ImageError::MissingPart {
                                index: part.index,
                                filename: part.filename.clone(),
                                source,
                            }
                        } else {
                            ImageError::PartRead {
                                index: part.index,
                                filename: part.filename.clone(),
                                source,
                            }
                        };
                        return Err(self.error(e));
                    }
                }
            }
            let n = match self.source.read(buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    let e = ImageError::PartRead {
                        index: part.index,
                        filename: part.filename.clone(),
                        source,
                    };
                    return Err(self.error(e));
                }
            };
            if n > 0 {
                self.total = self.total.saturating_add(n as u64);
                if self.total > self.bundled_size {
                    let e = ImageError::Truncated {
                        expected: self.bundled_size,
                        actual: self.total,
                    };
                    return Err(self.error(e));
                }
                self.hasher.update(&buf[..n]);
                if let Some(p) = &self.progress {
                    p.fetch_add(n as u64, Ordering::Relaxed);
                }
                return Ok(n);
            }
            // End of this part: check its digest, move to the next one.
            let actual = sha1_of(std::mem::take(&mut self.hasher));
            if actual != part.digest {
                let e = ImageError::PartDigestMismatch {
                    index: part.index,
                    filename: part.filename.clone(),
                    expected: part.digest.to_hex(),
                    actual: actual.to_hex(),
                };
                return Err(self.error(e));
            }
            self.opened = false;
            self.next += 1;
        }
    }
}

/// The decrypting thread; its result says whether every part was verified.
type Decryptor = JoinHandle<Result<(), ImageError>>;

/// The decrypting stage, on its own thread: reads the parts in order
/// (checking each part's SHA-1 at its end), decrypts them with AES-128-CBC
/// (PKCS#7 padding removed) and hands the plaintext over in batches.
///
/// The thread returns `Ok` once every part was read and verified and the
/// padding was valid. If the other end hangs up early (its own error), the
/// rest of the parts are still hashed, so that a corrupt part is reported
/// as such rather than as a gzip or tar symptom.
fn spawn_decryptor(
    manifest: &Manifest,
    parts: Box<dyn PartSource>,
    key: &BundleKey,
    progress: Option<Arc<AtomicU64>>,
) -> Result<(Receiver<Vec<u8>>, Decryptor), ImageError> {
    let cipher = Cipher::aes_128_cbc();
    let mut crypter = Crypter::new(cipher, Mode::Decrypt, &key.key, Some(&key.iv))
        .map_err(|e| ImageError::Crypto(e.to_string()))?;
    let (tx, rx) = sync_channel::<Vec<u8>>(4);
    let (list, bundled_size) = (manifest.image.parts.clone(), manifest.image.bundled_size);
    let handle = std::thread::Builder::new()
        .name("unbundle-decrypt".into())
        .spawn(move || {
            let slot: Slot = Rc::default();
            let mut reader = PartsReader::new(list, bundled_size, parts, slot.clone(), progress);
            let mut inbuf = vec![0u8; BUF];
            loop {
                let n = match reader.read(&mut inbuf) {
                    Ok(n) => n,
                    Err(_) => {
                        let e = slot.borrow_mut().take();
                        return Err(e.unwrap_or_else(|| {
                            ImageError::Crypto("reading the bundle parts failed".into())
                        }));
                    }
                };
                let mut out = vec![0u8; BUF + cipher.block_size()];
                let len = if n == 0 {
                    crypter
                        .finalize(&mut out)
                        .map_err(|_| ImageError::Decrypt)?
                } else {
                    crypter
                        .update(&inbuf[..n], &mut out)
                        .map_err(|e| ImageError::Crypto(e.to_string()))?
                };
                out.truncate(len);
                if !out.is_empty() && tx.send(out).is_err() {
                    // The inflating side stopped on an error of its own.
                    return reader.verify_rest().map_or(Ok(()), Err);
                }
                if n == 0 {
                    return Ok(());
                }
            }
        })
        .map_err(|e| ImageError::Crypto(format!("cannot start the decrypting thread: {e}")))?;
    Ok((rx, handle))
}

/// The plaintext from [`spawn_decryptor`], as a reader.
struct Plaintext {
    rx: Receiver<Vec<u8>>,
    cur: Vec<u8>,
    pos: usize,
    eof: bool,
}

impl Read for Plaintext {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            if self.eof || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(b) => {
                    self.cur = b;
                    self.pos = 0;
                }
                // The decrypting thread ended (done, or failed: its result says which).
                Err(_) => self.eof = true,
            }
        }
        let n = buf.len().min(self.cur.len() - self.pos);
        buf[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Hashes and counts the decompressed (tar) stream, and caps how much of it
/// may be read (see the budgets above).
struct TarStream<R> {
    inner: R,
    hasher: BgSha1,
    count: Rc<Cell<u64>>,
    limit: Rc<Cell<u64>>,
    slot: Slot,
}

impl<R: Read> Read for TarStream<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).map_err(|e| {
            // An error the inner layers did not claim is gzip's.
            fail(&self.slot, ImageError::Decompress(e.to_string()))
        })?;
        let count = self.count.get() + n as u64;
        if count > self.limit.get() {
            return Err(fail(
                &self.slot,
                ImageError::Tar(format!(
                    "the tar stream is longer than expected (more than {} bytes read)",
                    self.limit.get()
                )),
            ));
        }
        self.count.set(count);
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Runs the pipeline, writing the first tar member to `out`. Returns the
/// member size and the tar stream's SHA-1.
fn extract(
    manifest: &Manifest,
    parts: Box<dyn PartSource>,
    key: &BundleKey,
    progress: Option<Arc<AtomicU64>>,
    out: &mut impl Write,
    out_err: &dyn Fn(io::Error) -> ImageError,
) -> Result<(u64, Sha1Digest), ImageError> {
    let slot: Slot = Rc::default();
    let count = Rc::new(Cell::new(0u64));
    let limit = Rc::new(Cell::new(TAR_HEADER_BUDGET));
    let (rx, decryptor) = spawn_decryptor(manifest, parts, key, progress)?;
    let plaintext = Plaintext {
        rx,
        cur: Vec::new(),
        pos: 0,
        eof: false,
    };
    let tar_stream = TarStream {
        inner: MultiGzDecoder::new(plaintext),
        hasher: BgSha1::new(),
        count: count.clone(),
        limit: limit.clone(),
        slot: slot.clone(),
    };
    let mut archive = tar::Archive::new(tar_stream);
    let expected = manifest.image.size;
    let mut out_error: Option<io::Error> = None;

    let copied = copy_first_member(
        &mut archive,
        expected,
        &count,
        &limit,
        &slot,
        out,
        &mut out_error,
    );
    let mut tar_stream = archive.into_inner();
    let result = copied.and_then(|n| {
        // Hash the rest of the tar stream (end blocks, padding) and drive
        // every layer to its end: gzip trailer, AES padding, last part digest.
        let mut buf = vec![0u8; BUF];
        while tar_stream.read(&mut buf)? != 0 {}
        Ok(n)
    });
    let TarStream {
        inner: gz, hasher, ..
    } = tar_stream;
    let all_plaintext_read = gz.get_ref().eof;
    // Hang up before joining, so a decryptor blocked on a full channel ends.
    drop(gz);
    // Errors at the source (a part's digest, a missing part, the padding)
    // explain any later symptom in gzip or tar.
    let decrypted = decryptor
        .join()
        .unwrap_or_else(|_| Err(ImageError::Crypto("the decrypting thread panicked".into())));

    let n = match result {
        Ok(n) => n,
        Err(e) => {
            if let Some(source) = out_error {
                return Err(out_err(source));
            }
            decrypted?;
            let claimed = slot.borrow_mut().take();
            return Err(claimed.unwrap_or_else(|| ImageError::Tar(e.to_string())));
        }
    };
    decrypted?;
    if !all_plaintext_read {
        return Err(ImageError::Decompress(
            "the gzip stream ended before the end of the ciphertext".into(),
        ));
    }
    if n != expected {
        return Err(ImageError::ImageSizeMismatch {
            expected,
            actual: n,
        });
    }
    let tar_sha1 = sha1_of(hasher.finish());
    if tar_sha1 != manifest.image.digest && !manifest.image_digest_is_advisory() {
        return Err(ImageError::ImageDigestMismatch {
            expected: manifest.image.digest.to_hex(),
            actual: tar_sha1.to_hex(),
        });
    }
    Ok((n, tar_sha1))
}

/// Copies the first tar member (at most `expected + 1` bytes) into `out`.
/// Errors other than output errors are left in `slot` (or are tar's own).
fn copy_first_member<R: Read>(
    archive: &mut tar::Archive<R>,
    expected: u64,
    count: &Rc<Cell<u64>>,
    limit: &Rc<Cell<u64>>,
    slot: &Slot,
    out: &mut impl Write,
    out_error: &mut Option<io::Error>,
) -> io::Result<u64> {
    let mut entries = archive.entries()?;
    let mut entry = loop {
        let Some(entry) = entries.next() else {
            return Err(fail(
                slot,
                ImageError::Tar("the tar stream has no member".into()),
            ));
        };
        let entry = entry?;
        let t = entry.header().entry_type();
        if t.is_pax_global_extensions() {
            continue;
        }
        if t.is_file() || t.is_gnu_sparse() || t.is_contiguous() {
            break entry;
        }
        return Err(fail(
            slot,
            ImageError::Tar(format!(
                "the first tar member is not a regular file (type {:?})",
                t
            )),
        ));
    };
    // The member's data and the trailer may now be read.
    limit.set(
        count
            .get()
            .saturating_add(expected)
            .saturating_add(TAR_TRAILER_BUDGET),
    );

    let member_size = entry.size();
    let mut member = (&mut entry).take(expected.saturating_add(1));
    let mut buf = vec![0u8; BUF];
    let mut n: u64 = 0;
    loop {
        let k = match member.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        n += k as u64;
        if n > expected {
            return Err(fail(
                slot,
                ImageError::ImageSizeMismatch {
                    expected,
                    actual: member_size.max(n),
                },
            ));
        }
        if let Err(e) = out.write_all(&buf[..k]) {
            let msg = e.to_string();
            *out_error = Some(e);
            return Err(io::Error::other(msg));
        }
    }
    Ok(n)
}
