//! PostgreSQL for the services' state (`meta_url = "postgres://…"`): what every
//! service that keeps its records there shares.
//!
//! - [`Pool`]: the synchronous `postgres` driver on connection threads of its own (its
//!   runtime cannot start on tokio's threads, the blocking pool included), each owning
//!   one [`Conn`] (opened at first use, reopened after it breaks), fed from one queue.
//!   Async callers await [`Pool::run`]; synchronous code calls
//!   [`Pool::run_blocking`] (on a tokio worker it steps aside with
//!   `block_in_place`, so the worker's other tasks go on meanwhile).
//! - Versioned migrations ([`Migration`]), applied at open, once, under an advisory
//!   lock, recorded in `<prefix>_schema_migrations`; a database newer than the binary
//!   is refused.
//! - [`is_retryable`]: the errors after which a SERIALIZABLE transaction is re-run.
//! - Bounded waits: every connection runs with `lock_timeout` ([`LOCK_TIMEOUT`]),
//!   `statement_timeout` ([`STATEMENT_TIMEOUT`]) and
//!   `idle_in_transaction_session_timeout` (60 s), so a front end frozen in a
//!   transaction (or a runaway statement) holds others up for seconds, not forever;
//!   a server that stops answering fails the statement in flight after
//!   [`TCP_USER_TIMEOUT`]; a job that waited over [`QUEUE_WAIT_MAX`] for a connection
//!   thread fails unrun with [`PgError::Busy`]. Timeouts are driver errors for which
//!   [`is_busy`] holds ([`DbFailure`]); Walrus and the CLC answer them with a 503
//!   their clients retry. An async caller that stopped waiting ([`Pool::run`])
//!   has its job dropped unrun ([`Pool::run_to_end`] runs it regardless). The
//!   URL's own `options` (`?options=-c%20lock_timeout%3D…`) override these.
//! - [`Pool::listen`]: `LISTEN` on a connection of its own, and [`NotifiedCache`]
//!   on it: rows cached in memory and dropped whenever any process changes them.
mod cache;
#[cfg(feature = "testing")]
pub mod testing;

pub use cache::NotifiedCache;

use postgres::error::SqlState;
use postgres::{Client, GenericClient, NoTls, Statement};
use std::collections::{HashMap, HashSet};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    #[error("postgresql URL: {0}")]
    Url(String),
    #[error("postgresql: {}", message(.0))]
    Db(#[from] postgres::Error),
    #[error("postgresql: the database has schema version {found} of {prefix}, newer than this binary knows ({known})")]
    Newer {
        prefix: &'static str,
        found: i32,
        known: i32,
    },
    #[error("postgresql: connection threads stopped")]
    Stopped,
    /// The database did not answer in time (a lock or statement timeout, or no
    /// connection thread free for too long): retry later.
    #[error("postgresql: busy: {0}")]
    Busy(String),
    #[error("postgresql: {0}")]
    Other(String),
}

/// What the services need to know of a database error: whether the database was
/// busy ([`is_busy`]: they answer a 503 their clients retry) and what it said.
pub trait DbFailure {
    fn is_busy(&self) -> bool;
    /// One line: the server's message for a database error.
    fn describe(&self) -> String;
}

impl DbFailure for postgres::Error {
    fn is_busy(&self) -> bool {
        is_busy(self)
    }
    fn describe(&self) -> String {
        message(self)
    }
}

impl DbFailure for PgError {
    fn is_busy(&self) -> bool {
        match self {
            PgError::Busy(_) => true,
            PgError::Db(e) => is_busy(e),
            _ => false,
        }
    }
    fn describe(&self) -> String {
        let all = self.to_string();
        all.strip_prefix("postgresql: ").unwrap_or(&all).to_string()
    }
}

/// One schema change: applied once, in version order, in one transaction.
pub struct Migration {
    pub version: i32,
    pub sql: &'static str,
}

/// A connection with its prepared statements.
pub struct Conn {
    pub client: Client,
    pub statements: Statements,
    /// When a job last finished on it.
    last_used: Instant,
}

/// A connection idle longer than this is checked (one empty query) before a job
/// runs on it: a server restarted (or a backend ended) meanwhile then costs a
/// reconnect, not the job. Busy connections are never checked.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(2);

/// Statements prepared on one connection, by their SQL.
#[derive(Default)]
pub struct Statements(HashMap<String, Statement>);

impl Statements {
    /// The statement for `sql`, prepared through `c` (the connection or one of its
    /// transactions) at first use.
    pub fn get(
        &mut self,
        c: &mut impl GenericClient,
        sql: &str,
    ) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.0.get(sql) {
            return Ok(s.clone());
        }
        let s = c.prepare(sql)?;
        self.0.insert(sql.to_string(), s.clone());
        Ok(s)
    }
}

/// How long a statement waits for a lock before it fails ([`is_busy`]).
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one statement may run before the server cancels it ([`is_busy`]).
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sent data may stay unacknowledged by the server before the connection
/// is given up (`TCP_USER_TIMEOUT`): a partitioned server fails the statement in
/// flight instead of holding its thread for TCP's quarter of an hour.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);
/// After this long without a notification a listener checks its connection,
/// and gives it up if the check takes longer.
pub const LISTEN_QUIET: Duration = Duration::from_secs(2);
/// How long a job may wait for a connection thread before it fails unrun
/// ([`PgError::Busy`]): its caller's client has long given up.
pub const QUEUE_WAIT_MAX: Duration = Duration::from_secs(30);

/// Work for a connection thread: the connection slot, the config, and when the
/// job was queued.
type Job = Box<dyn FnOnce(&mut Option<Conn>, &postgres::Config, Instant) + Send>;

/// Connection threads on one database.
#[derive(Clone)]
pub struct Pool {
    jobs: mpsc::Sender<(Job, Instant)>,
    config: Arc<postgres::Config>,
    /// Held by every clone: a [`Pool::listen`] thread ends once all are gone.
    alive: Arc<()>,
}

/// What a [`Pool::listen`] thread reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenEvent {
    /// Listening (again): notifications from now on are delivered; changes made
    /// before may have been missed.
    Listening,
    /// A notification on the channel.
    Notified,
    /// The listening connection broke or stopped answering: notifications may be
    /// missed until the next [`ListenEvent::Listening`].
    Lost,
}

/// What `e` says, with the server's message for a database error (the driver's
/// own display says only "db error").
pub fn message(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Where a job's result goes.
trait Reply<R>: Send + 'static {
    /// Whether the caller stopped waiting (the job need not run).
    fn gone(&self) -> bool {
        false
    }
    fn deliver(self, r: R);
}

impl<R: Send + 'static> Reply<R> for oneshot::Sender<R> {
    fn gone(&self) -> bool {
        self.is_closed()
    }
    fn deliver(self, r: R) {
        let _ = oneshot::Sender::send(self, r);
    }
}

/// A caller whose job runs even once it stopped waiting.
struct ToTheEnd<R>(oneshot::Sender<R>);

impl<R: Send + 'static> Reply<R> for ToTheEnd<R> {
    fn deliver(self, r: R) {
        let _ = self.0.send(r);
    }
}

/// A synchronous caller blocks until the answer comes: never gone.
impl<R: Send + 'static> Reply<R> for mpsc::Sender<R> {
    fn deliver(self, r: R) {
        let _ = mpsc::Sender::send(&self, r);
    }
}

/// Whether a statement failed because the database was busy rather than because
/// of what it asked: a lock wait or the statement itself timed out. Retrying later
/// may succeed.
pub fn is_busy(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::QUERY_CANCELED
    )
}

/// Whether a transaction that failed with `e` should be re-run: a serialization
/// failure or a deadlock.
pub fn is_retryable(e: &postgres::Error) -> bool {
    matches!(
        e.code(),
        Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED
    )
}

/// Sleeps a little before re-running a transaction, more after each attempt, so
/// racing writers spread out.
pub fn backoff(attempt: u32) {
    let ms = rand::random_range(0..=u64::from(attempt.min(20)));
    std::thread::sleep(Duration::from_millis(ms));
}

/// Takes or renews the lease `name` in `table` (columns `name`, `holder`,
/// `expires`) for `holder`, for `ttl`: taken if free, expired, or already
/// `holder`'s. One statement, so two takers cannot both win.
pub fn take_lease(
    client: &mut impl GenericClient,
    table: &'static str,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, postgres::Error> {
    let rows = client.query(
        &format!(
            "INSERT INTO {table} (name, holder, expires)
             VALUES ($1, $2, now() + $3::float8 * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE
                 SET holder = EXCLUDED.holder, expires = EXCLUDED.expires
                 WHERE {table}.holder = EXCLUDED.holder
                    OR {table}.expires < now()
             RETURNING holder"
        ),
        &[&name, &holder, &(ttl.as_millis() as f64)],
    )?;
    Ok(!rows.is_empty())
}

/// Renews the lease `name` in `table` only if `holder` still has it (expired or
/// not): never takes it anew. `false` once another took it or it was given back,
/// after which a holder that lost it must stop acting on what the lease guards.
pub fn extend_lease(
    client: &mut impl GenericClient,
    table: &'static str,
    name: &str,
    holder: &str,
    ttl: Duration,
) -> Result<bool, postgres::Error> {
    let n = client.execute(
        &format!(
            "UPDATE {table} SET expires = now() + $3::float8 * interval '1 millisecond'
             WHERE name = $1 AND holder = $2"
        ),
        &[&name, &holder, &(ttl.as_millis() as f64)],
    )?;
    Ok(n == 1)
}

/// A name in leases for the process that owns the data directory `dir`: its host,
/// the directory, and a random id kept in `<dir>/lease-id` (made at first use,
/// durably). The same after a restart, so a restarted service takes its leases
/// back at once; different on another machine even with the same host name and
/// path. The caller holds `dir` exclusively (a lock), so one process has each name.
pub fn lease_holder(dir: &std::path::Path) -> std::io::Result<String> {
    use std::io::Write;
    let path = dir.join("lease-id");
    let valid = |s: &str| s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let id = match std::fs::read_to_string(&path) {
        Ok(s) if valid(s.trim()) => s.trim().to_string(),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is not a lease id",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = format!("{:016x}", rand::random::<u64>());
            let tmp = dir.join("lease-id.tmp");
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(format!("{id}\n").as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            std::fs::File::open(dir)?.sync_all()?;
            id
        }
        Err(e) => return Err(e),
    };
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    Ok(format!(
        "{}:{}:{id}",
        host.trim(),
        dir.canonicalize()?.display()
    ))
}

/// Gives up the lease `name` in `table` if `holder` has it.
pub fn drop_lease(
    client: &mut impl GenericClient,
    table: &'static str,
    name: &str,
    holder: &str,
) -> Result<(), postgres::Error> {
    client.execute(
        &format!("DELETE FROM {table} WHERE name = $1 AND holder = $2"),
        &[&name, &holder],
    )?;
    Ok(())
}

/// The connection a thread holds: the one it has, or a new one if it has none or
/// that one broke.
fn connection<'a>(
    slot: &'a mut Option<Conn>,
    config: &postgres::Config,
) -> Result<&'a mut Conn, PgError> {
    if let Some(c) = slot.as_mut() {
        let broken = c.client.is_closed()
            || (c.last_used.elapsed() > CHECK_IDLE_AFTER
                && c.client.is_valid(Duration::from_secs(5)).is_err());
        if broken {
            *slot = None;
        }
    }
    if slot.is_none() {
        *slot = Some(Conn {
            client: config.connect(NoTls)?,
            statements: Statements::default(),
            last_used: Instant::now(),
        });
    }
    slot.as_mut()
        .ok_or_else(|| PgError::Other("no connection".into()))
}

impl Pool {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/dbname[?…]`, or
    /// libpq's `key=value` form) with `connections` threads, and applies the
    /// `migrations` (tables named `<prefix>_…`) the database lacks. Fails (rather than
    /// waits) if the database cannot be reached within 10 s.
    pub async fn open(
        url: &str,
        application: &str,
        connections: usize,
        prefix: &'static str,
        migrations: &'static [Migration],
    ) -> Result<Self, PgError> {
        let pool = Self::start(url, application, connections)?;
        pool.run(move |conn| migrate(&mut conn.client, prefix, migrations))
            .await?;
        Ok(pool)
    }

    /// [`Pool::open`] for callers outside any async runtime (or on a thread that may
    /// block).
    pub fn open_blocking(
        url: &str,
        application: &str,
        connections: usize,
        prefix: &'static str,
        migrations: &'static [Migration],
    ) -> Result<Self, PgError> {
        let pool = Self::start(url, application, connections)?;
        pool.run_blocking(move |conn| migrate(&mut conn.client, prefix, migrations))?;
        Ok(pool)
    }

    fn start(url: &str, application: &str, connections: usize) -> Result<Self, PgError> {
        let mut config: postgres::Config = url.parse().map_err(|e| PgError::Url(format!("{e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        if config.get_application_name().is_none() {
            config.application_name(application);
        }
        // A front end that dies mid-transaction must not hold its row locks for the
        // two hours of TCP's default keepalive: the server notices a dead peer in
        // about a minute, and ends a transaction left idle for one.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(30));
        config.keepalives_interval(Duration::from_secs(5));
        config.keepalives_retries(3);
        // A server that stops acknowledging what this side sent (a partition, a
        // host gone) fails the statement after this long, rather than after TCP's
        // retransmissions give up (about 15 minutes).
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        // Ours first: settings in the URL's own `options` come later and win.
        let ours = format!(
            "-c idle_in_transaction_session_timeout=60000 -c lock_timeout={} -c statement_timeout={}",
            LOCK_TIMEOUT.as_millis(),
            STATEMENT_TIMEOUT.as_millis()
        );
        let options = match config.get_options() {
            Some(theirs) => format!("{ours} {theirs}"),
            None => ours,
        };
        config.options(&options);
        let (jobs, rx) = mpsc::channel::<(Job, Instant)>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..connections.max(1) {
            let (rx, config) = (rx.clone(), config.clone());
            std::thread::Builder::new()
                .name(format!("{application}-pg-{n}"))
                .spawn(move || {
                    let mut conn = None;
                    loop {
                        let job = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        let Ok((job, queued)) = job else { return };
                        // A panicking job (a bug) must not take the thread with it:
                        // its caller sees the reply dropped, the connection is
                        // dropped too, and the thread goes on.
                        let run = std::panic::AssertUnwindSafe(|| job(&mut conn, &config, queued));
                        if std::panic::catch_unwind(run).is_err() {
                            conn = None;
                        }
                    }
                })
                .map_err(|e| PgError::Other(e.to_string()))?;
        }
        Ok(Self {
            jobs,
            config: Arc::new(config),
            alive: Arc::new(()),
        })
    }

    /// Queues `f`; `reply` gets its result. A job whose caller stopped waiting
    /// ([`Reply::gone`]) is not run (a request whose client hung up changes
    /// nothing), and one that waited over [`QUEUE_WAIT_MAX`] fails unrun.
    fn send<T, E, F>(&self, f: F, reply: impl Reply<Result<T, E>>) -> Result<(), PgError>
    where
        T: Send + 'static,
        E: From<PgError> + Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
    {
        let job: Job = Box::new(move |slot, config, queued| {
            if reply.gone() {
                return;
            }
            let waited = queued.elapsed();
            if waited > QUEUE_WAIT_MAX {
                let busy = PgError::Busy(format!("no connection free for {} s", waited.as_secs()));
                reply.deliver(Err(busy.into()));
                return;
            }
            let r = match connection(slot, config) {
                Ok(conn) => {
                    let r = f(conn);
                    conn.last_used = Instant::now();
                    r
                }
                Err(e) => Err(e.into()),
            };
            reply.deliver(r);
        });
        self.jobs
            .send((job, Instant::now()))
            .map_err(|_| PgError::Stopped)
    }

    /// Listens on `channel` (an SQL identifier) on a connection of its own, on a
    /// thread that calls `on_event` for each notification and each change of the
    /// connection's state. A connection that breaks, or does not answer a check
    /// within [`LISTEN_QUIET`] after as long a quiet spell, is reported
    /// [`ListenEvent::Lost`] and reopened (every second until it opens): one that
    /// died silently is known lost within twice [`LISTEN_QUIET`]. The thread ends
    /// once every clone of this pool is gone. Its connection's `application_name`
    /// is the pool's with `-listen`.
    pub fn listen(
        &self,
        channel: &'static str,
        on_event: impl Fn(ListenEvent) + Send + 'static,
    ) -> Result<(), PgError> {
        use postgres::fallible_iterator::FallibleIterator;
        let mut config = (*self.config).clone();
        let name = format!("{}-listen", config.get_application_name().unwrap_or("euca"));
        config.application_name(&name);
        let alive = Arc::downgrade(&self.alive);
        std::thread::Builder::new()
            .name(format!("pg-listen-{channel}"))
            .spawn(move || {
                // Whatever ends this thread (a panic included), the listener
                // reports itself lost last.
                struct LostAtEnd<F: Fn(ListenEvent)>(F);
                impl<F: Fn(ListenEvent)> Drop for LostAtEnd<F> {
                    fn drop(&mut self) {
                        (self.0)(ListenEvent::Lost);
                    }
                }
                let on_event = LostAtEnd(on_event);
                while alive.strong_count() > 0 {
                    if let Ok(mut client) = config.connect(NoTls) {
                        if client.batch_execute(&format!("LISTEN {channel}")).is_ok() {
                            (on_event.0)(ListenEvent::Listening);
                            while alive.strong_count() > 0 {
                                let next = client.notifications().timeout_iter(LISTEN_QUIET).next();
                                match next {
                                    Ok(Some(_)) => (on_event.0)(ListenEvent::Notified),
                                    Ok(None) if client.is_valid(LISTEN_QUIET).is_ok() => {}
                                    _ => break,
                                }
                            }
                            (on_event.0)(ListenEvent::Lost);
                        }
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })
            .map_err(|e| PgError::Other(e.to_string()))?;
        Ok(())
    }

    /// Runs `f` on a connection thread.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PgError> + Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(f, tx)?;
        rx.await.map_err(|_| PgError::Stopped)?
    }

    /// [`Pool::run`] for a change whose caller must not be dropped half way: it
    /// runs even if the caller stops waiting (a request that wrote blobs before
    /// committing them frees them only after the commit's answer; dropped unrun,
    /// they would stay unreferenced until a sweep).
    pub async fn run_to_end<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PgError> + Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.send(f, ToTheEnd(tx))?;
        rx.await.map_err(|_| PgError::Stopped)?
    }

    /// Runs `f` on a connection thread and waits for it, blocking this thread.
    pub fn run_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PgError> + Send + 'static,
        F: FnOnce(&mut Conn) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.send(f, tx)?;
        off_worker(|| rx.recv().map_err(|_| PgError::Stopped))?
    }
}

/// Runs `f`, which waits for a connection thread, so that a caller on a worker
/// of tokio's multi-thread runtime does not stall the tasks queued behind it on
/// that worker (`block_in_place` hands them to another thread first). Elsewhere
/// (a plain thread, the blocking pool, a current-thread runtime) it just runs.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

impl Pool {
    /// [`Pool::run_blocking`] for work that needs a decision only this thread can
    /// make (a callback that cannot travel to the connection thread): `f` runs on
    /// a connection thread and may call `ask(question)` any number of times, which
    /// runs `answer(question)` here and hands back its result (`None` if this side
    /// is gone). A transaction `f` opens stays open across its questions.
    pub fn run_asking<T, E, Q, A, F>(&self, f: F, mut answer: impl FnMut(Q) -> A) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PgError> + Send + 'static,
        Q: Send + 'static,
        A: Send + 'static,
        F: FnOnce(&mut Conn, &dyn Fn(Q) -> Option<A>) -> Result<T, E> + Send + 'static,
    {
        let (q_tx, q_rx) = mpsc::channel::<Q>();
        let (a_tx, a_rx) = mpsc::channel::<A>();
        let (r_tx, r_rx) = mpsc::channel();
        self.send(
            move |conn| {
                let ask = move |q: Q| -> Option<A> {
                    q_tx.send(q).ok()?;
                    a_rx.recv().ok()
                };
                // `ask` (and so the question channel) goes when `f` ends, which
                // ends the loop below.
                f(conn, &ask)
            },
            r_tx,
        )?;
        off_worker(|| {
            while let Ok(q) = q_rx.recv() {
                if a_tx.send(answer(q)).is_err() {
                    break;
                }
            }
            r_rx.recv().map_err(|_| PgError::Stopped)
        })?
    }
}

/// Applies the migrations the database lacks, under an advisory lock.
fn migrate(
    client: &mut Client,
    prefix: &'static str,
    migrations: &'static [Migration],
) -> Result<(), PgError> {
    // One lock per prefix: services sharing a database migrate independently.
    let lock = prefix.bytes().fold(0x6575_6361_i64, |h, b| {
        h.wrapping_mul(131).wrapping_add(i64::from(b))
    });
    // Another process may hold the lock through a long migration: wait for it,
    // and let the migrations themselves take as long as they need.
    client.batch_execute("SET lock_timeout = 0; SET statement_timeout = 0")?;
    client.execute("SELECT pg_advisory_lock($1)", &[&lock])?;
    let r = (|| {
        let table = format!("{prefix}_schema_migrations");
        client.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())"
        ))?;
        let done: HashSet<i32> = client
            .query(&format!("SELECT version FROM {table}"), &[])?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let known = migrations.iter().map(|m| m.version).max().unwrap_or(0);
        if let Some(found) = done.iter().copied().find(|v| *v > known) {
            return Err(PgError::Newer {
                prefix,
                found,
                known,
            });
        }
        for m in migrations {
            if done.contains(&m.version) {
                continue;
            }
            let mut tx = client.transaction()?;
            tx.batch_execute(m.sql)?;
            tx.execute(
                &format!("INSERT INTO {table} (version) VALUES ($1)"),
                &[&m.version],
            )?;
            tx.commit()?;
            tracing::info!(
                schema = prefix,
                version = m.version,
                "applied PostgreSQL migration"
            );
        }
        Ok(())
    })();
    let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&lock]);
    let _ = client.batch_execute("RESET lock_timeout; RESET statement_timeout");
    r
}

#[cfg(all(test, feature = "testing"))]
mod tests {
    use super::*;

    /// Connections the server ended while they sat idle (a restart, an
    /// administrator) are replaced before the next job, which then succeeds.
    #[test]
    fn idle_connections_the_server_ended_are_replaced() {
        let url = testing::database_url();
        let pool = Pool::open_blocking(&url, "euca-pg-idle", 2, "t", &[]).expect("open");
        let pid = |pool: &Pool| -> i32 {
            pool.run_blocking(|c| {
                Ok::<_, PgError>(c.client.query_one("SELECT pg_backend_pid()", &[])?.get(0))
            })
            .expect("pid")
        };
        let before = pid(&pool);
        let mut admin = url
            .parse::<postgres::Config>()
            .expect("url")
            .connect(NoTls)
            .expect("admin");
        let ended = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE application_name = 'euca-pg-idle'",
                &[],
            )
            .expect("terminate");
        assert!(!ended.is_empty());
        std::thread::sleep(CHECK_IDLE_AFTER + Duration::from_millis(500));
        // Every connection thread's next job works (two threads: several jobs).
        for _ in 0..4 {
            assert_ne!(pid(&pool), before);
        }
    }

    /// Every connection waits for locks and statements a bounded time, and the
    /// URL's own options win over ours; a lock wait that times out is [`is_busy`].
    #[test]
    fn waits_are_bounded_and_the_url_may_change_the_bounds() {
        let url = testing::database_url();
        let show = |pool: &Pool, what: &'static str| -> String {
            pool.run_blocking(move |c| {
                Ok::<_, PgError>(c.client.query_one(&format!("SHOW {what}"), &[])?.get(0))
            })
            .expect("show")
        };
        let pool = Pool::open_blocking(&url, "euca-pg-bounds", 1, "t", &[]).expect("open");
        assert_eq!(show(&pool, "lock_timeout"), "10s");
        assert_eq!(show(&pool, "statement_timeout"), "30s");
        assert_eq!(show(&pool, "idle_in_transaction_session_timeout"), "1min");

        let quick = format!("{url}?options=-c%20lock_timeout%3D200");
        let pool = Pool::open_blocking(&quick, "euca-pg-bounds", 1, "t", &[]).expect("open");
        assert_eq!(show(&pool, "lock_timeout"), "200ms");
        assert_eq!(show(&pool, "statement_timeout"), "30s");
        pool.run_blocking(|c| {
            c.client
                .batch_execute("CREATE TABLE held (n int)")
                .map_err(PgError::from)
        })
        .expect("create");
        let mut holder = url
            .parse::<postgres::Config>()
            .expect("url")
            .connect(NoTls)
            .expect("holder");
        let mut tx = holder.transaction().expect("begin");
        tx.batch_execute("LOCK TABLE held IN ACCESS EXCLUSIVE MODE")
            .expect("lock");
        let started = Instant::now();
        let e = pool
            .run_blocking(|c| {
                c.client
                    .execute("INSERT INTO held VALUES (1)", &[])
                    .map_err(PgError::from)
            })
            .expect_err("a held lock times out");
        assert!(e.is_busy(), "{e}");
        // The server's words, not only the driver's "db error".
        assert!(e.to_string().contains("lock timeout"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5));
        tx.rollback().expect("rollback");
        pool.run_blocking(|c| {
            c.client
                .execute("INSERT INTO held VALUES (1)", &[])
                .map_err(PgError::from)
        })
        .expect("free again");
    }

    /// A job whose caller stopped waiting before a connection was free is never
    /// run: a request whose client went away changes nothing.
    #[test]
    fn jobs_of_callers_that_gave_up_are_not_run() {
        let url = testing::database_url();
        let pool = Pool::open_blocking(&url, "euca-pg-gone", 1, "t", &[]).expect("open");
        pool.run_blocking(|c| {
            c.client
                .batch_execute("CREATE TABLE done (n int)")
                .map_err(PgError::from)
        })
        .expect("create");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async {
            // The only connection is busy for 0.5 s.
            let hold = |p: Pool| {
                tokio::spawn(async move {
                    p.run(|c| {
                        c.client
                            .batch_execute("SELECT pg_sleep(0.5)")
                            .map_err(PgError::from)
                    })
                    .await
                })
            };
            let busy = hold(pool.clone());
            tokio::time::sleep(Duration::from_millis(50)).await;
            let gave_up = tokio::time::timeout(
                Duration::from_millis(100),
                pool.run(|c| {
                    c.client
                        .execute("INSERT INTO done VALUES (1)", &[])
                        .map_err(PgError::from)
                }),
            )
            .await;
            assert!(gave_up.is_err(), "the insert waited for the connection");
            // A write that must run to its end does, though its caller gave up too.
            let busy_again = hold(pool.clone());
            busy.await.expect("join").expect("sleep");
            tokio::time::sleep(Duration::from_millis(50)).await;
            let dropped = tokio::time::timeout(
                Duration::from_millis(100),
                pool.run_to_end(|c| {
                    c.client
                        .execute("INSERT INTO done VALUES (2)", &[])
                        .map_err(PgError::from)
                }),
            )
            .await;
            assert!(dropped.is_err(), "the insert waited for the connection");
            busy_again.await.expect("join").expect("sleep");
            // A job queued after the abandoned one runs, so that one had its turn.
            let n: i64 = pool
                .run(|c| {
                    Ok::<_, PgError>(
                        c.client
                            .query_one("SELECT count(*) FROM done WHERE n = 1", &[])?
                            .get(0),
                    )
                })
                .await
                .expect("count");
            let n2: i64 = pool
                .run(|c| {
                    Ok::<_, PgError>(
                        c.client
                            .query_one("SELECT count(*) FROM done WHERE n = 2", &[])?
                            .get(0),
                    )
                })
                .await
                .expect("count");
            assert_eq!(n2, 1, "the write run to its end was dropped");
            assert_eq!(n, 0, "the abandoned insert ran");
        });
    }

    /// A data directory's lease name stays across restarts (the id is kept
    /// there) and differs from another directory's.
    #[test]
    fn lease_holder_is_stable_per_directory() {
        let (a, b) = (
            tempfile::tempdir().expect("dir"),
            tempfile::tempdir().expect("dir"),
        );
        let first = lease_holder(a.path()).expect("holder");
        assert_eq!(lease_holder(a.path()).expect("again"), first);
        assert!(first.contains(&a.path().canonicalize().expect("path").display().to_string()));
        assert_ne!(lease_holder(b.path()).expect("other"), first);
        // A copy of the directory elsewhere keeps the id but not the path.
        std::fs::copy(a.path().join("lease-id"), b.path().join("lease-id")).expect("copy");
        let copied = lease_holder(b.path()).expect("copied");
        assert_ne!(copied, first);
        assert_eq!(copied.rsplit(':').next(), first.rsplit(':').next());
        std::fs::write(a.path().join("lease-id"), "not an id\n").expect("write");
        assert!(lease_holder(a.path()).is_err());
    }

    /// A synchronous wait for the database on the runtime's only worker leaves
    /// the worker's other tasks running.
    #[test]
    fn run_blocking_on_a_worker_lets_other_tasks_run() {
        let url = testing::database_url();
        let pool = Pool::open_blocking(&url, "euca-pg-test", 1, "t", &[]).expect("open");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let ticks = Arc::new(std::sync::atomic::AtomicU32::new(0));
            let counter = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            });
            // The ticker's first sleep starts before the wait does.
            tokio::time::sleep(Duration::from_millis(20)).await;
            let during = tokio::spawn(async move {
                let before = ticks.load(std::sync::atomic::Ordering::SeqCst);
                pool.run_blocking(|c| {
                    c.client
                        .batch_execute("SELECT pg_sleep(0.5)")
                        .map_err(PgError::from)
                })
                .expect("sleep");
                ticks.load(std::sync::atomic::Ordering::SeqCst) - before
            })
            .await
            .expect("join");
            ticker.abort();
            assert!(
                during >= 10,
                "the other task ticked {during} times in 0.5 s of waiting"
            );
        });
    }
}
