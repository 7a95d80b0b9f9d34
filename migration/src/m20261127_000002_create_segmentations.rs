//! Segmentation versions written by `cartpulse segment`: one row per run, with
//! everything needed to assign a customer to a segment later (feature names,
//! scaler, centroids) and to describe the run (k, inertia, silhouette, sizes,
//! names). The JSON columns are text so SQLite and Postgres store them alike.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Segmentations {
    Table,
    Version,
    CreatedAt,
    K,
    Inertia,
    Silhouette,
    NCustomers,
    FeatureNames,
    Scaler,
    Centroids,
    Sizes,
    Names,
    Active,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Segmentations::Table)
                .if_not_exists()
                .col(ColumnDef::new(Segmentations::Version).integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(Segmentations::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(Segmentations::K).integer().not_null())
                .col(ColumnDef::new(Segmentations::Inertia).double().not_null())
                .col(ColumnDef::new(Segmentations::Silhouette).double().null())
                .col(ColumnDef::new(Segmentations::NCustomers).integer().not_null())
                .col(ColumnDef::new(Segmentations::FeatureNames).text().not_null())
                .col(ColumnDef::new(Segmentations::Scaler).text().not_null())
                .col(ColumnDef::new(Segmentations::Centroids).text().not_null())
                .col(ColumnDef::new(Segmentations::Sizes).text().not_null())
                .col(ColumnDef::new(Segmentations::Names).text().not_null())
                .col(ColumnDef::new(Segmentations::Active).boolean().not_null().default(false))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(Segmentations::Table).to_owned()).await
    }
}
