//! Service- and bucket-level operations.
use crate::acl::Permission;
use crate::authz::{self, AclRule, AclRule::Grant};
use crate::error::{S3Error, S3Result};
use crate::handler::{self, acl_from_headers, acl_from_xml, empty, load_bucket, xml, Req, Resp};
use crate::list::list;
use crate::meta::{
    millis_to_time, now_millis, BucketConfig, BucketMeta, MetaError, MetaOp, Versioning,
};
use crate::state::State;
use base64::Engine;
use euca_aws::timefmt::format_iso8601;
use euca_aws::xml::{XmlWriter, S3_NS};
use http::{Method, StatusCode};
use std::sync::Arc;

/// S3's DNS-compatible bucket naming rules.
pub fn valid_bucket_name(n: &str) -> bool {
    let b = n.as_bytes();
    (3..=63).contains(&b.len())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'.' || *c == b'-')
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && !n.contains("..")
        && !n.contains(".-")
        && !n.contains("-.")
        && n.parse::<std::net::Ipv4Addr>().is_err()
}

pub async fn list_buckets(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let me = r.principal.as_ref().ok_or_else(S3Error::access_denied)?;
    let mut w = XmlWriter::new();
    w.root("ListAllMyBucketsResult", S3_NS);
    w.open("Owner")
        .elem("ID", &me.canonical_id)
        .elem("DisplayName", &me.display_name)
        .close();
    w.open("Buckets");
    for b in st.meta.buckets().await? {
        if b.owner.id == me.canonical_id {
            w.open("Bucket")
                .elem("Name", &b.name)
                .elem("CreationDate", format_iso8601(millis_to_time(b.created)))
                .close();
        }
    }
    w.close();
    Ok(xml(StatusCode::OK, w.finish()))
}

/// Subresources we accept but do not implement configuration for.
pub(crate) const NO_CONFIG: &[(&str, &str, &str)] = &[
    (
        "cors",
        "NoSuchCORSConfiguration",
        "The CORS configuration does not exist",
    ),
    (
        "policy",
        "NoSuchBucketPolicy",
        "The bucket policy does not exist",
    ),
    (
        "lifecycle",
        "NoSuchLifecycleConfiguration",
        "The lifecycle configuration does not exist",
    ),
    ("tagging", "NoSuchTagSet", "The TagSet does not exist"),
    (
        "website",
        "NoSuchWebsiteConfiguration",
        "The specified bucket does not have a website configuration",
    ),
    (
        "encryption",
        "ServerSideEncryptionConfigurationNotFoundError",
        "The server side encryption configuration was not found",
    ),
    (
        "replication",
        "ReplicationConfigurationNotFoundError",
        "The replication configuration was not found",
    ),
    (
        "object-lock",
        "ObjectLockConfigurationNotFoundError",
        "Object Lock configuration does not exist for this bucket",
    ),
    (
        "publicAccessBlock",
        "NoSuchPublicAccessBlockConfiguration",
        "The public access block configuration was not found",
    ),
];

pub async fn dispatch(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    if crate::api_policy::handles(r) {
        return crate::api_policy::dispatch(st, r).await;
    }
    let name = r.bucket().to_string();
    match r.method.clone() {
        Method::GET | Method::PUT | Method::DELETE if r.has("encryption") => {
            crate::api_bucket_encryption::dispatch(st, r).await
        }
        Method::GET | Method::PUT | Method::DELETE if r.has("tagging") => {
            crate::api_bucket_tagging::dispatch(st, r).await
        }
        Method::GET | Method::PUT | Method::DELETE if r.has("ownershipControls") => {
            crate::ownership::dispatch(st, r).await
        }
        Method::PUT if r.has("acl") => {
            r.op = "PutBucketAcl";
            let b = load_bucket(st, &name).await?;
            authz::check(
                r,
                &b,
                "s3:PutBucketAcl",
                None,
                Grant(&b.acl, Permission::WriteAcp),
            )?;
            crate::ownership::check_acl_change(&b)?;
            let acl = if r.header("x-amz-acl").is_some()
                || r.headers
                    .keys()
                    .any(|k| k.as_str().starts_with("x-amz-grant-"))
            {
                acl_from_headers(st, r, b.owner.clone(), None).await?
            } else {
                let node = r.xml_body(64 * 1024).await?;
                acl_from_xml(st, &node, &b.owner).await?
            };
            authz::check_acl_allowed(&b, &acl)?;
            st.meta.apply(MetaOp::SetBucketAcl { name, acl }).await?;
            Ok(empty(StatusCode::OK))
        }
        Method::PUT if r.has("cors") => crate::cors::put_bucket_cors(st, r).await,
        Method::GET if r.has("cors") => crate::cors::get_bucket_cors(st, r).await,
        Method::DELETE if r.has("cors") => crate::cors::delete_bucket_cors(st, r).await,
        Method::PUT if r.has("versioning") => {
            r.op = "PutBucketVersioning";
            let b = load_bucket(st, &name).await?;
            require_owner(&b, r, "s3:PutBucketVersioning")?;
            crate::versioning::put_bucket_versioning(st, r, &b).await
        }
        Method::PUT | Method::DELETE if r.has("lifecycle") => {
            let b = load_bucket(st, &name).await?;
            require_owner(&b, r, "s3:PutLifecycleConfiguration")?;
            if r.method == Method::PUT {
                r.op = "PutBucketLifecycleConfiguration";
                crate::lifecycle::put_config(st, r, &b).await
            } else {
                r.op = "DeleteBucketLifecycle";
                crate::lifecycle::delete_config(st, &b).await
            }
        }
        Method::PUT if r.has("logging") => {
            r.op = "PutBucketLogging";
            let b = load_bucket(st, &name).await?;
            require_owner(&b, r, "s3:PutBucketLogging")?;
            crate::logging::put_logging(st, r, &b).await
        }
        Method::PUT if r.has("object-lock") => {
            r.op = "PutObjectLockConfiguration";
            let b = load_bucket(st, &name).await?;
            require_owner(&b, r, "s3:PutBucketObjectLockConfiguration")?;
            crate::objectlock::put_config(st, r, &b).await
        }
        Method::PUT
            if r.query
                .iter()
                .any(|(k, _)| NO_CONFIG.iter().any(|(n, _, _)| n == k)) =>
        {
            r.op = "PutBucketConfig";
            load_bucket(st, &name).await?;
            Err(S3Error::not_implemented("This bucket configuration"))
        }
        Method::PUT => create_bucket(st, r).await,
        Method::HEAD => {
            r.op = "HeadBucket";
            let b = load_bucket(st, &name).await?;
            authz::check(
                r,
                &b,
                "s3:ListBucket",
                None,
                Grant(&b.acl, Permission::Read),
            )?;
            let mut resp = empty(StatusCode::OK);
            handler::set_header(resp.headers_mut(), "x-amz-bucket-region", &b.region)?;
            Ok(resp)
        }
        // S3 has no DeleteObjectLockConfiguration: a lock, once on, stays (its default
        // retention is removed by a PUT without a Rule).
        Method::DELETE if r.has("object-lock") => {
            r.op = "DeleteObjectLockConfiguration";
            load_bucket(st, &name).await?;
            Err(S3Error::method_not_allowed()
                .with("Method", "DELETE")
                .with("ResourceType", "OBJECTLOCKCONFIGURATION"))
        }
        Method::DELETE
            if r.query
                .iter()
                .any(|(k, _)| NO_CONFIG.iter().any(|(n, _, _)| n == k)) =>
        {
            r.op = "DeleteBucketConfig";
            let b = load_bucket(st, &name).await?;
            let action = authz::config_action(r, false);
            authz::check(r, &b, action, None, Grant(&b.acl, Permission::FullControl))?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Method::DELETE => {
            r.op = "DeleteBucket";
            let b = load_bucket(st, &name).await?;
            authz::check(r, &b, "s3:DeleteBucket", None, AclRule::BucketOwner)?;
            crate::system::check_deletable(st, &b)?;
            if crate::account_block::holds_blocks(&b) {
                return Err(MetaError::BucketNotEmpty.into());
            }
            st.meta.apply(MetaOp::DeleteBucket { name }).await?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Method::POST if r.has("delete") => {
            r.op = "DeleteObjects";
            crate::api_object::delete::delete_objects(st, r).await
        }
        Method::POST => crate::post::post_object(st, r).await,
        Method::GET => get_bucket(st, r).await,
        _ => Err(S3Error::method_not_allowed()),
    }
}

async fn create_bucket(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    r.op = "CreateBucket";
    let name = r.bucket().to_string();
    let owner = r.owner()?;
    if !valid_bucket_name(&name) {
        return Err(S3Error::new(
            "InvalidBucketName",
            400,
            "The specified bucket is not valid.",
        )
        .with("BucketName", &name));
    }
    crate::system::check_bucket_name(st, &name, &owner).await?;
    let (body, _) = r.body(64 * 1024)?.read_all().await?;
    if !body.iter().all(|b| b.is_ascii_whitespace()) {
        let node = crate::xmlin::parse(&body)?;
        if let Some(loc) = crate::xmlreq::location_constraint(&node)? {
            if !(loc.is_empty()
                || loc == st.cfg.region
                || (st.cfg.region == "us-east-1" && loc == "US"))
            {
                return Err(S3Error::new(
                    "IllegalLocationConstraintException",
                    400,
                    format!("The {loc} location constraint is incompatible with the region this endpoint serves ({}).", st.cfg.region),
                ));
            }
        }
    }
    let acl = acl_from_headers(st, r, owner.clone(), None).await?;
    let mut configs = std::collections::BTreeMap::new();
    if let Some(o) = crate::ownership::from_create_request(r, &acl)? {
        configs.insert(BucketConfig::OWNERSHIP.into(), o.name().into());
    }
    // Object lock at creation: versioning on, and the lock with no default retention.
    if r.header("x-amz-bucket-object-lock-enabled")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
    {
        configs.insert(BucketConfig::VERSIONING.into(), Versioning::ENABLED.into());
        let lock = crate::objectlock::LockConfig { default: None };
        configs.insert(BucketConfig::OBJECT_LOCK.into(), lock.to_xml());
    }
    let meta = BucketMeta {
        name: name.clone(),
        owner: owner.clone(),
        created: now_millis(),
        region: st.cfg.region.clone(),
        acl: acl.clone(),
        configs,
        account_block: st.account_blocks.get(&owner.id),
    };
    // A public ACL at creation, under the account's BlockPublicAcls.
    authz::check_acl_allowed(&meta, &acl)?;
    match st.meta.apply(MetaOp::CreateBucket(meta)).await {
        Ok(_) => {}
        // As AWS in us-east-1 (its legacy behaviour): the owner re-creating a bucket gets
        // 200, the objects stay and the ACL becomes the one this request asks for.
        Err(MetaError::BucketExists { owner: o })
            if o == owner.id && st.cfg.region == "us-east-1" =>
        {
            // The ACL is replaced: the bucket's public access block has its say.
            authz::check_acl_allowed(&load_bucket(st, &name).await?, &acl)?;
            st.meta
                .apply(MetaOp::SetBucketAcl {
                    name: name.clone(),
                    acl,
                })
                .await?;
        }
        Err(MetaError::BucketExists { owner: o }) if o == owner.id => {
            return Err(S3Error::new("BucketAlreadyOwnedByYou", 409, "Your previous request to create the named bucket succeeded and you already own it."));
        }
        Err(e) => return Err(e.into()),
    }
    let mut resp = empty(StatusCode::OK);
    handler::set_header(resp.headers_mut(), "location", &format!("/{name}"))?;
    Ok(resp)
}

async fn get_bucket(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let name = r.bucket().to_string();
    let b = load_bucket(st, &name).await?;
    if r.has("acl") {
        r.op = "GetBucketAcl";
        authz::check(
            r,
            &b,
            "s3:GetBucketAcl",
            None,
            Grant(&b.acl, Permission::ReadAcp),
        )?;
        return Ok(xml(StatusCode::OK, b.acl.to_xml()));
    }
    if r.has("lifecycle") {
        r.op = "GetBucketLifecycleConfiguration";
        require_owner(&b, r, "s3:GetLifecycleConfiguration")?;
        return crate::lifecycle::get_config(&b);
    }
    if r.has("object-lock") {
        r.op = "GetObjectLockConfiguration";
        require_owner(&b, r, "s3:GetBucketObjectLockConfiguration")?;
        return crate::objectlock::get_config(&b);
    }
    if let Some((_, code, msg)) = NO_CONFIG.iter().find(|(n, _, _)| r.has(n)) {
        r.op = "GetBucketConfig";
        let action = authz::config_action(r, true);
        authz::check(r, &b, action, None, Grant(&b.acl, Permission::Read))?;
        return Err(S3Error::new(code, 404, *msg).with("BucketName", &name));
    }
    if r.has("location") {
        r.op = "GetBucketLocation";
        require_owner(&b, r, "s3:GetBucketLocation")?;
        let region = if b.region == "us-east-1" {
            ""
        } else {
            b.region.as_str()
        };
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{S3_NS}\">{}</LocationConstraint>",
            euca_aws::xml::escape(region)
        );
        return Ok(xml(StatusCode::OK, body));
    }
    if r.has("versioning") {
        r.op = "GetBucketVersioning";
        require_owner(&b, r, "s3:GetBucketVersioning")?;
        return Ok(crate::versioning::get_bucket_versioning(&b));
    }
    if r.has("logging") {
        r.op = "GetBucketLogging";
        require_owner(&b, r, "s3:GetBucketLogging")?;
        return Ok(crate::logging::get_logging(&b));
    }
    if r.has("requestPayment") {
        r.op = "GetBucketRequestPayment";
        let mut w = XmlWriter::new();
        w.root("RequestPaymentConfiguration", S3_NS)
            .elem("Payer", "BucketOwner");
        return Ok(xml(StatusCode::OK, w.finish()));
    }
    if r.has("uploads") {
        r.op = "ListMultipartUploads";
        let rule = Grant(&b.acl, Permission::Read);
        authz::check(r, &b, "s3:ListBucketMultipartUploads", None, rule)?;
        return crate::api_multipart::list_uploads(st, r).await;
    }
    let action = if r.has("versions") {
        "s3:ListBucketVersions"
    } else {
        "s3:ListBucket"
    };
    authz::check(r, &b, action, None, Grant(&b.acl, Permission::Read))?;
    if r.has("versions") {
        return crate::versioning::list_object_versions(st, r).await;
    }
    list_objects(st, r).await
}

/// The bucket owner, or whom the bucket policy allows `action`.
fn require_owner(b: &BucketMeta, r: &Req, action: &str) -> S3Result<()> {
    authz::check(r, b, action, None, AclRule::BucketOwner)
}

async fn list_objects(st: &Arc<State>, r: &mut Req) -> S3Result<Resp> {
    let v2 = r.q("list-type") == Some("2");
    r.op = if v2 { "ListObjectsV2" } else { "ListObjects" };
    let prefix = r.q("prefix").unwrap_or("").to_string();
    let delimiter = r.q("delimiter").unwrap_or("").to_string();
    let url = crate::handler::url_encoding(r)?;
    let enc = |s: &str| crate::handler::listing_text(url, s);
    let max = handler::parse_max(r, "max-keys")?;
    let token = r.q("continuation-token").map(String::from);
    let marker: Option<String> = if v2 {
        match &token {
            Some(t) => Some(
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        S3Error::invalid_argument("The continuation token provided is incorrect")
                            .with("ArgumentName", "continuation-token")
                    })?,
            ),
            None => r.q("start-after").map(String::from),
        }
    } else {
        r.q("marker").map(String::from)
    };
    let l = list(
        st.meta.as_ref(),
        r.bucket(),
        &prefix,
        &delimiter,
        marker.as_deref(),
        max,
    )
    .await?;
    let fetch_owner = !v2 || r.q("fetch-owner") == Some("true");
    let mut w = XmlWriter::new();
    w.root("ListBucketResult", S3_NS);
    w.elem("Name", r.bucket()).elem("Prefix", enc(&prefix));
    if v2 {
        if let Some(t) = &token {
            w.elem("ContinuationToken", t);
        }
        if let Some(s) = r.q("start-after") {
            w.elem("StartAfter", enc(s));
        }
        w.elem("KeyCount", (l.objects.len() + l.prefixes.len()).to_string());
    } else {
        w.elem("Marker", enc(marker.as_deref().unwrap_or("")));
    }
    w.elem("MaxKeys", max.to_string());
    if !delimiter.is_empty() {
        w.elem("Delimiter", enc(&delimiter));
    }
    if url {
        w.elem("EncodingType", "url");
    }
    w.elem("IsTruncated", if l.truncated { "true" } else { "false" });
    if l.truncated {
        if let Some(last) = &l.last {
            if v2 {
                w.elem(
                    "NextContinuationToken",
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes()),
                );
            } else {
                w.elem("NextMarker", enc(last));
            }
        }
    }
    for (key, o) in &l.objects {
        w.open("Contents");
        w.elem("Key", enc(key));
        w.elem(
            "LastModified",
            format_iso8601(millis_to_time(o.last_modified)),
        )
        .elem("ETag", format!("\"{}\"", o.etag))
        .elem("Size", o.size.to_string());
        if fetch_owner {
            w.open("Owner")
                .elem("ID", &o.owner.id)
                .elem("DisplayName", &o.owner.display_name)
                .close();
        }
        w.elem("StorageClass", "STANDARD");
        w.close();
    }
    for p in &l.prefixes {
        w.open("CommonPrefixes").elem("Prefix", enc(p)).close();
    }
    Ok(xml(StatusCode::OK, w.finish()))
}
