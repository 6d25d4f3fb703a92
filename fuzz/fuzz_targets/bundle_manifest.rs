//! Bundle manifests (`euca_image::manifest::Manifest::from_bytes`), as an uploaded
//! image's `.manifest.xml` arrives. No panic; a parsed manifest's signed bytes are
//! the `<machine_configuration>` and `<image>` text of the input.
#![no_main]
use euca_image::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Manifest::from_bytes(data) {
        let signed = m.signed_bytes();
        assert!(signed.len() <= data.len());
        assert!(signed.starts_with(b"<machine_configuration>"));
        assert!(signed.ends_with(b"</image>"));
        let _ = m.image_digest_is_advisory();
    }
});
