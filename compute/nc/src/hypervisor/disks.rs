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

#[cfg(test)]
mod tests {
    use super::*;

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
