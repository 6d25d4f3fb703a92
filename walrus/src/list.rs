//! Key-ordered listing with prefix, delimiter and pagination.
use crate::error::S3Result;
use crate::meta::{MetaStore, ObjectEntry, ScanStart};

pub struct Listing {
    pub objects: Vec<ObjectEntry>,
    pub prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned (the next page starts after it).
    pub last: Option<String>,
}

/// Lists up to `max` entries (objects plus common prefixes) of `bucket` under
/// `prefix`, strictly after `marker`. With a delimiter, keys sharing the part up to the
/// first delimiter after the prefix roll up into one common prefix; a common prefix at
/// or before the marker is not repeated.
pub async fn list(
    meta: &dyn MetaStore,
    bucket: &str,
    prefix: &str,
    delimiter: &str,
    marker: Option<&str>,
    max: usize,
) -> S3Result<Listing> {
    let mut out = Listing {
        objects: Vec::new(),
        prefixes: Vec::new(),
        truncated: false,
        last: None,
    };
    if max == 0 {
        // max-keys=0 asks for nothing: S3 answers with no keys and not truncated.
        return Ok(out);
    }
    let mut start = match marker {
        Some(m) if !m.is_empty() => ScanStart::After(m.to_string()),
        _ => ScanStart::From(prefix.to_string()),
    };
    let batch = (max + 1).clamp(16, 1001);
    'outer: loop {
        let entries = meta.scan_objects(bucket, &start, prefix, batch).await?;
        if entries.is_empty() {
            break;
        }
        let n = entries.len();
        let mut next_start = None;
        for (key, obj) in entries {
            if !delimiter.is_empty() {
                if let Some(i) = key[prefix.len()..].find(delimiter) {
                    let cp = key[..prefix.len() + i + delimiter.len()].to_string();
                    next_start = Some(ScanStart::AfterPrefix(cp.clone()));
                    if marker.is_some_and(|m| cp.as_str() <= m) {
                        break;
                    }
                    if out.objects.len() + out.prefixes.len() >= max {
                        out.truncated = true;
                        break 'outer;
                    }
                    out.last = Some(cp.clone());
                    out.prefixes.push(cp);
                    break;
                }
            }
            if out.objects.len() + out.prefixes.len() >= max {
                out.truncated = true;
                break 'outer;
            }
            out.last = Some(key.clone());
            next_start = Some(ScanStart::After(key.clone()));
            out.objects.push((key, obj));
        }
        match next_start {
            Some(s) => start = s,
            None => break,
        }
        // A short batch without a roll-up means the range is exhausted.
        if n < batch && matches!(start, ScanStart::After(_)) {
            break;
        }
    }
    Ok(out)
}
