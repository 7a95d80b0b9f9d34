//! `cartpulse users create | list`: console accounts from the command line,
//! over the database of the global flags.

use super::users::{check_name, create, list, read_password, Role};
use crate::cli::GlobalArgs;

/// `cartpulse users …`.
#[derive(clap::Subcommand, Debug)]
pub enum UsersCommand {
    /// Create a console user; the password is read from CARTPULSE_USER_PASSWORD or stdin.
    Create {
        #[arg(long)]
        name: String,
        /// admin or viewer.
        #[arg(long)]
        role: Role,
    },
    /// List console users (names and roles; never password hashes).
    List,
}

/// Runs `cartpulse users …`.
pub fn run(global: &GlobalArgs, command: UsersCommand) -> anyhow::Result<()> {
    let settings = global.settings(None)?;
    crate::telemetry::init_logging("warn", false);
    crate::cli::tokio_rt()?.block_on(run_async(&settings, command))
}

async fn run_async(settings: &crate::config::Settings, command: UsersCommand) -> anyhow::Result<()> {
    let db = crate::db::connect(settings).await?;
    crate::db::migrate(&db).await?;
    match command {
        UsersCommand::Create { name, role } => {
            check_name(&name)?;
            let password = read_password()?;
            let u = create(&db, &name, role, &password).await?;
            eprintln!("created {} user {:?} (id {})", u.role, u.name, u.id);
        }
        UsersCommand::List => {
            for u in list(&db).await? {
                println!("{}\t{}\t{}\t{}", u.id, u.role, u.created_at.to_rfc3339(), u.name);
            }
        }
    }
    Ok(())
}
