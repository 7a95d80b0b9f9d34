//! The HTTP API (actix-web): routes, shared state, request metrics. The
//! contract of these routes is generated from the handlers in [`openapi`].

pub mod customers;
pub mod events;
pub mod health;
pub mod model_quality;
pub mod models;
pub mod openapi;
pub mod predict;
pub mod segments;
pub mod stream;
pub mod system;

use crate::config::IngestSettings;
use crate::keys::KeyVerifier;
use crate::telemetry::Metrics;
use actix_web::dev::Service;
use actix_web::web;
use actors::runtime::Runtime;
use sea_orm::DatabaseConnection;
use std::time::Instant;

/// What every handler can reach.
pub struct AppState {
    pub db: DatabaseConnection,
    pub keys: std::sync::Arc<KeyVerifier>,
    /// Stream credentials: checked at connect, re-checked while connected.
    pub credentials: std::sync::Arc<crate::serving::stream::credentials::Credentials>,
    /// Body limits and trusted proxies.
    pub http: crate::serving::web::client::HttpSettings,
    /// Where ingested events go (the log directly, or the Redis Streams).
    pub pipeline: crate::serving::ingest::Ingest,
    /// The session actors; `None` in a gateway, which reads stored snapshots.
    pub runtime: Option<Runtime>,
    /// This process's role and, with Redis, the link (health, System page).
    pub role: crate::config::Role,
    pub redis: Option<crate::redis_link::RedisLink>,
    /// This replica's record and the others' (System page).
    pub replicas: crate::replicas::Replicas,
    pub metrics: Metrics,
    pub ingest: IngestSettings,
    /// The live stream (`/v1/stream`): hub, aggregator, tokens.
    pub stream: crate::serving::stream::Stream,
    /// The model registry (`/v1/models`; the inference pool loads the active versions from it).
    pub models: crate::models::ModelRegistry,
    /// The inference pool (`POST /v1/predict`; the session actors score through it too).
    pub inference: crate::serving::inference::InferenceHandle,
    /// The default window of `GET /v1/models/{version}/drift` (`inference.drift_window_s`).
    pub drift_window: std::time::Duration,
    /// The active segmentation the actors assign with (`/v1/segments` activation sets it).
    pub segments: actors::hooks::SegmentSlot,
    /// The admin console: settings and the login rate limiter.
    pub console: crate::serving::console::Console,
    /// Set when a stop was asked for: `/readyz` answers 503 while the
    /// replica drains.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// Registers every route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(health::healthz))
        .route("/readyz", web::get().to(health::readyz))
        .route("/metrics", web::get().to(health::metrics))
        .service(
            web::scope("/v1")
                .route("/openapi.json", web::get().to(openapi::openapi_json))
                .route("/events", web::post().to(events::post_events))
                .route("/stream", web::get().to(stream::connect))
                .route("/stream/token", web::post().to(stream::token))
                .route("/customers/{id}", web::get().to(customers::get_customer))
                .route("/sessions/{id}", web::get().to(customers::get_session))
                .route("/predict", web::post().to(predict::predict))
                .route("/models", web::get().to(models::list))
                .route("/models/rollback", web::post().to(models::rollback))
                .route("/models/shadow/clear", web::post().to(models::unshadow))
                .route("/models/{version}/shadow", web::post().to(models::shadow))
                .route("/models/{version}/promote", web::post().to(models::promote))
                .route("/models/{version}/report/{name}", web::get().to(models::report_image))
                .route("/models/compare", web::get().to(model_quality::compare))
                .route("/models/{version}/evaluation", web::get().to(model_quality::evaluation))
                .route("/models/{version}/drift", web::get().to(model_quality::drift))
                .route("/system", web::get().to(system::system))
                .route("/segments", web::get().to(segments::list))
                .route("/segments/{version}/activate", web::post().to(segments::activate)),
        )
        .configure(crate::serving::console::routes)
        .default_service(web::to(not_found));
}

/// The method as a metric label: the standard ones by name, anything else
/// (clients may send any token) as `other`, so labels stay bounded.
fn method_label(m: &actix_web::http::Method) -> &'static str {
    use actix_web::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

async fn not_found() -> Result<actix_web::HttpResponse, crate::serving::web::error::ApiError> {
    Err(crate::serving::web::error::ApiError::NotFound("no such endpoint".into()))
}

/// Wraps the app so every request's latency lands in the HTTP histogram,
/// labelled by route pattern (bounded), never by raw path.
pub fn app(
    state: web::Data<AppState>,
) -> actix_web::App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let metrics = state.metrics.clone();
    let body_limit = state.http.max_body_bytes;
    // HSTS only where cookies are Secure (served behind TLS); otherwise no header.
    let mut headers = actix_web::middleware::DefaultHeaders::new();
    if state.console.secure() {
        headers =
            headers.add((actix_web::http::header::STRICT_TRANSPORT_SECURITY, "max-age=31536000; includeSubDomains"));
    }
    let gate = web::Data::new(crate::serving::web::auth::Gate::new(
        state.keys.clone(),
        std::sync::Arc::new(crate::serving::console::session::CookieSessions::new(state.db.clone(), &state.console)),
    ));
    let console = web::Data::new(crate::serving::console::ConsoleState {
        db: state.db.clone(),
        console: state.console.clone(),
        http: state.http.clone(),
        models: state.models.clone(),
    });
    actix_web::App::new()
        .app_data(state)
        .app_data(gate)
        .app_data(console)
        // Endpoints with bigger bodies read their payload themselves, after
        // authentication, with their own limits (ingest, predict).
        .app_data(web::PayloadConfig::new(body_limit))
        .app_data(web::JsonConfig::default().limit(body_limit))
        .configure(routes)
        .wrap(headers)
        .wrap_fn(move |req, srv| {
            let started = Instant::now();
            let method = method_label(req.method());
            let route = req.match_pattern().unwrap_or_else(|| "unmatched".to_owned());
            let metrics = metrics.clone();
            let traced = crate::telemetry::traces::enabled()
                .then(|| crate::telemetry::traces::http::begin(&req, method, &route));
            let fut = srv.call(req);
            async move {
                let mut res = match &traced {
                    Some(t) => tracing::Instrument::instrument(fut, t.span.clone()).await,
                    None => fut.await,
                };
                let status = match &res {
                    Ok(r) => r.status().as_u16(),
                    Err(e) => e.as_response_error().status_code().as_u16(),
                };
                if let Some(t) = &traced {
                    t.finish(res.as_mut().ok(), status);
                }
                metrics.http(method, &route, status, started.elapsed().as_secs_f64());
                res
            }
        })
}
