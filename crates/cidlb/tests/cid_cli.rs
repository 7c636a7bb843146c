//! `cidlb cid encode` / `cidlb cid decode` on the reference configuration
//! (`examples/cidlb.toml`, listener `coaps-routable`: QUIC-LB rotations 0 and 1).

use std::process::{Command, Output};

fn cidlb(args: &[&str]) -> Output {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cidlb.toml");
    Command::new(env!("CARGO_BIN_EXE_cidlb"))
        .arg("cid")
        .args(args)
        .args(["--config", example])
        .output()
        .expect("cidlb runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn encode_then_decode_names_the_backend() {
    let o = cidlb(&[
        "encode",
        "--server-id",
        "0a02",
        "--rotation",
        "1",
        "--count",
        "3",
    ]);
    assert!(o.status.success(), "{o:?}");
    let cids = stdout(&o);
    let cids: Vec<&str> = cids.lines().collect();
    assert_eq!(cids.len(), 3);
    assert!(
        cids.iter()
            .all(|c| c.len() == 16 && c.starts_with(['2', '3'])),
        "{cids:?}"
    );
    let o = cidlb(&["decode", "--listener", "coaps-routable", cids[0]]);
    let text = stdout(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("rotation:  1 (four-pass AES-128 Feistel"),
        "{text}"
    );
    assert!(text.contains("server id: 0a02"), "{text}");
    assert!(
        text.contains("backend:   dtls-r2 (10.0.0.2:5686, up"),
        "{text}"
    );
    // Rotation 0 allocates other (1-octet) server IDs.
    let o = cidlb(&["encode", "--server-id", "01", "--rotation", "0"]);
    assert!(o.status.success(), "{o:?}");
    let o = cidlb(&["decode", stdout(&o).trim()]);
    assert!(stdout(&o).contains("backend:   dtls-r1 "), "{o:?}");
}

#[test]
fn decode_says_why_not_and_fails() {
    let o = cidlb(&["decode", "e0112233445566ff"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("unroutable"), "{o:?}");
    let o = cidlb(&["decode", "4011223344556677"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("config rotation 2"), "{o:?}");
    // Several configurations: the rotation must be chosen.
    let o = cidlb(&["encode", "--server-id", "0a02"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--rotation"),
        "{o:?}"
    );
    let o = cidlb(&["encode", "--server-id", "0a02", "--rotation", "0"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a 2-octet ID in a 1-octet configuration"
    );
}
