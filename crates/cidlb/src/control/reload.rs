//! Reloads: the new file is parsed and validated, compared with the running
//! configuration (changes that need a restart — listeners added, removed, renamed or
//! moved, `upstream_source`, `upstream`, `reply_fwmark`, `workers`, `[admin]` — reject
//! it whole; so does a new backend of a transparent listener whose replies the host
//! would not route to cidlb), every listener's
//! new backend set is checked and its Maglev table built ([`Router::prepare_backends`]),
//! and only then is each listener's plane reconfigured in one step. A rejected reload
//! changes nothing.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cidlb_core::{Backend, HealthTracker, Router};
use serde::Serialize;
use tracing::{info, warn};

use super::error::ControlError;
use super::Daemon;
use crate::config::{Config, ListenerConfig};
use crate::specs::listener_specs;

/// What a reload changed.
#[derive(Clone, Debug, Serialize)]
pub struct ReloadReport {
    /// The new configuration generation.
    pub generation: u64,
    /// One line per change.
    pub changes: Vec<String>,
    /// How long the reload took, in milliseconds: reading and validating the file (for
    /// [`Daemon::reload`]), waiting for the control state, building every listener's
    /// backend set and swapping it in. Also the `cidlb_config_reload_seconds` gauge.
    pub duration_ms: f64,
}

impl Daemon {
    /// Re-reads the configuration file and applies it ([`Daemon::apply_config`]).
    /// Counted in `cidlb_config_reloads_total`.
    pub fn reload(&self) -> Result<ReloadReport, ControlError> {
        let r = self.reload_inner(Instant::now());
        match &r {
            Ok(rep) => {
                self.reloads_ok.fetch_add(1, Ordering::Relaxed);
                info!(
                    generation = rep.generation,
                    changes = rep.changes.len(),
                    duration_ms = rep.duration_ms,
                    "configuration reloaded"
                );
                for c in &rep.changes {
                    info!("reload: {c}");
                }
            }
            Err(e) => {
                self.reloads_rejected.fetch_add(1, Ordering::Relaxed);
                warn!(
                    "reload rejected, the running configuration stays: {}",
                    e.message
                );
            }
        }
        r
    }

    fn reload_inner(&self, started: Instant) -> Result<ReloadReport, ControlError> {
        let Some(path) = &self.config_path else {
            return Err(ControlError::conflict(
                "cidlb was started without --config: there is no file to reload",
            ));
        };
        let mut cfg = Config::load(path).map_err(|e| ControlError::invalid(e.to_string()))?;
        self.overrides.apply(&mut cfg);
        if !cfg.has_dns_backends() {
            *self.dns.lock().unwrap_or_else(|p| p.into_inner()) = None;
            return self.apply_config_since(cfg, started);
        }
        // Resolve the names now (the file may name new ones), then apply the expansion.
        let mut g = self.dns.lock().unwrap_or_else(|p| p.into_inner());
        let mut resolved = g.take().map(|d| d.resolved).unwrap_or_default();
        resolved.refresh(&cfg, Instant::now(), cfg.timeouts.flow_idle);
        let expanded = resolved.expand(&cfg);
        let r = self.apply_config_since(expanded, started);
        *g = Some(super::DnsState {
            file: cfg,
            resolved,
        });
        r
    }

    /// Applies a validated configuration to the running daemon, all or nothing (see
    /// the module docs).
    pub fn apply_config(&self, new: Config) -> Result<ReloadReport, ControlError> {
        self.apply_config_since(new, Instant::now())
    }

    /// [`Daemon::apply_config`] for a reload that began at `started` (reading and
    /// validating the file count in its duration).
    fn apply_config_since(
        &self,
        new: Config,
        started: Instant,
    ) -> Result<ReloadReport, ControlError> {
        let mut st = self.state();
        let old = st.config.clone();
        let restart = restart_needed(&old, &new);
        if !restart.is_empty() {
            return Err(ControlError::conflict(format!(
                "the new configuration needs a restart ({}); nothing was changed",
                restart.join("; ")
            )));
        }
        crate::specs::check_new_transparent_backends(&old, &new)
            .map_err(|e| ControlError::invalid(format!("{e}; nothing was changed")))?;
        let now = Instant::now();
        let keep_ids_for = old
            .timeouts
            .flow_idle
            .max(old.timeouts.cid_binding_idle)
            .max(new.timeouts.flow_idle)
            .max(new.timeouts.cid_binding_idle);
        let mut changes = describe_settings(&old, &new);
        let specs = listener_specs(&new, self.secret);
        let health_enabled = new.health.enabled;
        // Phase 1: new control views, ids and prepared backend sets; nothing touched.
        let mut staged = Vec::with_capacity(specs.len());
        for (li, spec) in specs.into_iter().enumerate() {
            self.check_stopping()?;
            let lname = &new.listeners[li].name;
            let plane = self.listener(li);
            let mut s = st.listeners[li].stage(
                &old.listeners[li],
                &new.listeners[li],
                now,
                keep_ids_for,
                &|id| plane.traffic(id),
                &mut changes,
            )?;
            if !health_enabled {
                for c in &mut s.backends {
                    c.health = HealthTracker::new(true);
                }
            }
            // Both list the configuration's backends, in its order.
            debug_assert_eq!(spec.backends.len(), s.backends.len());
            let backends: Vec<Backend> = spec
                .backends
                .into_iter()
                .zip(&s.backends)
                .map(|(mut b, c)| {
                    debug_assert_eq!(b.name, c.name);
                    b.id = c.id;
                    b.state = c.effective(health_enabled);
                    b.weight = c.weight;
                    b
                })
                .collect();
            let stopping = || self.stopping.load(Ordering::Relaxed);
            let prepared = Router::prepare_backends_unless(&spec.router, backends, &stopping)
                .map_err(|e| {
                    self.check_stopping().err().unwrap_or_else(|| {
                        ControlError::invalid(format!(
                            "listener {lname:?}: {e}; nothing was changed"
                        ))
                    })
                })?;
            staged.push((spec.router, prepared, s));
        }
        self.check_stopping()?;
        // Phase 2: swap. Nothing below fails.
        for (li, (router_cfg, prepared, s)) in staged.into_iter().enumerate() {
            self.listener(li).reconfigure(router_cfg, prepared);
            st.listeners[li].install(s);
        }
        self.plane.refresh_limits();
        st.config = new;
        st.generation += 1;
        self.save_state(&st);
        let took = started.elapsed();
        self.last_reload_micros.store(
            took.as_micros().try_into().unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        Ok(ReloadReport {
            generation: st.generation,
            changes,
            duration_ms: took.as_secs_f64() * 1e3,
        })
    }
}

impl Daemon {
    /// Fails once cidlb is stopping ([`Daemon::stop_flag`]): a reload gives up.
    fn check_stopping(&self) -> Result<(), ControlError> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err(ControlError::conflict(
                "cidlb is stopping: the reload was given up; nothing was changed",
            ));
        }
        Ok(())
    }
}

/// Changes between `old` and `new` that a reload cannot apply.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    let names = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| l.name.clone())
            .collect::<Vec<_>>()
    };
    if names(old) != names(new) {
        v.push(format!(
            "the listeners changed from [{}] to [{}]",
            names(old).join(", "),
            names(new).join(", ")
        ));
        return v;
    }
    for (o, n) in old.listeners.iter().zip(&new.listeners) {
        if o.address != n.address {
            v.push(format!(
                "listener {:?}: address {} -> {}",
                o.name, o.address, n.address
            ));
        }
        if o.upstream != n.upstream {
            v.push(format!(
                "listener {:?}: upstream {} -> {}",
                o.name, o.upstream, n.upstream
            ));
        }
        if o.reply_fwmark != n.reply_fwmark {
            let m = |m: Option<u32>| m.map_or("unset".into(), |m| m.to_string());
            v.push(format!(
                "listener {:?}: reply_fwmark {} -> {}",
                o.name,
                m(o.reply_fwmark),
                m(n.reply_fwmark)
            ));
        }
        if o.forwarding != n.forwarding {
            v.push(format!(
                "listener {:?}: forwarding {} -> {}",
                o.name, o.forwarding, n.forwarding
            ));
        }
        if o.forwarding.is_xdp() && !has_encrypted(o) && has_encrypted(n) {
            v.push(format!(
                "listener {:?}: the CID format of a forwarding = \"xdp-dr\" listener gains encrypted QUIC-LB (the slow path's cache is sized when the program is loaded)",
                o.name
            ));
        }
        if o.upstream_source != n.upstream_source {
            v.push(format!(
                "listener {:?}: upstream_source {} -> {}",
                o.name,
                o.upstream_source
                    .map_or("unset".into(), |i: IpAddr| i.to_string()),
                n.upstream_source
                    .map_or("unset".into(), |i: IpAddr| i.to_string())
            ));
        }
    }
    if old.workers != new.workers {
        v.push(format!(
            "workers {} -> {}",
            old.workers.map_or("unset".into(), |w| w.to_string()),
            new.workers.map_or("unset".into(), |w| w.to_string())
        ));
    }
    if old.log.format != new.log.format {
        v.push(format!(
            "log.format {:?} -> {:?}",
            old.log.format, new.log.format
        ));
    }
    if old.admin != new.admin {
        v.push(format!(
            "[admin] {} on {} -> {} on {}",
            if old.admin.enabled { "on" } else { "off" },
            old.admin.address(),
            if new.admin.enabled { "on" } else { "off" },
            new.admin.address()
        ));
    }
    v
}

/// Human-readable changes of settings other than backends.
fn describe_settings(old: &Config, new: &Config) -> Vec<String> {
    let mut v = Vec::new();
    let mut diff = |what: &str, a: String, b: String| {
        if a != b {
            v.push(format!("{what}: {a} -> {b}"));
        }
    };
    let mut others = Vec::new();
    fn d(x: Duration) -> String {
        humantime::format_duration(x).to_string()
    }
    type Get = fn(&Config) -> String;
    let global: [(&str, Get); 14] = [
        ("timeouts.flow_idle", |c| d(c.timeouts.flow_idle)),
        ("timeouts.cid_binding_idle", |c| {
            d(c.timeouts.cid_binding_idle)
        }),
        ("limits.max_flows", |c| c.limits.max_flows.to_string()),
        ("limits.max_bindings", |c| c.limits.max_bindings.to_string()),
        ("limits.new_flows_per_source", |c| {
            c.limits.new_flows_per_source.to_string()
        }),
        ("limits.new_flows_burst", |c| {
            c.limits.new_flows_burst.to_string()
        }),
        ("hashing.seed", |c| c.hashing.seed.to_string()),
        ("hashing.maglev_table_size", |c| {
            c.hashing.maglev_table_size.to_string()
        }),
        ("health.enabled", |c| c.health.enabled.to_string()),
        ("health.interval", |c| d(c.health.interval)),
        ("health.timeout", |c| d(c.health.timeout)),
        ("health.rise", |c| c.health.rise.to_string()),
        ("health.fall", |c| c.health.fall.to_string()),
        ("log.events_per_second", |c| {
            c.log.events_per_second.to_string()
        }),
    ];
    for (what, get) in global {
        diff(what, get(old), get(new));
    }
    for (o, n) in old.listeners.iter().zip(&new.listeners) {
        let p = format!("listener {:?}:", o.name);
        type GetL = fn(&ListenerConfig) -> String;
        let per_listener: [(&str, GetL); 3] = [
            ("routing", |l| l.routing.to_string()),
            ("cid_length", |l| format!("{:?}", l.cid_length)),
            ("multi_cid", |l| format!("{:?}", l.multi_cid)),
        ];
        for (what, get) in per_listener {
            diff(&format!("{p} {what}"), get(o), get(n));
        }
        // Anything else of the listener (e.g. its CID format).
        let (mut o2, mut n2) = (o.clone(), n.clone());
        o2.backends.clear();
        n2.backends.clear();
        (o2.routing, o2.cid_length, o2.multi_cid) = (n2.routing, n2.cid_length, n2.multi_cid);
        if o2 != n2 {
            others.push(format!("{p} other listener settings changed"));
        }
    }
    v.extend(others);
    v
}

/// Whether `l`'s CID format has an encrypted QUIC-LB configuration.
fn has_encrypted(l: &ListenerConfig) -> bool {
    l.format_set().is_some_and(|set| {
        set.configs()
            .any(cidlb_cidformat::QuicLbConfig::is_encrypted)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xdp(format: &str) -> Config {
        let text = format!(
            "[[listener]]\nname = \"l\"\naddress = \"192.0.2.10:5684\"\ncid_length = 9\n\
             forwarding = \"xdp-dr\"\ninterface = \"eth1\"\n\n  [listener.cid_format]\n  \
             format = \"quic-lb\"\n{format}\n  [[listener.backend]]\n  name = \"b0\"\n  \
             address = \"10.0.0.1:5684\"\n  server_id = \"11\"\n"
        );
        Config::from_toml_str(&text, "test").unwrap()
    }

    fn rotation(r: u8, key: Option<&str>) -> String {
        let key = key.map_or(String::new(), |k| {
            format!("    key = \"{}\"\n", k.repeat(16))
        });
        format!(
            "\n    [[listener.cid_format.config]]\n    rotation = {r}\n    server_id_length = 1\n    nonce_length = 7\n{key}"
        )
    }

    #[test]
    fn an_xdp_dr_format_reloads_unless_it_gains_encryption() {
        let plain = xdp(&rotation(0, None));
        let enc0 = xdp(&rotation(0, Some("5c")));
        let enc01 = xdp(&(rotation(0, Some("5c")) + &rotation(1, Some("a1"))));
        // A key rotation (a new encrypted rotation), and removing the old one: reloaded.
        assert_eq!(restart_needed(&enc0, &enc01), Vec::<String>::new());
        assert_eq!(
            restart_needed(&enc01, &xdp(&rotation(1, Some("a1")))),
            Vec::<String>::new()
        );
        // Encrypted to plaintext: reloaded (the cache just goes unused).
        assert_eq!(restart_needed(&enc0, &plain), Vec::<String>::new());
        // Plaintext to encrypted: the slow path's cache was not made: a restart.
        let v = restart_needed(&plain, &enc0);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("gains encrypted QUIC-LB"), "{v:?}");
    }
}
