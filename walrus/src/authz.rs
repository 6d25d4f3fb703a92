//! The one access decision of every S3 request: the bucket policy and the ACLs, in
//! S3's order. An explicit Deny in the bucket policy refuses (the bucket owner
//! included; only the policy operations themselves are exempt for the owner, see
//! [`crate::api_policy`]); otherwise an Allow from the policy or from the ACLs admits.
//! The public access block adjusts both: IgnorePublicAcls drops public grants,
//! RestrictPublicBuckets drops a public policy's Allows for callers outside the
//! bucket owner's account.
//!
//! A bucket without a policy or public access block takes the ACL check alone, as
//! before policies existed.
use crate::acl::{Acl, Grantee, Permission, ALL_USERS, AUTHENTICATED_USERS};
use crate::error::{S3Error, S3Result};
use crate::handler::{Found, Req};
use crate::meta::{BucketConfig, BucketMeta, ObjectMeta};
use crate::policy::{Caller, Decision, Facts, Policy};
pub use crate::public_access::PublicAccessBlock;
use crate::state::State;

/// What the ACL side of a decision requires.
#[derive(Clone, Copy)]
pub enum AclRule<'a> {
    /// A permission on an ACL (the bucket's or the object's).
    Grant(&'a Acl, Permission),
    /// Only the bucket owner (the operations S3 reserves to the owner when no
    /// policy grants them).
    BucketOwner,
    /// The owner of this object or the bucket's owner: object tagging, which S3 grants
    /// through policies only, never through ACL grants.
    ObjectOrBucketOwner(&'a crate::acl::Owner),
}

/// What the ACL side of an object operation requires of the object found.
#[derive(Clone, Copy)]
pub enum ObjectRule {
    /// A permission on the object's ACL.
    Grant(Permission),
    /// [`AclRule::ObjectOrBucketOwner`].
    Owners,
}

/// The public access block in force on a bucket: its own, with its owner's
/// account-level block ([`BucketMeta::account_block`]) on top.
impl PublicAccessBlock {
    /// The block in force on the bucket: its stored document's, with its owner
    /// account's on top.
    pub fn of(b: &BucketMeta) -> S3Result<Self> {
        let own = match b.config(BucketConfig::PUBLIC_ACCESS_BLOCK) {
            None => Self::default(),
            Some(doc) => crate::xmlreq::public_access_block(&crate::xmlin::parse(doc.as_bytes())?)
                .map_err(|_| S3Error::internal("stored public access block unreadable"))?,
        };
        Ok(own.union(b.account_block.unwrap_or_default()))
    }
}

/// Whether ACLs are disabled on the bucket: object ownership `BucketOwnerEnforced`
/// (stored by [`crate::ownership`] under its name).
pub fn acls_disabled(b: &BucketMeta) -> bool {
    b.config(BucketConfig::OWNERSHIP) == Some("BucketOwnerEnforced")
}

/// A grant to everyone or to every authenticated caller.
fn is_public_grant(g: &crate::acl::Grant) -> bool {
    matches!(&g.grantee, Grantee::Group(u) if u == ALL_USERS || u == AUTHENTICATED_USERS)
}

/// Whether an ACL grants anything to the public groups.
pub fn acl_is_public(acl: &Acl) -> bool {
    acl.grants.iter().any(is_public_grant)
}

/// BlockPublicAcls: a request setting a public ACL is refused (403, as S3).
pub fn check_acl_allowed(b: &BucketMeta, acl: &Acl) -> S3Result<()> {
    if (b.config(BucketConfig::PUBLIC_ACCESS_BLOCK).is_some() || b.account_block.is_some())
        && acl_is_public(acl)
        && PublicAccessBlock::of(b)?.block_public_acls
    {
        return Err(S3Error::access_denied());
    }
    Ok(())
}

/// The stored policy of a bucket, parsed (it was validated when it was put).
pub fn policy_of(b: &BucketMeta) -> S3Result<Option<Policy>> {
    b.config(BucketConfig::POLICY)
        .map(|doc| {
            Policy::parse(doc.as_bytes(), &b.name)
                .map_err(|e| S3Error::internal(format!("stored bucket policy unreadable: {e}")))
        })
        .transpose()
}

/// The access rules of one bucket: the policy parsed once per request, however many
/// checks it makes (DeleteObjects checks every key). It does not hold the request,
/// so a handler can read the body between checks.
pub struct Authz<'a> {
    bucket: &'a BucketMeta,
    policy: Option<Policy>,
    pab: PublicAccessBlock,
    /// RestrictPublicBuckets is on and the policy is public.
    restricted: bool,
    /// Object ownership `BucketOwnerEnforced`: ACL grants admit no one but the bucket
    /// owner.
    acls_disabled: bool,
}

impl<'a> Authz<'a> {
    pub fn new(bucket: &'a BucketMeta) -> S3Result<Self> {
        let policy = policy_of(bucket)?;
        let pab = PublicAccessBlock::of(bucket)?;
        let restricted =
            pab.restrict_public_buckets && policy.as_ref().is_some_and(Policy::is_public);
        Ok(Authz {
            bucket,
            policy,
            pab,
            restricted,
            acls_disabled: acls_disabled(bucket),
        })
    }

    pub fn is_bucket_owner(&self, r: &Req) -> bool {
        r.principal
            .as_ref()
            .is_some_and(|p| p.canonical_id == self.bucket.owner.id)
    }

    /// The bucket policy's verdict alone (for the policy operations, which decide the
    /// rest themselves).
    pub fn policy_decision(&self, r: &Req, action: &str, key: Option<&str>) -> Decision {
        self.evaluate(r, action, key, None)
    }

    fn evaluate(
        &self,
        r: &Req,
        action: &str,
        key: Option<&str>,
        tags: Option<&[(String, String)]>,
    ) -> Decision {
        let Some(policy) = &self.policy else {
            return Decision::Implicit;
        };
        let facts = RequestFacts { r, action, tags };
        let resource = crate::policy::resource_arn(&self.bucket.name, key);
        let caller = r.principal.as_ref().map(|p| Caller {
            account_id: &p.account_id,
            canonical_id: &p.canonical_id,
        });
        // RestrictPublicBuckets: with a public policy, only the owner account's callers
        // keep what the policy allows.
        let restricted = self.restricted && !self.is_bucket_owner(r);
        policy.evaluate_where(caller, action, &resource, &facts, |_| !restricted)
    }

    fn acl_allows(&self, r: &Req, rule: AclRule) -> bool {
        let who = r.principal.as_ref();
        if self.acls_disabled {
            return self.is_bucket_owner(r);
        }
        match rule {
            AclRule::BucketOwner => self.is_bucket_owner(r),
            AclRule::ObjectOrBucketOwner(o) => {
                self.is_bucket_owner(r) || who.is_some_and(|p| p.canonical_id == o.id)
            }
            AclRule::Grant(acl, perm) if self.pab.ignore_public_acls && acl_is_public(acl) => {
                let private = Acl {
                    owner: acl.owner.clone(),
                    grants: acl
                        .grants
                        .iter()
                        .filter(|g| !is_public_grant(g))
                        .cloned()
                        .collect(),
                };
                private.allows(who, perm)
            }
            AclRule::Grant(acl, perm) => acl.allows(who, perm),
        }
    }

    /// Whether the request may do `action` on the bucket (`key: None`) or an object.
    pub fn allowed(
        &self,
        r: &Req,
        action: &str,
        key: Option<&str>,
        tags: Option<&[(String, String)]>,
        rule: AclRule,
    ) -> bool {
        match self.evaluate(r, action, key, tags) {
            Decision::Deny => false,
            Decision::Allow => true,
            Decision::Implicit => self.acl_allows(r, rule),
        }
    }

    /// [`Authz::allowed`], or `AccessDenied`.
    pub fn check(
        &self,
        r: &Req,
        action: &str,
        key: Option<&str>,
        tags: Option<&[(String, String)]>,
        rule: AclRule,
    ) -> S3Result<()> {
        if self.allowed(r, action, key, tags, rule) {
            Ok(())
        } else {
            Err(S3Error::access_denied())
        }
    }

    /// Whether some key could be allowed `action`: the ACL allows it, or a policy
    /// statement might (checked per key later). For a check before a body naming the
    /// keys is read (DeleteObjects).
    pub fn may_for_some_key(&self, r: &Req, action: &str, rule: AclRule) -> bool {
        // A statement may be scoped to a prefix or a condition: the per-key checks decide.
        self.acl_allows(r, rule)
            || self.policy.as_ref().is_some_and(|p| {
                p.statements.iter().any(|s| {
                    s.effect == crate::policy::Effect::Allow
                        && (s.not_action
                            || s.actions
                                .iter()
                                .any(|a| crate::policy::glob(a, action, true)))
                })
            })
    }

    /// Whether the caller may list the bucket: what decides between NoSuchKey and
    /// AccessDenied for a missing key.
    pub fn may_list(&self, r: &Req) -> bool {
        let rule = AclRule::Grant(&self.bucket.acl, Permission::Read);
        self.allowed(r, "s3:ListBucket", None, None, rule)
    }

    /// The object, if the caller may do `action` on it (`perm` on its ACL). A missing
    /// key is `NoSuchKey` only for callers who may list the bucket and are not denied
    /// the action; anyone else gets `AccessDenied`, as for an existing object they may
    /// not read (no existence oracle).
    pub async fn object(
        &self,
        st: &State,
        r: &Req,
        key: &str,
        action: &str,
        perm: Permission,
    ) -> S3Result<ObjectMeta> {
        self.object_version(st, r, key, None, action, perm).await
    }

    /// [`Authz::object`] for a version (`None`: the current object). A delete marker
    /// or a missing version is told (with S3's errors, [`Found::missing_error`]) only to
    /// those a missing key would be.
    pub async fn object_version(
        &self,
        st: &State,
        r: &Req,
        key: &str,
        version_id: Option<&str>,
        action: &str,
        perm: Permission,
    ) -> S3Result<ObjectMeta> {
        self.object_version_by(st, r, key, version_id, action, ObjectRule::Grant(perm))
            .await
    }

    /// [`Authz::object_version`] with any [`ObjectRule`] as the ACL side.
    pub async fn object_version_by(
        &self,
        st: &State,
        r: &Req,
        key: &str,
        version_id: Option<&str>,
        action: &str,
        acl_side: ObjectRule,
    ) -> S3Result<ObjectMeta> {
        match crate::handler::find_object(st, self.bucket, key, version_id).await? {
            Found::Object(o) => {
                let rule = match acl_side {
                    ObjectRule::Grant(perm) => AclRule::Grant(&o.acl, perm),
                    ObjectRule::Owners => AclRule::ObjectOrBucketOwner(&o.owner),
                };
                self.check(r, action, Some(key), Some(&o.tags), rule)?;
                Ok(*o)
            }
            missing
                if self.evaluate(r, action, Some(key), None) != Decision::Deny
                    && self.may_list(r) =>
            {
                Err(missing.missing_error(r, key))
            }
            _ => Err(S3Error::access_denied()),
        }
    }
}

/// The IAM action of a bucket sub-resource operation Walrus answers generically
/// (`?cors`, `?lifecycle`, ...): the Get one, or the Put one (which also covers
/// deleting it, as in S3).
pub fn config_action(r: &Req, get: bool) -> &'static str {
    const ACTIONS: &[(&str, &str, &str)] = &[
        ("cors", "s3:GetBucketCORS", "s3:PutBucketCORS"),
        (
            "lifecycle",
            "s3:GetLifecycleConfiguration",
            "s3:PutLifecycleConfiguration",
        ),
        ("tagging", "s3:GetBucketTagging", "s3:PutBucketTagging"),
        ("website", "s3:GetBucketWebsite", "s3:DeleteBucketWebsite"),
        (
            "encryption",
            "s3:GetEncryptionConfiguration",
            "s3:PutEncryptionConfiguration",
        ),
        (
            "replication",
            "s3:GetReplicationConfiguration",
            "s3:PutReplicationConfiguration",
        ),
        (
            "object-lock",
            "s3:GetBucketObjectLockConfiguration",
            "s3:PutBucketObjectLockConfiguration",
        ),
        (
            "ownershipControls",
            "s3:GetBucketOwnershipControls",
            "s3:PutBucketOwnershipControls",
        ),
    ];
    ACTIONS
        .iter()
        .find(|(sub, _, _)| r.has(sub))
        .map(|(_, g, p)| if get { *g } else { *p })
        .unwrap_or(if get {
            "s3:GetBucketConfiguration"
        } else {
            "s3:PutBucketConfiguration"
        })
}

/// One check on a bucket or object: the common case of a handler.
pub fn check(
    r: &Req,
    b: &BucketMeta,
    action: &str,
    key: Option<&str>,
    rule: AclRule,
) -> S3Result<()> {
    // The fast path: no policy, no public access block — the ACLs as always.
    if b.account_block.is_none()
        && (b.configs.is_empty()
            || (b.config(BucketConfig::POLICY).is_none()
                && b.config(BucketConfig::PUBLIC_ACCESS_BLOCK).is_none()
                && !acls_disabled(b)))
    {
        let ok = match rule {
            AclRule::Grant(acl, perm) => acl.allows(r.principal.as_ref(), perm),
            AclRule::BucketOwner => r
                .principal
                .as_ref()
                .is_some_and(|p| p.canonical_id == b.owner.id),
            AclRule::ObjectOrBucketOwner(o) => r
                .principal
                .as_ref()
                .is_some_and(|p| p.canonical_id == b.owner.id || p.canonical_id == o.id),
        };
        return if ok {
            Ok(())
        } else {
            Err(S3Error::access_denied())
        };
    }
    Authz::new(b)?.check(r, action, key, None, rule)
}

/// `s3:PutObject` on the request's key (a PUT, a copy's destination, a multipart
/// upload): WRITE on the bucket, or the bucket policy.
pub fn check_put(r: &Req, b: &BucketMeta) -> S3Result<()> {
    let key = r.key().to_string();
    let rule = AclRule::Grant(&b.acl, Permission::Write);
    check(r, b, "s3:PutObject", Some(&key), rule)
}

/// The object `key` of bucket `b` for `action`, see [`Authz::object_version`].
pub async fn object(
    st: &State,
    r: &Req,
    b: &BucketMeta,
    key: &str,
    version_id: Option<&str>,
    action: &str,
    perm: Permission,
) -> S3Result<ObjectMeta> {
    Authz::new(b)?
        .object_version(st, r, key, version_id, action, perm)
        .await
}

/// The condition keys a request carries.
struct RequestFacts<'a> {
    r: &'a Req,
    action: &'a str,
    tags: Option<&'a [(String, String)]>,
}

impl RequestFacts<'_> {
    fn header(&self, name: &str) -> Option<Vec<String>> {
        let v = self.r.headers.get(name)?;
        // Header values are bytes: compared as given, or absent if not text.
        std::str::from_utf8(v.as_bytes())
            .ok()
            .map(|s| vec![s.to_string()])
    }

    fn list_param(&self, name: &str) -> Option<Vec<String>> {
        // Only a listing request (no key) carries them: a GetObject's query naming
        // `prefix` must not satisfy a ListBucket condition of the missing-key check.
        let listing = matches!(self.action, "s3:ListBucket" | "s3:ListBucketVersions");
        if !listing || self.r.key.is_some() {
            return None;
        }
        self.r.q(name).map(|v| vec![v.to_string()])
    }
}

impl Facts for RequestFacts<'_> {
    fn values(&self, key: &str) -> Option<Vec<String>> {
        let (head, tail) = match key.split_once('/') {
            Some((h, t)) => (h.to_ascii_lowercase(), Some(t)),
            None => (key.to_ascii_lowercase(), None),
        };
        let principal = self.r.principal.as_ref();
        match (head.as_str(), tail) {
            ("aws:sourceip", None) => self
                .r
                .peer
                .map(|p| vec![p.client.ip().to_canonical().to_string()]),
            ("aws:securetransport", None) => self.r.peer.map(|p| vec![p.tls.to_string()]),
            ("aws:principalaccount" | "aws:userid", None) => {
                principal.map(|p| vec![p.account_id.clone()])
            }
            ("aws:principalarn", None) => {
                principal.map(|p| vec![format!("arn:aws:iam::{}:root", p.account_id)])
            }
            ("aws:principaltype", None) => Some(vec![if principal.is_some() {
                "Account".into()
            } else {
                "Anonymous".into()
            }]),
            ("aws:currenttime", None) => {
                let now = time::OffsetDateTime::now_utc();
                Some(vec![euca_aws::timefmt::format_iso8601(now)])
            }
            ("aws:epochtime", None) => Some(vec![time::OffsetDateTime::now_utc()
                .unix_timestamp()
                .to_string()]),
            ("aws:referer", None) => self.header("referer"),
            ("aws:useragent", None) => self.header("user-agent"),
            ("s3:prefix", None) => self.list_param("prefix"),
            ("s3:delimiter", None) => self.list_param("delimiter"),
            ("s3:max-keys", None) => self.list_param("max-keys"),
            ("s3:existingobjecttag", Some(k)) => self
                .tags
                .and_then(|t| t.iter().find(|(tk, _)| tk == k))
                .map(|(_, v)| vec![v.clone()]),
            ("s3:requestobjecttag", Some(k)) => {
                let tagging = self.r.headers.get("x-amz-tagging")?.to_str().ok()?;
                euca_aws::encoding::parse_query(tagging)
                    .into_iter()
                    .find(|(tk, _)| tk == k)
                    .map(|(_, v)| vec![v])
            }
            ("s3:requestobjecttagkeys", None) => {
                let tagging = self.r.headers.get("x-amz-tagging")?.to_str().ok()?;
                Some(
                    euca_aws::encoding::parse_query(tagging)
                        .into_iter()
                        .map(|(k, _)| k)
                        .collect(),
                )
            }
            // s3:x-amz-acl, s3:x-amz-grant-read, s3:x-amz-copy-source, ...: the header.
            (h, None) if h.starts_with("s3:x-amz-") => self.header(&h["s3:".len()..]),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_access_block_round_trip() {
        let pab = PublicAccessBlock {
            block_public_acls: true,
            ignore_public_acls: false,
            block_public_policy: true,
            restrict_public_buckets: false,
        };
        let doc = pab.to_xml();
        let back =
            crate::xmlreq::public_access_block(&crate::xmlin::parse(doc.as_bytes()).unwrap())
                .unwrap();
        assert_eq!(back, pab);
        let partial = crate::xmlin::parse(
            b"<PublicAccessBlockConfiguration><IgnorePublicAcls>TRUE</IgnorePublicAcls></PublicAccessBlockConfiguration>",
        )
        .unwrap();
        assert_eq!(
            crate::xmlreq::public_access_block(&partial).unwrap(),
            PublicAccessBlock {
                ignore_public_acls: true,
                ..Default::default()
            }
        );
        let bad = crate::xmlin::parse(
            b"<PublicAccessBlockConfiguration><BlockPublicAcls>yes</BlockPublicAcls></PublicAccessBlockConfiguration>",
        )
        .unwrap();
        assert!(crate::xmlreq::public_access_block(&bad).is_err());
        let wrong = crate::xmlin::parse(b"<Other/>").unwrap();
        assert!(crate::xmlreq::public_access_block(&wrong).is_err());
    }
}
