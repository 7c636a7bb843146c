//! `include/cidlb_cidgen.h` is written by hand: this keeps it in step with `src/lib.rs`
//! (the same functions with the same parameter and return types, the same constants
//! with the same values, the same struct fields in the same order).

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

/// A constant's value: an integer literal, or the largest 64-bit unsigned integer
/// (`UINT64_MAX` in C, `u64::MAX` in Rust).
fn value(s: &str) -> Option<i128> {
    match s {
        "UINT64_MAX" | "u64::MAX" => Some(i128::from(u64::MAX)),
        _ => s.parse().ok(),
    }
}

fn header_constants() -> BTreeMap<String, i128> {
    HEADER
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("#define CIDLB_")?;
            let name = ident(rest);
            let value = rest[name.len()..].split("/*").next()?.trim();
            let value = value.trim_start_matches('(').trim_end_matches(')');
            Some((format!("CIDLB_{name}"), self::value(value)?))
        })
        .collect()
}

fn source_constants() -> BTreeMap<String, i128> {
    SOURCE
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("pub const CIDLB_")?;
            let name = ident(rest);
            let value = rest.split('=').nth(1)?.trim().trim_end_matches(';');
            Some((format!("CIDLB_{name}"), self::value(value)?))
        })
        .collect()
}

#[test]
fn same_functions() {
    let h = header_functions();
    assert_eq!(h, source_functions());
    assert_eq!(h.len(), 11, "{h:?}");
}

/// The C type `c` (e.g. `const uint8_t *`) in Rust's spelling (`*const u8`).
fn rust_type(c: &str) -> String {
    let stars = c.matches('*').count();
    let base = c.replace('*', " ");
    let mut words: Vec<&str> = base.split_whitespace().collect();
    let constant = words.first() == Some(&"const");
    if constant {
        words.remove(0);
    }
    let base = match words.as_slice() {
        ["int"] => "c_int",
        ["char"] => "c_char",
        ["uint8_t"] => "u8",
        ["uint64_t"] => "u64",
        ["size_t"] => "usize",
        ["void"] => "()",
        [other] => other,
        _ => panic!("unexpected C type {c:?}"),
    };
    let mut t = base.to_owned();
    for i in 0..stars {
        let kind = if i == 0 && constant {
            "*const "
        } else {
            "*mut "
        };
        t = format!("{kind}{t}");
    }
    t
}

/// Each function's return type and parameter types, in Rust's spelling.
fn header_signatures() -> BTreeMap<String, (String, Vec<String>)> {
    let code: String = HEADER
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with('*') && !t.starts_with("/*") && !t.starts_with('#')
        })
        .collect::<Vec<_>>()
        .join(" ");
    code.split(';')
        .filter_map(|decl| {
            let open = decl.find('(')?;
            let head = decl[..open].trim();
            let name_at = head.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
            let name = &head[name_at + 1..];
            if !name.starts_with("cidlb_cidgen_") {
                return None;
            }
            let ret = rust_type(&head[..=name_at]);
            let args = decl[open + 1..decl.rfind(')')?].trim();
            let params = if args == "void" {
                Vec::new()
            } else {
                args.split(',')
                    .map(|a| {
                        // Drop the parameter's name: the last identifier.
                        let a = a.trim();
                        let cut = a.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
                        rust_type(&a[..=cut.expect("a type before the name")])
                    })
                    .collect()
            };
            Some((name.to_owned(), (ret, params)))
        })
        .collect()
}

fn source_signatures() -> BTreeMap<String, (String, Vec<String>)> {
    SOURCE
        .split("extern \"C\" fn ")
        .skip(1)
        .map(|rest| {
            let name = ident(rest);
            let open = rest.find('(').unwrap();
            let close = rest.find(')').unwrap();
            let params = rest[open + 1..close]
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| p.split_once(':').unwrap().1.trim().to_owned())
                .collect();
            let after = rest[close + 1..rest.find('{').unwrap()].trim();
            let ret = after.strip_prefix("->").map_or("()", str::trim).to_owned();
            (name.to_owned(), (ret, params))
        })
        .collect()
}

#[test]
fn same_signatures() {
    let h = header_signatures();
    assert_eq!(h, source_signatures());
    assert_eq!(
        h["cidlb_cidgen_resume"],
        (
            "c_int".to_owned(),
            vec![
                "*mut cidlb_cidgen".to_owned(),
                "*const u8".to_owned(),
                "usize".to_owned(),
                "u64".to_owned()
            ]
        )
    );
    assert_eq!(h.len(), 11, "{h:?}");
}

#[test]
fn same_constants() {
    let h = header_constants();
    assert_eq!(h, source_constants());
    assert_eq!(
        h["CIDLB_ERR_EXHAUSTED"],
        i128::from(cidlb_cidgen::CIDLB_ERR_EXHAUSTED)
    );
    assert_eq!(
        h["CIDLB_CID_MAX_LEN"],
        cidlb_cidgen::CIDLB_CID_MAX_LEN as i128
    );
    assert_eq!(
        h["CIDLB_REMAINING_UNLIMITED"],
        i128::from(cidlb_cidgen::CIDLB_REMAINING_UNLIMITED)
    );
    assert_eq!(h.len(), 10, "{h:?}");
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
