//! Admin subcommands: signed calls to the running cloud's admin APIs (the cloud
//! controller's `/_admin/`, the SC's volumes and snapshots), using the admin
//! credentials `euca up` wrote into the data directory.
use crate::{AccountCmd, KeyCmd};
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use euca_service::client::SignedClient;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Which cloud an admin command talks to, and with which key.
///
/// In order: `--data DIR` (the eucarc `euca up` wrote to `DIR/credentials/`);
/// else the environment of a sourced eucarc; else `./euca-data`.
#[derive(Args)]
pub struct Target {
    /// The running cloud's data directory (its credentials/eucarc is used).
    /// Default: the environment of a sourced eucarc — EUCA_CLC_URL (accounts, keys) or
    /// EUCA_SC_URL (volumes, snapshots), AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY
    /// (or EC2_ACCESS_KEY/EC2_SECRET_KEY), AWS_DEFAULT_REGION (default us-east-1) —
    /// and when those are not all set, ./euca-data.
    #[arg(long, global = true, value_name = "DIR")]
    data: Option<PathBuf>,
}

/// The data directory used when neither `--data` nor the environment names a cloud.
const DEFAULT_DATA: &str = "euca-data";

fn eucarc_file(data: &Path) -> Result<HashMap<String, String>> {
    let p = data.join("credentials/eucarc");
    let s = std::fs::read_to_string(&p).with_context(|| {
        format!(
            "reading {} (is the cloud up with --data {}?)",
            p.display(),
            data.display()
        )
    })?;
    Ok(s.lines()
        .filter_map(|l| l.trim().strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// Which service an admin call goes to: the eucarc variable with its URL and the
/// SigV4 service name it verifies.
#[derive(Clone, Copy)]
enum Service {
    Clc,
    Sc,
}

impl Service {
    fn url_var(self) -> &'static str {
        match self {
            Service::Clc => "EUCA_CLC_URL",
            Service::Sc => "EUCA_SC_URL",
        }
    }

    fn signing_name(self) -> &'static str {
        match self {
            Service::Clc => euca_identity::service::SIGNING_SERVICE,
            Service::Sc => "sc",
        }
    }
}

/// Access key variables, in the order euca2ools and the AWS tools look for them.
const KEY_VARS: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ("EC2_ACCESS_KEY", "EC2_SECRET_KEY"),
    ("AWS_ACCESS_KEY", "AWS_SECRET_KEY"),
];

/// Where a call goes and the key it is signed with.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    url: String,
    access_key: String,
    secret_key: String,
    region: String,
}

/// The endpoint from eucarc-style variables (`get` answers `None` for unset or
/// empty ones); `Err` names the variables missing.
fn endpoint_from(
    service: Service,
    get: impl Fn(&str) -> Option<String>,
) -> std::result::Result<Endpoint, String> {
    let url = get(service.url_var());
    let key = KEY_VARS.iter().find_map(|(a, s)| Some((get(a)?, get(s)?)));
    match (url, key) {
        (Some(url), Some((access_key, secret_key))) => Ok(Endpoint {
            url,
            access_key,
            secret_key,
            region: get("AWS_DEFAULT_REGION")
                .or_else(|| get("AWS_REGION"))
                .unwrap_or_else(|| "us-east-1".into()),
        }),
        (url, key) => {
            let mut missing = Vec::new();
            if url.is_none() {
                missing.push(service.url_var());
            }
            if key.is_none() {
                missing.push("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
            }
            Err(missing.join(", "))
        }
    }
}

fn env_var(k: &str) -> Option<String> {
    std::env::var(k).ok().filter(|v| !v.is_empty())
}

/// Resolves where `t`'s commands go (see [`Target`]).
fn endpoint(t: &Target, service: Service) -> Result<Endpoint> {
    let from_file = |data: &Path| -> Result<Endpoint> {
        let vars = eucarc_file(data)?;
        endpoint_from(service, |k| vars.get(k).filter(|v| !v.is_empty()).cloned()).map_err(
            |missing| {
                anyhow::anyhow!(
                    "{missing} missing from {}",
                    data.join("credentials/eucarc").display()
                )
            },
        )
    };
    if let Some(d) = &t.data {
        return from_file(d);
    }
    match endpoint_from(service, env_var) {
        Ok(e) => Ok(e),
        Err(missing) => {
            let default = Path::new(DEFAULT_DATA);
            if default.join("credentials/eucarc").exists() {
                return from_file(default);
            }
            // A shell that sourced an eucarc of an older cloud has S3_URL but no
            // EUCA_CLC_URL (accounts and keys moved from Walrus to the cloud controller).
            if matches!(service, Service::Clc) && env_var("S3_URL").is_some() {
                bail!(
                    "no cloud controller to talk to: EUCA_CLC_URL not set; accounts and keys are \
                     managed by the cloud controller, whose URL the running cloud writes into its \
                     credentials/eucarc (source it again, or give --data DIR)"
                )
            }
            bail!(
                "no cloud to talk to: {missing} not set (source the cloud's credentials/eucarc \
                 or give --data DIR)"
            )
        }
    }
}

async fn call(t: &Target, method: &str, path: &str) -> Result<serde_json::Value> {
    call_service(t, Service::Clc, method, path).await
}

async fn call_service(
    t: &Target,
    service: Service,
    method: &str,
    path: &str,
) -> Result<serde_json::Value> {
    let ep = endpoint(t, service)?;
    let client = SignedClient::new(
        &ep.url,
        &ep.access_key,
        &ep.secret_key,
        &ep.region,
        service.signing_name(),
    )
    .with_context(|| format!("{} ({})", service.url_var(), ep.url))?;
    let method: http::Method = method.parse().context("HTTP method")?;
    Ok(client.json(method, path).await?)
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

#[derive(Subcommand)]
pub enum VolumeCmd {
    /// Create a volume (empty, or from a snapshot); prints its id.
    Create {
        /// Size in GiB (default with --snapshot: the snapshot's size).
        #[arg(long)]
        size_gib: Option<u64>,
        /// Snapshot to create the volume from.
        #[arg(long)]
        snapshot: Option<String>,
    },
    List,
    /// Print a volume's record as JSON.
    Describe {
        volume: String,
    },
    Delete {
        volume: String,
    },
    /// Export a volume to a node; prints the NBD URI that node opens.
    Attach {
        volume: String,
        /// The node's IP address (only it may open the export).
        #[arg(long)]
        node: String,
        /// The block protocol: `nbd` or `iscsi` (a target with its own CHAP
        /// secret; the URI printed carries it).
        #[arg(long, default_value = "nbd", value_parser = ["nbd", "iscsi"])]
        protocol: String,
    },
    Detach {
        volume: String,
    },
}

#[derive(Subcommand)]
pub enum SnapshotCmd {
    /// Snapshot a volume; prints the snapshot id (the upload goes on in the
    /// background unless --wait).
    Create {
        volume: String,
        /// Wait for the upload to finish, showing progress on a terminal.
        #[arg(long)]
        wait: bool,
    },
    List,
    /// Print a snapshot's record (with upload progress) as JSON.
    Describe {
        snapshot: String,
    },
    Delete {
        snapshot: String,
    },
}

fn enc(s: &str) -> String {
    euca_aws::encoding::uri_encode(s.as_bytes(), false)
}

pub async fn volume(t: &Target, cmd: VolumeCmd) -> Result<()> {
    let sc = |m: &'static str, p: String| async move { call_service(t, Service::Sc, m, &p).await };
    match cmd {
        VolumeCmd::Create { size_gib, snapshot } => {
            let mut q = Vec::new();
            if let Some(g) = size_gib {
                q.push(format!("size_gib={g}"));
            }
            if let Some(s) = snapshot {
                q.push(format!("snapshot_id={}", enc(&s)));
            }
            let v = sc("POST", format!("/volumes?{}", q.join("&"))).await?;
            println!("{}", s(&v, "id"));
        }
        VolumeCmd::List => {
            let v = sc("GET", "/volumes".into()).await?;
            println!(
                "{:<14} {:>8} {:<10} {:<16} SNAPSHOT",
                "VOLUME", "GIB", "STATE", "NODE"
            );
            for x in v.as_array().into_iter().flatten() {
                let size = x["size"].as_u64().unwrap_or(0) as f64 / (1u64 << 30) as f64;
                println!(
                    "{:<14} {:>8} {:<10} {:<16} {}",
                    s(x, "id"),
                    format!("{size:.2}"),
                    s(x, "state"),
                    x["attachment"]["node"].as_str().unwrap_or("-"),
                    x["snapshot_id"].as_str().unwrap_or("-")
                );
            }
        }
        VolumeCmd::Describe { volume } => {
            let v = sc("GET", format!("/volumes/{}", enc(&volume))).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        VolumeCmd::Delete { volume } => {
            sc("DELETE", format!("/volumes/{}", enc(&volume))).await?;
            println!("deleted {volume}");
        }
        VolumeCmd::Attach {
            volume,
            node,
            protocol,
        } => {
            let v = sc(
                "POST",
                format!(
                    "/volumes/{}/attach?node={}&protocol={}",
                    enc(&volume),
                    enc(&node),
                    enc(&protocol)
                ),
            )
            .await?;
            println!("{}", s(&v, "uri"));
        }
        VolumeCmd::Detach { volume } => {
            sc("POST", format!("/volumes/{}/detach", enc(&volume))).await?;
            println!("detached {volume}");
        }
    }
    Ok(())
}

pub async fn snapshot(t: &Target, cmd: SnapshotCmd) -> Result<()> {
    let sc = |m: &'static str, p: String| async move { call_service(t, Service::Sc, m, &p).await };
    match cmd {
        SnapshotCmd::Create { volume, wait } => {
            let v = sc("POST", format!("/volumes/{}/snapshots", enc(&volume))).await?;
            let id = s(&v, "id");
            if wait {
                let total = v["size"].as_u64().unwrap_or(0);
                let progress = crate::progress::Progress::start("snapshot", total);
                let counter = progress.counter();
                loop {
                    let d = sc("GET", format!("/snapshots/{id}")).await?;
                    let p = &d["progress"];
                    let (done, all) = (
                        p["chunks_done"].as_u64().unwrap_or(0),
                        p["chunks_total"].as_u64().unwrap_or(0).max(1),
                    );
                    counter.store(
                        total.saturating_mul(done) / all,
                        std::sync::atomic::Ordering::Relaxed,
                    );
                    match d["state"].as_str() {
                        Some("pending") => {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await
                        }
                        Some("completed") => break,
                        _ => {
                            drop(progress);
                            bail!("snapshot {id} failed: {}", s(&d, "error"));
                        }
                    }
                }
                progress.finish();
            }
            println!("{id}");
        }
        SnapshotCmd::List => {
            let v = sc("GET", "/snapshots".into()).await?;
            println!(
                "{:<15} {:<14} {:<10} {:>12} {:>14}",
                "SNAPSHOT", "VOLUME", "STATE", "CHUNKS", "UPLOADED"
            );
            for x in v.as_array().into_iter().flatten() {
                let p = &x["progress"];
                println!(
                    "{:<15} {:<14} {:<10} {:>12} {:>14}",
                    s(x, "id"),
                    s(x, "volume_id"),
                    s(x, "state"),
                    format!("{}/{}", p["chunks_done"], p["chunks_total"]),
                    p["bytes_uploaded"]
                );
            }
        }
        SnapshotCmd::Describe { snapshot } => {
            let v = sc("GET", format!("/snapshots/{}", enc(&snapshot))).await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        SnapshotCmd::Delete { snapshot } => {
            sc("DELETE", format!("/snapshots/{}", enc(&snapshot))).await?;
            println!("deleted {snapshot}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn endpoint_from_eucarc_variables() {
        let env = vars(&[
            ("EUCA_CLC_URL", "http://127.0.0.1:8777/"),
            ("EUCA_SC_URL", "http://127.0.0.1:8775/"),
            ("AWS_ACCESS_KEY_ID", "AKA"),
            ("AWS_SECRET_ACCESS_KEY", "SKA"),
            ("EC2_ACCESS_KEY", "AKE"),
            ("EC2_SECRET_KEY", "SKE"),
            ("AWS_DEFAULT_REGION", "eu-1"),
        ]);
        let sc = endpoint_from(Service::Sc, &env).unwrap();
        assert_eq!(
            sc,
            Endpoint {
                url: "http://127.0.0.1:8775/".into(),
                access_key: "AKA".into(),
                secret_key: "SKA".into(),
                region: "eu-1".into(),
            }
        );
        assert_eq!(
            endpoint_from(Service::Clc, &env).unwrap().url,
            "http://127.0.0.1:8777/"
        );
    }

    #[test]
    fn endpoint_takes_the_euca2ools_key_names_as_a_pair() {
        // An AWS_ access key without its secret does not mix with the EC2_ pair.
        let env = vars(&[
            ("EUCA_CLC_URL", "http://h/"),
            ("AWS_ACCESS_KEY_ID", "AKA"),
            ("EC2_ACCESS_KEY", "AKE"),
            ("EC2_SECRET_KEY", "SKE"),
        ]);
        let e = endpoint_from(Service::Clc, &env).unwrap();
        assert_eq!(
            (e.access_key.as_str(), e.secret_key.as_str()),
            ("AKE", "SKE")
        );
        assert_eq!(e.region, "us-east-1");
    }

    #[test]
    fn endpoint_names_what_is_missing() {
        let env = vars(&[("EUCA_CLC_URL", "http://h/")]);
        let missing = endpoint_from(Service::Sc, &env).unwrap_err();
        assert!(missing.contains("EUCA_SC_URL"), "{missing}");
        assert!(missing.contains("AWS_ACCESS_KEY_ID"), "{missing}");
        assert_eq!(
            endpoint_from(Service::Clc, &env).unwrap_err(),
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        );
    }
}
