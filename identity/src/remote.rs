//! [`RemoteIdentity`]: the credential lookup of a service that runs apart from the
//! identity store, through the identity service's API (see [`crate::service`]) with
//! a short-lived cache.
//!
//! A key found is kept [`CacheTtl::positive`] (30 s by default), a key not found
//! [`CacheTtl::negative`] (5 s): a key disabled on the cloud controller stops
//! working here within the positive TTL, a key just created works within the
//! negative one. Keys found and keys not found are kept in two maps, bounded
//! apart ([`CacheTtl::max_entries`], [`CacheTtl::max_misses`]): when one is full,
//! its expired entries go first, then its oldest, so a flood of made-up keys never
//! evicts a valid credential. A key that cannot be one the store issued (not 1 to
//! [`MAX_KEY_LEN`] ASCII letters and digits) is "no such key" at once, without a
//! call or a cache entry.
//!
//! At most [`MAX_CALLS`] calls to the identity service run at once, and concurrent
//! lookups of one key share one call. When the service cannot be reached, or
//! answers anything but a key or a `NoSuchEntity` error, the lookup fails with
//! [`LookupError`] (a 503 at the edge), never "no such key"; failures are not cached.
use crate::service::{AccountInfo, KeyInfo, SIGNING_SERVICE};
use euca_aws::{Credential, CredentialLookup, LookupError, Principal};
use euca_service::client::{ClientError, SignedClient};
use http::{Method, StatusCode};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OnceCell, Semaphore};

/// The longest access key looked up remotely (the store issues 20 characters).
pub const MAX_KEY_LEN: usize = 128;

/// How many calls to the identity service may run at once.
pub const MAX_CALLS: usize = 32;

/// The error code of the identity API's "no such key / account" answer (a 404
/// with any other body, e.g. from a proxy or a wrong URL, is an error).
const NO_SUCH_ENTITY: &str = "NoSuchEntity";

#[derive(Debug, Clone, Copy)]
pub struct CacheTtl {
    pub positive: Duration,
    pub negative: Duration,
    /// How many keys found are kept.
    pub max_entries: usize,
    /// How many keys not found are kept.
    pub max_misses: usize,
}

impl Default for CacheTtl {
    fn default() -> Self {
        CacheTtl {
            positive: Duration::from_secs(30),
            negative: Duration::from_secs(5),
            max_entries: 10_000,
            max_misses: 4096,
        }
    }
}

/// Whether `access_key` could be one the store issued (`AKIE` + 16 letters and
/// digits today; any 1 to [`MAX_KEY_LEN`] ASCII letters and digits is asked about).
pub fn plausible_key(access_key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&access_key.len())
        && access_key.bytes().all(|b| b.is_ascii_alphanumeric())
}

#[derive(Default)]
struct Cache {
    found: HashMap<String, (Instant, Credential)>,
    missing: HashMap<String, Instant>,
}

/// Makes room for one more key in `map` (at most `cap` entries): drops the
/// expired ones, then, if still full, the oldest.
fn make_room<V>(map: &mut HashMap<String, V>, cap: usize, ttl: Duration, at: fn(&V) -> Instant) {
    if map.len() < cap {
        return;
    }
    map.retain(|_, v| at(v).elapsed() < ttl);
    while map.len() >= cap.max(1) {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| at(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

type Answer = Result<Option<Credential>, LookupError>;
type Flight = Arc<OnceCell<Answer>>;

pub struct RemoteIdentity {
    client: SignedClient,
    ttl: CacheTtl,
    cache: Mutex<Cache>,
    /// The call in progress per key (single flight).
    flights: Mutex<HashMap<String, Flight>>,
    calls: Semaphore,
}

/// Takes a lookup's flight out of [`RemoteIdentity::flights`] when the last
/// lookup waiting on it is done (or gone), or once it has its answer.
struct FlightGuard<'a> {
    owner: &'a RemoteIdentity,
    key: &'a str,
    flight: Option<Flight>,
}

impl Drop for FlightGuard<'_> {
    fn drop(&mut self) {
        let mut flights = self.owner.flights.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mine) = self.flight.take() else {
            return;
        };
        let done = mine.initialized();
        drop(mine);
        if let Some(f) = flights.get(self.key) {
            // Under the lock every holder drops its handle, so the last one sees
            // only the map's.
            if done || Arc::strong_count(f) == 1 {
                flights.remove(self.key);
            }
        }
    }
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
            cache: Mutex::new(Cache::default()),
            flights: Mutex::new(HashMap::new()),
            calls: Semaphore::new(MAX_CALLS),
        })
    }

    /// An account by name (`None` if there is none).
    pub async fn account(&self, name: &str) -> Result<Option<AccountInfo>, ClientError> {
        self.account_at("accounts", name).await
    }

    /// The account whose S3 canonical user id is `id` (`None` if there is none).
    pub async fn account_by_canonical_id(
        &self,
        id: &str,
    ) -> Result<Option<AccountInfo>, ClientError> {
        self.account_at("canonical-ids", id).await
    }

    /// `GET /_identity/v1/{by}/{arg}`: an account, or `None` if there is none.
    async fn account_at(&self, by: &str, arg: &str) -> Result<Option<AccountInfo>, ClientError> {
        let path = format!(
            "/_identity/v1/{by}/{}",
            euca_aws::encoding::uri_encode(arg.as_bytes(), true)
        );
        match self.client.json::<AccountInfo>(Method::GET, &path).await {
            Ok(a) => Ok(Some(a)),
            Err(e) if no_such_entity(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn cached(&self, access_key: &str) -> Option<Option<Credential>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, c)) = cache.found.get(access_key) {
            if at.elapsed() < self.ttl.positive {
                return Some(Some(c.clone()));
            }
        }
        match cache.missing.get(access_key) {
            Some(at) if at.elapsed() < self.ttl.negative => Some(None),
            _ => None,
        }
    }

    fn remember(&self, access_key: &str, c: Option<Credential>) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match c {
            Some(c) => {
                cache.missing.remove(access_key);
                if !cache.found.contains_key(access_key) {
                    make_room(
                        &mut cache.found,
                        self.ttl.max_entries,
                        self.ttl.positive,
                        |v| v.0,
                    );
                }
                cache.found.insert(access_key.to_string(), (now, c));
            }
            None => {
                cache.found.remove(access_key);
                if !cache.missing.contains_key(access_key) {
                    make_room(
                        &mut cache.missing,
                        self.ttl.max_misses,
                        self.ttl.negative,
                        |v| *v,
                    );
                }
                cache.missing.insert(access_key.to_string(), now);
            }
        }
    }

    /// One call to the identity service (at most [`MAX_CALLS`] at once); its
    /// answer, not an error, is cached.
    async fn fetch(&self, access_key: &str) -> Answer {
        let _permit = self
            .calls
            .acquire()
            .await
            .map_err(|e| LookupError(e.to_string()))?;
        // Another flight may have answered while this one waited.
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
            Err(e) if no_such_entity(&e) => None,
            Err(e) => {
                tracing::warn!(error = %e, "identity lookup failed");
                return Err(LookupError(e.to_string()));
            }
        };
        self.remember(access_key, found.clone());
        Ok(found)
    }
}

/// The identity API's answer that there is no such key or account.
fn no_such_entity(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { status, code, .. }
        if *status == StatusCode::NOT_FOUND && code == NO_SUCH_ENTITY)
}

#[async_trait::async_trait]
impl CredentialLookup for RemoteIdentity {
    async fn lookup(&self, access_key: &str) -> Result<Option<Credential>, LookupError> {
        if !plausible_key(access_key) {
            return Ok(None);
        }
        if let Some(c) = self.cached(access_key) {
            return Ok(c);
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(access_key.to_string()).or_default().clone()
        };
        // The guard holds the only handle of this lookup, also if it is cancelled.
        let guard = FlightGuard {
            owner: self,
            key: access_key,
            flight: Some(flight),
        };
        let answer = match guard.flight.as_deref() {
            Some(cell) => cell.get_or_init(|| self.fetch(access_key)).await.clone(),
            None => Err(LookupError("no lookup in flight".into())),
        };
        drop(guard);
        answer
    }

    /// Not cached: grants are rare, and a grant to an account made a moment ago
    /// must be taken. An id that cannot be a canonical id (64 hex digits) is not sent.
    async fn account_name(&self, canonical_id: &str) -> Result<Option<String>, LookupError> {
        if canonical_id.len() != 64 || !canonical_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let _permit = self
            .calls
            .acquire()
            .await
            .map_err(|e| LookupError(e.to_string()))?;
        self.account_by_canonical_id(canonical_id)
            .await
            .map(|a| a.map(|a| a.name))
            .map_err(|e| LookupError(e.to_string()))
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    fn cred(k: &str) -> Credential {
        Credential {
            secret: "s".into(),
            principal: Principal {
                account_id: "1".into(),
                canonical_id: "c".into(),
                display_name: "a".into(),
                access_key: k.into(),
            },
        }
    }

    #[test]
    fn the_cache_stays_bounded() {
        let ttl = CacheTtl {
            positive: Duration::from_secs(60),
            negative: Duration::from_secs(60),
            max_entries: 3,
            max_misses: 3,
        };
        let r = RemoteIdentity::new("http://127.0.0.1:1", "a", "s", "r", ttl).unwrap();
        for i in 0..10 {
            r.remember(&format!("k{i}"), None);
            r.remember(&format!("f{i}"), Some(cred("f")));
            let c = r.cache.lock().unwrap();
            assert!(c.missing.len() <= 3 && c.found.len() <= 3);
        }
        assert!(matches!(r.cached("k9"), Some(None)));
        assert!(matches!(r.cached("f9"), Some(Some(_))));
        // The oldest went first.
        assert!(r.cached("k0").is_none() && r.cached("f0").is_none());
    }

    #[test]
    fn misses_never_evict_credentials() {
        let ttl = CacheTtl {
            positive: Duration::from_secs(60),
            negative: Duration::from_secs(60),
            max_entries: 3,
            ..CacheTtl::default()
        };
        let r = RemoteIdentity::new("http://127.0.0.1:1", "a", "s", "r", ttl).unwrap();
        r.remember("AKIEGOOD", Some(cred("AKIEGOOD")));
        for i in 0..5000 {
            r.remember(&format!("AKIEBAD{i}"), None);
        }
        assert!(
            matches!(r.cached("AKIEGOOD"), Some(Some(_))),
            "a flood of misses evicted a valid credential"
        );
    }

    #[test]
    fn only_plausible_keys_are_asked_about() {
        for k in ["AKIE0123456789ABCDEF", "a", &"Z".repeat(128)] {
            assert!(plausible_key(k), "{k}");
        }
        for k in [
            "",
            "a/b?c d%",
            "AKIE-1",
            "AKIE\u{e9}",
            &"Z".repeat(129),
            "AK IE",
        ] {
            assert!(!plausible_key(k), "{k}");
        }
    }
}
