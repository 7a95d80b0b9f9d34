//! The built console (`console.static_dir`, default `static/`) served at `/`:
//! `index.html` and the hashed files under `assets/`. Every answer carries a
//! strict Content-Security-Policy (no inline script or style, nothing from
//! other origins) and the usual hardening headers. File names are checked
//! against a strict pattern, so no request can leave the directory.

use super::ConsoleState;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{web, HttpResponse, HttpResponseBuilder};
use std::path::PathBuf;

/// `connect-src 'self'` covers same-origin `ws:`/`wss:` in CSP Level 3 browsers.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
font-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; form-action 'self'; \
frame-ancestors 'none'; object-src 'none'";

fn secure(mut b: HttpResponseBuilder) -> HttpResponseBuilder {
    b.insert_header((header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP)))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        .insert_header(("Cross-Origin-Resource-Policy", "same-origin"))
        .insert_header(("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()"));
    b
}

fn content_type(name: &str) -> Option<&'static str> {
    Some(match name.rsplit_once('.')?.1 {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "json" => "application/json",
        "map" => "application/json",
        _ => return None,
    })
}

fn safe_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 200
        && !name.starts_with('.')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

async fn serve(state: &ConsoleState, rel: PathBuf, cache: &'static str) -> HttpResponse {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
    let path = PathBuf::from(&state.console.settings.static_dir).join(&rel);
    match (content_type(&name), tokio::fs::read(&path).await) {
        (Some(ct), Ok(bytes)) => secure(HttpResponse::Ok())
            .insert_header((header::CONTENT_TYPE, ct))
            .insert_header((header::CACHE_CONTROL, cache))
            .body(bytes),
        _ if name == "index.html" => secure(HttpResponse::NotFound())
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body(format!(
                "The admin console is not built: {} has no index.html. Run console/build.sh (needs npm) \
                 or set console.static_dir.\n",
                state.console.settings.static_dir
            )),
        _ => secure(HttpResponse::NotFound())
            .insert_header((header::CONTENT_TYPE, "text/plain; charset=utf-8"))
            .body("not found\n"),
    }
}

/// `GET /`: the single page (routes live in the URL fragment, so this is the only HTML).
pub async fn index(state: web::Data<ConsoleState>) -> HttpResponse {
    // Revalidated every time, so a rebuilt console is picked up at once.
    serve(&state, PathBuf::from("index.html"), "no-cache").await
}

/// `GET /assets/{file}`: content-hashed by the build, so cached for a year.
pub async fn asset(state: web::Data<ConsoleState>, file: web::Path<String>) -> HttpResponse {
    let file = file.into_inner();
    if !safe_name(&file) {
        return secure(HttpResponse::NotFound()).body("not found\n");
    }
    serve(&state, PathBuf::from("assets").join(file), "public, max-age=31536000, immutable").await
}

/// `GET /favicon.svg`.
pub async fn favicon(state: web::Data<ConsoleState>) -> HttpResponse {
    serve(&state, PathBuf::from("favicon.svg"), "public, max-age=86400").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_escape_the_directory() {
        assert!(safe_name("index-abc123.js"));
        assert!(!safe_name(".."));
        assert!(!safe_name("../etc/passwd"));
        assert!(!safe_name("a/b.js"));
        assert!(!safe_name(".env"));
        assert!(!safe_name("a\\b.js"));
    }

    #[test]
    fn csp_has_no_unsafe_sources() {
        assert!(!CSP.contains("unsafe"));
        assert!(CSP.contains("script-src 'self'"));
    }
}
