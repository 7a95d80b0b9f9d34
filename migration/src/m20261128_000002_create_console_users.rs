//! Admin console accounts: `users` (name, role `admin`|`viewer`, an
//! argon2 PHC password hash) and `console_sessions`, keyed by the SHA-256 of
//! the session id so a copy of the table cannot be replayed as cookies. The
//! CSRF token is stored as is: alone it grants nothing, and `GET /console/me`
//! must be able to hand it back after a page reload.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    Name,
    Role,
    PasswordHash,
    CreatedAt,
}

#[derive(DeriveIden)]
enum ConsoleSessions {
    Table,
    IdHash,
    UserId,
    CsrfToken,
    CreatedAt,
    ExpiresAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Users::Table)
                .if_not_exists()
                .col(ColumnDef::new(Users::Id).integer().not_null().auto_increment().primary_key())
                .col(ColumnDef::new(Users::Name).string_len(100).not_null().unique_key())
                .col(ColumnDef::new(Users::Role).string_len(16).not_null())
                .col(ColumnDef::new(Users::PasswordHash).text().not_null())
                .col(ColumnDef::new(Users::CreatedAt).timestamp_with_time_zone().not_null())
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(ConsoleSessions::Table)
                .if_not_exists()
                .col(ColumnDef::new(ConsoleSessions::IdHash).string_len(64).not_null().primary_key())
                .col(ColumnDef::new(ConsoleSessions::UserId).integer().not_null())
                .col(ColumnDef::new(ConsoleSessions::CsrfToken).string_len(64).not_null())
                .col(ColumnDef::new(ConsoleSessions::CreatedAt).timestamp_with_time_zone().not_null())
                .col(ColumnDef::new(ConsoleSessions::ExpiresAt).timestamp_with_time_zone().not_null())
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_console_sessions_user")
                        .from(ConsoleSessions::Table, ConsoleSessions::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("idx_console_sessions_expires_at")
                .table(ConsoleSessions::Table)
                .col(ConsoleSessions::ExpiresAt)
                .if_not_exists()
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(ConsoleSessions::Table).to_owned()).await?;
        m.drop_table(Table::drop().table(Users::Table).to_owned()).await
    }
}
