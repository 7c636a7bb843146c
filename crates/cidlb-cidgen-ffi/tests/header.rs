//! `include/cidlb_cidgen.h` is written by hand: this keeps it in step with `src/lib.rs`
//! (the same functions, the same constants with the same values, the same struct
//! fields in the same order).

use std::collections::BTreeMap;

const HEADER: &str = include_str!("../include/cidlb_cidgen.h");
const SOURCE: &str = include_str!("../src/lib.rs");

/// Identifier starting at `s`.
fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

fn header_functions() -> Vec<String> {
    let mut v: Vec<String> = HEADER
        .lines()
        .filter(|l| !l.trim_start().starts_with('*') && !l.trim_start().starts_with("/*"))
        .filter_map(|l| {
            let i = l.find("cidlb_cidgen_")?;
            let name = ident(&l[i..]);
            l[i + name.len()..]
                .starts_with('(')
                .then(|| name.to_owned())
        })
        .collect();
    v.sort();
    v
}

fn source_functions() -> Vec<String> {
    let mut v: Vec<String> = SOURCE
        .lines()
        .filter_map(|l| {
            let rest = l
                .strip_prefix("pub unsafe extern \"C\" fn ")
                .or_else(|| l.strip_prefix("pub extern \"C\" fn "))?;
            Some(ident(rest).to_owned())
        })
        .collect();
    v.sort();
    v
}

fn header_constants() -> BTreeMap<String, i64> {
    HEADER
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("#define CIDLB_")?;
            let name = ident(rest);
            let value = rest[name.len()..].split("/*").next()?.trim();
            let value = value.trim_start_matches('(').trim_end_matches(')');
            Some((format!("CIDLB_{name}"), value.parse().ok()?))
        })
        .collect()
}

fn source_constants() -> BTreeMap<String, i64> {
    SOURCE
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("pub const CIDLB_")?;
            let name = ident(rest);
            let value = rest.split('=').nth(1)?.trim().trim_end_matches(';');
            Some((format!("CIDLB_{name}"), value.parse().ok()?))
        })
        .collect()
}

#[test]
fn same_functions() {
    let h = header_functions();
    assert_eq!(h, source_functions());
    assert_eq!(h.len(), 7, "{h:?}");
}

#[test]
fn same_constants() {
    let h = header_constants();
    assert_eq!(h, source_constants());
    assert_eq!(
        h["CIDLB_ERR_EXHAUSTED"],
        i64::from(cidlb_cidgen::CIDLB_ERR_EXHAUSTED)
    );
    assert_eq!(
        h["CIDLB_CID_MAX_LEN"],
        cidlb_cidgen::CIDLB_CID_MAX_LEN as i64
    );
    assert_eq!(h.len(), 8, "{h:?}");
}

#[test]
fn same_config_struct() {
    let fields = |text: &str, start: &str, end: &str| -> Vec<String> {
        let s = &text[text.find(start).expect(start)..];
        let s = &s[..s.find(end).expect(end)];
        [
            "rotation",
            "server_id_length",
            "nonce_length",
            "self_describing_length",
            "key",
        ]
        .iter()
        .filter_map(|f| s.find(&format!(" {f}")).map(|i| (i, f.to_string())))
        .collect::<BTreeMap<_, _>>()
        .into_values()
        .collect()
    };
    let h = fields(
        HEADER,
        "typedef struct cidlb_quic_lb_config {",
        "} cidlb_quic_lb_config;",
    );
    let r = fields(SOURCE, "pub struct cidlb_quic_lb_config {", "\n}");
    assert_eq!(h, r);
    assert_eq!(h.len(), 5);
}
