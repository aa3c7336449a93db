//! AWS credentials for the Terraform provider, looked for where the AWS provider looks:
//! the environment, the shared files of a profile, then the instance's role.

use std::path::PathBuf;
use std::time::Duration;

use super::{Finding, Setup};
use crate::exit::error_chain;

const DEFAULT_IMDS: &str = "http://169.254.169.254";

/// The sections of an INI file (`[name]`) with their keys.
fn sections(text: &str) -> Vec<(String, Vec<String>)> {
    let mut found: Vec<(String, Vec<String>)> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            found.push((name.trim().to_owned(), Vec::new()));
        } else if let (Some((key, _)), Some((_, keys))) = (line.split_once('='), found.last_mut()) {
            keys.push(key.trim().to_ascii_lowercase());
        }
    }
    found
}

/// Where a profile's credentials are, if its section in the credentials or the config file
/// gives any (a config section with only a region gives none).
pub(super) fn profile_source(
    profile: &str,
    credentials: (&str, &str),
    config: (&str, &str),
) -> Option<String> {
    let (credentials_file, credentials_text) = credentials;
    let (config_file, config_text) = config;
    let in_credentials = sections(credentials_text)
        .into_iter()
        .any(|(name, keys)| name == profile && keys.iter().any(|k| k == "aws_access_key_id"));
    if in_credentials {
        return Some(format!("[{profile}] in {credentials_file}"));
    }
    let wanted = format!("profile {profile}");
    let gives_credentials = |keys: &[String]| {
        keys.iter().any(|k| {
            matches!(
                k.as_str(),
                "aws_access_key_id"
                    | "credential_process"
                    | "sso_session"
                    | "sso_start_url"
                    | "role_arn"
                    | "web_identity_token_file"
            )
        })
    };
    sections(config_text)
        .into_iter()
        .find(|(name, keys)| {
            (*name == wanted || (profile == "default" && name == "default"))
                && gives_credentials(keys)
        })
        .map(|(name, _)| format!("[{name}] in {config_file}"))
}

/// The role of this EC2 instance, asked of the metadata service (IMDSv2, then v1).
async fn instance_role(endpoint: &str) -> Result<String, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let base = endpoint.trim_end_matches('/');
    let token = http
        .put(format!("{base}/latest/api/token"))
        .header("X-aws-ec2-metadata-token-ttl-seconds", "60")
        .send()
        .await
        .map_err(|e| error_chain(&e))?;
    let mut ask = http.get(format!("{base}/latest/meta-data/iam/security-credentials/"));
    if token.status().is_success() {
        let token = token.text().await.map_err(|e| error_chain(&e))?;
        ask = ask.header("X-aws-ec2-metadata-token", token);
    }
    let answer = ask.send().await.map_err(|e| error_chain(&e))?;
    let status = answer.status();
    let body = answer.text().await.unwrap_or_default();
    match body.lines().next().map(str::trim) {
        Some(role) if status.is_success() && !role.is_empty() => Ok(role.to_owned()),
        _ => Err(format!("it answered HTTP {status} but names no role")),
    }
}

pub async fn credentials(setup: &Setup) -> Finding {
    let check = "cloud_credentials";
    if setup.config.provision.provider != "terraform" {
        return Finding::skip(
            check,
            format!(
                "provision.provider is {}: no cloud credentials needed",
                setup.config.provision.provider
            ),
        );
    }
    let fix = "attach an IAM role to this instance, or give the allocator's service AWS_PROFILE \
               (with ~/.aws/credentials) or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";
    match (
        setup.var("AWS_ACCESS_KEY_ID"),
        setup.var("AWS_SECRET_ACCESS_KEY"),
    ) {
        (Some(_), Some(_)) => {
            return Finding::pass(check, "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set");
        }
        (Some(_), None) | (None, Some(_)) => {
            return Finding::fail(
                check,
                "only one of AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY is set",
                "set both (or neither, to use a profile or the instance role)",
            );
        }
        (None, None) => {}
    }
    if setup.var("AWS_WEB_IDENTITY_TOKEN_FILE").is_some() && setup.var("AWS_ROLE_ARN").is_some() {
        return Finding::pass(check, "a web identity (AWS_ROLE_ARN) is set");
    }
    if setup
        .var("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        .is_some()
        || setup.var("AWS_CONTAINER_CREDENTIALS_FULL_URI").is_some()
    {
        return Finding::pass(check, "container credentials (ECS task role) are set");
    }
    let named = setup
        .var("AWS_PROFILE")
        .or_else(|| setup.var("AWS_DEFAULT_PROFILE"));
    let profile = named.clone().unwrap_or_else(|| "default".to_owned());
    let home = setup.var("HOME").map(PathBuf::from);
    let file = |variable: &str, name: &str| {
        setup
            .var(variable)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let read = |path: &Option<PathBuf>| match path {
        Some(p) => (
            p.display().to_string(),
            std::fs::read_to_string(p).unwrap_or_default(),
        ),
        None => ("~/.aws/…".to_owned(), String::new()),
    };
    let (credentials_file, credentials_text) =
        read(&file("AWS_SHARED_CREDENTIALS_FILE", "credentials"));
    let (config_file, config_text) = read(&file("AWS_CONFIG_FILE", "config"));
    if let Some(source) = profile_source(
        &profile,
        (&credentials_file, &credentials_text),
        (&config_file, &config_text),
    ) {
        return Finding::pass(check, format!("profile {profile}: {source}"));
    }
    if named.is_some() {
        return Finding::fail(
            check,
            format!(
                "AWS_PROFILE is {profile}, but neither {credentials_file} nor {config_file} gives \
                 that profile credentials"
            ),
            format!("`aws configure --profile {profile}`, or unset AWS_PROFILE"),
        );
    }
    let imds_disabled = setup
        .var("AWS_EC2_METADATA_DISABLED")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let imds = setup
        .var("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|| DEFAULT_IMDS.to_owned());
    let role = if imds_disabled {
        Err("AWS_EC2_METADATA_DISABLED is true".to_owned())
    } else {
        instance_role(&imds).await
    };
    match role {
        Ok(role) => Finding::pass(check, format!("instance role {role} (from {imds})")),
        Err(why) => Finding::fail(
            check,
            format!(
                "no AWS credentials: none in the environment, no profile `default` in \
                 {credentials_file} or {config_file}, and no instance role ({imds}: {why})"
            ),
            fix,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_needs_keys_not_just_a_region() {
        let creds = "[default]\naws_access_key_id = AKIA\naws_secret_access_key = x\n";
        let config = "[default]\nregion = us-west-2\n\n[profile lab]\nsso_session = s\n";
        let c = ("creds", creds);
        let f = ("config", config);
        assert_eq!(
            profile_source("default", c, f).as_deref(),
            Some("[default] in creds")
        );
        assert_eq!(
            profile_source("lab", c, f).as_deref(),
            Some("[profile lab] in config")
        );
        assert_eq!(profile_source("default", ("creds", ""), f), None);
        assert_eq!(profile_source("other", c, f), None);
    }
}
