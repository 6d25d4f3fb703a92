//! Security groups and their ingress rules; a `default` group per account.
//!
//! The `default` group ("default group") is made the first time an account's
//! groups are used (any group action, Describe included), by an insert that
//! refuses a second `default`, so concurrent first uses make exactly one. It
//! cannot be deleted. Rules are changed in one [`Db::update`] of the group, so
//! concurrent authorizations never lose one another. Rules arrive in the modern
//! `IpPermissions.N.*` form or the legacy flat one (`IpProtocol`, `FromPort`,
//! `ToPort`, `CidrIp`, `SourceSecurityGroupName`, `SourceSecurityGroupOwnerId`).
use crate::call::Call;
use crate::describe::{self, Describe, Filterable, Scope, Tags};
use crate::error::Ec2Error;
use crate::model::{IngressRule, RuleSource, SecurityGroup};
use crate::offload::{all_of, blocking};
use crate::params::Params;
use crate::store::{Db, Owned, Write};
use euca_aws::xml::XmlWriter;

/// The group every account has.
pub const DEFAULT_GROUP: &str = "default";
const DEFAULT_DESCRIPTION: &str = "default group";

fn not_found(what: &str) -> Ec2Error {
    Ec2Error::not_found("InvalidGroup.NotFound", "security group", what)
}

/// `owner`'s groups, the `default` one made first if it is not there yet.
pub fn my_groups(db: &Db, owner: &str) -> Result<Vec<Owned<SecurityGroup>>, Ec2Error> {
    let groups = all_of::<SecurityGroup>(db, Some(owner))?;
    if groups.iter().any(|g| g.record.name == DEFAULT_GROUP) {
        return Ok(groups);
    }
    let g = SecurityGroup {
        id: crate::ids::new_id("sg"),
        name: DEFAULT_GROUP.into(),
        description: DEFAULT_DESCRIPTION.into(),
        ingress: Vec::new(),
        tags: Tags::new(),
    };
    // False when a concurrent first use made it: then that one is the default.
    db.insert(owner, &g, |o: &SecurityGroup| o.name == DEFAULT_GROUP)?;
    all_of::<SecurityGroup>(db, Some(owner))
}

/// The caller's group named by `GroupId` or else `GroupName`.
fn find_group(db: &Db, owner: &str, p: &Params) -> Result<Owned<SecurityGroup>, Ec2Error> {
    let groups = my_groups(db, owner)?;
    let found = match (p.get("GroupId"), p.get("GroupName")) {
        (Some(id), _) => groups.into_iter().find(|g| g.record.id == id).ok_or(id),
        (None, Some(name)) => groups
            .into_iter()
            .find(|g| g.record.name == name)
            .ok_or(name),
        (None, None) => return Err(Ec2Error::MissingParameter("GroupName or GroupId".into())),
    };
    found.map_err(not_found)
}

impl Filterable for SecurityGroup {
    fn filter_values(&self, name: &str) -> Option<Vec<String>> {
        let rules = self.ingress.iter();
        let port = |p: Option<i32>| p.map(|v| v.to_string());
        Some(match name {
            "group-name" => vec![self.name.clone()],
            "group-id" => vec![self.id.clone()],
            "description" => vec![self.description.clone()],
            "ip-permission.protocol" => rules.map(|r| r.protocol.clone()).collect(),
            "ip-permission.from-port" => rules.filter_map(|r| port(r.from_port)).collect(),
            "ip-permission.to-port" => rules.filter_map(|r| port(r.to_port)).collect(),
            "ip-permission.cidr" => rules
                .filter_map(|r| match &r.source {
                    RuleSource::Cidr(c) => Some(c.clone()),
                    _ => None,
                })
                .collect(),
            "ip-permission.group-id" | "ip-permission.group-name" | "ip-permission.user-id" => {
                rules
                    .filter_map(|r| match &r.source {
                        RuleSource::Group {
                            user_id,
                            group_id,
                            group_name,
                        } => Some(match name {
                            "ip-permission.group-id" => group_id.clone(),
                            "ip-permission.group-name" => group_name.clone(),
                            _ => user_id.clone(),
                        }),
                        _ => None,
                    })
                    .collect()
            }
            _ => return None,
        })
    }
    fn tags(&self) -> &Tags {
        &self.tags
    }
}

/// A group name or description: 1–255 printable ASCII characters, as given.
fn check_text(param: &str, v: &str) -> Result<(), Ec2Error> {
    if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(Ec2Error::invalid(format!(
            "Value ({v}) for parameter {param} is invalid: 1 to 255 ASCII characters"
        )));
    }
    Ok(())
}

pub async fn create_security_group(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let name = cx.params.required("GroupName")?.to_string();
    let description = cx.params.required("GroupDescription")?.to_string();
    check_text("GroupName", &name)?;
    check_text("GroupDescription", &description)?;
    if name.starts_with("sg-") {
        return Err(Ec2Error::invalid(format!(
            "Value ({name}) for parameter GroupName is invalid: group names may not start with 'sg-'"
        )));
    }
    let tags = super::tags::tag_specs(cx.params, "security-group")?;
    let (db, owner) = (cx.clc.db.clone(), cx.account().to_string());
    let (id, tags) = blocking(move || {
        my_groups(&db, &owner)?;
        let g = SecurityGroup {
            id: crate::ids::new_id("sg"),
            name,
            description,
            ingress: Vec::new(),
            tags,
        };
        if !db.insert(&owner, &g, |o: &SecurityGroup| o.name == g.name)? {
            return Err(Ec2Error::duplicate(
                "InvalidGroup.Duplicate",
                format!("The security group '{}' already exists", g.name),
            ));
        }
        Ok((g.id, g.tags))
    })
    .await?;
    x.elem("return", "true").elem("groupId", id);
    describe::tag_set(x, &tags);
    Ok(())
}

fn describe_sync(
    db: &Db,
    owner: &str,
    p: &Params,
) -> Result<(Vec<Owned<SecurityGroup>>, Option<String>), Ec2Error> {
    let groups = my_groups(db, owner)?;
    let mut d = Describe::from_params(p, "GroupId")?;
    for name in p.list("GroupName") {
        let g = groups
            .iter()
            .find(|g| g.record.name == name)
            .ok_or_else(|| not_found(name))?;
        if !d.ids.contains(&g.record.id) {
            d.ids.push(g.record.id.clone());
        }
    }
    // Every group in scope is the caller's: `owner-id` is decided here.
    let (owner_filters, rest): (Vec<_>, Vec<_>) =
        d.filters.into_iter().partition(|f| f.name == "owner-id");
    d.filters = rest;
    let (page, token) = describe::page(db, Scope::Owner(owner), &d, |_| true, not_found)?;
    let owner_ok = owner_filters
        .iter()
        .all(|f| f.values.iter().any(|v| describe::wildcard(v, owner)));
    Ok(if owner_ok {
        (page, token)
    } else {
        (Vec::new(), None)
    })
}

pub async fn describe_security_groups(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let (db, owner, p) = (
        cx.clc.db.clone(),
        cx.account().to_string(),
        cx.params.clone(),
    );
    let (groups, token) = blocking(move || describe_sync(&db, &owner, &p)).await?;
    x.open("securityGroupInfo");
    for g in &groups {
        write_group(x, &g.owner, &g.record);
    }
    x.close();
    describe::next_token(x, &token);
    Ok(())
}

/// One `ipPermissions` item: protocol, ports and the sources they are open to.
type Permission<'a> = (&'a str, Option<i32>, Option<i32>, Vec<&'a RuleSource>);

fn write_group(x: &mut XmlWriter, owner: &str, g: &SecurityGroup) {
    x.open("item")
        .elem("ownerId", owner)
        .elem("groupId", &g.id)
        .elem("groupName", &g.name)
        .elem("groupDescription", &g.description);
    // One permission per protocol and port range, its sources together (as AWS).
    let mut perms: Vec<Permission> = Vec::new();
    for r in &g.ingress {
        let key = (r.protocol.as_str(), r.from_port, r.to_port);
        match perms.iter_mut().find(|p| (p.0, p.1, p.2) == key) {
            Some(p) => p.3.push(&r.source),
            None => perms.push((key.0, key.1, key.2, vec![&r.source])),
        }
    }
    x.open("ipPermissions");
    for (proto, from, to, sources) in perms {
        x.open("item").elem("ipProtocol", proto);
        if let Some(f) = from {
            x.elem("fromPort", f.to_string());
        }
        if let Some(t) = to {
            x.elem("toPort", t.to_string());
        }
        x.open("groups");
        for s in &sources {
            if let RuleSource::Group {
                user_id,
                group_id,
                group_name,
            } = s
            {
                x.open("item")
                    .elem("userId", user_id)
                    .elem("groupId", group_id)
                    .elem("groupName", group_name)
                    .close();
            }
        }
        x.close().open("ipRanges");
        for s in &sources {
            if let RuleSource::Cidr(c) = s {
                x.open("item").elem("cidrIp", c).close();
            }
        }
        x.close();
        x.open("ipv6Ranges").close().open("prefixListIds").close();
        x.close();
    }
    x.close();
    x.open("ipPermissionsEgress").close();
    describe::tag_set(x, &g.tags);
    x.close();
}

pub async fn delete_security_group(cx: &Call<'_>, x: &mut XmlWriter) -> Result<(), Ec2Error> {
    let (db, owner, p) = (
        cx.clc.db.clone(),
        cx.account().to_string(),
        cx.params.clone(),
    );
    let id = blocking(move || {
        let g = find_group(&db, &owner, &p)?;
        if g.record.name == DEFAULT_GROUP {
            return Err(Ec2Error::state(
                "InvalidGroup.Reserved",
                "The security group 'default' is reserved and cannot be deleted",
            ));
        }
        let id = g.record.id;
        // The account's own rules naming it keep it (another account's cannot: that
        // would let anyone pin a group they can name; theirs then match nothing).
        let users = all_of::<SecurityGroup>(&db, Some(&owner))?;
        if let Some(u) = users.iter().find(|u| {
            u.record.id != id
                && u.record.ingress.iter().any(
                    |r| matches!(&r.source, RuleSource::Group { group_id, .. } if *group_id == id),
                )
        }) {
            return Err(Ec2Error::state(
                "DependencyViolation",
                format!(
                    "resource {id} has a dependent object (a rule of {})",
                    u.record.id
                ),
            ));
        }
        db.update::<SecurityGroup, _>(&id, |cur| {
            Ok(match cur {
                Some(g) if g.owner == owner => (Write::Delete, ()),
                _ => (Write::Keep, ()),
            })
        })?;
        Ok(id)
    })
    .await?;
    x.elem("return", "true").elem("groupId", id);
    Ok(())
}

/// A rule's source as the request names it (resolved against the records later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    Cidr(String),
    Group {
        user_id: Option<String>,
        group_id: Option<String>,
        group_name: Option<String>,
    },
}

/// One rule as the request gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleSpec {
    pub protocol: &'static str,
    pub from_port: Option<i32>,
    pub to_port: Option<i32>,
    pub source: SourceSpec,
}

/// `tcp`/`6`, `udp`/`17`, `icmp`/`1`, `-1`/`all`.
pub fn protocol(s: &str) -> Result<&'static str, Ec2Error> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "tcp" | "6" => "tcp",
        "udp" | "17" => "udp",
        "icmp" | "1" => "icmp",
        "-1" | "all" => "-1",
        _ => {
            return Err(Ec2Error::invalid(format!(
                "Invalid value '{s}' for IP protocol. Unknown protocol."
            )))
        }
    })
}

/// An IPv4 CIDR `a.b.c.d/n`, kept as given.
pub fn check_cidr(c: &str) -> Result<(), Ec2Error> {
    let ok = c.split_once('/').is_some_and(|(addr, len)| {
        addr.parse::<std::net::Ipv4Addr>().is_ok()
            && !len.is_empty()
            && len.len() <= 2
            && len.bytes().all(|b| b.is_ascii_digit())
            && len.parse::<u8>().is_ok_and(|n| n <= 32)
    });
    if ok {
        Ok(())
    } else {
        Err(Ec2Error::invalid(format!(
            "Value ({c}) for parameter cidrIp is invalid. This is not a valid CIDR block."
        )))
    }
}

fn ports(
    proto: &str,
    from: Option<i64>,
    to: Option<i64>,
) -> Result<(Option<i32>, Option<i32>), Ec2Error> {
    let range = |lo: i64, hi: i64, what: &str| -> Result<(Option<i32>, Option<i32>), Ec2Error> {
        let (f, t) = (from.unwrap_or(-1), to.unwrap_or(-1));
        if !(lo..=hi).contains(&f) || !(lo..=hi).contains(&t) {
            return Err(Ec2Error::invalid(format!(
                "Invalid {what} ({f}, {t}): each must be {lo} to {hi}"
            )));
        }
        Ok((Some(f as i32), Some(t as i32)))
    };
    match proto {
        "tcp" | "udp" => {
            let (Some(_), Some(_)) = (from, to) else {
                return Err(Ec2Error::invalid(format!(
                    "Invalid value for portRange: {proto} needs FromPort and ToPort"
                )));
            };
            let r = range(0, 65535, "port range")?;
            if r.0 > r.1 {
                return Err(Ec2Error::invalid(format!(
                    "Invalid port range: FromPort {} is above ToPort {}",
                    r.0.unwrap_or(0),
                    r.1.unwrap_or(0)
                )));
            }
            Ok(r)
        }
        "icmp" => range(-1, 255, "ICMP type and code"),
        _ => Ok((None, None)),
    }
}

/// The rules of an Authorize/Revoke request, in either form.
pub fn parse_rules(p: &Params) -> Result<Vec<RuleSpec>, Ec2Error> {
    let mut out = Vec::new();
    for perm in p.members("IpPermissions") {
        let proto = protocol(perm.required("IpProtocol")?)?;
        let (from_port, to_port) = ports(proto, perm.int("FromPort")?, perm.int("ToPort")?)?;
        let mut sources = Vec::new();
        for r in perm.members("IpRanges") {
            let c = r.required("CidrIp")?;
            check_cidr(c)?;
            sources.push(SourceSpec::Cidr(c.to_string()));
        }
        for g in perm.members("Groups") {
            sources.push(SourceSpec::Group {
                user_id: g.get("UserId").map(String::from),
                group_id: g.get("GroupId").map(String::from),
                group_name: g.get("GroupName").map(String::from),
            });
        }
        if sources.is_empty() {
            return Err(Ec2Error::MissingParameter(
                "IpPermissions.N.IpRanges or IpPermissions.N.Groups".into(),
            ));
        }
        out.extend(sources.into_iter().map(|source| RuleSpec {
            protocol: proto,
            from_port,
            to_port,
            source,
        }));
    }
    // The legacy flat form (one rule: a CIDR or a source group).
    let cidr = p.get("CidrIp");
    let src_name = p.get("SourceSecurityGroupName");
    let src_owner = p.get("SourceSecurityGroupOwnerId");
    if cidr.is_some() || src_name.is_some() || p.get("IpProtocol").is_some() {
        let proto = match (p.get("IpProtocol"), src_name) {
            (Some(s), _) => protocol(s)?,
            // A bare source group allows everything from it.
            (None, Some(_)) => "-1",
            (None, None) => return Err(Ec2Error::MissingParameter("IpProtocol".into())),
        };
        let (from_port, to_port) = ports(proto, p.int("FromPort")?, p.int("ToPort")?)?;
        let source = match (cidr, src_name) {
            (Some(_), Some(_)) => {
                return Err(Ec2Error::Parameter {
                    code: "InvalidParameterCombination",
                    message: "CidrIp and SourceSecurityGroupName cannot be used together".into(),
                })
            }
            (Some(c), None) => {
                check_cidr(c)?;
                SourceSpec::Cidr(c.to_string())
            }
            (None, Some(n)) => SourceSpec::Group {
                user_id: src_owner.map(String::from),
                group_id: None,
                group_name: Some(n.to_string()),
            },
            (None, None) => return Err(Ec2Error::MissingParameter("CidrIp".into())),
        };
        out.push(RuleSpec {
            protocol: proto,
            from_port,
            to_port,
            source,
        });
    }
    if out.is_empty() {
        return Err(Ec2Error::MissingParameter("IpPermissions".into()));
    }
    Ok(out)
}

/// The stored rules for `specs`, source groups looked up among the caller's own
/// groups, by id or by name (another account's `UserId` is refused).
fn resolve(db: &Db, owner: &str, specs: Vec<RuleSpec>) -> Result<Vec<IngressRule>, Ec2Error> {
    let mut out = Vec::with_capacity(specs.len());
    for s in specs {
        let source = match s.source {
            SourceSpec::Cidr(c) => RuleSource::Cidr(c),
            SourceSpec::Group {
                user_id,
                group_id,
                group_name,
            } => {
                // Another account's groups as sources are refused alike whether
                // they exist or not: an answer that differed would let any account
                // probe another's group names and ids.
                if user_id.as_deref().is_some_and(|u| u != owner) {
                    return Err(Ec2Error::invalid(
                        "source groups of another account are not supported yet",
                    ));
                }
                let g = match (&group_id, &group_name) {
                    (Some(id), _) => db
                        .get::<SecurityGroup>(id)?
                        .filter(|g| g.owner == owner)
                        .ok_or_else(|| not_found(id))?,
                    (None, Some(name)) => {
                        let groups = my_groups(db, owner)?;
                        groups
                            .into_iter()
                            .find(|g| &g.record.name == name)
                            .ok_or_else(|| not_found(name))?
                    }
                    (None, None) => {
                        return Err(Ec2Error::MissingParameter(
                            "Groups.N.GroupName or Groups.N.GroupId".into(),
                        ))
                    }
                };
                RuleSource::Group {
                    user_id: g.owner,
                    group_id: g.record.id,
                    group_name: g.record.name,
                }
            }
        };
        out.push(IngressRule {
            protocol: s.protocol.to_string(),
            from_port: s.from_port,
            to_port: s.to_port,
            source,
        });
    }
    Ok(out)
}

fn describe_rule(r: &IngressRule) -> String {
    let peer = match &r.source {
        RuleSource::Cidr(c) => c.clone(),
        RuleSource::Group {
            user_id, group_id, ..
        } => format!("{user_id}/{group_id}"),
    };
    let port = |p: Option<i32>| p.map_or("-".to_string(), |v| v.to_string());
    format!(
        "peer: {peer}, {}, from port: {}, to port: {}",
        r.protocol.to_ascii_uppercase(),
        port(r.from_port),
        port(r.to_port)
    )
}

/// Adds (`add`) or removes the request's rules, all or none.
async fn change_rules(cx: &Call<'_>, add: bool) -> Result<(), Ec2Error> {
    let specs = parse_rules(cx.params)?;
    let (db, owner, p) = (
        cx.clc.db.clone(),
        cx.account().to_string(),
        cx.params.clone(),
    );
    blocking(move || {
        let target = find_group(&db, &owner, &p)?;
        let rules = resolve(&db, &owner, specs)?;
        db.update::<SecurityGroup, _>(&target.record.id, |cur| {
            let Some(g) = cur.filter(|g| g.owner == owner) else {
                return Err(not_found(&target.record.id));
            };
            let ingress = &mut g.record.ingress;
            for r in &rules {
                let at = ingress.iter().position(|have| have == r);
                match (add, at) {
                    (true, None) => ingress.push(r.clone()),
                    (true, Some(_)) => {
                        return Err(Ec2Error::duplicate(
                            "InvalidPermission.Duplicate",
                            format!("the specified rule \"{}\" already exists", describe_rule(r)),
                        ))
                    }
                    (false, Some(i)) => {
                        ingress.remove(i);
                    }
                    (false, None) => {
                        return Err(Ec2Error::not_found(
                            "InvalidPermission.NotFound",
                            "rule",
                            describe_rule(r),
                        ))
                    }
                }
            }
            Ok((Write::Put, ()))
        })
    })
    .await?;
    // The clusters enforce the rules: the reconciler sends them the new state now.
    cx.clc.kick_reconciler();
    Ok(())
}

pub async fn authorize_security_group_ingress(
    cx: &Call<'_>,
    x: &mut XmlWriter,
) -> Result<(), Ec2Error> {
    change_rules(cx, true).await?;
    x.elem("return", "true");
    Ok(())
}

pub async fn revoke_security_group_ingress(
    cx: &Call<'_>,
    x: &mut XmlWriter,
) -> Result<(), Ec2Error> {
    change_rules(cx, false).await?;
    x.elem("return", "true");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Params {
        Params::of(pairs)
    }

    #[test]
    fn concurrent_first_uses_make_one_default_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::RedbStore::open(&dir.path().join("c.redb")).unwrap();
        let db = Db::new(std::sync::Arc::new(store));
        let seen: Vec<Vec<String>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..8)
                .map(|_| s.spawn(|| my_groups(&db, "111").unwrap()))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap().into_iter().map(|g| g.record.id).collect())
                .collect()
        });
        let all = all_of::<SecurityGroup>(&db, Some("111")).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].record.name, "default");
        assert_eq!(all[0].record.description, "default group");
        // Every caller saw that one group.
        assert!(seen.iter().all(|ids| ids == &[all[0].record.id.clone()]));
        assert!(my_groups(&db, "222").unwrap()[0].record.id != all[0].record.id);
    }

    #[test]
    fn modern_form_as_awscli_sends_it() {
        // awscli2-AuthorizeSecurityGroupIngress.txt
        let r = parse_rules(&p(&[
            ("GroupName", "web"),
            ("IpPermissions.1.FromPort", "22"),
            ("IpPermissions.1.IpProtocol", "tcp"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
            ("IpPermissions.1.ToPort", "22"),
        ]))
        .unwrap();
        assert_eq!(
            r,
            [RuleSpec {
                protocol: "tcp",
                from_port: Some(22),
                to_port: Some(22),
                source: SourceSpec::Cidr("0.0.0.0/0".into())
            }]
        );
    }

    #[test]
    fn several_sources_and_protocol_numbers() {
        let r = parse_rules(&p(&[
            ("IpPermissions.1.IpProtocol", "17"),
            ("IpPermissions.1.FromPort", "53"),
            ("IpPermissions.1.ToPort", "54"),
            ("IpPermissions.1.IpRanges.1.CidrIp", "10.0.0.0/8"),
            ("IpPermissions.1.Groups.1.GroupName", "db"),
            ("IpPermissions.2.IpProtocol", "-1"),
            ("IpPermissions.2.Groups.1.GroupId", "sg-12345678"),
            ("IpPermissions.2.Groups.1.UserId", "000000000001"),
        ]))
        .unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].protocol, "udp");
        assert_eq!((r[0].from_port, r[0].to_port), (Some(53), Some(54)));
        assert!(matches!(&r[1].source, SourceSpec::Group { group_name: Some(n), .. } if n == "db"));
        assert_eq!(r[2].protocol, "-1");
        assert_eq!((r[2].from_port, r[2].to_port), (None, None));
        assert!(matches!(&r[2].source,
            SourceSpec::Group { group_id: Some(i), user_id: Some(u), .. }
            if i == "sg-12345678" && u == "000000000001"));
    }

    #[test]
    fn legacy_flat_form() {
        let r = parse_rules(&p(&[
            ("GroupName", "web"),
            ("IpProtocol", "icmp"),
            ("FromPort", "-1"),
            ("ToPort", "-1"),
            ("CidrIp", "192.168.1.0/24"),
        ]))
        .unwrap();
        assert_eq!(r[0].protocol, "icmp");
        assert_eq!((r[0].from_port, r[0].to_port), (Some(-1), Some(-1)));
        let r = parse_rules(&p(&[
            ("SourceSecurityGroupName", "app"),
            ("SourceSecurityGroupOwnerId", "000000000002"),
        ]))
        .unwrap();
        assert_eq!(r[0].protocol, "-1");
        assert_eq!(
            r[0].source,
            SourceSpec::Group {
                user_id: Some("000000000002".into()),
                group_id: None,
                group_name: Some("app".into())
            }
        );
    }

    #[test]
    fn bad_rules_are_refused_with_their_codes() {
        let code = |pairs: &[(&str, &str)]| parse_rules(&p(pairs)).unwrap_err().code();
        assert_eq!(code(&[]), "MissingParameter");
        for cidr in [
            "0.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
            " 10.0.0.0/8",
            "::/0",
        ] {
            assert_eq!(
                code(&[
                    ("IpProtocol", "tcp"),
                    ("FromPort", "1"),
                    ("ToPort", "2"),
                    ("CidrIp", cidr)
                ]),
                "InvalidParameterValue",
                "{cidr}"
            );
        }
        let tcp = |from: &str, to: &str| {
            code(&[
                ("IpPermissions.1.IpProtocol", "tcp"),
                ("IpPermissions.1.FromPort", from),
                ("IpPermissions.1.ToPort", to),
                ("IpPermissions.1.IpRanges.1.CidrIp", "0.0.0.0/0"),
            ])
        };
        assert_eq!(tcp("80", "22"), "InvalidParameterValue");
        assert_eq!(tcp("0", "65536"), "InvalidParameterValue");
        assert_eq!(tcp("-1", "22"), "InvalidParameterValue");
        assert_eq!(
            code(&[("IpProtocol", "gre"), ("CidrIp", "0.0.0.0/0")]),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(&[("IpPermissions.1.IpProtocol", "-1")]),
            "MissingParameter"
        );
    }
}
