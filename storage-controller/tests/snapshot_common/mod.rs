//! Helpers shared by the snapshot tests: random data and whole-range I/O on a
//! [`BlockDevice`] in 1 MiB requests.
#![allow(dead_code)]

use bytes::Bytes;
use euca_sc::device::BlockDevice;
use rand::{rngs::StdRng, RngCore};

pub fn random(rng: &mut StdRng, len: u64) -> Vec<u8> {
    let mut v = vec![0u8; len as usize];
    rng.fill_bytes(&mut v);
    v
}

pub async fn write_all(dev: &dyn BlockDevice, mut off: u64, data: &[u8]) {
    for piece in data.chunks(1 << 20) {
        dev.write(off, Bytes::copy_from_slice(piece), false)
            .await
            .unwrap();
        off += piece.len() as u64;
    }
}

pub async fn read_all(dev: &dyn BlockDevice, off: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    let mut pos = off;
    while pos < off + len {
        let n = (1u64 << 20).min(off + len - pos);
        out.extend_from_slice(&dev.read(pos, n as u32).await.unwrap());
        pos += n;
    }
    out
}
