//! Image bundle commands, with the options euca2ools users have in their scripts.
use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crate::progress::Progress;

/// `euca unbundle` / `euca-unbundle`: verify a bundle and restore its image.
///
/// The command line of euca2ools 3.4.1's `euca-unbundle` (`-m`, `-k` or
/// `EC2_PRIVATE_KEY`, `-s`, `-d`, `--region`), plus `-c`/`EC2_CERT`: euca2ools
/// never checks the manifest's signature; we check it whenever a certificate
/// is given and otherwise say on stderr that it was not checked.
#[derive(Args)]
pub struct UnbundleArgs {
    /// The bundle's manifest file (`<prefix>.manifest.xml`).
    #[arg(short = 'm', long, value_name = "FILE")]
    manifest: PathBuf,
    /// Private key that opens the bundle: the user's or the cloud's.
    #[arg(
        short = 'k',
        long = "privatekey",
        env = "EC2_PRIVATE_KEY",
        value_name = "FILE"
    )]
    private_key: PathBuf,
    /// Where to write the image.
    #[arg(short = 'd', long, default_value = ".", value_name = "DIR")]
    destination: PathBuf,
    /// Directory holding the parts. Default: the current directory, as euca2ools,
    /// when every part named in the manifest is there; otherwise the manifest's
    /// directory.
    #[arg(short = 's', long, value_name = "DIR")]
    source: Option<PathBuf>,
    /// Signer's certificate: when given, the manifest's signature must verify with
    /// it; without one it is not checked (a warning says so), as with euca2ools.
    /// Part digests and the image digest are always checked.
    #[arg(short = 'c', long = "cert", env = "EC2_CERT", value_name = "FILE")]
    cert: Option<PathBuf>,
    /// Accepted for euca2ools compatibility (it selects keys from euca2ools'
    /// configuration files, which this tool does not read): give -k instead.
    #[arg(long = "region", value_name = "USER@REGION")]
    _region: Option<String>,
}

/// Where the parts are when `-s` is not given: `.` if every part is there (as
/// euca2ools), else the manifest's directory.
fn default_parts_dir(manifest_path: &Path, manifest: &euca_image::Manifest) -> PathBuf {
    let cwd = PathBuf::from(".");
    let all_here = manifest
        .image
        .parts
        .iter()
        .all(|p| cwd.join(&p.filename).is_file());
    match manifest_path.parent() {
        Some(d) if !all_here && !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => cwd,
    }
}

pub fn unbundle(a: UnbundleArgs) -> Result<()> {
    let manifest = euca_image::Manifest::from_file(&a.manifest)?;
    let name = manifest.image.name.clone();
    if name.is_empty() || name.contains('/') || name.contains('\\') || name == "." || name == ".." {
        bail!("refusing image name {name:?} from the manifest");
    }
    let source = match a.source {
        Some(s) => s,
        None => default_parts_dir(&a.manifest, &manifest),
    };
    let key = euca_image::PrivateKey::from_pem_file(&a.private_key)?;
    let cert = match &a.cert {
        Some(c) => Some(euca_image::SignerCert::from_pem_file(c)?),
        None => {
            eprintln!(
                "warning: the manifest's signature was not checked (no signer certificate: \
                 give -c or set EC2_CERT); part and image digests are checked"
            );
            None
        }
    };
    std::fs::create_dir_all(&a.destination)
        .with_context(|| format!("creating {}", a.destination.display()))?;
    let out = a.destination.join(&name);
    let progress = Progress::start("unbundling", manifest.image.bundled_size);
    let done = euca_image::unbundle_with_progress(
        &manifest,
        &source,
        &key,
        cert.as_ref(),
        &out,
        progress.counter(),
    );
    progress.finish();
    let done = done.map_err(|e| match (&e, &a.cert) {
        (euca_image::ImageError::BadSignature, Some(c)) => anyhow::anyhow!(
            "{e} {} (from -c or EC2_CERT): give -c with the certificate of the bundle's signer",
            c.display()
        ),
        _ => e.into(),
    })?;
    println!(
        "{}  {} bytes  (SHA-1 of the tar stream {})",
        done.path.display(),
        done.size,
        done.tar_sha1
    );
    Ok(())
}

/// Where to reach Walrus, from the eucarc environment or flags (euca2ools names).
#[derive(Args)]
pub struct S3Opts {
    /// S3 endpoint (Walrus), e.g. http://127.0.0.1:8773/.
    #[arg(short = 'U', long = "url", env = "S3_URL")]
    url: String,
    #[arg(short = 'I', long = "access-key-id", env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    #[arg(short = 'S', long = "secret-key", env = "AWS_SECRET_ACCESS_KEY")]
    secret_key: String,
    #[arg(long, env = "AWS_DEFAULT_REGION", default_value = "us-east-1")]
    region: String,
}

impl S3Opts {
    fn client(&self) -> Result<euca_s3::S3Client> {
        Ok(euca_s3::S3Client::new(
            &self.url,
            &self.access_key,
            &self.secret_key,
            &self.region,
        )?)
    }
}

/// `BUCKET` or `BUCKET/PREFIX` as euca2ools takes it in `-b`.
fn split_bucket(b: &str) -> (String, String) {
    match b.trim_matches('/').split_once('/') {
        Some((bucket, prefix)) => (bucket.to_string(), format!("{}/", prefix.trim_matches('/'))),
        None => (b.trim_matches('/').to_string(), String::new()),
    }
}

/// Parallel uploads of parts.
const PARALLEL: usize = 4;

#[derive(Args)]
pub struct UploadBundleArgs {
    /// Destination: BUCKET or BUCKET/PREFIX.
    #[arg(short = 'b', long)]
    bucket: String,
    /// The bundle's local manifest.
    #[arg(short = 'm', long)]
    manifest: PathBuf,
    /// Directory holding the parts (default: the manifest's directory).
    #[arg(short = 'd', long)]
    directory: Option<PathBuf>,
    /// Canned ACL for the uploaded objects.
    #[arg(long, default_value = "aws-exec-read")]
    acl: String,
    /// Accepted for compatibility; buckets are created in the endpoint's region.
    #[arg(long)]
    location: Option<String>,
    #[command(flatten)]
    s3: S3Opts,
}

/// Runs `jobs`, `PARALLEL` at a time, until all have ended; the first error, if any.
async fn run_parallel<F>(jobs: impl Iterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let results: Vec<Result<()>> = futures::stream::iter(jobs)
        .buffer_unordered(PARALLEL)
        .collect()
        .await;
    results.into_iter().collect()
}

pub async fn upload_bundle(a: UploadBundleArgs) -> Result<()> {
    let manifest = euca_image::Manifest::from_file(&a.manifest)?;
    let dir = a.directory.clone().unwrap_or_else(|| {
        a.manifest
            .parent()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let manifest_name = a
        .manifest
        .file_name()
        .and_then(|n| n.to_str())
        .context("manifest path has no file name")?
        .to_string();
    let (bucket, prefix) = split_bucket(&a.bucket);
    let s3 = a.s3.client()?;
    s3.create_bucket(&bucket).await?;
    // Parts first, in parallel; the manifest last, so a visible manifest means a
    // complete bundle.
    let progress = Progress::start("uploading", manifest.image.bundled_size);
    let (counter, quiet) = (progress.counter(), progress.drawing());
    let uploads = manifest.image.parts.iter().map(|p| {
        let (s3, bucket, key, file, acl, counter) = (
            &s3,
            &bucket,
            format!("{prefix}{}", p.filename),
            dir.join(&p.filename),
            a.acl.as_str(),
            &counter,
        );
        async move {
            s3.put_file(bucket, &key, &file, Some(acl))
                .await
                .with_context(|| format!("uploading {}", file.display()))?;
            let len = tokio::fs::metadata(&file)
                .await
                .map(|m| m.len())
                .unwrap_or(0);
            counter.fetch_add(len, Ordering::Relaxed);
            if !quiet {
                println!("uploaded {bucket}/{key}");
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    let done = run_parallel(uploads).await;
    progress.finish();
    done?;
    let key = format!("{prefix}{manifest_name}");
    s3.put_file(&bucket, &key, &a.manifest, Some(&a.acl))
        .await?;
    println!("uploaded manifest {bucket}/{key}");
    Ok(())
}

#[derive(Args)]
pub struct DownloadBundleArgs {
    /// Source: BUCKET or BUCKET/PREFIX.
    #[arg(short = 'b', long)]
    bucket: String,
    /// The bundle's name prefix (the manifest is PREFIX.manifest.xml).
    #[arg(short = 'p', long, required_unless_present = "manifest")]
    prefix: Option<String>,
    /// The manifest's object name in the bucket, instead of --prefix.
    #[arg(short = 'm', long)]
    manifest: Option<String>,
    /// Directory to download into.
    #[arg(short = 'd', long = "directory", default_value = ".")]
    directory: PathBuf,
    #[command(flatten)]
    s3: S3Opts,
}

fn manifest_key(
    prefix: &str,
    bundle: Option<&str>,
    manifest: Option<&str>,
) -> Result<(String, String)> {
    let name = match (manifest, bundle) {
        (Some(m), _) => m.to_string(),
        (None, Some(p)) => format!("{p}.manifest.xml"),
        (None, None) => bail!("give --prefix or --manifest"),
    };
    if name.contains('/') || name.contains("..") {
        bail!("invalid manifest name {name:?}");
    }
    Ok((format!("{prefix}{name}"), name))
}

/// A bundle's manifest as stored in Walrus, fetched and parsed (parsing refuses part
/// names that could escape a directory, before anything is written).
struct RemoteBundle {
    s3: euca_s3::S3Client,
    bucket: String,
    /// Key prefix inside the bucket (`""` or `some/prefix/`).
    prefix: String,
    /// The manifest's key and file name.
    key: String,
    name: String,
    bytes: bytes::Bytes,
    manifest: euca_image::Manifest,
}

impl RemoteBundle {
    async fn fetch(
        opts: &S3Opts,
        bucket_arg: &str,
        bundle: Option<&str>,
        manifest: Option<&str>,
    ) -> Result<Self> {
        let (bucket, prefix) = split_bucket(bucket_arg);
        let (key, name) = manifest_key(&prefix, bundle, manifest)?;
        let s3 = opts.client()?;
        let bytes = s3
            .get_bytes(&bucket, &key, euca_image::MAX_MANIFEST_BYTES as usize)
            .await?;
        let manifest = euca_image::Manifest::from_bytes(&bytes)?;
        Ok(Self {
            s3,
            bucket,
            prefix,
            key,
            name,
            bytes,
            manifest,
        })
    }
}

pub async fn download_bundle(a: DownloadBundleArgs) -> Result<()> {
    let RemoteBundle {
        s3,
        bucket,
        prefix,
        name,
        bytes,
        manifest,
        ..
    } = RemoteBundle::fetch(&a.s3, &a.bucket, a.prefix.as_deref(), a.manifest.as_deref()).await?;
    tokio::fs::create_dir_all(&a.directory).await?;
    let progress = Progress::start("downloading", manifest.image.bundled_size);
    let (counter, quiet) = (progress.counter(), progress.drawing());
    let fetches = manifest.image.parts.iter().map(|p| {
        let (s3, bucket, key, file, counter) = (
            &s3,
            &bucket,
            format!("{prefix}{}", p.filename),
            a.directory.join(&p.filename),
            &counter,
        );
        async move {
            let n = s3
                .get_to_file(bucket, &key, &file)
                .await
                .with_context(|| format!("downloading {bucket}/{key}"))?;
            counter.fetch_add(n, Ordering::Relaxed);
            if !quiet {
                println!("downloaded {}", file.display());
            }
            Ok::<_, anyhow::Error>(())
        }
    });
    let done = run_parallel(fetches).await;
    progress.finish();
    done?;
    let out = a.directory.join(&name);
    tokio::fs::write(&out, &bytes).await?;
    println!("downloaded {}", out.display());
    Ok(())
}

#[derive(Args)]
pub struct DeleteBundleArgs {
    /// BUCKET or BUCKET/PREFIX.
    #[arg(short = 'b', long)]
    bucket: String,
    /// The bundle's name prefix.
    #[arg(short = 'p', long, required_unless_present = "manifest")]
    prefix: Option<String>,
    /// The manifest's object name in the bucket, instead of --prefix.
    #[arg(short = 'm', long)]
    manifest: Option<String>,
    #[command(flatten)]
    s3: S3Opts,
}

pub async fn delete_bundle(a: DeleteBundleArgs) -> Result<()> {
    let RemoteBundle {
        s3,
        bucket,
        prefix,
        key,
        manifest,
        ..
    } = RemoteBundle::fetch(&a.s3, &a.bucket, a.prefix.as_deref(), a.manifest.as_deref()).await?;
    for p in &manifest.image.parts {
        let k = format!("{prefix}{}", p.filename);
        match s3.delete(&bucket, &k).await {
            Ok(()) => println!("deleted {bucket}/{k}"),
            Err(e) if e.code() == Some("NoSuchKey") => {}
            Err(e) => return Err(e.into()),
        }
    }
    s3.delete(&bucket, &key).await?;
    println!("deleted {bucket}/{key}");
    Ok(())
}

/// `euca bundle-image` / `euca-bundle-image`, with euca2ools 3.x's options.
#[derive(Args)]
pub struct BundleImageArgs {
    /// The image file to bundle.
    #[arg(short = 'i', long)]
    image: PathBuf,
    /// Bundle name prefix (default: the image's file name).
    #[arg(short = 'p', long)]
    prefix: Option<String>,
    /// Where to write the parts and manifest (default: $TMPDIR or /var/tmp).
    #[arg(short = 'd', long)]
    destination: Option<PathBuf>,
    /// Architecture: i386, x86_64, armhf, ppc, ppc64, ppc64le.
    #[arg(short = 'r', long, default_value = "x86_64")]
    arch: String,
    /// The user's certificate.
    #[arg(short = 'c', long, env = "EC2_CERT")]
    cert: PathBuf,
    /// The user's private key (signs the manifest).
    #[arg(short = 'k', long = "privatekey", env = "EC2_PRIVATE_KEY")]
    private_key: PathBuf,
    /// The user's account id.
    #[arg(short = 'u', long, env = "EC2_USER_ID")]
    user: String,
    /// The cloud's certificate.
    #[arg(long = "ec2cert", env = "EUCALYPTUS_CERT")]
    ec2cert: PathBuf,
    /// Kernel id for a machine image, or `true` to bundle a kernel.
    #[arg(long)]
    kernel: Option<String>,
    /// Ramdisk id for a machine image, or `true` to bundle a ramdisk.
    #[arg(long)]
    ramdisk: Option<String>,
    /// Block-device mappings: VIRTUAL=DEVICE,… (e.g. ami=sda1,root=/dev/sda1).
    #[arg(short = 'B', long = "block-device-mappings")]
    block_device_mappings: Option<String>,
    /// Product codes: CODE,…
    #[arg(long = "productcodes")]
    product_codes: Option<String>,
    /// Part size in bytes (default 10 MiB, as euca2ools).
    #[arg(long = "part-size")]
    part_size: Option<u64>,
    /// machine, kernel or ramdisk.
    #[arg(long = "image-type")]
    image_type: Option<String>,
}

pub fn bundle_image(a: BundleImageArgs) -> Result<()> {
    use euca_image::{BlockDeviceMapping, ImageType};
    let user_cert = euca_image::Certificate::from_pem_file(&a.cert)?;
    let user_key = euca_image::PrivateKey::from_pem_file(&a.private_key)?;
    let cloud_cert = euca_image::Certificate::from_pem_file(&a.ec2cert)?;
    let destination = a.destination.unwrap_or_else(|| {
        std::env::var_os("TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/tmp"))
    });
    std::fs::create_dir_all(&destination)
        .with_context(|| format!("creating {}", destination.display()))?;
    let mut o = euca_image::BundleOptions::new(
        &a.image,
        &destination,
        &a.user,
        user_cert,
        user_key,
        cloud_cert,
    );
    o.prefix = a.prefix;
    o.arch = a.arch;
    let mut image_type = match a.image_type.as_deref() {
        None | Some("machine") => ImageType::Machine,
        Some("kernel") => ImageType::Kernel,
        Some("ramdisk") => ImageType::Ramdisk,
        Some(t) => bail!("--image-type must be machine, kernel or ramdisk, not {t:?}"),
    };
    match a.kernel.as_deref() {
        Some("true") => image_type = ImageType::Kernel,
        Some(k) => o.kernel_id = Some(k.to_string()),
        None => {}
    }
    match a.ramdisk.as_deref() {
        Some("true") => image_type = ImageType::Ramdisk,
        Some(r) => o.ramdisk_id = Some(r.to_string()),
        None => {}
    }
    o.image_type = image_type;
    if let Some(b) = a.block_device_mappings {
        for m in b.split(',').filter(|m| !m.trim().is_empty()) {
            let (v, d) = m
                .split_once('=')
                .with_context(|| format!("block-device mapping {m:?} is not VIRTUAL=DEVICE"))?;
            o.block_device_mappings.push(BlockDeviceMapping {
                virtual_name: v.trim().into(),
                device: d.trim().into(),
            });
        }
    }
    if let Some(p) = a.product_codes {
        o.product_codes = p
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
    }
    if let Some(s) = a.part_size {
        o.part_size = s;
    }
    let size = std::fs::metadata(&a.image)
        .with_context(|| format!("reading {}", a.image.display()))?
        .len();
    let progress = Progress::start("bundling", size);
    o.progress = Some(progress.counter());
    let done = euca_image::bundle_image(&o)?;
    progress.finish();
    for p in &done.part_paths {
        println!("Wrote {}", p.display());
    }
    println!("Generated manifest {}", done.manifest_path.display());
    Ok(())
}
