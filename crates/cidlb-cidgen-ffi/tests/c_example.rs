//! Builds `examples/mbedtls_cid.c` with the system C compiler against the library that
//! `cargo test` has just built (static and shared), runs it, and decodes every CID it
//! prints with the Rust decoder, in the configuration that `crates/cidlb/examples/
//! cidlb.toml` gives its routable listener: the example must match that file, and its
//! resumed generator must continue the first one's nonces. Runs the build commands of
//! `docs/routable-cids.md` as written. Also checks that its Mbed TLS part compiles
//! against the Mbed TLS 3.6.5 headers that the test-support crate's `mbedtls-rs-sys`
//! bundles, when they are on this machine.

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

/// Removes a scratch file and its directory.
fn unscratch(file: &Path) {
    let _ = std::fs::remove_file(file);
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir(dir);
    }
}

/// A path for a scratch file `name`, in a directory of its own (tests run in parallel:
/// a shared one could be removed by one test while another is about to write to it).
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cidlb-cidgen-test-{}-{name}", std::process::id()));
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

/// Where the example's configuration comes from: this listener of this file, the
/// configuration of its highest rotation (the one servers issue from while older ones
/// are still decoded), as this backend.
const REFERENCE: &str = "../cidlb/examples/cidlb.toml";
const LISTENER: &str = "coaps-routable";
const BACKEND: &str = "dtls-r1";

/// The listener `LISTENER` of `text` (a cidlb.toml) and its backend `BACKEND`.
fn listener_and_backend(text: &str) -> (toml::Table, toml::Table) {
    let doc: toml::Table = text.parse().expect("valid TOML");
    let listener = doc["listener"]
        .as_array()
        .expect("[[listener]]")
        .iter()
        .filter_map(toml::Value::as_table)
        .find(|l| l.get("name").and_then(toml::Value::as_str) == Some(LISTENER))
        .unwrap_or_else(|| panic!("no listener {LISTENER}"))
        .clone();
    let backend = listener["backend"]
        .as_array()
        .expect("[[listener.backend]]")
        .iter()
        .filter_map(toml::Value::as_table)
        .find(|b| b.get("name").and_then(toml::Value::as_str) == Some(BACKEND))
        .unwrap_or_else(|| panic!("no backend {BACKEND} in {LISTENER}"))
        .clone();
    (listener, backend)
}

/// What the example must use, read from [`REFERENCE`].
struct Reference {
    formats: FormatSet,
    rotation: u8,
    config: QuicLbConfig,
    self_describing_length: bool,
    server_id: Vec<u8>,
}

fn reference() -> Reference {
    let text = std::fs::read_to_string(Path::new(MANIFEST).join(REFERENCE)).unwrap();
    let (listener, backend) = listener_and_backend(&text);
    let format = listener["cid_format"]
        .as_table()
        .expect("[listener.cid_format]");
    assert_eq!(format["format"].as_str(), Some("quic-lb"));
    let int = |t: &toml::Table, k: &str| -> usize {
        usize::try_from(t[k].as_integer().unwrap_or_else(|| panic!("{k}"))).unwrap()
    };
    let mut configs = Vec::new();
    let mut newest: Option<(u8, bool)> = None;
    for c in format["config"].as_array().expect("[[...config]]") {
        let c = c.as_table().unwrap();
        let rotation = u8::try_from(int(c, "rotation")).unwrap();
        let sd = c
            .get("self_describing_length")
            .is_some_and(|v| v.as_bool() == Some(true));
        let key = c.get("key").map(|k| {
            let k = parse_hex(k.as_str().unwrap()).unwrap();
            <[u8; 16]>::try_from(k).unwrap()
        });
        configs.push(
            QuicLbConfig::new(QuicLbParams {
                rotation,
                server_id_len: int(c, "server_id_length"),
                nonce_len: int(c, "nonce_length"),
                key,
                self_describing_length: sd,
            })
            .unwrap(),
        );
        if newest.is_none_or(|(r, _)| rotation > r) {
            newest = Some((rotation, sd));
        }
    }
    let (rotation, self_describing_length) = newest.expect("a configuration");
    let server_id = match &backend["server_id"] {
        toml::Value::String(s) => s.clone(),
        toml::Value::Table(per_rotation) => per_rotation[&rotation.to_string()]
            .as_str()
            .unwrap()
            .to_owned(),
        other => panic!("server_id = {other}"),
    };
    let config = configs
        .iter()
        .find(|c| c.rotation() == rotation)
        .unwrap()
        .clone();
    Reference {
        formats: FormatSet::quic_lb(configs).unwrap(),
        rotation,
        config,
        self_describing_length,
        server_id: parse_hex(&server_id).unwrap(),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A nonce (at most 16 octets) as a number.
fn number(nonce: &[u8]) -> u128 {
    assert!(nonce.len() <= 16);
    nonce.iter().fold(0, |n, &b| n << 8 | u128::from(b))
}

/// Checks one run's output (`count` CIDs before and after the resume) against
/// [`REFERENCE`]: every CID decodes there to the backend's server ID, the resumed
/// generator continues the first one's nonce sequence, and no nonce repeats.
fn check_output(text: &str, count: usize) {
    let r = reference();
    let mut lines = text.lines();
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "draft {}, cid_len {}",
                cidlb_cidformat::DRAFT,
                r.config.cid_len()
            )
            .as_str()
        ),
        "{text}"
    );
    assert_eq!(
        lines.next(),
        Some(
            format!(
                "config rotation {}, server_id_length {}, nonce_length {}, \
                 self_describing_length {}, server_id {}",
                r.rotation,
                r.config.server_id_len(),
                r.config.nonce_len(),
                u8::from(r.self_describing_length),
                hex(&r.server_id)
            )
            .as_str()
        ),
        "the example's constants differ from {REFERENCE}\n{text}"
    );
    let nonces = |label: &str| -> Vec<u128> {
        let cids: Vec<Vec<u8>> = text
            .lines()
            .filter_map(|l| l.strip_prefix(label))
            .map(|h| parse_hex(h).unwrap())
            .collect();
        assert_eq!(cids.len(), count, "{label}");
        cids.iter()
            .map(|cid| {
                let d = r
                    .formats
                    .decode(cid)
                    .unwrap_or_else(|e| panic!("{}: {e}", hex(cid)));
                assert_eq!(
                    (d.rotation, d.server_id.as_bytes()),
                    (Some(r.rotation), &r.server_id[..]),
                    "{} is not {BACKEND}'s in {REFERENCE}",
                    hex(cid)
                );
                number(&r.config.decode_full(cid).unwrap().1)
            })
            .collect()
    };
    let space = 1u128 << (8 * r.config.nonce_len());
    let consecutive = |n: &[u128]| n.windows(2).all(|w| (w[0] + 1) % space == w[1]);
    let first = nonces("quic-lb ");
    let resumed = nonces("resumed ");
    assert!(consecutive(&first), "{first:x?}");
    assert!(consecutive(&resumed), "{resumed:x?}");

    let saved = text
        .lines()
        .find_map(|l| l.strip_prefix("counter "))
        .expect("the saved counter");
    let saved = number(&parse_hex(saved).unwrap());
    assert_eq!(saved, (first.last().copied().unwrap_or(saved) + 1) % space);
    if let Some(&n) = resumed.first() {
        assert_eq!(
            n, saved,
            "the resumed generator starts at the saved counter"
        );
    }
    assert!(
        text.contains(&format!(
            "\nissued {count}, remaining {}\n",
            space - count as u128
        )),
        "{text}"
    );
    let all: std::collections::HashSet<u128> = first.iter().chain(&resumed).copied().collect();
    assert_eq!(all.len(), 2 * count, "a nonce repeated");

    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("prefix "))
        .expect("a prefix CID");
    let cid = parse_hex(prefix).unwrap();
    let d = FormatSet::prefix(PrefixFormat::CALIFORNIUM)
        .decode(&cid)
        .unwrap();
    assert_eq!((cid.len(), d.server_id.as_bytes()), (6, &[0x2a][..]));
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
    check_output(&String::from_utf8(out.stdout).unwrap(), 50);
    unscratch(binary);
}

/// The example's comment shows its listener as a cidlb.toml section: it must say what
/// [`REFERENCE`] says.
#[test]
fn example_comment_matches_examples_cidlb_toml() {
    let source = std::fs::read_to_string(example()).unwrap();
    let snippet: String = source
        .lines()
        .skip_while(|l| l.trim() != "* ```toml")
        .skip(1)
        .take_while(|l| l.trim() != "* ```")
        .map(|l| format!("{}\n", l.trim_start().trim_start_matches('*')))
        .collect();
    assert!(
        !snippet.is_empty(),
        "no ```toml section in the example's comment"
    );
    let (shown, shown_backend) = listener_and_backend(&snippet);
    let text = std::fs::read_to_string(Path::new(MANIFEST).join(REFERENCE)).unwrap();
    let (listener, backend) = listener_and_backend(&text);
    for (key, value) in &shown {
        if key != "backend" {
            assert_eq!(Some(value), listener.get(key), "{key}");
        }
    }
    assert_eq!(shown_backend, backend);
    assert_eq!(
        shown["backend"].as_array().map(Vec::len),
        Some(1),
        "one backend"
    );
}

/// The library files a test build made, under the names and in the folder that
/// `cargo build --release` gives them, in a scratch tree that also links the
/// workspace's `crates/`: the documented commands then run there as written.
fn release_tree() -> PathBuf {
    let root = scratch("release-tree");
    let release = root.join("target/release");
    std::fs::create_dir_all(&release).unwrap();
    for file in ["libcidlb_cidgen.a", "libcidlb_cidgen.so"] {
        std::os::unix::fs::symlink(built(file), release.join(file)).unwrap();
    }
    let workspace = Path::new(MANIFEST).parent().unwrap().parent().unwrap();
    std::os::unix::fs::symlink(workspace.join("crates"), root.join("crates")).unwrap();
    root
}

/// docs/routable-cids.md's build commands ("From C"), run as written, build programs
/// that print what they should; the example's own comment shows the same commands.
#[test]
fn documented_build_commands_work() {
    let workspace = Path::new(MANIFEST).parent().unwrap().parent().unwrap();
    let doc = std::fs::read_to_string(workspace.join("docs/routable-cids.md")).unwrap();
    let from_c = &doc[doc.find("### From C").expect("a \"From C\" section")..];
    let block: Vec<&str> = from_c
        .lines()
        .skip_while(|l| *l != "```sh")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    assert!(!block.is_empty(), "no ```sh block under \"From C\"");
    assert_eq!(block[0], "cargo build --release -p cidlb-cidgen-ffi");
    // This test's own build stands in for that first line.
    let script = block[1..].join("\n");
    assert_eq!(script.matches("./mbedtls_cid").count(), 2, "{script}");

    // The comment shows the same static build, its lines after the comment's ` * `.
    let norm = |l: &str| l.trim_start_matches([' ', '*']).trim_end().to_owned();
    let source = std::fs::read_to_string(example()).unwrap();
    let comment: Vec<String> = source.lines().map(norm).collect();
    let static_build: Vec<String> = block
        .iter()
        .take_while(|l| !l.starts_with("./"))
        .map(|l| norm(l))
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        comment
            .windows(static_build.len())
            .any(|w| w == static_build.as_slice()),
        "the example's comment should show {static_build:#?}"
    );

    let root = release_tree();
    let out = Command::new("sh")
        .args(["-euc", &script])
        .current_dir(&root)
        .output()
        .expect("sh runs");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{script}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two programs, each printing its default of 4 CIDs before and after the resume.
    let starts: Vec<usize> = stdout
        .match_indices("draft ")
        .map(|(i, _)| i)
        .filter(|&i| i == 0 || stdout.as_bytes()[i - 1] == b'\n')
        .chain([stdout.len()])
        .collect();
    let runs: Vec<&str> = starts.windows(2).map(|w| &stdout[w[0]..w[1]]).collect();
    assert_eq!(runs.len(), 2, "{stdout}");
    for run in runs {
        check_output(run, 4);
    }
    let _ = std::fs::remove_dir_all(&root);
    unscratch(&root);
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
