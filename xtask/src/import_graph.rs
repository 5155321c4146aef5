//! `cargo xtask lint` checks that the agent's modules import each other without circles:
//! every `crate::` and `super::` path in a file (in `use` trees and inline) is resolved to
//! the file module it names, and the graph of those edges must have no cycle. Test-only
//! inline modules (`#[cfg(test)] mod ...`) are left out: tests may reach anywhere.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
};

use anyhow::{Result, bail};

type Module = Vec<String>;

/// The module path of a file: `main.rs` is the root, `a/mod.rs` and `a.rs` are `a`.
fn module_of(src: &Path, file: &Path) -> Option<Module> {
    let rel = file.strip_prefix(src).ok()?.with_extension("");
    let mut parts: Module = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    match parts.last().map(String::as_str) {
        Some("main" | "lib") if parts.len() == 1 => parts.clear(),
        Some("mod") => {
            parts.pop();
        }
        _ => {}
    }
    Some(parts)
}

/// The source without comments, string and char literals (their contents could look like
/// paths).
fn strip(source: &str) -> String {
    let b = source.as_bytes();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 2;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n'), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            }
            c => {
                out.push(c as char);
                i += 1;
            }
        }
    }
    out
}

#[derive(Debug, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other(char),
}

fn tokens(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
            continue;
        }
        match c {
            ':' if chars.get(i + 1) == Some(&':') => {
                out.push(Token::PathSep);
                i += 2;
                continue;
            }
            '{' => out.push(Token::Open),
            '}' => out.push(Token::Close),
            ',' => out.push(Token::Comma),
            c if c.is_whitespace() => {}
            c => out.push(Token::Other(c)),
        }
        i += 1;
    }
    out
}

/// Reads a path (or `use` tree) starting at `at`, after its first segment; pushes every
/// full path it names into `out`.
fn read_tree(t: &[Token], mut at: usize, prefix: &mut Module, out: &mut Vec<Module>) -> usize {
    let depth = prefix.len();
    loop {
        match (t.get(at), t.get(at + 1)) {
            (Some(Token::PathSep), Some(Token::Ident(seg))) => {
                prefix.push(seg.clone());
                at += 2;
            }
            (Some(Token::PathSep), Some(Token::Open)) => {
                at += 2;
                loop {
                    match t.get(at) {
                        Some(Token::Ident(seg)) => {
                            let mut sub = prefix.clone();
                            sub.push(seg.clone());
                            at = read_tree(t, at + 1, &mut sub, out);
                        }
                        Some(Token::Comma) => at += 1,
                        Some(Token::Close) => {
                            at += 1;
                            break;
                        }
                        Some(_) => at += 1,
                        None => break,
                    }
                }
                prefix.truncate(depth);
                return at;
            }
            _ => {
                out.push(prefix.clone());
                prefix.truncate(depth);
                return at;
            }
        }
    }
}

/// Every module path a file refers to, as written (`crate::...` absolute, `super::...`
/// resolved against `module`, and `child::...` for the file's own submodules), outside
/// test-only inline modules.
fn references(module: &Module, children: &BTreeSet<String>, source: &str) -> Vec<Module> {
    let t = tokens(&strip(source));
    let mut out = Vec::new();
    // Inline modules: (brace depth they opened at, whether they are test-only).
    let mut inline: Vec<(usize, bool)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < t.len() {
        match &t[i] {
            Token::Open => depth += 1,
            Token::Close => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(d, _)| *d == depth) {
                    inline.pop();
                }
            }
            Token::Ident(kw) if kw == "mod" => {
                if let (Some(Token::Ident(_)), Some(Token::Open)) = (t.get(i + 1), t.get(i + 2)) {
                    // `#[cfg(test)] [pub] mod name {`: the tokens before `mod`, backwards.
                    let mut k = i;
                    if k > 0 && matches!(&t[k - 1], Token::Ident(p) if p == "pub") {
                        k -= 1;
                    }
                    let test_only = k >= 5
                        && matches!(&t[k - 5], Token::Ident(c) if c == "cfg")
                        && matches!(&t[k - 3], Token::Ident(x) if x == "test");
                    inline.push((depth, test_only));
                }
            }
            // A path into one of this file's submodules (`cpu::CpuCollector`), not after
            // `::` (that would be a segment of another path) and not its `mod` line.
            Token::Ident(child)
                if inline.is_empty()
                    && children.contains(child)
                    && t.get(i + 1) == Some(&Token::PathSep)
                    && (i == 0 || t[i - 1] != Token::PathSep) =>
            {
                let mut base = module.clone();
                base.push(child.clone());
                let end = read_tree(&t, i + 1, &mut base, &mut out);
                i = end.max(i + 1);
                continue;
            }
            Token::Ident(root) if root == "crate" || root == "super" => {
                // `pub(super)`, `pub(crate)`: a visibility, not a path.
                let visibility = i >= 2
                    && t[i - 1] == Token::Other('(')
                    && matches!(&t[i - 2], Token::Ident(p) if p == "pub");
                if visibility || inline.iter().any(|(_, test)| *test) {
                    i += 1;
                    continue;
                }
                let mut base: Module = if root == "crate" {
                    Vec::new()
                } else {
                    // `super` in the file's own scope is its parent; inside an inline module
                    // it is the file's module (nested inline modules are not used here).
                    let mut m = module.clone();
                    if inline.is_empty() {
                        m.pop();
                    }
                    m
                };
                let mut j = i + 1;
                // super::super::...
                while let (Some(Token::PathSep), Some(Token::Ident(s))) = (t.get(j), t.get(j + 1)) {
                    if s != "super" {
                        break;
                    }
                    base.pop();
                    j += 2;
                }
                let end = read_tree(&t, j, &mut base, &mut out);
                i = end.max(i + 1);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Checks `src` (the agent's `src/`), failing with every cycle found.
pub fn check(src: &Path) -> Result<()> {
    let mut files = Vec::new();
    let mut stack = vec![src.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|e| e == "rs") {
                files.push(p);
            }
        }
    }
    let modules: BTreeMap<Module, String> = files
        .iter()
        .filter_map(|f| Some((module_of(src, f)?, std::fs::read_to_string(f).ok()?)))
        .collect();
    // Edges between file modules: a path names the longest module it starts with.
    let mut edges: BTreeMap<&Module, BTreeSet<&Module>> = BTreeMap::new();
    for (module, source) in &modules {
        let children: BTreeSet<String> = modules
            .keys()
            .filter(|m| m.len() == module.len() + 1 && m.starts_with(module))
            .filter_map(|m| m.last().cloned())
            .collect();
        let targets = edges.entry(module).or_default();
        for path in references(module, &children, source) {
            let target = (0..=path.len())
                .rev()
                .map(|n| &path[..n])
                .find_map(|p| modules.get_key_value(p).map(|(k, _)| k));
            if let Some(target) = target
                && target != module
                && !target.is_empty()
            {
                targets.insert(target);
            }
        }
    }
    let cycles = find_cycles(&edges);
    if cycles.is_empty() {
        return Ok(());
    }
    let show = |m: &Module| {
        if m.is_empty() {
            "crate".to_owned()
        } else {
            m.join("::")
        }
    };
    let lines: Vec<String> = cycles
        .iter()
        .map(|c| c.iter().map(|m| show(m)).collect::<Vec<_>>().join(", "))
        .collect();
    bail!(
        "modules import each other in a circle (each group reaches every member through the others; move what they share into a module of its own):\n  {}",
        lines.join("\n  ")
    )
}

/// One cycle per strongly connected component with more than one module (Tarjan).
fn find_cycles<'a>(edges: &BTreeMap<&'a Module, BTreeSet<&'a Module>>) -> Vec<Vec<&'a Module>> {
    struct State<'a> {
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        on_stack: BTreeSet<&'a Module>,
        stack: Vec<&'a Module>,
        next: usize,
        out: Vec<Vec<&'a Module>>,
    }
    fn visit<'a>(
        v: &'a Module,
        edges: &BTreeMap<&'a Module, BTreeSet<&'a Module>>,
        s: &mut State<'a>,
    ) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for &w in edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(w, edges, s);
                let lw = s.low[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(lw);
            } else if s.on_stack.contains(w) {
                let iw = s.index[w];
                let lv = s.low.get_mut(v).expect("visited");
                *lv = (*lv).min(iw);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                component.push(w);
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.reverse();
                s.out.push(component);
            }
        }
    }
    let mut s = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        on_stack: BTreeSet::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for &v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(v, edges, &mut s);
        }
    }
    s.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(s: &str) -> Module {
        s.split("::").map(str::to_owned).collect()
    }

    #[test]
    fn reads_nested_use_trees_and_super() {
        let src = "use crate::{a::b::{C, d}, e};\nuse super::f::G;\nfn x() { crate::h::i(); }\n#[cfg(test)]\npub mod tests { use crate::z; }\n";
        let refs = references(&m("p::q"), &BTreeSet::new(), src);
        for want in ["a::b::C", "a::b::d", "e", "p::f::G", "h::i"] {
            assert!(refs.contains(&m(want)), "{want} in {refs:?}");
        }
        assert!(!refs.contains(&m("z")), "test modules are left out");
        let children = BTreeSet::from(["cpu".to_owned()]);
        let refs = references(
            &m("collectors"),
            &children,
            "pub mod cpu;\nfn f() { cpu::Cpu::new(); x::cpu::y(); }\n",
        );
        assert_eq!(
            refs,
            vec![m("collectors::cpu::Cpu::new")],
            "child paths count, once"
        );
    }

    #[test]
    fn a_visibility_is_not_a_path() {
        let src = "pub(super) fn f() {}\npub(crate) struct S;\nuse super::g::H;\n";
        let refs = references(&m("p::q"), &BTreeSet::new(), src);
        assert_eq!(refs, vec![m("p::g::H")]);
    }

    #[test]
    fn finds_a_two_module_circle() {
        let (a, b, c) = (m("a"), m("b"), m("c"));
        let mut edges = BTreeMap::new();
        edges.insert(&a, BTreeSet::from([&b]));
        edges.insert(&b, BTreeSet::from([&a, &c]));
        edges.insert(&c, BTreeSet::new());
        assert_eq!(find_cycles(&edges).len(), 1);
    }
}
