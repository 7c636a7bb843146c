//! The admin commands of the CLI (`cidlb drain`, `undrain`, `weight`, `lookup`,
//! `reload`, `flows`, `bindings`, `status`): each is one request to a running cidlb's
//! admin API, found with `--admin ADDR`, or read from the configuration file with
//! `--config FILE`, else the default `127.0.0.1:9684`. Answers are printed for a person;
//! an error answer is a non-zero exit with the API's own message.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;

use crate::config::Config;
use crate::control::{BackendView, BindingsView, FlowsView};
use crate::status::request;

/// The admin API's address: `admin` if given, else the one `config` sets, else the
/// default.
pub fn admin_address(
    admin: Option<SocketAddr>,
    config: Option<&Path>,
) -> Result<SocketAddr, String> {
    if let Some(a) = admin {
        return Ok(a);
    }
    match config {
        None => Ok(crate::config::DEFAULT_ADMIN_ADDRESS),
        Some(path) => {
            let cfg = Config::load(path).map_err(|e| e.to_string())?;
            if !cfg.admin.enabled {
                return Err(format!(
                    "{}: the admin API is disabled ([admin] enabled = false)",
                    path.display()
                ));
            }
            Ok(cfg.admin.address())
        }
    }
}

/// Percent-encodes a path segment or query value (names are printable ASCII; `/`,
/// `?`, `#`, `%`, `&`, `=` and `+` would change the request's meaning).
fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:[]".contains(&b) {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

/// `?k=v&...` from the pairs that are set.
fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.map(|v| format!("{k}={}", enc(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[derive(Deserialize)]
struct ApiErr {
    error: String,
}

/// One request; the body of a 2xx answer, else the API's error message.
fn call(addr: SocketAddr, method: &str, path: &str) -> Result<String, String> {
    let (code, body) = request(addr, method, path, None)?;
    if (200..300).contains(&code) {
        return Ok(body);
    }
    let msg =
        serde_json::from_str::<ApiErr>(&body).map_or_else(|_| body.trim().to_string(), |e| e.error);
    Err(format!("{method} {path}: HTTP {code}: {msg}"))
}

fn parse<T: for<'de> Deserialize<'de>>(what: &str, body: &str) -> Result<T, String> {
    serde_json::from_str(body).map_err(|e| format!("{what}: unexpected answer: {e}"))
}

fn backend_line(b: &BackendView) -> String {
    format!(
        "backend {} ({}): state {}{}, operator's state {}, health {}, weight {}, {} flows, {} bindings\n",
        b.name,
        b.address,
        b.state,
        unreachable_note(b),
        b.admin_state,
        b.health,
        b.weight,
        b.flows,
        b.bindings
    )
}

/// ` (unreachable: no MAC address)` for a backend the data plane cannot reach.
fn unreachable_note(b: &BackendView) -> String {
    match b.unreachable.as_deref() {
        None => String::new(),
        Some("no_mac") => " (unreachable: no MAC address in the neighbour table)".into(),
        Some(other) => format!(" (unreachable: {other})"),
    }
}

/// `cidlb drain NAME` / `cidlb undrain NAME`.
pub fn drain(
    addr: SocketAddr,
    listener: Option<&str>,
    backend: &str,
    drain: bool,
) -> Result<String, String> {
    let verb = if drain { "drain" } else { "undrain" };
    let path = format!(
        "/backends/{}/{verb}{}",
        enc(backend),
        query(&[("listener", listener)])
    );
    let v: BackendView = parse(verb, &call(addr, "POST", &path)?)?;
    Ok(backend_line(&v))
}

/// `cidlb weight NAME N`.
pub fn weight(
    addr: SocketAddr,
    listener: Option<&str>,
    backend: &str,
    weight: u32,
) -> Result<String, String> {
    let w = weight.to_string();
    let path = format!(
        "/backends/{}/weight{}",
        enc(backend),
        query(&[("value", Some(&w)), ("listener", listener)])
    );
    let v: BackendView = parse("weight", &call(addr, "POST", &path)?)?;
    Ok(backend_line(&v))
}

#[derive(Deserialize)]
struct BackendRefJson {
    name: String,
    address: String,
    state: String,
}

#[derive(Deserialize)]
struct LookupJson {
    route: String,
    backend: Option<BackendRefJson>,
    reason: String,
    note: Option<String>,
}

fn lookup_text(body: &str) -> Result<String, String> {
    let v: LookupJson = parse("lookup", body)?;
    let mut o = format!("route:   {}\n", v.route);
    if let Some(b) = v.backend {
        let _ = writeln!(o, "backend: {} ({}, {})", b.name, b.address, b.state);
    }
    let _ = writeln!(o, "reason:  {}", v.reason);
    if let Some(n) = v.note {
        let _ = writeln!(o, "note:    {n}");
    }
    Ok(o)
}

/// `cidlb lookup cid HEX [--client IP:PORT]`.
pub fn lookup_cid(
    addr: SocketAddr,
    listener: Option<&str>,
    cid: &str,
    client: Option<&str>,
) -> Result<String, String> {
    let path = format!(
        "/lookup/cid/{}{}",
        enc(cid),
        query(&[("listener", listener), ("client", client)])
    );
    lookup_text(&call(addr, "GET", &path)?)
}

/// `cidlb lookup client IP[:PORT]`.
pub fn lookup_client(
    addr: SocketAddr,
    listener: Option<&str>,
    client: &str,
) -> Result<String, String> {
    let path = format!(
        "/lookup/client/{}{}",
        enc(client),
        query(&[("listener", listener)])
    );
    let body = call(addr, "GET", &path)?;
    if client.parse::<SocketAddr>().is_ok() {
        lookup_text(&body)
    } else {
        flows_text(&parse("lookup", &body)?)
    }
}

#[derive(Deserialize)]
struct ReloadJson {
    generation: u64,
    changes: Vec<String>,
}

/// `cidlb reload`: validates `config` first when given (`nginx -t` then reload), then
/// asks the running cidlb to reload its file; an error when either says no.
pub fn reload(addr: SocketAddr, config: Option<&Path>) -> Result<String, String> {
    if let Some(path) = config {
        Config::load(path).map_err(|e| format!("not reloaded: {e}"))?;
    }
    let v: ReloadJson = parse("reload", &call(addr, "POST", "/reload")?)?;
    let mut o = format!("reloaded: configuration generation {}\n", v.generation);
    if v.changes.is_empty() {
        o.push_str("  (nothing changed)\n");
    }
    for c in v.changes {
        let _ = writeln!(o, "  {c}");
    }
    Ok(o)
}

fn flows_text(v: &FlowsView) -> Result<String, String> {
    let mut o = format!("listener {}: {} flows\n", v.listener, v.flows.len());
    let w = v
        .flows
        .iter()
        .map(|f| f.client.len())
        .max()
        .unwrap_or(6)
        .max(6);
    let _ = writeln!(o, "  {:<w$}  {:<16} IDLE", "CLIENT", "BACKEND");
    for f in &v.flows {
        let _ = writeln!(o, "  {:<w$}  {:<16} {} s", f.client, f.backend, f.idle_secs);
    }
    if let Some(c) = v.next_cursor {
        let _ = writeln!(o, "  (more: --cursor {c})");
    }
    Ok(o)
}

fn bindings_text(v: &BindingsView) -> Result<String, String> {
    let mut o = format!(
        "listener {}: {} CID bindings\n",
        v.listener,
        v.bindings.len()
    );
    let w = v
        .bindings
        .iter()
        .map(|b| b.cid.len())
        .max()
        .unwrap_or(3)
        .max(3);
    let _ = writeln!(o, "  {:<w$}  {:<16} {:<8} IDLE", "CID", "BACKEND", "SOURCE");
    for b in &v.bindings {
        let _ = writeln!(
            o,
            "  {:<w$}  {:<16} {:<8} {} s",
            b.cid, b.backend, b.source, b.idle_secs
        );
    }
    if let Some(c) = v.next_cursor {
        let _ = writeln!(o, "  (more: --cursor {c})");
    }
    Ok(o)
}

/// `cidlb flows [--backend NAME] [--client IP[:PORT]]`.
pub fn flows(
    addr: SocketAddr,
    listener: Option<&str>,
    backend: Option<&str>,
    client: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<String, String> {
    let path = format!(
        "/flows{}",
        query(&[
            ("listener", listener),
            ("backend", backend),
            ("client", client),
            ("limit", limit),
            ("cursor", cursor)
        ])
    );
    flows_text(&parse("flows", &call(addr, "GET", &path)?)?)
}

/// `cidlb bindings [--backend NAME] [--cid HEXPREFIX] [--source learned|seeded]`.
pub fn bindings(
    addr: SocketAddr,
    listener: Option<&str>,
    backend: Option<&str>,
    cid: Option<&str>,
    source: Option<&str>,
    limit: Option<&str>,
    cursor: Option<&str>,
) -> Result<String, String> {
    let path = format!(
        "/bindings{}",
        query(&[
            ("listener", listener),
            ("backend", backend),
            ("cid", cid),
            ("source", source),
            ("limit", limit),
            ("cursor", cursor)
        ])
    );
    bindings_text(&parse("bindings", &call(addr, "GET", &path)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_what_would_change_the_request() {
        assert_eq!(enc("dtls-1"), "dtls-1");
        assert_eq!(enc("a/b?c#d%e&f=g+h"), "a%2Fb%3Fc%23d%25e%26f%3Dg%2Bh");
        assert_eq!(enc("[::1]:5684"), "[::1]:5684");
        assert_eq!(
            query(&[("a", Some("1")), ("b", None), ("c", Some("x y"))]),
            "?a=1&c=x%20y"
        );
        assert_eq!(query(&[("a", None)]), "");
    }
}
