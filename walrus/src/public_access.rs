//! The public access block settings (S3's `PublicAccessBlockConfiguration`), as a
//! bucket and an account (S3 Control) keep them; enforced by [`crate::authz`],
//! parsed by [`crate::xmlreq::public_access_block`].
/// A public access block (all false when there is none): a bucket's, or an
/// account's (S3 Control), which covers every bucket of the account.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublicAccessBlock {
    pub block_public_acls: bool,
    pub ignore_public_acls: bool,
    pub block_public_policy: bool,
    pub restrict_public_buckets: bool,
}

impl PublicAccessBlock {
    pub const FIELDS: [&'static str; 4] = [
        "BlockPublicAcls",
        "IgnorePublicAcls",
        "BlockPublicPolicy",
        "RestrictPublicBuckets",
    ];

    /// Each setting on where either block turns it on (how S3 combines a bucket's
    /// block with its owner account's).
    pub fn union(self, o: PublicAccessBlock) -> PublicAccessBlock {
        PublicAccessBlock {
            block_public_acls: self.block_public_acls || o.block_public_acls,
            ignore_public_acls: self.ignore_public_acls || o.ignore_public_acls,
            block_public_policy: self.block_public_policy || o.block_public_policy,
            restrict_public_buckets: self.restrict_public_buckets || o.restrict_public_buckets,
        }
    }

    fn flags(&self) -> [bool; 4] {
        [
            self.block_public_acls,
            self.ignore_public_acls,
            self.block_public_policy,
            self.restrict_public_buckets,
        ]
    }

    /// The canonical document (stored, and what GetPublicAccessBlock answers).
    pub fn to_xml(&self) -> String {
        self.to_xml_in(euca_aws::xml::S3_NS)
    }

    /// The document in namespace `ns` (S3 Control answers in its own).
    pub fn to_xml_in(&self, ns: &str) -> String {
        let mut w = euca_aws::xml::XmlWriter::new();
        w.root("PublicAccessBlockConfiguration", ns);
        for (name, on) in Self::FIELDS.iter().zip(self.flags()) {
            w.elem(name, if on { "true" } else { "false" });
        }
        w.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_turns_on_what_either_turns_on() {
        let bucket = PublicAccessBlock {
            block_public_acls: true,
            ..Default::default()
        };
        let account = PublicAccessBlock {
            restrict_public_buckets: true,
            ..Default::default()
        };
        let both = bucket.union(account);
        assert!(both.block_public_acls && both.restrict_public_buckets);
        assert!(!both.ignore_public_acls && !both.block_public_policy);
        assert_eq!(bucket.union(PublicAccessBlock::default()), bucket);
    }
}
