//! The test inspector: a receiving address per app, `/inspect/{token}`, that
//! keeps the last 100 requests it gets, so that an endpoint can be tried
//! before its receiver exists. Managed under `/api/v1/app/{app}/inspector`
//! (and in the portal); each kept request says whether its Standard
//! Webhooks signature verifies with the secret of an endpoint of the app
//! that points at the inspector.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::any;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};

use herald_domain::AppId;
use herald_store::{
    AuditEntry, InspectedRequest, Inspector, PageRequest, StoreError, INSPECTED_KEPT,
};

use crate::apps::resolve;
use crate::error::{ApiError, ApiResult};
use crate::extract::{timestamp, ListResponse, Path, Query};
use crate::openapi::{AppPath, Errors};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Body bytes kept per request; the rest is cut (and flagged).
pub(crate) const BODY_KEPT: usize = 64 * 1024;

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default()
        .routes(routes!(read, open, close))
        .routes(routes!(requests))
}

/// The public receiving address (outside `/api/v1`: no token; the token in
/// the path is the capability). Bodies up to the API's limit are taken.
pub(crate) fn receiving_routes(body_limit: usize) -> Router<AppState> {
    Router::new()
        .route("/inspect/{token}", any(receive))
        .route("/inspect/{token}/{*rest}", any(receive))
        .layer(DefaultBodyLimit::max(body_limit))
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InspectorOut {
    /// Point an endpoint here: every request to it (any method, any path
    /// below it) is kept.
    url: String,
    created_at: String,
}

impl InspectorOut {
    pub(crate) fn url(&self) -> &str {
        &self.url
    }
}

impl InspectedRequestOut {
    pub(crate) fn received_at(&self) -> &str {
        &self.received_at
    }
    pub(crate) fn method(&self) -> &str {
        &self.method
    }
    pub(crate) fn path(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
    pub(crate) fn headers(&self) -> &BTreeMap<String, String> {
        &self.headers
    }
    pub(crate) fn body_truncated(&self) -> bool {
        self.body_truncated
    }
    /// JSON bodies indented; anything else as it came.
    pub(crate) fn pretty_body(&self) -> String {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| self.body.clone())
    }
    pub(crate) fn signature_text(&self) -> String {
        match (self.signature.status, &self.signature.endpoint_id) {
            ("valid", Some(endpoint)) => format!("valid ({endpoint})"),
            (status, _) => status.to_owned(),
        }
    }
}

pub(crate) fn inspector_out(state: &AppState, inspector: &Inspector) -> InspectorOut {
    InspectorOut {
        url: format!("{}/inspect/{}", state.config.public_url, inspector.token),
        created_at: timestamp(inspector.created_at),
    }
}

/// Whether the request's signature verifies.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SignatureCheck {
    /// `valid` (with `endpointId`), `invalid`, `unsigned` (no signing
    /// headers), or `unverified` (no endpoint of the app points here).
    status: &'static str,
    endpoint_id: Option<String>,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct InspectedRequestOut {
    id: String,
    received_at: String,
    method: String,
    /// The path below the inspector's address (`/` for the address itself).
    path: String,
    query: Option<String>,
    /// Names lower-case; repeated headers joined with `, `.
    headers: BTreeMap<String, String>,
    /// The body as text, or base64 when it is not UTF-8 (`bodyEncoding`).
    body: String,
    /// `utf8` or `base64`.
    body_encoding: &'static str,
    /// Longer than the 64 KiB kept.
    body_truncated: bool,
    signature: SignatureCheck,
}

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RequestListParams {
    /// At most this many, newest first (1 to 100, default 100).
    limit: Option<usize>,
}

/// The app's inspector.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/inspector",
    tag = "Inspector",
    operation_id = "v1.inspector.get",
    params(AppPath),
    responses((status = 200, body = InspectorOut), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn read(
    State(state): State<AppState>,
    Path(app): Path<String>,
) -> ApiResult<Json<InspectorOut>> {
    let inspector = existing(&state, &app).await?;
    Ok(Json(inspector_out(&state, &inspector)))
}

/// The inspector of the app a path segment names (404 without one).
async fn existing(state: &AppState, app: &str) -> ApiResult<Inspector> {
    let app = resolve(state, app).await?;
    state.store.inspector(app).await?.ok_or(ApiError::NotFound)
}

/// Create the app's inspector (or get the one it has).
#[utoipa::path(
    post,
    path = "/api/v1/app/{app}/inspector",
    tag = "Inspector",
    operation_id = "v1.inspector.create",
    params(AppPath),
    responses((status = 201, body = InspectorOut), (status = 200, body = InspectorOut, description = "The app's existing inspector"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "inspector.opened"})))
)]
pub(crate) async fn open(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path(app): Path<String>,
) -> ApiResult<(StatusCode, Json<InspectorOut>)> {
    let app = resolve(&state, &app).await?;
    let (inspector, created) = crate::operations::Operations::new(&state, caller)
        .open_inspector(app)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(inspector_out(&state, &inspector))))
}

/// Opens `app`'s inspector; `true` when it is new.
pub(crate) async fn open_for(
    state: &AppState,
    app: AppId,
    audit: Option<AuditEntry>,
) -> ApiResult<(Inspector, bool)> {
    let token = new_token();
    let inspector = state
        .store
        .open_inspector(app, token.clone(), audit)
        .await?;
    Ok((inspector.clone(), inspector.token == token))
}

/// 32 random bytes, URL-safe base64: unguessable, fit for a path.
fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Delete the inspector and what it received; its address stops working.
#[utoipa::path(
    delete,
    path = "/api/v1/app/{app}/inspector",
    tag = "Inspector",
    operation_id = "v1.inspector.delete",
    params(AppPath),
    responses((status = 204, description = "Deleted"), Errors),
    extensions(("x-herald" = json!({"access": "tenant", "audit": "inspector.closed"})))
)]
pub(crate) async fn close(
    State(state): State<AppState>,
    axum::Extension(caller): axum::Extension<crate::auth::Principal>,
    Path(app): Path<String>,
) -> ApiResult<StatusCode> {
    let app = resolve(&state, &app).await?;
    crate::operations::Operations::new(&state, caller)
        .close_inspector(app)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The requests the inspector received, newest first (the last 100 are kept).
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/inspector/request",
    tag = "Inspector",
    operation_id = "v1.inspector.list-requests",
    params(AppPath, RequestListParams),
    responses((status = 200, body = ListResponse<InspectedRequestOut>), Errors),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn requests(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<RequestListParams>,
) -> ApiResult<Json<ListResponse<InspectedRequestOut>>> {
    let inspector = existing(&state, &app).await?;
    let limit = params
        .limit
        .unwrap_or(INSPECTED_KEPT)
        .clamp(1, INSPECTED_KEPT);
    let data = describe(&state, &inspector, limit).await?;
    Ok(Json(ListResponse {
        data,
        iterator: None,
        prev_iterator: None,
        done: true,
    }))
}

/// The kept requests as shown by the API and the portal.
pub(crate) async fn describe(
    state: &AppState,
    inspector: &Inspector,
    limit: usize,
) -> ApiResult<Vec<InspectedRequestOut>> {
    let requests = state.store.list_inspected(inspector.app_id, limit).await?;
    let secrets = endpoint_secrets(state, inspector).await?;
    Ok(requests
        .into_iter()
        .map(|request| {
            let signature = check_signature(&request, &secrets);
            let (body, body_encoding) = match String::from_utf8(request.body) {
                Ok(text) => (text, "utf8"),
                Err(bytes) => (
                    base64::engine::general_purpose::STANDARD.encode(bytes.into_bytes()),
                    "base64",
                ),
            };
            let mut headers = BTreeMap::<String, String>::new();
            for (name, value) in request.headers {
                headers
                    .entry(name)
                    .and_modify(|v| {
                        v.push_str(", ");
                        v.push_str(&value);
                    })
                    .or_insert(value);
            }
            InspectedRequestOut {
                id: request.id,
                received_at: timestamp(request.received_at),
                method: request.method,
                path: request.path,
                query: request.query,
                headers,
                body,
                body_encoding,
                body_truncated: request.body_truncated,
                signature,
            }
        })
        .collect())
}

/// The signing secrets of the app's endpoints that point at the inspector.
async fn endpoint_secrets(
    state: &AppState,
    inspector: &Inspector,
) -> ApiResult<Vec<(String, herald_domain::Secret)>> {
    let marker = format!("/inspect/{}", inspector.token);
    let endpoints = state
        .store
        .list_endpoints(
            inspector.app_id,
            PageRequest {
                limit: 250,
                cursor: herald_store::Cursor::Start,
            },
        )
        .await?;
    let mut secrets = Vec::new();
    for endpoint in endpoints.data {
        if !endpoint.url.as_str().contains(&marker) {
            continue;
        }
        match state
            .store
            .endpoint_secret(inspector.app_id, endpoint.id)
            .await
        {
            Ok(secret) => secrets.push((endpoint.id.to_string(), secret)),
            Err(StoreError::NotFound) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(secrets)
}

fn check_signature(
    request: &InspectedRequest,
    secrets: &[(String, herald_domain::Secret)],
) -> SignatureCheck {
    let header = |names: [&str; 2]| {
        request
            .headers
            .iter()
            .find(|(name, _)| names.contains(&name.as_str()))
            .map(|(_, value)| value.as_str())
    };
    let (Some(id), Some(timestamp), Some(signature)) = (
        header(["webhook-id", "svix-id"]),
        header(["webhook-timestamp", "svix-timestamp"]),
        header(["webhook-signature", "svix-signature"]),
    ) else {
        return SignatureCheck {
            status: "unsigned",
            endpoint_id: None,
        };
    };
    if secrets.is_empty() {
        return SignatureCheck {
            status: "unverified",
            endpoint_id: None,
        };
    }
    let timestamp: i64 = timestamp.trim().parse().unwrap_or_default();
    let valid = (!request.body_truncated)
        .then(|| {
            secrets
                .iter()
                .find(|(_, secret)| secret.verify(id, timestamp, &request.body, signature))
        })
        .flatten();
    match valid {
        Some((endpoint, _)) => SignatureCheck {
            status: "valid",
            endpoint_id: Some(endpoint.clone()),
        },
        None => SignatureCheck {
            status: "invalid",
            endpoint_id: None,
        },
    }
}

/// `ANY /inspect/{token}[/…]`: keeps the request, answers `200 {"ok":true}`.
async fn receive(
    State(state): State<AppState>,
    Path(params): Path<Vec<(String, String)>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Json<serde_json::Value>> {
    let token = params
        .iter()
        .find(|(name, _)| name == "token")
        .map(|(_, value)| value.clone())
        .unwrap_or_default();
    let inspector = state
        .store
        .inspector_by_token(token.clone())
        .await?
        .ok_or(ApiError::NotFound)?;
    let prefix = format!("/inspect/{token}");
    let path = uri.path().strip_prefix(&prefix).unwrap_or("");
    let kept = body.len().min(BODY_KEPT);
    let request = InspectedRequest {
        id: format!("ireq_{}", ulid::Ulid::new()),
        app_id: inspector.app_id,
        method: method.to_string(),
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        },
        query: uri.query().map(str::to_owned),
        headers: headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_owned(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body[..kept].to_vec(),
        body_truncated: kept < body.len(),
        received_at: crate::middleware::now_ms(),
    };
    state.store.record_inspected(request).await?;
    Ok(Json(serde_json::json!({"ok": true})))
}
