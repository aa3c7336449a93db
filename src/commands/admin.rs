//! `lablink admin set-password`: change the admin password of a stopped allocator.

use std::io::BufRead;
use std::path::Path;

use crate::exit::CliError;
use crate::store::{self, Store, StoreError};

const MIN_LENGTH: usize = 8;

fn read_password(file: Option<&Path>) -> Result<String, String> {
    let text = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("--password-file {}: {e}", path.display()))?,
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => {
            let first = rpassword::prompt_password("New admin password: ")
                .map_err(|e| format!("cannot read the password: {e}"))?;
            let again = rpassword::prompt_password("Again: ")
                .map_err(|e| format!("cannot read the password: {e}"))?;
            if first != again {
                return Err("the two passwords differ; nothing changed".into());
            }
            first
        }
        None => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
            line
        }
    };
    let password = text.trim_end_matches(['\r', '\n']).to_owned();
    if password.chars().count() < MIN_LENGTH {
        return Err(format!(
            "the password must have at least {MIN_LENGTH} characters"
        ));
    }
    if crate::config::is_placeholder(&password) {
        return Err("that is a template placeholder, not a password".into());
    }
    Ok(password)
}

pub fn set_password(data_dir: &Path, password_file: Option<&Path>) -> Result<(), CliError> {
    if !data_dir.join(store::FILE_NAME).exists() {
        return Err(CliError::Failed(format!(
            "--data-dir {}: no LabLink store there; start `lablink serve --data-dir {}` once to create it",
            data_dir.display(),
            data_dir.display()
        )));
    }
    let password = read_password(password_file).map_err(CliError::Usage)?;
    let store = match Store::open(data_dir) {
        Ok(store) => store,
        Err(StoreError::AlreadyOpen(_)) => {
            return Err(CliError::Failed(format!(
                "the allocator is running on {}; stop it (systemctl stop lablink), set the password, and start it again",
                data_dir.display()
            )));
        }
        Err(e) => return Err(CliError::failed(e)),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let saved = runtime.block_on(crate::server::auth::set_password(&store, password));
    store.close();
    saved.map_err(CliError::failed)?;
    println!(
        "admin password changed; every admin session was signed out. \
         (A password set in config.yaml or LABLINK_APP_ADMIN_PASSWORD takes over again only when it is changed.)"
    );
    Ok(())
}
