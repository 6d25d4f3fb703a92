//! Blob stores elsewhere than a local directory, through `object_store`'s clients,
//! which we drive with the project's own HTTP stack (hyper, and OpenSSL for
//! `https://` endpoints through hyper-openssl) rather than a second one:
//!
//! - `s3://bucket/prefix?…`: any S3-compatible service. The query takes
//!   `object_store`'s S3 settings by name (`endpoint`, `region`,
//!   `virtual_hosted_style_request`, `checksum_algorithm`, …); credentials come from
//!   the usual `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or any other `AWS_*`
//!   setting object_store reads) in the environment, or from the query
//!   (`access_key_id`, `secret_access_key`) for a test.
//! - `az://container/prefix?…`: Azure Blob Storage (or Azurite). The query takes the
//!   Azure settings by name (`account_name`, `access_key`, `endpoint`,
//!   `use_emulator`, …); the environment's `AZURE_*` settings (e.g.
//!   `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`) apply too.
//! - `gs://bucket/prefix?…`: Google Cloud Storage. The query takes the GCS settings
//!   by name (`service_account`, `service_account_key`, …); the environment's
//!   `GOOGLE_*` settings apply too (e.g. `GOOGLE_APPLICATION_CREDENTIALS`).
//!
//! An `http://` endpoint is allowed without saying so: the operator typed it.
use async_trait::async_trait;
use http_body_util::BodyExt;
use hyper_openssl::client::legacy::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector as TcpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::client::{
    ClientOptions, HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest,
    HttpRequestBody, HttpResponse, HttpResponseBody, HttpService,
};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::prefix::PrefixStore;
use object_store::ObjectStore;
use std::sync::Arc;
use std::time::Duration;

/// Connecting to the store gives up after this long (then object_store retries).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// An answer's head must arrive within this long (its body then streams).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);
/// A failed request is retried (with backoff) for at most this long: an unreachable
/// store fails a request, or Walrus's start, in seconds rather than minutes.
const RETRY_FOR: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("not a URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] object_store::Error),
}

/// Opens the store a non-`file://` `blob_url` names.
pub fn open(blob_url: &str) -> Result<Arc<dyn ObjectStore>, RemoteError> {
    let url = url::Url::parse(blob_url)?;
    let store: Arc<dyn ObjectStore> = match url.scheme() {
        "s3" | "s3a" => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(container(&url)?)
                .with_http_connector(Connector)
                .with_retry(retry());
            for (key, value) in settings::<AmazonS3ConfigKey>(&url, "S3")? {
                if matches!(key, AmazonS3ConfigKey::Endpoint) && value.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                b = b.with_config(key, value);
            }
            prefixed(b.build()?, &url)?
        }
        "az" | "azure" => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_container_name(container(&url)?)
                .with_http_connector(Connector)
                .with_retry(retry());
            for (key, value) in settings::<AzureConfigKey>(&url, "Azure")? {
                if matches!(key, AzureConfigKey::Endpoint) && value.starts_with("http://") {
                    b = b.with_allow_http(true);
                }
                b = b.with_config(key, value);
            }
            prefixed(b.build()?, &url)?
        }
        "gs" => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(container(&url)?)
                .with_http_connector(Connector)
                .with_retry(retry());
            for (key, value) in settings::<GoogleConfigKey>(&url, "GCS")? {
                b = b.with_config(key, value);
            }
            prefixed(b.build()?, &url)?
        }
        other => {
            return Err(RemoteError::Invalid(format!(
                "blob stores of scheme {other}:// are not supported (s3:// for any \
                 S3-compatible service, az:// for Azure Blob Storage, gs:// for Google \
                 Cloud Storage, file:///dir)"
            )))
        }
    };
    Ok(store)
}

fn retry() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: Default::default(),
        max_retries: 5,
        retry_timeout: RETRY_FOR,
    }
}

/// The bucket (container) the URL's host names.
fn container(url: &url::Url) -> Result<&str, RemoteError> {
    url.host_str().filter(|b| !b.is_empty()).ok_or_else(|| {
        RemoteError::Invalid(format!(
            "{0}:// needs a bucket: {0}://bucket/prefix",
            url.scheme()
        ))
    })
}

/// The query's settings, each a known key of the store's (`what` names it).
fn settings<K: std::str::FromStr>(
    url: &url::Url,
    what: &str,
) -> Result<Vec<(K, String)>, RemoteError> {
    url.query_pairs()
        .map(|(k, v)| {
            let key = k.parse().map_err(|_| {
                RemoteError::Invalid(format!("unknown {what} setting {k:?} in the query"))
            })?;
            Ok((key, v.into_owned()))
        })
        .collect()
}

/// `store` under the URL's key prefix, if it names one.
fn prefixed<S: ObjectStore>(store: S, url: &url::Url) -> Result<Arc<dyn ObjectStore>, RemoteError> {
    Ok(match key_prefix(url)? {
        None => Arc::new(store),
        Some(prefix) => Arc::new(PrefixStore::new(store, prefix)),
    })
}

/// The key prefix the URL's path names, percent-decoded as any URL's path is
/// (`s3://b/my%20blobs` keeps its blobs under `my blobs/`); `None` for none.
fn key_prefix(url: &url::Url) -> Result<Option<object_store::path::Path>, RemoteError> {
    let path = percent_encoding::percent_decode_str(url.path())
        .decode_utf8()
        .map_err(|_| RemoteError::Invalid("the key prefix is not UTF-8".into()))?;
    let path = path.trim_matches('/');
    if path.is_empty() {
        return Ok(None);
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return Err(RemoteError::Invalid(format!(
                "the key prefix {path:?} has an empty, . or .. segment"
            )));
        }
        parts.push(object_store::path::PathPart::from(part));
    }
    Ok(Some(object_store::path::Path::from_iter(parts)))
}

/// object_store's HTTP client, made of hyper and OpenSSL (the system's roots).
#[derive(Debug, Clone, Copy, Default)]
pub struct Connector;

impl HttpConnector for Connector {
    fn connect(&self, _: &ClientOptions) -> object_store::Result<HttpClient> {
        let mut tcp = TcpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let tls = openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        let https =
            HttpsConnector::with_connector(tcp, tls).map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(HttpClient::new(Service { client }))
    }
}

#[derive(Debug)]
struct Service {
    client: Client<HttpsConnector<TcpConnector>, HttpRequestBody>,
}

#[async_trait]
impl HttpService for Service {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        let answer = tokio::time::timeout(ANSWER_TIMEOUT, self.client.request(req))
            .await
            .map_err(|e| HttpError::new(HttpErrorKind::Timeout, e))?
            .map_err(|e| {
                let kind = if e.is_connect() {
                    HttpErrorKind::Connect
                } else {
                    HttpErrorKind::Request
                };
                HttpError::new(kind, e)
            })?;
        Ok(answer.map(|body| {
            HttpResponseBody::new(body.map_err(|e| HttpError::new(HttpErrorKind::Interrupted, e)))
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(url: &str) -> String {
        match open(url) {
            Ok(_) => panic!("{url} was accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn urls_name_a_known_store_and_known_settings() {
        assert!(refused("wasb://b/p").contains("not supported"));
        assert!(refused("s3:///prefix").contains("needs a bucket"));
        assert!(refused("az:///prefix").contains("az:// needs a bucket"));
        assert!(refused("gs:///prefix").contains("gs:// needs a bucket"));
        assert!(refused("az://c/p?account_name=a&no_such_setting=1").contains("Azure setting"));
        assert!(refused("gs://b/p?no_such_setting=1").contains("GCS setting"));
        assert!(refused("az://c/a//b?use_emulator=true").contains("segment"));
        open("az://c/some/prefix?account_name=a&access_key=a2V5&endpoint=http://127.0.0.1:1")
            .expect("a complete az:// URL opens (nothing is contacted yet)");
        open("az://c/p?use_emulator=true").expect("Azurite's defaults");
        // A service account key as Google's tools write it (its RSA key is read when
        // the store is built).
        let rsa = openssl::pkey::PKey::from_rsa(openssl::rsa::Rsa::generate(2048).expect("rsa"))
            .expect("pkey");
        let pem = String::from_utf8(rsa.private_key_to_pem_pkcs8().expect("pem")).expect("utf8");
        let key = serde_json::json!({
            "type": "service_account",
            "client_email": "walrus@project.iam.gserviceaccount.com",
            "private_key": pem,
            "private_key_id": "k1",
        })
        .to_string();
        assert!(refused("gs://b/p?service_account_key=x").contains("service account"));
        let gs = format!(
            "gs://b/p?service_account_key={}",
            percent_encoding::utf8_percent_encode(&key, percent_encoding::NON_ALPHANUMERIC)
        );
        open(&gs).expect("a complete gs:// URL opens (nothing is contacted yet)");
        assert!(
            refused("s3://b/p?endpoint=http://h:1&no_such_setting=1").contains("no_such_setting")
        );
        assert!(refused("not a url").contains("URL"));
        assert!(refused("s3://b/a//c?endpoint=http://h:1").contains("segment"));
        open("s3://b/some/prefix?endpoint=http://127.0.0.1:1&region=r&access_key_id=a&secret_access_key=s")
            .expect("a complete s3:// URL opens (nothing is contacted yet)");
    }

    #[test]
    fn the_prefix_is_the_decoded_path() {
        let prefix = |u: &str| key_prefix(&url::Url::parse(u).expect("url")).expect("prefix");
        assert_eq!(prefix("s3://b"), None);
        assert_eq!(prefix("s3://b/"), None);
        let p = prefix("s3://b/my%20blobs/x/").expect("some");
        assert_eq!(p.as_ref(), "my blobs/x");
        assert_eq!(p.parts().count(), 2);
    }
}
