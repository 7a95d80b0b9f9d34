//! `cartpulse serve`: run one replica (all roles, a gateway or a processor)
//! until SIGTERM or Ctrl-C.

use crate::cli::GlobalArgs;
use crate::config::{Overrides, Role, Settings};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080, env: CARTPULSE_LISTEN]
    #[arg(long)]
    pub listen: Option<String>,
    /// all: everything in one process (default); gateway: HTTP ingest and
    /// WebSockets over Redis; processor: the actors over Redis [env: CARTPULSE_ROLE]
    #[arg(long, value_enum)]
    pub role: Option<Role>,
    /// Number of event stream partitions; every replica must agree [default: 16]
    #[arg(long)]
    pub partitions: Option<usize>,
    /// Partitions a processor consumes, a-b inclusive [default: all]
    #[arg(long)]
    pub owns: Option<String>,
}

pub fn serve(global: &GlobalArgs, args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs { listen, role, partitions, owns } = args;
    let overrides = Overrides { role, partitions, owns, ..global.overrides(listen) };
    let settings = Settings::load(global.config.as_deref(), &overrides)?;
    let tracing =
        crate::telemetry::traces::start(&settings.telemetry, settings.role.name(), &crate::replicas::process_name())?;
    let (tracing, tracer) = tracing.unzip();
    crate::telemetry::init(&settings.log.level, settings.log.format == crate::config::LogFormat::Json, tracer);
    let served = actix_web::rt::System::new().block_on(async {
        let app = crate::startup::Application::build(settings).await?;
        app.run_until_stopped().await
    });
    // After the drain, so the last requests' spans go out too.
    if let Some(t) = tracing {
        t.shutdown();
    }
    served
}
