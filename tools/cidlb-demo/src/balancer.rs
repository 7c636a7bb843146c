//! The `cidlb` child process: started with the quick-start flags, its stderr (the log)
//! passed through to the terminal, its stdout read for the ready line, stopped with
//! SIGTERM.

use std::io::{BufRead, BufReader, IsTerminal};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest wait for cidlb's `ready on` line.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for cidlb to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running `cidlb`; stopped (SIGTERM, then SIGKILL if it lingers) on drop if
/// [`Balancer::stop`] was not called.
pub struct Balancer {
    child: Child,
    /// The listener's address, from the ready line.
    pub addr: SocketAddr,
    stdout: Option<JoinHandle<()>>,
}

/// How a [`Balancer`] ended.
pub enum Stopped {
    /// It exited by itself after SIGTERM, with this status.
    Exited(ExitStatus),
    /// It did not exit within [`STOP_TIMEOUT`] and was killed.
    Killed,
}

impl Balancer {
    /// Runs `cidlb` at `path` with `args` and waits for it to print
    /// `cidlb: listener NAME ready on ADDR`. Every stdout line is echoed, indented.
    pub fn start(path: &Path, args: &[String], log_level: &str) -> Result<Balancer, String> {
        let mut command = Command::new(path);
        command.args(args).args(["--log-level", log_level]);
        if !std::io::stderr().is_terminal() {
            // cidlb's log is coloured by default; keep escape codes out of files and
            // pipes (tracing-subscriber honours NO_COLOR).
            command.env("NO_COLOR", "1");
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", path.display()))?;
        let Some(stdout) = child.stdout.take() else {
            unreachable!("stdout is piped")
        };
        let (tx, rx) = mpsc::channel();
        let reader = thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("    {line}");
                if let Some(addr) = ready_address(&line) {
                    let _ = tx.send(addr);
                }
            }
        });
        let mut balancer = Balancer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            stdout: Some(reader),
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(addr) => {
                balancer.addr = addr;
                Ok(balancer)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let status = balancer
                    .child
                    .wait()
                    .map_or("unknown".into(), |s| s.to_string());
                Err(format!(
                    "cidlb exited ({status}) without printing its ready line; its log is above"
                ))
            }
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "cidlb did not print its ready line within {READY_TIMEOUT:?}"
            )),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (as `kill -TERM PID`) and waits for the process to exit, killing
    /// it if it takes longer than [`STOP_TIMEOUT`].
    pub fn stop(mut self) -> Stopped {
        let stopped = self.terminate();
        if let Some(reader) = self.stdout.take() {
            // Ends at EOF, which the process's exit brings.
            let _ = reader.join();
        }
        stopped
    }

    fn terminate(&mut self) -> Stopped {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Stopped::Exited(status);
        }
        if let Err(e) = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
        {
            eprintln!("cidlb-demo: cannot run `kill -TERM` ({e}); killing cidlb instead");
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Stopped::Killed;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Stopped::Exited(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Stopped::Killed
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

/// The address in `cidlb: listener NAME ready on ADDR`.
fn ready_address(line: &str) -> Option<SocketAddr> {
    let rest = line.strip_prefix("cidlb: listener ")?;
    let (_, addr) = rest.rsplit_once(" ready on ")?;
    addr.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::ready_address;

    #[test]
    fn reads_the_ready_line() {
        assert_eq!(
            ready_address("cidlb: listener default ready on 127.0.0.1:4433"),
            Some("127.0.0.1:4433".parse().unwrap())
        );
        assert_eq!(ready_address("cidlb: listener x ready on nowhere"), None);
        assert_eq!(ready_address("something else"), None);
    }
}
