//! The readers that fill a [`Config`] from YAML and from the environment.

use std::collections::BTreeSet;
use std::fmt;

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Event, Yaml, YamlLoader};

use super::keys::join;
use super::{Config, Visitor};

/// One thing wrong with the configuration, named by its key path (or variable name).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// `LABLINK_*` variables that are not configuration keys but are read elsewhere.
const OTHER_VARIABLES: [&str; 3] = ["LABLINK_CONFIG", "LABLINK_LOG", "LABLINK_LOG_FORMAT"];

/// Deepest nesting of lists and mappings a file may have. The YAML loader recurses once
/// per level, so a file nested thousands of levels deep would overflow the stack.
const MAX_NESTING: usize = 64;

/// Walks the parser's events (which needs no recursion) to refuse too deep a nesting
/// before the loader sees it.
fn check_nesting(text: &str) -> Result<(), String> {
    let mut parser = yaml_rust2::parser::Parser::new_from_str(text);
    let mut depth = 0usize;
    loop {
        let (event, mark) = parser.next_token().map_err(|e| e.to_string())?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(format!(
                        "nested more than {MAX_NESTING} levels deep at line {}",
                        mark.line()
                    ));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            Event::StreamEnd => return Ok(()),
            _ => {}
        }
    }
}

pub fn apply_yaml(config: &mut Config, text: &str) -> Result<Vec<Problem>, String> {
    check_nesting(text)?;
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut problems = Vec::new();
    let empty = Hash::new();
    let root = match docs.first() {
        None | Some(Yaml::Null) => &empty,
        Some(Yaml::Hash(h)) => h,
        Some(other) => {
            problems.push(Problem {
                key: "(top level)".into(),
                message: format!("expected a mapping of keys, found {}", kind(other)),
            });
            return Ok(problems);
        }
    };
    let mut reader = YamlReader {
        map: root,
        prefix: String::new(),
        seen: BTreeSet::new(),
        problems: &mut problems,
    };
    config.visit(&mut reader);
    reader.report_unknown();
    Ok(problems)
}

pub fn apply_env(config: &mut Config, vars: &[(String, String)]) -> Vec<Problem> {
    let mut reader = EnvReader {
        vars,
        prefix: "LABLINK".into(),
        consumed: BTreeSet::new(),
        problems: Vec::new(),
    };
    config.visit(&mut reader);
    let known = Config::key_table()
        .into_iter()
        .map(|k| k.env)
        .collect::<Vec<_>>();
    for (name, _) in vars {
        if name.starts_with("LABLINK_")
            && !reader.consumed.contains(name)
            && !OTHER_VARIABLES.contains(&name.as_str())
        {
            let base = name.strip_suffix("_FILE").unwrap_or(name);
            reader.problems.push(Problem {
                key: name.clone(),
                message: format!("unknown variable{}", suggestion(base, &known)),
            });
        }
    }
    reader.problems
}

/// `server.long_poll_seconds` → `LABLINK_SERVER_LONG_POLL_SECONDS`.
pub fn env_name(key: &str) -> String {
    format!("LABLINK_{}", key.replace('.', "_").to_ascii_uppercase())
}

fn suggestion(name: &str, candidates: &[String]) -> String {
    candidates
        .iter()
        .map(|c| (strsim::jaro_winkler(name, c), c))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| format!("; did you mean `{c}`?"))
        .unwrap_or_default()
}

fn kind(value: &Yaml) -> &'static str {
    match value {
        Yaml::Real(_) => "a number",
        Yaml::Integer(_) => "an integer",
        Yaml::String(_) => "a string",
        Yaml::Boolean(_) => "a boolean",
        Yaml::Array(_) => "a list",
        Yaml::Hash(_) => "a mapping",
        Yaml::Alias(_) => "an alias",
        Yaml::Null => "null",
        Yaml::BadValue => "an unreadable value",
    }
}

fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "y" | "1" => Some(true),
        "false" | "no" | "off" | "n" | "0" => Some(false),
        _ => None,
    }
}

struct YamlReader<'a> {
    map: &'a Hash,
    prefix: String,
    seen: BTreeSet<String>,
    problems: &'a mut Vec<Problem>,
}

impl YamlReader<'_> {
    fn take(&mut self, key: &str) -> Option<&Yaml> {
        self.seen.insert(key.to_owned());
        self.map.get(&Yaml::String(key.to_owned()))
    }

    fn problem(&mut self, key: &str, message: String) {
        self.problems.push(Problem {
            key: join(&self.prefix, key),
            message,
        });
    }

    fn report_unknown(&mut self) {
        let seen: Vec<String> = self.seen.iter().cloned().collect();
        for k in self.map.keys() {
            match k {
                Yaml::String(name) if self.seen.contains(name) => {}
                Yaml::String(name) => {
                    let name = name.clone();
                    let hint = suggestion(&name, &seen);
                    self.problem(&name, format!("unknown key{hint}"));
                }
                other => {
                    let message = format!("keys must be strings, found {}", kind(other));
                    self.problems.push(Problem {
                        key: join(&self.prefix, "?"),
                        message,
                    });
                }
            }
        }
    }

    fn scalar_text(value: &Yaml) -> Option<String> {
        match value {
            Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
            Yaml::Integer(i) => Some(i.to_string()),
            Yaml::Boolean(b) => Some(b.to_string()),
            _ => None,
        }
    }
}

impl Visitor for YamlReader<'_> {
    fn string(&mut self, key: &str, slot: &mut String) {
        match self.take(key).cloned() {
            None => {}
            Some(v) => match Self::scalar_text(&v) {
                Some(text) => *slot = text,
                None => self.problem(key, format!("expected a string, found {}", kind(&v))),
            },
        }
    }

    fn opt_string(&mut self, key: &str, slot: &mut Option<String>) {
        match self.take(key).cloned() {
            None => {}
            Some(Yaml::Null) => *slot = None,
            Some(v) => match Self::scalar_text(&v) {
                Some(text) => *slot = Some(text),
                None => self.problem(
                    key,
                    format!("expected a string or null, found {}", kind(&v)),
                ),
            },
        }
    }

    fn boolean(&mut self, key: &str, slot: &mut bool) {
        match self.take(key).cloned() {
            None => {}
            Some(Yaml::Boolean(b)) => *slot = b,
            Some(Yaml::String(s)) if parse_bool(&s).is_some() => {
                *slot = parse_bool(&s).unwrap_or_default()
            }
            Some(v) => self.problem(key, format!("expected true or false, found {}", kind(&v))),
        }
    }

    fn integer(&mut self, key: &str, slot: &mut u64) {
        match self.take(key).cloned() {
            None => {}
            Some(Yaml::Integer(i)) if i >= 0 => *slot = i as u64,
            Some(Yaml::String(s)) if s.trim().parse::<u64>().is_ok() => {
                *slot = s.trim().parse().unwrap_or_default()
            }
            Some(v) => self.problem(
                key,
                format!("expected a whole number ≥ 0, found {}", kind(&v)),
            ),
        }
    }

    fn section(&mut self, key: &str, visit: &mut dyn FnMut(&mut dyn Visitor)) {
        let empty = Hash::new();
        let path = join(&self.prefix, key);
        let value = self.take(key).cloned();
        let map = match &value {
            None | Some(Yaml::Null) => &empty,
            Some(Yaml::Hash(h)) => h,
            Some(other) => {
                let message = format!("expected a mapping of keys, found {}", kind(other));
                self.problem(key, message);
                return;
            }
        };
        let mut child = YamlReader {
            map,
            prefix: path,
            seen: BTreeSet::new(),
            problems: self.problems,
        };
        visit(&mut child);
        child.report_unknown();
    }
}

struct EnvReader<'a> {
    vars: &'a [(String, String)],
    prefix: String,
    consumed: BTreeSet<String>,
    problems: Vec<Problem>,
}

impl EnvReader<'_> {
    fn lookup(&mut self, key: &str) -> Option<(String, String)> {
        let name = format!("{}_{}", self.prefix, key.to_ascii_uppercase());
        let file_name = format!("{name}_FILE");
        let direct = self.vars.iter().find(|(n, _)| *n == name).cloned();
        let from_file = self.vars.iter().find(|(n, _)| *n == file_name).cloned();
        if direct.is_some() {
            self.consumed.insert(name.clone());
        }
        if from_file.is_some() {
            self.consumed.insert(file_name.clone());
        }
        match (direct, from_file) {
            (Some(_), Some(_)) => {
                self.problems.push(Problem {
                    key: name.clone(),
                    message: format!("set both {name} and {file_name}; keep one"),
                });
                None
            }
            (Some((n, v)), None) => Some((n, v)),
            (None, Some((n, path))) => match std::fs::read_to_string(&path) {
                Ok(text) => Some((n, text.trim_end_matches(['\n', '\r']).to_owned())),
                Err(e) => {
                    self.problems.push(Problem {
                        key: n,
                        message: format!("cannot read {path}: {e}"),
                    });
                    None
                }
            },
            (None, None) => None,
        }
    }
}

impl Visitor for EnvReader<'_> {
    fn string(&mut self, key: &str, slot: &mut String) {
        if let Some((_, v)) = self.lookup(key) {
            *slot = v;
        }
    }

    fn opt_string(&mut self, key: &str, slot: &mut Option<String>) {
        if let Some((_, v)) = self.lookup(key) {
            *slot = Some(v);
        }
    }

    fn boolean(&mut self, key: &str, slot: &mut bool) {
        if let Some((name, v)) = self.lookup(key) {
            match parse_bool(&v) {
                Some(b) => *slot = b,
                None => self.problems.push(Problem {
                    key: name,
                    message: format!("`{v}` is not true or false"),
                }),
            }
        }
    }

    fn integer(&mut self, key: &str, slot: &mut u64) {
        if let Some((name, v)) = self.lookup(key) {
            match v.trim().parse() {
                Ok(n) => *slot = n,
                Err(_) => self.problems.push(Problem {
                    key: name,
                    message: format!("`{v}` is not a whole number ≥ 0"),
                }),
            }
        }
    }

    fn section(&mut self, key: &str, visit: &mut dyn FnMut(&mut dyn Visitor)) {
        let outer = self.prefix.clone();
        self.prefix = format!("{outer}_{}", key.to_ascii_uppercase());
        visit(self);
        self.prefix = outer;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> (Config, Vec<Problem>) {
        let mut c = Config::default();
        let p = apply_yaml(&mut c, text).expect("yaml");
        (c, p)
    }

    const UPSTREAM: &str = include_str!("../../tests/fixtures/upstream-config.yaml");

    #[test]
    fn an_upstream_file_loads_cleanly() {
        let (c, problems) = load(UPSTREAM);
        assert_eq!(problems, vec![]);
        assert_eq!(c.db.table_name, "vms");
        assert_eq!(
            c.machine.repository.as_deref(),
            Some("https://github.com/talmolab/sleap-tutorial-data.git")
        );
        assert_eq!(c.app.admin_password.as_deref(), Some("hunter2-but-longer"));
        assert_eq!(c.environment, "dev");
        assert_eq!(c.monitoring.cloudtrail_retention_days, 90);
        assert!(c.validate().is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let (_, problems) = load(
            "app:\n  admin_pasword: x\n  region: [1]\nmachine:\n  sofware: sleap\ndb:\n  port: many\nfoo: 1\ndns: 3\n",
        );
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            vec![
                "db.port",
                "machine.sofware",
                "app.region",
                "app.admin_pasword",
                "dns",
                "foo"
            ],
        );
        let typo = problems
            .iter()
            .find(|p| p.key == "app.admin_pasword")
            .expect("typo");
        assert!(
            typo.message.contains("did you mean `admin_password`"),
            "{}",
            typo.message
        );
    }

    #[test]
    fn null_repository_means_absent() {
        let (c, problems) = load("machine:\n  repository: null\n");
        assert!(problems.is_empty());
        assert_eq!(c.machine.repository, None);
    }

    #[test]
    fn scalars_convert_like_omegaconf() {
        let (c, problems) =
            load("deployment_name: 2024\ndns:\n  enabled: 'yes'\ndb:\n  port: '6543'\n");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.deployment_name, "2024");
        assert!(c.dns.enabled);
        assert_eq!(c.db.port, 6543);
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        let (c, problems) = load("");
        assert!(problems.is_empty());
        assert_eq!(c, Config::default());
    }

    #[test]
    fn environment_overrides_and_reports_unknown_variables() {
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = dir.path().join("pw");
        std::fs::write(&secret, "from-a-file\n").expect("write");
        let vars = vec![
            (
                "LABLINK_SERVER_LISTEN".to_owned(),
                "0.0.0.0:8080".to_owned(),
            ),
            (
                "LABLINK_APP_ADMIN_PASSWORD_FILE".to_owned(),
                secret.display().to_string(),
            ),
            ("LABLINK_DNS_ENABLED".to_owned(), "maybe".to_owned()),
            ("LABLINK_SERVER_LISTN".to_owned(), "x".to_owned()),
            ("LABLINK_LOG".to_owned(), "debug".to_owned()),
            ("PATH".to_owned(), "/bin".to_owned()),
        ];
        let mut c = Config::default();
        let problems = apply_env(&mut c, &vars);
        assert_eq!(c.server.listen, "0.0.0.0:8080");
        assert_eq!(c.app.admin_password.as_deref(), Some("from-a-file"));
        let keys: Vec<_> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, vec!["LABLINK_DNS_ENABLED", "LABLINK_SERVER_LISTN"]);
        assert!(problems[1].message.contains("LABLINK_SERVER_LISTEN"));
    }

    #[test]
    fn deep_nesting_is_refused_before_it_can_overflow_the_stack() {
        let deep: String = (0..5_000)
            .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
            .collect();
        let mut c = Config::default();
        let e = apply_yaml(&mut c, &deep).expect_err("too deep");
        assert!(e.contains("nested more than 64 levels"), "{e}");
        let (_, problems) = load("server:\n  listen: [[[[1]]]]\n");
        assert_eq!(problems.len(), 1);
    }

    #[test]
    fn env_names_follow_the_key_path() {
        assert_eq!(
            env_name("monitoring.thresholds.max_instances_per_5min"),
            "LABLINK_MONITORING_THRESHOLDS_MAX_INSTANCES_PER_5MIN"
        );
    }
}
