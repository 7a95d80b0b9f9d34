//! `cartpulse`: a thin entry point over the library.

use clap::Parser;
use std::process::ExitCode;

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
