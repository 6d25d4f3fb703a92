//! What the CLC's action tests share: a caller, one EC2 call through the action
//! functions (no listener), XML text helpers, and a `Clc` on a temp directory.
#![allow(dead_code)]
pub mod netcluster;

use euca_aws::xml::XmlWriter;
use euca_aws::Principal;
use euca_clc::actions::{dispatch, Action};
use euca_clc::call::Call;
use euca_clc::params::Params;
use euca_clc::{Clc, ClcConfig, Ec2Error};

/// A caller of account `account`.
pub fn principal(account: &str) -> Principal {
    Principal {
        account_id: account.into(),
        canonical_id: format!("canon-{account}"),
        display_name: format!("name-{account}"),
        access_key: format!("AK{account}"),
    }
}

/// `action` with `pairs` as `who`; the response document or the EC2 error.
pub async fn call_as(
    clc: &Clc,
    who: &Principal,
    action: &str,
    pairs: &[(&str, &str)],
) -> Result<String, Ec2Error> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    v.push(("Action".into(), action.into()));
    let params = Params::new(v)?;
    let cx = Call {
        clc,
        caller: who,
        params: &params,
        request_id: "req",
    };
    let mut x = XmlWriter::new();
    x.root("Response", "urn:test");
    dispatch(Action::parse(action).expect("known action"), &cx, &mut x).await?;
    Ok(x.finish())
}

/// [`call_as`] a caller of account `account`.
pub async fn call(
    clc: &Clc,
    account: &str,
    action: &str,
    pairs: &[(&str, &str)],
) -> Result<String, Ec2Error> {
    call_as(clc, &principal(account), action, pairs).await
}

/// The text of the first `<tag>` element.
pub fn text<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let s = xml.find(&open)? + open.len();
    let e = xml[s..].find(&format!("</{tag}>"))? + s;
    Some(&xml[s..e])
}

/// The texts of every `<tag>` element, in order.
pub fn texts(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(s) = rest.find(&open) {
        let after = &rest[s + open.len()..];
        let Some(e) = after.find(&close) else { break };
        out.push(after[..e].to_string());
        rest = &after[e..];
    }
    out
}

/// A cloud controller (region `eucalyptus`) with its records under `dir`.
pub fn open_with(dir: &std::path::Path, config: ClcConfig) -> Clc {
    Clc::open(dir, "eucalyptus", "http://127.0.0.1:1/", config).unwrap()
}

/// What a cluster answers for an instance it does not have (the fake clusters'
/// 404).
pub fn instance_not_found() -> euca_compute_proto::ProtoError {
    euca_compute_proto::ProtoError::Refused {
        status: 404,
        code: euca_compute_proto::codes::INSTANCE_NOT_FOUND.into(),
        message: "no such instance".into(),
    }
}
