//! The core tables: API keys, the event log, customer snapshots, sessions,
//! and the runtime checkpoint (log position up to which snapshots are durable).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ApiKeys {
    Table,
    Id,
    Name,
    Scope,
    SecretHash,
    CreatedAt,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Seq,
    EventId,
    CustomerId,
    SessionId,
    EventType,
    EventTime,
    ReceivedAt,
    Body,
}

#[derive(DeriveIden)]
enum Checkpoints {
    Table,
    Name,
    Seq,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    CustomerId,
    LastSeq,
    State,
    Profile,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    SessionId,
    CustomerId,
    Status,
    StartedAt,
    EndedAt,
    NEvents,
    Purchased,
    Features,
    CloseReason,
    Score,
    ModelVersion,
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ApiKeys::Table)
                .if_not_exists()
                .col(ColumnDef::new(ApiKeys::Id).string().not_null().primary_key())
                .col(ColumnDef::new(ApiKeys::Name).string().not_null())
                .col(ColumnDef::new(ApiKeys::Scope).string().not_null())
                .col(ColumnDef::new(ApiKeys::SecretHash).string().not_null())
                .col(ColumnDef::new(ApiKeys::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(ApiKeys::RevokedAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Events::Table)
                .if_not_exists()
                .col(ColumnDef::new(Events::Seq).big_integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(Events::EventId).string().not_null().unique_key())
                .col(ColumnDef::new(Events::CustomerId).string().not_null())
                .col(ColumnDef::new(Events::SessionId).string().null())
                .col(ColumnDef::new(Events::EventType).string().not_null())
                .col(ColumnDef::new(Events::EventTime).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(Events::ReceivedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(Events::Body).text().not_null())
                .to_owned(),
        )
        .await?;
        // No index by customer on purpose: random-key index inserts cost half
        // of ingest's write time; recovery replays the log by position instead.

        m.create_table(
            Table::create()
                .table(Customers::Table)
                .if_not_exists()
                .col(ColumnDef::new(Customers::CustomerId).string().not_null().primary_key())
                .col(ColumnDef::new(Customers::LastSeq).big_integer().not_null())
                .col(ColumnDef::new(Customers::State).text().not_null())
                .col(ColumnDef::new(Customers::Profile).text().not_null())
                .col(ColumnDef::new(Customers::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;

        m.create_table(
            Table::create()
                .table(Sessions::Table)
                .if_not_exists()
                .col(ColumnDef::new(Sessions::SessionId).string().not_null().primary_key())
                .col(ColumnDef::new(Sessions::CustomerId).string().not_null())
                .col(ColumnDef::new(Sessions::Status).string().not_null())
                .col(ColumnDef::new(Sessions::StartedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(Sessions::EndedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(Sessions::NEvents).integer().not_null().default(0))
                .col(ColumnDef::new(Sessions::Purchased).boolean().not_null().default(false))
                .col(ColumnDef::new(Sessions::Features).text().null())
                .col(ColumnDef::new(Sessions::CloseReason).string().null())
                .col(ColumnDef::new(Sessions::Score).double().null())
                .col(ColumnDef::new(Sessions::ModelVersion).string().null())
                .col(ColumnDef::new(Sessions::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(Checkpoints::Table)
                .if_not_exists()
                .col(ColumnDef::new(Checkpoints::Name).string().not_null().primary_key())
                .col(ColumnDef::new(Checkpoints::Seq).big_integer().not_null())
                .col(ColumnDef::new(Checkpoints::UpdatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for t in [
            Checkpoints::Table.into_iden(),
            Sessions::Table.into_iden(),
            Customers::Table.into_iden(),
            Events::Table.into_iden(),
            ApiKeys::Table.into_iden(),
        ] {
            m.drop_table(Table::drop().table(t).if_exists().to_owned()).await?;
        }
        Ok(())
    }
}
