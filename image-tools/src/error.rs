//! The crate's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong while reading, verifying or unbundling a bundle.
///
/// Each variant names one problem; callers at the edge (CLI, RegisterImage) map
/// them to their own error form.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Reading an input file (manifest, key, certificate) failed.
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The manifest is larger than [`crate::MAX_MANIFEST_BYTES`].
    #[error("manifest is too large: more than {limit} bytes")]
    ManifestTooLarge { limit: u64 },

    /// The manifest is not well-formed XML or lacks / duplicates / misformats
    /// an element.
    #[error("malformed manifest: {0}")]
    Manifest(String),

    /// The manifest uses a digest or cipher algorithm this crate does not know.
    #[error("unsupported algorithm in manifest: {0}")]
    UnsupportedAlgorithm(String),

    /// A `<part><filename>` could escape the parts directory (or is empty).
    #[error("unsafe part file name {name:?} for part {index}: part names must be plain file names (no '/', '\\', '..', not absolute, not empty)")]
    UnsafePartName { index: u32, name: String },

    /// The manifest says `<signature>UNSIGNED</signature>`.
    #[error("manifest is unsigned (<signature>UNSIGNED</signature>)")]
    Unsigned,

    /// The signature does not verify with the signer's certificate.
    #[error("bad manifest signature: RSA-SHA1 signature over <machine_configuration> and <image> does not verify with the signer certificate")]
    BadSignature,

    /// A PEM private key or certificate could not be loaded, or is not RSA.
    #[error("invalid key or certificate: {0}")]
    InvalidKey(String),

    /// The private key decrypts neither the user's nor the cloud's copy of
    /// the bundle's AES key and IV.
    ///
    /// A service that unwraps attacker-supplied keys with its own private key
    /// must not let callers tell this apart from the later decrypt /
    /// decompress / digest errors (same external error, no detail), or it
    /// hands out a PKCS#1 v1.5 padding oracle.
    #[error("wrong private key: it decrypts neither the user_encrypted_* nor the ec2_encrypted_* AES key and IV")]
    WrongKey,

    /// A part listed in the manifest is not in the parts directory.
    #[error("part {index} ({filename}) is missing: {source}")]
    MissingPart {
        index: u32,
        filename: String,
        #[source]
        source: io::Error,
    },

    /// The part files hold fewer (or, with the same message kind, more) bytes
    /// than `<bundled_size>`.
    #[error("{}", truncated_message(*expected, *actual))]
    Truncated { expected: u64, actual: u64 },

    /// A part's SHA-1 differs from the manifest.
    #[error("part {index} ({filename}) digest mismatch: manifest says SHA-1 {expected}, file hashes to {actual}")]
    PartDigestMismatch {
        index: u32,
        filename: String,
        expected: String,
        actual: String,
    },

    /// Reading a part failed (other than it being absent).
    #[error("cannot read part {index} ({filename}): {source}")]
    PartRead {
        index: u32,
        filename: String,
        #[source]
        source: io::Error,
    },

    /// AES-128-CBC decryption failed (bad final padding): wrong AES key or
    /// corrupt ciphertext.
    #[error("AES-128-CBC decryption failed (bad padding): wrong bundle key or corrupt ciphertext")]
    Decrypt,

    /// The decrypted stream is not valid gzip.
    #[error("corrupt gzip stream inside the bundle: {0}")]
    Decompress(String),

    /// The decompressed stream is not a tar with a regular file first.
    #[error("bad tar stream inside the bundle: {0}")]
    Tar(String),

    /// The tar stream's SHA-1 differs from `<image><digest>`.
    #[error(
        "image digest mismatch: manifest says SHA-1 {expected}, the tar stream hashes to {actual}"
    )]
    ImageDigestMismatch { expected: String, actual: String },

    /// The extracted file's size differs from `<image><size>`.
    #[error("image size mismatch: manifest says {expected} bytes, the bundle holds {actual}")]
    ImageSizeMismatch { expected: u64, actual: u64 },

    /// Writing the output (temp file, fsync, rename) failed.
    #[error("cannot write output {path}: {source}")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Writing the image to the caller's writer ([`crate::unbundle_to`]) failed.
    #[error("cannot store the image: {0}")]
    Sink(#[source] io::Error),

    /// [`crate::bundle_image`] was given options it cannot bundle with
    /// (bad prefix, part size 0, unknown architecture, …).
    #[error("invalid bundle options: {0}")]
    InvalidOptions(String),

    /// Reading the image file failed while bundling (including it changing
    /// size under us).
    #[error("cannot read image {path}: {source}")]
    Input {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// An OpenSSL call failed in a way that is not one of the above.
    #[error("crypto library error: {0}")]
    Crypto(String),
}

fn truncated_message(expected: u64, actual: u64) -> String {
    if actual < expected {
        format!("truncated bundle: the parts hold {actual} bytes but the manifest's bundled_size is {expected}")
    } else {
        format!("bundle size mismatch: the parts hold {actual} bytes, more than the manifest's bundled_size {expected}")
    }
}
