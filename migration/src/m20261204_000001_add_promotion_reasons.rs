//! Why a registry change was made (`model_promotions.reason`): a JSON object
//! written by `cartpulse retrain` with the decision and the figures that led
//! to it; NULL for changes made by hand and for those made before this
//! column existed. Expand-only: a nullable column, no rewrite.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ModelPromotions {
    Table,
    Reason,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ModelPromotions::Table)
                .add_column(ColumnDef::new(ModelPromotions::Reason).text().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(ModelPromotions::Table).drop_column(ModelPromotions::Reason).to_owned())
            .await
    }
}
