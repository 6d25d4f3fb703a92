//! Bucket policies: the IAM JSON document PutBucketPolicy takes, read into typed
//! statements, and its evaluation against one request. Pure (no I/O): the caller
//! hands in who asks, the action, the resource ARN and the request's condition keys
//! ([`Facts`]); [`crate::authz`] combines the result with the ACLs.
use serde_json::{Map, Value};
use std::net::IpAddr;

/// S3's cap on a bucket policy document.
pub const MAX_POLICY_BYTES: usize = 20 * 1024;

const S3_ARN: &str = "arn:aws:s3:::";

/// Why a document is not a valid bucket policy: the message of S3's `MalformedPolicy`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PolicyError(pub String);

fn bad<T>(msg: impl Into<String>) -> Result<T, PolicyError> {
    Err(PolicyError(msg.into()))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub version: Option<String>,
    pub id: Option<String>,
    pub statements: Vec<Statement>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Allow,
    Deny,
}

/// One entry of `Principal` / `NotPrincipal`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrincipalId {
    /// `"*"` or `{"AWS": "*"}`: everyone, anonymous callers included.
    Any,
    /// An account: its id, or `arn:aws:iam::<id>:root`.
    Account(String),
    /// `{"CanonicalUser": id}`.
    Canonical(String),
    /// A service, a federated identity or an IAM user/role ARN: never a Walrus caller
    /// (Walrus callers are accounts), so it matches no request.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sid: Option<String>,
    pub effect: Effect,
    pub principals: Vec<PrincipalId>,
    /// `NotPrincipal` instead of `Principal`.
    pub not_principal: bool,
    pub actions: Vec<String>,
    pub not_action: bool,
    pub resources: Vec<String>,
    pub not_resource: bool,
    pub conditions: Vec<Condition>,
}

/// How a condition treats a multi-valued key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    Single,
    ForAnyValue,
    ForAllValues,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    StringEquals,
    StringNotEquals,
    StringEqualsIgnoreCase,
    StringNotEqualsIgnoreCase,
    StringLike,
    StringNotLike,
    NumericEquals,
    NumericNotEquals,
    NumericLessThan,
    NumericLessThanEquals,
    NumericGreaterThan,
    NumericGreaterThanEquals,
    DateEquals,
    DateNotEquals,
    DateLessThan,
    DateLessThanEquals,
    DateGreaterThan,
    DateGreaterThanEquals,
    Bool,
    IpAddress,
    NotIpAddress,
    ArnEquals,
    ArnNotEquals,
    ArnLike,
    ArnNotLike,
    Null,
}

impl Op {
    fn parse(s: &str) -> Option<Op> {
        use Op::*;
        Some(match s {
            "StringEquals" => StringEquals,
            "StringNotEquals" => StringNotEquals,
            "StringEqualsIgnoreCase" => StringEqualsIgnoreCase,
            "StringNotEqualsIgnoreCase" => StringNotEqualsIgnoreCase,
            "StringLike" => StringLike,
            "StringNotLike" => StringNotLike,
            "NumericEquals" => NumericEquals,
            "NumericNotEquals" => NumericNotEquals,
            "NumericLessThan" => NumericLessThan,
            "NumericLessThanEquals" => NumericLessThanEquals,
            "NumericGreaterThan" => NumericGreaterThan,
            "NumericGreaterThanEquals" => NumericGreaterThanEquals,
            "DateEquals" => DateEquals,
            "DateNotEquals" => DateNotEquals,
            "DateLessThan" => DateLessThan,
            "DateLessThanEquals" => DateLessThanEquals,
            "DateGreaterThan" => DateGreaterThan,
            "DateGreaterThanEquals" => DateGreaterThanEquals,
            "Bool" => Bool,
            "IpAddress" => IpAddress,
            "NotIpAddress" => NotIpAddress,
            "ArnEquals" => ArnEquals,
            "ArnNotEquals" => ArnNotEquals,
            "ArnLike" => ArnLike,
            "ArnNotLike" => ArnNotLike,
            "Null" => Null,
            _ => return None,
        })
    }

    /// The negated operators hold when no value matches (and when the key is absent).
    fn negated(self) -> bool {
        use Op::*;
        matches!(
            self,
            StringNotEquals
                | StringNotEqualsIgnoreCase
                | StringNotLike
                | NumericNotEquals
                | DateNotEquals
                | NotIpAddress
                | ArnNotEquals
                | ArnNotLike
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub op: Op,
    pub set: SetOp,
    pub if_exists: bool,
    /// The key as written (`aws:SourceIp`, `s3:ExistingObjectTag/<tag key>`).
    pub key: String,
    pub values: Vec<String>,
}

/// What a request carries for condition keys.
pub trait Facts {
    /// The values of a condition key (as written in the policy; the part before any
    /// `/` is case-insensitive), or `None` when the request has none: an unknown key
    /// is absent, as in AWS.
    fn values(&self, key: &str) -> Option<Vec<String>>;
}

/// Who asks: an account (Walrus's callers are accounts), or anonymous (`None`).
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub account_id: &'a str,
    pub canonical_id: &'a str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// An explicit Deny matched: refused whatever else allows it.
    Deny,
    /// An Allow matched and no Deny.
    Allow,
    /// Nothing matched: the ACLs decide.
    Implicit,
}

/// Whether an action applies to the bucket or to objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bucket,
    Object,
}

/// The S3 actions a bucket policy may name, and what they apply to.
const ACTIONS: &[(&str, Kind)] = &[
    ("AbortMultipartUpload", Kind::Object),
    ("BypassGovernanceRetention", Kind::Object),
    ("CreateBucket", Kind::Bucket),
    ("DeleteBucket", Kind::Bucket),
    ("DeleteBucketPolicy", Kind::Bucket),
    ("DeleteBucketWebsite", Kind::Bucket),
    ("DeleteBucketOwnershipControls", Kind::Bucket),
    ("DeleteObject", Kind::Object),
    ("DeleteObjectTagging", Kind::Object),
    ("DeleteObjectVersion", Kind::Object),
    ("DeleteObjectVersionTagging", Kind::Object),
    ("GetAccelerateConfiguration", Kind::Bucket),
    ("GetAnalyticsConfiguration", Kind::Bucket),
    ("GetBucketAcl", Kind::Bucket),
    ("GetBucketCORS", Kind::Bucket),
    ("GetBucketLocation", Kind::Bucket),
    ("GetBucketLogging", Kind::Bucket),
    ("GetBucketNotification", Kind::Bucket),
    ("GetBucketObjectLockConfiguration", Kind::Bucket),
    ("GetBucketOwnershipControls", Kind::Bucket),
    ("GetBucketPolicy", Kind::Bucket),
    ("GetBucketPolicyStatus", Kind::Bucket),
    ("GetBucketPublicAccessBlock", Kind::Bucket),
    ("GetBucketRequestPayment", Kind::Bucket),
    ("GetBucketTagging", Kind::Bucket),
    ("GetBucketVersioning", Kind::Bucket),
    ("GetBucketWebsite", Kind::Bucket),
    ("GetEncryptionConfiguration", Kind::Bucket),
    ("GetInventoryConfiguration", Kind::Bucket),
    ("GetLifecycleConfiguration", Kind::Bucket),
    ("GetMetricsConfiguration", Kind::Bucket),
    ("GetObject", Kind::Object),
    ("GetObjectAcl", Kind::Object),
    ("GetObjectAttributes", Kind::Object),
    ("GetObjectLegalHold", Kind::Object),
    ("GetObjectRetention", Kind::Object),
    ("GetObjectTagging", Kind::Object),
    ("GetObjectVersion", Kind::Object),
    ("GetObjectVersionAcl", Kind::Object),
    ("GetObjectVersionAttributes", Kind::Object),
    ("GetObjectVersionTagging", Kind::Object),
    ("GetReplicationConfiguration", Kind::Bucket),
    ("ListBucket", Kind::Bucket),
    ("ListBucketMultipartUploads", Kind::Bucket),
    ("ListBucketVersions", Kind::Bucket),
    ("ListMultipartUploadParts", Kind::Object),
    ("PutAccelerateConfiguration", Kind::Bucket),
    ("PutBucketAcl", Kind::Bucket),
    ("PutBucketCORS", Kind::Bucket),
    ("PutBucketLogging", Kind::Bucket),
    ("PutBucketNotification", Kind::Bucket),
    ("PutBucketObjectLockConfiguration", Kind::Bucket),
    ("PutBucketOwnershipControls", Kind::Bucket),
    ("PutBucketPolicy", Kind::Bucket),
    ("PutBucketPublicAccessBlock", Kind::Bucket),
    ("PutBucketRequestPayment", Kind::Bucket),
    ("PutBucketTagging", Kind::Bucket),
    ("PutBucketVersioning", Kind::Bucket),
    ("PutBucketWebsite", Kind::Bucket),
    ("PutEncryptionConfiguration", Kind::Bucket),
    ("PutLifecycleConfiguration", Kind::Bucket),
    ("PutObject", Kind::Object),
    ("PutObjectAcl", Kind::Object),
    ("PutObjectLegalHold", Kind::Object),
    ("PutObjectRetention", Kind::Object),
    ("PutObjectTagging", Kind::Object),
    ("PutObjectVersionAcl", Kind::Object),
    ("PutObjectVersionTagging", Kind::Object),
    ("PutReplicationConfiguration", Kind::Bucket),
    ("ReplicateDelete", Kind::Object),
    ("ReplicateObject", Kind::Object),
    ("RestoreObject", Kind::Object),
];

/// `*` (any run, `/` included) and `?` (one character) glob match.
pub fn glob(pattern: &str, text: &str, ignore_case: bool) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let eq = |a: char, b: char| {
        if ignore_case {
            a.to_lowercase().eq(b.to_lowercase())
        } else {
            a == b
        }
    };
    // Iterative matching with one backtrack point: linear-ish, no recursion.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && eq(p[pi], t[ti]))) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A string or an array of strings (`"Action": "s3:GetObject"` or `[..]`).
fn strings(v: &Value, field: &str) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        _ => bad(format!("Invalid type for field {field}")),
    };
    let out = match v {
        Value::Array(a) => a.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        v => vec![one(v)?],
    };
    if out.is_empty() {
        return bad(format!("Missing required field {field}"));
    }
    Ok(out)
}

/// Condition values may be strings, numbers or booleans, alone or in an array.
fn condition_values(v: &Value) -> Result<Vec<String>, PolicyError> {
    let one = |v: &Value| match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => bad("Invalid Condition value"),
    };
    let out = match v {
        Value::Array(a) => a.iter().map(one).collect::<Result<Vec<_>, _>>()?,
        v => vec![one(v)?],
    };
    if out.is_empty() {
        return bad("Invalid Condition value");
    }
    Ok(out)
}

fn principal_ids(v: &Value) -> Result<Vec<PrincipalId>, PolicyError> {
    let invalid = || PolicyError("Invalid principal in policy".into());
    match v {
        Value::String(s) if s == "*" => Ok(vec![PrincipalId::Any]),
        Value::Object(m) if !m.is_empty() => {
            let mut out = Vec::new();
            for (kind, ids) in m {
                let ids = strings(ids, "Principal").map_err(|_| invalid())?;
                for id in ids {
                    out.push(match kind.as_str() {
                        "AWS" => aws_principal(&id).ok_or_else(invalid)?,
                        "CanonicalUser" if !id.is_empty() && !id.contains('*') => {
                            PrincipalId::Canonical(id)
                        }
                        "Service" | "Federated" if !id.is_empty() => PrincipalId::Other,
                        _ => return Err(invalid()),
                    });
                }
            }
            Ok(out)
        }
        _ => Err(invalid()),
    }
}

/// `*`, an account id, `arn:aws:iam::<account>:root`, or another IAM ARN of an account.
fn aws_principal(id: &str) -> Option<PrincipalId> {
    let account_ok = |a: &str| !a.is_empty() && a.bytes().all(|b| b.is_ascii_alphanumeric());
    if id == "*" {
        return Some(PrincipalId::Any);
    }
    if let Some(rest) = id.strip_prefix("arn:aws:iam::") {
        let (account, what) = rest.split_once(':')?;
        if !account_ok(account) || what.is_empty() {
            return None;
        }
        return Some(if what == "root" {
            PrincipalId::Account(account.to_string())
        } else {
            PrincipalId::Other
        });
    }
    account_ok(id).then(|| PrincipalId::Account(id.to_string()))
}

fn action_kind(name: &str) -> Option<Kind> {
    ACTIONS
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, k)| *k)
}

/// Checks an action pattern; `Some(kind)` for an exact action name, `None` for a
/// wildcard (which may apply to either kind).
fn check_action(a: &str) -> Result<Option<Kind>, PolicyError> {
    if a == "*" {
        return Ok(None);
    }
    let Some((svc, name)) = a.split_once(':') else {
        return bad("Policy has invalid action");
    };
    if !svc.eq_ignore_ascii_case("s3") || name.is_empty() {
        return bad("Policy has invalid action");
    }
    if name.contains(['*', '?']) {
        return Ok(None);
    }
    match action_kind(name) {
        Some(k) => Ok(Some(k)),
        None => bad("Policy has invalid action"),
    }
}

/// Checks a resource names this bucket (or its objects); the kinds it may cover.
fn check_resource(r: &str, bucket: &str) -> Result<(bool, bool), PolicyError> {
    let Some(rest) = r.strip_prefix(S3_ARN) else {
        return bad("Policy has invalid resource");
    };
    let (b, obj) = match rest.split_once('/') {
        Some((b, _)) => (b, true),
        None => (rest, false),
    };
    let wild = b.contains(['*', '?']);
    // A bucket segment with a wildcard may reach into object ARNs (`*` matches `/`).
    let names_bucket = if wild {
        glob(b, bucket, false) || glob(rest, bucket, false)
    } else {
        b == bucket
    };
    if !names_bucket {
        return bad("Policy has invalid resource");
    }
    Ok((!obj, obj || wild))
}

const STATEMENT_FIELDS: &[&str] = &[
    "Sid",
    "Effect",
    "Principal",
    "NotPrincipal",
    "Action",
    "NotAction",
    "Resource",
    "NotResource",
    "Condition",
];

fn statement(m: &Map<String, Value>, bucket: &str) -> Result<Statement, PolicyError> {
    if let Some(k) = m.keys().find(|k| !STATEMENT_FIELDS.contains(&k.as_str())) {
        return bad(format!("Unknown field {k}"));
    }
    let sid = match m.get("Sid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return bad("Invalid type for field Sid"),
    };
    let effect = match m.get("Effect") {
        None => return bad("Missing required field Effect"),
        Some(Value::String(s)) if s == "Allow" => Effect::Allow,
        Some(Value::String(s)) if s == "Deny" => Effect::Deny,
        Some(v) => return bad(format!("Invalid effect: {}", v.as_str().unwrap_or("?"))),
    };
    let pick = |a: &str, na: &str| -> Result<(&Value, bool), PolicyError> {
        match (m.get(a), m.get(na)) {
            (Some(_), Some(_)) => bad(format!("Statement cannot contain both {a} and {na}")),
            (Some(v), None) => Ok((v, false)),
            (None, Some(v)) => Ok((v, true)),
            (None, None) => bad(format!("Missing required field {a}")),
        }
    };
    let (p, not_principal) = pick("Principal", "NotPrincipal")?;
    let principals = principal_ids(p)?;
    let (a, not_action) = pick("Action", "NotAction")?;
    let actions = strings(a, "Action")?;
    let (r, not_resource) = pick("Resource", "NotResource")?;
    let resources = strings(r, "Resource")?;
    let mut bucket_res = false;
    let mut object_res = false;
    for r in &resources {
        let (b, o) = check_resource(r, bucket)?;
        bucket_res |= b;
        object_res |= o;
    }
    for a in &actions {
        let kind = check_action(a)?;
        // As S3: an action none of the statement's resources can be the target of.
        if let (Some(k), false, false) = (kind, not_action, not_resource) {
            let applies = match k {
                Kind::Bucket => bucket_res,
                Kind::Object => object_res,
            };
            if !applies {
                return bad("Action does not apply to any resource(s) in statement");
            }
        }
    }
    let mut conditions = Vec::new();
    match m.get("Condition") {
        None => {}
        Some(Value::Object(ops)) => {
            for (op_name, keys) in ops {
                let (set, rest) = if let Some(r) = op_name.strip_prefix("ForAnyValue:") {
                    (SetOp::ForAnyValue, r)
                } else if let Some(r) = op_name.strip_prefix("ForAllValues:") {
                    (SetOp::ForAllValues, r)
                } else {
                    (SetOp::Single, op_name.as_str())
                };
                let (base, if_exists) = match rest.strip_suffix("IfExists") {
                    Some(b) => (b, true),
                    None => (rest, false),
                };
                let op = Op::parse(base)
                    .filter(|op| !(if_exists && *op == Op::Null))
                    .ok_or_else(|| PolicyError(format!("Invalid Condition type : {op_name}")))?;
                let Value::Object(keys) = keys else {
                    return bad("Invalid Condition block");
                };
                if keys.is_empty() {
                    return bad("Invalid Condition block");
                }
                for (key, v) in keys {
                    if key.is_empty() {
                        return bad("Invalid Condition key");
                    }
                    let values = condition_values(v)?;
                    if op == Op::IpAddress || op == Op::NotIpAddress {
                        for v in &values {
                            if parse_net(v).is_none() {
                                return bad(format!("Invalid IP address or CIDR: {v}"));
                            }
                        }
                    }
                    conditions.push(Condition {
                        op,
                        set,
                        if_exists,
                        key: key.clone(),
                        values,
                    });
                }
            }
        }
        Some(_) => return bad("Invalid Condition block"),
    }
    Ok(Statement {
        sid,
        effect,
        principals,
        not_principal,
        actions,
        not_action,
        resources,
        not_resource,
        conditions,
    })
}

impl Policy {
    /// Reads and validates a bucket policy for `bucket` (S3's `MalformedPolicy` rules).
    pub fn parse(doc: &[u8], bucket: &str) -> Result<Policy, PolicyError> {
        if doc.len() > MAX_POLICY_BYTES {
            return bad("Policy exceeds the maximum allowed document size.");
        }
        if doc.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return bad("Policies must be valid JSON and the first byte must be '{'");
        }
        let v: Value = serde_json::from_slice(doc)
            .map_err(|_| PolicyError("This policy contains invalid Json".into()))?;
        let Value::Object(top) = v else {
            return bad("Policies must be valid JSON and the first byte must be '{'");
        };
        if let Some(k) = top
            .keys()
            .find(|k| !["Version", "Id", "Statement"].contains(&k.as_str()))
        {
            return bad(format!("Unknown field {k}"));
        }
        let version = match top.get("Version") {
            None => None,
            Some(Value::String(s)) if s == "2012-10-17" || s == "2008-10-17" => Some(s.clone()),
            Some(_) => return bad("The policy must contain a valid version string"),
        };
        let id = match top.get("Id") {
            None => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return bad("Invalid type for field Id"),
        };
        let stmts: Vec<&Map<String, Value>> = match top.get("Statement") {
            None => return bad("Missing required field Statement"),
            Some(Value::Object(m)) => vec![m],
            Some(Value::Array(a)) => a
                .iter()
                .map(|s| match s {
                    Value::Object(m) => Ok(m),
                    _ => bad("Invalid type for field Statement"),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return bad("Invalid type for field Statement"),
        };
        if stmts.is_empty() {
            return bad("Missing required field Statement");
        }
        let statements = stmts
            .into_iter()
            .map(|m| statement(m, bucket))
            .collect::<Result<Vec<_>, _>>()?;
        let mut sids: Vec<&str> = statements.iter().filter_map(|s| s.sid.as_deref()).collect();
        sids.sort_unstable();
        if sids.windows(2).any(|w| w[0] == w[1]) {
            return bad("Statement IDs (SID) in a single policy must be unique");
        }
        Ok(Policy {
            version,
            id,
            statements,
        })
    }

    /// Deny wins over Allow; nothing matching leaves it to the ACLs.
    pub fn evaluate(
        &self,
        caller: Option<Caller>,
        action: &str,
        resource: &str,
        facts: &dyn Facts,
    ) -> Decision {
        self.evaluate_where(caller, action, resource, facts, |_| true)
    }

    /// [`Policy::evaluate`] with Allow statements counted only when `allow_counts`
    /// says so (RestrictPublicBuckets drops the public ones); Deny always counts.
    pub fn evaluate_where(
        &self,
        caller: Option<Caller>,
        action: &str,
        resource: &str,
        facts: &dyn Facts,
        allow_counts: impl Fn(&Statement) -> bool,
    ) -> Decision {
        let mut allowed = false;
        for s in &self.statements {
            if s.effect == Effect::Allow && (allowed || !allow_counts(s)) {
                continue;
            }
            if s.applies(caller, action, resource, facts) {
                match s.effect {
                    Effect::Deny => return Decision::Deny,
                    Effect::Allow => allowed = true,
                }
            }
        }
        if allowed {
            Decision::Allow
        } else {
            Decision::Implicit
        }
    }

    /// Whether the policy is public as AWS defines it: it allows someone outside any
    /// fixed set of accounts/addresses (a `*` principal, or NotPrincipal) without a
    /// condition that pins the caller down.
    pub fn is_public(&self) -> bool {
        self.statements.iter().any(Statement::is_public)
    }
}

impl Statement {
    fn principal_matches(&self, caller: Option<Caller>) -> bool {
        let hit = self.principals.iter().any(|p| match (p, caller) {
            (PrincipalId::Any, _) => true,
            (PrincipalId::Account(a), Some(c)) => a == c.account_id,
            (PrincipalId::Canonical(id), Some(c)) => id == c.canonical_id,
            _ => false,
        });
        hit != self.not_principal
    }

    fn applies(
        &self,
        caller: Option<Caller>,
        action: &str,
        resource: &str,
        facts: &dyn Facts,
    ) -> bool {
        let action_hit = self.actions.iter().any(|a| glob(a, action, true));
        let resource_hit = self.resources.iter().any(|r| glob(r, resource, false));
        self.principal_matches(caller)
            && action_hit != self.not_action
            && resource_hit != self.not_resource
            && self.conditions.iter().all(|c| c.holds(facts))
    }

    /// A public Allow: anyone (or NotPrincipal) without a restricting condition.
    pub fn is_public(&self) -> bool {
        if self.effect != Effect::Allow {
            return false;
        }
        let anyone = self.not_principal || self.principals.contains(&PrincipalId::Any);
        anyone && !self.conditions.iter().any(Condition::restricts_caller)
    }
}

/// Parses `a.b.c.d`, `a.b.c.d/n` or the IPv6 forms.
fn parse_net(s: &str) -> Option<ipnet::IpNet> {
    s.parse::<ipnet::IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(ipnet::IpNet::from))
}

/// RFC 3339 or seconds since the epoch.
fn parse_date(s: &str) -> Option<i128> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n as i128 * 1_000_000_000);
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp_nanos())
}

/// Condition keys that pin a caller down to known accounts, networks or resources
/// (what keeps an Allow to `*` from being public).
const RESTRICTING_KEYS: &[&str] = &[
    "aws:sourceip",
    "aws:sourcevpc",
    "aws:sourcevpce",
    "aws:sourcearn",
    "aws:sourceaccount",
    "aws:sourceowner",
    "aws:principalaccount",
    "aws:principalarn",
    "aws:principalorgid",
    "aws:userid",
];

impl Condition {
    fn restricts_caller(&self) -> bool {
        let key = self.key.to_ascii_lowercase();
        if !RESTRICTING_KEYS
            .iter()
            .any(|k| k.eq_ignore_ascii_case(&key))
            || self.if_exists
        {
            return false;
        }
        match self.op {
            Op::IpAddress => self
                .values
                .iter()
                .all(|v| parse_net(v).is_some_and(|n| n.prefix_len() > 0)),
            Op::StringEquals | Op::StringEqualsIgnoreCase | Op::ArnEquals => true,
            Op::StringLike | Op::ArnLike => self.values.iter().all(|v| !v.contains(['*', '?'])),
            _ => false,
        }
    }

    /// One value against one condition value, for the operator's positive form.
    fn matches(&self, have: &str, want: &str) -> bool {
        use Op::*;
        let num = |s: &str| s.parse::<f64>().ok();
        let cmp_num = |f: fn(f64, f64) -> bool| match (num(have), num(want)) {
            (Some(a), Some(b)) => f(a, b),
            _ => false,
        };
        let cmp_date = |f: fn(i128, i128) -> bool| match (parse_date(have), parse_date(want)) {
            (Some(a), Some(b)) => f(a, b),
            _ => false,
        };
        match self.op {
            StringEquals | StringNotEquals | ArnEquals | ArnNotEquals => have == want,
            StringEqualsIgnoreCase | StringNotEqualsIgnoreCase => {
                have.to_lowercase() == want.to_lowercase()
            }
            StringLike | StringNotLike | ArnLike | ArnNotLike => glob(want, have, false),
            NumericEquals | NumericNotEquals => cmp_num(|a, b| a == b),
            NumericLessThan => cmp_num(|a, b| a < b),
            NumericLessThanEquals => cmp_num(|a, b| a <= b),
            NumericGreaterThan => cmp_num(|a, b| a > b),
            NumericGreaterThanEquals => cmp_num(|a, b| a >= b),
            DateEquals | DateNotEquals => cmp_date(|a, b| a == b),
            DateLessThan => cmp_date(|a, b| a < b),
            DateLessThanEquals => cmp_date(|a, b| a <= b),
            DateGreaterThan => cmp_date(|a, b| a > b),
            DateGreaterThanEquals => cmp_date(|a, b| a >= b),
            Bool => have.eq_ignore_ascii_case(want),
            IpAddress | NotIpAddress => match (have.parse::<IpAddr>(), parse_net(want)) {
                (Ok(ip), Some(net)) => net.contains(&ip.to_canonical()),
                _ => false,
            },
            Null => false,
        }
    }

    pub fn holds(&self, facts: &dyn Facts) -> bool {
        let have = facts.values(&self.key).filter(|v| !v.is_empty());
        if self.op == Op::Null {
            let absent = have.is_none();
            return self
                .values
                .iter()
                .any(|v| v.eq_ignore_ascii_case("true") == absent);
        }
        let Some(have) = have else {
            return match self.set {
                SetOp::ForAllValues => true,
                SetOp::ForAnyValue => false,
                SetOp::Single => self.if_exists || self.op.negated(),
            };
        };
        let hit = |h: &String| self.values.iter().any(|w| self.matches(h, w));
        let neg = self.op.negated();
        match self.set {
            SetOp::Single => have.iter().any(hit) != neg,
            SetOp::ForAnyValue => have.iter().any(|h| hit(h) != neg),
            SetOp::ForAllValues => have.iter().all(|h| hit(h) != neg),
        }
    }
}

/// The ARN of a bucket, or of an object in it.
pub fn resource_arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("{S3_ARN}{bucket}/{k}"),
        None => format!("{S3_ARN}{bucket}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct F(HashMap<String, Vec<String>>);
    impl Facts for F {
        fn values(&self, key: &str) -> Option<Vec<String>> {
            self.0.get(&key.to_ascii_lowercase()).cloned()
        }
    }
    fn facts(kv: &[(&str, &str)]) -> F {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in kv {
            m.entry(k.to_ascii_lowercase())
                .or_default()
                .push(v.to_string());
        }
        F(m)
    }
    const ME: Caller = Caller {
        account_id: "111122223333",
        canonical_id: "canon-me",
    };
    const OTHER: Caller = Caller {
        account_id: "444455556666",
        canonical_id: "canon-other",
    };

    fn p(doc: &str) -> Policy {
        Policy::parse(doc.as_bytes(), "bkt").unwrap()
    }
    fn err(doc: &str) -> String {
        Policy::parse(doc.as_bytes(), "bkt").unwrap_err().0
    }
    fn obj(k: &str) -> String {
        resource_arn("bkt", Some(k))
    }

    #[test]
    fn globbing() {
        assert!(glob("s3:Get*", "s3:GetObject", true));
        assert!(glob("S3:getobject", "s3:GetObject", true));
        assert!(!glob("s3:Get*", "s3:PutObject", true));
        assert!(glob("a*b*c", "axxbyyc", false));
        assert!(!glob("a*b*c", "axxbyy", false));
        assert!(glob("a?c", "abc", false));
        assert!(!glob("a?c", "ac", false));
        assert!(glob("*", "", false));
        assert!(glob("arn:aws:s3:::bkt/*", "arn:aws:s3:::bkt/a/b", false));
        assert!(!glob("arn:aws:s3:::bkt/A*", "arn:aws:s3:::bkt/a", false));
    }

    const PUBLIC_READ: &str = r#"{"Version":"2012-10-17","Statement":[{"Sid":"pr","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}]}"#;

    #[test]
    fn public_read_allows_anonymous_get_only() {
        let pol = p(PUBLIC_READ);
        let f = facts(&[]);
        assert_eq!(
            pol.evaluate(None, "s3:GetObject", &obj("k"), &f),
            Decision::Allow
        );
        assert_eq!(
            pol.evaluate(None, "s3:PutObject", &obj("k"), &f),
            Decision::Implicit
        );
        assert_eq!(
            pol.evaluate(None, "s3:ListBucket", &resource_arn("bkt", None), &f),
            Decision::Implicit
        );
        assert!(pol.is_public());
    }

    #[test]
    fn deny_wins_and_source_ip() {
        let pol = p(r#"{"Statement":[
            {"Effect":"Allow","Principal":"*","Action":"s3:*","Resource":["arn:aws:s3:::bkt","arn:aws:s3:::bkt/*"]},
            {"Effect":"Deny","Principal":{"AWS":"*"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*",
             "Condition":{"IpAddress":{"aws:SourceIp":"127.0.0.1/32"}}}]}"#);
        let local = facts(&[("aws:SourceIp", "127.0.0.1")]);
        let far = facts(&[("aws:SourceIp", "10.1.2.3")]);
        assert_eq!(
            pol.evaluate(Some(ME), "s3:GetObject", &obj("k"), &local),
            Decision::Deny
        );
        assert_eq!(
            pol.evaluate(Some(ME), "s3:GetObject", &obj("k"), &far),
            Decision::Allow
        );
        assert_eq!(
            pol.evaluate(None, "s3:PutObject", &obj("k"), &local),
            Decision::Allow
        );
        // IPv4-mapped IPv6 is the same address.
        let mapped = facts(&[("aws:SourceIp", "::ffff:127.0.0.1")]);
        assert_eq!(
            pol.evaluate(Some(ME), "s3:GetObject", &obj("k"), &mapped),
            Decision::Deny
        );
        // No address known: IpAddress does not hold.
        assert_eq!(
            pol.evaluate(Some(ME), "s3:GetObject", &obj("k"), &facts(&[])),
            Decision::Allow
        );
    }

    #[test]
    fn not_ip_address_and_absent_keys() {
        let pol = p(
            r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::bkt/*",
            "Condition":{"NotIpAddress":{"aws:SourceIp":["10.0.0.0/8","192.168.1.1"]}}}}"#,
        );
        let d = |ip: &str| {
            pol.evaluate(
                Some(ME),
                "s3:GetObject",
                &obj("k"),
                &facts(&[("aws:SourceIp", ip)]),
            )
        };
        assert_eq!(d("127.0.0.1"), Decision::Deny);
        assert_eq!(d("10.9.9.9"), Decision::Implicit);
        assert_eq!(d("192.168.1.1"), Decision::Implicit);
        assert_eq!(d("192.168.1.2"), Decision::Deny);
        // A negated operator holds when the key is absent (as AWS).
        assert_eq!(
            pol.evaluate(Some(ME), "s3:GetObject", &obj("k"), &facts(&[])),
            Decision::Deny
        );
    }

    #[test]
    fn principals() {
        let pol = p(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":["444455556666","arn:aws:iam::777788889999:root"],"CanonicalUser":"canon-x"},
            "Action":["s3:GetObject","s3:ListBucket"],"Resource":["arn:aws:s3:::bkt","arn:aws:s3:::bkt/*"]}]}"#,
        );
        let f = facts(&[]);
        assert_eq!(
            pol.evaluate(Some(OTHER), "s3:GetObject", &obj("k"), &f),
            Decision::Allow
        );
        assert_eq!(
            pol.evaluate(Some(ME), "s3:GetObject", &obj("k"), &f),
            Decision::Implicit
        );
        assert_eq!(
            pol.evaluate(None, "s3:GetObject", &obj("k"), &f),
            Decision::Implicit
        );
        let third = Caller {
            account_id: "777788889999",
            canonical_id: "z",
        };
        assert_eq!(
            pol.evaluate(Some(third), "s3:GetObject", &obj("k"), &f),
            Decision::Allow
        );
        let canon = Caller {
            account_id: "1",
            canonical_id: "canon-x",
        };
        assert_eq!(
            pol.evaluate(Some(canon), "s3:GetObject", &obj("k"), &f),
            Decision::Allow
        );
        assert!(!pol.is_public());
        // NotPrincipal: everyone but the named account.
        let np = p(
            r#"{"Statement":{"Effect":"Deny","NotPrincipal":{"AWS":"111122223333"},"Action":"s3:*","Resource":"arn:aws:s3:::bkt/*"}}"#,
        );
        assert_eq!(
            np.evaluate(Some(ME), "s3:GetObject", &obj("k"), &f),
            Decision::Implicit
        );
        assert_eq!(
            np.evaluate(Some(OTHER), "s3:GetObject", &obj("k"), &f),
            Decision::Deny
        );
        assert_eq!(
            np.evaluate(None, "s3:GetObject", &obj("k"), &f),
            Decision::Deny
        );
    }

    #[test]
    fn not_action_not_resource_and_prefixes() {
        let pol = p(
            r#"{"Statement":[{"Effect":"Deny","Principal":"*","NotAction":"s3:Get*","NotResource":"arn:aws:s3:::bkt/public/*"}]}"#,
        );
        let f = facts(&[]);
        assert_eq!(
            pol.evaluate(None, "s3:PutObject", &obj("a"), &f),
            Decision::Deny
        );
        assert_eq!(
            pol.evaluate(None, "s3:PutObject", &obj("public/a"), &f),
            Decision::Implicit
        );
        assert_eq!(
            pol.evaluate(None, "s3:GetObject", &obj("a"), &f),
            Decision::Implicit
        );
    }

    #[test]
    fn string_conditions_on_list() {
        let pol = p(
            r#"{"Statement":[{"Effect":"Allow","Principal":{"AWS":"444455556666"},"Action":"s3:ListBucket","Resource":"arn:aws:s3:::bkt",
            "Condition":{"StringLike":{"s3:prefix":["home/*",""]},"NumericLessThanEquals":{"s3:max-keys":"100"}}}]}"#,
        );
        let b = resource_arn("bkt", None);
        let d = |kv: &[(&str, &str)]| pol.evaluate(Some(OTHER), "s3:ListBucket", &b, &facts(kv));
        assert_eq!(
            d(&[("s3:prefix", "home/x"), ("s3:max-keys", "10")]),
            Decision::Allow
        );
        assert_eq!(
            d(&[("s3:prefix", "etc/"), ("s3:max-keys", "10")]),
            Decision::Implicit
        );
        assert_eq!(
            d(&[("s3:prefix", "home/x"), ("s3:max-keys", "1000")]),
            Decision::Implicit
        );
        assert_eq!(d(&[("s3:max-keys", "10")]), Decision::Implicit);
        let ic = p(
            r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::bkt/*",
            "Condition":{"StringEqualsIgnoreCase":{"s3:x-amz-acl":["PUBLIC-READ"]}}}}"#,
        );
        let put =
            |acl: &[(&str, &str)]| ic.evaluate(Some(ME), "s3:PutObject", &obj("k"), &facts(acl));
        assert_eq!(put(&[("s3:x-amz-acl", "public-read")]), Decision::Deny);
        assert_eq!(put(&[("s3:x-amz-acl", "private")]), Decision::Implicit);
        assert_eq!(put(&[]), Decision::Implicit);
    }

    #[test]
    fn bool_null_if_exists_and_sets() {
        let tls = p(
            r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"s3:*","Resource":"arn:aws:s3:::bkt/*","Condition":{"Bool":{"aws:SecureTransport":"false"}}}}"#,
        );
        let d = |v: &str| {
            tls.evaluate(
                None,
                "s3:GetObject",
                &obj("k"),
                &facts(&[("aws:SecureTransport", v)]),
            )
        };
        assert_eq!(d("false"), Decision::Deny);
        assert_eq!(d("true"), Decision::Implicit);
        let null = p(
            r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"Null":{"s3:x-amz-acl":"true"}}}}"#,
        );
        assert_eq!(
            null.evaluate(None, "s3:PutObject", &obj("k"), &facts(&[])),
            Decision::Deny
        );
        assert_eq!(
            null.evaluate(
                None,
                "s3:PutObject",
                &obj("k"),
                &facts(&[("s3:x-amz-acl", "private")])
            ),
            Decision::Implicit
        );
        let ie = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"StringEqualsIfExists":{"aws:Referer":"https://ok/"}}}}"#,
        );
        assert_eq!(
            ie.evaluate(None, "s3:GetObject", &obj("k"), &facts(&[])),
            Decision::Allow
        );
        assert_eq!(
            ie.evaluate(
                None,
                "s3:GetObject",
                &obj("k"),
                &facts(&[("aws:Referer", "https://bad/")])
            ),
            Decision::Implicit
        );
        let all = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"ForAllValues:StringEquals":{"t":["a","b"]}}}}"#,
        );
        let any = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:PutObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"ForAnyValue:StringEquals":{"t":["a","b"]}}}}"#,
        );
        let two = facts(&[("t", "a"), ("t", "c")]);
        assert_eq!(
            all.evaluate(None, "s3:PutObject", &obj("k"), &two),
            Decision::Implicit
        );
        assert_eq!(
            any.evaluate(None, "s3:PutObject", &obj("k"), &two),
            Decision::Allow
        );
        assert_eq!(
            all.evaluate(None, "s3:PutObject", &obj("k"), &facts(&[])),
            Decision::Allow
        );
        assert_eq!(
            any.evaluate(None, "s3:PutObject", &obj("k"), &facts(&[])),
            Decision::Implicit
        );
    }

    #[test]
    fn tags_and_dates() {
        let pol = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*",
            "Condition":{"StringEquals":{"s3:ExistingObjectTag/Class":"public"},"DateLessThan":{"aws:CurrentTime":"2999-01-01T00:00:00Z"}}}}"#,
        );
        let f = facts(&[
            ("s3:ExistingObjectTag/Class", "public"),
            ("aws:CurrentTime", "2026-01-01T00:00:00Z"),
        ]);
        assert_eq!(
            pol.evaluate(None, "s3:GetObject", &obj("k"), &f),
            Decision::Allow
        );
        let f = facts(&[
            ("s3:ExistingObjectTag/Class", "secret"),
            ("aws:CurrentTime", "2026-01-01T00:00:00Z"),
        ]);
        assert_eq!(
            pol.evaluate(None, "s3:GetObject", &obj("k"), &f),
            Decision::Implicit
        );
    }

    #[test]
    fn public_or_not() {
        let restricted = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"IpAddress":{"aws:SourceIp":"10.0.0.0/8"}}}}"#,
        );
        assert!(!restricted.is_public());
        let wide = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"IpAddress":{"aws:SourceIp":"0.0.0.0/0"}}}}"#,
        );
        assert!(wide.is_public());
        let acct = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"StringEquals":{"aws:PrincipalAccount":"111122223333"}}}}"#,
        );
        assert!(!acct.is_public());
        let deny = p(
            r#"{"Statement":{"Effect":"Deny","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}}"#,
        );
        assert!(!deny.is_public());
        let other_key = p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"StringEquals":{"aws:Referer":"x"}}}}"#,
        );
        assert!(other_key.is_public());
    }

    #[test]
    fn malformed() {
        assert!(err("not json").contains("first byte"));
        assert!(err("{\"Statement\": [").contains("invalid Json"));
        assert_eq!(err("{}"), "Missing required field Statement");
        assert_eq!(
            err(r#"{"Statement":[]}"#),
            "Missing required field Statement"
        );
        assert_eq!(
            err(r#"{"Version":"2020-01-01","Statement":[]}"#),
            "The policy must contain a valid version string"
        );
        assert_eq!(err(r#"{"Bogus":1,"Statement":[]}"#), "Unknown field Bogus");
        let st = |s: &str| err(&format!("{{\"Statement\":[{s}]}}"));
        assert_eq!(
            st(r#"{"Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}"#),
            "Missing required field Effect"
        );
        assert!(st(r#"{"Effect":"Maybe","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}"#).starts_with("Invalid effect"));
        assert_eq!(
            st(r#"{"Effect":"Allow","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}"#),
            "Missing required field Principal"
        );
        assert_eq!(
            st(r#"{"Effect":"Allow","Principal":"*","Resource":"arn:aws:s3:::bkt/*"}"#),
            "Missing required field Action"
        );
        assert_eq!(
            st(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject"}"#),
            "Missing required field Resource"
        );
        assert_eq!(
            st(
                r#"{"Effect":"Allow","Principal":"*","Action":"s3:Frobnicate","Resource":"arn:aws:s3:::bkt/*"}"#
            ),
            "Policy has invalid action"
        );
        assert_eq!(
            st(
                r#"{"Effect":"Allow","Principal":"*","Action":"ec2:RunInstances","Resource":"arn:aws:s3:::bkt/*"}"#
            ),
            "Policy has invalid action"
        );
        assert_eq!(
            st(
                r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::other/*"}"#
            ),
            "Policy has invalid resource"
        );
        assert_eq!(
            st(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"*"}"#),
            "Policy has invalid resource"
        );
        assert_eq!(
            st(
                r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt"}"#
            ),
            "Action does not apply to any resource(s) in statement"
        );
        assert_eq!(
            st(
                r#"{"Effect":"Allow","Principal":"*","Action":"s3:ListBucket","Resource":"arn:aws:s3:::bkt/*"}"#
            ),
            "Action does not apply to any resource(s) in statement"
        );
        assert_eq!(
            st(
                r#"{"Effect":"Allow","Principal":{"Bogus":"x"},"Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}"#
            ),
            "Invalid principal in policy"
        );
        assert_eq!(
            st(
                r#"{"Effect":"Allow","Principal":"someone","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}"#
            ),
            "Invalid principal in policy"
        );
        assert!(st(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"StringSorta":{"a":"b"}}}"#).starts_with("Invalid Condition type"));
        assert!(st(r#"{"Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*","Condition":{"IpAddress":{"aws:SourceIp":"nope"}}}"#).starts_with("Invalid IP"));
        assert_eq!(
            err(
                r#"{"Statement":[{"Sid":"a","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"},{"Sid":"a","Effect":"Allow","Principal":"*","Action":"s3:GetObject","Resource":"arn:aws:s3:::bkt/*"}]}"#
            ),
            "Statement IDs (SID) in a single policy must be unique"
        );
        let big = format!("{{\"Id\":\"{}\"}}", "x".repeat(MAX_POLICY_BYTES));
        assert!(err(&big).contains("maximum"));
        // A wildcard bucket segment that covers this bucket is accepted; wildcard actions too.
        p(
            r#"{"Statement":{"Effect":"Allow","Principal":"*","Action":"s3:Get*","Resource":"arn:aws:s3:::bk*"}}"#,
        );
    }
}
