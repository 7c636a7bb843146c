//! The XDP data plane: its listeners and the slow path's thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cidlb_core::plane::{DataPlane, ListenerPlane};

use crate::{XdpError, XdpListener, XdpListenerConfig};

/// How often the slow path looks for queued encrypted CIDs.
const SLOW_PATH_PERIOD: Duration = Duration::from_millis(2);
/// How often the tables are counted (live flows and bindings for `/tables` and the
/// metrics), at least: a walk that takes longer waits twenty times its duration, so that
/// counting takes at most 5 % of a CPU.
const COUNT_PERIOD: Duration = Duration::from_secs(5);

/// A running XDP plane: one program per listener, a thread that decodes the encrypted
/// CIDs the programs queue ([`XdpListener::service_punts`]), and one that counts the
/// tables every few seconds ([`XdpListener::count_tables`]).
pub struct XdpPlane {
    xdp: Vec<Arc<XdpListener>>,
    listeners: Vec<Arc<dyn ListenerPlane>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
    counter: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for XdpPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpPlane")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl XdpPlane {
    /// Loads (and attaches, as each asks) one program per listener.
    pub fn start(configs: Vec<XdpListenerConfig>) -> Result<XdpPlane, XdpError> {
        let mut xdp = Vec::new();
        for c in configs {
            xdp.push(Arc::new(XdpListener::new(c)?));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            let xdp = xdp.clone();
            std::thread::Builder::new()
                .name("cidlb-xdp-slow".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let n: usize = xdp.iter().map(|l| l.service_punts()).sum();
                        if n == 0 {
                            std::thread::sleep(SLOW_PATH_PERIOD);
                        }
                    }
                })
                .map_err(|e| XdpError::Load(format!("slow path thread: {e}")))?
        };
        let counter = {
            let stop = stop.clone();
            let xdp = xdp.clone();
            std::thread::Builder::new()
                .name("cidlb-xdp-count".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let t = std::time::Instant::now();
                        for l in &xdp {
                            l.count_tables();
                        }
                        let next = t + COUNT_PERIOD.max(20 * t.elapsed());
                        while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < next {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                })
                .map_err(|e| XdpError::Load(format!("table counting thread: {e}")))?
        };
        Ok(XdpPlane {
            listeners: xdp
                .iter()
                .map(|l| l.clone() as Arc<dyn ListenerPlane>)
                .collect(),
            xdp,
            stop,
            thread: Mutex::new(Some(thread)),
            counter: Mutex::new(Some(counter)),
        })
    }
}

impl XdpPlane {
    /// The listeners with this plane's own operations (learned bindings, MACs, the CID
    /// format), in configuration order.
    pub fn xdp_listeners(&self) -> &[Arc<XdpListener>] {
        &self.xdp
    }
}

impl DataPlane for XdpPlane {
    fn listeners(&self) -> &[Arc<dyn ListenerPlane>] {
        &self.listeners
    }

    fn refresh_limits(&self) {
        // Map sizes are fixed when a program is loaded.
    }

    fn shutdown(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for XdpPlane {
    fn drop(&mut self) {
        self.shutdown();
        for t in [&self.thread, &self.counter] {
            if let Some(t) = t.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = t.join();
            }
        }
    }
}
