//! Instance files: the root overlay and ephemeral disk (`qemu-img`), durable JSON
//! records (temp + fsync + rename), removal.
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::NcError;

const GIB: u64 = 1 << 30;

/// Runs `qemu-img` with `args`; its stderr in the error.
async fn qemu_img(bin: &Path, args: &[&std::ffi::OsStr]) -> Result<(), NcError> {
    let out = tokio::process::Command::new(bin)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| NcError::Internal(format!("running {}: {e}", bin.display())))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NcError::Internal(format!(
            "qemu-img failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `root.qcow2`: a qcow2 overlay whose backing file is the cached image (raw, read
/// only, never copied).
pub async fn create_overlay(bin: &Path, image: &Path, overlay: &Path) -> Result<(), NcError> {
    let image = std::path::absolute(image)?;
    qemu_img(
        bin,
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            "-F".as_ref(),
            "raw".as_ref(),
            "-b".as_ref(),
            image.as_os_str(),
            overlay.as_os_str(),
        ],
    )
    .await
}

/// The ephemeral disk's size: the type's disk minus the root image, at least 1 GiB.
pub fn ephemeral_gib(disk_gib: u64, image_bytes: u64) -> u64 {
    disk_gib.saturating_sub(image_bytes.div_ceil(GIB)).max(1)
}

/// `ephemeral.qcow2` of `gib` GiB (sparse: qcow2 allocates on write).
pub async fn create_ephemeral(bin: &Path, path: &Path, gib: u64) -> Result<(), NcError> {
    let size = format!("{gib}G");
    qemu_img(
        bin,
        &[
            "create".as_ref(),
            "-q".as_ref(),
            "-f".as_ref(),
            "qcow2".as_ref(),
            path.as_os_str(),
            size.as_ref(),
        ],
    )
    .await
}

/// Writes `data` to `path` durably: temp file, fsync, rename, fsync of the dir
/// (blocking).
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Removes the files an instance no longer needs once its QEMU is gone: disks,
/// socket, pid file (blocking; the console log and the records stay).
pub fn remove_runtime_files(dir: &Path) {
    for f in ["root.qcow2", "ephemeral.qcow2", "qmp.sock", "qemu.pid"] {
        match std::fs::remove_file(dir.join(f)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(dir = %dir.display(), file = f, "removing: {e}"),
        }
    }
}

/// The last `max` bytes of `path` (blocking); empty when it does not exist yet.
pub fn tail(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    let start = len.saturating_sub(max as u64);
    f.seek(SeekFrom::Start(start))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    f.take(max as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Most bytes of serial console an instance keeps on disk (plus what the guest
/// writes between two trims, one second apart).
pub const CONSOLE_MAX: u64 = 1 << 20;
/// What a trim leaves: at least this much of the newest output (GetConsoleOutput
/// reads the last 64 KiB).
pub const CONSOLE_KEEP: u64 = 512 << 10;

/// Bounds `console.log` while QEMU appends to it (blocking). QEMU opens it with
/// `append=on`, that is `O_APPEND`: each write lands at the end as it is then,
/// so the head can be dropped under it. Once the file passes `max`, the head is
/// cut so that at least the last `keep` bytes stay: with
/// `fallocate(FALLOC_FL_COLLAPSE_RANGE)` (ext4, XFS; whole blocks, atomic
/// against appends, nothing lost) where the filesystem has it, else by copying
/// the tail to the start and truncating (output the guest writes during that
/// copy can be lost). Returns how many bytes were dropped.
pub fn trim_console(path: &Path, max: u64, keep: u64) -> std::io::Result<u64> {
    trim_console_with(path, max, keep, true)
}

fn trim_console_with(path: &Path, max: u64, keep: u64, collapse: bool) -> std::io::Result<u64> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    use std::os::unix::io::AsRawFd;
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    let len = meta.len();
    if len <= max {
        return Ok(0);
    }
    let keep = keep.min(max);
    if collapse {
        let blk = meta.blksize().max(1);
        let cut = (len - keep) / blk * blk;
        if cut > 0 {
            // SAFETY: a plain syscall on a descriptor this function owns.
            let r = unsafe {
                libc::fallocate(
                    f.as_raw_fd(),
                    libc::FALLOC_FL_COLLAPSE_RANGE,
                    0,
                    cut as libc::off_t,
                )
            };
            if r == 0 {
                return Ok(cut);
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => {}
                _ => return Err(e),
            }
        }
    }
    // Copy the tail (to the end as it is now) to the start, then truncate.
    let len = f.metadata()?.len();
    let from = len.saturating_sub(keep);
    let mut buf = vec![0u8; (len - from) as usize];
    f.read_exact_at(&mut buf, from)?;
    f.write_all_at(&buf, 0)?;
    f.set_len(buf.len() as u64)?;
    Ok(from)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A console bigger than the cap, its writer appending (O_APPEND, as QEMU's
    /// `append=on`) before and after each trim: the file ends at most at the cap
    /// plus the next write, the newest bytes are all there, in order.
    #[test]
    fn console_trims_keep_the_tail_under_an_appending_writer() {
        for collapse in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("console.log");
            let mut w = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            let line = |n: u32| format!("line {n:08}\n");
            let mut n = 0u32;
            for _ in 0..4 {
                // ~400 KiB per round.
                for _ in 0..(400 << 10) / 14 {
                    w.write_all(line(n).as_bytes()).unwrap();
                    n += 1;
                }
                trim_console_with(&path, 256 << 10, 64 << 10, collapse).unwrap();
                let len = std::fs::metadata(&path).unwrap().len();
                assert!(len <= 256 << 10, "{len} (collapse {collapse})");
                assert!(len >= 64 << 10, "{len}");
            }
            w.write_all(line(n).as_bytes()).unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            // Whole lines from some point on (collapse cuts whole blocks; the
            // copy keeps exactly `keep`): the last 1000 lines, consecutive.
            let tail: Vec<&str> = text.lines().rev().take(1000).collect();
            for (k, l) in tail.iter().enumerate() {
                assert_eq!(*l, line(n - k as u32).trim_end(), "collapse {collapse}");
            }
            // Not over the cap: nothing to do.
            assert_eq!(
                trim_console_with(&path, 1 << 20, 64 << 10, collapse).unwrap(),
                0
            );
        }
        assert_eq!(
            trim_console(Path::new("/nonexistent/console.log"), 1, 1).unwrap(),
            0
        );
    }

    #[test]
    fn ephemeral_sizes() {
        assert_eq!(ephemeral_gib(5, 8 << 20), 4);
        assert_eq!(ephemeral_gib(5, 5 * GIB), 1);
        assert_eq!(ephemeral_gib(0, 0), 1);
        assert_eq!(ephemeral_gib(10, 0), 10);
    }

    #[test]
    fn tail_and_atomic_write() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f.json");
        write_atomic(&p, b"0123456789").unwrap();
        write_atomic(&p, b"abcdefghij").unwrap();
        assert_eq!(tail(&p, 4).unwrap(), b"ghij");
        assert_eq!(tail(&p, 100).unwrap(), b"abcdefghij");
        assert!(tail(&d.path().join("none"), 4).unwrap().is_empty());
        assert!(!d.path().join("f.json.tmp").exists());
    }
}
