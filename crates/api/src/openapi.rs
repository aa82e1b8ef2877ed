//! The OpenAPI 3.1 document of the API, generated from the handlers'
//! annotations and the request/response types (utoipa), served at
//! `/api/v1/openapi.json` and committed as `docs/openapi.json` (a test
//! fails when the two differ). `/docs` renders it with a vendored Redoc.

use std::collections::BTreeMap;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::openapi::response::{ResponseBuilder, ResponsesBuilder};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, RefOr};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};

/// Every error: a machine-readable `code` and a human `detail`.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = HttpError)]
pub(crate) struct ErrorOut {
    /// `not_found`, `validation`, `conflict`, `unauthorized`, …
    pub code: String,
    pub detail: String,
}

/// A 422 answer, in Svix's shape (its SDKs read `detail` as a list):
/// each invalid input, where it is and what is wrong with it.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = HTTPValidationError)]
pub(crate) struct ValidationErrorOut {
    /// `validation_error`.
    pub code: String,
    pub detail: Vec<ValidationItem>,
}

/// One invalid input of a 422 answer.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = ValidationError)]
pub(crate) struct ValidationItem {
    /// The input's name (a field of the body, a query parameter, …).
    pub loc: Vec<String>,
    pub msg: String,
    /// `value_error`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// The error answers any route may give: bad or unparsable input, missing
/// or wrong token, another tenant's route, a uniqueness conflict, a body
/// over the limit, rate limits and overload.
#[derive(Debug)]
pub(crate) struct Errors;

impl utoipa::IntoResponses for Errors {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::response::Response>> {
        let answer = |description: &str, schema: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                            schema,
                        ))))
                        .build(),
                )
                .build()
        };
        let error = |description: &str| answer(description, "HttpError");
        ResponsesBuilder::new()
            .response("400", error("Malformed JSON or parameters"))
            .response("401", error("Missing, unknown, expired or revoked token"))
            .response("403", error("The token may not use this route"))
            .response("404", error("Not found (or another tenant's)"))
            .response(
                "409",
                error("Conflict: a uid, eventId or idempotency key in use"),
            )
            .response("413", error("Request body over the limit"))
            .response("422", answer("Invalid field", "HTTPValidationError"))
            .response(
                "429",
                error("Rate limit: retry after `Retry-After` seconds"),
            )
            .response("503", error("Overloaded or database unavailable"))
            .build()
            .into()
    }
}

/// Path parameters, documented once for every route that takes them.
macro_rules! path_params {
    ($($name:ident { $($field:ident: $text:literal),+ })+) => {$(
        #[derive(Debug, Deserialize, IntoParams)]
        #[into_params(parameter_in = Path)]
        #[allow(dead_code)]
        pub(crate) struct $name {
            $(#[doc = $text] $field: String,)+
        }
    )+};
}

path_params! {
    AppPath { app: "App id (`app_…`) or uid" }
    EndpointPath {
        app: "App id (`app_…`) or uid",
        endpoint: "Endpoint id (`ep_…`) or uid"
    }
    MessagePath {
        app: "App id (`app_…`) or uid",
        msg: "Message id (`msg_…`) or eventId"
    }
    AttemptPath {
        app: "App id (`app_…`) or uid",
        msg: "Message id (`msg_…`) or eventId",
        attempt: "Attempt id (`atmpt_…`)"
    }
    ResendPath {
        app: "App id (`app_…`) or uid",
        msg: "Message id (`msg_…`) or eventId",
        endpoint: "Endpoint id (`ep_…`) or uid"
    }
    TokenPath {
        app: "App id (`app_…`) or uid",
        token: "Token id (`tok_…`)"
    }
    EventTypePath { name: "Event type name" }
    TaskPath { task: "Task id (`qtask_…`)" }
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token, or an app-scoped API or portal token (`htk_…`)",
                    ))
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald API",
        description = "Self-hosted webhook delivery. Svix-compatible routes under `/api/v1`; paths work with or without the trailing slash.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorOut, ValidationErrorOut, ValidationItem)),
)]
struct ApiDoc;

/// The document of every route the router serves (they are registered
/// together, so the two cannot differ).
pub(crate) fn spec() -> &'static utoipa::openapi::OpenApi {
    static SPEC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    SPEC.get_or_init(|| {
        utoipa_axum::router::OpenApiRouter::<crate::AppState>::with_openapi(ApiDoc::openapi())
            .merge(crate::open_routes())
            .merge(crate::api_routes())
            .into_openapi()
    })
}

/// The document, pretty-printed JSON with a trailing newline.
pub fn document() -> String {
    let mut text = spec().to_pretty_json().expect("the document serialises");
    text.push('\n');
    text
}

pub(crate) async fn serve_document() -> Response {
    static DOCUMENT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let body = DOCUMENT.get_or_init(document).clone();
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Redoc 2.5.4 (MIT, Rebilly), vendored: the docs page loads nothing from
/// elsewhere. Licence in `assets/redoc/`.
const REDOC: &str = include_str!("../assets/redoc/redoc.standalone.js");

const DOCS_PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald API</title>
</head>
<body>
<redoc spec-url="/api/v1/openapi.json"></redoc>
<script src="/docs/redoc.standalone.js"></script>
</body>
</html>
"#;

/// Redoc styles with inline `<style>` and searches in a `blob:` worker.
const DOCS_POLICY: &str =
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
    img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src blob:; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `GET /docs`: the API reference (no token needed; it documents, it
/// reveals nothing).
pub(crate) async fn docs_page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DOCS_POLICY),
        ],
        DOCS_PAGE,
    )
        .into_response()
}

/// The only address the bundle loads by itself is its sidebar logo's, on
/// Redocly's CDN: it becomes an empty inline image.
fn redoc_offline() -> &'static str {
    static SCRIPT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| {
        REDOC.replace(
            "https://cdn.redoc.ly/redoc/logo-mini.svg",
            "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg'/%3E",
        )
    })
}

pub(crate) async fn redoc_script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        redoc_offline(),
    )
        .into_response()
}
