//! `lablink token`: the agents' shared token of a data directory; or a credential minted
//! for one VM (`--vm NAME`, for machines of the manual provider), or a VM's credential
//! revoked (`--revoke NAME`). A running allocator holds its store: then give `--url` and
//! the change goes through its API as the admin.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use crate::exit::CliError;
use crate::pool::agent_token::TOKEN_FILE;
use crate::shared_token::SharedToken;
use crate::store::{self, Store, StoreError, identities, meta, vms};

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// Data directory of the allocator.
    #[arg(long, default_value = "./lablink-data")]
    pub data_dir: PathBuf,
    /// Mint a credential for the VM of this name and print it (any earlier credential of
    /// that name stops working). It can act only as that VM, until revoked or destroyed.
    #[arg(long, value_name = "NAME", conflicts_with = "revoke")]
    pub vm: Option<String>,
    /// Revoke this VM: its credential stops working and its record is removed.
    #[arg(long, value_name = "NAME")]
    pub revoke: Option<String>,
    /// A running allocator (--url, or LABLINK_URL): mint or revoke through its API.
    #[command(flatten)]
    pub target: super::remote::Target,
}

enum Change<'a> {
    Mint(&'a str),
    Revoke(&'a str),
}

pub fn run(args: TokenArgs) -> Result<(), CliError> {
    let change = match (&args.vm, &args.revoke) {
        (Some(name), _) => Some(("--vm", Change::Mint(name))),
        (_, Some(name)) => Some(("--revoke", Change::Revoke(name))),
        _ => None,
    };
    if let Some((flag, Change::Mint(name) | Change::Revoke(name))) = &change
        && let Err(e) = crate::model::validate_hostname(name)
    {
        return Err(CliError::Usage(format!("{flag}: {e}")));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let text = match (change, args.target.explicit_url()) {
        (None, _) => return print_shared(&args.data_dir, &runtime),
        (Some((_, change)), Some(url)) => {
            let admin = args.target.admin()?;
            runtime.block_on(through_api(&admin, &url, change))?
        }
        (Some((_, change)), None) => runtime
            .block_on(in_store(&args.data_dir, change))
            .map_err(CliError::Failed)?,
    };
    println!("{text}");
    Ok(())
}

fn missing_store(data_dir: &Path) -> String {
    format!(
        "no LabLink store in {}; start `lablink serve --data-dir {}` once to create it",
        data_dir.display(),
        data_dir.display()
    )
}

fn print_shared(data_dir: &Path, runtime: &tokio::runtime::Runtime) -> Result<(), CliError> {
    if !data_dir.join(store::FILE_NAME).exists() {
        return Err(CliError::Failed(missing_store(data_dir)));
    }
    let token = match Store::open(data_dir) {
        Ok(store) => {
            let token = runtime.block_on(store.write(meta::api_token_or_create));
            store.close();
            token.map_err(CliError::failed)?
        }
        // The allocator is running and holds the store; it exported the token at start.
        Err(StoreError::AlreadyOpen(_)) => std::fs::read_to_string(data_dir.join(TOKEN_FILE))
            .map_err(|e| {
                CliError::Failed(format!(
                    "the allocator is running on {} and its token file cannot be read: {e}",
                    data_dir.display()
                ))
            })?
            .trim_end()
            .to_owned(),
        Err(e) => return Err(CliError::failed(e)),
    };
    println!("{token}");
    Ok(())
}

async fn through_api(
    admin: &super::remote::Admin,
    url: &str,
    change: Change<'_>,
) -> Result<String, CliError> {
    match change {
        Change::Mint(name) => {
            let answer = admin
                .post("/api/vm-credentials", &json!({ "hostname": name }))
                .await?;
            answer["credentials"][name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| {
                    CliError::Failed(format!("{url} answered without a credential for {name}"))
                })
        }
        Change::Revoke(name) => {
            let answer = admin
                .post(&format!("/api/vms/{name}/revoke"), &json!({}))
                .await?;
            Ok(answer["message"].as_str().unwrap_or("revoked").to_owned())
        }
    }
}

/// The allocator is stopped: change its store directly.
async fn in_store(data_dir: &Path, change: Change<'_>) -> Result<String, String> {
    if !data_dir.join(store::FILE_NAME).exists() {
        return Err(missing_store(data_dir));
    }
    let store = Store::open(data_dir).map_err(|e| match e {
        StoreError::AlreadyOpen(_) => format!(
            "the allocator is running on {}: give --url (its address, e.g. http://127.0.0.1:5000) to go through it",
            data_dir.display()
        ),
        other => other.to_string(),
    })?;
    let now = chrono::Utc::now();
    let result = match change {
        Change::Mint(name) => {
            let host = name.to_owned();
            store
                .write(move |tx| {
                    let token = meta::api_token_or_create(tx)?;
                    let identity = crate::model::Identity::new("minted with lablink token", now);
                    identities::put(tx, &host, &identity)?;
                    crate::store::audit::record(tx, "cli", None, "mint", &host, now)?;
                    Ok(SharedToken::new(token).for_vm(&host, &identity.nonce))
                })
                .await
        }
        Change::Revoke(name) => {
            let host = name.to_owned();
            store
                .write(move |tx| {
                    let found = vms::delete(tx, &host)? | identities::remove(tx, &host)?;
                    if found {
                        crate::store::audit::record(tx, "cli", None, "revoke", &host, now)?;
                        Ok(format!(
                            "{host} revoked: its credential no longer works and its record is gone"
                        ))
                    } else {
                        Ok(format!("{host}: no such VM or credential; nothing revoked"))
                    }
                })
                .await
        }
    };
    store.close();
    result.map_err(|e| e.to_string())
}
