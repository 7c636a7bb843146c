//! The baseline forwarder forwards: datagrams from two clients reach an echo backend
//! from two distinct upstream ports and the echoes come back to the right client.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn forwards_and_returns_replies_per_client() {
    let backend = UdpSocket::bind("127.0.0.1:0").unwrap();
    backend
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_cidlb-floor"))
        .args(["--listen", "127.0.0.1:0", "--backend"])
        .arg(backend.local_addr().unwrap().to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _guard = Kill(child);
    let addr = line.trim().rsplit(' ').next().unwrap().to_string();

    let clients: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c
        })
        .collect();
    let mut sources = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        c.send_to(format!("hello {i}").as_bytes(), &addr).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = backend.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("hello {i}").as_bytes());
        sources.push(from);
        backend
            .send_to(format!("echo {i}").as_bytes(), from)
            .unwrap();
    }
    assert_ne!(sources[0], sources[1], "one upstream flow per client");
    for (i, c) in clients.iter().enumerate() {
        let mut buf = [0u8; 64];
        let (n, from) = c.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], format!("echo {i}").as_bytes());
        assert_eq!(
            from.to_string(),
            addr,
            "replies come from the listener address"
        );
    }
}
