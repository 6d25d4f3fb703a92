//! S3 access control lists: owners, grants, canned ACLs and permission checks.
use euca_aws::xml::{escape, XmlWriter, S3_NS};
use euca_aws::Principal;
use serde::{Deserialize, Serialize};

pub const ALL_USERS: &str = "http://acs.amazonaws.com/groups/global/AllUsers";
pub const AUTHENTICATED_USERS: &str = "http://acs.amazonaws.com/groups/global/AuthenticatedUsers";
pub const LOG_DELIVERY: &str = "http://acs.amazonaws.com/groups/s3/LogDelivery";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Owner {
    pub id: String,
    pub display_name: String,
}

impl Owner {
    pub fn of(p: &Principal) -> Self {
        Owner {
            id: p.canonical_id.clone(),
            display_name: p.display_name.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Permission {
    FullControl,
    Read,
    Write,
    ReadAcp,
    WriteAcp,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FullControl => "FULL_CONTROL",
            Self::Read => "READ",
            Self::Write => "WRITE",
            Self::ReadAcp => "READ_ACP",
            Self::WriteAcp => "WRITE_ACP",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "FULL_CONTROL" => Self::FullControl,
            "READ" => Self::Read,
            "WRITE" => Self::Write,
            "READ_ACP" => Self::ReadAcp,
            "WRITE_ACP" => Self::WriteAcp,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Grantee {
    /// A canonical user id (display name resolved when rendered, if known).
    User {
        id: String,
        display_name: Option<String>,
    },
    /// A group URI such as [`ALL_USERS`].
    Group(String),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Grant {
    pub grantee: Grantee,
    pub permission: Permission,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Acl {
    pub owner: Owner,
    pub grants: Vec<Grant>,
}

/// Context needed to expand canned ACLs.
pub struct CannedContext<'a> {
    /// Canonical id of the cloud's own system account, which `aws-exec-read` lets read
    /// (the image and snapshot services read bundles as that account).
    pub system_id: &'a str,
    /// The bucket owner, for `bucket-owner-*` on objects.
    pub bucket_owner: Option<&'a Owner>,
}

impl Acl {
    pub fn private(owner: Owner) -> Self {
        let grants = vec![Grant {
            grantee: Grantee::User {
                id: owner.id.clone(),
                display_name: Some(owner.display_name.clone()),
            },
            permission: Permission::FullControl,
        }];
        Acl { owner, grants }
    }

    /// Expands a canned ACL name; `None` if unknown.
    pub fn canned(name: &str, owner: Owner, ctx: &CannedContext) -> Option<Self> {
        let mut acl = Acl::private(owner);
        let group = |uri: &str, p| Grant {
            grantee: Grantee::Group(uri.to_string()),
            permission: p,
        };
        match name {
            "private" => {}
            "public-read" => acl.grants.push(group(ALL_USERS, Permission::Read)),
            "public-read-write" => {
                acl.grants.push(group(ALL_USERS, Permission::Read));
                acl.grants.push(group(ALL_USERS, Permission::Write));
            }
            "authenticated-read" => acl
                .grants
                .push(group(AUTHENTICATED_USERS, Permission::Read)),
            "aws-exec-read" => acl.grants.push(Grant {
                grantee: Grantee::User {
                    id: ctx.system_id.to_string(),
                    display_name: None,
                },
                permission: Permission::Read,
            }),
            "log-delivery-write" => {
                acl.grants.push(group(LOG_DELIVERY, Permission::Write));
                acl.grants.push(group(LOG_DELIVERY, Permission::ReadAcp));
            }
            "bucket-owner-read" | "bucket-owner-full-control" => {
                if let Some(bo) = ctx.bucket_owner {
                    if bo.id != acl.owner.id {
                        acl.grants.push(Grant {
                            grantee: Grantee::User {
                                id: bo.id.clone(),
                                display_name: Some(bo.display_name.clone()),
                            },
                            permission: if name == "bucket-owner-read" {
                                Permission::Read
                            } else {
                                Permission::FullControl
                            },
                        });
                    }
                }
            }
            _ => return None,
        }
        Some(acl)
    }

    /// Does `who` (None = anonymous) hold `perm`? Owners always hold every permission
    /// on the ACL itself and, unless they removed their own grant, on the resource.
    pub fn allows(&self, who: Option<&Principal>, perm: Permission) -> bool {
        if let Some(p) = who {
            if p.canonical_id == self.owner.id
                && matches!(perm, Permission::ReadAcp | Permission::WriteAcp)
            {
                return true;
            }
        }
        self.grants.iter().any(|g| {
            (g.permission == perm || g.permission == Permission::FullControl)
                && match (&g.grantee, who) {
                    (Grantee::Group(u), _) if u == ALL_USERS => true,
                    (Grantee::Group(u), Some(_)) if u == AUTHENTICATED_USERS => true,
                    (Grantee::User { id, .. }, Some(p)) => *id == p.canonical_id,
                    _ => false,
                }
        })
    }

    /// The `AccessControlPolicy` document.
    pub fn to_xml(&self) -> String {
        let mut w = XmlWriter::new();
        w.root("AccessControlPolicy", S3_NS);
        w.open("Owner")
            .elem("ID", &self.owner.id)
            .elem("DisplayName", &self.owner.display_name)
            .close();
        w.open("AccessControlList");
        write_grants(&mut w, &self.grants);
        w.finish()
    }
}

/// `<Grant>` elements (an ACL's, or bucket logging's `TargetGrants`).
pub fn write_grants(w: &mut XmlWriter, grants: &[Grant]) {
    for g in grants {
        w.open("Grant");
        match &g.grantee {
            Grantee::User { id, display_name } => {
                w.open_attrs(
                        "Grantee",
                        "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"CanonicalUser\"",
                    );
                w.elem("ID", id);
                if let Some(d) = display_name {
                    w.elem("DisplayName", d);
                }
                w.close();
            }
            Grantee::Group(uri) => {
                w.open_attrs(
                    "Grantee",
                    "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\" xsi:type=\"Group\"",
                );
                w.elem("URI", uri);
                w.close();
            }
        }
        w.elem("Permission", g.permission.as_str());
        w.close();
    }
}

/// Parses the `x-amz-grant-*` header value: `id="..."`, `uri="..."`, comma separated.
pub fn parse_grant_header(value: &str, perm: Permission) -> Result<Vec<Grant>, String> {
    let mut out = Vec::new();
    for item in value.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| format!("invalid grant '{}'", escape(item)))?;
        let v = v.trim().trim_matches('"').to_string();
        let grantee = match k.trim().to_ascii_lowercase().as_str() {
            "id" => Grantee::User {
                id: v,
                display_name: None,
            },
            "uri" => Grantee::Group(v),
            "emailaddress" => return Err("grants by email address are not supported".into()),
            _ => return Err(format!("invalid grantee type '{}'", escape(k))),
        };
        out.push(Grant {
            grantee,
            permission: perm,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(id: &str) -> Principal {
        Principal {
            account_id: "1".into(),
            canonical_id: id.into(),
            display_name: id.into(),
            access_key: "AK".into(),
        }
    }

    #[test]
    fn canned_and_checks() {
        let owner = Owner {
            id: "o".into(),
            display_name: "o".into(),
        };
        let ctx = CannedContext {
            system_id: "sys",
            bucket_owner: None,
        };
        let private = Acl::canned("private", owner.clone(), &ctx).unwrap();
        assert!(private.allows(Some(&p("o")), Permission::Read));
        assert!(!private.allows(Some(&p("x")), Permission::Read));
        assert!(!private.allows(None, Permission::Read));
        let public = Acl::canned("public-read", owner.clone(), &ctx).unwrap();
        assert!(public.allows(None, Permission::Read));
        assert!(!public.allows(None, Permission::Write));
        let exec = Acl::canned("aws-exec-read", owner.clone(), &ctx).unwrap();
        assert!(exec.allows(Some(&p("sys")), Permission::Read));
        assert!(!exec.allows(Some(&p("x")), Permission::Read));
        let auth = Acl::canned("authenticated-read", owner, &ctx).unwrap();
        assert!(
            auth.allows(Some(&p("x")), Permission::Read) && !auth.allows(None, Permission::Read)
        );
        assert!(Acl::canned(
            "nope",
            Owner {
                id: "o".into(),
                display_name: "o".into()
            },
            &ctx
        )
        .is_none());
        let g = parse_grant_header(
            "id=\"abc\", uri=\"http://acs.amazonaws.com/groups/global/AllUsers\"",
            Permission::Read,
        )
        .unwrap();
        assert_eq!(g.len(), 2);
        assert!(parse_grant_header("foo=bar", Permission::Read).is_err());
    }
}
