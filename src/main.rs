//! `cartpulse`: a thin entry point over the library.

use clap::Parser;
use std::process::ExitCode;

// glibc's allocator spent a fifth of ingest's CPU in malloc/free under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cartpulse::cli::Cli::parse();
    if matches!(cli.command, cartpulse::cli::Command::Serve(_)) {
        no_transparent_huge_pages();
    }
    match cartpulse::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// mimalloc asks for transparent huge pages on its arenas, and the kernel then
/// backs (and charges) whole 2 MiB pages where only parts are touched: with
/// 15,000 WebSocket clients that was 25 KiB of RSS per connection instead of
/// 16.6 (`cartpulse bench ws`). `serve` opts out unless
/// `CARTPULSE_HUGE_PAGES=1`; offline jobs (train, segment, …) keep them.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("CARTPULSE_HUGE_PAGES").is_none_or(|v| v != "1") {
        // SAFETY: PR_SET_THP_DISABLE only sets a flag of this process.
        unsafe {
            libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        }
    }
}
