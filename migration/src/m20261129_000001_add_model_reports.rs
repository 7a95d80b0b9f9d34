//! Report images of a published model version (`model_versions.report`): a
//! JSON array of `{"name", "sha256", "bytes"}`, one per PNG of `cartpulse
//! train --report DIR` stored with the version (`[]` for versions published
//! without one, and for those published before this column existed).

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum ModelVersions {
    Table,
    Report,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(
            Table::alter()
                .table(ModelVersions::Table)
                .add_column(ColumnDef::new(ModelVersions::Report).text().not_null().default("[]"))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.alter_table(Table::alter().table(ModelVersions::Table).drop_column(ModelVersions::Report).to_owned()).await
    }
}
