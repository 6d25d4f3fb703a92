//! Progress of long operations (bundle, unbundle, upload, download, snapshot
//! uploads): bytes done, rate and ETA, redrawn on one line of stderr four times
//! a second — only when stderr is a terminal. On a pipe or a file nothing is
//! drawn, so scripts and logs see only the commands' normal output.
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub struct Progress {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    drawer: Option<JoinHandle<()>>,
}

impl Progress {
    /// Starts a display for `label` with `total` bytes expected. Callers add
    /// to [`Progress::counter`] as bytes are processed.
    pub fn start(label: &str, total: u64) -> Progress {
        let force = std::env::var_os("EUCA_PROGRESS").is_some_and(|v| v == "1");
        Self::start_on(label, total, force || std::io::stderr().is_terminal())
    }

    fn start_on(label: &str, total: u64, draw: bool) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let drawer = draw.then(|| {
            let (done, stop, label) = (done.clone(), stop.clone(), label.to_string());
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut err = std::io::stderr();
                loop {
                    let finished = stop.load(Ordering::Acquire);
                    let line = render(&label, done.load(Ordering::Relaxed), total, start.elapsed());
                    let _ = write!(err, "\r{line}\x1b[K");
                    let _ = err.flush();
                    if finished {
                        let _ = writeln!(err);
                        return;
                    }
                    std::thread::park_timeout(Duration::from_millis(250));
                }
            })
        });
        Progress { done, stop, drawer }
    }

    /// Whether the display is drawn (stderr is a terminal).
    pub fn drawing(&self) -> bool {
        self.drawer.is_some()
    }

    /// The byte counter to add to.
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.done.clone()
    }

    /// Draws the final state (when drawing) and ends the display.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.drawer.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end();
    }
}

/// `label  1.2 GiB / 2.0 GiB  60%  312.4 MiB/s  ETA 0:03`
fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let pct = if total > 0 {
        (done.min(total) as f64 * 100.0 / total as f64) as u32
    } else {
        100
    };
    let eta = if done >= total {
        format!("done in {}", clock(secs))
    } else if rate > 0.0 {
        format!("ETA {}", clock((total - done) as f64 / rate))
    } else {
        "ETA --:--".to_string()
    };
    format!(
        "{label}  {} / {}  {pct}%  {}/s  {eta}",
        bytes(done as f64),
        bytes(total as f64),
        bytes(rate)
    )
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn clock(secs: f64) -> String {
    let s = secs.round() as u64;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_bytes_rate_and_eta() {
        let line = render("bundling", 512 << 20, 2 << 30, Duration::from_secs(2));
        assert_eq!(
            line,
            "bundling  512.0 MiB / 2.0 GiB  25%  256.0 MiB/s  ETA 0:06"
        );
        let line = render("x", 10, 10, Duration::from_secs(75));
        assert!(line.ends_with("100%  0 B/s  done in 1:15"), "{line}");
        assert!(render("x", 0, 0, Duration::ZERO).contains("done in 0:00"));
        assert!(render("x", 0, 5, Duration::ZERO).ends_with("ETA --:--"));
        assert_eq!(clock(3725.0), "1:02:05");
    }

    #[test]
    fn counts_without_drawing_off_a_terminal() {
        let p = Progress::start_on("quiet", 100, false);
        p.counter().fetch_add(40, Ordering::Relaxed);
        assert_eq!(p.counter().load(Ordering::Relaxed), 40);
        assert!(p.drawer.is_none());
        p.finish();
    }
}
