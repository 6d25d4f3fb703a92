//! The router's nftables ruleset: tables `ip euca` (anti-spoofing, security groups,
//! NAT) and `arp euca` (anti-spoofing of ARP to the router), rendered from a
//! [`Firewall`] with the `nftables` crate's JSON schema and replaced atomically (one
//! `nft -j -f -` transaction that adds, deletes and re-creates them), so a packet sees either
//! the old rules or the new ones. Conntrack entries outlive the table, so established
//! flows (and their NAT bindings) survive a re-apply; the router deletes those of
//! addresses whose binding changed ([`crate::conntrack`]).
use std::borrow::Cow;
use std::net::Ipv4Addr;
use std::process::Stdio;

use ipnet::Ipv4Net;
use nftables::expr::{Expression, Meta, MetaKey, NamedExpression, Payload, PayloadField, Prefix};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{JumpTarget, Match, Operator, Statement, NAT};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::link::check_netns;
use crate::VnetError;

/// The table the router owns (nothing else in its namespace is touched).
pub const TABLE: &str = "euca";

/// A transport protocol of an ingress rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        }
    }
}

/// One resolved ingress permission: `proto` (none: any), ports (tcp/udp) or ICMP
/// type/code, from any of `sources` (source groups already expanded to addresses).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow {
    pub proto: Option<Proto>,
    /// tcp/udp destination ports, inclusive (none: any).
    pub ports: Option<(u16, u16)>,
    /// ICMP type and code (none: any).
    pub icmp_type: Option<u8>,
    pub icmp_code: Option<u8>,
    pub sources: Vec<Ipv4Net>,
}

/// Traffic to one group's subnet and what it admits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupFilter {
    pub index: u32,
    pub subnet: Ipv4Net,
    pub allow: Vec<Allow>,
    /// What it admits of hairpin traffic (an instance reaching this group through
    /// a public address): matched before the source is rewritten to the public
    /// address the destination will see, so the rules' CIDRs come here already
    /// turned into the private addresses whose hairpin source they contain.
    pub hairpin: Vec<Allow>,
}

/// Everything the ruleset is made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firewall {
    /// The router's instance-side interfaces (`br0`, or `gb<k>` per group).
    pub inside: Vec<String>,
    /// The router's end of the link to the CC's namespace.
    pub public_if: String,
    /// The instances' (MAC, private address) pairs: the only sources accepted from
    /// the inside (besides DHCP from 0.0.0.0).
    pub allowed: Vec<(String, Ipv4Addr)>,
    /// The metadata service's address (tcp/80 accepted from instances).
    pub metadata: Ipv4Addr,
    pub groups: Vec<GroupFilter>,
    /// (private, public) pairs: DNAT in (from outside and, hairpin, from the
    /// inside), SNAT out (and of hairpin traffic).
    pub nat: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The router's public address: the source of hairpin traffic from an
    /// instance without a public address of its own.
    pub router_public: Ipv4Addr,
    /// Instances without a public address leave masqueraded behind the router's
    /// public address when their source is in this range.
    pub masquerade: Option<Ipv4Net>,
}

pub(crate) fn s(v: &str) -> Expression<'static> {
    Expression::String(Cow::Owned(v.to_string()))
}

pub(crate) fn payload(protocol: &'static str, field: &'static str) -> Expression<'static> {
    Expression::Named(NamedExpression::Payload(Payload::PayloadField(
        PayloadField {
            protocol: protocol.into(),
            field: field.into(),
        },
    )))
}

pub(crate) fn meta(key: MetaKey) -> Expression<'static> {
    Expression::Named(NamedExpression::Meta(Meta { key }))
}

fn net(n: Ipv4Net) -> Expression<'static> {
    if n.prefix_len() == 32 {
        s(&n.addr().to_string())
    } else {
        Expression::Named(NamedExpression::Prefix(Prefix {
            addr: Box::new(s(&n.network().to_string())),
            len: u32::from(n.prefix_len()),
        }))
    }
}

pub(crate) fn set(items: Vec<Expression<'static>>) -> Expression<'static> {
    Expression::Named(NamedExpression::Set(
        items
            .into_iter()
            .map(nftables::expr::SetItem::Element)
            .collect(),
    ))
}

pub(crate) fn is(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::EQ,
    })
}

fn accept() -> Statement<'static> {
    Statement::Accept(None)
}

pub(crate) fn drop() -> Statement<'static> {
    Statement::Drop(None)
}

fn jump(target: &str) -> Statement<'static> {
    Statement::Jump(JumpTarget {
        target: Cow::Owned(target.to_string()),
    })
}

fn established() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(nftables::expr::CT {
            key: "state".into(),
            family: None,
            dir: None,
        })),
        right: Expression::List(vec![s("established"), s("related")]),
        op: Operator::IN,
    })
}

/// A chain's base-chain part: type, hook, priority, policy.
type Base = (NfChainType, NfHook, i32, NfChainPolicy);

fn chain(name: &str, base: Option<Base>) -> NfObject<'static> {
    chain_in(NfFamily::IP, name, base)
}

fn chain_in(family: NfFamily, name: &str, base: Option<Base>) -> NfObject<'static> {
    let mut c = Chain {
        family,
        table: TABLE.into(),
        name: Cow::Owned(name.to_string()),
        ..Chain::default()
    };
    if let Some((t, hook, prio, policy)) = base {
        c._type = Some(t);
        c.hook = Some(hook);
        c.prio = Some(prio);
        c.policy = Some(policy);
    }
    NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(c)))
}

fn rule(chain: &str, expr: Vec<Statement<'static>>) -> NfObject<'static> {
    rule_in(NfFamily::IP, chain, expr)
}

fn rule_in(family: NfFamily, chain: &str, expr: Vec<Statement<'static>>) -> NfObject<'static> {
    NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
        family,
        table: TABLE.into(),
        chain: Cow::Owned(chain.to_string()),
        expr: expr.into(),
        ..Rule::default()
    })))
}

fn table_cmd(
    family: NfFamily,
    cmd: fn(NfListObject<'static>) -> NfCmd<'static>,
) -> NfObject<'static> {
    NfObject::CmdObject(cmd(NfListObject::Table(Table {
        family,
        name: TABLE.into(),
        handle: None,
    })))
}

fn group_chain(index: u32) -> String {
    format!("group{index}")
}

/// The chain of a group's hairpin permissions.
fn hairpin_chain(index: u32) -> String {
    format!("group{index}h")
}

/// `ct status dnat`: the flow's destination was rewritten (a public address).
fn dnatted() -> Statement<'static> {
    Statement::Match(Match {
        left: Expression::Named(NamedExpression::CT(nftables::expr::CT {
            key: "status".into(),
            family: None,
            dir: None,
        })),
        right: s("dnat"),
        op: Operator::IN,
    })
}

/// The match statements of one permission (without its verdict); `None` when it
/// admits nothing (no source at all).
fn allow_matches(a: &Allow) -> Option<Vec<Statement<'static>>> {
    if a.sources.is_empty() {
        return None;
    }
    let mut m = Vec::new();
    if !a.sources.iter().any(|n| n.prefix_len() == 0) {
        m.push(is(
            payload("ip", "saddr"),
            set(a.sources.iter().map(|n| net(*n)).collect()),
        ));
    }
    match a.proto {
        None => {}
        Some(Proto::Icmp) => {
            m.push(is(meta(MetaKey::L4proto), s("icmp")));
            if let Some(t) = a.icmp_type {
                m.push(is(payload("icmp", "type"), Expression::Number(t.into())));
            }
            if let Some(c) = a.icmp_code {
                m.push(is(payload("icmp", "code"), Expression::Number(c.into())));
            }
        }
        Some(p) => {
            m.push(is(meta(MetaKey::L4proto), s(p.name())));
            if let Some((lo, hi)) = a.ports {
                let right = if lo == hi {
                    Expression::Number(lo.into())
                } else {
                    Expression::Range(Box::new(nftables::expr::Range {
                        range: [Expression::Number(lo.into()), Expression::Number(hi.into())],
                    }))
                };
                m.push(is(payload("th", "dport"), right));
            }
        }
    }
    Some(m)
}

impl Firewall {
    /// The (MAC . address) elements of the anti-spoofing sets.
    fn pairs(&self) -> Vec<Expression<'static>> {
        self.allowed
            .iter()
            .map(|(mac, ip)| {
                Expression::Named(NamedExpression::Concat(vec![
                    s(&mac.to_ascii_lowercase()),
                    s(&ip.to_string()),
                ]))
            })
            .collect()
    }

    /// The whole transaction: (re)create table `ip euca` with its chains and rules.
    pub fn render(&self) -> Nftables<'static> {
        let mut o = vec![
            // `add` first so `delete` never fails on a fresh namespace.
            table_cmd(NfFamily::IP, NfCmd::Add),
            table_cmd(NfFamily::IP, NfCmd::Delete),
            table_cmd(NfFamily::IP, NfCmd::Add),
            table_cmd(NfFamily::ARP, NfCmd::Add),
            table_cmd(NfFamily::ARP, NfCmd::Delete),
            table_cmd(NfFamily::ARP, NfCmd::Add),
            chain_in(
                NfFamily::ARP,
                "input",
                Some((NfChainType::Filter, NfHook::Input, 0, NfChainPolicy::Accept)),
            ),
            chain(
                "input",
                Some((NfChainType::Filter, NfHook::Input, 0, NfChainPolicy::Accept)),
            ),
            chain(
                "forward",
                Some((NfChainType::Filter, NfHook::Forward, 0, NfChainPolicy::Drop)),
            ),
            chain(
                "prerouting",
                Some((
                    NfChainType::NAT,
                    NfHook::Prerouting,
                    -100,
                    NfChainPolicy::Accept,
                )),
            ),
            chain(
                "postrouting",
                Some((
                    NfChainType::NAT,
                    NfHook::Postrouting,
                    100,
                    NfChainPolicy::Accept,
                )),
            ),
            chain("antispoof", None),
        ];
        let inside = || set(self.inside.iter().map(|i| s(i)).collect());
        let from_inside = || is(meta(MetaKey::Iifname), inside());

        // Anti-spoofing: a packet from the inside must carry one of the state's
        // (MAC, address) pairs; the only exception is a DHCP request before the
        // guest has an address.
        o.push(rule(
            "antispoof",
            vec![
                is(payload("ip", "saddr"), s("0.0.0.0")),
                is(meta(MetaKey::L4proto), s("udp")),
                is(payload("udp", "dport"), Expression::Number(67)),
                Statement::Return(None),
            ],
        ));
        if !self.allowed.is_empty() {
            let pairs = self.pairs();
            o.push(rule(
                "antispoof",
                vec![
                    is(
                        Expression::Named(NamedExpression::Concat(vec![
                            payload("ether", "saddr"),
                            payload("ip", "saddr"),
                        ])),
                        set(pairs),
                    ),
                    Statement::Return(None),
                ],
            ));
        }
        o.push(rule("antispoof", vec![drop()]));

        // ARP to the router (table `arp euca`): the same pairs, so a guest cannot
        // point the router's neighbour entry for another instance's address at
        // itself. Probes (sender 0.0.0.0) update nothing and pass.
        if !self.inside.is_empty() {
            let arp = |field: &'static str| payload("arp", field);
            o.push(rule_in(
                NfFamily::ARP,
                "input",
                vec![from_inside(), is(arp("saddr ip"), s("0.0.0.0")), accept()],
            ));
            if !self.allowed.is_empty() {
                o.push(rule_in(
                    NfFamily::ARP,
                    "input",
                    vec![
                        from_inside(),
                        is(
                            Expression::Named(NamedExpression::Concat(vec![
                                arp("saddr ether"),
                                arp("saddr ip"),
                            ])),
                            set(self.pairs()),
                        ),
                        accept(),
                    ],
                ));
            }
            o.push(rule_in(NfFamily::ARP, "input", vec![from_inside(), drop()]));
        }

        if !self.inside.is_empty() {
            // The router itself: DHCP and the metadata service, nothing else from
            // the instances.
            o.push(rule("input", vec![established(), accept()]));
            o.push(rule("input", vec![from_inside(), jump("antispoof")]));
            o.push(rule(
                "input",
                vec![
                    from_inside(),
                    is(meta(MetaKey::L4proto), s("udp")),
                    is(payload("udp", "dport"), Expression::Number(67)),
                    accept(),
                ],
            ));
            o.push(rule(
                "input",
                vec![
                    from_inside(),
                    is(payload("ip", "daddr"), s(&self.metadata.to_string())),
                    is(meta(MetaKey::L4proto), s("tcp")),
                    is(payload("tcp", "dport"), Expression::Number(80)),
                    accept(),
                ],
            ));
            o.push(rule("input", vec![from_inside(), drop()]));

            o.push(rule("forward", vec![established(), accept()]));
            o.push(rule("forward", vec![from_inside(), jump("antispoof")]));
            o.push(rule(
                "forward",
                vec![
                    from_inside(),
                    is(meta(MetaKey::Oifname), s(&self.public_if)),
                    accept(),
                ],
            ));
        }
        for g in &self.groups {
            let name = group_chain(g.index);
            let hairpin = hairpin_chain(g.index);
            o.push(chain(&name, None));
            o.push(chain(&hairpin, None));
            o.push(rule(
                "forward",
                vec![is(payload("ip", "daddr"), net(g.subnet)), jump(&name)],
            ));
            // Hairpin (from an instance, to a public address): only the hairpin
            // permissions; `goto` so nothing of the private ones applies after.
            o.push(rule(
                &name,
                vec![
                    from_inside(),
                    dnatted(),
                    Statement::Goto(JumpTarget {
                        target: Cow::Owned(hairpin.clone()),
                    }),
                ],
            ));
            for a in &g.hairpin {
                if let Some(mut m) = allow_matches(a) {
                    m.push(accept());
                    o.push(rule(&hairpin, m));
                }
            }
            for a in &g.allow {
                if let Some(mut m) = allow_matches(a) {
                    m.push(accept());
                    o.push(rule(&name, m));
                }
            }
        }

        let to = |a: Ipv4Addr| {
            Some(NAT {
                addr: Some(s(&a.to_string())),
                family: None,
                port: None,
                flags: None,
            })
        };
        // Hairpin: an instance reaching another's public address goes out to it
        // from its own public address (the router's when it has none), so the
        // reply comes back through the router and the destination's group sees
        // a public source, as from outside.
        let hairpin = || {
            vec![
                from_inside(),
                is(meta(MetaKey::Oifname), inside()),
                dnatted(),
            ]
        };
        if !self.inside.is_empty() {
            for (private, public) in &self.nat {
                let mut r = hairpin();
                r.push(is(payload("ip", "saddr"), s(&private.to_string())));
                r.push(Statement::SNAT(to(*public)));
                o.push(rule("postrouting", r));
            }
            let mut r = hairpin();
            r.push(Statement::SNAT(to(self.router_public)));
            o.push(rule("postrouting", r));
        }
        for (private, public) in &self.nat {
            // No interface match: from outside, and from the inside (hairpin).
            o.push(rule(
                "prerouting",
                vec![
                    is(payload("ip", "daddr"), s(&public.to_string())),
                    Statement::DNAT(to(*private)),
                ],
            ));
            o.push(rule(
                "postrouting",
                vec![
                    is(meta(MetaKey::Oifname), s(&self.public_if)),
                    is(payload("ip", "saddr"), s(&private.to_string())),
                    Statement::SNAT(to(*public)),
                ],
            ));
        }
        if let Some(range) = self.masquerade {
            o.push(rule(
                "postrouting",
                vec![
                    is(meta(MetaKey::Oifname), s(&self.public_if)),
                    is(payload("ip", "saddr"), net(range)),
                    Statement::Masquerade(None),
                ],
            ));
        }
        Nftables { objects: o.into() }
    }
}

/// Runs `nft -j -f -` with `doc` on stdin, in namespace `netns` (`ip netns exec`).
pub async fn apply(netns: &str, doc: &Nftables<'_>) -> Result<(), VnetError> {
    check_netns(netns)?;
    let json = serde_json::to_vec(doc).map_err(|e| VnetError::Invalid {
        what: "nftables document",
        value: e.to_string(),
    })?;
    run_stdin(netns, &["nft", "-j", "-f", "-"], &json).await
}

/// Deletes table `ip euca` in `netns` (missing: not an error).
pub async fn delete(netns: &str) -> Result<(), VnetError> {
    let doc = Nftables {
        objects: vec![
            table_cmd(NfFamily::IP, NfCmd::Add),
            table_cmd(NfFamily::IP, NfCmd::Delete),
            table_cmd(NfFamily::ARP, NfCmd::Add),
            table_cmd(NfFamily::ARP, NfCmd::Delete),
        ]
        .into(),
    };
    apply(netns, &doc).await
}

/// `ip netns exec NETNS ARGV…` with `input` on stdin; a failure carries stderr's
/// first line.
pub async fn run_stdin(netns: &str, argv: &[&str], input: &[u8]) -> Result<(), VnetError> {
    let mut full = vec!["ip", "netns", "exec", netns];
    full.extend_from_slice(argv);
    run_input(&full, input).await
}

/// [`apply`] in namespace `netns`, or in this process's own when `None`.
pub async fn apply_in(netns: Option<&str>, doc: &Nftables<'_>) -> Result<(), VnetError> {
    match netns {
        Some(ns) => apply(ns, doc).await,
        None => {
            let json = serde_json::to_vec(doc).map_err(|e| VnetError::Invalid {
                what: "nftables document",
                value: e.to_string(),
            })?;
            run_input(&["nft", "-j", "-f", "-"], &json).await
        }
    }
}

/// Runs `argv` with `input` on stdin; a failure carries stderr's first line.
async fn run_input(argv: &[&str], input: &[u8]) -> Result<(), VnetError> {
    let shown = argv.join(" ");
    let (prog, args) = argv.split_first().ok_or_else(|| VnetError::Invalid {
        what: "command",
        value: String::new(),
    })?;
    let mut child = Command::new(prog)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| VnetError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input)
            .await
            .map_err(|source| VnetError::Spawn {
                cmd: shown.clone(),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|source| VnetError::Spawn {
            cmd: shown.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(VnetError::Failed {
            cmd: shown,
            stderr: err.lines().next().unwrap_or("").to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_antispoof_groups_and_nat() {
        let fw = Firewall {
            inside: vec!["br0".into()],
            public_if: "pub".into(),
            allowed: vec![("52:54:00:00:00:01".into(), "10.0.0.2".parse().unwrap())],
            metadata: "169.254.169.254".parse().unwrap(),
            groups: vec![GroupFilter {
                index: 0,
                subnet: "10.0.0.0/27".parse().unwrap(),
                allow: vec![Allow {
                    proto: Some(Proto::Tcp),
                    ports: Some((22, 22)),
                    icmp_type: None,
                    icmp_code: None,
                    sources: vec!["0.0.0.0/0".parse().unwrap()],
                }],
                hairpin: vec![Allow {
                    proto: Some(Proto::Tcp),
                    ports: Some((80, 80)),
                    icmp_type: None,
                    icmp_code: None,
                    sources: vec!["10.0.0.3/32".parse().unwrap()],
                }],
            }],
            nat: vec![("10.0.0.2".parse().unwrap(), "100.64.1.10".parse().unwrap())],
            router_public: "100.64.1.2".parse().unwrap(),
            masquerade: Some("10.0.0.0/16".parse().unwrap()),
        };
        let j = serde_json::to_string(&fw.render()).unwrap();
        assert!(j.contains(r#""concat":[{"payload":{"protocol":"ether","field":"saddr"}}"#));
        assert!(j.contains(r#""dnat":{"addr":"10.0.0.2"}"#), "{j}");
        assert!(j.contains(r#""snat":{"addr":"100.64.1.10"}"#), "{j}");
        assert!(j.contains(r#""jump":{"target":"group0"}"#), "{j}");
        // Hairpin: into its own chain, SNAT to the source's public address, else
        // the router's.
        assert!(j.contains(r#""goto":{"target":"group0h"}"#), "{j}");
        assert!(j.contains(r#""snat":{"addr":"100.64.1.2"}"#), "{j}");
        assert!(j.contains(r#""set":["10.0.0.3"]"#), "{j}");
        // 0.0.0.0/0 admits any source: no saddr match in the group's rule.
        assert!(!j.contains(r#""len":0"#), "{j}");
        // A permission without any source admits nothing and renders nothing.
        let none = Allow {
            proto: None,
            ports: None,
            icmp_type: None,
            icmp_code: None,
            sources: vec![],
        };
        assert!(allow_matches(&none).is_none());
    }
}
