//! A small QMP client: JSON lines over the instance's unix socket.
//!
//! Hand-written rather than the `qapi` crate: `qapi-qmp` types every command and event
//! from one QEMU release's schema (a large generated crate to build on every node),
//! so an event or a field of a newer QEMU it does not know is a decoding problem;
//! the NC sends six commands and reads four events, which `serde_json::Value`
//! covers whatever the QEMU version.
//!
//! One reader task per connection routes answers to their callers (by `id`) and
//! events to the instance's watcher; it ends when QEMU closes the socket (QEMU
//! exited), which the watcher sees as the end of its event channel.
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

/// How long one command may take (blockdev-add connects to the NBD server).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest line accepted from QEMU (answers to our commands are small).
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    #[error("QMP socket {path}: {err}")]
    Connect { path: String, err: std::io::Error },
    #[error("QMP: {0}")]
    Protocol(String),
    /// QEMU answered with an error (`class`: `GenericError`, `DeviceNotFound`, …).
    #[error("QMP {command}: {class}: {desc}")]
    Command {
        command: String,
        class: String,
        desc: String,
    },
    #[error("QMP connection closed (QEMU exited?)")]
    Closed,
    #[error("QMP {0}: no answer within {COMMAND_TIMEOUT:?}")]
    TimedOut(String),
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Value>>>>;

/// One QMP connection (QEMU accepts one client per monitor socket).
pub struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next: AtomicU64,
}

/// An event as QEMU sent it: `{"event": NAME, "data": {...}, "timestamp": ...}`.
#[derive(Debug, Clone)]
pub struct QmpEvent {
    pub name: String,
    pub data: Value,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Qmp {
    /// Connects, reads the greeting, negotiates capabilities, and starts the reader.
    /// Events arrive on the returned channel until the connection ends.
    pub async fn connect(
        path: &Path,
    ) -> Result<(Arc<Qmp>, mpsc::UnboundedReceiver<QmpEvent>), QmpError> {
        let stream = UnixStream::connect(path)
            .await
            .map_err(|err| QmpError::Connect {
                path: path.display().to_string(),
                err,
            })?;
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let greeting = tokio::time::timeout(COMMAND_TIMEOUT, read_line(&mut rd))
            .await
            .map_err(|_| QmpError::TimedOut("greeting".into()))??;
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(format!(
                "unexpected greeting {greeting}"
            )));
        }
        let mut negotiate = json!({"execute": "qmp_capabilities", "id": 0}).to_string();
        negotiate.push('\n');
        wr.write_all(negotiate.as_bytes())
            .await
            .map_err(|e| QmpError::Protocol(e.to_string()))?;
        let ack = tokio::time::timeout(COMMAND_TIMEOUT, async {
            loop {
                let v = read_line(&mut rd).await?;
                if v.get("id") == Some(&json!(0)) {
                    return Ok::<Value, QmpError>(v);
                }
            }
        })
        .await
        .map_err(|_| QmpError::TimedOut("qmp_capabilities".into()))??;
        if let Some(e) = ack.get("error") {
            return Err(QmpError::Protocol(format!("qmp_capabilities: {e}")));
        }
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let p = pending.clone();
        tokio::spawn(async move {
            while let Ok(v) = read_line(&mut rd).await {
                if let Some(name) = v.get("event").and_then(Value::as_str) {
                    let data = v.get("data").cloned().unwrap_or(Value::Null);
                    let _ = ev_tx.send(QmpEvent {
                        name: name.to_string(),
                        data,
                    });
                } else if let Some(id) = v.get("id").and_then(Value::as_u64) {
                    if let Some(tx) = lock(&p).remove(&id) {
                        let _ = tx.send(v);
                    }
                }
            }
            // Callers still waiting see the senders dropped (Closed).
            lock(&p).clear();
        });
        Ok((
            Arc::new(Qmp {
                writer: tokio::sync::Mutex::new(wr),
                pending,
                next: AtomicU64::new(1),
            }),
            ev_rx,
        ))
    }

    /// Runs `command` with `arguments`; its `return` value.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value, QmpError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut msg = if arguments.is_null() {
            json!({"execute": command, "id": id})
        } else {
            json!({"execute": command, "arguments": arguments, "id": id})
        }
        .to_string();
        msg.push('\n');
        let sent = {
            let mut w = self.writer.lock().await;
            w.write_all(msg.as_bytes()).await
        };
        if sent.is_err() {
            lock(&self.pending).remove(&id);
            return Err(QmpError::Closed);
        }
        let answer = match tokio::time::timeout(COMMAND_TIMEOUT, rx).await {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => return Err(QmpError::Closed),
            Err(_) => {
                lock(&self.pending).remove(&id);
                return Err(QmpError::TimedOut(command.to_string()));
            }
        };
        if let Some(e) = answer.get("error") {
            let s = |k: &str| e.get(k).and_then(Value::as_str).unwrap_or("").to_string();
            return Err(QmpError::Command {
                command: command.to_string(),
                class: s("class"),
                desc: s("desc"),
            });
        }
        Ok(answer.get("return").cloned().unwrap_or(Value::Null))
    }

    /// `query-status`'s `status` (`running`, `paused`, `internal-error`, …).
    pub async fn status(&self) -> Result<String, QmpError> {
        let v = self.execute("query-status", Value::Null).await?;
        v.get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QmpError::Protocol(format!("query-status answered {v}")))
    }
}

async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(rd: &mut R) -> Result<Value, QmpError> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut *rd)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await
            .map_err(|_| QmpError::Closed)?;
        if n == 0 {
            return Err(QmpError::Closed);
        }
        if buf.last() != Some(&b'\n') && n >= MAX_LINE {
            return Err(QmpError::Protocol("line too long".into()));
        }
        let line = buf.trim_ascii();
        if line.is_empty() {
            continue;
        }
        return serde_json::from_slice(line)
            .map_err(|e| QmpError::Protocol(format!("bad JSON from QEMU: {e}")));
    }
}

/// Whether a status after a `STOP` means the guest cannot go on (a KVM that cannot
/// emulate an instruction leaves QEMU alive with `internal-error`).
pub fn is_dead_status(status: &str) -> bool {
    matches!(
        status,
        "internal-error" | "io-error" | "guest-panicked" | "paused"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_statuses() {
        assert!(is_dead_status("internal-error"));
        assert!(is_dead_status("paused"));
        assert!(!is_dead_status("running"));
        assert!(!is_dead_status("shutdown"));
    }

    #[tokio::test]
    async fn talks_json_lines_and_routes_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let server = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (rd, mut wr) = s.into_split();
            let mut rd = BufReader::new(rd);
            wr.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let mut line = String::new();
            rd.read_line(&mut line).await.unwrap();
            assert!(line.contains("qmp_capabilities"));
            wr.write_all(b"{\"return\": {}, \"id\": 0}\n")
                .await
                .unwrap();
            line.clear();
            rd.read_line(&mut line).await.unwrap();
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["execute"], "device_del");
            assert_eq!(v["arguments"]["id"], "d1");
            let id = v["id"].clone();
            // An event before the answer, then an error answer.
            wr.write_all(b"{\"event\": \"DEVICE_DELETED\", \"data\": {\"device\": \"d1\"}}\n")
                .await
                .unwrap();
            let ans = json!({"error": {"class": "DeviceNotFound", "desc": "no d1"}, "id": id});
            wr.write_all(format!("{ans}\n").as_bytes()).await.unwrap();
        });
        let (q, mut ev) = Qmp::connect(&path).await.unwrap();
        let err = q
            .execute("device_del", json!({"id": "d1"}))
            .await
            .unwrap_err();
        match err {
            QmpError::Command { class, .. } => assert_eq!(class, "DeviceNotFound"),
            e => panic!("unexpected {e}"),
        }
        let e = ev.recv().await.unwrap();
        assert_eq!(e.name, "DEVICE_DELETED");
        assert_eq!(e.data["device"], "d1");
        server.await.unwrap();
        // Server gone: the event channel ends and commands fail as Closed.
        assert!(ev.recv().await.is_none());
        assert!(matches!(
            q.execute("query-status", Value::Null).await,
            Err(QmpError::Closed)
        ));
    }
}
