//! Bundles built here (tar → gzip → AES → parts, keys wrapped for the fixture
//! user's certificate and signed with the fixture user's key) to cover
//! reader cases the euca2ools fixtures do not: a trailing empty part,
//! concatenated gzip members, other tar layouts, bad streams.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use euca_image::{unbundle_file, ImageError, PrivateKey, SignerCert};
use openssl::encrypt::Encrypter;
use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::rsa::Padding;
use openssl::sign::Signer;
use openssl::symm::{encrypt, Cipher};
use openssl::x509::X509;

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keys")
}

const KEY: [u8; 16] = [0x11; 16];
const IV: [u8; 16] = [0x22; 16];

fn image(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn tar_of(name: &str, data: &[u8], gnu: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, name, data).unwrap();
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn sha1_hex(data: &[u8]) -> String {
    hex::encode(openssl::sha::sha1(data))
}

fn wrap(hexstr: &str) -> String {
    let cert = X509::from_pem(&fs::read(keys().join("user-cert.pem")).unwrap()).unwrap();
    let pk = cert.public_key().unwrap();
    let mut e = Encrypter::new(&pk).unwrap();
    e.set_rsa_padding(Padding::PKCS1).unwrap();
    let mut out = vec![0u8; e.encrypt_len(hexstr.as_bytes()).unwrap()];
    let n = e.encrypt(hexstr.as_bytes(), &mut out).unwrap();
    hex::encode(&out[..n])
}

/// Writes a bundle of `gz` (the compressed stream) into `dir`; returns the
/// manifest path. `tar_digest` and `size` go into the manifest as given.
fn write_bundle(dir: &Path, gz: &[u8], tar_digest: &str, size: u64, part_size: usize) -> PathBuf {
    let ct = encrypt(Cipher::aes_128_cbc(), &KEY, Some(&IV), gz).unwrap();
    let mut parts: Vec<&[u8]> = ct.chunks(part_size).collect();
    if ct.len() % part_size == 0 {
        parts.push(&[]); // what euca2ools does
    }
    let mut parts_xml = format!("<parts count=\"{}\">", parts.len());
    for (i, p) in parts.iter().enumerate() {
        let name = format!("img.part.{i:02}");
        fs::write(dir.join(&name), p).unwrap();
        parts_xml.push_str(&format!(
            "<part index=\"{i}\"><filename>{name}</filename><digest algorithm=\"SHA1\">{}</digest></part>",
            sha1_hex(p)
        ));
    }
    parts_xml.push_str("</parts>");
    let (k, iv) = (hex::encode(KEY), hex::encode(IV));
    let mc = "<machine_configuration><architecture>x86_64</architecture></machine_configuration>";
    let img = format!(
        "<image><name>img</name><user>123456789012</user><type>machine</type>\
<digest algorithm=\"SHA1\">{tar_digest}</digest><size>{size}</size><bundled_size>{}</bundled_size>\
<ec2_encrypted_key algorithm=\"AES-128-CBC\">{}</ec2_encrypted_key>\
<user_encrypted_key algorithm=\"AES-128-CBC\">{}</user_encrypted_key>\
<ec2_encrypted_iv>{}</ec2_encrypted_iv><user_encrypted_iv>{}</user_encrypted_iv>{parts_xml}</image>",
        ct.len(),
        wrap(&k),
        wrap(&k),
        wrap(&iv),
        wrap(&iv)
    );
    let pkey = PKey::private_key_from_pem(&fs::read(keys().join("user-pk.pem")).unwrap()).unwrap();
    let mut s = Signer::new(MessageDigest::sha1(), &pkey).unwrap();
    let sig = hex::encode(
        s.sign_oneshot_to_vec(format!("{mc}{img}").as_bytes())
            .unwrap(),
    );
    let xml = format!(
        "<?xml version='1.0' encoding='ASCII'?>\n<manifest><version>2007-10-10</version>\
<bundler><name>euca2ools</name><version>3.4-devel</version><release>0</release></bundler>\
{mc}{img}<signature>{sig}</signature></manifest>"
    );
    let path = dir.join("img.manifest.xml");
    fs::write(&path, xml).unwrap();
    path
}

fn run(dir: &Path, manifest: &Path) -> (PathBuf, Result<euca_image::Unbundled, ImageError>) {
    let key = PrivateKey::from_pem_file(&keys().join("user-pk.pem")).unwrap();
    let signer = SignerCert::from_pem_file(&keys().join("user-cert.pem")).unwrap();
    let out_dir = dir.join("out");
    fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("img");
    let r = unbundle_file(manifest, dir, &key, &signer, &out);
    (out, r)
}

fn assert_nothing_written(out: &Path) {
    assert!(!out.exists());
    assert_eq!(fs::read_dir(out.parent().unwrap()).unwrap().count(), 0);
}

#[test]
fn trailing_empty_part_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = image(100_000);
    let t = tar_of("img", &data, true);
    let gz = gzip(&t);
    let ct_len = (gz.len() / 16 + 1) * 16;
    // Part size = ciphertext length: one full part, then an empty one.
    let m = write_bundle(tmp.path(), &gz, &sha1_hex(&t), data.len() as u64, ct_len);
    assert_eq!(
        fs::metadata(tmp.path().join("img.part.01")).unwrap().len(),
        0
    );
    let (out, r) = run(tmp.path(), &m);
    r.unwrap();
    assert!(fs::read(out).unwrap() == data);
}

#[test]
fn concatenated_gzip_members_and_ustar_are_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let data = image(300_000);
    let t = tar_of("img", &data, false);
    let mut gz = gzip(&t[..123_457]);
    gz.extend_from_slice(&gzip(&t[123_457..]));
    let m = write_bundle(tmp.path(), &gz, &sha1_hex(&t), data.len() as u64, 65_536);
    let (out, r) = run(tmp.path(), &m);
    assert_eq!(r.unwrap().tar_sha1.to_hex(), sha1_hex(&t));
    assert!(fs::read(out).unwrap() == data);
}

#[test]
fn empty_image_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tar_of("img", &[], true);
    let m = write_bundle(tmp.path(), &gzip(&t), &sha1_hex(&t), 0, 1 << 20);
    let (out, r) = run(tmp.path(), &m);
    assert_eq!(r.unwrap().size, 0);
    assert_eq!(fs::read(out).unwrap().len(), 0);
}

#[test]
fn first_member_not_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_size(0);
    h.set_mode(0o755);
    b.append_data(&mut h, "dir/", &[][..]).unwrap();
    let t = b.into_inner().unwrap();
    let m = write_bundle(tmp.path(), &gzip(&t), &sha1_hex(&t), 0, 1 << 20);
    let (out, r) = run(tmp.path(), &m);
    let err = r.unwrap_err();
    assert!(matches!(err, ImageError::Tar(_)), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn garbage_after_gzip_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = image(50_000);
    let t = tar_of("img", &data, true);
    let mut gz = gzip(&t);
    gz.extend_from_slice(b"this is not gzip");
    let m = write_bundle(tmp.path(), &gz, &sha1_hex(&t), data.len() as u64, 1 << 20);
    let (out, r) = run(tmp.path(), &m);
    let err = r.unwrap_err();
    assert!(matches!(err, ImageError::Decompress(_)), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn truncated_gzip_stream_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let data = image(50_000);
    let t = tar_of("img", &data, true);
    let gz = gzip(&t);
    let m = write_bundle(
        tmp.path(),
        &gz[..gz.len() - 10],
        &sha1_hex(&t),
        data.len() as u64,
        1 << 20,
    );
    let (out, r) = run(tmp.path(), &m);
    let err = r.unwrap_err();
    assert!(matches!(err, ImageError::Decompress(_)), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn not_gzip_at_all_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let m = write_bundle(
        tmp.path(),
        b"plain bytes, no gzip here",
        &sha1_hex(b""),
        1,
        1 << 20,
    );
    let (out, r) = run(tmp.path(), &m);
    let err = r.unwrap_err();
    assert!(matches!(err, ImageError::Decompress(_)), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn extra_data_past_the_tar_budget_is_refused() {
    // A member followed by 17 MiB of zeros (highly compressible): the reader
    // stops once the stream is longer than image + trailer budget.
    let tmp = tempfile::tempdir().unwrap();
    let data = image(10_000);
    let mut t = tar_of("img", &data, true);
    t.resize(t.len() + 17 * 1024 * 1024, 0);
    let m = write_bundle(
        tmp.path(),
        &gzip(&t),
        &sha1_hex(&t),
        data.len() as u64,
        1 << 20,
    );
    let (out, r) = run(tmp.path(), &m);
    let err = r.unwrap_err();
    assert!(matches!(err, ImageError::Tar(_)), "{err}");
    assert_nothing_written(&out);
}

#[test]
fn euca2ools_1x_empty_digest_is_advisory() {
    // euca2ools 1.x always wrote SHA-1("") as the image digest.
    let tmp = tempfile::tempdir().unwrap();
    let data = image(20_000);
    let t = tar_of("img", &data, true);
    let m = write_bundle(
        tmp.path(),
        &gzip(&t),
        &sha1_hex(b""),
        data.len() as u64,
        1 << 20,
    );
    // <bundler> is outside the signed text.
    let xml = fs::read_to_string(&m).unwrap().replace(
        "<name>euca2ools</name><version>3.4-devel</version>",
        "<name>euca-tools</name><version>1.3</version>",
    );
    fs::write(&m, xml).unwrap();
    let (out, r) = run(tmp.path(), &m);
    assert_eq!(r.unwrap().tar_sha1.to_hex(), sha1_hex(&t));
    assert!(fs::read(out).unwrap() == data);

    // The same digest from a 3.x bundler is a mismatch.
    let tmp = tempfile::tempdir().unwrap();
    let m = write_bundle(
        tmp.path(),
        &gzip(&t),
        &sha1_hex(b""),
        data.len() as u64,
        1 << 20,
    );
    let (out, r) = run(tmp.path(), &m);
    let err = r.unwrap_err();
    assert!(
        matches!(err, ImageError::ImageDigestMismatch { .. }),
        "{err}"
    );
    assert_nothing_written(&out);
}
