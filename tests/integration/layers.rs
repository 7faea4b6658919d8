//! The dependency rule of `src/` (docs/decisions/0005-layers.md), checked on the sources:
//! domain ← store ← service ← {web, cli}; http stands alone. A `use` that breaks it fails
//! here with the file and the path it named.

use std::path::{Path, PathBuf};

/// What each layer may name with `crate::…` (besides itself).
const RULES: &[(&str, &[&str])] = &[
    // HTTP/1.1 only: nothing else in the crate but who counts as one client (a leaf that
    // names nothing).
    ("http", &["client_net"]),
    // Pure types and rules.
    ("domain", &[]),
    // The store: the domain, and the lock helpers.
    ("store", &["domain", "sync", "progress", "tls_client"]),
    // The use-cases: the store (through its trait and types), the domain.
    (
        "service",
        &[
            "domain",
            "store",
            "sync",
            "progress",
            "tls_client",
            "client_net",
        ],
    ),
    // The service over HTTP, writing its access log through the log writer.
    (
        "web",
        &["domain", "store", "service", "http", "sync", "logging"],
    ),
];

/// Modules outside the layers that no layer may name (the binary's glue).
const GLUE: &[&str] = &["cli", "config", "serve", "systemd_notify", "fuzz_checks"];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first segment of every `crate::` path in the code (comments skipped).
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for part in code.split("crate::").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '{')
                .collect();
            found.push((n + 1, name));
        }
    }
    found
}

fn layer_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    RULES
        .iter()
        .any(|(layer, _)| *layer == name)
        .then(|| name.to_owned())
}

#[test]
fn every_import_follows_the_layer_rule() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut broken = Vec::new();
    let mut checked = 0;
    for file in &files {
        let Some(layer) = layer_of(&root, file) else {
            continue;
        };
        checked += 1;
        let allowed = RULES
            .iter()
            .find(|(l, _)| *l == layer)
            .map_or(&[][..], |(_, a)| *a);
        let text = std::fs::read_to_string(file).unwrap();
        for (line, name) in crate_paths(&text) {
            let ok = name == layer || allowed.contains(&name.as_str());
            if !ok {
                broken.push(format!(
                    "{}:{line}: {layer}/ names crate::{name}",
                    file.strip_prefix(&root).unwrap().display()
                ));
            }
        }
        // Reaching out of the layer with super:: is the same import in disguise.
        let depth = file.strip_prefix(&root).unwrap().components().count() - 1;
        let escape = "super::".repeat(depth + usize::from(!file.ends_with("mod.rs")));
        if depth > 0 && text.contains(&format!("{escape}super::")) {
            broken.push(format!("{}: super:: out of {layer}/", file.display()));
        }
    }
    assert!(
        checked > 40,
        "only {checked} layered files found under {root:?}"
    );
    assert!(
        broken.is_empty(),
        "layer rule broken:\n{}",
        broken.join("\n")
    );
    for glue in GLUE {
        assert!(
            !RULES.iter().any(|(l, _)| l == glue),
            "{glue} is glue, not a layer"
        );
    }
}

#[test]
fn above_the_store_nothing_names_its_implementation() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    for file in files {
        if layer_of(&root, &file).is_some_and(|l| l == "service" || l == "web") {
            let text = std::fs::read_to_string(&file).unwrap();
            assert!(
                !text.contains("store::sled") && !text.contains("SledStore"),
                "{} names the sled store; go through the Store trait",
                file.display()
            );
        }
    }
}

/// The leaf utilities every layer above the domain may use name nothing but the domain.
#[test]
fn the_shared_utilities_are_leaves() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    for leaf in [
        "sync.rs",
        "logging.rs",
        "progress.rs",
        "tls_client.rs",
        "trust.rs",
        "client_net.rs",
    ] {
        let text = std::fs::read_to_string(root.join(leaf)).unwrap();
        for (line, name) in crate_paths(&text) {
            assert!(
                name == "domain" || leaf.starts_with(name.as_str()),
                "{leaf}:{line} names crate::{name}"
            );
        }
    }
}

#[test]
fn the_checker_sees_a_broken_import() {
    let paths = crate_paths("use crate::service::Service; // crate::web in a comment\n");
    assert_eq!(paths, vec![(1, "service".to_owned())]);
}

/// Inside the HTTP layer every import points one way (config and handler below admission,
/// below the request pool, below the event loop, below the server): no module cycle.
#[test]
fn no_import_cycle_inside_http() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http");
    let mut modules: Vec<(String, String)> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
        if name != "mod" {
            modules.push((name, std::fs::read_to_string(&path).unwrap()));
        }
    }
    let names: Vec<&str> = modules.iter().map(|(n, _)| n.as_str()).collect();
    let uses = |text: &str| -> Vec<String> {
        let code: String = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n");
        names
            .iter()
            .filter(|n| code.contains(&format!("super::{n}::")))
            .map(|n| (*n).to_owned())
            .collect()
    };
    let graph: Vec<(String, Vec<String>)> = modules
        .iter()
        .map(|(n, text)| (n.clone(), uses(text)))
        .collect();
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        graph: &[(String, Vec<String>)],
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) {
        if done.iter().any(|d| d == node) {
            return;
        }
        assert!(
            !path.iter().any(|p| p == node),
            "import cycle in http: {} -> {node}",
            path.join(" -> ")
        );
        path.push(node.to_owned());
        let edges = graph
            .iter()
            .find(|(n, _)| n == node)
            .map(|(_, e)| e.clone());
        for next in edges.unwrap_or_default() {
            visit(&next, graph, path, done);
        }
        path.pop();
        done.push(node.to_owned());
    }
    let mut done = Vec::new();
    for (name, _) in &graph {
        visit(name, &graph, &mut Vec::new(), &mut done);
    }
    assert!(graph
        .iter()
        .any(|(n, e)| n == "server" && e.contains(&"event_loop".to_owned())));
}
