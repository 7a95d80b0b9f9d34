//! The model registry: one row per published purchase-intent model version
//! (`model_versions`: metrics, where its objects are in the model store, their
//! sha256, status and traffic share), and the history of promotions
//! (`model_promotions`: which versions were active with which shares before
//! and after each promote or rollback), which is what `models rollback` undoes.
//! JSON columns are text so SQLite and Postgres store them alike.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ModelVersions {
    Table,
    Version,
    Metrics,
    StoreKey,
    Sha256,
    WeightsSha256,
    Status,
    TrafficShare,
    CreatedAt,
    PublishedAt,
    PromotedAt,
    RetiredAt,
}

#[derive(DeriveIden)]
enum ModelPromotions {
    Table,
    Id,
    Kind,
    Version,
    Before,
    After,
    CreatedAt,
    UndoneAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(ModelVersions::Table)
                .if_not_exists()
                .col(ColumnDef::new(ModelVersions::Version).string_len(128).not_null().primary_key())
                .col(ColumnDef::new(ModelVersions::Metrics).text().not_null())
                .col(ColumnDef::new(ModelVersions::StoreKey).text().not_null())
                .col(ColumnDef::new(ModelVersions::Sha256).string_len(64).not_null())
                .col(ColumnDef::new(ModelVersions::WeightsSha256).string_len(64).not_null())
                .col(ColumnDef::new(ModelVersions::Status).string_len(16).not_null())
                .col(ColumnDef::new(ModelVersions::TrafficShare).double().not_null().default(0.0))
                .col(ColumnDef::new(ModelVersions::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(ModelVersions::PublishedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(ModelVersions::PromotedAt).timestamp_with_time_zone().null())
                .col(ColumnDef::new(ModelVersions::RetiredAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_model_versions_status")
                .table(ModelVersions::Table)
                .col(ModelVersions::Status)
                .if_not_exists()
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ModelPromotions::Table)
                .if_not_exists()
                .col(ColumnDef::new(ModelPromotions::Id).integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(ModelPromotions::Kind).string_len(16).not_null())
                .col(ColumnDef::new(ModelPromotions::Version).string_len(128).not_null())
                .col(ColumnDef::new(ModelPromotions::Before).text().not_null())
                .col(ColumnDef::new(ModelPromotions::After).text().not_null())
                .col(ColumnDef::new(ModelPromotions::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(ModelPromotions::UndoneAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ModelPromotions::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(ModelVersions::Table).to_owned()).await
    }
}
