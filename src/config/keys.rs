//! One declaration per configuration key. `settings!` turns it into the struct field (with
//! its doc comment), the default, the key's step in the walk every reader takes
//! ([`Visitor`]), its row of the key table and the check of its own constraint.

use std::fmt::Write as _;

use super::{Problem, Visitor, env_name};

/// The types a key can have: how readers fill it and how the reference shows it.
pub trait Value: Sized {
    /// What a declaration writes as the default (`"prod"` for a `String`).
    type Decl;
    const TYPE: &'static str;
    fn from_decl(decl: Self::Decl) -> Self;
    fn visit(v: &mut dyn Visitor, key: &str, slot: &mut Self);
    /// The value as the reference shows it (Markdown).
    fn show(&self) -> String;
}

fn show_text(text: &str) -> String {
    if text.is_empty() {
        "`\"\"`".to_owned()
    } else {
        format!("`{text}`")
    }
}

impl Value for String {
    type Decl = &'static str;
    const TYPE: &'static str = "string";
    fn from_decl(decl: &'static str) -> Self {
        decl.to_owned()
    }
    fn visit(v: &mut dyn Visitor, key: &str, slot: &mut Self) {
        v.string(key, slot)
    }
    fn show(&self) -> String {
        show_text(self)
    }
}

impl Value for Option<String> {
    type Decl = Option<&'static str>;
    const TYPE: &'static str = "string or null";
    fn from_decl(decl: Option<&'static str>) -> Self {
        decl.map(str::to_owned)
    }
    fn visit(v: &mut dyn Visitor, key: &str, slot: &mut Self) {
        v.opt_string(key, slot)
    }
    fn show(&self) -> String {
        self.as_deref().map_or_else(|| "none".to_owned(), show_text)
    }
}

impl Value for bool {
    type Decl = bool;
    const TYPE: &'static str = "boolean";
    fn from_decl(decl: bool) -> Self {
        decl
    }
    fn visit(v: &mut dyn Visitor, key: &str, slot: &mut Self) {
        v.boolean(key, slot)
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
}

impl Value for u64 {
    type Decl = u64;
    const TYPE: &'static str = "integer";
    fn from_decl(decl: u64) -> Self {
        decl
    }
    fn visit(v: &mut dyn Visitor, key: &str, slot: &mut Self) {
        v.integer(key, slot)
    }
    fn show(&self) -> String {
        format!("`{self}`")
    }
}

/// The values one key allows, checked on its own (rules spanning keys are in
/// `Config::cross_checks`).
pub struct Rule<T> {
    describe: String,
    check: Box<Check<T>>,
}

/// `Err` says what is wrong with a value and what to write instead.
type Check<T> = dyn Fn(&T) -> Result<(), String>;

/// A whole number from `min` to `max`, both included.
pub fn range(min: u64, max: u64) -> Rule<u64> {
    Rule {
        describe: format!("{min}–{max}"),
        check: Box::new(move |&value| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(format!("{value} is outside {min}..={max}"))
            }
        }),
    }
}

/// One of a few words.
pub fn one_of(allowed: &'static [&'static str]) -> Rule<String> {
    Rule {
        describe: allowed
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", "),
        check: Box::new(move |value: &String| {
            if allowed.contains(&value.as_str()) {
                Ok(())
            } else {
                Err(format!("`{value}` is not one of {}", allowed.join(", ")))
            }
        }),
    }
}

/// A text `check` accepts; `describe` says which, for the reference.
pub fn text(describe: &str, check: fn(&str) -> Result<(), String>) -> Rule<String> {
    Rule {
        describe: describe.to_owned(),
        check: Box::new(move |value: &String| check(value)),
    }
}

/// Any value `check` accepts; `describe` says which, for the reference.
pub fn rule<T: 'static>(describe: &str, check: fn(&T) -> Result<(), String>) -> Rule<T> {
    Rule {
        describe: describe.to_owned(),
        check: Box::new(check),
    }
}

/// Reports `value` of the key `prefix.key` if its rule refuses it.
pub fn check<T>(
    prefix: &str,
    key: &str,
    value: &T,
    rule: Option<Rule<T>>,
    problems: &mut Vec<Problem>,
) {
    if let Some(Err(message)) = rule.map(|r| (r.check)(value)) {
        problems.push(Problem {
            key: join(prefix, key),
            message,
        });
    }
}

/// One row of the key table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Key {
    /// Dotted path, as in `config.yaml`: `server.listen`.
    pub path: String,
    /// `LABLINK_SERVER_LISTEN`.
    pub env: String,
    pub type_name: &'static str,
    /// The default, as Markdown.
    pub default: String,
    /// The values the key's own rule allows; empty when it has none.
    pub allowed: String,
    /// What it means, on one line.
    pub doc: String,
}

impl Key {
    pub fn new<T: Value>(
        prefix: &str,
        key: &str,
        default: &T,
        doc: &str,
        rule: Option<Rule<T>>,
    ) -> Key {
        let path = join(prefix, key);
        Key {
            env: env_name(&path),
            path,
            type_name: T::TYPE,
            default: default.show(),
            allowed: rule.map(|r| r.describe).unwrap_or_default(),
            doc: doc
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(" "),
        }
    }
}

pub fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// The README's "Configuration reference" section, heading included.
pub fn reference(keys: &[Key]) -> String {
    let mut out = String::from(
        "## Configuration reference

Every key of `config.yaml`, as `lablink config reference` prints it (a test keeps this
section equal to that output; `lablink config keys` lists only keys and variables). Each key
is also read from its variable, `LABLINK_<KEY>` with dots as underscores, upper-cased
(`server.listen` → `LABLINK_SERVER_LISTEN`), or from the file named by `LABLINK_<KEY>_FILE`.
Keys marked *deployment* are read and checked for compatibility with upstream files but only
used by deployment tooling.

| key | variable | type | default | allowed | meaning |
|---|---|---|---|---|---|
",
    );
    let cell = |text: &str| text.replace('|', "\\|");
    for k in keys {
        let _ = writeln!(
            out,
            "| `{}` | `{}` | {} | {} | {} | {} |",
            k.path,
            k.env,
            k.type_name,
            cell(&k.default),
            cell(&k.allowed),
            cell(&k.doc)
        );
    }
    out
}

/// Declares a configuration struct, one entry per key:
///
/// ```text
/// /// What it means (the doc comment is also the reference's text).
/// field_name [as yaml_key]: Type = default [, rule];
/// ```
///
/// then `in yaml_key { … }` groups of keys read from a nested mapping but kept as fields of
/// this struct, then `section field: Type;` for nested structs declared the same way.
/// Generates the struct, `Default`, `visit` (the walk the readers take), `describe` (rows
/// of the key table) and `check_keys` (each key's rule).
macro_rules! settings {
    (@key $field:ident) => { stringify!($field) };
    (@key $field:ident $key:ident) => { stringify!($key) };
    (@rule $ty:ty) => { None::<$crate::config::keys::Rule<$ty>> };
    (@rule $ty:ty, $rule:expr) => { Some::<$crate::config::keys::Rule<$ty>>($rule) };
    (
        $(#[doc = $sdoc:literal])*
        pub struct $name:ident {
            $(
                $(#[doc = $doc:literal])+
                $field:ident $(as $key:ident)? : $ty:ty = $default:expr $(, $rule:expr)? ;
            )*
            $(
                in $sub:ident {
                    $(
                        $(#[doc = $gdoc:literal])+
                        $gfield:ident $(as $gkey:ident)? : $gty:ty = $gdefault:expr
                            $(, $grule:expr)? ;
                    )*
                }
            )*
            $( section $cfield:ident : $cty:ty ; )*
        }
    ) => {
        $(#[doc = $sdoc])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $( $(#[doc = $doc])+ pub $field: $ty, )*
            $( $( $(#[doc = $gdoc])+ pub $gfield: $gty, )* )*
            $( pub $cfield: $cty, )*
        }

        impl Default for $name {
            fn default() -> Self {
                use $crate::config::keys::Value;
                $name {
                    $( $field: <$ty as Value>::from_decl($default), )*
                    $( $( $gfield: <$gty as Value>::from_decl($gdefault), )* )*
                    $( $cfield: <$cty as Default>::default(), )*
                }
            }
        }

        impl $name {
            /// Walks every key, in the order of the upstream schema.
            pub fn visit(&mut self, v: &mut dyn $crate::config::Visitor) {
                use $crate::config::keys::Value;
                $( <$ty as Value>::visit(v, settings!(@key $field $($key)?), &mut self.$field); )*
                $(
                    v.section(stringify!($sub), &mut |v| {
                        $(
                            <$gty as Value>::visit(
                                v,
                                settings!(@key $gfield $($gkey)?),
                                &mut self.$gfield,
                            );
                        )*
                    });
                )*
                $( v.section(stringify!($cfield), &mut |v| self.$cfield.visit(v)); )*
            }

            /// Appends the rows of this struct's keys, under `prefix`, in walk order.
            pub(crate) fn describe(prefix: &str, rows: &mut Vec<$crate::config::keys::Key>) {
                use $crate::config::keys::Key;
                let defaults = Self::default();
                $(
                    rows.push(Key::new(
                        prefix,
                        settings!(@key $field $($key)?),
                        &defaults.$field,
                        concat!($($doc, "\n"),+),
                        settings!(@rule $ty $(, $rule)?),
                    ));
                )*
                $(
                    let group = $crate::config::keys::join(prefix, stringify!($sub));
                    $(
                        rows.push(Key::new(
                            &group,
                            settings!(@key $gfield $($gkey)?),
                            &defaults.$gfield,
                            concat!($($gdoc, "\n"),+),
                            settings!(@rule $gty $(, $grule)?),
                        ));
                    )*
                )*
                $( <$cty>::describe(&$crate::config::keys::join(prefix, stringify!($cfield)), rows); )*
            }

            /// Reports every key under `prefix` whose value its own rule refuses.
            pub(crate) fn check_keys(
                &self,
                prefix: &str,
                problems: &mut Vec<$crate::config::Problem>,
            ) {
                use $crate::config::keys::check;
                $(
                    check(
                        prefix,
                        settings!(@key $field $($key)?),
                        &self.$field,
                        settings!(@rule $ty $(, $rule)?),
                        problems,
                    );
                )*
                $(
                    let group = $crate::config::keys::join(prefix, stringify!($sub));
                    $(
                        check(
                            &group,
                            settings!(@key $gfield $($gkey)?),
                            &self.$gfield,
                            settings!(@rule $gty $(, $grule)?),
                            problems,
                        );
                    )*
                )*
                $( self.$cfield.check_keys(&$crate::config::keys::join(prefix, stringify!($cfield)), problems); )*
            }
        }
    };
}
