//! EC2 resource ids: a prefix and 8 lower-case hex digits (`vol-1a2b3c4d`), the
//! form Eucalyptus and older AWS used. Images are `emi-` (machine), `eki-`
//! (kernel) and `eri-` (ramdisk).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

/// Whether `id` has the form `prefix-` + 8 or more lower-case hex digits.
pub fn valid(prefix: &str, id: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|h| h.len() >= 8 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[cfg(test)]
mod tests {
    #[test]
    fn forms() {
        let id = super::new_id("vol");
        assert!(super::valid("vol", &id), "{id}");
        assert!(!super::valid("vol", "vol-1234567"));
        assert!(!super::valid("vol", "snap-12345678"));
        assert!(!super::valid("vol", "vol-1234567G"));
        assert!(super::valid("vol", "vol-0123456789abcdef0"));
    }
}
