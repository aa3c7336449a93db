//! `lablink openapi [--markdown]`: the OpenAPI document the allocator serves, or the API
//! reference rendered from it (`docs/reference/api.md`).

use std::io::Write;

use clap::Args;

use crate::exit::CliError;
use crate::server::api::openapi::{DOCUMENT, markdown};

#[derive(Args, Debug)]
pub struct OpenapiArgs {
    /// Print the Markdown API reference instead of the JSON document.
    #[arg(long)]
    pub markdown: bool,
}

pub fn run(args: OpenapiArgs) -> Result<(), CliError> {
    let text = if args.markdown {
        markdown::render_text(DOCUMENT)
            .map_err(|e| CliError::failed(format!("the built-in OpenAPI document: {e}")))?
    } else {
        DOCUMENT.to_owned()
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| CliError::failed(format!("writing to stdout: {e}")))
}
