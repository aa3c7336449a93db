//! The OpenAPI document as a Markdown reference (`lablink openapi --markdown`, committed as
//! `docs/reference/api.md`): per operation its summary, authentication, parameters,
//! request body and responses, then the shared schemas. Explicit heading ids
//! (`{#…}`, read by mdBook) let the operations and schemas link to each other.

use std::fmt::Write;

use serde_json::Value;

/// Methods in the order an operation's methods are listed.
const METHODS: [&str; 8] = [
    "get", "head", "post", "put", "patch", "delete", "options", "trace",
];

/// Renders the document (an OpenAPI 3.x JSON text).
pub fn render_text(document: &str) -> Result<String, serde_json::Error> {
    Ok(render(&serde_json::from_str(document)?))
}

pub fn render(doc: &Value) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# API reference\n");
    let title = text(&doc["info"]["title"]);
    let version = text(&doc["info"]["version"]);
    let _ = writeln!(
        out,
        "{title} {version} ({openapi}). This page is the output of `lablink openapi \
         --markdown`; `lablink openapi` prints the document itself, which a running \
         allocator serves at `GET /api/openapi.json`.\n",
        openapi = match doc["openapi"].as_str() {
            Some(v) => format!("OpenAPI {v}"),
            None => "OpenAPI".to_owned(),
        }
    );
    if let Some(description) = doc["info"]["description"].as_str() {
        let _ = writeln!(out, "{description}\n");
    }
    authentication(&mut out, doc);
    for (tag, operations) in by_tag(doc) {
        let _ = writeln!(out, "## {}\n", capitalised(&tag.name));
        if let Some(description) = &tag.description {
            let _ = writeln!(out, "{description}\n");
        }
        let _ = writeln!(out, "| operation | summary |\n|---|---|");
        for op in &operations {
            let _ = writeln!(
                out,
                "| [`{} {}`](#{}) | {} |",
                op.method.to_uppercase(),
                op.path,
                op.anchor(),
                cell(op.body["summary"].as_str().unwrap_or(""))
            );
        }
        out.push('\n');
        for op in &operations {
            operation(&mut out, doc, op);
        }
    }
    schemas(&mut out, doc);
    while out.ends_with("\n\n") {
        out.pop();
    }
    out
}

struct Tag {
    name: String,
    description: Option<String>,
}

struct Operation<'a> {
    path: &'a str,
    method: &'a str,
    body: &'a Value,
}

impl Operation<'_> {
    fn anchor(&self) -> String {
        match self.body["operationId"].as_str() {
            Some(id) => format!("op-{}", anchor_id(id)),
            None => format!("op-{}-{}", self.method, anchor_id(self.path)),
        }
    }
}

/// The operations grouped by their first tag: the document's tags in its order, then tags
/// it does not declare, then untagged operations under "other". Within a tag, by path and
/// method.
fn by_tag(doc: &Value) -> Vec<(Tag, Vec<Operation<'_>>)> {
    let mut groups: Vec<(Tag, Vec<Operation<'_>>)> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            let tag = Tag {
                name: text(&t["name"]),
                description: t["description"].as_str().map(str::to_owned),
            };
            (tag, Vec::new())
        })
        .collect();
    let mut paths: Vec<(&String, &Value)> =
        doc["paths"].as_object().into_iter().flatten().collect();
    paths.sort_by(|a, b| a.0.cmp(b.0));
    for (path, item) in paths {
        for method in METHODS {
            let Some(body) = item.get(method) else {
                continue;
            };
            let tag = body["tags"][0].as_str().unwrap_or("other");
            let at = match groups.iter().position(|(t, _)| t.name == tag) {
                Some(at) => at,
                None => {
                    let tag = Tag {
                        name: tag.to_owned(),
                        description: None,
                    };
                    groups.push((tag, Vec::new()));
                    groups.len() - 1
                }
            };
            groups[at].1.push(Operation { path, method, body });
        }
    }
    groups.retain(|(_, ops)| !ops.is_empty());
    groups
}

fn authentication(out: &mut String, doc: &Value) {
    let Some(schemes) = doc["components"]["securitySchemes"].as_object() else {
        return;
    };
    let _ = writeln!(
        out,
        "## Authentication\n\nEach operation names the schemes it accepts (any one of them).\n"
    );
    for (name, scheme) in schemes {
        let kind = match (scheme["type"].as_str(), scheme["scheme"].as_str()) {
            (Some("http"), Some("basic")) => "HTTP Basic".to_owned(),
            (Some("http"), Some("bearer")) => "HTTP `Authorization: Bearer`".to_owned(),
            (Some("apiKey"), _) => format!(
                "`{}` in the {}",
                text(&scheme["name"]),
                match scheme["in"].as_str() {
                    Some("cookie") => "cookie",
                    Some("header") => "header",
                    Some("query") => "query",
                    _ => "request",
                }
            ),
            (Some(kind), _) => kind.to_owned(),
            (None, _) => "unspecified".to_owned(),
        };
        let _ = writeln!(
            out,
            "### `{name}` {{#{}}}\n\n{kind}. {}\n",
            auth_anchor(name),
            scheme["description"].as_str().unwrap_or("")
        );
    }
}

fn auth_anchor(name: &str) -> String {
    format!("auth-{}", anchor_id(name))
}

fn operation(out: &mut String, doc: &Value, op: &Operation<'_>) {
    let body = op.body;
    let _ = writeln!(
        out,
        "### `{} {}` {{#{}}}\n",
        op.method.to_uppercase(),
        op.path,
        op.anchor()
    );
    if let Some(summary) = body["summary"].as_str() {
        let _ = writeln!(out, "**{summary}**\n");
    }
    if let Some(description) = body["description"].as_str() {
        let _ = writeln!(out, "{description}\n");
    }
    let _ = writeln!(out, "Authentication: {}\n", security(doc, op));

    let parameters: Vec<&Value> = body["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| resolve(doc, p))
        .collect();
    if !parameters.is_empty() {
        let _ = writeln!(
            out,
            "Parameters:\n\n| name | in | type | required | description |\n|---|---|---|---|---|"
        );
        for p in parameters {
            let schema = &p["schema"];
            let description = p["description"]
                .as_str()
                .or_else(|| described(doc, schema))
                .unwrap_or("");
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} |",
                text(&p["name"]),
                text(&p["in"]),
                cell(&type_of(schema)),
                yes_no(p["required"].as_bool().unwrap_or(false)),
                cell(description)
            );
        }
        out.push('\n');
    }

    if body.get("requestBody").is_some() {
        let request = resolve(doc, &body["requestBody"]);
        let required = if request["required"].as_bool().unwrap_or(false) {
            "required"
        } else {
            "optional"
        };
        for (media, content) in request["content"].as_object().into_iter().flatten() {
            let schema = &content["schema"];
            match schema["properties"].as_object() {
                Some(_) if schema.get("$ref").is_none() => {
                    let _ = writeln!(out, "Request body (`{media}`, {required}):\n");
                    fields(out, doc, schema);
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "Request body (`{media}`, {required}): {}\n",
                        type_of(schema)
                    );
                }
            }
        }
    }

    let mut responses: Vec<(&String, &Value)> = body["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .collect();
    responses.sort_by(|a, b| a.0.cmp(b.0));
    if !responses.is_empty() {
        let _ = writeln!(
            out,
            "Responses:\n\n| status | meaning | body |\n|---|---|---|"
        );
        for (status, response) in responses {
            let response = resolve(doc, response);
            let mut bodies: Vec<String> = response["content"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(media, content)| match content.get("schema") {
                    Some(schema) => format!("`{media}`: {}", type_of(schema)),
                    None => format!("`{media}`"),
                })
                .collect();
            if let Some(headers) = response["headers"].as_object() {
                let names: Vec<String> = headers.keys().map(|h| format!("`{h}`")).collect();
                bodies.push(format!("headers {}", names.join(", ")));
            }
            let body = if bodies.is_empty() {
                "—".to_owned()
            } else {
                bodies.join("; ")
            };
            let _ = writeln!(
                out,
                "| {status} | {} | {} |",
                cell(response["description"].as_str().unwrap_or("")),
                cell(&body)
            );
        }
        out.push('\n');
    }
}

/// The schemes an operation accepts: its own `security`, else the document's.
fn security(doc: &Value, op: &Operation<'_>) -> String {
    let requirements = op
        .body
        .get("security")
        .or_else(|| doc.get("security"))
        .and_then(Value::as_array);
    let Some(requirements) = requirements.filter(|r| !r.is_empty()) else {
        return "none".to_owned();
    };
    let alternatives: Vec<String> = requirements
        .iter()
        .map(|requirement| {
            let all: Vec<String> = requirement
                .as_object()
                .into_iter()
                .flatten()
                .map(|(name, _)| format!("[`{name}`](#{})", auth_anchor(name)))
                .collect();
            if all.is_empty() {
                "none".to_owned()
            } else {
                all.join(" and ")
            }
        })
        .collect();
    match alternatives.as_slice() {
        [one] => one.clone(),
        many => format!("one of {}", many.join(", ")),
    }
}

/// A table of an object schema's properties.
fn fields(out: &mut String, doc: &Value, schema: &Value) {
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let _ = writeln!(
        out,
        "| field | type | required | description |\n|---|---|---|---|"
    );
    for (name, property) in schema["properties"].as_object().into_iter().flatten() {
        let description = property["description"]
            .as_str()
            .or_else(|| described(doc, property))
            .unwrap_or("");
        let _ = writeln!(
            out,
            "| `{name}` | {} | {} | {} |",
            cell(&type_of(property)),
            yes_no(required.contains(&name.as_str())),
            cell(description)
        );
    }
    out.push('\n');
}

fn schemas(out: &mut String, doc: &Value) {
    let Some(schemas) = doc["components"]["schemas"].as_object() else {
        return;
    };
    let _ = writeln!(out, "## Schemas\n");
    for (name, schema) in schemas {
        let _ = writeln!(out, "### `{name}` {{#{}}}\n", schema_anchor(name));
        if let Some(description) = schema["description"].as_str() {
            let _ = writeln!(out, "{description}\n");
        }
        if schema["properties"].is_object() {
            fields(out, doc, schema);
        } else {
            let _ = writeln!(out, "Type: {}\n", type_of(schema));
        }
    }
}

fn schema_anchor(name: &str) -> String {
    format!("schema-{}", anchor_id(name))
}

/// A short description of a schema's type: a link for a named schema, constants and enums
/// spelled out, bounds after a comma.
fn type_of(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        return match reference.strip_prefix("#/components/schemas/") {
            Some(name) => format!("[`{name}`](#{})", schema_anchor(name)),
            None => format!("`{reference}`"),
        };
    }
    if let Some(constant) = schema.get("const") {
        return format!("`{constant}`");
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values.iter().map(|v| format!("`{}`", literal(v))).collect();
        return format!("one of {}", values.join(", "));
    }
    for combinator in ["anyOf", "oneOf"] {
        if let Some(choices) = schema[combinator].as_array() {
            let choices: Vec<String> = choices.iter().map(type_of).collect();
            return choices.join(" or ");
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        let all: Vec<String> = all.iter().map(type_of).collect();
        return all.join(" and ");
    }
    let names: Vec<String> = match &schema["type"] {
        Value::String(name) => vec![one_type(schema, name)],
        Value::Array(names) => names
            .iter()
            .filter_map(Value::as_str)
            .map(|name| one_type(schema, name))
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        return "any".to_owned();
    }
    let mut out = names.join(" or ");
    let bounds = bounds(schema);
    if !bounds.is_empty() {
        let _ = write!(out, ", {}", bounds.join(", "));
    }
    out
}

fn one_type(schema: &Value, name: &str) -> String {
    match name {
        "array" => match schema.get("items") {
            Some(items) => format!("array of {}", type_of(items)),
            None => "array".to_owned(),
        },
        "object" => match schema.get("additionalProperties") {
            Some(values) if values.is_object() => {
                format!("object of name → {}", type_of(values))
            }
            _ => "object".to_owned(),
        },
        "string" => match schema["format"].as_str() {
            Some(format) => format!("string ({format})"),
            None => "string".to_owned(),
        },
        other => other.to_owned(),
    }
}

fn bounds(schema: &Value) -> Vec<String> {
    let bound = |key: &str| schema.get(key).filter(|v| v.is_number());
    let mut out = Vec::new();
    match (bound("minimum"), bound("maximum")) {
        (Some(min), Some(max)) => out.push(format!("{min}–{max}")),
        (Some(min), None) => out.push(format!("≥ {min}")),
        (None, Some(max)) => out.push(format!("≤ {max}")),
        (None, None) => {}
    }
    match (bound("minLength"), bound("maxLength")) {
        (Some(min), Some(max)) => out.push(format!("{min}–{max} characters")),
        (Some(min), None) => out.push(format!("at least {min} characters")),
        (None, Some(max)) => out.push(format!("at most {max} characters")),
        (None, None) => {}
    }
    match (bound("minItems"), bound("maxItems")) {
        (Some(min), Some(max)) => out.push(format!("{min}–{max} items")),
        (Some(min), None) => out.push(format!("at least {min} items")),
        (None, Some(max)) => out.push(format!("at most {max} items")),
        (None, None) => {}
    }
    out
}

/// A `$ref` (to anywhere in the document) followed, or the value itself.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    // Bounded, so a reference cycle cannot loop forever.
    for _ in 0..16 {
        match value["$ref"]
            .as_str()
            .and_then(|r| r.strip_prefix('#'))
            .and_then(|pointer| doc.pointer(pointer))
        {
            Some(target) => value = target,
            None => break,
        }
    }
    value
}

/// The description of the schema a property or parameter refers to, when it has none of
/// its own.
fn described<'a>(doc: &'a Value, schema: &'a Value) -> Option<&'a str> {
    schema.get("$ref")?;
    resolve(doc, schema)["description"].as_str()
}

fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or("").to_owned()
}

fn yes_no(yes: bool) -> &'static str {
    if yes { "yes" } else { "no" }
}

/// Text fit for one table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('\n', " ").replace('|', "\\|")
}

/// An HTML id: ASCII letters and digits kept (lower-cased), anything else one `-`.
fn anchor_id(name: &str) -> String {
    let mut id = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            id.push(c.to_ascii_lowercase());
        } else if !id.is_empty() && !id.ends_with('-') {
            id.push('-');
        }
    }
    id.trim_end_matches('-').to_owned()
}

fn capitalised(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn small() -> Value {
        json!({
            "openapi": "3.1.0",
            "info": {"title": "Small API", "version": "1.2.3", "description": "What it is."},
            "tags": [{"name": "pool", "description": "The VMs."}, {"name": "meta"}],
            "paths": {
                "/api/vms/{hostname}": {
                    "delete": {
                        "operationId": "deleteVm",
                        "summary": "Destroy a VM",
                        "tags": ["pool"],
                        "parameters": [{"$ref": "#/components/parameters/hostname"}],
                        "security": [{"adminBasic": []}, {"adminToken": []}],
                        "responses": {
                            "404": {"$ref": "#/components/responses/NotFound"},
                            "202": {
                                "description": "Started | queued.",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Run"}}},
                                "headers": {"Location": {"schema": {"type": "string"}}}
                            }
                        }
                    },
                    "get": {
                        "operationId": "getVm",
                        "summary": "One VM",
                        "tags": ["pool"],
                        "security": [],
                        "responses": {"204": {"description": "Nothing."}}
                    }
                },
                "/api/launch": {
                    "post": {
                        "operationId": "launch",
                        "summary": "Launch VMs",
                        "tags": ["pool"],
                        "requestBody": {
                            "required": true,
                            "content": {"application/x-www-form-urlencoded": {"schema": {
                                "type": "object",
                                "properties": {
                                    "num_vms": {"type": "integer", "minimum": 1, "maximum": 500, "description": "how many"},
                                    "names": {"type": "array", "items": {"type": "string", "maxLength": 10}},
                                    "mode": {"type": ["string", "null"], "enum": ["fast", "slow"]}
                                },
                                "required": ["num_vms"]
                            }}}
                        },
                        "responses": {"200": {"description": "OK"}}
                    }
                },
                "/health": {
                    "get": {
                        "summary": "Health",
                        "responses": {"200": {"description": "Fine"}}
                    }
                }
            },
            "components": {
                "securitySchemes": {
                    "adminBasic": {"type": "http", "scheme": "basic", "description": "The admin."},
                    "adminToken": {"type": "http", "scheme": "bearer", "description": "A token."}
                },
                "parameters": {
                    "hostname": {"name": "hostname", "in": "path", "required": true,
                                 "schema": {"$ref": "#/components/schemas/Hostname"}}
                },
                "responses": {
                    "NotFound": {"description": "No such VM.",
                                 "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
                },
                "schemas": {
                    "Hostname": {"type": "string", "maxLength": 253, "description": "A hostname."},
                    "Run": {"type": "object", "properties": {"id": {"type": "integer"}, "state": {"const": "running"}}, "required": ["id"]},
                    "Error": {"type": "object", "properties": {"error": {"type": "string"}}}
                }
            }
        })
    }

    #[test]
    fn every_operation_with_its_auth_parameters_body_and_responses() {
        let md = render(&small());
        assert!(md.starts_with("# API reference\n\nSmall API 1.2.3 (OpenAPI 3.1.0)."));
        assert!(md.contains("\nWhat it is.\n"));

        // Tags in the document's order, each with an index of its operations (by path,
        // then method); an untagged operation goes under "Other"; an empty tag is left out.
        let pool = md.find("## Pool\n\nThe VMs.\n").expect("pool section");
        let other = md.find("## Other\n").expect("other section");
        assert!(pool < other);
        assert!(!md.contains("## Meta"), "{md}");
        assert!(md.contains(
            "| [`POST /api/launch`](#op-launch) | Launch VMs |\n\
             | [`GET /api/vms/{hostname}`](#op-getvm) | One VM |\n\
             | [`DELETE /api/vms/{hostname}`](#op-deletevm) | Destroy a VM |\n"
        ));
        assert!(md.contains("### `GET /health` {#op-get-health}"));

        // Authentication: the schemes, and per operation the alternatives or none.
        assert!(md.contains("### `adminBasic` {#auth-adminbasic}\n\nHTTP Basic. The admin.\n"));
        assert!(md.contains(
            "Authentication: one of [`adminBasic`](#auth-adminbasic), [`adminToken`](#auth-admintoken)\n"
        ));
        let get_vm = &md[md.find("{#op-getvm}").expect("getVm")..];
        assert!(get_vm.contains("Authentication: none\n"));

        // A parameter reached through $ref, described by the schema it refers to.
        assert!(md.contains(
            "| `hostname` | path | [`Hostname`](#schema-hostname) | yes | A hostname. |"
        ));

        // An inline request body as a table of fields, with bounds and enums.
        assert!(md.contains("Request body (`application/x-www-form-urlencoded`, required):"));
        assert!(md.contains("| `num_vms` | integer, 1–500 | yes | how many |"));
        assert!(md.contains("| `names` | array of string, at most 10 characters | no |  |"));
        assert!(md.contains("| `mode` | one of `fast`, `slow` | no |  |"));

        // Responses sorted by status, $ref followed, pipes escaped, headers named.
        let delete = &md[md.find("{#op-deletevm}").expect("deleteVm")..];
        let accepted = delete
            .find("| 202 | Started \\| queued. | `application/json`: [`Run`](#schema-run); headers `Location` |")
            .expect("202 row");
        let not_found = delete
            .find("| 404 | No such VM. | `application/json`: [`Error`](#schema-error) |")
            .expect("404 row");
        assert!(accepted < not_found);
        assert!(md.contains("| 204 | Nothing. | — |"));

        // The schemas, each with its anchor.
        assert!(
            md.contains("### `Run` {#schema-run}\n\n| field | type | required | description |")
        );
        assert!(md.contains("| `state` | `\"running\"` | no |  |"));
        assert!(md.contains(
            "### `Hostname` {#schema-hostname}\n\nA hostname.\n\nType: string, at most 253 characters\n"
        ));
        assert!(md.ends_with('\n') && !md.ends_with("\n\n"));
    }

    #[test]
    fn every_link_has_its_anchor() {
        let md = render(&small());
        let mut rest = md.as_str();
        let mut links = 0;
        while let Some(at) = rest.find("](#") {
            let target = &rest[at + 3..];
            let id = &target[..target.find(')').expect("link closes")];
            assert!(
                md.contains(&format!("{{#{id}}}")),
                "no anchor {id} in\n{md}"
            );
            links += 1;
            rest = target;
        }
        assert!(links >= 8, "{links} links");
    }

    #[test]
    fn a_text_that_is_not_json_is_an_error() {
        assert!(render_text("{\"openapi\": ").is_err());
        let md = render_text(r#"{"info": {"title": "T", "version": "1"}, "paths": {}}"#)
            .expect("renders");
        assert!(md.starts_with("# API reference\n\nT 1 (OpenAPI)."));
    }
}
