//! The static files: the desktop page's ES modules load through the server (each import
//! resolves to a file served as JavaScript), and vendored code carries its licence.

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use regex::Regex;
use reqwest::{StatusCode, Url};

use crate::helpers::TestServer;

/// The module specifiers of an ES module: static imports and re-exports, bare side-effect
/// imports and dynamic `import("…")` with a literal.
fn imports(source: &str) -> Vec<String> {
    let pattern = Regex::new(
        r#"(?:import|export)\s[^'";]*?\bfrom\s*['"]([^'"]+)['"]|\bimport\s*\(\s*['"]([^'"]+)['"]\s*\)|\bimport\s*['"]([^'"]+)['"]"#,
    )
    .expect("regex");
    pattern
        .captures_iter(source)
        .filter_map(|c| c.get(1).or(c.get(2)).or(c.get(3)))
        .map(|m| m.as_str().to_owned())
        .collect()
}

#[tokio::test]
async fn the_desktop_script_and_every_module_it_imports_are_served_as_javascript() {
    let s = TestServer::start().await;
    let start = Url::parse(&s.url("/assets/desktop.js")).expect("url");
    let mut seen = BTreeSet::from([start.path().to_owned()]);
    let mut queue = VecDeque::from([start]);
    while let Some(url) = queue.pop_front() {
        let answer = s.client.get(url.clone()).send().await.expect("GET");
        assert_eq!(answer.status(), StatusCode::OK, "{url}");
        // A browser runs a module script only with a JavaScript MIME type.
        assert_eq!(answer.headers()["content-type"], "text/javascript", "{url}");
        let source = answer.text().await.expect("body");
        for specifier in imports(&source) {
            // Without an import map a browser resolves only relative specifiers.
            assert!(
                specifier.starts_with("./") || specifier.starts_with("../"),
                "{url} imports {specifier:?}"
            );
            let next = url.join(&specifier).expect("resolve");
            if seen.insert(next.path().to_owned()) {
                queue.push_back(next);
            }
        }
    }
    for module in [
        "/assets/vendor/novnc/core/rfb.js",
        "/assets/vendor/novnc/core/websock.js",
        "/assets/vendor/novnc/vendor/pako/lib/zlib/inflate.js",
    ] {
        assert!(seen.contains(module), "{module} not reached: {seen:?}");
    }
}

#[test]
fn import_scan_finds_each_form_of_import() {
    let source = r#"
        import * as Log from './util/logging.js';
        import RFB from "./core/rfb.js";
        import { a,
                 b } from '../x/y.js';
        export { c } from "./c.js";
        import "./side-effect.js";
        const m = await import("./lazy.js");
        // "from" in prose, not an import: const from = 'nothing';
    "#;
    assert_eq!(
        imports(source),
        [
            "./util/logging.js",
            "./core/rfb.js",
            "../x/y.js",
            "./c.js",
            "./side-effect.js",
            "./lazy.js"
        ]
    );
}

fn vendor_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/vendor")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn has_licence(dir: &Path) -> bool {
    std::fs::read_dir(dir).expect("read_dir").any(|e| {
        let name = e.expect("entry").file_name();
        let name = name.to_string_lossy();
        name.starts_with("LICENSE") || name.starts_with("LICENCE")
    })
}

#[test]
fn every_vendored_script_has_a_licence_beside_it_or_above_it() {
    let vendor = vendor_dir();
    let mut files = Vec::new();
    files_under(&vendor, &mut files);
    let scripts: Vec<_> = files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "js"))
        .collect();
    assert!(scripts.len() > 50, "{} scripts", scripts.len());
    for script in scripts {
        let licensed = script
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(&vendor))
            .any(has_licence);
        assert!(licensed, "{} has no licence file", script.display());
    }
    // pako is MIT, not noVNC's MPL-2.0: its own licence sits in its own directory.
    assert!(has_licence(&vendor.join("novnc/vendor/pako")));
    assert!(vendor.join("novnc/docs/LICENSE.MPL-2.0").is_file());
}

#[test]
fn the_vendored_novnc_version_is_named_and_the_readme_says_so() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let version = std::fs::read_to_string(root.join("assets/vendor/novnc/VERSION"))
        .expect("assets/vendor/novnc/VERSION");
    let pinned = Regex::new(r"^noVNC (\d+\.\d+\.\d+),")
        .expect("regex")
        .captures(&version)
        .expect("VERSION starts with `noVNC <x.y.z>,`")[1]
        .to_owned();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    assert!(
        readme.contains(&format!("noVNC {pinned}")),
        "README.md does not name noVNC {pinned}"
    );
}
