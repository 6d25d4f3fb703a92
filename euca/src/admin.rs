//! Admin subcommands: signed calls to the running cloud's `/_admin/` API, using the
//! admin credentials `euca up` wrote into the data directory.
use crate::{AccountCmd, KeyCmd};
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use euca_aws::sign::Signer;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Args)]
pub struct Target {
    /// The data directory of the running cloud (its credentials/eucarc is used).
    #[arg(long, global = true, default_value = "euca-data")]
    data: PathBuf,
}

fn eucarc(t: &Target) -> Result<HashMap<String, String>> {
    let p = t.data.join("credentials/eucarc");
    let s = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {} (is the cloud up with --data {}?)",
            p.display(),
            t.data.display()
        )
    })?;
    Ok(s.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

async fn call(t: &Target, method: &str, path: &str) -> Result<serde_json::Value> {
    let env = eucarc(t)?;
    let get = |k: &str| {
        env.get(k)
            .cloned()
            .with_context(|| format!("{k} missing from eucarc"))
    };
    let url: http::Uri = format!("{}{}", get("S3_URL")?.trim_end_matches('/'), path).parse()?;
    let signer = Signer {
        access_key: get("AWS_ACCESS_KEY_ID")?,
        secret_key: get("AWS_SECRET_ACCESS_KEY")?,
        region: get("AWS_DEFAULT_REGION")?,
        service: "s3".into(),
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "host",
        url.authority()
            .context("S3_URL has no host")?
            .as_str()
            .parse()?,
    );
    signer.sign(
        method,
        url.path(),
        url.query().unwrap_or(""),
        &mut headers,
        euca_aws::sigv4::EMPTY_SHA256,
        time::OffsetDateTime::now_utc(),
    );
    let mut req = http::Request::builder()
        .method(method)
        .uri(url.clone())
        .body(Full::new(Bytes::new()))?;
    *req.headers_mut() = headers;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client
        .request(req)
        .await
        .with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        bail!("{status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(serde_json::from_slice(&body)?)
}

fn s(v: &serde_json::Value, k: &str) -> String {
    match &v[k] {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub async fn account(t: &Target, cmd: AccountCmd) -> Result<()> {
    match cmd {
        AccountCmd::Create { name } => {
            let v = call(t, "POST", &format!("/_admin/accounts/{name}")).await?;
            println!("ACCOUNT_NAME={}", s(&v["account"], "name"));
            println!("ACCOUNT_ID={}", s(&v["account"], "id"));
            println!("CANONICAL_ID={}", s(&v["account"], "canonical_id"));
            println!("AWS_ACCESS_KEY_ID={}", s(&v["key"], "access_key_id"));
            println!(
                "AWS_SECRET_ACCESS_KEY={}",
                s(&v["key"], "secret_access_key")
            );
        }
        AccountCmd::List => {
            let v = call(t, "GET", "/_admin/accounts").await?;
            println!("{:<24} {:<14} {:<8} CANONICAL_ID", "NAME", "ID", "ENABLED");
            for a in v.as_array().into_iter().flatten() {
                println!(
                    "{:<24} {:<14} {:<8} {}",
                    s(a, "name"),
                    s(a, "id"),
                    s(a, "enabled"),
                    s(a, "canonical_id")
                );
            }
        }
        AccountCmd::Disable { name } => {
            call(t, "POST", &format!("/_admin/accounts/{name}/disable")).await?;
            println!("account {name} disabled");
        }
        AccountCmd::Enable { name } => {
            call(t, "POST", &format!("/_admin/accounts/{name}/enable")).await?;
            println!("account {name} enabled");
        }
    }
    Ok(())
}

pub async fn key(t: &Target, cmd: KeyCmd) -> Result<()> {
    match cmd {
        KeyCmd::Create { account } => {
            let v = call(t, "POST", &format!("/_admin/accounts/{account}/keys")).await?;
            println!("AWS_ACCESS_KEY_ID={}", s(&v, "access_key_id"));
            println!("AWS_SECRET_ACCESS_KEY={}", s(&v, "secret_access_key"));
        }
        KeyCmd::List { account } => {
            let v = call(t, "GET", &format!("/_admin/accounts/{account}/keys")).await?;
            println!("{:<24} ENABLED", "ACCESS_KEY_ID");
            for k in v.as_array().into_iter().flatten() {
                println!("{:<24} {}", s(k, "access_key_id"), s(k, "enabled"));
            }
        }
        KeyCmd::Disable { access_key_id } => {
            call(t, "POST", &format!("/_admin/keys/{access_key_id}/disable")).await?;
            println!("key {access_key_id} disabled");
        }
    }
    Ok(())
}
