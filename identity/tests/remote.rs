//! The identity service and `RemoteIdentity` over a real loopback listener.
use euca_aws::CredentialLookup;
use euca_identity::remote::CacheTtl;
use euca_identity::service::IdentityService;
use euca_identity::{IdentityStore, RemoteIdentity};
use euca_service::client::SignedClient;
use http::{Method, StatusCode};
use std::time::Duration;
use tokio::sync::watch;

const SYSTEM: &str = "eucalyptus";

struct Running {
    url: String,
    store: IdentityStore,
    system: euca_identity::AccessKey,
    admin: euca_identity::AccessKey,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let store = IdentityStore::open(&dir.path().join("identity.redb")).unwrap();
    let (_, admin) = store.ensure_admin().unwrap();
    let (_, system) = store.create_account(SYSTEM).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let svc = IdentityService::new(store.clone(), "us-east-1", "admin", SYSTEM);
    let (stop, rx) = watch::channel(false);
    let opts = euca_service::ListenOptions::new("identity", 16, &Default::default());
    let task = tokio::spawn(svc.serve(listener, opts, euca_service::MetricsAccess::Public, rx));
    Running {
        url,
        store,
        system,
        admin,
        stop,
        task,
        _dir: dir,
    }
}

fn remote(r: &Running, key: &euca_identity::AccessKey, ttl: CacheTtl) -> RemoteIdentity {
    RemoteIdentity::new(
        &r.url,
        &key.access_key_id,
        &key.secret_access_key,
        "us-east-1",
        ttl,
    )
    .unwrap()
}

const NO_CACHE: CacheTtl = CacheTtl {
    positive: Duration::ZERO,
    negative: Duration::ZERO,
    max_entries: 16,
    max_misses: 16,
};
const LONG: CacheTtl = CacheTtl {
    positive: Duration::from_secs(3600),
    negative: Duration::from_secs(3600),
    max_entries: 16,
    max_misses: 16,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookups_follow_the_store_and_the_cache_holds_within_its_ttl() {
    let r = start().await;
    let fresh = remote(&r, &r.system, NO_CACHE);
    let cached = remote(&r, &r.system, LONG);
    let (acct, key) = r.store.create_account("user1").unwrap();

    let c = fresh.lookup(&key.access_key_id).await.unwrap().unwrap();
    assert_eq!(c.secret, key.secret_access_key);
    assert_eq!(c.principal.canonical_id, acct.canonical_id);
    assert_eq!(c.principal.display_name, "user1");
    assert_eq!(c.principal.account_id, acct.id);
    assert!(cached.lookup(&key.access_key_id).await.unwrap().is_some());
    // Unknown: None (not an error). A key of other than ASCII letters and digits
    // cannot be one the store issued: unknown too, without asking.
    for k in ["AKIENOPE", "a/b?c d%"] {
        assert!(fresh.lookup(k).await.unwrap().is_none(), "{k}");
        assert!(cached.lookup(k).await.unwrap().is_none(), "{k}");
    }

    r.store.set_key_enabled(&key.access_key_id, false).unwrap();
    assert!(fresh.lookup(&key.access_key_id).await.unwrap().is_none());
    // Within its TTL the cached credential still answers.
    assert!(cached.lookup(&key.access_key_id).await.unwrap().is_some());

    // Accounts by name.
    let a = fresh.account("user1").await.unwrap().unwrap();
    assert_eq!(a.canonical_id, acct.canonical_id);
    assert!(fresh.account("nobody").await.unwrap().is_none());
    // Accounts by canonical id (what ACL grants name), disabled ones too, from the
    // service and from the local store alike; an id of another form is not asked.
    r.store.set_account_enabled("user1", false).unwrap();
    for store in [&fresh as &dyn CredentialLookup, &r.store] {
        assert_eq!(
            store
                .account_name(&acct.canonical_id)
                .await
                .unwrap()
                .as_deref(),
            Some("user1")
        );
        for id in ["0".repeat(64), "_foo".to_string(), "a/b".to_string()] {
            assert!(store.account_name(&id).await.unwrap().is_none(), "{id}");
        }
    }
    r.store.set_account_enabled("user1", true).unwrap();

    // Another account's key may not look up credentials: an error, never "no such key".
    let as_admin = remote(&r, &r.admin, NO_CACHE);
    assert!(as_admin.lookup(&r.system.access_key_id).await.is_err());

    // The service gone: an error for what is not cached, the cache still answers.
    r.stop.send(true).unwrap();
    r.task.await.unwrap();
    assert!(fresh.lookup(&r.admin.access_key_id).await.is_err());
    assert!(cached.lookup("AKIENOPE").await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_system_account_looks_up_and_only_the_admin_manages() {
    let r = start().await;
    let (_, user) = r.store.create_account("user2").unwrap();
    let client = |k: &euca_identity::AccessKey| {
        SignedClient::new(
            &r.url,
            &k.access_key_id,
            &k.secret_access_key,
            "us-east-1",
            "iam",
        )
        .unwrap()
    };
    let status = |res: Result<serde_json::Value, euca_service::client::ClientError>| match res {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status().unwrap(),
    };
    let exists = format!("/_identity/v1/keys/{}", user.access_key_id);
    let missing = "/_identity/v1/keys/AKIENOPE";
    let canon = r.store.account("user2").unwrap().unwrap().canonical_id;
    let exists_id = format!("/_identity/v1/canonical-ids/{canon}");
    let missing_id = format!("/_identity/v1/canonical-ids/{}", "0".repeat(64));
    for who in [&r.admin, &user] {
        // 403 alike, whether the key or account exists or not.
        for path in [exists.as_str(), missing, &exists_id, &missing_id] {
            assert_eq!(
                status(client(who).json(Method::GET, path).await),
                StatusCode::FORBIDDEN,
                "{path}"
            );
        }
    }
    let sys = client(&r.system);
    for (path, want) in [
        (exists.as_str(), StatusCode::OK),
        (missing, StatusCode::NOT_FOUND),
        (&exists_id, StatusCode::OK),
        (&missing_id, StatusCode::NOT_FOUND),
    ] {
        assert_eq!(status(sys.json(Method::GET, path).await), want, "{path}");
    }
    // The admin API: the admin only.
    assert_eq!(
        status(sys.json(Method::POST, "/_admin/accounts/sneaky").await),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(client(&user).json(Method::GET, "/_admin/accounts").await),
        StatusCode::FORBIDDEN
    );
    let admin = client(&r.admin);
    let v: serde_json::Value = admin
        .json(Method::POST, "/_admin/accounts/made")
        .await
        .unwrap();
    assert_eq!(v["account"]["name"], "made");
    match admin
        .json::<serde_json::Value>(Method::POST, "/_admin/accounts/made")
        .await
    {
        Err(euca_service::client::ClientError::Status { status, code, .. }) => {
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::CONFLICT, "EntityAlreadyExists")
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(r.store.account("sneaky").unwrap().is_none());
    // A wrong signature is refused with the auth error's code.
    let forged =
        SignedClient::new(&r.url, &r.admin.access_key_id, "wrong", "us-east-1", "iam").unwrap();
    match forged
        .json::<serde_json::Value>(Method::GET, "/_admin/accounts")
        .await
    {
        Err(euca_service::client::ClientError::Status { status, code, .. }) => {
            assert_eq!(
                (status, code.as_str()),
                (StatusCode::FORBIDDEN, "SignatureDoesNotMatch")
            )
        }
        other => panic!("{other:?}"),
    }
}

/// (status, body) of an unsigned `GET path` (HTTP/1.0, read to the end).
async fn raw_get(url: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_like_every_service_with_endpoint_metrics() {
    let r = start().await;
    let (status, body) = raw_get(&r.url, "/_health").await;
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    // Unsigned: refused in the internal APIs' JSON error shape.
    let (status, body) = raw_get(&r.url, "/_identity/v1/keys/AKIEUNSIGNED").await;
    assert_eq!(status, 403);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()),
        "{body}"
    );
    // A signed lookup, then the per-endpoint families.
    let fresh = remote(&r, &r.system, NO_CACHE);
    assert!(fresh
        .lookup(&r.admin.access_key_id)
        .await
        .unwrap()
        .is_some());
    let (status, text) = raw_get(&r.url, "/_metrics").await;
    assert_eq!(status, 200);
    for line in [
        r#"euca_http_requests_total{endpoint="LookupKey",service="identity",status="200"} "#,
        r#"euca_http_requests_total{endpoint="LookupKey",service="identity",status="403"} "#,
        r#"euca_http_requests_total{endpoint="Health",service="identity",status="200"} "#,
    ] {
        assert!(text.contains(line), "{line} not in {text}");
    }
    assert!(
        text.contains(r#"euca_http_request_errors_total{code="#),
        "{text}"
    );
    r.stop.send(true).unwrap();
    r.task.await.unwrap();
}

#[test]
fn endpoints_are_named_after_their_operations() {
    use euca_identity::service::IdentityEndpoint as E;
    use euca_service::Endpoint;
    let cases = [
        (Method::GET, "/_admin/accounts", E::ListAccounts),
        (Method::POST, "/_admin/accounts/u1", E::CreateAccount),
        (
            Method::POST,
            "/_admin/accounts/u1/disable",
            E::DisableAccount,
        ),
        (Method::POST, "/_admin/accounts/u1/enable", E::EnableAccount),
        (Method::GET, "/_admin/accounts/u1/keys", E::ListKeys),
        (Method::POST, "/_admin/accounts/u1/keys", E::CreateKey),
        (Method::POST, "/_admin/keys/AKIE1/disable", E::DisableKey),
        (Method::GET, "/_identity/v1/keys/AKIE1", E::LookupKey),
        (Method::GET, "/_identity/v1/accounts/u1", E::LookupAccount),
        (
            Method::GET,
            "/_identity/v1/canonical-ids/abc",
            E::LookupCanonicalId,
        ),
        (Method::DELETE, "/_admin/accounts/u1", E::Unknown),
        (Method::GET, "/_identity/v1/keys/a/b", E::Unknown),
        (Method::GET, "/elsewhere", E::Unknown),
    ];
    for (m, p, want) in cases {
        let got = E::parse(&m, p);
        assert_eq!(got, want, "{m} {p}");
        assert_eq!(got.name(), format!("{want:?}"));
    }
}
