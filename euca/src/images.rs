//! Image bundle commands, with the options euca2ools users have in their scripts.
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;

/// `euca unbundle` / `euca-unbundle`: verify a bundle and restore its image.
#[derive(Args)]
pub struct UnbundleArgs {
    /// The bundle's manifest (`<prefix>.manifest.xml`).
    #[arg(short = 'm', long)]
    manifest: PathBuf,
    /// Directory holding the parts (default: the manifest's directory).
    #[arg(short = 's', long)]
    source: Option<PathBuf>,
    /// Directory to write the image to.
    #[arg(short = 'd', long, default_value = ".")]
    destination: PathBuf,
    /// Private key that opens the bundle: the user's or the cloud's.
    #[arg(short = 'k', long = "privatekey", env = "EC2_PRIVATE_KEY")]
    private_key: PathBuf,
    /// Certificate of the user who signed the manifest.
    #[arg(short = 'c', long = "cert", env = "EC2_CERT")]
    cert: PathBuf,
}

pub fn unbundle(a: UnbundleArgs) -> Result<()> {
    let manifest = euca_image::Manifest::from_file(&a.manifest)?;
    let name = manifest.image.name.clone();
    if name.is_empty() || name.contains('/') || name.contains('\\') || name == "." || name == ".." {
        bail!("refusing image name {name:?} from the manifest");
    }
    let source = match a.source {
        Some(s) => s,
        None => a.manifest.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".")),
    };
    let key = euca_image::PrivateKey::from_pem_file(&a.private_key)?;
    let cert = euca_image::SignerCert::from_pem_file(&a.cert)?;
    std::fs::create_dir_all(&a.destination).with_context(|| format!("creating {}", a.destination.display()))?;
    let out = a.destination.join(&name);
    let done = euca_image::unbundle(&manifest, &source, &key, &cert, &out)?;
    println!("{}  {} bytes  (SHA-1 of the tar stream {})", done.path.display(), done.size, done.tar_sha1);
    Ok(())
}
