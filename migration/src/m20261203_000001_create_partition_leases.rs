//! `partition_leases`: one row per event-stream partition that a processor
//! has ever claimed by lease (`redis.owns` unset). `token` is the fencing
//! token, raised by every takeover; a commit of the partition's events and a
//! move of its `checkpoint` succeed only with the current token, so an owner
//! that lost its lease (paused, partitioned away) can no longer write.
//! `checkpoint` is the log position up to which the partition's customers
//! are in durable snapshots; the next owner replays the log after it.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum PartitionLeases {
    Table,
    Partition,
    Token,
    Owner,
    Checkpoint,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(PartitionLeases::Table)
                .if_not_exists()
                .col(ColumnDef::new(PartitionLeases::Partition).integer().not_null().primary_key())
                .col(ColumnDef::new(PartitionLeases::Token).big_integer().not_null())
                .col(ColumnDef::new(PartitionLeases::Owner).string().not_null())
                .col(ColumnDef::new(PartitionLeases::Checkpoint).big_integer().not_null())
                .col(ColumnDef::new(PartitionLeases::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(PartitionLeases::Table).to_owned()).await
    }
}
