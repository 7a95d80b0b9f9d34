//! Database migrations of cartpulse. Applied on `serve` start and by
//! `cartpulse migrate`; also runnable as the `migration` CLI.

pub use sea_orm_migration::prelude::*;

mod m20261127_000001_create_core_tables;
mod m20261127_000002_create_segmentations;
mod m20261127_000003_create_model_versions;
mod m20261128_000001_add_live_segments;
mod m20261128_000002_create_console_users;
mod m20261129_000001_add_model_reports;
mod m20261203_000001_create_partition_leases;
mod m20261204_000001_add_promotion_reasons;
mod m20261204_000002_add_session_age_scores_and_first_write;
mod m20261205_000001_partition_events;
mod m20261206_000001_event_ids_c_collation;

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261127_000001_create_core_tables::Migration),
            Box::new(m20261127_000002_create_segmentations::Migration),
            Box::new(m20261127_000003_create_model_versions::Migration),
            Box::new(m20261128_000001_add_live_segments::Migration),
            Box::new(m20261128_000002_create_console_users::Migration),
            Box::new(m20261129_000001_add_model_reports::Migration),
            Box::new(m20261203_000001_create_partition_leases::Migration),
            Box::new(m20261204_000001_add_promotion_reasons::Migration),
            Box::new(m20261204_000002_add_session_age_scores_and_first_write::Migration),
            Box::new(m20261205_000001_partition_events::Migration),
            Box::new(m20261206_000001_event_ids_c_collation::Migration),
        ]
    }
}
