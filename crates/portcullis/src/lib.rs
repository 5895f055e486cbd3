//! Portcullis: a self-hostable authentication and authorization server.
//!
//! The modules form layers, each using only those below it (a test checks that no
//! two reach each other, directly or around a circle):
//! - **edge**: `cli` (the `portcullis` command), `server` (wiring), `http` (routes,
//!   extractors, problem+json), `listener`;
//! - **OAuth provider**: `oauth` (authorization, grants, introspection, client
//!   authentication and administration);
//! - **domain**: `auth` (accounts, sign-in, sessions, refresh and its reuse
//!   detection, re-authentication), `admin` (users and roles), `api_keys`, `clients`
//!   (the OAuth client registry), `rbac` (permissions, credential owners), `audit`,
//!   `abuse` (rate limits, lockout), `tokens`, `keys`, `passwords`, `outbound` (the
//!   one guarded HTTP client);
//! - **foundations**: `ctx` (request context, principal), `config`, `page`,
//!   `validate`, `units`, `store` (all SQL for SQLite and PostgreSQL), `crypto`,
//!   `clock`, `shutdown`.

pub mod abuse;
pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod clients;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod ctx;
pub mod events;
pub mod http;
pub mod jobs;
pub mod keys;
pub mod listener;
pub mod mail;
pub mod oauth;
pub mod outbound;
pub mod page;
pub mod passwords;
pub mod rbac;
pub mod server;
pub mod shutdown;
pub mod sms;
pub mod store;
pub mod tokens;
pub mod units;
pub mod validate;
pub mod views;
pub mod webhooks;

#[cfg(test)]
mod layering {
    use std::collections::{BTreeMap, BTreeSet};

    /// Every `crate::module` a top-level module names (tests and comments aside).
    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = vec![src.clone()];
        let mut sources = Vec::new();
        while let Some(p) = files.pop() {
            for e in std::fs::read_dir(&p).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    files.push(path);
                } else if path.extension().is_some_and(|x| x == "rs") {
                    sources.push(path);
                }
            }
        }
        let top = |p: &std::path::Path| {
            let rel = p.strip_prefix(&src).unwrap();
            let first = rel.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
            first.trim_end_matches(".rs").to_owned()
        };
        let modules: BTreeSet<String> = sources.iter().map(|p| top(p)).filter(|m| m != "lib" && m != "main").collect();
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for path in &sources {
            let from = top(path);
            if !modules.contains(&from) {
                continue;
            }
            let text = std::fs::read_to_string(path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            let code: String = code.lines().map(|l| l.split("//").next().unwrap()).collect::<Vec<_>>().join("\n");
            let mut names = Vec::new();
            for (i, _) in code.match_indices("crate::") {
                names.push(
                    code[i + 7..].chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect::<String>(),
                );
            }
            // `use crate::{a::x, b};`: the names right after `{` and `,`.
            for block in code.split("use crate::{").skip(1) {
                let block = block.split("};").next().unwrap();
                let mut depth = 0;
                let mut item = String::new();
                for c in block.chars() {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            names.push(item.trim().split("::").next().unwrap().to_owned());
                            item.clear();
                        }
                        _ if depth == 0 => item.push(c),
                        _ => {}
                    }
                }
                names.push(item.trim().split("::").next().unwrap().to_owned());
            }
            for name in names {
                if name != from && modules.contains(&name) {
                    graph.entry(from.clone()).or_default().insert(name);
                }
            }
        }
        graph
    }

    #[test]
    fn top_level_modules_form_layers() {
        let graph = graph();
        let reaches = |from: &str, to: &str| {
            let mut seen = BTreeSet::new();
            let mut stack = vec![from.to_owned()];
            while let Some(m) = stack.pop() {
                for next in graph.get(&m).into_iter().flatten() {
                    if next == to {
                        return true;
                    }
                    if seen.insert(next.clone()) {
                        stack.push(next.clone());
                    }
                }
            }
            false
        };
        let circles: Vec<String> = graph
            .iter()
            .flat_map(|(a, bs)| bs.iter().filter(|b| reaches(b, a)).map(move |b| format!("{a} -> {b}")))
            .collect();
        assert!(circles.is_empty(), "modules that reach each other: {circles:?}");
        assert!(graph.get("store").is_some_and(|d| !d.contains("http")), "{graph:?}");
        assert!(graph.len() > 10, "the graph was read: {graph:?}");
    }
}
