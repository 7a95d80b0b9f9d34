//! Two additions to `sessions`, both expand-only (nullable columns, no
//! rewrite; one statement per column because SQLite adds one column per
//! ALTER TABLE):
//! - the scores a session got while open, at 1, 3, 5 and 10 page views
//!   (`score_p1` … `score_p10`), for the live evaluation of served models by
//!   session age;
//! - when its row was first written (`first_written_at`, never updated):
//!   `cartpulse retrain` judges a candidate only on sessions first written
//!   after it was trained, which no training set can have held. Rows written
//!   before this column existed have NULL and count as old.

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
    FirstWrittenAt,
}

const SCORES: [Sessions; 4] = [Sessions::ScoreP1, Sessions::ScoreP3, Sessions::ScoreP5, Sessions::ScoreP10];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in SCORES {
            m.alter_table(
                Table::alter().table(Sessions::Table).add_column(ColumnDef::new(c).double().null()).to_owned(),
            )
            .await?;
        }
        m.alter_table(
            Table::alter()
                .table(Sessions::Table)
                .add_column(ColumnDef::new(Sessions::FirstWrittenAt).timestamp_with_time_zone().null())
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        for c in SCORES.into_iter().chain([Sessions::FirstWrittenAt]) {
            m.alter_table(Table::alter().table(Sessions::Table).drop_column(c).to_owned()).await?;
        }
        Ok(())
    }
}
