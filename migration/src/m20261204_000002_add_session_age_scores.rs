//! The scores a session got while open, at 1, 3, 5 and 10 page views
//! (`sessions.score_p1` … `score_p10`), for the live evaluation of served
//! models by session age. Expand-only: nullable columns, no rewrite; one
//! statement per column because SQLite adds one column per ALTER TABLE.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden, Clone, Copy)]
enum Sessions {
    Table,
    ScoreP1,
    ScoreP3,
    ScoreP5,
    ScoreP10,
}

const COLUMNS: [Sessions; 4] = [Sessions::ScoreP1, Sessions::ScoreP3, Sessions::ScoreP5, Sessions::ScoreP10];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in COLUMNS {
            m.alter_table(
                Table::alter().table(Sessions::Table).add_column(ColumnDef::new(c).double().null()).to_owned(),
            )
            .await?;
        }
        Ok(())
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in COLUMNS {
            m.alter_table(Table::alter().table(Sessions::Table).drop_column(c).to_owned()).await?;
        }
        Ok(())
    }
}
