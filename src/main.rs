use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    lablink::cli::run(lablink::cli::Cli::parse())
}

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
