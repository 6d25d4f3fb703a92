//! Block devices: the storage behind an export, in layers.
//!
//! ```text
//! NBD export ──► VolumeDevice (cow.rs: snapshot cuts, copy-before-write)
//!                   └─► LazyDevice (lazy.rs: only for volumes made from a snapshot,
//!                   │              chunks pulled from the chunk store on first touch)
//!                   └─► FileDevice (file.rs: a sparse file or block device node)
//! ```
//!
//! - [`block`]: the [`BlockDevice`] trait and [`Extent`].
//! - [`file`]: [`FileDevice`], positioned I/O through the blocking pool (or inline,
//!   `RWF_NOWAIT`, when the page cache can take it), reads into buffers from
//!   `euca_durable::buffers` that are reused once their reply is sent.
//! - [`cow`]: [`VolumeDevice`], what gets exported; [`VolumeDevice::begin_cut`] takes a
//!   crash-consistent [`Cut`] for a snapshot while the volume stays writable.
//! - [`lazy`]: [`LazyDevice`], a volume from a snapshot that fetches on first touch.
//!
//! A guest write goes NBD reader → [`VolumeDevice`] → (LazyDevice →) [`FileDevice`] →
//! `pwrite`, polled inline by the reader; a task is spawned only when the I/O has to
//! wait for the blocking pool (or, while a cut is active, for a preserve copy).

pub mod block;
pub mod cow;
pub mod file;
pub mod lazy;

pub use block::{BlockDevice, Extent};
pub use cow::{Cut, VolumeDevice};
pub use file::FileDevice;
pub use lazy::LazyDevice;
