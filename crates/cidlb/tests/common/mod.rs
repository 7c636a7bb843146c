//! Spawning the real `cidlb` binary for tests.

#![allow(dead_code)] // each test binary uses a different part of this module

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `cidlb` process; stopped with SIGTERM (then SIGKILL) on drop.
pub struct Balancer {
    pub child: Child,
    pub addr: SocketAddr,
    /// The admin API's address (`--admin 127.0.0.1:0` is added unless `args` set one).
    pub admin: Option<SocketAddr>,
}

impl Balancer {
    /// `cidlb run --listen 127.0.0.1:0 --backend ... --cid-len N --routing MODE`.
    pub fn quick(backends: &[SocketAddr], cid_len: usize, routing: &str) -> Balancer {
        let mut args: Vec<String> = vec!["run".into(), "--listen".into(), "127.0.0.1:0".into()];
        for b in backends {
            args.push("--backend".into());
            args.push(b.to_string());
        }
        args.extend([
            "--cid-len".into(),
            cid_len.to_string(),
            "--routing".into(),
            routing.into(),
        ]);
        Balancer::spawn(&args)
    }

    /// Runs `cidlb` with `args` and waits (at most 10 s) for its ready line.
    pub fn spawn(args: &[String]) -> Balancer {
        Balancer::spawn_in(None, args)
    }

    /// Like [`Balancer::spawn`], in network namespace `netns` when given
    /// (`ip netns exec NETNS cidlb ARGS`; the admin API is then on that namespace's
    /// loopback).
    pub fn spawn_in(netns: Option<&str>, args: &[String]) -> Balancer {
        let mut args = args.to_vec();
        if args.first().is_some_and(|a| a == "run") && !args.iter().any(|a| a == "--admin") {
            // A free port: tests run in parallel.
            args.extend(["--admin".into(), "127.0.0.1:0".into()]);
        }
        let mut cmd = match netns {
            None => Command::new(env!("CARGO_BIN_EXE_cidlb")),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, env!("CARGO_BIN_EXE_cidlb")]);
                c
            }
        };
        let mut child = cmd
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .spawn()
            .expect("cidlb starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("cidlb: admin API listening on ") {
                    let _ = tx.send((true, a.parse::<SocketAddr>().expect("admin address")));
                }
                if let Some(addr) = line
                    .rsplit(" ready on ")
                    .next()
                    .filter(|_| line.contains(" ready on "))
                {
                    let _ = tx.send((
                        false,
                        addr.parse::<SocketAddr>().expect("address in ready line"),
                    ));
                }
            }
        });
        // The admin line, if any, comes before the listeners' ready lines.
        let mut admin = None;
        let addr = loop {
            match rx
                .recv_timeout(Duration::from_secs(10))
                .expect("cidlb printed its ready line")
            {
                (true, a) => admin = Some(a),
                (false, a) => break a,
            }
        };
        Balancer { child, addr, admin }
    }

    /// `cidlb run --config PATH`, waiting for its ready line like [`Balancer::spawn`].
    pub fn spawn_config(path: &std::path::Path) -> Balancer {
        Balancer::spawn(&["run".into(), "--config".into(), path.display().to_string()])
    }

    /// Sends SIGTERM and waits (at most 5 s) for a clean exit; returns whether it was.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            if !self.terminate() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }
}

/// A directory under the system's temp dir, unique to this test process and `name`,
/// removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("cidlb-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `cidlb ARGS`: its exit code (-1 when killed) and its stdout followed by its stderr.
pub fn cidlb_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cidlb"))
        .args(args)
        .output()
        .expect("cidlb runs");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

/// Polls `cond` every 50 ms until it holds, or panics after `deadline` saying `what`;
/// returns how long it took.
pub fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t0 = std::time::Instant::now();
    while !cond() {
        assert!(t0.elapsed() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    t0.elapsed()
}
