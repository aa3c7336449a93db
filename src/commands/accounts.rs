//! `lablink accounts`: the console's accounts on a running allocator (helpers): list them,
//! add one, give one a new password, remove one. A new password is read from
//! `LABLINK_ACCOUNT_PASSWORD` or from standard input (one line), never from a flag, so it
//! stays out of the shell's history and the process list.

use std::io::{BufRead, IsTerminal};

use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::output::{self, ago, cell};
use super::remote::{ListArgs, Target};
use crate::exit::CliError;
use crate::model::{Role, check_account_name, check_new_password};

/// Where a new account password comes from when set.
pub const PASSWORD_ENV: &str = "LABLINK_ACCOUNT_PASSWORD";

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AccountsArgs {
    #[command(subcommand)]
    pub action: Option<AccountAction>,
    /// With no action: the list.
    #[command(flatten)]
    pub list: ListArgs,
}

#[derive(Subcommand, Debug)]
pub enum AccountAction {
    /// Every account: name, role, created, last sign-in (the default).
    List(ListArgs),
    /// A new account (a helper); its password from LABLINK_ACCOUNT_PASSWORD or stdin.
    Add {
        #[command(flatten)]
        account: OneAccount,
        /// The account's role.
        #[arg(long, default_value = "helper")]
        role: String,
    },
    /// Remove an account; its console sessions end.
    Remove(OneAccount),
    /// A new password (from LABLINK_ACCOUNT_PASSWORD or stdin); its console sessions end.
    Password(OneAccount),
}

#[derive(Args, Debug)]
pub struct OneAccount {
    /// The account's name.
    pub name: String,
    #[command(flatten)]
    pub target: Target,
    /// Print the allocator's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: AccountsArgs) -> Result<(), CliError> {
    let result = match args.action {
        None => list(&args.list),
        Some(AccountAction::List(list_args)) => list(&list_args),
        Some(AccountAction::Add { account, role }) => add(&account, &role),
        Some(AccountAction::Remove(account)) => remove(&account),
        Some(AccountAction::Password(account)) => password(&account),
    };
    result.map_err(|e| e.of("accounts"))
}

fn checked_name(name: &str) -> Result<(), CliError> {
    check_account_name(name).map_err(|e| CliError::Usage(format!("NAME: {e}")))
}

/// The new password for account `name`, from the variable or one line of stdin.
fn new_password(name: &str) -> Result<String, CliError> {
    let password = match std::env::var(PASSWORD_ENV) {
        Ok(p) if !p.is_empty() => p,
        _ if std::io::stdin().is_terminal() => {
            return Err(CliError::Usage(format!(
                "no password: set {PASSWORD_ENV}, or pipe it on standard input (e.g. from a password manager)"
            )));
        }
        _ => {
            let mut line = String::new();
            std::io::stdin().lock().read_line(&mut line).map_err(|e| {
                CliError::Failed(format!("cannot read the password from stdin: {e}"))
            })?;
            line.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    check_new_password(name, &password).map_err(|e| CliError::Usage(format!("password: {e}")))?;
    Ok(password)
}

fn print(answer: &Value, json: bool) {
    if json {
        output::json(answer);
    } else {
        println!("{}", answer["message"].as_str().unwrap_or("done"));
    }
}

fn add(account: &OneAccount, role: &str) -> Result<(), CliError> {
    checked_name(&account.name)?;
    if Role::parse_grantable(role).is_none() {
        let roles: Vec<_> = Role::GRANTABLE.iter().map(|r| r.as_str()).collect();
        return Err(CliError::Usage(format!(
            "--role {role}: give one of {}",
            roles.join(", ")
        )));
    }
    let password = new_password(&account.name)?;
    let admin = account.target.admin()?;
    let body = json!({ "name": account.name, "role": role, "password": password });
    let answer = output::runtime()?.block_on(admin.post("/api/accounts", &body))?;
    print(&answer, account.json);
    Ok(())
}

fn remove(account: &OneAccount) -> Result<(), CliError> {
    checked_name(&account.name)?;
    let admin = account.target.admin()?;
    let answer =
        output::runtime()?.block_on(admin.delete(&format!("/api/accounts/{}", account.name)))?;
    print(&answer, account.json);
    Ok(())
}

fn password(account: &OneAccount) -> Result<(), CliError> {
    checked_name(&account.name)?;
    let password = new_password(&account.name)?;
    let admin = account.target.admin()?;
    let path = format!("/api/accounts/{}/password", account.name);
    let answer =
        output::runtime()?.block_on(admin.post(&path, &json!({ "password": password })))?;
    print(&answer, account.json);
    Ok(())
}

fn list(args: &ListArgs) -> Result<(), CliError> {
    let admin = args.target.admin()?;
    let answer = output::runtime()?.block_on(admin.get("/api/accounts"))?;
    if args.json {
        output::json(&answer);
        return Ok(());
    }
    let accounts: Vec<&Value> = answer["accounts"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    if accounts.is_empty() {
        println!("no accounts besides the admin");
        return Ok(());
    }
    let now = Utc::now();
    let rows = accounts.iter().map(|a| {
        [
            cell(&a["name"]),
            cell(&a["role"]),
            ago(&a["created_at"], now),
            cell(&a["created_by"]),
            ago(&a["last_sign_in_at"], now),
            cell(&a["last_sign_in_from"]),
        ]
    });
    println!(
        "{}",
        output::table(
            ["NAME", "ROLE", "CREATED", "BY", "LAST SIGN-IN", "FROM"],
            rows
        )
    );
    Ok(())
}
