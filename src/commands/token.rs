//! `lablink token --data-dir DIR [--vm NAME]`: the agents' shared token, or one VM's own
//! credential derived from it.

use std::path::Path;
use std::process::ExitCode;

use super::fail;
use crate::server::state::TOKEN_FILE;
use crate::shared_token::SharedToken;
use crate::store::{self, Store, StoreError, meta};

pub fn run(data_dir: &Path, vm: Option<&str>) -> ExitCode {
    if let Some(name) = vm
        && let Err(e) = crate::model::validate_hostname(name)
    {
        eprintln!("lablink: --vm: {e}");
        return ExitCode::from(super::EXIT_CONFIG);
    }
    let print = |token: &str| {
        match vm {
            Some(name) => println!("{}", SharedToken::new(token.to_owned()).for_vm(name)),
            None => println!("{token}"),
        }
        ExitCode::SUCCESS
    };
    if !data_dir.join(store::FILE_NAME).exists() {
        return fail(format!(
            "no LabLink store in {}; start `lablink serve --data-dir {}` once to create it",
            data_dir.display(),
            data_dir.display()
        ));
    }
    match Store::open(data_dir) {
        Ok(store) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            let token = runtime.block_on(store.write(meta::api_token_or_create));
            store.close();
            match token {
                Ok(token) => print(&token),
                Err(e) => fail(e),
            }
        }
        // The allocator is running and holds the store; it exported the token at start.
        Err(StoreError::AlreadyOpen(_)) => match std::fs::read_to_string(data_dir.join(TOKEN_FILE))
        {
            Ok(token) => print(token.trim_end()),
            Err(e) => fail(format!(
                "the allocator is running on {} and its token file cannot be read: {e}",
                data_dir.display()
            )),
        },
        Err(e) => fail(e),
    }
}
