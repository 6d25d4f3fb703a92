//! Multipart uploads. Parts are separate blobs; completing an upload writes one
//! metadata record that lists them in order, so no object bytes are copied.
use crate::acl::Permission;
use crate::api_object::copy::{copy_range, copy_source};
use crate::api_object::put::{content_from_request, store_body, Stored};
use crate::api_object::write_cond;
use crate::authz::{self, AclRule, Authz};
use crate::checksums;
use crate::error::{S3Error, S3Result};
use crate::handler::{empty, free_blobs, load_bucket, set_header, xml, Req, Resp};
use crate::meta::{
    millis_to_time, now_millis, BlobRef, MetaOp, ObjectData, ObjectMeta, PartMeta, UploadMeta,
};
use crate::policy::Decision;
use crate::state::State;
use bytes::Bytes;
use euca_aws::hash::Md5;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::{Method, StatusCode};
use std::sync::Arc;

pub const MAX_PARTS: u32 = 10_000;

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    match (r.method.clone(), r.has("uploads")) {
        (Method::POST, true) => create(st, r).await,
        (Method::PUT, false) => upload_part(st, r).await,
        (Method::POST, false) => complete(st, r).await,
        (Method::DELETE, false) => {
            r.op = "AbortMultipartUpload";
            let u = load_upload(st, r).await?;
            require_upload_access(st, r, &u.owner.id, "s3:AbortMultipartUpload").await?;
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
        (Method::GET, false) => list_parts(st, r).await,
        _ => Err(S3Error::method_not_allowed()),
    }
}

async fn load_upload(st: &State, r: &Req) -> S3Result<UploadMeta> {
    let id = r.q("uploadId").unwrap_or_default();
    load_bucket(st, r.bucket()).await?;
    st.meta
        .upload(r.bucket(), r.key(), id)
        .await?
        .ok_or_else(|| S3Error::no_such_upload(id))
}

/// The initiator (`initiator`: its canonical id) and anyone with WRITE on the bucket
/// may work on an upload, or whom the bucket policy allows `action`; an explicit
/// Deny in the policy holds for the initiator too.
async fn require_upload_access(st: &State, r: &Req, initiator: &str, action: &str) -> S3Result<()> {
    let b = load_bucket(st, r.bucket()).await?;
    let authz = Authz::new(&b)?;
    match authz.policy_decision(r, action, Some(r.key())) {
        Decision::Deny => Err(S3Error::access_denied()),
        Decision::Allow => Ok(()),
        Decision::Implicit
            if r.principal.as_ref().map(|p| p.canonical_id.as_str()) == Some(initiator) =>
        {
            Ok(())
        }
        Decision::Implicit => authz.check(
            r,
            action,
            Some(r.key()),
            None,
            AclRule::Grant(&b.acl, Permission::Write),
        ),
    }
}

async fn create(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CreateMultipartUpload";
    let b = load_bucket(st, r.bucket()).await?;
    authz::check_put(r, &b)?;
    let writer = r
        .principal
        .as_ref()
        .map(crate::acl::Owner::of)
        .unwrap_or_else(|| b.owner.clone());
    let (owner, acl) = crate::ownership::owner_and_acl(st, r, &b, writer).await?;
    let (headers, user_meta) = content_from_request(r)?;
    let mode = checksums::upload_mode(r)?;
    let (retention, legal_hold) = crate::objectlock::for_new_object(r, &b)?;
    let tags = crate::tags::from_request_header(&r.headers)?;
    // One data key for every part: each part's blob has its own IV.
    let enc = crate::sse::for_write(st, r, &b).await?;
    let upload_id = crate::blob::new_blob_id();
    let u = UploadMeta {
        upload_id: upload_id.clone(),
        bucket: r.bucket().into(),
        key: r.key().into(),
        initiated: now_millis(),
        owner,
        headers,
        user_meta,
        acl,
        checksum_algorithm: mode.map(|(a, _)| a.name().to_string()),
        checksum_type: mode.map(|(_, t)| t.name().to_string()),
        tags,
        retention,
        legal_hold,
        sse: enc.as_ref().map(|e| e.sse.clone()),
    };
    st.meta.apply(MetaOp::CreateUpload(u)).await?;
    let mut w = XmlWriter::new();
    w.root("InitiateMultipartUploadResult", S3_NS)
        .elem("Bucket", r.bucket())
        .elem("Key", r.key())
        .elem("UploadId", &upload_id);
    let mut resp = xml(StatusCode::OK, w.finish());
    if let Some(e) = &enc {
        e.set_headers(resp.headers_mut())?;
    }
    if let Some((a, t)) = mode {
        set_header(resp.headers_mut(), "x-amz-checksum-algorithm", a.name())?;
        set_header(resp.headers_mut(), "x-amz-checksum-type", t.name())?;
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
    let u = load_upload(st, r).await?;
    require_upload_access(st, r, &u.owner.id, "s3:PutObject").await?;
    // An SSE-C upload's parts each bring its key (checked against the upload's).
    let enc = crate::sse::for_read(st, r, u.sse.as_ref(), false).await?;
    let dst_key = enc.as_ref().map(|e| &e.key);
    let (blob, md5, checksums) = if copy {
        let (_, _, src, _) = copy_source(st, r).await?;
        let src_enc = crate::sse::for_read(st, r, src.sse.as_ref(), true).await?;
        let range = match r.header("x-amz-copy-source-range") {
            None => 0..src.size,
            Some(v) => copy_source_range(v, src.size)?,
        };
        // The copied part gets the upload's checksum (or S3's default), computed
        // on the way.
        let alg = checksums::stored_mode(&u)
            .map(|(a, _)| a)
            .or(Some(checksums::DEFAULT_ALGORITHM));
        let src_key = src_enc.as_ref().map(|e| &e.key);
        let (blob, md5, sum) = copy_range(st, &src, src_key, range, alg, dst_key).await?;
        (blob, md5, sum.into_iter().collect())
    } else {
        if !r.headers.contains_key("content-length") {
            return Err(S3Error::new(
                "MissingContentLength",
                411,
                "You must provide the Content-Length HTTP header.",
            ));
        }
        let mut body = r.body(st.cfg.max_put_bytes)?;
        checksums::check_part_algorithm(&u, body.checksum_algorithm())?;
        // A part of an upload without an algorithm that declares no checksum gets
        // S3's default, from which Complete derives the object's.
        if checksums::stored_mode(&u).is_none() {
            body.compute_unless_declared(checksums::DEFAULT_ALGORITHM);
        }
        // Parts are always blobs (inline_max 0): completion only links them.
        let (stored, summary) = store_body(st, body, 0, dst_key).await?;
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
    let etag = match &enc {
        Some(e) => e.etag(&md5),
        None => hex::encode(md5),
    };
    let part = PartMeta {
        number,
        blob: blob.clone(),
        etag: etag.clone(),
        last_modified: now_millis(),
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
            crate::handler::free_uncommitted(st, vec![blob], &e);
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
        checksums::write_xml(&mut w, &part.checksums, None);
        let mut resp = xml(StatusCode::OK, w.finish());
        if let Some(e) = &enc {
            e.set_headers(resp.headers_mut())?;
        }
        return Ok(resp);
    }
    let mut resp = empty(StatusCode::OK);
    set_header(resp.headers_mut(), "etag", &format!("\"{etag}\""))?;
    if let Some(e) = &enc {
        e.set_headers(resp.headers_mut())?;
    }
    for (a, v) in &part.checksums {
        set_header(
            resp.headers_mut(),
            &format!("x-amz-checksum-{}", a.to_ascii_lowercase()),
            v,
        )?;
    }
    Ok(resp)
}

/// Parses `x-amz-copy-source-range: bytes=first-last` against the source size. Unlike
/// a GET range it is not clamped: as in S3, a range that reaches past the end of the
/// source is `InvalidRange` (416), so no shorter part is stored in its place.
fn copy_source_range(v: &str, size: u64) -> S3Result<std::ops::Range<u64>> {
    let malformed = || {
        S3Error::invalid_argument("The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy").with("ArgumentName", "x-amz-copy-source-range")
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let (first, last) = v
        .strip_prefix("bytes=")
        .and_then(|spec| spec.split_once('-'))
        .filter(|(a, b)| digits(a) && digits(b))
        .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)))
        .filter(|(a, b)| a <= b)
        .ok_or_else(malformed)?;
    if last >= size {
        return Err(S3Error::new(
            "InvalidRange",
            416,
            "The requested range is not satisfiable",
        )
        .with("RangeRequested", v.to_string())
        .with("ActualObjectSize", size.to_string()));
    }
    Ok(first..last + 1)
}

async fn complete(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CompleteMultipartUpload";
    let u = match load_upload(st, r).await {
        Ok(u) => u,
        Err(e) if e.code == "NoSuchUpload" => return complete_again(st, r, e).await,
        Err(e) => return Err(e),
    };
    require_upload_access(st, r, &u.owner.id, "s3:PutObject").await?;
    // SSE-C keys are optional here (S3 asks for them only in some cases); one that is
    // sent must be the upload's, and an upload that is not SSE-C takes none (400, as
    // for every other request).
    let enc = match crate::sse::customer_key(st, r, false)? {
        Some(_) => crate::sse::for_read(st, r, u.sse.as_ref(), false).await?,
        None => None,
    };
    // A condition that already fails is refused before the part list is read; the
    // upload stays, as in S3, so it can be completed again (e.g. without it).
    let cond = write_cond::from_headers(&r.headers)?;
    write_cond::precheck(st, r.bucket(), r.key(), cond.as_ref()).await?;
    let claims = checksums::take_complete_claims(&mut r.headers)?;
    let node = r.xml_body(4 * 1024 * 1024).await?;
    let wanted = crate::xmlreq::complete_parts(&node)?;
    let listed: Vec<_> = node
        .children("Part")
        .map(checksums::listed_part_checksums)
        .collect();
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
        let batch = st.meta.parts(&u.upload_id, after, 1000).await?;
        let Some(last) = batch.last() else { break };
        after = last.number;
        stored.extend(batch);
    }
    let mut chosen: Vec<&PartMeta> = Vec::new();
    for (n, etag) in &wanted {
        let p = stored
            .iter()
            .find(|p| p.number == *n)
            .ok_or_else(|| checksums::invalid_part(*n))?;
        if p.etag != *etag {
            return Err(checksums::invalid_part(*n));
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
    let sum = checksums::complete(&u, &chosen, &listed, &claims)?;
    let meta = ObjectMeta {
        size: chosen.iter().map(|p| p.blob.size).sum(),
        etag: etag.clone(),
        last_modified: now_millis(),
        owner: u.owner.clone(),
        headers: u.headers.clone(),
        user_meta: u.user_meta.clone(),
        checksums: sum.checksums,
        acl: u.acl.clone(),
        data: ObjectData::Blobs(chosen.iter().map(|p| p.blob.clone()).collect()),
        part_sizes: chosen.iter().map(|p| p.blob.size).collect(),
        checksum_type: sum.checksum_type,
        part_checksums: sum.part_checksums,
        tags: u.tags.clone(),
        version_id: None,
        retention: u.retention.clone(),
        legal_hold: u.legal_hold,
        sse: u.sse.clone(),
    };
    let (meta_checksums, meta_type) = (meta.checksums.clone(), meta.checksum_type.clone());
    let expiration = load_bucket(st, r.bucket())
        .await
        .ok()
        .and_then(|b| crate::lifecycle::expiration_header(st, &b, r.key(), &meta));
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
            cond: cond.clone(),
        })
        .await;
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            return Err(write_cond::commit_error(st, r.bucket(), r.key(), cond.as_ref(), e).await)
        }
    };
    free_blobs(st, out.freed_blobs);
    let mut w = XmlWriter::new();
    w.root("CompleteMultipartUploadResult", S3_NS)
        .elem("Location", format!("/{}/{}", r.bucket(), r.key()))
        .elem("Bucket", r.bucket())
        .elem("Key", r.key())
        .elem("ETag", format!("\"{etag}\""));
    checksums::write_xml(&mut w, &meta_checksums, meta_type.as_deref());
    let mut resp = xml(StatusCode::OK, w.finish());
    crate::handler::set_written_version_header(resp.headers_mut(), out.version_id.as_deref())?;
    crate::sse::set_headers(
        resp.headers_mut(),
        u.sse.as_ref(),
        enc.as_ref().and_then(|e| e.customer.as_ref()),
    )?;
    if let Some(v) = expiration {
        set_header(resp.headers_mut(), "x-amz-expiration", &v)?;
    }
    Ok(resp)
}

/// A CompleteMultipartUpload for an upload that is no longer in progress: if it was
/// completed (within [`crate::meta::COMPLETED_TTL_MS`]) with the same parts, by
/// someone who may work on it, the answer is the one the first completion gave (as
/// S3 does, so a client that lost the first answer can retry); the object is not
/// touched. Anything else is the original `NoSuchUpload`.
async fn complete_again(st: &Arc<State>, r: &mut Req, no_such: S3Error) -> S3Result<Resp> {
    let id = r.q("uploadId").unwrap_or_default().to_string();
    let Some(done) = st.meta.completed_upload(r.bucket(), r.key(), &id).await? else {
        return Err(no_such);
    };
    if require_upload_access(st, r, &done.owner_id, "s3:PutObject")
        .await
        .is_err()
    {
        return Err(no_such);
    }
    let node = r.xml_body(4 * 1024 * 1024).await?;
    let wanted = crate::xmlreq::complete_parts(&node)?;
    let digest = crate::meta::parts_digest(wanted.iter().map(|(n, e)| (*n, e.as_str())));
    if digest != done.parts_digest {
        return Err(no_such);
    }
    let mut w = XmlWriter::new();
    w.root("CompleteMultipartUploadResult", S3_NS)
        .elem("Location", format!("/{}/{}", r.bucket(), r.key()))
        .elem("Bucket", r.bucket())
        .elem("Key", r.key())
        .elem("ETag", format!("\"{}\"", done.etag));
    checksums::write_xml(&mut w, &done.checksums, done.checksum_type.as_deref());
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

async fn list_parts(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "ListParts";
    let u = load_upload(st, r).await?;
    require_upload_access(st, r, &u.owner.id, "s3:ListMultipartUploadParts").await?;
    let max = query_number::<usize>(r, "max-parts", 1000)?.min(1000);
    let marker = query_number::<u32>(r, "part-number-marker", 0)?;
    let mut parts = st.meta.parts(&u.upload_id, marker, max + 1).await?;
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
    if let Some(t) = &u.checksum_type {
        w.elem("ChecksumType", t);
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
        checksums::write_xml(&mut w, &p.checksums, None);
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
        let batch = st
            .meta
            .scan_uploads(
                r.bucket(),
                after.as_ref().map(|(k, u)| (k.as_str(), u.as_str())),
                &prefix,
                1000,
            )
            .await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn copy_source_ranges_are_not_clamped() {
        assert_eq!(copy_source_range("bytes=0-9", 10).unwrap(), 0..10);
        assert_eq!(copy_source_range("bytes=3-3", 10).unwrap(), 3..4);
        for past in ["bytes=0-10", "bytes=5-1000", "bytes=10-10"] {
            let e = copy_source_range(past, 10).unwrap_err();
            assert_eq!((e.code, e.status), ("InvalidRange", 416), "{past}");
        }
        for bad in [
            "bytes=-5",
            "bytes=5-",
            "bytes=5-1",
            "0-5",
            "bytes= 0-5",
            "bytes=0-1,2-3",
        ] {
            assert_eq!(copy_source_range(bad, 10).unwrap_err().status, 400, "{bad}");
        }
    }
}
