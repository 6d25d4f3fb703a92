//! euca2ools / EC2 image bundles. Reading: parse and verify the manifest,
//! unwrap the AES key, and unbundle the parts back into the raw image.
//! Writing: [`bundle_image`] makes a bundle byte-compatible with euca2ools 3.x
//! (same tar stream, manifest layout and signature; gzip bytes differ).
//!
//! A bundle is `<prefix>.manifest.xml` plus parts `<prefix>.part.NN`, made by
//! `euca-bundle-image`: the image is put in a one-member tar stream (whose
//! SHA-1 is the manifest's image digest), gzipped, encrypted with AES-128-CBC
//! under a random key and IV, and split into parts. The key and IV are wrapped
//! (RSA PKCS#1 v1.5, as ASCII hex) for the user's and the cloud's certificates,
//! and the user signs `<machine_configuration>` + `<image>` with RSA-SHA1.
//! The format is described in the project's `research/euca-bundle-format.md`.
//!
//! ```no_run
//! use std::path::Path;
//! use euca_image::{unbundle, Manifest, PrivateKey, SignerCert};
//!
//! let manifest = Manifest::from_file(Path::new("b/fixture.img.manifest.xml"))?;
//! let key = PrivateKey::from_pem_file(Path::new("cloud-pk.pem"))?;
//! let signer = SignerCert::from_pem_file(Path::new("user-cert.pem"))?;
//! let done = unbundle(&manifest, Path::new("b"), &key, &signer, Path::new("out.img"))?;
//! println!("{} bytes, key from {:?}", done.size, done.key_source);
//! # Ok::<(), euca_image::ImageError>(())
//! ```
//!
//! Bundling (see [`bundle_image`]):
//!
//! ```no_run
//! use std::path::Path;
//! use euca_image::{bundle_image, BundleOptions, Certificate, PrivateKey};
//!
//! let mut opts = BundleOptions::new(
//!     "disk.img",
//!     "out",
//!     "123456789012",
//!     Certificate::from_pem_file(Path::new("user-cert.pem"))?,
//!     PrivateKey::from_pem_file(Path::new("user-pk.pem"))?,
//!     Certificate::from_pem_file(Path::new("cloud-cert.pem"))?,
//! );
//! opts.kernel_id = Some("eki-11111111".into());
//! let done = bundle_image(&opts)?;
//! println!("{} parts, manifest {}", done.part_paths.len(), done.manifest_path.display());
//! # Ok::<(), euca_image::ImageError>(())
//! ```
//!
//! RSA is done with OpenSSL (the `openssl` crate), never the pure-Rust `rsa`
//! crate: see [`PrivateKey`] and the `crypto` module notes on RUSTSEC-2023-0071.

mod bghash;
mod bundle;
mod crypto;
mod error;
mod manifest;
mod manifest_write;
mod unbundle;

pub use bundle::{
    bundle_image, BundleOptions, BundleResult, Certificate, ImageType, ARCHITECTURES,
    DEFAULT_PART_SIZE,
};

pub use crypto::{BundleKey, KeySource, PrivateKey, SignerCert};
pub use error::ImageError;
pub use manifest::{
    BlockDeviceMapping, Bundler, EncryptedValue, Image, MachineConfiguration, Manifest, Part,
    Sha1Digest, MAX_MANIFEST_BYTES,
};
pub use unbundle::{
    unbundle, unbundle_file, unbundle_to, unbundle_with_progress, PartSource, Streamed, Unbundled,
};
