//! What every test in network namespaces needs, in one place: namespaces removed on
//! drop, `ip` and other commands with their stderr as the error, processes run inside a
//! namespace whose output lines can be awaited, and the skip rule: a test that cannot
//! run here (no root, no BPF, a missing tool) prints why and passes, unless
//! [`REQUIRE`] is set to 1 (`scripts/test.sh` sets it), when it must fail instead.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The variable that turns a skip into a failure.
pub const REQUIRE: &str = "CIDLB_REQUIRE_PRIVILEGED";

/// Whether a privileged test must run (the variable is set to 1).
pub fn required() -> bool {
    std::env::var(REQUIRE).is_ok_and(|v| v == "1")
}

/// Prints a skip reason where it is seen even when the test passes (libtest captures
/// `eprintln!`, not writes to the stderr handle).
pub fn say_skip(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// `cmd ARGS`; the error is its stderr.
pub fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A role's line to the test that runs it ([`Proc`] reads its stdout line by line):
/// written and flushed at once.
pub fn say(line: &str) {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args)
}

/// A permanent neighbour entry in namespace `ns`: `ip` is at `mac` on `dev` (what a
/// router in front of a balancer resolves its virtual address to).
pub fn neigh_permanent(ns: &str, ip_addr: &str, mac: &str, dev: &str) -> Result<(), String> {
    ip(&[
        "-n",
        ns,
        "neigh",
        "add",
        ip_addr,
        "lladdr",
        mac,
        "dev",
        dev,
        "nud",
        "permanent",
    ])
}

/// A switch: bridge `br0` in namespace `sw`, and for each `(namespace, role, mac)` of
/// `ends` a veth pair, `veth0` (with `mac`) in the namespace and `sw-ROLE` on the
/// bridge, all up (and the namespaces' loopbacks). Every sender's veth0 has transmit
/// checksum offload off: a frame that XDP sends on (`XDP_TX`) must carry a finished
/// checksum.
pub fn switch(sw: &str, ends: &[(&str, &str, &str)]) -> Result<(), String> {
    ip(&["-n", sw, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", sw, "link", "set", "br0", "up"])?;
    for (n, role, mac) in ends {
        let peer = format!("sw-{role}");
        ip(&[
            "link", "add", "name", "veth0", "netns", n, "address", mac, "type", "veth", "peer",
            "name", &peer, "netns", sw,
        ])?;
        ip(&["-n", sw, "link", "set", &peer, "master", "br0", "up"])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "set", "veth0", "up"])?;
        in_ns(n, &["ethtool", "-K", "veth0", "tx", "off"])?;
    }
    Ok(())
}

/// A direct-routing backend in namespace `ns`: its own address `own` (with prefix
/// length) on veth0, and the virtual address `vip` on its loopback, never answered for
/// in ARP (`arp_ignore=1`, `arp_announce=2`).
pub fn dr_backend(ns: &str, own: &str, vip: &str) -> Result<(), String> {
    ip(&["-n", ns, "addr", "add", own, "dev", "veth0"])?;
    ip(&["-n", ns, "addr", "add", &format!("{vip}/32"), "dev", "lo"])?;
    in_ns(
        ns,
        &[
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.arp_ignore=1",
            "net.ipv4.conf.all.arp_announce=2",
        ],
    )
}

/// `ip netns exec NS CMD...`.
pub fn in_ns(ns: &str, cmd: &[&str]) -> Result<(), String> {
    let mut args = vec!["netns", "exec", ns];
    args.extend_from_slice(cmd);
    ip(&args)
}

/// Namespaces a test made; removed on drop (with every interface in them).
#[derive(Debug, Default)]
pub struct Namespaces {
    /// Their names.
    pub names: Vec<String>,
}

impl Namespaces {
    /// Creates namespace `name` and remembers it for removal.
    pub fn add(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.names.push(name.to_string());
        Ok(())
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// A process run inside a namespace (`ip netns exec`), its stdout read line by line.
/// On drop its stdin is closed, then it gets SIGTERM, then (after 5 s) SIGKILL.
#[derive(Debug)]
pub struct Proc {
    /// The process (`ip netns exec` execs the program).
    pub child: Child,
    /// Its stdout, line by line.
    pub lines: mpsc::Receiver<String>,
    /// Its stdin, until closed.
    pub stdin: Option<ChildStdin>,
}

impl Proc {
    /// Runs `program ARGS` in namespace `ns` with `env` added.
    pub fn spawn(
        ns: &str,
        program: &std::path::Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> Proc {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn in a namespace");
        let out = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Proc {
            child,
            lines: rx,
            stdin,
        }
    }

    /// This test binary run again in `ns` as the one test `test` (`--exact`), with
    /// `env` added: how a test puts a part of itself in a namespace.
    pub fn role(ns: &str, test: &str, env: &[(&str, String)]) -> Proc {
        let exe = std::env::current_exe().expect("the test binary");
        Proc::spawn(
            ns,
            &exe,
            &[test, "--exact", "--nocapture", "--test-threads=1"],
            env,
        )
    }

    /// The next line that `matches`, within `timeout` (panics past it).
    pub fn expect_line(
        &self,
        what: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if matches(&l) => return l,
                Ok(_) => {}
                Err(_) => panic!("no {what:?} line within {timeout:?}"),
            }
        }
    }

    /// The next line that contains `text`, within `timeout`.
    pub fn expect(&self, text: &str, timeout: Duration) -> String {
        self.expect_line(text, timeout, |l| l.contains(text))
    }

    /// The next line that starts with `prefix`, within `timeout`.
    pub fn expect_prefix(&self, prefix: &str, timeout: Duration) -> String {
        self.expect_line(prefix, timeout, |l| l.starts_with(prefix))
    }

    /// Writes one line to its stdin.
    pub fn send(&mut self, line: &str) {
        if let Some(s) = &mut self.stdin {
            let _ = writeln!(s, "{line}");
            let _ = s.flush();
        }
    }

    /// Closes its stdin and returns every line until it exits (bounded by `timeout`,
    /// then it is killed).
    pub fn finish(mut self, timeout: Duration) -> Vec<String> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        let mut lines = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    break;
                }
            }
        }
        let _ = self.child.wait();
        lines
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
