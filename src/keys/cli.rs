//! `cartpulse keys create | list | revoke`: API keys from the command line,
//! over the database of the global flags.

use super::Scope;
use crate::cli::GlobalArgs;
use secrecy::ExposeSecret;

#[derive(clap::Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key and print it (the only time it is shown).
    Create {
        #[arg(long)]
        name: String,
        /// ingest, read or admin.
        #[arg(long)]
        scope: Scope,
    },
    /// List keys (ids, names, scopes; never secrets).
    List,
    /// Revoke a key by id.
    Revoke { id: String },
}

pub fn run(global: &GlobalArgs, command: KeysCommand) -> anyhow::Result<()> {
    let settings = global.settings(None)?;
    crate::telemetry::init_logging("warn", false);
    crate::cli::tokio_rt()?.block_on(async {
        let db = crate::db::connect(&settings).await?;
        crate::db::migrate(&db).await?;
        match command {
            KeysCommand::Create { name, scope } => {
                let k = super::create(&db, &name, scope).await?;
                eprintln!(
                    "created {} key {:?} (id {}); store it now, it is not shown again:",
                    scope.as_str(),
                    name,
                    k.id
                );
                println!("{}", k.key.expose_secret());
            }
            KeysCommand::List => {
                for k in super::list(&db).await? {
                    let state = if k.revoked_at.is_some() { "revoked" } else { "active" };
                    println!("{}\t{}\t{}\t{}\t{}", k.id, k.scope, state, k.created_at.to_rfc3339(), k.name);
                }
            }
            KeysCommand::Revoke { id } => {
                anyhow::ensure!(super::revoke(&db, &id).await?, "no key with id {id}");
                eprintln!("revoked {id}");
            }
        }
        Ok(())
    })
}
