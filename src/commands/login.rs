//! `lablink login`: an admin API token made with the password once, stored for the
//! commands that talk to a running allocator (`$XDG_CONFIG_HOME/lablink/logins.json`, else
//! `~/.config/lablink/logins.json`, mode 0600; never the password). One login per
//! allocator address; the last one is the default address. `lablink logout`: the token
//! revoked and forgotten.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::remote::{self, Admin, RemoteError, Target, base_url, client_for};
use crate::exit::CliError;
use crate::model::{MAX_TOKEN_NAME_LEN, TokenScope};

const FILE_NAME: &str = "logins.json";

#[derive(Args, Debug)]
pub struct LoginArgs {
    #[command(flatten)]
    pub target: Target,
    /// The token's name, as the console lists it (default: USER@HOST of this machine).
    #[arg(long)]
    pub name: Option<String>,
    /// A token that may only read (GET): enough for status and logs, not for changes.
    #[arg(long)]
    pub read_only: bool,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The allocator's address (else LABLINK_URL, else the address of the last login).
    #[arg(long)]
    pub url: Option<String>,
}

/// One stored login.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredLogin {
    pub url: String,
    /// The token's id on the allocator (to revoke it).
    pub id: u64,
    pub name: String,
    pub scope: TokenScope,
    pub token: String,
}

/// The stored logins, by allocator address.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Logins {
    /// The address of the last login: commands talk to it when given no other.
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    allocators: BTreeMap<String, StoredLogin>,
}

/// The logins file: in `$XDG_CONFIG_HOME/lablink/`, else `~/.config/lablink/`.
pub fn file() -> Option<PathBuf> {
    let env_dir = |name: &str| {
        std::env::var_os(name)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let dir = env_dir("XDG_CONFIG_HOME").or_else(|| env_dir("HOME").map(|h| h.join(".config")))?;
    Some(dir.join("lablink").join(FILE_NAME))
}

/// The key of an address: as given, without a trailing slash.
fn key(url: &str) -> String {
    url.trim_end_matches('/').to_owned()
}

impl Logins {
    /// The stored logins (none when there is no file, or no home to keep one in). A file
    /// others may read is refused: it holds tokens.
    pub fn load() -> Result<Logins, String> {
        let Some(path) = file() else {
            return Ok(Logins::default());
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Logins::default()),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            if meta.mode() & 0o077 != 0 {
                return Err(format!(
                    "{} may be read by others (mode {:o}) and holds API tokens: refused. Revoke its tokens in the console (API tokens), delete it and run `lablink login` again",
                    path.display(),
                    meta.mode() & 0o777
                ));
            }
        }
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a logins file ({e}); delete it and run `lablink login` again",
                path.display()
            )
        })
    }

    fn save(&self) -> Result<PathBuf, String> {
        let path = file().ok_or(
            "no place to keep the login: set HOME (or XDG_CONFIG_HOME) to an absolute directory",
        )?;
        if let Some(dir) = path.parent() {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        crate::secret_file::write(&path, &text).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// The address of the last login, if it is still stored.
    pub fn default_url(&self) -> Option<String> {
        self.default
            .clone()
            .filter(|url| self.allocators.contains_key(url))
    }

    pub fn get(&self, url: &str) -> Option<&StoredLogin> {
        self.allocators.get(&key(url))
    }

    /// Removes the login of `url`; another stored one becomes the default if it was.
    fn forget(&mut self, url: &str) -> Option<StoredLogin> {
        let url = key(url);
        let stored = self.allocators.remove(&url)?;
        if self.default.as_deref() == Some(url.as_str()) {
            self.default = self.allocators.keys().next().cloned();
        }
        Some(stored)
    }
}

enum Revoked {
    Now,
    /// No such token (404).
    Before,
    /// The credential was refused (401): for a token, it was revoked already.
    Refused,
}

/// `DELETE /api/admin-tokens/{id}`.
async fn revoke(admin: &Admin, id: u64) -> Result<Revoked, RemoteError> {
    match admin.delete(&format!("/api/admin-tokens/{id}")).await {
        Ok(_) => Ok(Revoked::Now),
        Err(RemoteError::Refused { status: 404, .. }) => Ok(Revoked::Before),
        Err(RemoteError::Unauthorized(_)) => Ok(Revoked::Refused),
        Err(e) => Err(e),
    }
}

/// USER@HOST of this machine, cut to a token name's length.
fn default_name() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "cli".into());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{user}@{host}")
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TOKEN_NAME_LEN)
        .collect::<String>()
        .trim()
        .to_owned()
}

pub fn login(args: LoginArgs) -> Result<(), CliError> {
    let usage = |e: String| CliError::Usage(e).of("login");
    remote::refuse_old_env().map_err(usage)?;
    let mut logins = Logins::load().map_err(usage)?;
    let url = key(&args.target.url().map_err(usage)?);
    let client =
        client_for(&base_url(&url).map_err(usage)?, Duration::from_secs(60)).map_err(usage)?;
    let login = &args.target.login;
    let password =
        remote::password(login.password_file.as_deref(), &login.user, &url).map_err(usage)?;
    let admin = Admin::with_password(client, &url, &login.user, password);
    let name = args.name.clone().unwrap_or_else(default_name);
    let scope = if args.read_only {
        TokenScope::ReadOnly
    } else {
        TokenScope::Admin
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let failed = |e: String| CliError::Failed(e).of("login");
    let mut old_revoked = false;
    let created = runtime.block_on(async {
        // A new login replaces this machine's earlier token for the address.
        if let Some(old) = logins.get(&url) {
            match revoke(&admin, old.id).await? {
                Revoked::Now | Revoked::Before => old_revoked = true,
                Revoked::Refused => return Err(RemoteError::Unauthorized(admin.refused())),
            }
        }
        admin
            .post(
                "/api/admin-tokens",
                &json!({ "name": name, "scope": scope.as_str() }),
            )
            .await
    });
    if created.is_err() && old_revoked {
        // The earlier token is gone on the allocator: it must not stay the default here.
        logins.forget(&url);
        let _ = logins.save();
    }
    let created = created.map_err(|e| CliError::from(e).of("login"))?;
    let (Some(id), Some(token)) = (created["id"].as_u64(), created["token"].as_str()) else {
        return Err(failed(format!("{url} answered without a token: {created}")));
    };
    logins.allocators.insert(
        url.clone(),
        StoredLogin {
            url: url.clone(),
            id,
            name: name.clone(),
            scope,
            token: token.to_owned(),
        },
    );
    logins.default = Some(url.clone());
    let path = logins.save().map_err(failed)?;
    println!(
        "Signed in to {url} with the {} API token \"{name}\", kept in {}.",
        scope.as_str(),
        path.display()
    );
    println!("Commands use it when no password is given; `lablink logout` revokes it.");
    Ok(())
}

pub fn logout(args: LogoutArgs) -> Result<(), CliError> {
    let usage = |e: String| CliError::Usage(e).of("logout");
    let mut logins = Logins::load().map_err(usage)?;
    let url = args
        .url
        .clone()
        .or_else(|| {
            std::env::var(remote::URL_ENV)
                .ok()
                .filter(|u| !u.is_empty())
        })
        .or_else(|| logins.default_url());
    let Some(url) = url.map(|u| key(&u)) else {
        println!("Not signed in to any allocator.");
        return Ok(());
    };
    let Some(stored) = logins.forget(&url) else {
        println!("Not signed in to {url}; nothing to do.");
        return Ok(());
    };
    let revoked = match base_url(&url).and_then(|u| client_for(&u, Duration::from_secs(30))) {
        Ok(client) => {
            let admin = Admin::with_token(
                client,
                &url,
                stored.token.clone(),
                format!("the login stored for {url}"),
            );
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime
                .block_on(revoke(&admin, stored.id))
                .map_err(CliError::from)
        }
        Err(e) => Err(CliError::Usage(e)),
    };
    let path = logins
        .save()
        .map_err(|e| CliError::Failed(e).of("logout"))?;
    match revoked {
        Ok(Revoked::Now) => {
            println!(
                "Token \"{}\" revoked on {url} and removed from {}.",
                stored.name,
                path.display()
            );
            Ok(())
        }
        // Revoked already (in the console): nothing is left to do there.
        Ok(Revoked::Before | Revoked::Refused) => {
            println!(
                "Token \"{}\" was already revoked on {url}; removed from {}.",
                stored.name,
                path.display()
            );
            Ok(())
        }
        Err(e) => {
            let why = format!(
                "removed from {}, but not revoked on {url} ({e}): revoke \"{}\" in the console (API tokens)",
                path.display(),
                stored.name
            );
            // The status says why it was not revoked (unreachable: 4); the message, what to do.
            Err(match e {
                CliError::Unreachable(_) => CliError::Unreachable(why),
                CliError::Unauthorized(_) => CliError::Unauthorized(why),
                _ => CliError::Failed(why),
            }
            .of("logout"))
        }
    }
}
