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

/// `cidlb cid keygen --out` makes a 0600 key file that `key_file` reads (relative to the
/// configuration's folder); the same CIDs decode as with the key inline; a bad key file
/// is an error that names the key path and never shows the key; the file is never
/// overwritten.
#[test]
fn keygen_and_key_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("cidlb-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_cidlb"))
            .args(args)
            .output()
            .expect("cidlb runs")
    };
    let key = dir.join("qlb.key");
    let o = run(&["cid", "keygen", "--out", key.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&key).unwrap();
    let hex = text.trim();
    assert_eq!(hex.len(), 32);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    // Not overwritten.
    assert!(!run(&["cid", "keygen", "--out", key.to_str().unwrap()])
        .status
        .success());
    assert_eq!(std::fs::read_to_string(&key).unwrap(), text);
    // Printed when no file is given, and different each time.
    let a = stdout(&run(&["cid", "keygen"]));
    assert_eq!(a.trim().len(), 32);
    assert_ne!(a.trim(), hex);

    let cfg = |key_line: &str| {
        format!(
            "[[listener]]\nname = \"l\"\naddress = \"127.0.0.1:5684\"\ncid_length = 8\n\
             [listener.cid_format]\nformat = \"quic-lb\"\n\
             [[listener.cid_format.config]]\nrotation = 0\nserver_id_length = 1\nnonce_length = 6\n{key_line}\n\
             [[listener.backend]]\nname = \"a\"\naddress = \"127.0.0.1:6001\"\nserver_id = \"01\"\n"
        )
    };
    let with_file = dir.join("file.toml");
    let inline = dir.join("inline.toml");
    std::fs::write(&with_file, cfg("key_file = \"qlb.key\"")).unwrap();
    std::fs::write(&inline, cfg(&format!("key = \"{hex}\""))).unwrap();
    let o = run(&[
        "cid",
        "encode",
        "--config",
        with_file.to_str().unwrap(),
        "--server-id",
        "01",
    ]);
    assert!(o.status.success(), "{o:?}");
    let cid = stdout(&o);
    let o = run(&[
        "cid",
        "decode",
        "--config",
        inline.to_str().unwrap(),
        cid.trim(),
    ]);
    assert!(o.status.success(), "the key file's key is the key: {o:?}");
    // A bad key file: the key path, no key.
    std::fs::write(dir.join("bad.key"), "00112233445566778899aabbccddeeXX\n").unwrap();
    std::fs::write(&with_file, cfg("key_file = \"bad.key\"")).unwrap();
    let o = run(&["check-config", with_file.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("cid_format.config[0].key_file"), "{err}");
    assert!(!err.contains("00112233"), "the key leaked: {err}");
    std::fs::write(
        &with_file,
        cfg(&format!("key = \"{hex}\"\nkey_file = \"qlb.key\"")),
    )
    .unwrap();
    let o = run(&["check-config", with_file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not both"));
    // check-config's explanation does not show the key either.
    std::fs::write(&with_file, cfg("key_file = \"qlb.key\"")).unwrap();
    let o = run(&["check-config", with_file.to_str().unwrap()]);
    assert!(o.status.success(), "{o:?}");
    assert!(!stdout(&o).contains(hex), "the key leaked");
    let _ = std::fs::remove_dir_all(&dir);
}
