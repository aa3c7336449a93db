//! Properties of the configuration loader: arbitrary bytes, real keys with wrong values,
//! well-typed documents, deep nesting.

use std::collections::BTreeMap;

use lablink::config::{Config, Visitor};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

use super::prop_config;

// ---------------------------------------------------------------------------------------
// Properties: the configuration loader
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Text,
    OptText,
    Bool,
    Int,
}

/// Records each key's type (and with `values`, its value as YAML).
#[derive(Default)]
struct Walker {
    prefix: String,
    kinds: Vec<(String, Kind)>,
    values: Vec<(String, String)>,
}

impl Walker {
    fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.prefix)
        }
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

impl Visitor for Walker {
    fn string(&mut self, key: &str, slot: &mut String) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::Text));
        self.values.push((k, quoted(slot)));
    }
    fn opt_string(&mut self, key: &str, slot: &mut Option<String>) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::OptText));
        self.values
            .push((k, slot.as_deref().map_or("null".to_owned(), quoted)));
    }
    fn boolean(&mut self, key: &str, slot: &mut bool) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::Bool));
        self.values.push((k, slot.to_string()));
    }
    fn integer(&mut self, key: &str, slot: &mut u64) {
        let k = self.key(key);
        self.kinds.push((k.clone(), Kind::Int));
        self.values.push((k, slot.to_string()));
    }
    fn section(&mut self, key: &str, visit: &mut dyn FnMut(&mut dyn Visitor)) {
        let inner = self.key(key);
        let outer = std::mem::replace(&mut self.prefix, inner);
        visit(self);
        self.prefix = outer;
    }
}

fn walk(config: &Config) -> Walker {
    let mut w = Walker::default();
    config.clone().visit(&mut w);
    w
}

/// Every section a key lives in (`monitoring`, `monitoring.thresholds`, …).
fn sections(keys: &[String]) -> Vec<String> {
    let mut out: Vec<String> = keys
        .iter()
        .flat_map(|k| {
            let parts: Vec<&str> = k.split('.').collect();
            (1..parts.len())
                .map(|n| parts[..n].join("."))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

enum Node {
    Leaf(String),
    Map(BTreeMap<String, Node>),
}

/// Block-style YAML of dotted keys with their (already YAML) values; a key that clashes
/// with another's section is left out.
fn yaml(entries: &[(String, String)]) -> String {
    let mut root = BTreeMap::new();
    'entry: for (key, value) in entries {
        let parts: Vec<&str> = key.split('.').collect();
        let mut map = &mut root;
        for part in &parts[..parts.len() - 1] {
            let node = map
                .entry((*part).to_owned())
                .or_insert_with(|| Node::Map(BTreeMap::new()));
            match node {
                Node::Map(m) => map = m,
                Node::Leaf(_) => continue 'entry,
            }
        }
        let last = parts[parts.len() - 1].to_owned();
        if !matches!(map.get(&last), Some(Node::Map(_))) {
            map.insert(last, Node::Leaf(value.clone()));
        }
    }
    fn render(map: &BTreeMap<String, Node>, indent: usize, out: &mut String) {
        for (k, node) in map {
            match node {
                Node::Leaf(v) => out.push_str(&format!("{}{k}: {v}\n", " ".repeat(indent))),
                Node::Map(m) => {
                    out.push_str(&format!("{}{k}:\n", " ".repeat(indent)));
                    render(m, indent + 2, out);
                }
            }
        }
    }
    let mut out = String::new();
    render(&root, 0, &mut out);
    out
}

fn load(
    dir: &std::path::Path,
    bytes: &[u8],
) -> Result<(Config, Vec<lablink::config::Problem>), String> {
    let path = dir.join("config.yaml");
    std::fs::write(&path, bytes).expect("write the config");
    Config::from_file(&path)
}

/// Any YAML scalar, list or mapping, as text.
fn any_yaml_value() -> impl Strategy<Value = (String, bool)> {
    // (text, is a list or mapping)
    prop_oneof![
        any::<i64>().prop_map(|i| (i.to_string(), false)),
        any::<f64>().prop_map(|f| (format!("{f:?}"), false)),
        any::<bool>().prop_map(|b| (b.to_string(), false)),
        prop::sample::select(
            &[
                "null", "~", "yes", "no", "on", "'1'", "\"\"", ".inf", "0x1F", "1e400"
            ][..]
        )
        .prop_map(|s| (s.to_owned(), false)),
        "\\PC{0,30}".prop_map(|s| (quoted(&s), false)),
        "[a-zA-Z0-9 _./:@-]{0,15}".prop_map(|s| (s, false)),
        "[a-z0-9]{0,5}".prop_map(|s| (format!("[1, {s}]"), true)),
        "[a-z0-9]{0,5}".prop_map(|s| (format!("{{a: {s}}}"), true)),
    ]
}

#[test]
fn config_files_of_arbitrary_bytes_never_panic() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Config::keys();
    let entries: Vec<(String, String)> = keys.iter().map(|k| (k.clone(), "1".into())).collect();
    let template = yaml(&entries).into_bytes();
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..512),
        // A real document with some bytes changed.
        prop::collection::vec((any::<usize>(), any::<u8>()), 1..8).prop_map(move |edits| {
            let mut doc = template.clone();
            for (at, byte) in edits {
                let i = at % doc.len();
                doc[i] = byte;
            }
            doc
        }),
    ];
    let mut runner = TestRunner::new(prop_config(256));
    let result = runner.run(&strategy, |bytes| {
        match load(dir.path(), &bytes) {
            Ok((config, problems)) => {
                for p in &problems {
                    prop_assert!(!p.key.is_empty() && !p.message.is_empty(), "{p:?}");
                }
                let _ = config.validate();
            }
            Err(message) => prop_assert!(message.contains("config.yaml"), "{message}"),
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn config_documents_of_real_keys_report_problems_by_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = Config::keys();
    let known_sections = sections(&keys);
    let key = prop_oneof![
        6 => prop::sample::select(keys.clone()),
        1 => prop::sample::select(known_sections.clone()),
        1 => (prop::sample::select(known_sections.clone()), "[a-z_]{1,10}")
            .prop_map(|(s, k)| format!("{s}.{k}")),
        1 => "[a-z_]{1,10}",
    ];
    let strategy = prop::collection::btree_map(key, any_yaml_value(), 0..20);
    let mut runner = TestRunner::new(prop_config(256));
    let result = runner.run(&strategy, |entries| {
        let doc: Vec<(String, String)> = entries
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect();
        let text = yaml(&doc);
        match load(dir.path(), text.as_bytes()) {
            Err(message) => {
                prop_assert!(message.contains("not valid YAML"), "{message}\n{text}");
            }
            Ok((config, problems)) => {
                // Each problem names a key of the file or one of its sections.
                let mut named: Vec<String> = entries.keys().cloned().collect();
                named.extend(sections(&named));
                named.extend(known_sections.iter().cloned());
                for p in &problems {
                    // (or a key inside a mapping the file gave as a value)
                    let inside = entries
                        .iter()
                        .any(|(k, (_, nested))| *nested && p.key.starts_with(&format!("{k}.")));
                    prop_assert!(
                        named.contains(&p.key) || inside || p.key.ends_with(".?"),
                        "problem names no key of the file: {p:?}\n{text}"
                    );
                    prop_assert!(!p.message.is_empty());
                }
                // A list or mapping where a value belongs is always reported.
                for (k, (_, nested)) in &entries {
                    // (unless a section of it was given a plain value, leaving it out)
                    let shadowed = entries.keys().any(|o| k.starts_with(&format!("{o}.")));
                    if *nested && keys.contains(k) && !shadowed {
                        prop_assert!(
                            problems.iter().any(|p| &p.key == k),
                            "{k}: a list or mapping was accepted\n{text}\n{problems:?}"
                        );
                    }
                }
                for p in config.validate() {
                    prop_assert!(keys.contains(&p.key), "validate names no key: {p:?}");
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn well_typed_configs_load_round_trip_and_validate_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    let defaults = walk(&Config::default());
    let kinds = defaults.kinds.clone();
    let text = || {
        prop_oneof![
            3 => "[ -~]{0,20}",
            1 => prop::sample::select(&["é", "ß", "中文", "🙂", "MISSING", "PLACEHOLDER_X", "0.0.0.0:5000", "127.0.0.1,::1"][..])
                .prop_map(str::to_owned),
        ]
    };
    let value = move |kind: Kind| -> BoxedStrategy<String> {
        match kind {
            Kind::Text => text().prop_map(|s| quoted(&s)).boxed(),
            Kind::OptText => prop::option::of(text())
                .prop_map(|s| s.as_deref().map_or("null".to_owned(), quoted))
                .boxed(),
            Kind::Bool => any::<bool>().prop_map(|b| b.to_string()).boxed(),
            Kind::Int => prop_oneof![0u64..200, 0u64..=i64::MAX as u64]
                .prop_map(|n| n.to_string())
                .boxed(),
        }
    };
    let entry =
        prop::sample::select(kinds.clone()).prop_flat_map(move |(k, kind)| (Just(k), value(kind)));
    let strategy = prop::collection::btree_map(entry.prop_map(|(k, v)| (k, v)), Just(()), 0..24)
        .prop_map(|m| m.into_keys().collect::<Vec<(String, String)>>());
    let mut runner = TestRunner::new(prop_config(128));
    let result = runner.run(&strategy, |entries| {
        let text = yaml(&entries);
        let (first, problems) = load(dir.path(), text.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(problems.is_empty(), "{problems:?}\n{text}");
        // Every value was read as written; every other key kept its default.
        let read: BTreeMap<String, String> = walk(&first).values.into_iter().collect();
        let written: BTreeMap<&String, &String> = entries.iter().map(|(k, v)| (k, v)).collect();
        for (key, default) in &defaults.values {
            let want = written.get(key).copied().unwrap_or(default);
            prop_assert_eq!(read.get(key), Some(want), "{}\n{}", key, text);
        }
        // Written out again, it loads to the same configuration.
        let again = yaml(&walk(&first).values);
        let (second, problems) = load(dir.path(), again.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\n{again}")))?;
        prop_assert!(problems.is_empty(), "{problems:?}\n{again}");
        prop_assert_eq!(&second, &first);
        // Validation depends on the values only, and names real keys.
        let verdict = first.validate();
        prop_assert_eq!(&verdict, &first.validate());
        prop_assert_eq!(&verdict, &second.validate());
        let keys = Config::keys();
        for p in &verdict {
            prop_assert!(keys.contains(&p.key), "validate names no key: {p:?}");
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn deeply_nested_config_documents_do_not_crash_the_loader() {
    let dir = tempfile::tempdir().expect("tempdir");
    for doc in [
        format!("server: {}{}", "[".repeat(10_000), "]".repeat(10_000)),
        format!("server: {}{}", "{a: ".repeat(10_000), "}".repeat(10_000)),
        (0..2_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect::<String>(),
    ] {
        match load(dir.path(), doc.as_bytes()) {
            Ok((_, problems)) => assert!(!problems.is_empty()),
            Err(message) => assert!(message.contains("config.yaml"), "{message}"),
        }
    }
}
