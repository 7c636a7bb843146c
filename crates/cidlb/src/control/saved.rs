//! The opt-in state file (`[admin] state_file`): the operator's drains and weights,
//! kept across restarts.
//!
//! After every operator action and every reload, the backends whose operator's state
//! or weight differs from the file are written (a new file renamed over the old, so a
//! crash leaves one or the other), each with the file's values at that time. At start,
//! a saved value is applied where the configuration file still says what it said then:
//! the file wins where it changed since (the rule reloads follow).

use std::collections::BTreeMap;
use std::path::Path;

use cidlb_core::BackendState;
use serde::{Deserialize, Serialize};

use super::State;

/// The file's layout (version 1).
#[derive(Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct Saved {
    version: u32,
    /// Listener name → backend name → what the operator set.
    listeners: BTreeMap<String, BTreeMap<String, SavedBackend>>,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(super) struct SavedBackend {
    state: String,
    weight: u32,
    /// The configuration file's values when this was saved.
    file_state: String,
    file_weight: u32,
}

fn state(word: &str) -> Option<BackendState> {
    [BackendState::Up, BackendState::Draining, BackendState::Down]
        .into_iter()
        .find(|s| s.name() == word)
}

impl Saved {
    /// What `st` holds that differs from its configuration file.
    pub fn of(st: &State) -> Saved {
        let mut listeners = BTreeMap::new();
        for (lc, lcfg) in st.listeners.iter().zip(&st.config.listeners) {
            let mut m = BTreeMap::new();
            for b in &lc.backends {
                let Some(fb) = lcfg.backends.iter().find(|f| f.name == b.name) else {
                    continue;
                };
                if b.admin != fb.state || b.weight != fb.weight {
                    m.insert(
                        b.name.clone(),
                        SavedBackend {
                            state: b.admin.name().into(),
                            weight: b.weight,
                            file_state: fb.state.name().into(),
                            file_weight: fb.weight,
                        },
                    );
                }
            }
            if !m.is_empty() {
                listeners.insert(lcfg.name.clone(), m);
            }
        }
        Saved {
            version: 1,
            listeners,
        }
    }

    /// Writes it to `path` (a new file, renamed over the old one).
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text + "\n")?;
        std::fs::rename(&tmp, path)
    }

    /// Reads `path`; `Ok(None)` when there is no such file.
    pub fn load(path: &Path) -> Result<Option<Saved>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        let s: Saved = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a cidlb state file: {e}", path.display()))?;
        if s.version != 1 {
            return Err(format!("{}: unknown version {}", path.display(), s.version));
        }
        Ok(Some(s))
    }

    /// Applies to `st` what still holds (the file has not changed that backend since);
    /// returns (listener index, backend name, state, weight) of each backend changed.
    pub fn apply(&self, st: &mut State) -> Vec<(usize, String, BackendState, u32)> {
        let mut changed = Vec::new();
        for (li, lcfg) in st.config.listeners.iter().enumerate() {
            let Some(saved) = self.listeners.get(&lcfg.name) else {
                continue;
            };
            for b in &mut st.listeners[li].backends {
                let (Some(sb), Some(fb)) = (
                    saved.get(&b.name),
                    lcfg.backends.iter().find(|f| f.name == b.name),
                ) else {
                    continue;
                };
                let unchanged = sb.file_state == fb.state.name() && sb.file_weight == fb.weight;
                let Some(s) = state(&sb.state).filter(|_| unchanged) else {
                    continue;
                };
                b.admin = s;
                b.weight = sb.weight.min(crate::config::MAX_WEIGHT);
                changed.push((li, b.name.clone(), b.admin, b.weight));
            }
        }
        changed
    }
}
