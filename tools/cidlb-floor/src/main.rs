//! The floor: the least a NAT-mode UDP forwarder must do on this machine, as a baseline
//! that `bench/compare` measures in the same run as cidlb and nginx.
//!
//! It has cidlb's socket structure and syscall pattern and nothing else: `recvmmsg` on
//! `SO_REUSEPORT` listener sockets, one connected upstream socket per client address
//! (the backend chosen by a hash of that address), one `send` per datagram towards a
//! backend, `recvmmsg` on upstream sockets and `sendmmsg` for replies, with mio's
//! epoll. No DTLS parsing, no CID routing, no expiry, no limits, no counters, no lock:
//! whatever cidlb costs above this figure is the price of its features; what this costs
//! is the kernel's and the socket design's. Not a product: the table of flows grows
//! without bound, so run it only under a benchmark.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use cidlb_net::sys::{self, Received, Recv, RecvBatch, SendBatch};
use clap::Parser;
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

const BATCH: usize = 32;
const SLOT: usize = 2048;
const LISTENER: Token = Token(usize::MAX);

/// A minimal NAT-mode UDP forwarder (benchmark baseline, not a product).
#[derive(Parser)]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Backend addresses (repeat).
    #[arg(long = "backend", required = true)]
    backends: Vec<SocketAddr>,
    /// Threads, each with its own SO_REUSEPORT socket.
    #[arg(long, default_value_t = 1)]
    workers: usize,
}

struct Flow {
    client: SocketAddr,
    socket: UdpSocket,
}

fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let _ = sys::raise_nofile_limit();
    let mut threads = Vec::new();
    let mut listen = a.listen;
    for _ in 0..a.workers.max(1) {
        let std_socket = sys::bind_reuseport(listen, 4 << 20)?;
        listen = std_socket.local_addr()?; // port 0: the other workers join this port
        let listener = UdpSocket::from_std(std_socket);
        let backends = a.backends.clone();
        threads.push(std::thread::spawn(move || serve(listener, &backends)));
    }
    println!("floor forwarder ready on {listen}");
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("worker failed: {e}");
        }
    }
    Ok(())
}

fn serve(mut listener: UdpSocket, backends: &[SocketAddr]) -> std::io::Result<()> {
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut events = Events::with_capacity(1024);
    let mut rx = RecvBatch::new(BATCH, SLOT);
    let mut tx = SendBatch::new(BATCH, SLOT);
    let mut by_client: HashMap<SocketAddr, usize> = HashMap::new();
    let mut flows: Vec<Flow> = Vec::new();
    loop {
        poll.poll(&mut events, Some(Duration::from_secs(1)))?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                drain(&mut rx, listener.as_raw_fd(), |rx, i| {
                    let Received::Datagram(client, data) = rx.get(i) else {
                        return Ok(());
                    };
                    let slot = match by_client.get(&client) {
                        Some(&s) => s,
                        None => {
                            let h = client.port() as usize
                                ^ match client.ip() {
                                    std::net::IpAddr::V4(v4) => u32::from(v4) as usize,
                                    std::net::IpAddr::V6(v6) => v6.octets()[15] as usize,
                                };
                            let backend = backends[h % backends.len()];
                            let mut socket =
                                UdpSocket::from_std(sys::upstream_socket(None, backend)?);
                            poll.registry().register(
                                &mut socket,
                                Token(flows.len()),
                                Interest::READABLE,
                            )?;
                            flows.push(Flow { client, socket });
                            by_client.insert(client, flows.len() - 1);
                            flows.len() - 1
                        }
                    };
                    let _ = flows[slot].socket.send(data);
                    Ok(())
                })?;
            } else {
                let flow = &flows[ev.token().0];
                drain(&mut rx, flow.socket.as_raw_fd(), |rx, i| {
                    if let Received::Datagram(_, data) = rx.get(i) {
                        if tx.is_full() {
                            tx.flush(listener.as_raw_fd());
                        }
                        tx.push(flow.client, data);
                    }
                    Ok(())
                })?;
            }
        }
        if !tx.is_empty() {
            tx.flush(listener.as_raw_fd());
        }
    }
}

/// Reads batches from `fd` and hands each datagram's index to `each`, until a short
/// batch says the queue was empty (edge-triggered epoll); skips a bounded number of
/// errors (ICMP reports surface as receive errors).
fn drain(
    rx: &mut RecvBatch,
    fd: RawFd,
    mut each: impl FnMut(&RecvBatch, usize) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut errors = 0;
    loop {
        match rx.next(fd) {
            Recv::Datagrams { n, more } => {
                for i in 0..n {
                    each(rx, i)?;
                }
                if !more {
                    return Ok(());
                }
            }
            Recv::Empty => return Ok(()),
            Recv::Error(_) if errors < 64 => errors += 1,
            Recv::Error(_) => return Ok(()),
        }
    }
}
