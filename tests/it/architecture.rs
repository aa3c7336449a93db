//! The layers of ARCHITECTURE.md, checked: a module imports only from its own layer and
//! the layers below it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer, from the bottom (0) up, as
/// ARCHITECTURE.md lists them.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "base",
        &[
            "model",
            "config",
            "clock",
            "crd",
            "recurrence",
            "shared_token",
            "secret_file",
            "logging",
            "shutdown",
            "exit",
            "assets",
            "systemd",
            "rfb",
        ],
    ),
    (
        "services",
        &[
            "provision",
            "store",
            "vm_identity",
            "metrics",
            "process",
            "fetch_budget",
            "download",
            "export",
            "doctor",
        ],
    ),
    ("use cases", &["pool"]),
    ("boundary", &["server", "views", "error"]),
    ("runtime", &["allocator", "jobs", "agent"]),
    (
        "entry",
        &["main", "lib", "cli", "commands", "bench", "rehearse"],
    ),
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS
        .iter()
        .position(|(_, modules)| modules.contains(&module))
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The `crate::<module>` names a file's code (not its comments, not its unit tests) uses.
fn imported_modules(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    let mut modules = BTreeSet::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or_default();
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            modules.insert(name);
        }
    }
    modules
}

#[test]
fn every_module_imports_only_its_own_layer_and_the_ones_below() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut unplaced = Vec::new();
    let mut upward = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under src");
        let top = relative
            .components()
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .expect("a name")
            .trim_end_matches(".rs")
            .to_owned();
        let Some(own) = layer_of(&top) else {
            unplaced.push(top);
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read");
        for module in imported_modules(&text) {
            if module == top {
                continue;
            }
            match layer_of(&module) {
                Some(layer) if layer > own => upward.push(format!(
                    "src/{} ({}) imports crate::{module} ({})",
                    relative.display(),
                    LAYERS[own].0,
                    LAYERS[layer].0
                )),
                Some(_) => {}
                None => unplaced.push(module),
            }
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(
        unplaced.is_empty(),
        "modules missing from the layer table (add them here and to ARCHITECTURE.md): {unplaced:?}"
    );
    assert!(
        upward.is_empty(),
        "imports against the layers of ARCHITECTURE.md:\n{}",
        upward.join("\n")
    );
}
