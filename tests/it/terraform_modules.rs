//! The Terraform modules in terraform/: every file parses, every reference is declared, and
//! the allocator deployment (terraform/allocator) keeps its contract: its inputs and
//! outputs, a hardened instance, no backend block, and a boot script that checks what it
//! installs and hands over to `lablink install serve`. `terraform validate` needs the
//! providers from the registry, so these checks read the files themselves.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hcl::eval::{Context, Evaluate};
use hcl::expr::{Operation, TraversalOperator};
use hcl::template::{Directive, Element};
use hcl::{Block, Body, Expression, ObjectKey, Template};

fn terraform_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform")
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read terraform dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            // Terraform's own working files, if anyone ran it here.
            if name != ".terraform" {
                files_under(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

fn files_with(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut all = Vec::new();
    files_under(dir, &mut all);
    let mut matching: Vec<_> = all
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    matching.sort();
    matching
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(path: &Path) -> Body {
    hcl::parse(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One module: the top-level blocks of all its `.tf` files.
struct Module {
    name: &'static str,
    blocks: Vec<Block>,
    /// Every `.tf` file's text, for reference scans.
    text: String,
}

impl Module {
    fn load(name: &'static str) -> Module {
        let dir = terraform_dir().join(name);
        let files = files_with(&dir, ".tf");
        assert!(!files.is_empty(), "no .tf file in {}", dir.display());
        let mut blocks = Vec::new();
        let mut text = String::new();
        for file in files {
            blocks.extend(parse(&file).into_blocks());
            text.push_str(&read(&file));
            text.push('\n');
        }
        Module { name, blocks, text }
    }

    fn blocks(&self, kind: &str) -> Vec<&Block> {
        self.blocks
            .iter()
            .filter(|b| b.identifier() == kind)
            .collect()
    }

    /// Names of the blocks of one kind: the first label (`variable "x"`, `output "x"`).
    fn names(&self, kind: &str) -> BTreeSet<String> {
        self.blocks(kind)
            .into_iter()
            .map(|b| label(b, 0).to_owned())
            .collect::<BTreeSet<_>>()
    }

    /// The `resource`/`data` block of that type and name.
    fn block(&self, kind: &str, type_: &str, name: &str) -> &Block {
        self.blocks(kind)
            .into_iter()
            .find(|b| label(b, 0) == type_ && label(b, 1) == name)
            .unwrap_or_else(|| panic!("{}: no {kind} {type_}.{name}", self.name))
    }

    fn variable(&self, name: &str) -> &Block {
        self.blocks("variable")
            .into_iter()
            .find(|b| label(b, 0) == name)
            .unwrap_or_else(|| panic!("{}: no variable {name}", self.name))
    }

    /// A local value's expression, as HCL text.
    fn local(&self, name: &str) -> String {
        let expr = self
            .blocks("locals")
            .into_iter()
            .find_map(|b| attr(b.body(), name))
            .unwrap_or_else(|| panic!("{}: no local {name}", self.name));
        hcl::format::to_string(expr).expect("format local")
    }

    fn locals(&self) -> BTreeSet<String> {
        self.blocks("locals")
            .into_iter()
            .flat_map(|b| b.body().attributes().map(|a| a.key().to_owned()))
            .collect()
    }
}

fn label(block: &Block, i: usize) -> &str {
    block.labels().get(i).map(|l| l.as_str()).unwrap_or("")
}

fn attr<'a>(body: &'a Body, key: &str) -> Option<&'a Expression> {
    body.attributes().find(|a| a.key() == key).map(|a| a.expr())
}

fn sub_block<'a>(body: &'a Body, kind: &str) -> Option<&'a Block> {
    body.blocks().find(|b| b.identifier() == kind)
}

/// Identifiers that follow `prefix` (`var.`, `local.`) in HCL source, comments included.
fn references(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + prefix.len()..];
        let ident: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') && !ident.is_empty() {
            found.insert(ident);
        }
        rest = after;
    }
    found
}

/// Every `templatefile(...)` call anywhere in these blocks.
fn templatefile_calls<'a>(blocks: &'a [Block], out: &mut Vec<&'a hcl::expr::FuncCall>) {
    fn in_body<'a>(body: &'a Body, out: &mut Vec<&'a hcl::expr::FuncCall>) {
        for a in body.attributes() {
            in_expr(a.expr(), out);
        }
        for b in body.blocks() {
            in_body(b.body(), out);
        }
    }
    fn in_expr<'a>(expr: &'a Expression, out: &mut Vec<&'a hcl::expr::FuncCall>) {
        match expr {
            Expression::FuncCall(call) => {
                if call.name.name.as_str() == "templatefile" {
                    out.push(call);
                }
                call.args.iter().for_each(|a| in_expr(a, out));
            }
            Expression::Array(items) => items.iter().for_each(|e| in_expr(e, out)),
            Expression::Object(obj) => obj.values().for_each(|e| in_expr(e, out)),
            Expression::Parenthesis(e) => in_expr(e, out),
            Expression::Conditional(c) => {
                in_expr(&c.cond_expr, out);
                in_expr(&c.true_expr, out);
                in_expr(&c.false_expr, out);
            }
            Expression::Operation(op) => match op.as_ref() {
                Operation::Unary(u) => in_expr(&u.expr, out),
                Operation::Binary(b) => {
                    in_expr(&b.lhs_expr, out);
                    in_expr(&b.rhs_expr, out);
                }
            },
            Expression::Traversal(t) => in_expr(&t.expr, out),
            Expression::ForExpr(f) => {
                in_expr(&f.collection_expr, out);
                in_expr(&f.value_expr, out);
            }
            _ => {}
        }
    }
    for b in blocks {
        in_body(b.body(), out);
    }
}

/// The variables a template reads (the roots of its interpolations and conditions).
fn template_variables(template: &Template, out: &mut BTreeSet<String>) {
    fn roots(expr: &Expression, out: &mut BTreeSet<String>) {
        match expr {
            Expression::Variable(v) => {
                out.insert(v.as_str().to_owned());
            }
            Expression::Traversal(t) => {
                roots(&t.expr, out);
                for op in &t.operators {
                    if let TraversalOperator::Index(i) = op {
                        roots(i, out);
                    }
                }
            }
            Expression::FuncCall(call) => call.args.iter().for_each(|a| roots(a, out)),
            Expression::Parenthesis(e) => roots(e, out),
            Expression::Conditional(c) => {
                roots(&c.cond_expr, out);
                roots(&c.true_expr, out);
                roots(&c.false_expr, out);
            }
            Expression::Operation(op) => match op.as_ref() {
                Operation::Unary(u) => roots(&u.expr, out),
                Operation::Binary(b) => {
                    roots(&b.lhs_expr, out);
                    roots(&b.rhs_expr, out);
                }
            },
            Expression::Array(items) => items.iter().for_each(|e| roots(e, out)),
            _ => {}
        }
    }
    for element in template.elements() {
        match element {
            Element::Literal(_) => {}
            Element::Interpolation(i) => roots(&i.expr, out),
            Element::Directive(d) => match d.as_ref() {
                Directive::If(d) => {
                    roots(&d.cond_expr, out);
                    template_variables(&d.true_template, out);
                    if let Some(f) = &d.false_template {
                        template_variables(f, out);
                    }
                }
                Directive::For(d) => {
                    roots(&d.collection_expr, out);
                    template_variables(&d.template, out);
                }
            },
        }
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn missing(want: &BTreeSet<String>, have: &BTreeSet<String>) -> Vec<String> {
    want.difference(have).cloned().collect()
}

#[test]
fn every_terraform_file_parses() {
    let tf = files_with(&terraform_dir(), ".tf");
    let names: BTreeSet<String> = tf
        .iter()
        .filter_map(|p| p.strip_prefix(terraform_dir()).ok())
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    for expected in [
        "client-vm/main.tf",
        "client-vm/variables.tf",
        "allocator/main.tf",
        "allocator/variables.tf",
        "allocator/outputs.tf",
        "allocator/versions.tf",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    for file in &tf {
        parse(file);
    }
    let templates = files_with(&terraform_dir(), ".tftpl");
    assert!(templates.len() >= 2, "{templates:?}");
    for file in &templates {
        if let Err(e) = read(file).parse::<Template>() {
            panic!("{}: {e}", file.display());
        }
    }
    let tfvars = files_with(&terraform_dir(), ".tfvars");
    for file in &tfvars {
        parse(file);
    }
}

#[test]
fn every_reference_is_declared_and_every_variable_used() {
    for name in ["client-vm", "allocator"] {
        let m = Module::load(name);
        let declared = m.names("variable");
        let used = references(&m.text, "var.");
        assert!(
            missing(&used, &declared).is_empty(),
            "{name}: undeclared variables {:?}",
            missing(&used, &declared)
        );
        assert!(
            missing(&declared, &used).is_empty(),
            "{name}: unused variables {:?}",
            missing(&declared, &used)
        );
        let locals = m.locals();
        let used = references(&m.text, "local.");
        assert!(
            missing(&used, &locals).is_empty(),
            "{name}: undeclared locals {:?}",
            missing(&used, &locals)
        );
    }
}

#[test]
fn allocator_takes_the_deployment_inputs() {
    let m = Module::load("allocator");
    let variables = m.names("variable");
    let expected = set(&[
        "region",
        "deployment_name",
        "environment",
        "instance_type",
        "ami_id",
        "lablink_version",
        "release_base_url",
        "lablink_sha256",
        "agent_sha256",
        "config_file",
        "admin_password",
        "eip_strategy",
        "domain_name",
        "route53_zone_id",
        "tls",
        "acme_email",
        "ssh_cidr_blocks",
        "terraform_version",
        "terraform_sha256",
        "client_resource_prefix",
        "root_volume_gb",
    ]);
    assert!(
        missing(&expected, &variables).is_empty(),
        "missing variables {:?}",
        missing(&expected, &variables)
    );

    // What a deployment must say itself: no default.
    for name in [
        "environment",
        "lablink_version",
        "lablink_sha256",
        "agent_sha256",
        "config_file",
    ] {
        assert!(
            attr(m.variable(name).body(), "default").is_none(),
            "{name} must be required"
        );
    }
    let default = |name: &str| {
        attr(m.variable(name).body(), "default")
            .unwrap_or_else(|| panic!("{name} has no default"))
            .clone()
    };
    assert_eq!(default("region"), Expression::from("us-west-2"));
    assert_eq!(default("instance_type"), Expression::from("t3.large"));
    assert_eq!(default("ami_id"), Expression::from(""));
    assert_eq!(default("terraform_version"), Expression::from("1.11.4"));
    assert_eq!(default("tls"), Expression::from("none"));
    assert_eq!(default("domain_name"), Expression::from(""));
    assert_eq!(default("ssh_cidr_blocks"), Expression::Array(vec![]));
    assert_eq!(
        default("release_base_url"),
        Expression::from("https://github.com/talmolab/lablink/releases/download")
    );

    assert_eq!(
        attr(m.variable("admin_password").body(), "sensitive"),
        Some(&Expression::Bool(true)),
        "admin_password must be sensitive"
    );

    // Inputs that end up in names, URLs or the boot script are validated.
    for name in [
        "deployment_name",
        "environment",
        "lablink_version",
        "release_base_url",
        "lablink_sha256",
        "agent_sha256",
        "terraform_sha256",
        "eip_strategy",
        "tls",
        "domain_name",
        "acme_email",
        "ssh_cidr_blocks",
        "admin_password",
    ] {
        let validation = sub_block(m.variable(name).body(), "validation")
            .unwrap_or_else(|| panic!("{name} has no validation"));
        assert!(attr(validation.body(), "condition").is_some(), "{name}");
    }
    let environment =
        hcl::format::to_string(m.variable("environment").body()).expect("format environment");
    for value in ["dev", "test", "ci-test", "prod"] {
        assert!(
            environment.contains(&format!("\"{value}\"")),
            "{environment}"
        );
    }
}

#[test]
fn allocator_creates_a_hardened_instance_and_its_network() {
    let m = Module::load("allocator");
    let resources = m.names("resource");
    for kind in [
        "aws_instance",
        "aws_security_group",
        "aws_iam_role",
        "aws_iam_role_policy",
        "aws_iam_instance_profile",
        "aws_key_pair",
        "tls_private_key",
        "aws_eip",
        "aws_eip_association",
        "aws_route53_record",
        "aws_ebs_volume",
        "aws_volume_attachment",
    ] {
        assert!(resources.contains(kind), "no {kind} in {resources:?}");
    }
    let data = m.names("data");
    for kind in ["aws_ami", "aws_eip", "aws_route53_zone"] {
        assert!(data.contains(kind), "no data {kind} in {data:?}");
    }

    let instance = m.block("resource", "aws_instance", "allocator").body();
    let metadata = sub_block(instance, "metadata_options").expect("metadata_options");
    assert_eq!(
        attr(metadata.body(), "http_tokens"),
        Some(&Expression::from("required")),
        "IMDSv2 must be required"
    );
    assert_eq!(
        attr(instance, "user_data_replace_on_change"),
        Some(&Expression::Bool(true))
    );
    let user_data = attr(instance, "user_data_base64")
        .or_else(|| attr(instance, "user_data"))
        .expect("user data");
    assert!(
        hcl::format::to_string(user_data)
            .expect("format")
            .contains("local.user_data"),
        "user data must be the rendered template"
    );
    let root = sub_block(instance, "root_block_device").expect("root_block_device");
    assert_eq!(
        attr(root.body(), "encrypted"),
        Some(&Expression::Bool(true))
    );
    assert_eq!(
        attr(root.body(), "volume_type"),
        Some(&Expression::from("gp3"))
    );
    let data_volume = m.block("resource", "aws_ebs_volume", "data").body();
    assert_eq!(
        attr(data_volume, "encrypted"),
        Some(&Expression::Bool(true))
    );

    // Web ports by TLS mode; SSH only from the listed networks.
    let web = m.local("web_ingress");
    for port in ["port = 80", "port = 443", "port = 5000"] {
        assert!(web.contains(port), "{port} in {web}");
    }
    let ssh = m.local("ssh_ingress");
    assert!(
        ssh.contains("port = 22") && ssh.contains("cidr_blocks = var.ssh_cidr_blocks"),
        "{ssh}"
    );
    assert!(!ssh.contains("0.0.0.0/0"), "{ssh}");
    let listen = m.local("listen");
    assert!(
        listen.contains("\"127.0.0.1:5000\"") && listen.contains("\"0.0.0.0:5000\""),
        "{listen}"
    );

    // The Ubuntu image comes from Canonical's account.
    let ami = m.block("data", "aws_ami", "ubuntu").body();
    assert_eq!(
        attr(ami, "owners"),
        Some(&Expression::Array(vec![Expression::from("099720109477")]))
    );

    // The instance role is limited to the client pool's names.
    assert!(m.text.contains("role/${local.client_prefix}-*"));
    assert!(m.text.contains("instance-profile/${local.client_prefix}-*"));
    assert!(m.text.contains("aws:ResourceTag/ResourcePrefix"));
    assert!(m.text.contains("aws:RequestTag/ResourcePrefix"));
    // …which must be the prefix the allocator itself gives them.
    let provisioner =
        read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src/provision/terraform/settings.rs"));
    assert!(
        provisioner.contains(r#""{}-lablink-client-{environment}""#),
        "src/provision/terraform/settings.rs changed how client resources are named: update client_prefix in terraform/allocator/main.tf"
    );
    assert!(
        m.text
            .contains(r#""${local.config_software}-lablink-client-${local.config_environment}""#)
    );
    let client = Module::load("client-vm");
    let client_text = client.text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        client_text.contains("ResourcePrefix = var.resource_prefix"),
        "the client VMs must carry the ResourcePrefix tag the allocator's role relies on"
    );
    // …and the allocator's own default tags, to find and bill them by project and environment.
    for tag in [
        r#"Project = "lablink""#,
        "Deployment = var.deployment",
        "Environment = var.environment",
    ] {
        assert!(client_text.contains(tag), "client VM tags lack `{tag}`");
    }
}

#[test]
fn allocator_has_no_backend_and_pins_its_providers() {
    let m = Module::load("allocator");
    let terraform = m.blocks("terraform");
    assert_eq!(terraform.len(), 1, "one terraform block");
    for block in &terraform {
        assert!(
            sub_block(block.body(), "backend").is_none()
                && sub_block(block.body(), "cloud").is_none(),
            "the allocator module must not choose a backend (CI writes backend.tf)"
        );
    }
    let body = terraform[0].body();
    let version = hcl::format::to_string(attr(body, "required_version").expect("required_version"))
        .expect("format");
    assert!(version.contains(">= 1.5"), "{version}");
    let providers = sub_block(body, "required_providers").expect("required_providers");
    for name in ["aws", "tls"] {
        let p = hcl::format::to_string(
            attr(providers.body(), name).unwrap_or_else(|| panic!("{name} provider")),
        )
        .expect("format");
        assert!(p.contains(&format!("hashicorp/{name}")), "{p}");
    }
}

#[test]
fn allocator_outputs() {
    let m = Module::load("allocator");
    let outputs = m.names("output");
    let expected = set(&[
        "allocator_url",
        "allocator_public_ip",
        "allocator_fqdn",
        "instance_id",
        "ssh_key_name",
        "private_key_pem",
    ]);
    assert!(
        missing(&expected, &outputs).is_empty(),
        "missing outputs {:?}",
        missing(&expected, &outputs)
    );
    let key = m
        .blocks("output")
        .into_iter()
        .find(|b| label(b, 0) == "private_key_pem")
        .expect("private_key_pem");
    assert_eq!(attr(key.body(), "sensitive"), Some(&Expression::Bool(true)));
}

fn allocator_template() -> (String, Template) {
    let path = terraform_dir().join("allocator/user_data.sh.tftpl");
    let text = read(&path);
    let template = text
        .parse::<Template>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (text, template)
}

/// The keys main.tf passes to templatefile() for the boot script.
fn template_arguments(m: &Module) -> BTreeSet<String> {
    let mut calls = Vec::new();
    templatefile_calls(&m.blocks, &mut calls);
    let call = calls
        .into_iter()
        .find(|c| {
            c.args.first().is_some_and(|a| {
                hcl::format::to_string(a)
                    .expect("format")
                    .contains("user_data.sh.tftpl")
            })
        })
        .expect("templatefile(\"${path.module}/user_data.sh.tftpl\", …) in the allocator module");
    let Some(Expression::Object(vars)) = call.args.get(1) else {
        panic!("the template's variables must be an object literal");
    };
    vars.keys()
        .map(|k| match k {
            ObjectKey::Identifier(i) => i.as_str().to_owned(),
            ObjectKey::Expression(Expression::String(s)) => s.clone(),
            other => panic!("unexpected key {other:?}"),
        })
        .collect()
}

#[test]
fn allocator_boot_script_checks_what_it_installs() {
    let m = Module::load("allocator");
    let (text, template) = allocator_template();

    // Every value the template reads is passed, and nothing passed goes unused.
    let mut read_vars = BTreeSet::new();
    template_variables(&template, &mut read_vars);
    let passed = template_arguments(&m);
    assert_eq!(
        read_vars, passed,
        "template variables vs templatefile() arguments"
    );
    for name in [
        "lablink_sha256",
        "agent_sha256",
        "terraform_sha256",
        "config_b64",
    ] {
        assert!(read_vars.contains(name), "the template must use {name}");
    }

    assert!(text.contains("set -Eeuo pipefail"));
    // Tracing would copy the password and the config into the boot log.
    let traces = text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("set ") || l.starts_with("bash "))
        .any(|l| {
            l.contains("xtrace")
                || l.split_whitespace()
                    .any(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('x'))
        });
    assert!(!traces, "the boot script must not trace its commands");
    assert!(text.contains("sha256sum --check"));
    for asset in [
        "lablink-x86_64-unknown-linux-musl",
        "lablink-x86_64-unknown-linux-gnu",
    ] {
        assert!(text.contains(asset), "{asset}");
    }
    assert!(text.contains(
        "/tmp/lablink install serve --config /root/lablink-config.yaml --agent-binary /tmp/lablink-agent"
    ));
    assert!(text.contains("--admin-password-file /root/lablink-admin-password"));
}

/// Sample values for every template variable, as main.tf would pass them.
fn sample_vars(tls: &str, password: &str) -> Context<'static> {
    let (listen, url, domain) = if tls == "caddy" {
        (
            "127.0.0.1:5000",
            "https://lablink.example.org",
            "lablink.example.org",
        )
    } else {
        ("0.0.0.0:5000", "http://192.0.2.10:5000", "")
    };
    let values: BTreeMap<&str, String> = BTreeMap::from([
        (
            "release_url",
            "https://github.com/talmolab/lablink/releases/download/v0.1.0".into(),
        ),
        ("lablink_sha256", "a".repeat(64)),
        ("agent_sha256", "b".repeat(64)),
        ("terraform_version", "1.11.4".into()),
        ("terraform_sha256", "c".repeat(64)),
        ("config_b64", "ZW52aXJvbm1lbnQ6IHByb2QK".into()),
        ("admin_password_b64", password.into()),
        ("listen", listen.into()),
        ("allocator_url", url.into()),
        ("public_ip", "192.0.2.10".into()),
        ("tls", tls.into()),
        ("domain_name", domain.into()),
        ("acme_email", "admin@example.org".into()),
        ("data_volume_id", "vol-0123456789abcdef0".into()),
        ("data_volume_serial", "vol0123456789abcdef0".into()),
    ]);
    let m = Module::load("allocator");
    let passed = template_arguments(&m);
    let known: BTreeSet<String> = values.keys().map(|k| (*k).to_owned()).collect();
    assert_eq!(
        passed, known,
        "give every template variable a sample value here"
    );
    let mut ctx = Context::new();
    for (k, v) in values {
        ctx.declare_var(k, v);
    }
    ctx
}

fn bash_syntax_errors(script: &str) -> Option<String> {
    let mut child = Command::new("bash")
        .arg("-n")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bash");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(script.as_bytes())
        .expect("write script");
    let out = child.wait_with_output().expect("bash -n");
    (!out.status.success()).then(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn allocator_boot_script_renders_to_valid_bash_in_every_mode() {
    let (_, template) = allocator_template();
    for (tls, password) in [("caddy", "c2VjcmV0LXBhc3N3b3Jk"), ("none", "")] {
        let script = template
            .evaluate(&sample_vars(tls, password))
            .unwrap_or_else(|e| panic!("render ({tls}): {e}"));
        if let Some(err) = bash_syntax_errors(&script) {
            panic!("tls={tls}: bash -n: {err}\n{script}");
        }
        assert!(script.starts_with("#!/bin/bash\n"));
        for name in template_arguments(&Module::load("allocator")) {
            assert!(
                !script.contains(&format!("${{{name}}}")),
                "${{{name}}} left unrendered"
            );
        }
        if tls == "caddy" {
            assert!(script.contains("--listen '127.0.0.1:5000'"));
            assert!(script.contains("--allocator-url 'https://lablink.example.org'"));
            assert!(script.contains("lablink.example.org {\n\treverse_proxy 127.0.0.1:5000\n}"));
            assert!(script.contains("email admin@example.org"));
            assert!(script.contains("dl.cloudsmith.io/public/caddy/stable/gpg.key"));
            assert!(script.contains("--admin-password-file"));
        } else {
            assert!(script.contains("--listen '0.0.0.0:5000'"));
            assert!(script.contains("--allocator-url 'http://192.0.2.10:5000'"));
            assert!(!script.contains("caddy"), "no Caddy without TLS");
            assert!(!script.contains("PASSWORD_ARGS=(--admin-password-file"));
        }
    }
}

fn client_template() -> Template {
    let path = terraform_dir().join("client-vm/user_data.sh.tftpl");
    read(&path)
        .parse::<Template>()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SAMPLE_VM_TOKEN: &str = "lablink-vm:lab-vm-1:0f1e2d3c4b5a69788796a5b4c3d2e1f0";

/// Sample values for every variable of the client VM's boot script, as main.tf passes them.
fn client_sample_vars(gpu: bool, startup_script: &str, repository: &str) -> Context<'static> {
    client_sample_vars_with(gpu, startup_script, repository, false)
}

fn client_sample_vars_with(
    gpu: bool,
    startup_script: &str,
    repository: &str,
    token_in_env: bool,
) -> Context<'static> {
    let strings: BTreeMap<&str, String> = BTreeMap::from([
        ("vm_name", "lab-vm-1".into()),
        ("allocator_url", "https://lablink.example.org".into()),
        ("api_token", SAMPLE_VM_TOKEN.into()),
        ("agent_sha256", "d".repeat(64)),
        ("image_name", "ghcr.io/talmolab/lablink-client:0.1.0".into()),
        ("repository", repository.into()),
        ("subject_software", "sleap".into()),
        ("log_group", "lablink-cloud-init".into()),
        ("startup_on_error", "continue".into()),
        ("startup_script", startup_script.into()),
    ]);
    let mut known: BTreeSet<String> = strings.keys().map(|k| (*k).to_owned()).collect();
    known.insert("gpu_support".into());
    known.insert("token_in_env".into());
    assert_eq!(
        template_arguments(&Module::load("client-vm")),
        known,
        "give every template variable of the client VM a sample value here"
    );
    let mut ctx = Context::new();
    for (k, v) in strings {
        ctx.declare_var(k, v);
    }
    ctx.declare_var("gpu_support", gpu);
    ctx.declare_var("token_in_env", token_in_env);
    ctx
}

#[test]
fn upstream_client_images_get_the_credential_in_their_environment_only_when_asked() {
    let template = client_template();
    for token_in_env in [false, true] {
        let script = template
            .evaluate(&client_sample_vars_with(true, "", "", token_in_env))
            .expect("render");
        if let Some(err) = bash_syntax_errors(&script) {
            panic!("bash -n: {err}\n{script}");
        }
        let run = &script[script.find("docker run ").expect("docker run")..];
        assert!(run.contains("\"${TOKEN_ENV[@]}\""), "{run}");
        assert_eq!(
            script.contains(
                "if [ \"true\" = \"true\" ]; then\n  export API_TOKEN\n  TOKEN_ENV=(-e API_TOKEN)"
            ),
            token_in_env,
            "{script}"
        );
    }
}

/// The rendered client boot script in every mode (GPU or not, startup script or not,
/// tutorial repository or not), each checked with `bash -n`.
fn client_scripts() -> Vec<(String, String)> {
    let template = client_template();
    let mut scripts = Vec::new();
    for gpu in [true, false] {
        for startup in ["", "ZWNobyBoZWxsbwo="] {
            for repository in ["", "https://github.com/talmolab/sleap-tutorial-data.git"] {
                let mode = format!("gpu={gpu} startup={startup:?} repository={repository:?}");
                let script = template
                    .evaluate(&client_sample_vars(gpu, startup, repository))
                    .unwrap_or_else(|e| panic!("render ({mode}): {e}"));
                if let Some(err) = bash_syntax_errors(&script) {
                    panic!("{mode}: bash -n: {err}\n{script}");
                }
                scripts.push((mode, script));
            }
        }
    }
    scripts
}

/// The text between the line `start` and the next line `end`.
fn block_between<'a>(script: &'a str, start: &str, end: &str) -> &'a str {
    let from = script
        .find(start)
        .unwrap_or_else(|| panic!("no {start:?} in the script"))
        + start.len();
    let len = script[from..]
        .find(end)
        .unwrap_or_else(|| panic!("no {end:?} after {start:?}"));
    &script[from..from + len]
}

fn position(script: &str, needle: &str, mode: &str) -> usize {
    script
        .find(needle)
        .unwrap_or_else(|| panic!("{mode}: no {needle:?} in the boot script"))
}

#[test]
fn client_vm_metadata_is_imdsv2_with_one_hop() {
    let m = Module::load("client-vm");
    let instance = m.block("resource", "aws_instance", "vm").body();
    let metadata = sub_block(instance, "metadata_options").expect("metadata_options");
    assert_eq!(
        attr(metadata.body(), "http_tokens"),
        Some(&Expression::from("required")),
        "IMDSv2 must be required"
    );
    assert_eq!(
        attr(metadata.body(), "http_put_response_hop_limit"),
        Some(&Expression::from(1u64)),
        "the metadata hop limit must be 1"
    );
}

#[test]
fn client_boot_script_keeps_the_vm_credential_from_the_desktop() {
    for (mode, script) in client_scripts() {
        assert!(script.starts_with("#!/bin/bash\n"), "{mode}");
        for name in template_arguments(&Module::load("client-vm")) {
            assert!(
                !script.contains(&format!("${{{name}}}")),
                "{mode}: ${{{name}}} left unrendered"
            );
        }
        let traces = script.lines().map(str::trim).any(|l| {
            (l.starts_with("set ") || l.starts_with("bash "))
                && (l.contains("xtrace")
                    || l.split_whitespace()
                        .any(|w| w.starts_with('-') && !w.starts_with("--") && w.contains('x')))
        });
        assert!(
            !traces,
            "{mode}: the boot script must not trace its commands"
        );

        // The token is spliced in once, and only printf (a builtin: no command line other
        // processes could read) ever expands it.
        assert_eq!(script.matches(SAMPLE_VM_TOKEN).count(), 1, "{mode}");
        for line in script.lines().filter(|l| l.contains("$API_TOKEN")) {
            assert!(
                line.trim_start().starts_with("printf "),
                "{mode}: the token is expanded outside printf: {line}"
            );
        }

        // Not in the container's environment: the agent reads a read-only mounted file.
        let run = &script[position(&script, "docker run ", &mode)..];
        assert!(!run.contains("$API_TOKEN"), "{mode}: {run}");
        for passed in [
            "-e API_TOKEN=",
            "--env API_TOKEN=",
            "API_TOKEN=\"",
            "--env-file",
        ] {
            assert!(!script.contains(passed), "{mode}: {passed} in {run}");
        }
        assert!(
            run.contains("-v \"$CREDENTIAL:/run/secrets/lablink-agent-credential:ro\" \\\n"),
            "{mode}: the credential must be mounted read-only: {run}"
        );
        assert!(
            run.contains("-e API_TOKEN_FILE=/run/secrets/lablink-agent-credential \\\n"),
            "{mode}: {run}"
        );
        assert!(script.contains("\nCREDENTIAL=/etc/lablink/agent-credential\n"));
        assert!(script.contains("\ninstall -d -m 0700 -o root -g root /etc/lablink\n"));

        // Written under umask 077, mode 0600, before the container (re)starts.
        let write = block_between(&script, "\n(\n  umask 077\n", "\n)\n");
        assert!(
            write.contains("printf '%s\\n' \"$API_TOKEN\" >\"$CREDENTIAL.new\""),
            "{write}"
        );
        assert!(write.contains("chmod 0600 \"$CREDENTIAL.new\""), "{write}");
        assert!(
            write.contains("mv -f \"$CREDENTIAL.new\" \"$CREDENTIAL\""),
            "{write}"
        );
        let written = position(&script, "\n  umask 077\n", &mode);
        let guarded = position(&script, "\n/usr/local/sbin/lablink-imds-guard\n", &mode);
        for start in ["docker start lablink-desktop", "docker run "] {
            let at = position(&script, start, &mode);
            assert!(
                written < at,
                "{mode}: the credential is written after {start}"
            );
            assert!(
                guarded < at,
                "{mode}: the metadata guard runs after {start}"
            );
        }

        // Only root reaches the metadata service, on IPv4 and IPv6, on later boots too
        // (before Docker restarts the container).
        let guard = block_between(&script, "<<'GUARD'\n", "\nGUARD\n");
        assert!(
            guard.contains("guard iptables 169.254.169.254/32"),
            "{guard}"
        );
        assert!(
            guard.contains("guard ip6tables fd00:ec2::254/128"),
            "{guard}"
        );
        assert!(
            guard.contains("-I OUTPUT 1 -d \"$2\" -m owner --uid-owner 1-4294967294 -j REJECT"),
            "{guard}"
        );
        let unit = block_between(&script, "<<'UNIT'\n", "\nUNIT\n");
        for line in [
            "Before=docker.service",
            "RequiredBy=docker.service",
            "ExecStart=/usr/local/sbin/lablink-imds-guard",
        ] {
            assert!(unit.lines().any(|l| l == line), "{mode}: {line} in {unit}");
        }
        assert!(script.contains("\nsystemctl enable lablink-imds-guard.service\n"));
    }
}

/// Runs `body` with bash, `dir/bin` first on PATH; its exit status must be 0.
fn run_bash(dir: &Path, prelude: &str, body: &str) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{prelude}\n{body}"))
        .env(
            "PATH",
            format!("{}:/usr/bin:/bin", dir.join("bin").display()),
        )
        .current_dir(dir)
        .output()
        .expect("run bash");
    assert!(
        out.status.success(),
        "bash failed ({}): {}\n{body}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn client_boot_script_writes_a_private_credential_and_guards_the_metadata_service_once() {
    use std::os::unix::fs::PermissionsExt;
    let (_, script) = client_scripts().remove(0);
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("bin")).expect("mkdir bin");

    // The credential file: only the owner can read it, whatever the caller's umask.
    let write = format!(
        "(\n  umask 077\n{}\n)",
        block_between(&script, "\n(\n  umask 077\n", "\n)\n")
    );
    for _ in 0..2 {
        run_bash(
            dir.path(),
            &format!("umask 022\nAPI_TOKEN='{SAMPLE_VM_TOKEN}'\nCREDENTIAL=./agent-credential"),
            &write,
        );
    }
    let file = dir.path().join("agent-credential");
    let mode = std::fs::metadata(&file)
        .expect("credential")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "credential file mode {mode:o}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("credential"),
        format!("{SAMPLE_VM_TOKEN}\n")
    );
    assert!(!dir.path().join("agent-credential.new").exists());

    // The guard, run on every boot, adds each rule once: fake iptables/ip6tables keep the
    // rules in a file and answer -C from it.
    let rules = dir.path().join("rules");
    for tool in ["iptables", "ip6tables"] {
        let fake = dir.path().join("bin").join(tool);
        std::fs::write(
            &fake,
            format!(
                "#!/bin/sh\nrules='{}'\ncase \"$2\" in\n  -C) shift 2; grep -qxF \"{tool} $*\" \"$rules\" 2>/dev/null ;;\n  -I) shift 4; echo \"{tool} OUTPUT $*\" >>\"$rules\" ;;\n  *) exit 2 ;;\nesac\n",
                rules.display()
            ),
        )
        .expect("write fake");
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let guard = block_between(&script, "<<'GUARD'\n", "\nGUARD\n");
    for _ in 0..3 {
        run_bash(dir.path(), "", guard);
    }
    let added = std::fs::read_to_string(&rules).expect("rules");
    assert_eq!(
        added.lines().collect::<Vec<_>>(),
        [
            "iptables OUTPUT -d 169.254.169.254/32 -m owner --uid-owner 1-4294967294 -j REJECT",
            "ip6tables OUTPUT -d fd00:ec2::254/128 -m owner --uid-owner 1-4294967294 -j REJECT",
        ],
        "rules added"
    );
}
