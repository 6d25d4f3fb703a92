//! Flexible checksums (`x-amz-checksum-*`) beyond a single body: the checksum mode of
//! a multipart upload, the checks and the object checksum of CompleteMultipartUpload,
//! the headers HEAD/GET return with `x-amz-checksum-mode: ENABLED`, and
//! GetObjectAttributes.
//!
//! As S3 does: an upload created with `x-amz-checksum-algorithm` needs that
//! algorithm's checksum on every part (verified while the part streams, see
//! [`crate::body`]); completion checks the per-part values the request lists against
//! the stored ones and derives the object's checksum, *composite* (hash of the raw
//! part checksums, `<base64>-N`) or *full-object* (CRC of the whole object, combined
//! from the parts), and checks it against a value the request carries.
use crate::acl::Permission;
use crate::error::{S3Error, S3Result};
use crate::handler::{load_bucket, set_header, xml, Req, Resp};
use crate::meta::{millis_to_time, ObjectMeta, PartMeta, UploadMeta};
use crate::state::State;
use crate::xmlin::Node;
use euca_aws::checksum::{self, ChecksumAlgorithm, ChecksumType};
use euca_aws::timefmt::format_http_date;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::{HeaderMap, StatusCode};
use std::sync::Arc;

const TYPE_HEADER: &str = "x-amz-checksum-type";

/// The algorithm and type of an upload, from CreateMultipartUpload's
/// `x-amz-checksum-algorithm` and `x-amz-checksum-type`.
pub fn upload_mode(r: &Req) -> S3Result<Option<(ChecksumAlgorithm, ChecksumType)>> {
    let ty = match r.headers.get(TYPE_HEADER) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(ChecksumType::from_name)
                .ok_or_else(|| {
                    S3Error::invalid_request("Value for x-amz-checksum-type header is invalid.")
                })?,
        ),
    };
    let Some(a) = r.header("x-amz-checksum-algorithm") else {
        return match ty {
            None => Ok(None),
            Some(_) => Err(S3Error::invalid_request(
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.",
            )),
        };
    };
    let alg = ChecksumAlgorithm::from_name(a).ok_or_else(|| {
        S3Error::invalid_request(format!("Checksum algorithm {a} is not supported"))
    })?;
    let ty = ty.unwrap_or(alg.default_type());
    if !alg.supports(ty) {
        return Err(S3Error::invalid_request(format!(
            "The {} checksum type cannot be used with the {} checksum algorithm.",
            ty.name(),
            alg.name().to_ascii_lowercase()
        )));
    }
    Ok(Some((alg, ty)))
}

/// The upload's algorithm and type as stored (format-1 uploads are composite).
pub fn stored_mode(u: &UploadMeta) -> Option<(ChecksumAlgorithm, ChecksumType)> {
    let alg = ChecksumAlgorithm::from_name(u.checksum_algorithm.as_deref()?)?;
    let ty = u
        .checksum_type
        .as_deref()
        .and_then(ChecksumType::from_name)
        .unwrap_or(ChecksumType::Composite);
    Some((alg, ty))
}

/// UploadPart on an upload with an algorithm must carry that algorithm's checksum
/// (in a header or a trailer); checked before the part's bytes are read.
pub fn check_part_algorithm(u: &UploadMeta, declared: Option<ChecksumAlgorithm>) -> S3Result<()> {
    let Some((alg, _)) = stored_mode(u) else {
        return Ok(());
    };
    if declared == Some(alg) {
        return Ok(());
    }
    Err(S3Error::invalid_request(format!(
        "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
        alg.name().to_ascii_lowercase(),
        declared.map_or("null".to_string(), |d| d.name().to_ascii_lowercase())
    )))
}

/// The object checksum a CompleteMultipartUpload request declares in its headers
/// (`x-amz-checksum-<alg>`, `x-amz-checksum-type`, `x-amz-mp-object-size`), removed
/// from the headers: they describe the object, not the XML body, so the body reader
/// must not verify the body against them.
#[derive(Default)]
pub struct CompleteClaims {
    checksum: Option<(ChecksumAlgorithm, String)>,
    ty: Option<String>,
    size: Option<String>,
}

pub fn take_complete_claims(h: &mut HeaderMap) -> S3Result<CompleteClaims> {
    let mut c = CompleteClaims::default();
    let text = |v: http::HeaderValue| {
        v.to_str()
            .map(str::to_string)
            .map_err(|_| S3Error::invalid_request("Invalid checksum header"))
    };
    for alg in ChecksumAlgorithm::ALL {
        if let Some(v) = h.remove(alg.header()) {
            if c.checksum.is_some() {
                return Err(S3Error::invalid_request(
                    "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
                ));
            }
            c.checksum = Some((alg, text(v)?));
        }
    }
    c.ty = h.remove(TYPE_HEADER).map(text).transpose()?;
    c.size = h.remove("x-amz-mp-object-size").map(text).transpose()?;
    Ok(c)
}

/// The per-part checksums a CompleteMultipartUpload `<Part>` lists.
pub fn listed_part_checksums(p: &Node) -> Vec<(ChecksumAlgorithm, &str)> {
    ChecksumAlgorithm::ALL
        .into_iter()
        .filter_map(|a| p.token_of(a.xml_element()).map(|v| (a, v)))
        .collect()
}

pub fn invalid_part(n: u32) -> S3Error {
    S3Error::new("InvalidPart", 400, "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.").with("PartNumber", n.to_string())
}

fn bad_digest(alg: ChecksumAlgorithm) -> S3Error {
    S3Error::new(
        "BadDigest",
        400,
        format!(
            "The {} you specified did not match the calculated checksum.",
            alg.name()
        ),
    )
}

fn stored_value(p: &PartMeta, alg: ChecksumAlgorithm) -> Option<&str> {
    p.checksums
        .iter()
        .find(|(a, _)| a == alg.name())
        .map(|(_, v)| v.as_str())
}

/// What completion stores about checksums on the object.
#[derive(Debug)]
pub struct ObjectChecksum {
    pub checksums: Vec<(String, String)>,
    pub checksum_type: Option<String>,
    pub part_checksums: Vec<String>,
}

/// Checks the parts a CompleteMultipartUpload names (`listed[i]` are the checksums
/// its `<Part>` for `chosen[i]` gives) and the request's claims, and derives the
/// object checksum.
pub fn complete(
    u: &UploadMeta,
    chosen: &[&PartMeta],
    listed: &[Vec<(ChecksumAlgorithm, &str)>],
    claims: &CompleteClaims,
) -> S3Result<ObjectChecksum> {
    let mode = stored_mode(u);
    for (p, given) in chosen.iter().zip(listed) {
        // A listed part checksum must be the one stored for that part.
        for (alg, v) in given {
            if stored_value(p, *alg) != Some(*v) {
                return Err(invalid_part(p.number));
            }
        }
        if let Some((alg, ChecksumType::Composite)) = mode {
            if !given.iter().any(|(a, _)| *a == alg) {
                return Err(S3Error::invalid_request(format!(
                    "The upload was created using a {} checksum. The complete request must include the checksum for each part. It was missing for part {} in the request.",
                    alg.name().to_ascii_lowercase(),
                    p.number
                )));
            }
        }
    }
    if let Some(size) = &claims.size {
        let total: u64 = chosen.iter().map(|p| p.blob.size).sum();
        if size.parse::<u64>().ok() != Some(total) {
            return Err(S3Error::invalid_request(format!(
                "The provided 'x-amz-mp-object-size' header value {size} does not match what was computed: {total}"
            )));
        }
    }
    let Some((alg, ty)) = mode else {
        if claims.checksum.is_some() || claims.ty.is_some() {
            return Err(S3Error::invalid_request(
                "The upload was created without a checksum algorithm; the complete request cannot carry a checksum.",
            ));
        }
        return Ok(default_checksum(chosen));
    };
    if let Some(t) = &claims.ty {
        if t != ty.name() {
            return Err(S3Error::new(
                "BadDigest",
                400,
                format!(
                    "The checksum type {t} does not match the upload's checksum type {}.",
                    ty.name()
                ),
            ));
        }
    }
    // Every part has the upload's checksum: UploadPart refuses parts without it.
    let mut part_values = Vec::with_capacity(chosen.len());
    let mut raws = Vec::with_capacity(chosen.len());
    for p in chosen {
        let v = stored_value(p, alg).ok_or_else(|| invalid_part(p.number))?;
        raws.push(alg.decode(v).ok_or_else(|| invalid_part(p.number))?);
        part_values.push(v.to_string());
    }
    let value = match ty {
        ChecksumType::Composite => checksum::composite(alg, raws.iter().map(Vec::as_slice)),
        ChecksumType::FullObject => checksum::full_object(
            alg,
            raws.iter()
                .zip(chosen)
                .map(|(r, p)| (r.as_slice(), p.blob.size)),
        )
        .ok_or_else(|| S3Error::internal("full-object checksum of a non-CRC algorithm"))?,
    };
    if let Some((calg, claimed)) = &claims.checksum {
        if *calg != alg {
            return Err(S3Error::invalid_request(format!(
                "The upload was created using a {} checksum, not {}.",
                alg.name().to_ascii_lowercase(),
                calg.name().to_ascii_lowercase()
            )));
        }
        // A composite may be given with or without its `-N`.
        let matches = *claimed == value
            || (ty == ChecksumType::Composite && Some(claimed.as_str()) == strip_parts(&value));
        if !matches {
            return Err(bad_digest(alg));
        }
    }
    Ok(ObjectChecksum {
        checksums: vec![(alg.name().to_string(), value)],
        checksum_type: Some(ty.name().to_string()),
        part_checksums: part_values,
    })
}

/// S3's default for an upload created without an algorithm: the full-object
/// CRC64NVME, combined from the one each part got ([`DEFAULT_ALGORITHM`]) when it
/// declared none. None when a part has no CRC64NVME (it declared another
/// checksum, or was stored before Walrus computed the default).
fn default_checksum(chosen: &[&PartMeta]) -> ObjectChecksum {
    let alg = DEFAULT_ALGORITHM;
    let computed = (|| {
        let values: Vec<&str> = chosen
            .iter()
            .map(|p| stored_value(p, alg))
            .collect::<Option<_>>()?;
        let raws: Vec<Vec<u8>> = values
            .iter()
            .map(|v| alg.decode(v))
            .collect::<Option<_>>()?;
        let sized = raws
            .iter()
            .zip(chosen)
            .map(|(r, p)| (r.as_slice(), p.blob.size));
        Some((checksum::full_object(alg, sized)?, values))
    })();
    match computed {
        Some((value, values)) => ObjectChecksum {
            checksums: vec![(alg.name().to_string(), value)],
            checksum_type: Some(ChecksumType::FullObject.name().to_string()),
            part_checksums: values.into_iter().map(str::to_string).collect(),
        },
        None => ObjectChecksum {
            checksums: Vec::new(),
            checksum_type: None,
            part_checksums: Vec::new(),
        },
    }
}

/// The checksum S3 computes for what is uploaded without one.
pub const DEFAULT_ALGORITHM: ChecksumAlgorithm = ChecksumAlgorithm::Crc64Nvme;

/// `<base64>` of a composite `<base64>-N`.
fn strip_parts(v: &str) -> Option<&str> {
    v.rsplit_once('-')
        .filter(|(_, n)| n.parse::<u32>().is_ok())
        .map(|(b, _)| b)
}

/// Writes `ChecksumCRC32` … and `ChecksumType` elements (CompleteMultipartUpload).
pub fn write_xml(w: &mut XmlWriter, checksums: &[(String, String)], ty: Option<&str>) {
    for (a, v) in checksums {
        if let Some(alg) = ChecksumAlgorithm::from_name(a) {
            w.elem(alg.xml_element(), v);
        }
    }
    if let Some(t) = ty.filter(|_| !checksums.is_empty()) {
        w.elem("ChecksumType", t);
    }
}

fn checksum_mode(r: &Req) -> bool {
    r.header("x-amz-checksum-mode")
        .is_some_and(|m| m.eq_ignore_ascii_case("enabled"))
}

/// The checksum headers of a HEAD/GET with `x-amz-checksum-mode: ENABLED`: the
/// object's checksum and type for the whole object; for `partNumber` of a composite
/// multipart object, that part's checksum; nothing for other ranges, as S3 does.
pub fn response_headers(
    r: &Req,
    h: &mut HeaderMap,
    o: &ObjectMeta,
    whole: bool,
    part: Option<usize>,
) -> S3Result<()> {
    if !checksum_mode(r) {
        return Ok(());
    }
    if whole {
        for (alg, v) in &o.checksums {
            set_header(
                h,
                &format!("x-amz-checksum-{}", alg.to_ascii_lowercase()),
                v,
            )?;
        }
        if let Some(t) = o
            .checksum_type
            .as_deref()
            .filter(|_| !o.checksums.is_empty())
        {
            set_header(h, TYPE_HEADER, t)?;
        }
        return Ok(());
    }
    let composite = o.checksum_type.as_deref() == Some(ChecksumType::Composite.name());
    if let (Some(n), true, Some((alg, _))) = (part, composite, o.checksums.first()) {
        if let Some(v) = n.checked_sub(1).and_then(|i| o.part_checksums.get(i)) {
            set_header(
                h,
                &format!("x-amz-checksum-{}", alg.to_ascii_lowercase()),
                v,
            )?;
            set_header(h, TYPE_HEADER, ChecksumType::Composite.name())?;
        }
    }
    Ok(())
}

/// The attributes GetObjectAttributes may be asked for.
const ATTRIBUTES: [&str; 5] = [
    "ETag",
    "Checksum",
    "ObjectParts",
    "StorageClass",
    "ObjectSize",
];

fn header_number(r: &Req, name: &str, default: usize) -> S3Result<usize> {
    match r.header(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            S3Error::invalid_argument(format!("{name} must be a non-negative integer"))
                .with("ArgumentName", name)
        }),
    }
}

/// GetObjectAttributes: `GET /bucket/key?attributes` with `x-amz-object-attributes`.
pub async fn get_object_attributes(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "GetObjectAttributes";
    let b = load_bucket(st, r.bucket()).await?;
    // As S3: reading the object (s3:GetObject, or s3:GetObjectVersion for a version)
    // and its attributes (s3:GetObjectAttributes / s3:GetObjectVersionAttributes); READ
    // on the object's ACL grants both.
    let version = r.q("versionId");
    let (read, attributes) = match version {
        Some(_) => ("s3:GetObjectVersion", "s3:GetObjectVersionAttributes"),
        None => ("s3:GetObject", "s3:GetObjectAttributes"),
    };
    let authz = crate::authz::Authz::new(&b)?;
    let o = authz
        .object_version(st, r, r.key(), version, read, Permission::Read)
        .await?;
    let rule = crate::authz::AclRule::Grant(&o.acl, Permission::Read);
    authz.check(r, attributes, Some(r.key()), Some(&o.tags), rule)?;
    // An SSE-C object's attributes (its checksums are of the plaintext) only with
    // its key, as S3 asks: none is 400, a wrong one 403.
    let enc = crate::sse::for_read(st, r, o.sse.as_ref(), false).await?;
    let mut wanted = Vec::new();
    for v in r.headers.get_all("x-amz-object-attributes") {
        let v = v
            .to_str()
            .map_err(|_| S3Error::invalid_argument("Invalid attribute name specified."))?;
        for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            if !ATTRIBUTES.contains(&a) {
                return Err(
                    S3Error::invalid_argument("Invalid attribute name specified.")
                        .with("ArgumentName", "x-amz-object-attributes")
                        .with("ArgumentValue", a),
                );
            }
            wanted.push(a);
        }
    }
    if wanted.is_empty() {
        return Err(S3Error::invalid_request(
            "The x-amz-object-attributes header specifying the attributes to be retrieved is either missing or empty",
        ));
    }
    let max = header_number(r, "x-amz-max-parts", 1000)?.min(1000);
    let marker = header_number(r, "x-amz-part-number-marker", 0)?;
    let has = |a: &str| wanted.contains(&a);
    let mut w = XmlWriter::new();
    w.root("GetObjectAttributesResponse", S3_NS);
    if has("ETag") {
        w.elem("ETag", &o.etag);
    }
    if has("Checksum") && !o.checksums.is_empty() {
        w.open("Checksum");
        for (a, v) in &o.checksums {
            if let Some(alg) = ChecksumAlgorithm::from_name(a) {
                // Here S3 gives a composite without its `-N`.
                w.elem(alg.xml_element(), strip_parts(v).unwrap_or(v));
            }
        }
        if let Some(t) = &o.checksum_type {
            w.elem("ChecksumType", t);
        }
        w.close();
    }
    if has("ObjectParts") && !o.part_sizes.is_empty() {
        let total = o.part_sizes.len();
        // Parts are listed (like ListParts) only when they have composite checksums.
        let alg = o
            .checksums
            .first()
            .and_then(|(a, _)| ChecksumAlgorithm::from_name(a))
            .filter(|_| o.checksum_type.as_deref() == Some(ChecksumType::Composite.name()))
            .filter(|_| o.part_checksums.len() == total);
        let listed: Vec<usize> = match alg {
            Some(_) => (marker + 1..=total).take(max).collect(),
            None => Vec::new(),
        };
        let truncated = listed.last().is_some_and(|l| *l < total);
        w.open("ObjectParts")
            .elem("PartNumberMarker", marker.to_string())
            .elem(
                "NextPartNumberMarker",
                listed.last().copied().unwrap_or(0).to_string(),
            )
            .elem("MaxParts", max.to_string())
            .elem("IsTruncated", if truncated { "true" } else { "false" })
            .elem("PartsCount", total.to_string());
        if let Some(alg) = alg {
            for n in listed {
                w.open("Part")
                    .elem("PartNumber", n.to_string())
                    .elem("Size", o.part_sizes[n - 1].to_string())
                    .elem(alg.xml_element(), &o.part_checksums[n - 1])
                    .close();
            }
        }
        w.close();
    }
    if has("StorageClass") {
        w.elem("StorageClass", "STANDARD");
    }
    if has("ObjectSize") {
        w.elem("ObjectSize", o.size.to_string());
    }
    let mut resp = xml(StatusCode::OK, w.finish());
    set_header(
        resp.headers_mut(),
        "last-modified",
        &format_http_date(millis_to_time(o.last_modified)),
    )?;
    crate::handler::set_version_header(resp.headers_mut(), o.version_id.as_deref())?;
    if let Some(e) = &enc {
        e.set_headers(resp.headers_mut())?;
    }
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::{Acl, Owner};
    use crate::meta::{BlobRef, ContentHeaders};

    fn upload(alg: Option<&str>, ty: Option<&str>) -> UploadMeta {
        let owner = Owner {
            id: "o".into(),
            display_name: "o".into(),
        };
        UploadMeta {
            upload_id: "u".into(),
            bucket: "b".into(),
            key: "k".into(),
            initiated: 0,
            owner: owner.clone(),
            headers: ContentHeaders::default(),
            user_meta: vec![],
            acl: Acl::private(owner),
            checksum_algorithm: alg.map(String::from),
            checksum_type: ty.map(String::from),
            tags: vec![],
            retention: None,
            legal_hold: false,
            sse: None,
        }
    }

    fn part(n: u32, data: &[u8], alg: ChecksumAlgorithm) -> PartMeta {
        let mut h = alg.hasher();
        h.update(data);
        PartMeta {
            number: n,
            blob: BlobRef {
                id: format!("p{n}"),
                size: data.len() as u64,
            },
            etag: "e".into(),
            last_modified: 0,
            checksums: vec![(alg.name().into(), h.finish_base64())],
        }
    }

    fn listed<'a>(parts: &[&'a PartMeta]) -> Vec<Vec<(ChecksumAlgorithm, &'a str)>> {
        parts
            .iter()
            .map(|p| {
                let (a, v) = &p.checksums[0];
                vec![(ChecksumAlgorithm::from_name(a).unwrap(), v.as_str())]
            })
            .collect()
    }

    fn claim(alg: ChecksumAlgorithm, v: &str) -> CompleteClaims {
        CompleteClaims {
            checksum: Some((alg, v.into())),
            ..Default::default()
        }
    }

    #[test]
    fn composite_completion() {
        let alg = ChecksumAlgorithm::Sha256;
        let u = upload(Some("SHA256"), Some("COMPOSITE"));
        let (a, b) = (part(1, b"aaa", alg), part(3, b"bb", alg));
        let chosen = [&a, &b];
        let l = listed(&chosen);
        let none = CompleteClaims::default();
        let sum = complete(&u, &chosen, &l, &none).unwrap();
        let raws: Vec<Vec<u8>> = chosen
            .iter()
            .map(|p| alg.decode(&p.checksums[0].1).unwrap())
            .collect();
        let want = checksum::composite(alg, raws.iter().map(Vec::as_slice));
        assert!(want.ends_with("-2"));
        assert_eq!(sum.checksums, vec![("SHA256".to_string(), want.clone())]);
        assert_eq!(sum.checksum_type.as_deref(), Some("COMPOSITE"));
        assert_eq!(sum.part_checksums.len(), 2);
        // The claimed composite, with or without "-N"; anything else is BadDigest.
        assert!(complete(&u, &chosen, &l, &claim(alg, &want)).is_ok());
        assert!(complete(&u, &chosen, &l, &claim(alg, strip_parts(&want).unwrap())).is_ok());
        let e = complete(&u, &chosen, &l, &claim(alg, &format!("{want}0"))).unwrap_err();
        assert_eq!(e.code, "BadDigest");
        // A part listed without its checksum, or with a wrong one.
        let omitted = vec![l[0].clone(), vec![]];
        let e = complete(&u, &chosen, &omitted, &none).unwrap_err();
        assert_eq!(
            (e.code, e.message.contains("part 3")),
            ("InvalidRequest", true)
        );
        let wrong = vec![l[0].clone(), vec![(alg, "AAAA")]];
        assert_eq!(
            complete(&u, &chosen, &wrong, &none).unwrap_err().code,
            "InvalidPart"
        );
        // Another type than the upload's, or a size that is not the object's.
        let ty = CompleteClaims {
            ty: Some("FULL_OBJECT".into()),
            ..Default::default()
        };
        assert_eq!(
            complete(&u, &chosen, &l, &ty).unwrap_err().code,
            "BadDigest"
        );
        let size = CompleteClaims {
            size: Some("6".into()),
            ..Default::default()
        };
        assert_eq!(
            complete(&u, &chosen, &l, &size).unwrap_err().code,
            "InvalidRequest"
        );
    }

    #[test]
    fn full_object_completion() {
        let alg = ChecksumAlgorithm::Crc64Nvme;
        let u = upload(Some("CRC64NVME"), Some("FULL_OBJECT"));
        let (a, b) = (part(1, b"hello ", alg), part(2, b"world", alg));
        let chosen = [&a, &b];
        let mut h = alg.hasher();
        h.update(b"hello world");
        let whole = h.finish_base64();
        // Part checksums may be left out of a full-object completion.
        let sum = complete(&u, &chosen, &[vec![], vec![]], &claim(alg, &whole)).unwrap();
        assert_eq!(sum.checksums, vec![("CRC64NVME".to_string(), whole)]);
        assert_eq!(sum.checksum_type.as_deref(), Some("FULL_OBJECT"));
        let e = complete(&u, &chosen, &[vec![], vec![]], &claim(alg, "AAAAAAAAAAA=")).unwrap_err();
        assert_eq!(e.code, "BadDigest");
        // A claim in another algorithm than the upload's.
        let e = complete(
            &u,
            &chosen,
            &[vec![], vec![]],
            &claim(ChecksumAlgorithm::Crc32, "AAAAAA=="),
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidRequest");
    }

    #[test]
    fn upload_without_algorithm() {
        let u = upload(None, None);
        let a = part(1, b"x", ChecksumAlgorithm::Crc32);
        let sum = complete(&u, &[&a], &[vec![]], &CompleteClaims::default()).unwrap();
        assert!(sum.checksums.is_empty() && sum.checksum_type.is_none());
        // A listed checksum is still checked against the stored one.
        let l = listed(&[&a]);
        assert!(complete(&u, &[&a], &l, &CompleteClaims::default()).is_ok());
        let e = complete(
            &u,
            &[&a],
            &[vec![(ChecksumAlgorithm::Crc32c, "AAAAAA==")]],
            &CompleteClaims::default(),
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidPart");
        // An object checksum cannot be claimed for it.
        let e = complete(
            &u,
            &[&a],
            &[vec![]],
            &claim(ChecksumAlgorithm::Crc32, "AAAAAA=="),
        )
        .unwrap_err();
        assert_eq!(e.code, "InvalidRequest");
    }

    /// A format-1 upload (algorithm, no type) completes as composite.
    #[test]
    fn legacy_upload_is_composite() {
        let u = upload(Some("CRC32"), None);
        assert_eq!(
            stored_mode(&u),
            Some((ChecksumAlgorithm::Crc32, ChecksumType::Composite))
        );
        assert!(check_part_algorithm(&u, Some(ChecksumAlgorithm::Crc32)).is_ok());
        let e = check_part_algorithm(&u, None).unwrap_err();
        assert!(e.message.ends_with("actual checksum Type: null"));
    }
}
