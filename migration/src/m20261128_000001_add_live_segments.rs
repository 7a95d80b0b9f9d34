//! Live segment assignment: when a segmentation version was last
//! activated (`segmentations.activated_at`, null if never), and the segment
//! every customer's actor assigned it to in the active version
//! (`customers.segment_version`, `customers.segment`, null until assigned),
//! with an index so live segment sizes are one grouped count.
//!
//! One `ALTER TABLE` per column: SQLite takes only one change per statement.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Segmentations {
    Table,
    ActivatedAt,
}

#[derive(DeriveIden)]
enum Customers {
    Table,
    SegmentVersion,
    Segment,
}

const INDEX: &str = "idx_customers_segment";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(Segmentations::Table)
                .add_column(ColumnDef::new(Segmentations::ActivatedAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Customers::Table)
                .add_column(ColumnDef::new(Customers::SegmentVersion).integer().null())
                .to_owned(),
        )
        .await?;
        m.alter_table(
            Table::alter()
                .table(Customers::Table)
                .add_column(ColumnDef::new(Customers::Segment).integer().null())
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name(INDEX)
                .table(Customers::Table)
                .col(Customers::SegmentVersion)
                .col(Customers::Segment)
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_index(Index::drop().name(INDEX).table(Customers::Table).to_owned()).await?;
        m.alter_table(Table::alter().table(Customers::Table).drop_column(Customers::Segment).to_owned()).await?;
        m.alter_table(Table::alter().table(Customers::Table).drop_column(Customers::SegmentVersion).to_owned()).await?;
        m.alter_table(Table::alter().table(Segmentations::Table).drop_column(Segmentations::ActivatedAt).to_owned())
            .await
    }
}
