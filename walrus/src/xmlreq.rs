//! Typed readers of S3 request XML bodies: pure functions from the tree [`xmlin::parse`]
//! builds to what a handler needs. They hold no state and do no I/O, so the fuzz targets
//! (`fuzz/`) drive them with arbitrary bodies exactly as the handlers do.
//!
//! [`xmlin::parse`]: crate::xmlin::parse
use crate::error::{S3Error, S3Result};
use crate::public_access::PublicAccessBlock;
use crate::xmlin::Node;

/// Most keys one DeleteObjects request may name.
pub const MAX_DELETE_KEYS: usize = 1000;

/// A `<Delete>` body (DeleteObjects): the `Quiet` flag and the (key, version id)
/// pairs, in request order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub quiet: bool,
    pub objects: Vec<(String, Option<String>)>,
}

pub fn delete_request(node: &Node) -> S3Result<DeleteRequest> {
    if node.name != "Delete" {
        return Err(S3Error::malformed_xml());
    }
    let quiet = node
        .token_of("Quiet")
        .is_some_and(|q| q.eq_ignore_ascii_case("true"));
    let objects: Vec<(String, Option<String>)> = node
        .children("Object")
        .map(|o| {
            let key = o.text_of("Key")?.to_string();
            Some((key, o.token_of("VersionId").map(String::from)))
        })
        .collect::<Option<_>>()
        .ok_or_else(S3Error::malformed_xml)?;
    if objects.is_empty() || objects.len() > MAX_DELETE_KEYS {
        return Err(S3Error::malformed_xml());
    }
    Ok(DeleteRequest { quiet, objects })
}

/// The `(PartNumber, ETag)` list of a `<CompleteMultipartUpload>` body, in request
/// order, ETags without their quotes. Never empty; count and order are the caller's.
pub fn complete_parts(node: &Node) -> S3Result<Vec<(u32, String)>> {
    if node.name != "CompleteMultipartUpload" {
        return Err(S3Error::malformed_xml());
    }
    let mut wanted: Vec<(u32, String)> = Vec::new();
    for p in node.children("Part") {
        let n = p
            .token_of("PartNumber")
            .and_then(|n| n.parse::<u32>().ok())
            .ok_or_else(S3Error::malformed_xml)?;
        let etag = p
            .token_of("ETag")
            .unwrap_or("")
            .trim_matches('"')
            .to_string();
        wanted.push((n, etag));
    }
    if wanted.is_empty() {
        return Err(S3Error::malformed_xml());
    }
    Ok(wanted)
}

/// The `LocationConstraint` of a `<CreateBucketConfiguration>` body, if it has one.
pub fn location_constraint(node: &Node) -> S3Result<Option<&str>> {
    if node.name != "CreateBucketConfiguration" {
        return Err(S3Error::malformed_xml());
    }
    Ok(node.token_of("LocationConstraint"))
}

/// The `Status` (`Enabled` or `Suspended`) and `MfaDelete` (`Enabled` or `Disabled`)
/// of a `<VersioningConfiguration>` body; either may be absent.
pub fn versioning_configuration(node: &Node) -> S3Result<(Option<&str>, Option<&str>)> {
    if node.name != "VersioningConfiguration" {
        return Err(S3Error::malformed_xml());
    }
    let status = node.token_of("Status");
    let mfa = node.token_of("MfaDelete");
    if status.is_some_and(|s| s != "Enabled" && s != "Suspended")
        || mfa.is_some_and(|m| m != "Enabled" && m != "Disabled")
    {
        return Err(S3Error::malformed_xml());
    }
    Ok((status, mfa))
}

/// A `PublicAccessBlockConfiguration` document (a bucket's or an account's); a
/// missing field is false.
pub fn public_access_block(node: &Node) -> S3Result<PublicAccessBlock> {
    if node.name != "PublicAccessBlockConfiguration" {
        return Err(S3Error::malformed_xml());
    }
    let flag = |name: &str| match node.token_of(name) {
        None => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(S3Error::malformed_xml()),
    };
    Ok(PublicAccessBlock {
        block_public_acls: flag("BlockPublicAcls")?,
        ignore_public_acls: flag("IgnorePublicAcls")?,
        block_public_policy: flag("BlockPublicPolicy")?,
        restrict_public_buckets: flag("RestrictPublicBuckets")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xmlin::parse;

    #[test]
    fn typed_readers() {
        let d = delete_request(&parse(b"<Delete><Quiet>TRUE</Quiet><Object><Key>a</Key></Object><Object><Key>b</Key><VersionId>x</VersionId></Object></Delete>").unwrap()).unwrap();
        assert_eq!(
            d,
            DeleteRequest {
                quiet: true,
                objects: vec![("a".into(), None), ("b".into(), Some("x".into()))]
            }
        );
        for bad in [
            &b"<Delete></Delete>"[..],
            b"<Delete><Object></Object></Delete>",
            b"<Other><Object><Key>a</Key></Object></Other>",
        ] {
            assert!(delete_request(&parse(bad).unwrap()).is_err());
        }
        let many = format!(
            "<Delete>{}</Delete>",
            "<Object><Key>k</Key></Object>".repeat(1001)
        );
        assert!(delete_request(&parse(many.as_bytes()).unwrap()).is_err());

        let c = complete_parts(&parse(b"<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>\"e\"</ETag></Part><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>").unwrap()).unwrap();
        assert_eq!(c, vec![(2, "e".to_string()), (1, String::new())]);
        for bad in [
            &b"<CompleteMultipartUpload/>"[..],
            b"<CompleteMultipartUpload><Part><PartNumber>-1</PartNumber></Part></CompleteMultipartUpload>",
            b"<CompleteMultipartUpload><Part><PartNumber>4294967296</PartNumber></Part></CompleteMultipartUpload>",
            b"<Complete><Part><PartNumber>1</PartNumber></Part></Complete>",
        ] {
            assert!(complete_parts(&parse(bad).unwrap()).is_err());
        }

        let n = parse(b"<CreateBucketConfiguration><LocationConstraint>eu-west-1</LocationConstraint></CreateBucketConfiguration>").unwrap();
        assert_eq!(location_constraint(&n).unwrap(), Some("eu-west-1"));
        let n = parse(b"<CreateBucketConfiguration/>").unwrap();
        assert_eq!(location_constraint(&n).unwrap(), None);
        assert!(location_constraint(&parse(b"<X/>").unwrap()).is_err());

        let n =
            parse(b"<VersioningConfiguration><Status>Suspended</Status></VersioningConfiguration>")
                .unwrap();
        assert_eq!(
            versioning_configuration(&n).unwrap(),
            (Some("Suspended"), None)
        );
        for bad in [
            &b"<VersioningConfiguration><Status>enabled</Status></VersioningConfiguration>"[..],
            b"<VersioningConfiguration><MfaDelete>On</MfaDelete></VersioningConfiguration>",
            b"<Versioning><Status>Enabled</Status></Versioning>",
        ] {
            assert!(versioning_configuration(&parse(bad).unwrap()).is_err());
        }
    }
}
