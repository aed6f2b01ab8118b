//! CORS on the HTTP surface (issue #14 item 1): browser code on other origins calls
//! `GET /`, `/healthz` and the signed Pusher API (`/apps/{id}/...`, which needs a
//! signature anyway). `cors_allowed_origins` lists the origins (default `*`: any); the
//! native API and `/metrics` answer a page on another origin only when that origin is
//! listed by name, since without an API key they trust loopback callers, and a page in a
//! browser on the server's machine is one. Preflights (`OPTIONS` with
//! `Access-Control-Request-Method`) get 204 on every path; unknown routes stay 404, with
//! the headers. No credentials are allowed (nothing here uses cookies).

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The methods a preflight allows.
const METHODS: &str = "GET, POST, DELETE, OPTIONS";
/// How long a browser may cache a preflight's answer, in seconds.
const MAX_AGE: &str = "600";

/// Which origins may read which responses.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    /// `*` was listed: any origin, except on the native API and `/metrics`.
    any: bool,
    /// Origins listed by name (`https://app.example.com`).
    listed: Vec<HeaderValue>,
}

impl Cors {
    /// The policy of `cors_allowed_origins` (empty entries ignored; none: no CORS).
    pub fn new(origins: &[String]) -> Self {
        let origins = origins.iter().map(|o| o.trim()).filter(|o| !o.is_empty());
        let mut cors = Cors::default();
        for origin in origins {
            if origin == "*" {
                cors.any = true;
            } else if let Ok(v) = HeaderValue::from_str(origin.trim_end_matches('/')) {
                cors.listed.push(v);
            }
        }
        cors
    }

    /// The `Access-Control-Allow-Origin` for `origin` asking for `path`, if allowed.
    fn allow(&self, origin: &HeaderValue, path: &str) -> Option<HeaderValue> {
        if self.listed.iter().any(|o| o == origin) {
            return Some(origin.clone());
        }
        let native = path == "/metrics" || path == "/api" || path.starts_with("/api/");
        (self.any && !native).then(|| HeaderValue::from_static("*"))
    }

    fn active(&self) -> bool {
        self.any || !self.listed.is_empty()
    }
}

/// The middleware: answers preflights, adds the headers to every other answer.
pub async fn layer(State(cors): State<std::sync::Arc<Cors>>, req: Request, next: Next) -> Response {
    if !cors.active() {
        return next.run(req).await;
    }
    let allowed = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|origin| cors.allow(origin, req.uri().path()));
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let mut resp = if preflight {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        if allowed.is_some() {
            let h = resp.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static(METHODS),
            );
            if let Some(asked) = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE),
            );
        }
        resp
    } else {
        next.run(req).await
    };
    let h = resp.headers_mut();
    if let Some(value) = allowed {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
    }
    if !cors.listed.is_empty() {
        // The answer depends on the Origin: caches must key on it.
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_origin_but_not_on_the_native_api_unless_listed() {
        let o = |s: &'static str| HeaderValue::from_static(s);
        let cors = Cors::new(&["*".into(), "https://admin.example/".into(), " ".into()]);
        assert_eq!(
            cors.allow(&o("https://x.example"), "/healthz"),
            Some(o("*"))
        );
        assert_eq!(
            cors.allow(&o("https://x.example"), "/apps/1/events"),
            Some(o("*"))
        );
        assert_eq!(cors.allow(&o("https://x.example"), "/api/publish"), None);
        assert_eq!(cors.allow(&o("https://x.example"), "/metrics"), None);
        assert_eq!(cors.allow(&o("https://x.example"), "/apis"), Some(o("*")));
        let admin = o("https://admin.example");
        assert_eq!(cors.allow(&admin, "/api/publish"), Some(admin.clone()));
        assert!(!Cors::new(&["".into()]).active());
    }
}
