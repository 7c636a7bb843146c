//! Pinned programs and maps (`Pin`): adopted by a new listener with the same layout and
//! sizes, refused — never misread — with another layout version or other sizes, and
//! removed by `unpin`. In a network namespace this test creates (the program on its
//! loopback, generic mode) and a bpf filesystem it mounts; the listeners run as child
//! processes of this test binary inside the namespace (`ip netns exec`), each bounded.

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use aya::maps::{Array, Map, MapData};

const ROLE: &str = "CIDLB_PINS_ROLE";
const DIR: &str = "CIDLB_PINS_DIR";

fn ns() -> String {
    format!("cidlb-pins-{}", std::process::id())
}

struct Cleanup {
    mount: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
        let _ = std::fs::remove_dir_all(&self.mount);
        let _ = Command::new("ip").args(["netns", "del", &ns()]).status();
    }
}

/// Runs role `role` in the namespace; its exit status and its output.
fn role(role: &str, dir: &Path, max_flows: usize) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("timeout")
        .args(["30", "ip", "netns", "exec", &ns()])
        .arg(exe)
        .args(["pins_role", "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .env("CIDLB_PINS_FLOWS", max_flows.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn a role");
    let _ = child.stdin.take();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn setup() -> Result<Cleanup, String> {
    let run = |cmd: &str, args: &[&str]| -> Result<(), String> {
        let o = Command::new(cmd)
            .args(args)
            .output()
            .map_err(|e| format!("{cmd}: {e}"))?;
        if o.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ))
        }
    };
    let mount = std::env::temp_dir().join(format!("cidlb-pins-{}", std::process::id()));
    std::fs::create_dir_all(&mount).map_err(|e| e.to_string())?;
    let c = Cleanup {
        mount: mount.clone(),
    };
    run("ip", &["netns", "add", &ns()])?;
    run("ip", &["-n", &ns(), "link", "set", "lo", "up"])?;
    run("mount", &["-t", "bpf", "bpf", &mount.display().to_string()])?;
    Ok(c)
}

#[test]
fn pins_are_adopted_refused_on_another_layout_and_removed() {
    let c = match setup() {
        Ok(c) => c,
        Err(e) => {
            if support::required() {
                panic!("cannot set up a namespace and a bpf filesystem: {e}");
            }
            support::say_skip(&format!(
                "SKIP pins_are_adopted_refused_on_another_layout_and_removed: {e}; set {}=1 to fail instead",
                support::REQUIRE
            ));
            return;
        }
    };
    let dir = c.mount.join("l");
    // A first listener pins its program and maps, and exits without unpinning.
    let (ok, out) = role("keep", &dir, 4096);
    assert!(ok, "{out}");
    assert!(
        dir.join("link").exists() && dir.join("info").exists(),
        "{out}"
    );
    // The same layout and sizes: adopted (the program swapped in place).
    let (ok, out) = role("keep", &dir, 4096);
    assert!(ok, "{out}");
    assert!(out.contains("adopted"), "{out}");
    // Without encrypted QUIC-LB the slow path's cache is a token map; a restart with
    // an encrypted format adopts the rest and starts a cache of the binding table's size.
    let decoded_size = || {
        MapData::from_pin(dir.join("decoded"))
            .and_then(|m| m.info())
            .map(|i| i.max_entries())
            .expect("the pinned decoded map")
    };
    assert_eq!(decoded_size(), 1, "no encrypted format: no cache");
    let (ok, out) = role("keep-encrypted", &dir, 4096);
    assert!(ok && out.contains("adopted"), "{out}");
    assert_eq!(
        decoded_size(),
        4096,
        "a cache as large as the binding table"
    );
    let (ok, out) = role("keep", &dir, 4096);
    assert!(ok && out.contains("adopted"), "{out}");
    assert_eq!(decoded_size(), 1, "and back");
    // Other sizes: refused.
    let (ok, out) = role("keep", &dir, 8192);
    assert!(!ok && out.contains("map sizes are fixed"), "{out}");
    // Another layout version: refused, never read.
    {
        let data = MapData::from_pin(dir.join("info")).expect("the pinned info map");
        let mut map = Map::Array(data);
        let mut arr: Array<_, u64> = Array::try_from(&mut map).unwrap();
        arr.set(0, cidlb_xdp::LAYOUT_VERSION ^ 1, 0).unwrap();
    }
    let (ok, out) = role("keep", &dir, 4096);
    assert!(!ok && out.contains("have layout"), "{out}");
    // Put the version back: a listener that unpins leaves nothing.
    {
        let data = MapData::from_pin(dir.join("info")).expect("the pinned info map");
        let mut map = Map::Array(data);
        let mut arr: Array<_, u64> = Array::try_from(&mut map).unwrap();
        arr.set(0, cidlb_xdp::LAYOUT_VERSION, 0).unwrap();
    }
    let (ok, out) = role("unpin", &dir, 4096);
    assert!(ok, "{out}");
    assert!(!dir.exists(), "unpin removes the pins: {out}");
    drop(c);
}

/// The roles (does nothing unless run by the test above).
#[test]
fn pins_role() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(DIR).unwrap());
    let flows: usize = std::env::var("CIDLB_PINS_FLOWS").unwrap().parse().unwrap();
    let format = (role == "keep-encrypted").then(|| {
        let q = cidlb_cidformat::QuicLbConfig::new(cidlb_cidformat::QuicLbParams {
            rotation: 0,
            server_id_len: 1,
            nonce_len: 15,
            key: Some([7; 16]),
            self_describing_length: false,
        })
        .unwrap();
        cidlb_xdp::XdpCidFormat::quic_lb(vec![q], vec![]).unwrap()
    });
    let cid_len = if format.is_some() { 17 } else { 4 };
    let mut router =
        support::router_config(cid_len, format.as_ref(), cidlb_core::MultiCidPolicy::First);
    router.max_flows = flows;
    let mut cfg =
        support::listener_config(support::vip(false), router, format, support::backends(2));
    cfg.attach = Some(cidlb_xdp::Attach {
        interface: "lo".into(),
        more: Vec::new(),
        mode: cidlb_xdp::XdpMode::Skb,
        pin: Some(cidlb_xdp::Pin { dir }),
    });
    match cidlb_xdp::XdpListener::new(cfg) {
        Ok(l) => {
            if l.pinned() {
                println!("pinned");
            }
            if l.adopted() {
                println!("adopted");
            }
            if role == "unpin" {
                l.unpin().unwrap();
            }
            std::thread::sleep(Duration::from_millis(10));
            let _ = std::io::stdout().flush();
        }
        Err(e) => {
            eprintln!("refused: {e}");
            std::process::exit(3);
        }
    }
}
