//! The operator's actions: drain, undrain, weight.

use cidlb_core::BackendState;
use tracing::info;

use super::error::ControlError;
use super::registry::BackendCtl;
use super::views::BackendView;
use super::{Daemon, State};
use crate::config::MAX_WEIGHT;

impl State {
    /// The backend named `backend` (in `listener`, or in the only listener that has
    /// one by that name) and its listener's index.
    fn find_backend(
        &mut self,
        listener: Option<&str>,
        backend: &str,
    ) -> Result<(usize, &mut BackendCtl), ControlError> {
        if let Some(n) = listener {
            if !self.config.listeners.iter().any(|l| l.name == n) {
                return Err(ControlError::not_found(format!("no listener named {n:?}")));
            }
        }
        let mut hits = Vec::new();
        for (li, l) in self.config.listeners.iter().enumerate() {
            if listener.is_some_and(|n| n != l.name) {
                continue;
            }
            if let Some(bi) = self.listeners[li]
                .backends
                .iter()
                .position(|b| b.name == backend)
            {
                hits.push((li, bi));
            }
        }
        match hits.as_slice() {
            [] => Err(ControlError::not_found(match listener {
                Some(n) => format!("listener {n:?} has no backend named {backend:?}"),
                None => format!("no backend named {backend:?}"),
            })),
            [(li, bi)] => Ok((*li, &mut self.listeners[*li].backends[*bi])),
            many => {
                let ls: Vec<String> = many
                    .iter()
                    .map(|(li, _)| format!("{:?}", self.config.listeners[*li].name))
                    .collect();
                Err(ControlError::invalid(format!(
                    "several listeners have a backend named {backend:?} ({}): add ?listener=NAME",
                    ls.join(", ")
                )))
            }
        }
    }
}

impl Daemon {
    /// Applies an operator's change of listener `li` as one swap of its backend set
    /// (the Maglev table built outside the plane's lock: `swap_backends`); if that set
    /// cannot be prepared, by `one` on the plane (its own rebuild).
    pub(super) fn apply_one(
        &self,
        st: &State,
        li: usize,
        one: impl FnOnce(&dyn cidlb_core::plane::ListenerPlane),
    ) {
        let health_enabled = st.config.health.enabled;
        if let Err(e) = self.swap_backends(
            &st.listeners[li],
            &st.config.listeners[li],
            li,
            health_enabled,
        ) {
            tracing::warn!(listener = %st.config.listeners[li].name, error = %e,
                "cannot rebuild the backend set at once; applying the change in place");
            one(&**self.listener(li));
        }
    }

    /// Sets the operator's state of a backend (drain: `Draining`, undrain: `Up`) and
    /// returns its view. `listener` may be left out when the name is unique.
    pub fn set_admin_state(
        &self,
        listener: Option<&str>,
        backend: &str,
        state: BackendState,
    ) -> Result<BackendView, ControlError> {
        let mut st = self.state();
        let health_enabled = st.config.health.enabled;
        let (li, b) = st.find_backend(listener, backend)?;
        let old = b.admin;
        b.admin = state;
        let (id, eff) = (b.id, b.effective(health_enabled));
        if old != state {
            info!(listener = %st.config.listeners[li].name, backend, from = old.name(),
                to = state.name(), "operator changed the backend's state");
        }
        if old != state {
            self.apply_one(&st, li, |p| {
                p.set_backend_state(id, eff);
            });
        }
        self.save_state(&st);
        drop(st);
        self.backend_view(li, id)
    }

    /// Sets a backend's weight (`0..=10000`) and returns its view.
    pub fn set_weight(
        &self,
        listener: Option<&str>,
        backend: &str,
        weight: u32,
    ) -> Result<BackendView, ControlError> {
        if weight > MAX_WEIGHT {
            return Err(ControlError::invalid(format!(
                "weight {weight} is out of range 0..={MAX_WEIGHT}"
            )));
        }
        let mut st = self.state();
        let (li, b) = st.find_backend(listener, backend)?;
        let old = b.weight;
        b.weight = weight;
        let id = b.id;
        if old != weight {
            info!(listener = %st.config.listeners[li].name, backend, from = old, to = weight,
                "operator changed the backend's weight");
        }
        if old != weight {
            self.apply_one(&st, li, |p| {
                p.set_backend_weight(id, weight);
            });
        }
        self.save_state(&st);
        drop(st);
        self.backend_view(li, id)
    }
}
