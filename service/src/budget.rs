//! File descriptors: every listener's connection cap must fit in what the process
//! may open, so that a flood on one listener can never make another (in the same
//! process) fail with `EMFILE`.
//!
//! At start a service raises its soft `RLIMIT_NOFILE` to the hard limit
//! ([`raise_nofile_limit`]), then fits its listeners' caps ([`fit`]): each
//! connection is counted with the descriptors it may hold (a socket, plus an open
//! file for services that stream files), and [`RESERVE`] descriptors are kept for
//! everything else (databases, outgoing connections, staging files, the runtime).
//! Caps that do not fit are scaled down together, in proportion, and the caller
//! logs the result; a limit too small for even [`MIN_CAP`] connections per
//! listener is an error.

/// Descriptors kept out of the connection budget.
pub const RESERVE: u64 = 512;
/// The smallest cap a listener is scaled down to.
pub const MIN_CAP: usize = 16;

/// One listener's cap.
#[derive(Debug, Clone)]
pub struct Cap {
    /// For messages, e.g. `"[walrus] max_connections"`.
    pub name: String,
    pub connections: usize,
    /// Descriptors one connection may hold.
    pub fds_per_connection: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("the descriptor limit (RLIMIT_NOFILE) is {limit}: too low for {listeners} listeners of at least {MIN_CAP} connections each plus {RESERVE} other files; raise it (ulimit -n, LimitNOFILE=)")]
    TooLow { limit: u64, listeners: usize },
    #[error("reading RLIMIT_NOFILE: {0}")]
    Rlimit(std::io::Error),
}

/// Raises the soft descriptor limit to the hard limit; returns the limit now in force.
pub fn raise_nofile_limit() -> Result<u64, BudgetError> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(BudgetError::Rlimit(std::io::Error::last_os_error()));
    }
    if r.rlim_cur < r.rlim_max {
        let want = libc::rlimit {
            rlim_cur: r.rlim_max,
            rlim_max: r.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            r.rlim_cur = r.rlim_max;
        }
    }
    Ok(r.rlim_cur)
}

/// Fits `caps` into `limit` descriptors (less [`RESERVE`]), scaling them down in
/// proportion if they do not fit. Returns whether anything was scaled.
pub fn fit(limit: u64, caps: &mut [Cap]) -> Result<bool, BudgetError> {
    let need = |caps: &[Cap]| -> u64 {
        caps.iter()
            .map(|c| c.connections as u64 * c.fds_per_connection.max(1))
            .sum()
    };
    let room = limit.saturating_sub(RESERVE);
    let wanted = need(caps);
    if wanted <= room {
        return Ok(false);
    }
    let min: u64 = caps
        .iter()
        .map(|c| MIN_CAP as u64 * c.fds_per_connection.max(1))
        .sum();
    if min > room {
        return Err(BudgetError::TooLow {
            limit,
            listeners: caps.len(),
        });
    }
    for c in caps.iter_mut() {
        let scaled = (c.connections as u128 * room as u128 / wanted as u128) as usize;
        c.connections = scaled.max(MIN_CAP).min(c.connections);
    }
    // Rounding up to MIN_CAP may overshoot: trim the largest until it fits.
    while need(caps) > room {
        let Some(big) = caps.iter_mut().max_by_key(|c| c.connections) else {
            break;
        };
        if big.connections <= MIN_CAP {
            break;
        }
        big.connections -= 1;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    fn cap(n: usize, f: u64) -> Cap {
        Cap {
            name: "x".into(),
            connections: n,
            fds_per_connection: f,
        }
    }
    #[test]
    fn fits_or_scales() {
        let mut c = vec![cap(1024, 2), cap(256, 1)];
        assert!(!fit(1 << 20, &mut c).unwrap());
        assert_eq!(c[0].connections, 1024);
        let mut c = vec![cap(1024, 2), cap(1024, 1)];
        assert!(fit(2048, &mut c).unwrap());
        let used: u64 = c
            .iter()
            .map(|c| c.connections as u64 * c.fds_per_connection)
            .sum();
        assert!(used + RESERVE <= 2048, "{c:?}");
        assert!(c.iter().all(|c| c.connections >= MIN_CAP));
        let mut c = vec![cap(1024, 2); 40];
        assert!(matches!(fit(1024, &mut c), Err(BudgetError::TooLow { .. })));
    }
    #[test]
    fn raise() {
        let n = raise_nofile_limit().unwrap();
        assert!(n >= 64);
    }
}
