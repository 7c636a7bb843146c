//! `cidlb status`: the admin API's `/backends` and `/tables` as a table for a person.
//!
//! Also the tiny HTTP/1.1 client it uses (loopback admin API, `Connection: close`),
//! which tests and scripts may reuse through [`request`].

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;
use crate::control::{BackendsView, TablesView};

/// Sends one HTTP request to the admin API at `addr`; returns the status and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let timeout = Duration::from_secs(10);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot reach the admin API at {addr}: {e} (is cidlb running, with [admin] enabled there? see --admin)"))?;
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    let body = body.unwrap_or("");
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes())
        .map_err(|e| format!("admin API at {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("admin API at {addr}: {e}"))?;
    parse_response(&raw).ok_or_else(|| format!("admin API at {addr}: not an HTTP answer"))
}

fn parse_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let mut body = raw[split + 4..].to_vec();
    if chunked {
        body = dechunk(&body)?;
    }
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size_s = std::str::from_utf8(&b[..eol]).ok()?;
        let size = usize::from_str_radix(size_s.split(';').next()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Fetches `/backends` and `/tables` from `addr` and renders them as text.
pub fn status(addr: SocketAddr) -> Result<String, String> {
    status_against(addr, None)
}

/// [`status`], marking with `*` the operator's state and weight of each backend that
/// differ from `file` (the configuration the daemon would start with), and listing the
/// file's backends that the running daemon does not have.
pub fn status_against(addr: SocketAddr, file: Option<&Config>) -> Result<String, String> {
    let get = |path: &str| -> Result<String, String> {
        let (code, body) = request(addr, "GET", path, None)?;
        if code != 200 {
            return Err(format!("GET {path}: HTTP {code}: {}", body.trim()));
        }
        Ok(body)
    };
    let backends: BackendsView = serde_json::from_str(&get("/backends")?)
        .map_err(|e| format!("GET /backends: unexpected answer: {e}"))?;
    let tables: TablesView = serde_json::from_str(&get("/tables")?)
        .map_err(|e| format!("GET /tables: unexpected answer: {e}"))?;
    Ok(render_against(addr, &backends, &tables, file))
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

fn secs(s: u64) -> String {
    humantime::format_duration(Duration::from_secs(s)).to_string()
}

/// Renders the status table.
pub fn render(addr: SocketAddr, b: &BackendsView, t: &TablesView) -> String {
    render_against(addr, b, t, None)
}

/// Renders the status table, marking what differs from `file` (see [`status_against`]).
pub fn render_against(
    addr: SocketAddr,
    b: &BackendsView,
    t: &TablesView,
    file: Option<&Config>,
) -> String {
    let mut differs = false;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "cidlb at {addr}: configuration generation {}, health checks {}",
        b.generation,
        if b.health_checks { "on" } else { "off" }
    );
    for l in &b.listeners {
        let _ = writeln!(o);
        let mode = match l.cid_length {
            Some(n) if l.routing == "cid" => format!("routing by CID, {n}-byte CIDs"),
            _ => format!("routing by {}", l.routing),
        };
        let _ = writeln!(o, "listener {} on {} ({mode})", l.name, l.address);
        if let Some(tv) = t.listeners.iter().find(|x| x.name == l.name) {
            let _ = writeln!(
                o,
                "  flows {}/{} (idle {}), CID bindings {}/{} (idle {}), upstream sockets {}",
                tv.flows.entries,
                tv.flows.capacity,
                secs(tv.flows.idle_timeout_secs),
                tv.bindings.entries,
                tv.bindings.capacity,
                secs(tv.bindings.idle_timeout_secs),
                tv.upstreams_open
            );
            let _ = writeln!(
                o,
                "  expired: {} flows, {} bindings; evicted (table full): {} flows, {} bindings",
                tv.flows.expired, tv.bindings.expired, tv.flows.evicted, tv.bindings.evicted
            );
        }
        let header = [
            "BACKEND",
            "ADDRESS",
            "STATE",
            "ADMIN",
            "HEALTH",
            "WEIGHT",
            "FLOWS",
            "BINDINGS",
            "TO BACKEND",
            "FROM BACKEND",
        ];
        let in_file = file.and_then(|f| f.listeners.iter().find(|fl| fl.name == l.name));
        let rows: Vec<[String; 10]> = l
            .backends
            .iter()
            .map(|x| {
                let fb = in_file.and_then(|fl| fl.backends.iter().find(|fb| fb.name == x.name));
                let mut mark = |running: &str, filed: Option<String>| match filed {
                    Some(f) if f != running => {
                        differs = true;
                        format!("{running}*")
                    }
                    _ => running.to_string(),
                };
                let admin_state = mark(&x.admin_state, fb.map(|f| f.state.name().to_string()));
                let weight = mark(&x.weight.to_string(), fb.map(|f| f.weight.to_string()));
                let health = match &x.last_check {
                    Some(c) if x.health == "unhealthy" || x.health_pending > 0 => {
                        format!("{} ({c})", x.health)
                    }
                    _ => x.health.clone(),
                };
                [
                    x.name.clone(),
                    x.address.clone(),
                    match &x.unreachable {
                        Some(why) => format!("{} ({why})", x.state),
                        None => x.state.clone(),
                    },
                    admin_state,
                    health,
                    weight,
                    x.flows.to_string(),
                    x.bindings.to_string(),
                    format!(
                        "{} dg, {}",
                        x.traffic.to_backend_datagrams,
                        human_bytes(x.traffic.to_backend_bytes)
                    ),
                    format!(
                        "{} dg, {}",
                        x.traffic.from_backend_datagrams,
                        human_bytes(x.traffic.from_backend_bytes)
                    ),
                ]
            })
            .collect();
        let mut w = header.map(str::len);
        for r in &rows {
            for (i, c) in r.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let numeric = |i: usize| (5..=7).contains(&i);
        let line = |cells: &[&str]| {
            let mut s = String::from(" ");
            for (i, c) in cells.iter().enumerate() {
                s.push(' ');
                if numeric(i) {
                    let _ = write!(s, "{c:>width$}", width = w[i]);
                } else {
                    let _ = write!(s, "{c:<width$}", width = w[i]);
                }
                s.push(' ');
            }
            s.trim_end().to_string()
        };
        let _ = writeln!(o, "{}", line(&header));
        for r in &rows {
            let cells: Vec<&str> = r.iter().map(String::as_str).collect();
            let _ = writeln!(o, "{}", line(&cells));
        }
        if let Some(fl) = in_file {
            // (A DNS backend runs as one backend per address: not compared.)
            for fb in fl.backends.iter().filter(|b| b.dns.is_none()) {
                if !l.backends.iter().any(|x| x.name == fb.name) {
                    differs = true;
                    let _ = writeln!(
                        o,
                        "  * backend {} ({}) is in the file but not running (reload to add it)",
                        fb.name, fb.address
                    );
                }
            }
        }
    }
    if differs {
        let _ = writeln!(
            o,
            "\n* differs from the configuration file (an operator's change through the admin API, \
             or a file not reloaded yet): a restart would use the file"
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_answers() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
        assert_eq!(parse_response(plain), Some((200, "hi".into())));
        let chunked =
            b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked), Some((404, "abcde".into())));
        assert_eq!(parse_response(b"garbage"), None);
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 20), "5.0 MiB");
    }
}
