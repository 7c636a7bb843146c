//! Builds `examples/mbedtls_cid.c` with the system C compiler against the library that
//! `cargo test` has just built (static and shared), runs it, and decodes every CID it
//! prints with the Rust decoder. Also checks that its Mbed TLS part compiles against the
//! Mbed TLS 3.6.5 headers that the test-support crate's `mbedtls-rs-sys` bundles, when
//! they are on this machine.

use std::path::{Path, PathBuf};
use std::process::Command;

use cidlb_cidformat::{parse_hex, FormatSet, PrefixFormat, QuicLbConfig, QuicLbParams};

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

/// Where cargo put `file` of this crate's library: next to this test in
/// `target/<profile>/deps/` (where `cargo test` builds it), or in `target/<profile>/`
/// (where `cargo build` copies it).
fn built(file: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let candidates = [deps.join(file), deps.parent().unwrap_or(deps).join(file)];
    candidates
        .iter()
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("{file} not built; looked at {candidates:?}"))
        .clone()
}

/// Removes a scratch file, and the scratch directory once the last test's file is gone
/// (removing a non-empty directory fails, harmlessly).
fn unscratch(file: &Path) {
    let _ = std::fs::remove_file(file);
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cidlb-cidgen-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn cc(args: &[&str]) {
    let out = Command::new("cc")
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(Path::new(MANIFEST).join("include"))
        .args(args)
        .output()
        .expect("a C compiler (cc) is installed");
    assert!(
        out.status.success(),
        "cc {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn example() -> String {
    Path::new(MANIFEST)
        .join("examples/mbedtls_cid.c")
        .display()
        .to_string()
}

/// The configuration the example uses (rotation 1, 2-octet server ID 0a01, 6-octet
/// nonce, the draft's test key).
fn formats() -> FormatSet {
    let key: [u8; 16] = parse_hex("8f95f09245765f80256934e50c66207f")
        .unwrap()
        .try_into()
        .unwrap();
    FormatSet::quic_lb(vec![QuicLbConfig::new(QuicLbParams {
        rotation: 1,
        server_id_len: 2,
        nonce_len: 6,
        key: Some(key),
        self_describing_length: false,
    })
    .unwrap()])
    .unwrap()
}

/// Runs the built example and checks what it printed.
fn run_and_decode(binary: &Path) {
    let out = Command::new(binary)
        .arg("50")
        .output()
        .expect("example runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("draft draft-ietf-quic-load-balancers-21, cid_len 9\n"),
        "{text}"
    );
    let set = formats();
    let mut seen = std::collections::HashSet::new();
    for line in text.lines().filter_map(|l| l.strip_prefix("quic-lb ")) {
        let cid = parse_hex(line).unwrap();
        assert_eq!(cid.len(), 9);
        let d = set.decode(&cid).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(
            (d.rotation, d.server_id.as_bytes()),
            (Some(1), &[0x0a, 0x01][..])
        );
        assert!(seen.insert(cid), "a CID repeated");
    }
    assert_eq!(seen.len(), 50);
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("prefix "))
        .expect("a prefix CID");
    let cid = parse_hex(prefix).unwrap();
    let d = FormatSet::prefix(PrefixFormat::CALIFORNIUM)
        .decode(&cid)
        .unwrap();
    assert_eq!((cid.len(), d.server_id.as_bytes()), (6, &[0x2a][..]));
    unscratch(binary);
}

#[test]
fn example_links_statically_and_its_cids_decode() {
    let lib = built("libcidlb_cidgen.a");
    let bin = scratch("mbedtls_cid_static");
    cc(&[
        &example(),
        &lib.display().to_string(),
        "-lpthread",
        "-ldl",
        "-lm",
        "-o",
        &bin.display().to_string(),
    ]);
    run_and_decode(&bin);
}

#[test]
fn example_links_dynamically_and_its_cids_decode() {
    let so = built("libcidlb_cidgen.so");
    let bin = scratch("mbedtls_cid_shared");
    let d = so.parent().unwrap().display().to_string();
    cc(&[
        &example(),
        "-L",
        &d,
        "-lcidlb_cidgen",
        &format!("-Wl,-rpath,{d}"),
        "-o",
        &bin.display().to_string(),
    ]);
    run_and_decode(&bin);
}

/// The bundled Mbed TLS 3.6.5 headers (`mbedtls-rs-sys` 0.3.1 in the cargo registry).
fn mbedtls_include() -> Option<PathBuf> {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
    let src = home.join("registry/src");
    std::fs::read_dir(src)
        .ok()?
        .flatten()
        .map(|e| e.path().join("mbedtls-rs-sys-0.3.1/mbedtls/include"))
        .find(|p| p.join("mbedtls/ssl.h").exists())
}

#[test]
fn mbedtls_part_compiles_against_mbedtls_3_6() {
    let Some(include) = mbedtls_include() else {
        eprintln!("Mbed TLS 3.6 headers not found in the cargo registry: not checked");
        return;
    };
    let obj = scratch("mbedtls_cid.o");
    cc(&[
        "-DCIDLB_EXAMPLE_MBEDTLS",
        "-I",
        &include.display().to_string(),
        "-c",
        &example(),
        "-o",
        &obj.display().to_string(),
    ]);
    unscratch(&obj);
}
