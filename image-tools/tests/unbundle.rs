//! Against bundles made by the real euca2ools 3.4 (tests/fixtures, copied from
//! shared/fixtures/euca-bundle; see its README there).

use std::fs;
use std::path::{Path, PathBuf};

use euca_image::{
    unbundle, unbundle_file, BlockDeviceMapping, ImageError, KeySource, Manifest, PrivateKey,
    SignerCert,
};

const IMAGE_DIGEST: &str = "55aa6553a5b6846d5db13dce6452d0f66aebd2b2";
const INPUT_SHA1: &str = "77265cd33be21dc2d3e60b92f6ec38da8203abda";
const MANIFEST: &str = "fixture.img.manifest.xml";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn bundle_dir(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn user_key() -> PrivateKey {
    PrivateKey::from_pem_file(&fixtures().join("keys/user-pk.pem")).unwrap()
}

fn cloud_key() -> PrivateKey {
    PrivateKey::from_pem_file(&fixtures().join("keys/cloud-pk.pem")).unwrap()
}

fn signer() -> SignerCert {
    SignerCert::from_pem_file(&fixtures().join("keys/user-cert.pem")).unwrap()
}

fn manifest(bundle: &str) -> Manifest {
    Manifest::from_file(&bundle_dir(bundle).join(MANIFEST)).unwrap()
}

fn input_image() -> Vec<u8> {
    fs::read(fixtures().join("input/fixture.img")).unwrap()
}

/// A copy of a fixture bundle in a fresh temp dir (plus an empty `out/`).
fn copy_bundle(name: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("bundle");
    fs::create_dir(&dst).unwrap();
    for e in fs::read_dir(bundle_dir(name)).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dst.join(e.file_name())).unwrap();
    }
    fs::create_dir(tmp.path().join("out")).unwrap();
    tmp
}

/// The output does not exist and no temp file was left beside it.
fn assert_nothing_written(out: &Path) {
    assert!(!out.exists(), "{} exists after a failure", out.display());
    let left: Vec<_> = fs::read_dir(out.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Copies `bundle`, lets `tamper` change the copy's parts, unbundles it with
/// `key` and returns the error, after checking that nothing was written under
/// the output name.
fn refused(bundle: &str, key: &PrivateKey, tamper: impl FnOnce(&Path)) -> ImageError {
    let tmp = copy_bundle(bundle);
    let dir = tmp.path().join("bundle");
    tamper(&dir);
    let out = tmp.path().join("out/fixture.img");
    let err = unbundle(&manifest(bundle), &dir, key, &signer(), &out).unwrap_err();
    assert_nothing_written(&out);
    err
}

fn check_ok(bundle: &str, key: &PrivateKey, expect_source: KeySource) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("fixture.img");
    let m = manifest(bundle);
    let done = unbundle(&m, &bundle_dir(bundle), key, &signer(), &out).unwrap();
    assert_eq!(done.path, out);
    assert_eq!(done.size, 3_145_728);
    assert_eq!(done.tar_sha1.to_hex(), IMAGE_DIGEST);
    assert_eq!(done.key_source, expect_source);
    let got = fs::read(&out).unwrap();
    assert!(
        got == input_image(),
        "output differs from input/fixture.img"
    );
    // Only the output is left in the directory.
    assert_eq!(fs::read_dir(tmp.path()).unwrap().count(), 1);
}

#[test]
fn default_bundle_with_user_key() {
    check_ok("bundle-default", &user_key(), KeySource::User);
}

#[test]
fn default_bundle_with_cloud_key() {
    check_ok("bundle-default", &cloud_key(), KeySource::Cloud);
}

#[test]
fn one_mib_parts_bundle_with_user_key() {
    check_ok("bundle-1MiB-parts", &user_key(), KeySource::User);
}

#[test]
fn one_mib_parts_bundle_with_cloud_key() {
    check_ok("bundle-1MiB-parts", &cloud_key(), KeySource::Cloud);
}

#[test]
fn unbundle_file_reads_the_manifest_path() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("img");
    let dir = bundle_dir("bundle-1MiB-parts");
    let done = unbundle_file(&dir.join(MANIFEST), &dir, &cloud_key(), &signer(), &out).unwrap();
    assert_eq!(done.size, 3_145_728);
    assert!(fs::read(&out).unwrap() == input_image());
}

#[test]
fn input_fixture_is_what_the_readme_says() {
    use sha1_hex::sha1_hex;
    assert_eq!(sha1_hex(&input_image()), INPUT_SHA1);
}

/// SHA-1 through OpenSSL, so the tests need no extra dependency.
mod sha1_hex {
    pub fn sha1_hex(data: &[u8]) -> String {
        hex::encode(openssl::sha::sha1(data))
    }
}

#[test]
fn bundle_key_is_the_fixed_one_from_either_copy() {
    let m = manifest("bundle-1MiB-parts");
    for (key, source) in [
        (user_key(), KeySource::User),
        (cloud_key(), KeySource::Cloud),
    ] {
        let k = m.decrypt_bundle_key(&key).unwrap();
        assert_eq!(hex::encode(k.key), "00112233445566778899aabbccddeeff");
        assert_eq!(hex::encode(k.iv), "0f0e0d0c0b0a09080706050403020100");
        assert_eq!(k.source, source);
    }
}

#[test]
fn manifest_fields_of_the_1mib_parts_bundle() {
    let m = manifest("bundle-1MiB-parts");
    assert_eq!(m.version, "2007-10-10");
    assert_eq!(m.bundler.name, "euca2ools");
    assert_eq!(m.bundler.version, "3.4-devel");
    assert_eq!(m.bundler.release, "0");
    let mc = &m.machine_configuration;
    assert_eq!(mc.architecture.as_deref(), Some("x86_64"));
    assert_eq!(mc.kernel_id.as_deref(), Some("eki-11111111"));
    assert_eq!(mc.ramdisk_id.as_deref(), Some("eri-22222222"));
    let bdm = |v: &str, d: &str| BlockDeviceMapping {
        virtual_name: v.into(),
        device: d.into(),
    };
    assert_eq!(
        mc.block_device_mappings,
        vec![
            bdm("ami", "sda1"),
            bdm("ephemeral0", "sda2"),
            bdm("root", "/dev/sda1"),
            bdm("swap", "sda3"),
        ]
    );
    assert_eq!(mc.product_codes, vec!["PC0001", "PC0002"]);
    let img = &m.image;
    assert_eq!(img.name, "fixture.img");
    assert_eq!(img.user.as_deref(), Some("123456789012"));
    assert_eq!(img.image_type.as_deref(), Some("machine"));
    assert_eq!(img.digest.to_hex(), IMAGE_DIGEST);
    assert_eq!(img.size, 3_145_728);
    assert_eq!(img.bundled_size, 3_146_432);
    assert_eq!(img.bundled_size, 3 * 1_048_576 + 704);
    for v in [
        &img.ec2_encrypted_key,
        &img.ec2_encrypted_iv,
        &img.user_encrypted_key,
        &img.user_encrypted_iv,
    ] {
        let v = v.as_ref().unwrap();
        assert_eq!(v.ciphertext.len(), 256, "RSA-2048 block");
    }
    let alg = |v: &Option<euca_image::EncryptedValue>| v.as_ref().unwrap().algorithm.clone();
    assert_eq!(alg(&img.ec2_encrypted_key).as_deref(), Some("AES-128-CBC"));
    assert_eq!(alg(&img.user_encrypted_key).as_deref(), Some("AES-128-CBC"));
    assert_eq!(alg(&img.ec2_encrypted_iv), None);
    assert_eq!(alg(&img.user_encrypted_iv), None);
    assert!(img
        .ec2_encrypted_key
        .as_ref()
        .unwrap()
        .ciphertext
        .starts_with(&[0x15, 0x98, 0x8e, 0xd0]));
    let parts: Vec<(u32, &str, String)> = img
        .parts
        .iter()
        .map(|p| (p.index, p.filename.as_str(), p.digest.to_hex()))
        .collect();
    assert_eq!(
        parts,
        vec![
            (
                0,
                "fixture.img.part.00",
                "691898f80ec5fdb0cef188a41c6430da9c093c1c".to_string()
            ),
            (
                1,
                "fixture.img.part.01",
                "79d21d5f2ec4427af6af237fa4ccaa5a3a787dc6".to_string()
            ),
            (
                2,
                "fixture.img.part.02",
                "0e69ab9591ab1a6af08b99831b709141593f8052".to_string()
            ),
            (
                3,
                "fixture.img.part.03",
                "de0b1d50b7b31319b7eeba62eebe1c46098484cf".to_string()
            ),
        ]
    );
    assert!(m.signature.starts_with("6752b7dc84a4849e"));
    assert_eq!(m.signature.len(), 512);
    assert!(!m.image_digest_is_advisory());
}

#[test]
fn manifest_fields_of_the_default_bundle() {
    let m = manifest("bundle-default");
    let mc = &m.machine_configuration;
    assert_eq!(mc.architecture.as_deref(), Some("x86_64"));
    assert_eq!(mc.kernel_id, None);
    assert_eq!(mc.ramdisk_id, None);
    assert!(mc.block_device_mappings.is_empty());
    assert!(mc.product_codes.is_empty());
    assert_eq!(m.image.digest.to_hex(), IMAGE_DIGEST);
    assert_eq!(m.image.size, 3_145_728);
    assert_eq!(m.image.bundled_size, 3_146_896);
    assert_eq!(m.image.parts.len(), 1);
    assert_eq!(m.image.parts[0].filename, "fixture.img.part.00");
    assert_eq!(
        m.image.parts[0].digest.to_hex(),
        "e23fa0d17a622896a60bc1b73a5153d6fea5dd72"
    );
}

#[test]
fn signed_bytes_are_the_raw_machine_configuration_and_image_text() {
    let raw = fs::read_to_string(bundle_dir("bundle-1MiB-parts").join(MANIFEST)).unwrap();
    let m = Manifest::from_bytes(raw.as_bytes()).unwrap();
    let a = raw.find("<machine_configuration>").unwrap();
    let b = raw.find("</machine_configuration>").unwrap() + "</machine_configuration>".len();
    let c = raw.find("<image>").unwrap();
    let d = raw.find("</image>").unwrap() + "</image>".len();
    let expected = format!("{}{}", &raw[a..b], &raw[c..d]);
    assert_eq!(m.signed_bytes(), expected.as_bytes());
    m.verify_signature(&signer()).unwrap();
}

// ---------------------------------------------------------------------------
// Negative cases: each names its error and leaves nothing under the output.

#[test]
fn wrong_private_key_is_refused() {
    let tmp = copy_bundle("bundle-default");
    let out = tmp.path().join("out/fixture.img");
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let other = PrivateKey::from_pem(&rsa.private_key_to_pem().unwrap()).unwrap();
    let m = manifest("bundle-default");
    let err = unbundle(&m, &tmp.path().join("bundle"), &other, &signer(), &out).unwrap_err();
    assert!(matches!(err, ImageError::WrongKey), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn wrong_signer_certificate_is_refused() {
    let tmp = copy_bundle("bundle-default");
    let out = tmp.path().join("out/fixture.img");
    let cloud_cert = SignerCert::from_pem_file(&fixtures().join("keys/cloud-cert.pem")).unwrap();
    let m = manifest("bundle-default");
    let err = unbundle(
        &m,
        &tmp.path().join("bundle"),
        &user_key(),
        &cloud_cert,
        &out,
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::BadSignature), "{err}");
    assert_nothing_written(&out);
}

fn flip_byte(path: &Path, offset: usize) {
    let mut data = fs::read(path).unwrap();
    data[offset] ^= 0x01;
    fs::write(path, data).unwrap();
}

#[test]
fn tampered_part_byte_is_refused_single_part() {
    let err = refused("bundle-default", &user_key(), |dir| {
        flip_byte(&dir.join("fixture.img.part.00"), 1_000_000);
    });
    match &err {
        ImageError::PartDigestMismatch {
            index,
            filename,
            expected,
            ..
        } => {
            assert_eq!(*index, 0);
            assert_eq!(filename, "fixture.img.part.00");
            assert_eq!(expected, "e23fa0d17a622896a60bc1b73a5153d6fea5dd72");
        }
        other => panic!("expected PartDigestMismatch, got {other:?}"),
    }
}

#[test]
fn tampered_part_byte_is_refused_middle_part() {
    let err = refused("bundle-1MiB-parts", &cloud_key(), |dir| {
        flip_byte(&dir.join("fixture.img.part.01"), 12_345);
    });
    assert!(
        matches!(err, ImageError::PartDigestMismatch { index: 1, .. }),
        "{err}"
    );
}

#[test]
fn tampered_last_byte_of_last_part_is_refused() {
    // The last byte is in the AES padding block: decryption itself fails
    // there, and the part digest names the cause.
    let err = refused("bundle-1MiB-parts", &user_key(), |dir| {
        flip_byte(&dir.join("fixture.img.part.03"), 703);
    });
    assert!(
        matches!(err, ImageError::PartDigestMismatch { index: 3, .. }),
        "{err}"
    );
}

#[test]
fn missing_last_part_is_refused() {
    let err = refused("bundle-1MiB-parts", &user_key(), |dir| {
        fs::remove_file(dir.join("fixture.img.part.03")).unwrap();
    });
    match &err {
        ImageError::MissingPart {
            index, filename, ..
        } => {
            assert_eq!(*index, 3);
            assert_eq!(filename, "fixture.img.part.03");
        }
        other => panic!("expected MissingPart, got {other:?}"),
    }
}

#[test]
fn truncated_last_part_is_refused() {
    let err = refused("bundle-1MiB-parts", &user_key(), |dir| {
        let last = dir.join("fixture.img.part.03");
        let data = fs::read(&last).unwrap();
        fs::write(&last, &data[..500]).unwrap();
    });
    assert!(
        matches!(
            err,
            ImageError::Truncated {
                expected: 3_146_432,
                actual: 3_146_228
            }
        ),
        "{err}"
    );
    assert!(err.to_string().starts_with("truncated bundle"));
}

fn refuse_part_name(bad_name: &str) {
    let tmp = copy_bundle("bundle-1MiB-parts");
    let dir = tmp.path().join("bundle");
    let man = dir.join(MANIFEST);
    let text = fs::read_to_string(&man).unwrap().replace(
        "<filename>fixture.img.part.03<",
        &format!("<filename>{bad_name}<"),
    );
    fs::write(&man, &text).unwrap();
    // Parsing alone refuses it.
    let err = Manifest::from_bytes(text.as_bytes()).unwrap_err();
    assert!(
        matches!(&err, ImageError::UnsafePartName { index: 3, name } if name == bad_name),
        "{err}"
    );
    // And so does unbundling, before anything is written.
    let out = tmp.path().join("out/fixture.img");
    let err = unbundle_file(&man, &dir, &user_key(), &signer(), &out).unwrap_err();
    assert!(
        matches!(err, ImageError::UnsafePartName { index: 3, .. }),
        "{err}"
    );
    assert_nothing_written(&out);
    assert!(!tmp.path().join("x").exists());
    assert_eq!(
        fs::read_dir(&dir).unwrap().count(),
        5,
        "bundle dir unchanged"
    );
}

#[test]
fn part_name_with_dotdot_is_refused() {
    refuse_part_name("../x");
}

#[test]
fn absolute_part_name_is_refused() {
    refuse_part_name("/x");
}

#[test]
fn other_unsafe_part_names_are_refused() {
    for name in ["a/b", "a\\b", "..", ""] {
        refuse_part_name(name);
    }
}

fn tampered(bundle: &str, from: &str, to: &str) -> Manifest {
    let text = fs::read_to_string(bundle_dir(bundle).join(MANIFEST)).unwrap();
    assert!(text.contains(from));
    Manifest::from_bytes(text.replacen(from, to, 1).as_bytes()).unwrap()
}

#[test]
fn tampered_manifest_field_fails_the_signature() {
    for (from, to) in [
        ("<kernel_id>eki-11111111<", "<kernel_id>eki-11111112<"),
        ("<device>sda3<", "<device>sda4<"),
        ("<size>3145728<", "<size>3145727<"),
        (
            "<filename>fixture.img.part.03<",
            "<filename>fixture.img.part.3<",
        ),
    ] {
        let m = tampered("bundle-1MiB-parts", from, to);
        let tmp = copy_bundle("bundle-1MiB-parts");
        let out = tmp.path().join("out/fixture.img");
        let err =
            unbundle(&m, &tmp.path().join("bundle"), &user_key(), &signer(), &out).unwrap_err();
        assert!(matches!(err, ImageError::BadSignature), "{from}: {err}");
        assert_nothing_written(&out);
    }
}

#[test]
fn fields_outside_the_signed_text_do_not_matter() {
    // euca2ools signs only machine_configuration + image.
    let m = tampered("bundle-default", "<release>0<", "<release>7<");
    m.verify_signature(&signer()).unwrap();
}

#[test]
fn unsigned_manifest_is_refused() {
    let text = fs::read_to_string(bundle_dir("bundle-default").join(MANIFEST)).unwrap();
    let start = text.find("<signature>").unwrap();
    let text = format!(
        "{}<signature>UNSIGNED</signature></manifest>",
        &text[..start]
    );
    let m = Manifest::from_bytes(text.as_bytes()).unwrap();
    let tmp = copy_bundle("bundle-default");
    let out = tmp.path().join("out/fixture.img");
    let err = unbundle(&m, &tmp.path().join("bundle"), &user_key(), &signer(), &out).unwrap_err();
    assert!(matches!(err, ImageError::Unsigned), "{err}");
    assert_nothing_written(&out);
}

// ---------------------------------------------------------------------------
// Re-signed manifests (with the fixture's user key) exercise the checks that
// come after the signature.

fn resign(text: &str) -> Manifest {
    let unsigned = Manifest::from_bytes(text.as_bytes()).unwrap();
    let pem = fs::read(fixtures().join("keys/user-pk.pem")).unwrap();
    let pkey = openssl::pkey::PKey::private_key_from_pem(&pem).unwrap();
    let mut s = openssl::sign::Signer::new(openssl::hash::MessageDigest::sha1(), &pkey).unwrap();
    let sig = hex::encode(s.sign_oneshot_to_vec(unsigned.signed_bytes()).unwrap());
    let start = text.find("<signature>").unwrap();
    let m = Manifest::from_bytes(
        format!("{}<signature>{sig}</signature></manifest>", &text[..start]).as_bytes(),
    )
    .unwrap();
    m.verify_signature(&signer()).unwrap();
    m
}

fn resigned(bundle: &str, from: &str, to: &str) -> Manifest {
    let text = fs::read_to_string(bundle_dir(bundle).join(MANIFEST)).unwrap();
    assert!(text.contains(from));
    resign(&text.replacen(from, to, 1))
}

#[test]
fn image_digest_mismatch_is_refused() {
    let m = resigned(
        "bundle-1MiB-parts",
        IMAGE_DIGEST,
        "55aa6553a5b6846d5db13dce6452d0f66aebd2b3",
    );
    let tmp = copy_bundle("bundle-1MiB-parts");
    let out = tmp.path().join("out/fixture.img");
    let err = unbundle(&m, &tmp.path().join("bundle"), &user_key(), &signer(), &out).unwrap_err();
    match &err {
        ImageError::ImageDigestMismatch { expected, actual } => {
            assert_eq!(expected, "55aa6553a5b6846d5db13dce6452d0f66aebd2b3");
            assert_eq!(actual, IMAGE_DIGEST);
        }
        other => panic!("expected ImageDigestMismatch, got {other:?}"),
    }
    assert_nothing_written(&out);
}

#[test]
fn image_size_mismatch_is_refused() {
    for size in ["3145727", "3145729"] {
        let m = resigned(
            "bundle-default",
            "<size>3145728<",
            &format!("<size>{size}<"),
        );
        let tmp = copy_bundle("bundle-default");
        let out = tmp.path().join("out/fixture.img");
        let err =
            unbundle(&m, &tmp.path().join("bundle"), &user_key(), &signer(), &out).unwrap_err();
        assert!(
            matches!(err, ImageError::ImageSizeMismatch { .. }),
            "{size}: {err}"
        );
        assert_nothing_written(&out);
    }
}

#[test]
fn signed_but_wrong_part_digest_is_refused() {
    let m = resigned(
        "bundle-1MiB-parts",
        "0e69ab9591ab1a6af08b99831b709141593f8052",
        "0e69ab9591ab1a6af08b99831b709141593f8053",
    );
    let tmp = copy_bundle("bundle-1MiB-parts");
    let out = tmp.path().join("out/fixture.img");
    let err = unbundle(&m, &tmp.path().join("bundle"), &user_key(), &signer(), &out).unwrap_err();
    assert!(
        matches!(err, ImageError::PartDigestMismatch { index: 2, .. }),
        "{err}"
    );
    assert_nothing_written(&out);
}

#[test]
fn failure_leaves_an_existing_output_untouched() {
    let tmp = copy_bundle("bundle-1MiB-parts");
    let dir = tmp.path().join("bundle");
    flip_byte(&dir.join("fixture.img.part.02"), 7);
    let out = tmp.path().join("out/fixture.img");
    fs::write(&out, b"previous").unwrap();
    let err = unbundle(
        &manifest("bundle-1MiB-parts"),
        &dir,
        &user_key(),
        &signer(),
        &out,
    )
    .unwrap_err();
    assert!(
        matches!(err, ImageError::PartDigestMismatch { index: 2, .. }),
        "{err}"
    );
    assert_eq!(fs::read(&out).unwrap(), b"previous");
    assert_eq!(fs::read_dir(tmp.path().join("out")).unwrap().count(), 1);
}

/// Without a signer certificate (euca-unbundle with no -c / EC2_CERT) the signature
/// is not checked, but every part's digest and the image digest still are.
#[test]
fn without_signer_the_signature_is_skipped_and_digests_still_checked() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let mut m = manifest("bundle-1MiB-parts");
    m.signature = "UNSIGNED".into();
    let tmp = copy_bundle("bundle-1MiB-parts");
    let dir = tmp.path().join("bundle");
    let out = tmp.path().join("out/fixture.img");
    let err = euca_image::unbundle_with_progress(
        &m,
        &dir,
        &user_key(),
        Some(&signer()),
        &out,
        Arc::default(),
    )
    .unwrap_err();
    assert!(matches!(err, ImageError::Unsigned), "{err:?}");
    assert_nothing_written(&out);
    let progress = Arc::new(AtomicU64::new(0));
    let done =
        euca_image::unbundle_with_progress(&m, &dir, &user_key(), None, &out, progress.clone())
            .unwrap();
    assert_eq!(done.tar_sha1.to_hex(), IMAGE_DIGEST);
    assert!(fs::read(&out).unwrap() == input_image());
    assert_eq!(progress.load(Ordering::Relaxed), m.image.bundled_size);
    fs::remove_file(&out).unwrap();

    let part = dir.join("fixture.img.part.01");
    let mut bytes = fs::read(&part).unwrap();
    bytes[7] ^= 0x01;
    fs::write(&part, bytes).unwrap();
    let err = euca_image::unbundle_with_progress(&m, &dir, &user_key(), None, &out, Arc::default())
        .unwrap_err();
    assert!(
        matches!(err, ImageError::PartDigestMismatch { index: 1, .. }),
        "{err:?}"
    );
    assert_nothing_written(&out);
}

/// Parts from memory, as an object store would stream them: each part handed
/// over in `chunk`-byte reads.
struct MemParts {
    parts: Vec<Vec<u8>>,
    chunk: usize,
    cur: Option<(usize, usize)>,
    opened: Vec<u32>,
}

impl MemParts {
    fn of(bundle: &str, chunk: usize) -> Self {
        let parts = manifest(bundle)
            .image
            .parts
            .iter()
            .map(|p| fs::read(bundle_dir(bundle).join(&p.filename)).unwrap())
            .collect();
        MemParts {
            parts,
            chunk,
            cur: None,
            opened: Vec::new(),
        }
    }
}

impl euca_image::PartSource for MemParts {
    fn open(&mut self, part: &euca_image::Part) -> std::io::Result<()> {
        self.opened.push(part.index);
        if part.index as usize >= self.parts.len() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        self.cur = Some((part.index as usize, 0));
        Ok(())
    }

    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let Some((i, pos)) = self.cur else {
            return Ok(0);
        };
        let data = &self.parts[i][pos..];
        let n = data.len().min(buf.len()).min(self.chunk);
        buf[..n].copy_from_slice(&data[..n]);
        self.cur = Some((i, pos + n));
        Ok(n)
    }
}

#[test]
fn unbundle_to_a_writer_from_streamed_parts() {
    let m = manifest("bundle-1MiB-parts");
    // Reads shorter than an AES block and not aligned to it, then larger ones.
    for chunk in [13, 4096, 1 << 20] {
        let mut out = Vec::new();
        let parts = MemParts::of("bundle-1MiB-parts", chunk);
        let done =
            euca_image::unbundle_to(&m, parts, &cloud_key(), Some(&signer()), &mut out, None)
                .unwrap();
        assert_eq!(out, input_image(), "chunk {chunk}");
        assert_eq!(done.size, out.len() as u64);
        assert_eq!(done.tar_sha1.to_hex(), IMAGE_DIGEST);
        assert_eq!(done.key_source, KeySource::Cloud);
    }
}

#[test]
fn unbundle_to_checks_what_a_directory_check_would_have() {
    let m = manifest("bundle-1MiB-parts");
    let run = |parts: MemParts| {
        let mut out = Vec::new();
        euca_image::unbundle_to(&m, parts, &user_key(), Some(&signer()), &mut out, None)
            .unwrap_err()
    };
    // A part that grew: the running total passes <bundled_size>.
    let mut long = MemParts::of("bundle-1MiB-parts", 65536);
    long.parts[3].extend_from_slice(&[0; 16]);
    let e = run(long);
    assert!(matches!(e, ImageError::Truncated { .. }), "{e}");
    // A part cut short: the total falls short (or the last part's digest fails).
    let mut short = MemParts::of("bundle-1MiB-parts", 65536);
    short.parts[3].truncate(100);
    let e = run(short);
    assert!(
        matches!(
            e,
            ImageError::Truncated { .. } | ImageError::PartDigestMismatch { index: 3, .. }
        ),
        "{e}"
    );
    // A flipped byte in a middle part is named as that part.
    let mut bad = MemParts::of("bundle-1MiB-parts", 65536);
    bad.parts[1][1000] ^= 1;
    let e = run(bad);
    assert!(
        matches!(e, ImageError::PartDigestMismatch { index: 1, .. }),
        "{e}"
    );
    // A part the source cannot find.
    let mut gone = MemParts::of("bundle-1MiB-parts", 65536);
    gone.parts.truncate(2);
    let e = run(gone);
    assert!(matches!(e, ImageError::MissingPart { index: 2, .. }), "{e}");
}

#[test]
fn unbundle_to_reports_a_failing_writer_as_sink() {
    struct Full(usize);
    impl std::io::Write for Full {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.0 < buf.len() {
                return Err(std::io::Error::other("no room"));
            }
            self.0 -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let m = manifest("bundle-1MiB-parts");
    let parts = MemParts::of("bundle-1MiB-parts", 65536);
    let e = euca_image::unbundle_to(&m, parts, &user_key(), None, &mut Full(1 << 20), None)
        .unwrap_err();
    assert!(matches!(e, ImageError::Sink(_)), "{e}");
    assert!(e.to_string().contains("no room"), "{e}");
}
