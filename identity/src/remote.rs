//! [`RemoteIdentity`]: the credential lookup of a service that runs apart from the
//! identity store, through the identity service's API (see [`crate::service`]) with
//! a short-lived cache.
//!
//! A key found is kept [`CacheTtl::positive`] (30 s by default), a key not found
//! [`CacheTtl::negative`] (5 s): a key disabled on the cloud controller stops
//! working here within the positive TTL, a key just created works within the
//! negative one. The cache holds at most [`CacheTtl::max_entries`] keys. When the
//! service cannot be reached the lookup fails with [`LookupError`] (a 503 at the
//! edge), never "no such key"; failures are not cached.
use crate::service::{AccountInfo, KeyInfo, SIGNING_SERVICE};
use euca_aws::{Credential, CredentialLookup, LookupError, Principal};
use euca_service::client::{ClientError, SignedClient};
use http::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct CacheTtl {
    pub positive: Duration,
    pub negative: Duration,
    pub max_entries: usize,
}

impl Default for CacheTtl {
    fn default() -> Self {
        CacheTtl {
            positive: Duration::from_secs(30),
            negative: Duration::from_secs(5),
            max_entries: 10_000,
        }
    }
}

pub struct RemoteIdentity {
    client: SignedClient,
    ttl: CacheTtl,
    cache: Mutex<HashMap<String, (Instant, Option<Credential>)>>,
}

impl RemoteIdentity {
    /// `url`: the identity service (`http://host:port`); the key is the system
    /// account's (the only one the lookup API answers).
    pub fn new(
        url: &str,
        access_key: &str,
        secret_key: &str,
        region: &str,
        ttl: CacheTtl,
    ) -> Result<Self, ClientError> {
        let client = SignedClient::new(url, access_key, secret_key, region, SIGNING_SERVICE)?
            .with_timeout(Duration::from_secs(10))
            .with_max_body(64 << 10);
        Ok(RemoteIdentity {
            client,
            ttl,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// An account by name (`None` if there is none).
    pub async fn account(&self, name: &str) -> Result<Option<AccountInfo>, ClientError> {
        let path = format!(
            "/_identity/v1/accounts/{}",
            euca_aws::encoding::uri_encode(name.as_bytes(), true)
        );
        match self.client.json::<AccountInfo>(Method::GET, &path).await {
            Ok(a) => Ok(Some(a)),
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn cached(&self, access_key: &str) -> Option<Option<Credential>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let (at, c) = cache.get(access_key)?;
        let ttl = if c.is_some() {
            self.ttl.positive
        } else {
            self.ttl.negative
        };
        (at.elapsed() < ttl).then(|| c.clone())
    }

    fn remember(&self, access_key: &str, c: Option<Credential>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= self.ttl.max_entries && !cache.contains_key(access_key) {
            let (pos, neg) = (self.ttl.positive, self.ttl.negative);
            cache.retain(|_, (at, c)| at.elapsed() < if c.is_some() { pos } else { neg });
            if cache.len() >= self.ttl.max_entries {
                // Still full of live entries (a flood of distinct keys): start over
                // rather than grow.
                cache.clear();
            }
        }
        cache.insert(access_key.to_string(), (Instant::now(), c));
    }
}

#[async_trait::async_trait]
impl CredentialLookup for RemoteIdentity {
    async fn lookup(&self, access_key: &str) -> Result<Option<Credential>, LookupError> {
        if let Some(c) = self.cached(access_key) {
            return Ok(c);
        }
        let path = format!(
            "/_identity/v1/keys/{}",
            euca_aws::encoding::uri_encode(access_key.as_bytes(), true)
        );
        let found = match self.client.json::<KeyInfo>(Method::GET, &path).await {
            Ok(k) if k.enabled && k.access_key_id == access_key => Some(Credential {
                secret: k.secret_access_key,
                principal: Principal {
                    account_id: k.account_id,
                    canonical_id: k.canonical_id,
                    display_name: k.account,
                    access_key: k.access_key_id,
                },
            }),
            Ok(_) => None,
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND) => None,
            Err(e) => {
                tracing::warn!(error = %e, "identity lookup failed");
                return Err(LookupError(e.to_string()));
            }
        };
        self.remember(access_key, found.clone());
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_stays_bounded() {
        let ttl = CacheTtl {
            positive: Duration::from_secs(60),
            negative: Duration::from_secs(60),
            max_entries: 3,
        };
        let r = RemoteIdentity::new("http://127.0.0.1:1", "a", "s", "r", ttl).unwrap();
        for i in 0..10 {
            r.remember(&format!("k{i}"), None);
            assert!(r.cache.lock().unwrap().len() <= 3);
        }
        assert!(matches!(r.cached("k9"), Some(None)));
    }
}
