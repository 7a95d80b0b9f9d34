//! `cartpulse`: a thin entry point over the library.

use clap::Parser;
use std::process::ExitCode;

// glibc's allocator spent a fifth of ingest's CPU in malloc/free under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cartpulse::cli::Cli::parse();
    match cartpulse::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
