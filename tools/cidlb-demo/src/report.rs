//! The comparison table and the conclusion.

use std::fmt::Write as _;
use std::time::Duration;

use cidlb_test_mbedtls::scenario::Outcome;
use cidlb_test_mbedtls::DtlsServer;

use crate::Routing;

/// What the servers counted in one run, summed over the servers.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerTotals {
    /// Full handshakes completed.
    pub handshakes: u64,
    /// Sessions moved to a new client address after an authenticated record.
    pub migrations: u64,
    /// Datagrams carrying a CID the receiving server never issued.
    pub unknown_cid: u64,
}

impl ServerTotals {
    /// Sums the servers' counters now.
    pub fn of(servers: &[DtlsServer]) -> ServerTotals {
        servers
            .iter()
            .map(DtlsServer::stats)
            .fold(ServerTotals::default(), |t, s| ServerTotals {
                handshakes: t.handshakes + s.handshakes,
                migrations: t.migrations + s.migrations,
                unknown_cid: t.unknown_cid + s.unknown_cid,
            })
    }
}

/// One run of the demo.
#[derive(Debug)]
pub struct RunReport {
    /// How cidlb routed.
    pub routing: Routing,
    /// What the clients saw.
    pub outcome: Outcome,
    /// What the servers saw.
    pub servers: ServerTotals,
    /// How long the clients took.
    pub elapsed: Duration,
    /// Whether cidlb exited with status 0 after SIGTERM.
    pub stopped_cleanly: bool,
}

impl RunReport {
    fn echoes_attempted(&self) -> usize {
        self.outcome.echoed + self.outcome.lost
    }
}

/// The table: one row per measure, one column per run.
pub fn table(reports: &[RunReport]) -> String {
    let rows: Vec<(&str, Vec<String>)> = vec![
        (
            "full DTLS handshakes on the servers",
            col(reports, |r| r.servers.handshakes.to_string()),
        ),
        (
            "echoes delivered",
            col(reports, |r| {
                format!("{}/{}", r.outcome.echoed, r.echoes_attempted())
            }),
        ),
        ("echoes lost", col(reports, |r| r.outcome.lost.to_string())),
        (
            "sessions that survived all rebinds",
            col(reports, |r| {
                format!("{}/{}", r.outcome.sessions_survived, r.outcome.clients)
            }),
        ),
        (
            "session migrations seen by the servers",
            col(reports, |r| r.servers.migrations.to_string()),
        ),
        (
            "datagrams with a CID the server never issued",
            col(reports, |r| r.servers.unknown_cid.to_string()),
        ),
        (
            "time for all clients",
            col(reports, |r| duration(r.elapsed)),
        ),
        (
            "cidlb stopped cleanly on SIGTERM",
            col(reports, |r| {
                if r.stopped_cleanly { "yes" } else { "NO" }.to_string()
            }),
        ),
    ];
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let col_width = reports
        .iter()
        .map(|r| r.routing.title().len())
        .chain(rows.iter().flat_map(|(_, v)| v.iter().map(String::len)))
        .max()
        .unwrap_or(0)
        + 2;
    let mut out = String::new();
    let _ = write!(out, "  {:label_width$}", "");
    for r in reports {
        let _ = write!(out, "  {:>col_width$}", r.routing.title());
    }
    out.push('\n');
    let rule = 2 + label_width + reports.len() * (col_width + 2);
    let _ = writeln!(out, "  {}", "-".repeat(rule - 2));
    for (label, values) in &rows {
        let _ = write!(out, "  {label:label_width$}");
        for v in values {
            let _ = write!(out, "  {v:>col_width$}");
        }
        out.push('\n');
    }
    out
}

fn col(reports: &[RunReport], f: impl Fn(&RunReport) -> String) -> Vec<String> {
    reports.iter().map(f).collect()
}

/// One line saying what the two runs show.
pub fn conclusion(cid: &RunReport, address: &RunReport) -> String {
    let n = cid.outcome.clients;
    let moves = cid.servers.migrations;
    if !cid.outcome.all_survived() {
        return format!(
            "Conclusion: PROBLEM: with CID routing {} of {n} sessions did not survive ({} \
             echoes lost, {} handshakes failed); cidlb's log above may say why.",
            n - cid.outcome.sessions_survived,
            cid.outcome.lost,
            cid.outcome.failed_handshakes
        );
    }
    let extra = address.servers.handshakes.saturating_sub(n as u64);
    if address.outcome.all_survived() {
        return format!(
            "Conclusion: routing by CID kept all {n} sessions through {moves} address \
             changes; this time address routing was lucky too (run with more --clients)."
        );
    }
    format!(
        "Conclusion: routing by Connection ID kept all {n} sessions through {moves} address \
         changes with one handshake each; routing by address lost {} of {n} sessions and \
         {} echoes, and the clients needed {extra} extra full handshakes.",
        n - address.outcome.sessions_survived,
        address.outcome.lost,
    )
}

/// `850 ms` or `4.2 s`.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
