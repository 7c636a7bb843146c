//! The XDP data plane: its listeners and the slow path's thread.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use cidlb_core::plane::{DataPlane, ListenerPlane};

use crate::{XdpError, XdpListener, XdpListenerConfig};

/// How often the slow path looks for queued encrypted CIDs.
const SLOW_PATH_PERIOD: Duration = Duration::from_millis(2);

/// A running XDP plane: one program per listener, and a thread that decodes the
/// encrypted CIDs the programs queue ([`XdpListener::service_punts`]).
pub struct XdpPlane {
    xdp: Vec<Arc<XdpListener>>,
    listeners: Vec<Arc<dyn ListenerPlane>>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
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
        Ok(XdpPlane {
            listeners: xdp
                .iter()
                .map(|l| l.clone() as Arc<dyn ListenerPlane>)
                .collect(),
            xdp,
            stop,
            thread: Mutex::new(Some(thread)),
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
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}
