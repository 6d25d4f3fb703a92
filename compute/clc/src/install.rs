//! Installing registered bundle images in the background.
//!
//! RegisterImage with an `ImageLocation` first reads the bundle's manifest from
//! Walrus *with the caller's own key* (so nobody registers a bundle they cannot
//! read), then returns the image id in state `pending` while the central install
//! (`euca_imagecache::install`: verify the manifest's signature with the
//! registering account's certificate, decrypt with the cloud's key, store the
//! image as pieces) runs as the system account. At most [`MAX_INSTALLS`] installs
//! run at once; the others wait their turn, still `pending`.
//!
//! The signer's certificate is `<data>/credentials/<account name>-cert.pem` (today
//! `euca up` makes one for the admin only); without one the image fails with a
//! `stateReason` saying so. An install interrupted by a restart is not resumed:
//! [`crate::Clc::fail_interrupted_installs`] marks it `failed` (register again) on
//! start-up; with records several cloud controllers share, an install whose CLC
//! died is failed by another once its lease ([`lease_name`], held under the
//! running CLC's name) lapses ([`crate::Clc::fail_abandoned_installs`]).
use crate::error::Ec2Error;
use crate::model::{Image, ImageState};
use crate::store::{Db, Write};
use euca_aws::{CredentialLookup, Principal};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Installs running at once.
pub const MAX_INSTALLS: usize = 2;

/// How long an install's lease outlives its last renewal (records shared by
/// several cloud controllers; renewed every third of it).
pub const LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

/// The lease a running install of image `image_id` holds.
pub fn lease_name(image_id: &str) -> String {
    format!("install:{image_id}")
}

/// Takes image `image_id`'s install lease for `holder`: before its `pending`
/// record is written, so no other cloud controller ever sees that record
/// without a live holder.
pub fn claim(db: &Db, holder: &str, image_id: &str) -> Result<(), Ec2Error> {
    if db.store().lease(&lease_name(image_id), holder, LEASE_TTL)? {
        Ok(())
    } else {
        Err(Ec2Error::internal(format!(
            "the install lease of {image_id} is held elsewhere"
        )))
    }
}

/// What the cloud's install needs besides its key files: Walrus and the system
/// account's key (the binary reads them from `<data>/cloud/system.json`).
#[derive(Debug, Clone)]
pub struct InstallEnv {
    pub s3_url: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// Granted READ on installed objects (the nodes' cache daemons).
    pub nodes_canonical_id: String,
    pub system_canonical_id: String,
}

/// Loads the [`InstallEnv`] when an install needs it (the file may be written
/// after the CLC starts).
pub type EnvLoader = Arc<dyn Fn() -> Result<InstallEnv, String> + Send + Sync>;

/// The `stateReason` of a failed image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

/// Runs installs for the CLC.
pub struct Installer {
    /// The cloud's data directory (`cloud/cloud-pk.pem`, `credentials/`).
    data: PathBuf,
    env: EnvLoader,
    lookup: Arc<dyn CredentialLookup>,
    slots: Arc<Semaphore>,
}

/// What the manifest says about the image.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    pub image_type: crate::model::ImageType,
    pub architecture: Option<String>,
    /// `kernel_id` / `ramdisk_id` naming an image (`eki-…` / `eri-…`).
    pub kernel_id: Option<String>,
    pub ramdisk_id: Option<String>,
}

fn invalid_manifest(msg: impl Into<String>) -> Ec2Error {
    Ec2Error::Parameter {
        code: "InvalidManifest",
        message: msg.into(),
    }
}

/// The image type a bundle manifest declares: `<type>`, or `kernel_id` /
/// `ramdisk_id` of `true`/`yes` (older bundlers).
pub fn bundle_info(m: &euca_image::Manifest) -> BundleInfo {
    use crate::model::ImageType;
    let flag = |v: &Option<String>| {
        v.as_deref()
            .is_some_and(|s| s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("yes"))
    };
    let image_type = match m.image.image_type.as_deref() {
        Some("kernel") => ImageType::Kernel,
        Some("ramdisk") => ImageType::Ramdisk,
        _ if flag(&m.machine_configuration.kernel_id) => ImageType::Kernel,
        _ if flag(&m.machine_configuration.ramdisk_id) => ImageType::Ramdisk,
        _ => ImageType::Machine,
    };
    BundleInfo {
        image_type,
        architecture: m.machine_configuration.architecture.clone(),
        kernel_id: m
            .machine_configuration
            .kernel_id
            .clone()
            .filter(|k| k.starts_with("eki-")),
        ramdisk_id: m
            .machine_configuration
            .ramdisk_id
            .clone()
            .filter(|r| r.starts_with("eri-")),
    }
}

impl Installer {
    pub fn new(data: PathBuf, env: EnvLoader, lookup: Arc<dyn CredentialLookup>) -> Installer {
        Installer {
            data,
            env,
            lookup,
            slots: Arc::new(Semaphore::new(MAX_INSTALLS)),
        }
    }

    fn env(&self) -> Result<InstallEnv, Ec2Error> {
        (self.env)().map_err(|e| Ec2Error::Unavailable(format!("images cannot be installed: {e}")))
    }

    /// Reads and parses the manifest at `bucket/key` with `caller`'s own key: a
    /// bundle the caller may not read is refused (`InvalidManifest`).
    pub async fn read_manifest_as(
        &self,
        caller: &Principal,
        bucket: &str,
        key: &str,
    ) -> Result<BundleInfo, Ec2Error> {
        let env = self.env()?;
        let cred = self
            .lookup
            .lookup(&caller.access_key)
            .await
            .map_err(|e| Ec2Error::Unavailable(e.to_string()))?
            .ok_or_else(|| Ec2Error::AuthFailure("the caller's key is no longer active".into()))?;
        let s3 = euca_s3::S3Client::new(&env.s3_url, &caller.access_key, &cred.secret, &env.region)
            .map_err(|e| Ec2Error::Unavailable(format!("Walrus: {e}")))?;
        let raw = match s3
            .get_bytes(bucket, key, euca_image::MAX_MANIFEST_BYTES as usize)
            .await
        {
            Ok(b) => b,
            Err(euca_s3::S3ClientError::Status { status, code, .. })
                if (400..500).contains(&status) =>
            {
                return Err(invalid_manifest(format!(
                    "The manifest {bucket}/{key} cannot be read ({code}): it does not exist or you may not read it"
                )))
            }
            Err(e) => return Err(Ec2Error::Unavailable(format!("Walrus: {e}"))),
        };
        let m = euca_image::Manifest::from_bytes(&raw).map_err(|e| {
            invalid_manifest(format!("The manifest {bucket}/{key} is not valid: {e}"))
        })?;
        Ok(bundle_info(&m))
    }

    /// Starts installing image `image_id` (registered by account `account_name`)
    /// from `bucket/key`; the record becomes `available` or `failed`.
    /// `holder` has the install's lease ([`claim`]): it is renewed while the
    /// install waits and runs, and given up once the outcome is recorded.
    pub fn spawn(
        self: &Arc<Self>,
        db: Db,
        holder: String,
        image_id: String,
        account_name: String,
        bucket: String,
        key: String,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let work = async {
                match me.slots.clone().acquire_owned().await {
                    Ok(_permit) => {
                        me.install(account_name.clone(), bucket.clone(), key.clone())
                            .await
                    }
                    Err(_) => Err(Failure {
                        code: "Server.InternalError",
                        message: "the installer stopped".into(),
                    }),
                }
            };
            let outcome = tokio::select! {
                outcome = work => outcome,
                never = renew(&db, &holder, &image_id) => match never {},
            };
            let (id, holder) = (image_id.clone(), holder.clone());
            let recorded = crate::offload::on_db(&db, move |db| {
                finish(db, &id, outcome)?;
                db.store().release_lease(&lease_name(&id), &holder)
            })
            .await;
            if let Err(e) = recorded {
                tracing::error!(image = %image_id, error = %e, "recording the install's outcome");
            }
        });
    }

    async fn install(
        &self,
        account_name: String,
        bucket: String,
        key: String,
    ) -> Result<String, Failure> {
        let server = |m: String| Failure {
            code: "Server.InternalError",
            message: m,
        };
        let env = self.env().map_err(|e| server(e.to_string()))?;
        let cert_path = self
            .data
            .join("credentials")
            .join(format!("{account_name}-cert.pem"));
        if !cert_path.is_file() {
            return Err(Failure {
                code: "Client.InvalidManifest",
                message: format!(
                    "no certificate is known for account {account_name}: its bundle's signature cannot be verified"
                ),
            });
        }
        let signer = euca_image::SignerCert::from_pem_file(&cert_path)
            .map_err(|e| server(format!("the certificate of {account_name}: {e}")))?;
        let private_key =
            euca_image::PrivateKey::from_pem_file(&self.data.join("cloud/cloud-pk.pem"))
                .map_err(|e| server(format!("the cloud's key: {e}")))?;
        let s3 = euca_s3::S3Client::new(&env.s3_url, &env.access_key, &env.secret_key, &env.region)
            .map_err(|e| server(format!("Walrus: {e}")))?;
        let req = euca_imagecache::install::InstallRequest {
            bucket: bucket.clone(),
            manifest_key: key.clone(),
            private_key: Arc::new(private_key),
            signer: Arc::new(signer),
            grant_read: Some(env.nodes_canonical_id),
            owner_id: Some(env.system_canonical_id),
        };
        let s3 = Arc::new(s3);
        // The install's future is not `Send` as the compiler sees it (higher-ranked
        // lifetimes in its part-download stream), so it cannot be spawned: it runs
        // on a blocking thread (at most MAX_INSTALLS of them) driven by the runtime.
        let rt = tokio::runtime::Handle::current();
        let outcome = tokio::task::spawn_blocking(move || {
            rt.block_on(euca_imagecache::install::install(&s3, &req, None))
        })
        .await
        .map_err(|e| server(format!("the install stopped: {e}")))?;
        match outcome {
            Ok(done) => Ok(done.id.to_string()),
            Err(e) => {
                tracing::warn!(%bucket, %key, error = %e, "image install failed");
                Err(classify(&e))
            }
        }
    }
}

/// Renews the install lease of `image_id` every third of [`LEASE_TTL`], for
/// as long as it is polled (a failed renewal is logged and retried).
async fn renew(db: &Db, holder: &str, image_id: &str) -> std::convert::Infallible {
    if !db.store().shared() {
        // Records of its own: the lease is always this process's.
        return std::future::pending().await;
    }
    let name = lease_name(image_id);
    loop {
        tokio::time::sleep(LEASE_TTL / 3).await;
        let (store, name, holder) = (db.store().clone(), name.clone(), holder.to_string());
        match crate::offload::blocking(move || store.lease(&name, &holder, LEASE_TTL)).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(image = %image_id, "another cloud controller took this install's lease (this one was too slow to renew it)")
            }
            Err(e) => tracing::warn!(image = %image_id, error = %e, "renewing the install's lease"),
        }
    }
}

/// Bundle problems are the client's; Walrus or disk trouble is the server's.
/// How a failed install is reported in the image's `stateReason`.
///
/// Everything that follows unwrapping the bundle's AES key with the cloud's
/// private key (the unwrap itself, AES padding, gzip, tar, the image's digest and
/// size) is reported with one message: the user chose the wrapped key, so telling
/// those failures apart would make RegisterImage a padding oracle against the
/// cloud's RSA key (see `euca_image::ImageError::WrongKey`). Part errors are
/// checked against the signed manifest whatever the key, and stay precise.
fn classify(e: &euca_imagecache::CacheError) -> Failure {
    use euca_image::ImageError as I;
    use euca_imagecache::CacheError as C;
    match e {
        C::Bundle(
            I::WrongKey
            | I::Decrypt
            | I::Decompress(_)
            | I::Tar(_)
            | I::ImageDigestMismatch { .. }
            | I::ImageSizeMismatch { .. }
            | I::Crypto(_),
        ) => Failure {
            code: "Client.InvalidManifest",
            message: "the bundle does not decrypt and verify with the cloud's key (wrong \
                      ec2_encrypted_key, or corrupt contents)"
                .into(),
        },
        C::Bundle(I::Sink(_)) => Failure {
            code: "Server.InternalError",
            message: e.to_string(),
        },
        C::Bundle(_) | C::InvalidManifest(_) => Failure {
            code: "Client.InvalidManifest",
            message: e.to_string(),
        },
        _ => Failure {
            code: "Server.InternalError",
            message: e.to_string(),
        },
    }
}

/// Records an install's outcome on a `pending` image (one deregistered meanwhile
/// stays gone).
pub fn finish(db: &Db, image_id: &str, outcome: Result<String, Failure>) -> Result<(), Ec2Error> {
    db.update::<Image, ()>(image_id, |cur| {
        let Some(o) = cur else {
            return Ok((Write::Keep, ()));
        };
        if o.record.state != ImageState::Pending {
            return Ok((Write::Keep, ()));
        }
        match &outcome {
            Ok(installed) => {
                o.record.state = ImageState::Available;
                o.record.installed_id = Some(installed.clone());
            }
            Err(f) => {
                o.record.state = ImageState::Failed;
                o.record.state_reason_code = Some(f.code.to_string());
                o.record.state_reason = Some(f.message.clone());
            }
        }
        Ok((Write::Put, ()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use euca_image::ImageError as I;
    use euca_imagecache::CacheError as C;

    #[test]
    fn failures_after_the_key_unwrap_read_alike() {
        let after_unwrap = [
            I::WrongKey,
            I::Decrypt,
            I::Decompress("invalid block type".into()),
            I::Tar("no member".into()),
            I::ImageDigestMismatch {
                expected: "a".into(),
                actual: "b".into(),
            },
            I::ImageSizeMismatch {
                expected: 1,
                actual: 2,
            },
        ];
        let seen: Vec<Failure> = after_unwrap
            .into_iter()
            .map(|e| classify(&C::Bundle(e)))
            .collect();
        assert!(seen.iter().all(|f| *f == seen[0]), "{seen:?}");
        assert_eq!(seen[0].code, "Client.InvalidManifest");
        // Part errors do not depend on the key and stay precise.
        let part = classify(&C::Bundle(I::PartDigestMismatch {
            index: 2,
            filename: "x.part.2".into(),
            expected: "a".into(),
            actual: "b".into(),
        }));
        assert!(part.message.contains("part 2"), "{part:?}");
        assert_ne!(part, seen[0]);
    }
}
