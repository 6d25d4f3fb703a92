//! Multipart uploads. Parts are separate blobs; completing an upload writes one
//! metadata record that lists them in order, so no object bytes are copied.
use crate::acl::Permission;
use crate::api::{
    self, acl_from_headers, empty, free_blobs, load_bucket, millis_to_time, require, set_header,
    xml, Req, Resp,
};
use crate::api_object::{content_from_request, copy_source, parse_range, store_body, Stored};
use crate::error::{S3Error, S3Result};
use crate::meta::{BlobRef, MetaOp, ObjectData, ObjectMeta, PartMeta, UploadMeta};
use crate::server::State;
use base64::Engine;
use bytes::Bytes;
use euca_aws::checksum::ChecksumAlgorithm;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use futures::StreamExt;
use http::{Method, StatusCode};
use md5::{Digest, Md5};
use std::sync::Arc;

pub const MAX_PARTS: u32 = 10_000;

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    match (r.method.clone(), r.has("uploads")) {
        (Method::POST, true) => create(st, r).await,
        (Method::PUT, false) => upload_part(st, r).await,
        (Method::POST, false) => complete(st, r).await,
        (Method::DELETE, false) => {
            r.op = "AbortMultipartUpload";
            let u = load_upload(st, r)?;
            require_upload_access(st, r, &u)?;
            let out = st
                .meta
                .apply(MetaOp::AbortUpload {
                    bucket: r.bucket().into(),
                    key: r.key().into(),
                    upload_id: u.upload_id,
                })
                .await?;
            free_blobs(st, out.freed_blobs);
            Ok(empty(StatusCode::NO_CONTENT))
        }
        (Method::GET, false) => list_parts(st, r),
        _ => Err(S3Error::new(
            "MethodNotAllowed",
            405,
            "The specified method is not allowed against this resource.",
        )),
    }
}

fn load_upload(st: &State, r: &Req) -> S3Result<UploadMeta> {
    let id = r.q("uploadId").unwrap_or_default();
    load_bucket(st, r.bucket())?;
    st.meta
        .upload(r.bucket(), r.key(), id)?
        .ok_or_else(|| S3Error::no_such_upload(id))
}

/// The initiator and anyone with WRITE on the bucket may work on an upload.
fn require_upload_access(st: &State, r: &Req, u: &UploadMeta) -> S3Result<()> {
    if r.principal.as_ref().map(|p| &p.canonical_id) == Some(&u.owner.id) {
        return Ok(());
    }
    let b = load_bucket(st, r.bucket())?;
    require(&b.acl, r.principal.as_ref(), Permission::Write)
}

async fn create(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CreateMultipartUpload";
    let b = load_bucket(st, r.bucket())?;
    require(&b.acl, r.principal.as_ref(), Permission::Write)?;
    let owner = r
        .principal
        .as_ref()
        .map(crate::acl::Owner::of)
        .unwrap_or_else(|| b.owner.clone());
    let acl = acl_from_headers(st, r, owner.clone(), Some(&b.owner))?;
    let (headers, user_meta) = content_from_request(r)?;
    let checksum_algorithm = match r.header("x-amz-checksum-algorithm") {
        None => None,
        Some(a) => Some(
            ChecksumAlgorithm::from_name(a.trim())
                .ok_or_else(|| {
                    S3Error::invalid_request(format!("Checksum algorithm {a} is not supported"))
                })?
                .name()
                .to_string(),
        ),
    };
    let upload_id = crate::blob::new_blob_id();
    let u = UploadMeta {
        upload_id: upload_id.clone(),
        bucket: r.bucket().into(),
        key: r.key().into(),
        initiated: api::now_millis(),
        owner,
        headers,
        user_meta,
        acl,
        checksum_algorithm: checksum_algorithm.clone(),
    };
    st.meta.apply(MetaOp::CreateUpload(u)).await?;
    let mut w = XmlWriter::new();
    w.root("InitiateMultipartUploadResult", S3_NS)
        .elem("Bucket", r.bucket())
        .elem("Key", r.key())
        .elem("UploadId", &upload_id);
    let mut resp = xml(StatusCode::OK, w.finish());
    if let Some(a) = checksum_algorithm {
        set_header(resp.headers_mut(), "x-amz-checksum-algorithm", &a)?;
    }
    Ok(resp)
}

fn part_number(r: &Req) -> S3Result<u32> {
    r.q("partNumber")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_PARTS).contains(n))
        .ok_or_else(|| {
            S3Error::invalid_argument(
                "Part number must be an integer between 1 and 10000, inclusive",
            )
            .with("ArgumentName", "partNumber")
        })
}

async fn upload_part(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let copy = r.headers.contains_key("x-amz-copy-source");
    r.op = if copy { "UploadPartCopy" } else { "UploadPart" };
    let number = part_number(r)?;
    let u = load_upload(st, r)?;
    require_upload_access(st, r, &u)?;
    let (blob, md5, checksums) = if copy {
        let (_, _, src) = copy_source(st, r)?;
        let range = match r.header("x-amz-copy-source-range") {
            None => 0..src.size,
            Some(v) => parse_range(Some(v), src.size)?
                .filter(|_| v.trim().starts_with("bytes=") && !v.contains("=-"))
                .ok_or_else(|| S3Error::invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"))?,
        };
        let (blob, md5) = copy_range(st, &src, range).await?;
        (blob, md5, Vec::new())
    } else {
        if !r.headers.contains_key("content-length") {
            return Err(S3Error::new(
                "MissingContentLength",
                411,
                "You must provide the Content-Length HTTP header.",
            ));
        }
        let body = r.body(st.cfg.max_put_bytes)?;
        // Parts are always blobs (inline_max 0): completion only links them.
        let (stored, summary) = store_body(st, body, 0).await?;
        let blob = match stored {
            Stored::Blob(b) => b,
            Stored::Inline(_) => BlobRef {
                id: st.blobs.put(Bytes::new()).await?,
                size: 0,
            },
        };
        let checksums = summary
            .checksum
            .iter()
            .map(|(a, v)| (a.name().to_string(), v.clone()))
            .collect();
        (blob, summary.md5, checksums)
    };
    let etag = hex::encode(md5);
    let part = PartMeta {
        number,
        blob: blob.clone(),
        etag: etag.clone(),
        last_modified: api::now_millis(),
        checksums,
    };
    match st
        .meta
        .apply(MetaOp::PutPart {
            bucket: r.bucket().into(),
            key: r.key().into(),
            upload_id: u.upload_id.clone(),
            part: part.clone(),
        })
        .await
    {
        Ok(out) => free_blobs(st, out.freed_blobs),
        Err(e) => {
            free_blobs(st, vec![blob]);
            return Err(e.into());
        }
    }
    if copy {
        let mut w = XmlWriter::new();
        w.root("CopyPartResult", S3_NS)
            .elem(
                "LastModified",
                format_iso8601(millis_to_time(part.last_modified)),
            )
            .elem("ETag", format!("\"{etag}\""));
        return Ok(xml(StatusCode::OK, w.finish()));
    }
    let mut resp = empty(StatusCode::OK);
    set_header(resp.headers_mut(), "etag", &format!("\"{etag}\""))?;
    for (a, v) in &part.checksums {
        set_header(
            resp.headers_mut(),
            &format!("x-amz-checksum-{}", a.to_ascii_lowercase()),
            v,
        )?;
    }
    Ok(resp)
}

/// Copies a byte range of an object into a new blob, hashing it on the way.
async fn copy_range(
    st: &Arc<State>,
    src: &ObjectMeta,
    range: std::ops::Range<u64>,
) -> S3Result<(BlobRef, [u8; 16])> {
    let mut md5 = Md5::new();
    let mut w = st.blobs.create().await?;
    let write = |chunk: Bytes, md5: &mut Md5| {
        md5.update(&chunk);
        chunk
    };
    match &src.data {
        ObjectData::Inline(d) => {
            let c = write(
                Bytes::copy_from_slice(&d[range.start as usize..range.end as usize]),
                &mut md5,
            );
            w.write(c).await?;
        }
        ObjectData::Blobs(blobs) => {
            let mut offset = 0u64;
            for b in blobs {
                let (bs, be) = (offset, offset + b.size);
                offset = be;
                if be <= range.start || bs >= range.end {
                    continue;
                }
                let mut s = st
                    .blobs
                    .read(
                        &b.id,
                        Some(range.start.max(bs) - bs..range.end.min(be) - bs),
                    )
                    .await?;
                while let Some(c) = s.next().await {
                    let c = write(c?, &mut md5);
                    w.write(c).await?;
                }
            }
        }
    }
    let size = w.size();
    let id = w.finish().await?;
    Ok((BlobRef { id, size }, md5.finalize().into()))
}

async fn complete(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CompleteMultipartUpload";
    let u = load_upload(st, r)?;
    require_upload_access(st, r, &u)?;
    let node = r.xml_body(4 * 1024 * 1024).await?;
    let wanted = crate::xmlreq::complete_parts(&node)?;
    if wanted.len() > MAX_PARTS as usize {
        return Err(S3Error::malformed_xml());
    }
    if wanted.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(S3Error::new("InvalidPartOrder", 400, "The list of parts was not in ascending order. The parts list must be specified in order by part number."));
    }
    // Read every uploaded part (ascending) and match the requested ones.
    let mut stored: Vec<PartMeta> = Vec::new();
    let mut after = 0;
    loop {
        let batch = st.meta.parts(&u.upload_id, after, 1000)?;
        let Some(last) = batch.last() else { break };
        after = last.number;
        stored.extend(batch);
    }
    let invalid_part = |n: u32| {
        S3Error::new("InvalidPart", 400, "One or more of the specified parts could not be found.  The part may not have been uploaded, or the specified entity tag may not match the part's entity tag.").with("PartNumber", n.to_string())
    };
    let mut chosen: Vec<&PartMeta> = Vec::new();
    for (n, etag) in &wanted {
        let p = stored
            .iter()
            .find(|p| p.number == *n)
            .ok_or_else(|| invalid_part(*n))?;
        if p.etag != *etag {
            return Err(invalid_part(*n));
        }
        chosen.push(p);
    }
    for (i, p) in chosen.iter().enumerate() {
        if i + 1 < chosen.len() && p.blob.size < st.cfg.min_part_bytes {
            return Err(S3Error::new(
                "EntityTooSmall",
                400,
                "Your proposed upload is smaller than the minimum allowed object size.",
            )
            .with("PartNumber", p.number.to_string())
            .with("ProposedSize", p.blob.size.to_string())
            .with("MinSizeAllowed", st.cfg.min_part_bytes.to_string()));
        }
    }
    let mut md5s = Md5::new();
    for p in &chosen {
        md5s.update(hex::decode(&p.etag).unwrap_or_default());
    }
    let etag = format!("{}-{}", hex::encode(md5s.finalize()), chosen.len());
    // Composite checksum (checksum of the part checksums), when every part has one.
    let mut checksums = Vec::new();
    if let Some(alg) = u
        .checksum_algorithm
        .as_deref()
        .and_then(ChecksumAlgorithm::from_name)
    {
        let mut h = alg.hasher();
        let mut complete = true;
        for p in &chosen {
            match p
                .checksums
                .iter()
                .find(|(a, _)| a == alg.name())
                .and_then(|(_, v)| base64::engine::general_purpose::STANDARD.decode(v).ok())
            {
                Some(raw) => h.update(&raw),
                None => complete = false,
            }
        }
        if complete {
            checksums.push((
                alg.name().to_string(),
                format!("{}-{}", h.finish_base64(), chosen.len()),
            ));
        }
    }
    let meta = ObjectMeta {
        size: chosen.iter().map(|p| p.blob.size).sum(),
        etag: etag.clone(),
        last_modified: api::now_millis(),
        owner: u.owner.clone(),
        headers: u.headers.clone(),
        user_meta: u.user_meta.clone(),
        checksums,
        acl: u.acl.clone(),
        data: ObjectData::Blobs(chosen.iter().map(|p| p.blob.clone()).collect()),
        part_sizes: chosen.iter().map(|p| p.blob.size).collect(),
    };
    let parts = chosen
        .iter()
        .map(|p| (p.number, p.blob.id.clone()))
        .collect();
    let out = st
        .meta
        .apply(MetaOp::CompleteUpload {
            bucket: r.bucket().into(),
            key: r.key().into(),
            upload_id: u.upload_id.clone(),
            parts,
            meta,
        })
        .await?;
    free_blobs(st, out.freed_blobs);
    let mut w = XmlWriter::new();
    w.root("CompleteMultipartUploadResult", S3_NS)
        .elem("Location", format!("/{}/{}", r.bucket(), r.key()))
        .elem("Bucket", r.bucket())
        .elem("Key", r.key())
        .elem("ETag", format!("\"{etag}\""));
    Ok(xml(StatusCode::OK, w.finish()))
}

/// A numeric query parameter, or `default` when absent; InvalidArgument if malformed.
fn query_number<T: std::str::FromStr>(r: &Req, name: &str, default: T) -> S3Result<T> {
    match r.q(name) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            S3Error::invalid_argument(format!("{name} must be a non-negative integer"))
                .with("ArgumentName", name)
        }),
    }
}

fn list_parts(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "ListParts";
    let u = load_upload(st, r)?;
    require_upload_access(st, r, &u)?;
    let max = query_number::<usize>(r, "max-parts", 1000)?.min(1000);
    let marker = query_number::<u32>(r, "part-number-marker", 0)?;
    let mut parts = st.meta.parts(&u.upload_id, marker, max + 1)?;
    let truncated = parts.len() > max;
    parts.truncate(max);
    let mut w = XmlWriter::new();
    w.root("ListPartsResult", S3_NS)
        .elem("Bucket", r.bucket())
        .elem("Key", r.key())
        .elem("UploadId", &u.upload_id)
        .open("Initiator")
        .elem("ID", &u.owner.id)
        .elem("DisplayName", &u.owner.display_name)
        .close()
        .open("Owner")
        .elem("ID", &u.owner.id)
        .elem("DisplayName", &u.owner.display_name)
        .close()
        .elem("StorageClass", "STANDARD")
        .elem("PartNumberMarker", marker.to_string())
        .elem(
            "NextPartNumberMarker",
            parts.last().map(|p| p.number).unwrap_or(0).to_string(),
        )
        .elem("MaxParts", max.to_string())
        .elem("IsTruncated", if truncated { "true" } else { "false" });
    if let Some(a) = &u.checksum_algorithm {
        w.elem("ChecksumAlgorithm", a);
    }
    for p in &parts {
        w.open("Part")
            .elem("PartNumber", p.number.to_string())
            .elem(
                "LastModified",
                format_iso8601(millis_to_time(p.last_modified)),
            )
            .elem("ETag", format!("\"{}\"", p.etag))
            .elem("Size", p.blob.size.to_string());
        for (a, v) in &p.checksums {
            let name = match a.as_str() {
                "CRC32" => "ChecksumCRC32",
                "CRC32C" => "ChecksumCRC32C",
                "SHA1" => "ChecksumSHA1",
                _ => "ChecksumSHA256",
            };
            w.elem(name, v);
        }
        w.close();
    }
    Ok(xml(StatusCode::OK, w.finish()))
}

pub async fn list_uploads(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let prefix = r.q("prefix").unwrap_or("").to_string();
    let max = query_number::<usize>(r, "max-uploads", 1000)?.min(1000);
    let key_marker = r.q("key-marker").filter(|s| !s.is_empty());
    let id_marker = r.q("upload-id-marker").unwrap_or("");
    let delimiter = r.q("delimiter").unwrap_or("");
    // Without an upload-id marker, S3 resumes after every upload of the key marker.
    const LAST: &str = "\u{10FFFF}";
    let mut after: Option<(String, String)> = key_marker.map(|k| {
        (
            k.to_string(),
            if id_marker.is_empty() {
                LAST.to_string()
            } else {
                id_marker.to_string()
            },
        )
    });
    let mut ups: Vec<UploadMeta> = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    'scan: loop {
        let batch = st.meta.scan_uploads(
            r.bucket(),
            after.as_ref().map(|(k, u)| (k.as_str(), u.as_str())),
            &prefix,
            1000,
        )?;
        let Some(last) = batch.last() else { break };
        let full = batch.len() == 1000;
        after = Some((last.key.clone(), last.upload_id.clone()));
        for u in batch {
            let cp = (!delimiter.is_empty())
                .then(|| {
                    u.key[prefix.len()..]
                        .find(delimiter)
                        .map(|i| u.key[..prefix.len() + i + delimiter.len()].to_string())
                })
                .flatten();
            if let Some(cp) = cp {
                let seen =
                    prefixes.last() == Some(&cp) || key_marker.is_some_and(|m| cp.as_str() <= m);
                if !seen {
                    if ups.len() + prefixes.len() >= max {
                        truncated = true;
                        break 'scan;
                    }
                    prefixes.push(cp.clone());
                }
                // Skip the rest of this prefix.
                after = Some((format!("{cp}{LAST}"), LAST.to_string()));
                continue 'scan;
            }
            if ups.len() + prefixes.len() >= max {
                truncated = true;
                break 'scan;
            }
            ups.push(u);
        }
        if !full {
            break;
        }
    }
    let (next_key, next_id) = match (ups.last(), prefixes.last()) {
        (Some(u), Some(p)) if p.as_str() > u.key.as_str() => (p.clone(), String::new()),
        (Some(u), _) => (u.key.clone(), u.upload_id.clone()),
        (None, Some(p)) => (p.clone(), String::new()),
        (None, None) => (String::new(), String::new()),
    };
    let mut w = XmlWriter::new();
    w.root("ListMultipartUploadsResult", S3_NS)
        .elem("Bucket", r.bucket())
        .elem("KeyMarker", key_marker.unwrap_or(""))
        .elem("UploadIdMarker", id_marker)
        .elem("NextKeyMarker", &next_key)
        .elem("NextUploadIdMarker", &next_id)
        .elem("Prefix", &prefix)
        .elem("MaxUploads", max.to_string())
        .elem("IsTruncated", if truncated { "true" } else { "false" });
    if !delimiter.is_empty() {
        w.elem("Delimiter", delimiter);
    }
    for u in &ups {
        w.open("Upload")
            .elem("Key", &u.key)
            .elem("UploadId", &u.upload_id)
            .open("Initiator")
            .elem("ID", &u.owner.id)
            .elem("DisplayName", &u.owner.display_name)
            .close()
            .open("Owner")
            .elem("ID", &u.owner.id)
            .elem("DisplayName", &u.owner.display_name)
            .close()
            .elem("StorageClass", "STANDARD")
            .elem("Initiated", format_iso8601(millis_to_time(u.initiated)))
            .close();
    }
    for p in &prefixes {
        w.open("CommonPrefixes").elem("Prefix", p).close();
    }
    Ok(xml(StatusCode::OK, w.finish()))
}
