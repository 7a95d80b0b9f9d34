//! `GET /v1/system` (read scope): what the console's System page shows —
//! the replicas and their roles, database / Redis / model store health, the
//! stream clients, the ingest backlog per partition and the dead-letter
//! count. Failures are reported as states, never as internals.

use super::AppState;
use crate::replicas::ReplicaInfo;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::{ApiError, ErrorBody};
use actix_web::{web, HttpResponse};
use serde::Serialize;

/// What the System page shows.
#[derive(Serialize, utoipa::ToSchema)]
pub struct SystemReply {
    /// The replica that answered.
    this: ReplicaInfo,
    /// Every live replica (this one alone when the list cannot be read).
    replicas: Vec<ReplicaInfo>,
    /// `ok` or `down`.
    database: &'static str,
    redis: Dependency,
    store: Dependency,
    /// WebSocket clients connected to this replica.
    stream_clients: usize,
    ingest: IngestState,
}

/// A dependency's state, and where it is (never credentials).
#[derive(Serialize, utoipa::ToSchema)]
pub struct Dependency {
    /// `ok`, `down`, `not used` (Redis), or the model store's own word (e.g. `empty (created by the first publish)`).
    status: String,
    /// The Redis server (`host:port`).
    #[serde(skip_serializing_if = "Option::is_none")]
    server: Option<String>,
    /// The model store: a directory or `s3://bucket/prefix`.
    #[serde(skip_serializing_if = "Option::is_none")]
    location: Option<String>,
}

/// Where ingested events wait.
#[derive(Serialize, utoipa::ToSchema)]
pub struct IngestState {
    /// `direct` (one process) or `redis streams`.
    mode: &'static str,
    /// Events acknowledged and not yet applied (`null` on a gateway without actors in direct mode).
    backlog_events: Option<u64>,
    /// With Redis Streams: the backlog per partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    backlog_per_partition: Option<Vec<u64>>,
    /// With Redis Streams: entries moved to the dead-letter stream.
    #[serde(skip_serializing_if = "Option::is_none")]
    dead_letters: Option<u64>,
}

#[utoipa::path(
    get,
    path = "/v1/system",
    tag = "system",
    operation_id = "system",
    summary = "Replicas, dependencies, stream clients and ingest backlog",
    responses(
        (status = 200, description = "Replicas, dependencies, stream clients, ingest backlog. Failures are states, not errors.", body = SystemReply),
        (status = 401, description = "Missing or unknown key / console session.", body = ErrorBody),
        (status = 403, description = "The key lacks the read scope.", body = ErrorBody),
        (status = 503, description = "The key could not be checked; retry.", body = ErrorBody, headers(("Retry-After" = u32))),
    ),
    security(("api_key" = ["read"]), ("console_session" = ["read"])),
)]
pub async fn system(_auth: Auth<ReadScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = match state.db.ping().await {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "system: database unreachable");
            "down"
        }
    };
    let redis = match &state.redis {
        None => Dependency { status: "not used".into(), server: None, location: None },
        Some(link) => {
            let status = match link.ping().await {
                Ok(()) => "ok",
                Err(e) => {
                    tracing::warn!(error = %e, "system: Redis unreachable");
                    "down"
                }
            };
            Dependency { status: status.into(), server: Some(link.server.to_string()), location: None }
        }
    };
    let location = Some(state.models.store().describe());
    let store = match state.models.store().check().await {
        Ok(s) => Dependency { status: s.into(), server: None, location },
        Err(e) => {
            tracing::warn!(error = %e, "system: model store unreachable");
            Dependency { status: "down".into(), server: None, location }
        }
    };
    let replicas = match state.replicas.list().await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "system: listing replicas failed");
            vec![state.replicas.me()]
        }
    };
    let ingest = match &state.pipeline {
        crate::serving::ingest::Ingest::Direct(_) => IngestState {
            mode: "direct",
            backlog_events: state.runtime.as_ref().map(|r| r.inflight() as u64),
            backlog_per_partition: None,
            dead_letters: None,
        },
        crate::serving::ingest::Ingest::Queued(q) => {
            let (per_partition, dead_letters) = q.detail();
            IngestState {
                mode: "redis streams",
                backlog_events: Some(q.backlog()),
                backlog_per_partition: Some(per_partition),
                dead_letters: Some(dead_letters),
            }
        }
    };
    Ok(HttpResponse::Ok().json(SystemReply {
        this: state.replicas.me(),
        replicas,
        database,
        redis,
        store,
        stream_clients: state.stream.clients(),
        ingest,
    }))
}
