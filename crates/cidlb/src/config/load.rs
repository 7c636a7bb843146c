//! The entry points: [`Config::from_toml_str`], [`Config::load`] and the quick-start
//! [`Config::quick`].

use std::net::SocketAddr;
use std::path::Path;

use toml::Spanned;

use super::model::{RawBackend, RawConfig, RawListener};
use super::validate::Ctx;
use super::{Config, ConfigError, ConfigErrorKind, MAX_CONFIG_BYTES};

impl Config {
    /// Parses and validates TOML text; `origin` (usually the file name) prefixes every
    /// error message.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx {
            origin,
            text: Some(text),
        };
        let de = toml::Deserializer::new(text);
        let raw: RawConfig =
            serde_path_to_error::deserialize(de).map_err(|e| ctx.serde_error(&e))?;
        ctx.validate(&raw)
    }

    /// Reads, parses and validates a configuration file; errors name the file.
    /// A file larger than [`MAX_CONFIG_BYTES`] is refused before it is parsed.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        use std::io::Read as _;
        let origin = path.display().to_string();
        let io = |message: String, source: Option<std::io::Error>| ConfigError {
            message,
            origin: origin.clone(),
            kind: ConfigErrorKind::Io,
            path: None,
            location: None,
            source,
        };
        let file = std::fs::File::open(path)
            .map_err(|e| io(format!("cannot read the configuration file: {e}"), Some(e)))?;
        // Read one byte past the bound to tell "at the bound" from "over it".
        let mut text = String::new();
        file.take(MAX_CONFIG_BYTES + 1)
            .read_to_string(&mut text)
            .map_err(|e| io(format!("cannot read the configuration file: {e}"), Some(e)))?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(io(
                format!(
                    "the configuration file is larger than {} MiB: not read (is it the right file?)",
                    MAX_CONFIG_BYTES >> 20
                ),
                None,
            ));
        }
        Config::from_toml_str(&text, &origin)
    }

    /// The configuration behind `cidlb run --listen ADDR --backend ADDR... --cid-len N`:
    /// one listener named `default` on `listen`, routing by CIDs of `cid_len` bytes, with
    /// backends `backend-0`, `backend-1`... at `backends` (weight 1, up), and every other
    /// setting at its default. Errors name the flag (`--backend`, `--cid-len`...).
    pub fn quick(
        listen: SocketAddr,
        backends: &[SocketAddr],
        cid_len: usize,
    ) -> Result<Config, ConfigError> {
        let none = 0..0;
        let raw = RawConfig {
            workers: None,
            timeouts: None,
            limits: None,
            hashing: None,
            health: None,
            admin: None,
            log: None,
            resolver: None,
            listeners: vec![RawListener {
                name: Some(Spanned::new(none.clone(), "default".to_owned())),
                address: Some(Spanned::new(none.clone(), listen.to_string())),
                cid_length: Some(Spanned::new(
                    none.clone(),
                    i64::try_from(cid_len).unwrap_or(i64::MAX),
                )),
                backends: backends
                    .iter()
                    .enumerate()
                    .map(|(i, a)| RawBackend {
                        name: Some(Spanned::new(none.clone(), format!("backend-{i}"))),
                        address: Some(Spanned::new(none.clone(), a.to_string())),
                        ..RawBackend::default()
                    })
                    .collect(),
                ..RawListener::default()
            }],
        };
        let ctx = Ctx {
            origin: "command line",
            text: None,
        };
        ctx.validate(&raw).map_err(|mut e| {
            if let Some(p) = e.path.take() {
                e.path = Some(quick_flag(&p));
            }
            // "(already used by listener[0].backend[0])" -> "(already used by --backend #1)"
            let mut msg = String::with_capacity(e.message.len());
            let mut rest = e.message.as_str();
            const PREFIX: &str = "listener[0].backend[";
            while let Some(i) = rest.find(PREFIX) {
                msg.push_str(&rest[..i]);
                let digits = i + PREFIX.len();
                let end = rest[digits..]
                    .find(']')
                    .map_or(rest.len(), |j| digits + j + 1);
                msg.push_str(&quick_flag(&rest[i..end]));
                rest = &rest[end..];
            }
            msg.push_str(rest);
            e.message = msg;
            e
        })
    }
}

/// Maps a key path of the quick configuration to the flag that set it.
pub(super) fn quick_flag(path: &str) -> String {
    if path == "listener[0].address" {
        "--listen".to_owned()
    } else if path == "listener[0].cid_length" {
        "--cid-len".to_owned()
    } else if path == "listener[0].backend" {
        "--backend".to_owned()
    } else if let Some(rest) = path.strip_prefix("listener[0].backend[") {
        // "3].address" -> "--backend #4" (the fourth --backend flag)
        let n: usize = rest
            .split(']')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        format!("--backend #{}", n + 1)
    } else {
        path.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use cidlb_core::BackendState;

    use super::*;
    use crate::config::tests::{parse, EXAMPLE};
    use crate::config::{Hashing, Limits, RoutingMode, Timeouts};

    #[test]
    fn reference_example_loads_from_disk() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/cidlb.toml");
        if p.exists() {
            let c = Config::load(&p).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c, parse(EXAMPLE).unwrap());
        }
        let e = Config::load(Path::new("/nonexistent/cidlb.toml")).unwrap_err();
        assert_eq!(e.kind(), ConfigErrorKind::Io);
        assert!(
            e.to_string()
                .starts_with("/nonexistent/cidlb.toml: cannot read"),
            "{e}"
        );
        assert!(std::error::Error::source(&e).is_some());
    }

    #[test]
    fn quick_config() {
        let listen: SocketAddr = "0.0.0.0:5684".parse().unwrap();
        let b: Vec<SocketAddr> = vec![
            "10.0.0.1:5684".parse().unwrap(),
            "10.0.0.2:5684".parse().unwrap(),
        ];
        let c = Config::quick(listen, &b, 8).unwrap();
        assert_eq!(c.listeners.len(), 1);
        let l = &c.listeners[0];
        assert_eq!(
            (l.name.as_str(), l.address, l.cid_length),
            ("default", listen, Some(8))
        );
        assert_eq!(l.routing, RoutingMode::Cid);
        assert_eq!(l.backends.len(), 2);
        assert_eq!(l.backends[1].name, "backend-1");
        assert_eq!(l.backends[1].address, b[1]);
        assert_eq!(
            (l.backends[1].weight, l.backends[1].state),
            (1, BackendState::Up)
        );
        assert_eq!(c.timeouts, Timeouts::default());
        assert_eq!(c.limits, Limits::default());
        assert_eq!(c.hashing, Hashing::default());
        assert_eq!(c.workers, None);

        let e = Config::quick(listen, &b, 0).unwrap_err();
        assert_eq!(e.path(), Some("--cid-len"));
        assert_eq!(
            e.to_string(),
            "command line: --cid-len: 0 is out of range 1..=32"
        );
        let e = Config::quick(listen, &[], 6).unwrap_err();
        assert_eq!(e.path(), Some("--backend"), "{e}");
        let e = Config::quick(listen, &[b[0], b[0]], 6).unwrap_err();
        assert_eq!(e.path(), Some("--backend #2"), "{e}");
        assert_eq!(
            e.to_string(),
            "command line: --backend #2: duplicate backend address 10.0.0.1:5684 (already used by --backend #1)"
        );
        let e = Config::quick(listen, &["0.0.0.0:1".parse().unwrap()], 6).unwrap_err();
        assert_eq!(e.path(), Some("--backend #1"), "{e}");
        let e = Config::quick(b[0], &b, 6).unwrap_err();
        assert!(e.to_string().contains("loop"), "{e}");
    }
}
