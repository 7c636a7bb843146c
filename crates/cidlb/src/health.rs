//! The health-check thread: one per daemon, probing every backend of every listener
//! each `health.interval` with a DTLS ClientHello ([`cidlb_net::health::Prober`]) and
//! handing the results to [`Daemon::apply_health`], which applies `rise`/`fall`.
//!
//! The settings are read again at every round, so a reload that changes `[health]` or
//! the backends takes effect at the next round. All backends are probed at once; a
//! round lasts at most `health.timeout`.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cidlb_net::health::{ProbeResult, ProbeTarget, Prober};
use tracing::{debug, info, warn};

use crate::control::Daemon;

/// A stop signal the thread waits on between rounds.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl StopSignal {
    /// Asks the thread to stop; it does within one probe timeout.
    pub fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Sleeps until `deadline` or a stop; returns true when stopped.
    pub fn wait_until(&self, deadline: Instant) -> bool {
        let mut g = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if *g {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = self
                .cv
                .wait_timeout(g, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Starts the health-check thread.
pub fn spawn(
    daemon: Arc<Daemon>,
    stop: Arc<StopSignal>,
    seed: u64,
) -> std::io::Result<JoinHandle<()>> {
    let mut prober = Prober::new(seed)?;
    std::thread::Builder::new()
        .name("cidlb-health".into())
        .spawn(move || {
            debug!("health checks started");
            // Probes without a socket in the last round (logged when that changes).
            let mut no_socket = 0;
            loop {
                let start = Instant::now();
                let (cfg, targets) = daemon.health_targets();
                if !cfg.enabled {
                    prober.retain(&[]);
                    if stop.wait_until(start + Duration::from_secs(1)) {
                        break;
                    }
                    continue;
                }
                let addrs: Vec<ProbeTarget> = targets.iter().map(|t| t.2).collect();
                let results = prober.probe(&addrs, cfg.timeout);
                let short = results
                    .iter()
                    .filter(|r| **r == ProbeResult::NoSocket)
                    .count();
                if short > 0 && no_socket == 0 {
                    warn!(
                        backends = short,
                        "health checks cannot open a probe socket (out of file descriptors?); \
                         those backends keep the health they had"
                    );
                } else if short == 0 && no_socket > 0 {
                    info!("health checks can open their sockets again");
                }
                no_socket = short;
                daemon.apply_health(&targets, &results);
                prober.retain(&addrs);
                let next = start + cfg.interval;
                if Instant::now() > next + cfg.interval {
                    warn!("health checks fall behind their interval");
                }
                if stop.wait_until(next) {
                    break;
                }
            }
            debug!("health checks stopped");
        })
}
