//! A node's guard on one instance's tap (table `bridge euca-<tap>` in the tap's
//! namespace): frames the guest sends must carry its own MAC and, once its address is
//! known, its own IPv4 source address in IPv4 and ARP (0.0.0.0 passes: DHCP and ARP
//! probes before it has one). Without it a guest could take another instance's MAC
//! and address, and the router's MAC/address check (and with it the metadata service,
//! which knows a guest by its address) would take it for that instance.
use std::borrow::Cow;
use std::net::Ipv4Addr;

use nftables::expr::{Expression, MetaKey};
use nftables::schema::{Chain, NfCmd, NfListObject, NfObject, Nftables, Rule, Table};
use nftables::stmt::{Match, Operator, Statement};
use nftables::types::{NfChainPolicy, NfChainType, NfFamily, NfHook};

use crate::link::check_ifname;
use crate::nft::{drop, is, meta, payload, s, set};
use crate::VnetError;

/// The guard's table name for tap `tap`.
pub fn table_name(tap: &str) -> String {
    format!("euca-{tap}")
}

fn isnt(left: Expression<'static>, right: Expression<'static>) -> Statement<'static> {
    Statement::Match(Match {
        left,
        right,
        op: Operator::NEQ,
    })
}

fn table(name: &str, cmd: fn(NfListObject<'static>) -> NfCmd<'static>) -> NfObject<'static> {
    NfObject::CmdObject(cmd(NfListObject::Table(Table {
        family: NfFamily::Bridge,
        name: Cow::Owned(name.to_string()),
        handle: None,
    })))
}

/// The guard's ruleset (re-created whole: add, delete, add the table).
pub fn render(tap: &str, mac: &str, ip: Option<Ipv4Addr>) -> Result<Nftables<'static>, VnetError> {
    check_ifname(tap)?;
    if !crate::dhcp::valid_mac(mac) {
        return Err(VnetError::Invalid {
            what: "MAC address",
            value: mac.to_string(),
        });
    }
    let name = table_name(tap);
    let rule = |expr: Vec<Statement<'static>>| {
        NfObject::CmdObject(NfCmd::Add(NfListObject::Rule(Rule {
            family: NfFamily::Bridge,
            table: Cow::Owned(name.clone()),
            chain: "guard".into(),
            expr: expr.into(),
            ..Rule::default()
        })))
    };
    let from_tap = || is(meta(MetaKey::Iifname), s(tap));
    let mut o = vec![
        table(&name, NfCmd::Add),
        table(&name, NfCmd::Delete),
        table(&name, NfCmd::Add),
        NfObject::CmdObject(NfCmd::Add(NfListObject::Chain(Chain {
            family: NfFamily::Bridge,
            table: Cow::Owned(name.clone()),
            name: "guard".into(),
            _type: Some(NfChainType::Filter),
            hook: Some(NfHook::Prerouting),
            prio: Some(-300),
            policy: Some(NfChainPolicy::Accept),
            ..Chain::default()
        }))),
        rule(vec![
            from_tap(),
            isnt(payload("ether", "saddr"), s(&mac.to_ascii_lowercase())),
            drop(),
        ]),
    ];
    if let Some(ip) = ip {
        let own = || set(vec![s(&ip.to_string()), s("0.0.0.0")]);
        o.push(rule(vec![
            from_tap(),
            is(payload("ether", "type"), s("ip")),
            isnt(payload("ip", "saddr"), own()),
            drop(),
        ]));
        o.push(rule(vec![
            from_tap(),
            is(payload("ether", "type"), s("arp")),
            isnt(payload("arp", "saddr ip"), own()),
            drop(),
        ]));
    }
    Ok(Nftables { objects: o.into() })
}

/// Installs (or replaces) the guard of `tap` in `netns` (`None`: this namespace).
pub async fn guard(
    netns: Option<&str>,
    tap: &str,
    mac: &str,
    ip: Option<Ipv4Addr>,
) -> Result<(), VnetError> {
    let doc = render(tap, mac, ip)?;
    crate::nft::apply_in(netns, &doc).await
}

/// Removes the guard of `tap` (gone already: not an error).
pub async fn unguard(netns: Option<&str>, tap: &str) -> Result<(), VnetError> {
    check_ifname(tap)?;
    let name = table_name(tap);
    let doc = Nftables {
        objects: vec![table(&name, NfCmd::Add), table(&name, NfCmd::Delete)].into(),
    };
    crate::nft::apply_in(netns, &doc).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_names_the_tap_its_mac_and_address() {
        let doc = render(
            "t-0a1b2c3d",
            "52:54:00:AA:00:01",
            Some([10, 1, 0, 5].into()),
        )
        .unwrap();
        let json = serde_json::to_string(&doc).unwrap();
        assert!(json.contains("\"euca-t-0a1b2c3d\""), "{json}");
        assert!(json.contains("52:54:00:aa:00:01"), "{json}");
        assert!(json.contains("\"!=\""), "{json}");
        assert!(
            json.contains("10.1.0.5") && json.contains("saddr ip"),
            "{json}"
        );
        let no_ip =
            serde_json::to_string(&render("t-1", "52:54:00:aa:00:01", None).unwrap()).unwrap();
        assert!(!no_ip.contains("saddr ip"));
        assert!(render("t 1", "52:54:00:aa:00:01", None).is_err());
        assert!(render("t-1", "52:54:00:aa:00", None).is_err());
    }
}
