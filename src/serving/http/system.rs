//! `GET /v1/system` (read scope): what the console's System page shows —
//! the replicas and their roles, database / Redis / model store health, the
//! stream clients, the ingest backlog per partition and the dead-letter
//! count. Failures are reported as states, never as internals.

use super::AppState;
use crate::serving::web::auth::{Auth, ReadScope};
use crate::serving::web::error::ApiError;
use actix_web::{web, HttpResponse};
use serde_json::json;

pub async fn system(_auth: Auth<ReadScope>, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let database = match state.db.ping().await {
        Ok(()) => "ok",
        Err(e) => {
            tracing::warn!(error = %e, "system: database unreachable");
            "down"
        }
    };
    let redis = match &state.redis {
        None => json!({ "status": "not used" }),
        Some(link) => match link.ping().await {
            Ok(()) => json!({ "status": "ok", "server": &*link.server }),
            Err(e) => {
                tracing::warn!(error = %e, "system: Redis unreachable");
                json!({ "status": "down", "server": &*link.server })
            }
        },
    };
    let store = match state.models.store().check().await {
        Ok(s) => json!({ "status": s, "location": state.models.store().describe() }),
        Err(e) => {
            tracing::warn!(error = %e, "system: model store unreachable");
            json!({ "status": "down", "location": state.models.store().describe() })
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
        crate::serving::ingest::Ingest::Direct(_) => {
            json!({ "mode": "direct", "backlog_events": state.runtime.as_ref().map(|r| r.inflight()) })
        }
        crate::serving::ingest::Ingest::Queued(q) => {
            let (per_partition, dead_letters) = q.detail();
            json!({
                "mode": "redis streams",
                "backlog_events": q.backlog(),
                "backlog_per_partition": per_partition,
                "dead_letters": dead_letters,
            })
        }
    };
    Ok(HttpResponse::Ok().json(json!({
        "this": state.replicas.me(),
        "replicas": replicas,
        "database": database,
        "redis": redis,
        "store": store,
        "stream_clients": state.stream.clients(),
        "ingest": ingest,
    })))
}
