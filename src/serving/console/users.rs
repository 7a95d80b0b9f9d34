//! Console accounts (`cartpulse users create|list`, see [`super::cli`]). Passwords are hashed with
//! argon2id (the `argon2` crate's default parameters: 19 MiB, 2 passes), a
//! deliberately slow hash because passwords, unlike API keys, are guessable.
//! The password never comes from a flag (flags end up in shell history and
//! `ps`): it is read from `CARTPULSE_USER_PASSWORD` or standard input.

use anyhow::Context;
use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use chrono::Utc;
use entities::user;
use sea_orm::{ActiveModelTrait, ActiveValue::Set, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter};
use secrecy::{ExposeSecret, SecretString};
use std::str::FromStr;

/// What a console user may do: `viewer` reads everything, `admin` may also change things.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Viewer => "viewer",
        }
    }
}

/// A role name that is neither `admin` nor `viewer`.
#[derive(Debug, thiserror::Error)]
#[error("unknown role {0:?}; expected admin or viewer")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, UnknownRole> {
        match s {
            "admin" => Ok(Role::Admin),
            "viewer" => Ok(Role::Viewer),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// The shortest password `users create` accepts.
/// (ASVS 2.1.1: at least 12; no composition rules.)
pub const MIN_PASSWORD_CHARS: usize = 12;

/// Hashes a password into an argon2id PHC string with a fresh salt.
pub fn hash_password(password: &SecretString) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing the password: {e}"))
}

/// Whether `password` matches the PHC string `hash` (false for a malformed hash).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// A hash of a password nobody knows, verified against when the name is
/// unknown so that an unknown name costs the same time as a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let random = SecretString::from(hex::encode(rand::random::<[u8; 16]>()));
        hash_password(&random).unwrap_or_default()
    })
}

pub(super) fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        !name.is_empty()
            && name.len() <= 100
            && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')),
        "user name must be 1..=100 characters of letters, digits, '.', '_', '-' or '@'"
    );
    Ok(())
}

/// Creates a user; fails if the name is taken.
pub async fn create(
    db: &DatabaseConnection,
    name: &str,
    role: Role,
    password: &SecretString,
) -> anyhow::Result<user::Model> {
    check_name(name)?;
    anyhow::ensure!(
        password.expose_secret().chars().count() >= MIN_PASSWORD_CHARS,
        "the password must have at least {MIN_PASSWORD_CHARS} characters"
    );
    anyhow::ensure!(find(db, name).await?.is_none(), "a user named {name:?} already exists");
    // argon2 takes tens of milliseconds of CPU: off the async threads.
    let pw = password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await.context("hashing task")??;
    let row = user::ActiveModel {
        name: Set(name.to_owned()),
        role: Set(role.as_str().to_owned()),
        password_hash: Set(hash),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
    .insert(db)
    .await
    .context("storing the user")?;
    Ok(row)
}

/// The user with this name, if any.
pub async fn find(db: &DatabaseConnection, name: &str) -> Result<Option<user::Model>, sea_orm::DbErr> {
    user::Entity::find().filter(user::Column::Name.eq(name)).one(db).await
}

/// Every user, oldest first.
pub async fn list(db: &DatabaseConnection) -> anyhow::Result<Vec<user::Model>> {
    use sea_orm::QueryOrder;
    Ok(user::Entity::find().order_by_asc(user::Column::Id).all(db).await?)
}

/// Reads the new user's password: `CARTPULSE_USER_PASSWORD`, else a hidden
/// prompt on a terminal, else the first line of standard input.
pub(super) fn read_password() -> anyhow::Result<SecretString> {
    if let Ok(p) = std::env::var("CARTPULSE_USER_PASSWORD") {
        return Ok(SecretString::from(p));
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let p = rpassword::prompt_password("password: ").context("reading the password")?;
        let again = rpassword::prompt_password("again: ").context("reading the password")?;
        anyhow::ensure!(p == again, "the passwords differ");
        return Ok(SecretString::from(p));
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).context("reading the password from stdin")?;
    Ok(SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned()))
}

/// For `cartpulse demo`: creates `name` as an admin, or gives the existing
/// user of that name this password and the admin role, so a demo rerun over
/// the same database still prints working credentials.
pub async fn ensure_admin(db: &DatabaseConnection, name: &str, password: &SecretString) -> anyhow::Result<()> {
    match find(db, name).await? {
        None => {
            create(db, name, Role::Admin, password).await?;
        }
        Some(u) => {
            let pw = password.clone();
            let hash = tokio::task::spawn_blocking(move || hash_password(&pw)).await.context("hashing task")??;
            let mut am: user::ActiveModel = u.into();
            am.password_hash = Set(hash);
            am.role = Set(Role::Admin.as_str().to_owned());
            am.update(db).await.context("updating the demo user")?;
        }
    }
    Ok(())
}
