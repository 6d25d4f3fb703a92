//! `euca migrate`: moves a single-node cloud's Walrus (buckets, objects, versions,
//! uploads in progress, the SSE-S3 master key), its accounts and keys, its cloud
//! controller's EC2 records and its storage controller's volume and snapshot records
//! onto PostgreSQL and a shared blob store, checking every blob and every table on
//! the way (`walrus::migrate` says how). The cloud must be stopped first. The
//! volumes' bytes stay where they are: they are the storage controller's disks.
use anyhow::{Context, Result};
use clap::Args;
use euca_identity::IdentityStore;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args)]
pub struct MigrateArgs {
    /// The single-node cloud's data directory (`euca up --data DIR`), or a Walrus
    /// data directory (`euca walrus --data DIR`: its `walrus/` under it). Stop it first.
    #[arg(long, value_name = "DATA_DIR")]
    from: PathBuf,
    /// The PostgreSQL database to move the metadata (and accounts) into, which then
    /// becomes `[walrus] meta_url`: `postgres://user[:password]@host[:port]/dbname`.
    /// It must hold no Walrus rows yet.
    #[arg(long, value_name = "URL")]
    to_meta: String,
    /// The blob store to copy the object bytes into, which then becomes
    /// `[walrus] blob_url`: `s3://bucket/prefix?endpoint=…` or `file:///dir`.
    #[arg(long, value_name = "URL")]
    to_blobs: String,
    /// Blobs copied at once.
    #[arg(long, default_value_t = 4)]
    parallel: usize,
    /// The storage controller's name in the database (`[sc] name`), under which its
    /// volume and snapshot records are kept.
    #[arg(long, value_name = "NAME", default_value = "sc")]
    sc_name: String,
}

pub async fn migrate(a: MigrateArgs) -> Result<()> {
    let t0 = Instant::now();
    // `euca up --data D` keeps D/walrus/meta.redb and D/identity.redb.
    let (walrus_dir, identity) = if a.from.join("walrus").join("meta.redb").is_file() {
        (a.from.join("walrus"), Some(a.from.join("identity.redb")))
    } else if a.from.join("meta.redb").is_file() {
        // `euca walrus --data D` keeps D/walrus too; a bare Walrus directory has no
        // accounts of its own beside it.
        (a.from.clone(), None)
    } else {
        anyhow::bail!(
            "{} holds no Walrus metadata (walrus/meta.redb or meta.redb): name the data directory of `euca up --data`",
            a.from.display()
        );
    };
    // Accounts first: a target holding other accounts under the same names is
    // refused before any byte is copied.
    let mut accounts = (0, 0);
    if let Some(path) = identity.filter(|p| p.is_file()) {
        let to = a.to_meta.clone();
        accounts = tokio::task::spawn_blocking(move || -> Result<(usize, usize)> {
            let src = IdentityStore::open(&path).with_context(|| {
                format!(
                    "opening {} (is the cloud still running? stop it first)",
                    path.display()
                )
            })?;
            let dst = IdentityStore::open_postgres(&to).context("opening the target database")?;
            let (mut n, mut k) = (0, 0);
            for acct in src.accounts()? {
                let keys = src.keys(&acct.name)?;
                dst.import(&acct, &keys)
                    .with_context(|| format!("copying account {}", acct.name))?;
                n += 1;
                k += keys.len();
            }
            Ok((n, k))
        })
        .await??;
        eprintln!(
            "euca migrate: {} accounts, {} access keys",
            accounts.0, accounts.1
        );
    }
    // The cloud controller's EC2 records (`euca up --data D` keeps D/clc/clc.redb),
    // into the same database: `[clc] meta_url`.
    let mut records = 0;
    let clc_path = a.from.join("clc").join("clc.redb");
    if clc_path.is_file() {
        let to = a.to_meta.clone();
        records = tokio::task::spawn_blocking(move || -> Result<usize> {
            let src = euca_clc::store::RedbStore::open(&clc_path).with_context(|| {
                format!(
                    "opening {} (is the cloud still running? stop it first)",
                    clc_path.display()
                )
            })?;
            let dst = euca_clc::store_pg::PgRecordStore::open(&to, 2)
                .context("opening the target database for the EC2 records")?;
            let counts = euca_clc::store::copy_records(&src, &dst)
                .context("copying the cloud controller's records")?;
            Ok(counts.iter().map(|(_, n)| n).sum())
        })
        .await??;
        eprintln!("euca migrate: {records} EC2 records (each read back and compared)");
    }
    // The storage controller's volume and snapshot records (D/sc/sc.redb), under
    // its name: `[sc] meta_url` and `name`. The volumes' bytes stay in D/sc.
    let mut sc_records = None;
    let sc_path = a.from.join("sc").join("sc.redb");
    if sc_path.is_file() {
        let (to, name) = (a.to_meta.clone(), a.sc_name.clone());
        let counts = tokio::task::spawn_blocking(move || -> Result<(usize, usize)> {
            let src = euca_sc::state::StateStore::open(&sc_path).with_context(|| {
                format!(
                    "opening {} (is the cloud still running? stop it first)",
                    sc_path.display()
                )
            })?;
            let holder = format!("euca migrate:{}", std::process::id());
            let dst = euca_sc::state::StateStore::open_postgres(&to, &name, &holder)
                .context("opening the target database for the volume records")?;
            let copied = src
                .copy_into(&dst)
                .context("copying the storage controller's records");
            dst.release()?;
            copied
        })
        .await??;
        eprintln!(
            "euca migrate: {} volume and {} snapshot records (read back and compared)",
            counts.0, counts.1
        );
        sc_records = Some(counts);
    }
    let m = walrus::migrate::Migration {
        from: walrus_dir,
        to_meta: a.to_meta.clone(),
        to_blobs: a.to_blobs.clone(),
        parallel: a.parallel,
    };
    let r = walrus::migrate::migrate(&m, &|line| eprintln!("euca migrate: {line}")).await?;
    // Everything is copied: the SC's local records step aside, so an SC started
    // on the database never takes them for records left behind.
    if sc_records.is_some() {
        let from = a.from.join("sc").join("sc.redb");
        let to = a.from.join("sc").join("sc.redb.migrated");
        std::fs::rename(&from, &to)
            .with_context(|| format!("renaming {} to {}", from.display(), to.display()))?;
    }
    let rows: usize = r.tables.iter().map(|(_, n)| n).sum();
    let objects = r
        .tables
        .iter()
        .find(|(t, _)| *t == "objects")
        .map_or(0, |(_, n)| *n);
    let buckets = r
        .tables
        .iter()
        .find(|(t, _)| *t == "buckets")
        .map_or(0, |(_, n)| *n);
    println!(
        "migrated {buckets} buckets, {objects} current objects ({rows} metadata rows), {} blobs ({} bytes, each read back and checked), {} accounts, {} keys{} in {:.1} s",
        r.blobs,
        r.blob_bytes,
        accounts.0,
        accounts.1,
        if r.sse_key { ", the SSE-S3 master key" } else { "" },
        t0.elapsed().as_secs_f64()
    );
    println!("point every front end at them ([walrus] section of its TOML):");
    println!("  meta_url = {:?}", a.to_meta);
    println!("  blob_url = {:?}", walrus::blob::redacted(&a.to_blobs));
    if records > 0 {
        println!(
            "and every cloud controller ([clc] section): meta_url = {:?} ({records} EC2 records moved)",
            a.to_meta
        );
    }
    if let Some((volumes, snapshots)) = sc_records {
        println!(
            "and the storage controller ([sc] section): meta_url = {:?}, name = {:?} ({volumes} volume and {snapshots} snapshot records moved, sc.redb renamed sc.redb.migrated; the volumes' bytes stay in {})",
            a.to_meta,
            a.sc_name,
            a.from.join("sc").display()
        );
    }
    Ok(())
}
