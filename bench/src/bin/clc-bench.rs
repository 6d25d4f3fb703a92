//! Load generator for the cloud controller's EC2 Query API (scripts/bench-clc.sh).
//!
//! - `fill`: writes N volume records of one account straight into a stopped cloud
//!   controller's store (`<data>/clc/clc.redb`), the way the API stores them.
//! - `scan`: times the store's part of a Describe page (scan + decode of `--page`
//!   records) over every page of the filled account, in process.
//! - `http`: signs (SigV4, service `ec2`) and sends EC2 Query calls from
//!   `--concurrency` tasks for `--seconds`: `--action` with `MaxResults=--page`,
//!   walking `NextToken` to the end and starting over (a Describe), or the action
//!   alone (`DescribeAvailabilityZones`). Reports calls/s and p50/p99 per call.
use anyhow::{bail, Context, Result};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use euca_clc::model::{Volume, VolumeState};
use euca_clc::store::{Db, Record, RedbStore};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Fill {
        /// The cloud's data directory (the store is `<data>/clc/clc.redb`).
        #[arg(long)]
        data: PathBuf,
        /// The owning account's id.
        #[arg(long)]
        account: String,
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    Scan {
        #[arg(long)]
        data: PathBuf,
        #[arg(long)]
        account: String,
        #[arg(long, default_value_t = 100)]
        page: usize,
        /// Walks over every page this many times.
        #[arg(long, default_value_t = 20)]
        rounds: usize,
    },
    Http(HttpArgs),
}

#[derive(clap::Args)]
struct HttpArgs {
    /// The EC2 endpoint (`http://host:port/`).
    #[arg(long)]
    url: String,
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY")]
    secret_key: String,
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "DescribeVolumes")]
    action: String,
    /// MaxResults per call (0: none, a single call per round).
    #[arg(long, default_value_t = 100)]
    page: usize,
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A label for the report lines.
    #[arg(long, default_value = "euca")]
    label: String,
}

fn open(data: &std::path::Path) -> Result<Db> {
    let path = data.join("clc/clc.redb");
    let store = RedbStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    Ok(Db::new(Arc::new(store)))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

fn report(label: &str, what: &str, lat: &mut [Duration], calls_per_s: Option<f64>) {
    lat.sort();
    print!(
        "{label}\t{what}\tcalls={}\tp50_ms={:.2}\tp99_ms={:.2}",
        lat.len(),
        percentile(lat, 0.50),
        percentile(lat, 0.99)
    );
    if let Some(c) = calls_per_s {
        print!("\tcalls_per_s={c:.0}");
    }
    println!();
}

fn fill(data: &std::path::Path, account: &str, count: usize) -> Result<()> {
    let path = data.join("clc/clc.redb");
    let store = RedbStore::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let created =
        time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339)?;
    let mut made = 0;
    while made < count {
        let batch: Vec<(String, Vec<u8>)> = (made..count)
            .map(|_| {
                let v = Volume {
                    id: euca_clc::ids::new_id("vol"),
                    size_gib: 1,
                    snapshot_id: None,
                    zone: "bench".into(),
                    state: VolumeState::Available,
                    created: created.clone(),
                    attachment: None,
                    tags: Default::default(),
                    client_token: None,
                };
                Ok((v.id.clone(), serde_json::to_vec(&v)?))
            })
            .collect::<Result<_>>()?;
        // Ids drawn twice are skipped; the loop draws again for them.
        made += store.bulk_insert(<Volume as Record>::KIND, account, &batch)?;
    }
    println!("filled {made} volumes of {account}");
    Ok(())
}

fn scan(data: &std::path::Path, account: &str, page: usize, rounds: usize) -> Result<()> {
    let db = open(data)?;
    let mut lat = Vec::new();
    let mut records = 0;
    for _ in 0..rounds {
        let mut after: Option<String> = None;
        loop {
            let t = Instant::now();
            let batch = db.scan::<Volume>(Some(account), after.as_deref(), page)?;
            lat.push(t.elapsed());
            records += batch.len();
            match batch.last() {
                Some(v) if batch.len() == page => after = Some(v.record.id.clone()),
                _ => break,
            }
        }
    }
    println!("scanned {records} records in {} pages", lat.len());
    report("store", &format!("scan-page-{page}"), &mut lat, None);
    Ok(())
}

/// The text of `<tag>…</tag>`, if any.
fn element(body: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find("</")? + start;
    Some(body[start..end].to_string())
}

async fn http(a: &HttpArgs) -> Result<()> {
    let (page, concurrency, action) = (a.page, a.concurrency, a.action.as_str());
    let client = euca_service::client::SignedClient::new(
        &a.url,
        &a.access_key,
        &a.secret_key,
        &a.region,
        "ec2",
    )?
    .with_max_body(64 << 20);
    let deadline = Instant::now() + Duration::from_secs(a.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let client = client.clone();
        let action = action.to_string();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut token: Option<String> = None;
            while Instant::now() < deadline {
                let mut body = format!("Action={action}&Version=2016-11-15");
                if page > 0 {
                    body.push_str(&format!("&MaxResults={page}"));
                }
                if let Some(t) = &token {
                    body.push_str(&format!("&NextToken={t}"));
                }
                let t = Instant::now();
                let answer = client
                    .call(http::Method::POST, "/", Bytes::from(body))
                    .await
                    .with_context(|| action.clone())?;
                lat.push(t.elapsed());
                token = element(&String::from_utf8_lossy(&answer), "nextToken");
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    if all.is_empty() {
        bail!("no call completed");
    }
    let what = if page > 0 {
        format!("{action}-page-{page}-c{concurrency}")
    } else {
        format!("{action}-c{concurrency}")
    };
    report(&a.label, &what, &mut all, Some(rate));
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Fill {
            data,
            account,
            count,
        } => fill(&data, &account, count),
        Cmd::Scan {
            data,
            account,
            page,
            rounds,
        } => scan(&data, &account, page, rounds),
        Cmd::Http(a) => http(&a).await,
    }
}
