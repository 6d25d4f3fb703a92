//! Ready-to-use client setups for the admin account, written by `euca up`.
use anyhow::Result;
use euca_identity::AccessKey;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn write_private(path: &Path, content: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// The URLs of the services besides Walrus that the eucarc names, when known.
#[derive(Default, Clone, Copy)]
pub struct ServiceUrls<'a> {
    /// The storage controller (EUCA_SC_URL).
    pub sc: Option<&'a str>,
    /// The cloud controller's identity service (EUCA_CLC_URL).
    pub clc: Option<&'a str>,
    /// The EC2 API (EC2_URL, AWS_ENDPOINT_URL_EC2, the AWS config's `ec2`
    /// endpoint), when this cloud serves it (`euca up`, `euca clc`).
    pub ec2: Option<&'a str>,
}

pub fn write_all(
    dir: &Path,
    s3_url: &str,
    region: &str,
    key: &AccessKey,
    account_id: &str,
    bundling: &crate::pki::BundlingCreds,
    urls: ServiceUrls,
) -> Result<()> {
    let (sc_url, clc_url, ec2_url) = (urls.sc, urls.clc, urls.ec2);
    std::fs::create_dir_all(dir.join("aws"))?;
    let (ak, sk) = (&key.access_key_id, &key.secret_access_key);
    let hostport = s3_url.trim_start_matches("http://").trim_end_matches('/');
    write_private(
        &dir.join("eucarc"),
        &format!(
            "# Credentials of the '{acct}' account; `source` this file.\n\
             export S3_URL={s3_url}\n{ec2}\
             export EC2_ACCESS_KEY={ak}\n\
             export EC2_SECRET_KEY={sk}\n\
             export AWS_ACCESS_KEY={ak}\n\
             export AWS_SECRET_KEY={sk}\n\
             export AWS_ACCESS_KEY_ID={ak}\n\
             export AWS_SECRET_ACCESS_KEY={sk}\n\
             export AWS_DEFAULT_REGION={region}\n\
             export AWS_ENDPOINT_URL_S3={s3_url}\n\
             # Bundling (euca-bundle-image): the user's key and certificate, the cloud's certificate.\n\
             export EC2_USER_ID={account_id}\n\
             export EC2_ACCOUNT_NUMBER={account_id}\n\
             export EC2_PRIVATE_KEY={user_key}\n\
             export EC2_CERT={user_cert}\n\
             export EUCALYPTUS_CERT={cloud_cert}\n\
             # The cloud's own keys (system.json, cloud-pk.pem; mode 0600), for euca image install.\n\
             export {cloud_dir_var}={cloud_dir}\n{sc}{clc}",
            cloud_dir_var = crate::imagecache::CLOUD_DIR_VAR,
            cloud_dir = bundling
                .cloud_key
                .parent()
                .unwrap_or(Path::new("."))
                .display(),
            ec2 = ec2_url
                .map(|u| format!(
                    "# The EC2 API (euca2ools, awscli, boto3). euca2ools signs with AWS_AUTH_REGION\n\
                     # (else `undefined-<pid>`; the cloud accepts any region in an EC2 signature).\n\
                     export EC2_URL={u}\n\
                     export AWS_ENDPOINT_URL_EC2={u}\n\
                     export AWS_AUTH_REGION={region}\n"
                ))
                .unwrap_or_default(),
            sc = sc_url
                .map(|u| format!("# The storage controller's API (euca volume / euca snapshot).\nexport EUCA_SC_URL={u}\n"))
                .unwrap_or_default(),
            clc = clc_url
                .map(|u| format!("# The cloud controller's identity service (euca account / euca key).\nexport EUCA_CLC_URL={u}\n"))
                .unwrap_or_default(),
            acct = key.account,
            user_key = bundling.user_key.display(),
            user_cert = bundling.user_cert.display(),
            cloud_cert = bundling.cloud_cert.display(),
        ),
    )?;
    // Per-service endpoints (`services`) for awscli v1, boto3 and awscli v2 ≥ 2.13:
    // ec2 to the cloud controller, s3 to Walrus. The global endpoint_url (Walrus)
    // stays for the S3 tools that predate `services`; a service's own endpoint wins
    // over it. Debian's awscli 2.9 reads neither: it needs --endpoint-url.
    let services = match ec2_url {
        Some(_) => "services = euca-services\n",
        None => "",
    };
    let profile = format!(
        "region = {region}\nendpoint_url = {s3_url}\n{services}s3 =\n    addressing_style = path\n"
    );
    let services_section = match ec2_url {
        Some(ec2) => format!(
            "\n[services euca-services]\nec2 =\n    endpoint_url = {ec2}\ns3 =\n    endpoint_url = {s3_url}\n"
        ),
        None => String::new(),
    };
    write_private(
        &dir.join("aws/config"),
        &format!("[default]\n{profile}\n[profile euca]\n{profile}{services_section}"),
    )?;
    let creds = format!("aws_access_key_id = {ak}\naws_secret_access_key = {sk}\n");
    write_private(
        &dir.join("aws/credentials"),
        &format!("[default]\n{creds}\n[euca]\n{creds}"),
    )?;
    write_private(
        &dir.join("s3cfg"),
        &format!(
            "[default]\naccess_key = {ak}\nsecret_key = {sk}\nhost_base = {hostport}\nhost_bucket = {hostport}\n\
             use_https = False\nsignature_v2 = False\nbucket_location = {region}\n"
        ),
    )?;
    write_private(
        &dir.join("rclone.conf"),
        &format!(
            "[euca]\ntype = s3\nprovider = Other\naccess_key_id = {ak}\nsecret_access_key = {sk}\n\
             endpoint = {s3_url}\nregion = {region}\nforce_path_style = true\n"
        ),
    )?;
    Ok(())
}
