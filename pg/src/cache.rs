//! [`NotifiedCache`]: rows looked up in the database, kept in memory while every
//! change to them is heard.
use crate::{ListenEvent, PgError, Pool};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Rows found by key since the last change anyone made to what they read. The
/// tables' writers notify a channel (a trigger in the service's migrations, so
/// changes made by hand count too); a listener on it drops every entry at each
/// notification. While the listener is not listening (connection lost, not yet
/// open) nothing is cached, so a change it could miss is never served stale; a
/// silently dead connection is noticed within twice [`crate::LISTEN_QUIET`]. A
/// process that changes the rows itself calls [`NotifiedCache::invalidate`] once
/// the change is made, so it sees its own change at once; other processes see it
/// when the notification arrives (milliseconds).
///
/// Only rows found are kept (a name nobody has is asked each time), at most `cap`
/// of them: a stranger making up names can neither grow the cache nor empty it.
pub struct NotifiedCache<V> {
    state: Mutex<State<V>>,
    cap: usize,
    /// Keeps the listener's thread going as long as the cache is used.
    _pool: Pool,
}

struct State<V> {
    /// Whether changes are being heard.
    live: bool,
    /// Bumped at every change: a lookup that began before one is not kept.
    generation: u64,
    entries: HashMap<String, V>,
}

impl<V: Clone + Send + 'static> NotifiedCache<V> {
    /// A cache of at most `cap` entries, fed by a listener on `channel` of
    /// `pool`'s database.
    pub fn listening(pool: &Pool, channel: &'static str, cap: usize) -> Result<Arc<Self>, PgError> {
        let cache = Arc::new(NotifiedCache {
            state: Mutex::new(State {
                live: false,
                generation: 0,
                entries: HashMap::new(),
            }),
            cap,
            _pool: pool.clone(),
        });
        let heard = Arc::downgrade(&cache);
        pool.listen(channel, move |event| {
            if let Some(c) = heard.upgrade() {
                c.reset(event != ListenEvent::Lost);
            }
        })?;
        Ok(cache)
    }

    /// The cached row for `key`, else what `load` finds, kept if found and
    /// nothing changed while it loaded.
    pub async fn get_or_load<E>(
        &self,
        key: &str,
        load: impl Future<Output = Result<Option<V>, E>>,
    ) -> Result<Option<V>, E> {
        if let Some(hit) = self.get(key) {
            return Ok(Some(hit));
        }
        let generation = self.generation();
        let found = load.await?;
        if let (Some(g), Some(v)) = (generation, &found) {
            self.keep(g, key, v);
        }
        Ok(found)
    }

    fn get(&self, key: &str) -> Option<V> {
        let s = self.state.lock().ok()?;
        if !s.live {
            return None;
        }
        s.entries.get(key).cloned()
    }

    /// The generation a lookup starts in; `None` while nothing may be cached.
    pub fn generation(&self) -> Option<u64> {
        let s = self.state.lock().ok()?;
        s.live.then_some(s.generation)
    }

    fn keep(&self, generation: u64, key: &str, v: &V) {
        let Ok(mut s) = self.state.lock() else { return };
        if !s.live || s.generation != generation {
            return;
        }
        if s.entries.len() >= self.cap && !s.entries.contains_key(key) {
            // One out for the new one (whichever the map yields first).
            if let Some(old) = s.entries.keys().next().cloned() {
                s.entries.remove(&old);
            }
        }
        s.entries.insert(key.to_string(), v.clone());
    }

    /// Drops every entry; `live` says whether changes are heard from now on.
    fn reset(&self, live: bool) {
        if let Ok(mut s) = self.state.lock() {
            s.live = live;
            s.generation += 1;
            s.entries.clear();
        }
    }

    /// Something changed: forget everything.
    pub fn invalidate(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.generation += 1;
            s.entries.clear();
        }
    }
}
