//! The portal (SPEC §6): server-rendered pages at `/portal/` for admins
//! (who log in with the admin token) and customers (who arrive through the
//! app-scoped link of `POST /api/v1/auth/app-portal-access/{app}/`).
//!
//! The session cookie holds the token itself (`HttpOnly`, `SameSite=Strict`,
//! `Secure` behind https), so there is no server-side session state; every
//! form carries a CSRF token derived from the session token, and a POST
//! without it is refused. Pages are maud templates with one small
//! stylesheet served from the binary.

mod activity;
mod endpoint_actions;
mod endpoint_form;
mod endpoint_pages;
mod message;
mod pages;
mod settings;
mod settings_pages;

use axum::extract::{Path, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use herald_domain::ids::IdOrUid;
use herald_domain::AppId;
use herald_store::PageRequest;

use crate::auth::{principal_of, Principal};
use crate::error::ApiError;
use crate::AppState;

const COOKIE_NAME: &str = "herald_session";

/// A page's early answer instead of its content (a redirect to log in, a
/// 404, a refused form), boxed: it is the rare path. Handlers return
/// `Result<Response, Refused>` and axum answers either.
#[derive(Debug)]
struct Refused(Box<Response>);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl Refused {
    fn new(response: impl IntoResponse) -> Self {
        Self(Box::new(response.into_response()))
    }
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self(Box::new(error.into_response()))
    }
}

impl From<herald_store::StoreError> for Refused {
    fn from(error: herald_store::StoreError) -> Self {
        ApiError::from(error).into()
    }
}
const STYLESHEET: &str = include_str!("portal.css");
const SCRIPT: &str = include_str!("portal.js");

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/portal", get(home))
        .route("/portal/login", get(login_page).post(login))
        .route("/portal/logout", post(logout))
        .route("/portal/app/{app}", get(endpoints))
        .route(
            "/portal/app/{app}/url-check",
            post(endpoint_pages::check_url),
        )
        .route(
            "/portal/app/{app}/try-expressions",
            post(endpoint_pages::try_expressions),
        )
        .route(
            "/portal/app/{app}/alerts",
            get(settings::alerts).post(settings::save_alerts),
        )
        .route("/portal/app/{app}/egress", get(settings::egress))
        .route("/portal/app/{app}/activity", get(activity::app_log))
        .route("/portal/app/{app}/activity/export", get(activity::export))
        .route("/portal/app/{app}/msg/{message}", get(message::show))
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/activity/export",
            get(activity::endpoint_export),
        )
        .route(
            "/portal/app/{app}/inspector",
            get(settings::inspector).post(settings::open_inspector),
        )
        .route(
            "/portal/app/{app}/inspector/delete",
            post(settings::close_inspector),
        )
        .route(
            "/portal/app/{app}/catalog",
            get(endpoint_pages::event_catalog),
        )
        .route(
            "/portal/app/{app}/endpoints/new",
            get(endpoint_pages::new_form).post(endpoint_pages::create),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}",
            get(endpoint_pages::detail),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/edit",
            get(endpoint_pages::edit_form).post(endpoint_pages::save),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/test",
            post(endpoint_pages::send_test),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/secret",
            post(endpoint_actions::reveal),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/rotate",
            post(endpoint_actions::rotate),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/toggle",
            post(endpoint_actions::toggle),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/recover",
            post(endpoint_actions::recover),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/delete",
            post(endpoint_actions::delete),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/activity",
            get(activity::log),
        )
        .route(
            "/portal/app/{app}/endpoint/{endpoint}/activity/retry",
            post(activity::retry),
        )
        .route("/portal/static/portal.css", get(stylesheet))
        .route("/portal/static/portal.js", get(script))
}

/// The logged-in holder: their token (for the CSRF token) and who they are.
struct Session {
    token: String,
    principal: Principal,
    /// The request slot the page holds, like an API request's.
    _slot: crate::limits::Slot,
}

impl Session {
    /// The CSRF token of this session: unguessable without the session
    /// token, and the same on every page of the session.
    fn csrf(&self) -> String {
        csrf_of(&self.token)
    }

    /// A posted form that changes something: its fields, once its CSRF
    /// token checks out and the session may write (403 for a `readOnly`
    /// portal link).
    fn form(&self, body: &[u8]) -> Result<endpoint_pages::Fields, Refused> {
        self.require_writable()?;
        self.read_form(body)
    }

    /// 403 for a `readOnly` session (its pages offer no changes; this
    /// refuses the forms' addresses when called directly).
    fn require_writable(&self) -> Result<(), Refused> {
        if self.writable() {
            Ok(())
        } else {
            Err(Refused::new((
                StatusCode::FORBIDDEN,
                "this portal link is read-only",
            )))
        }
    }

    /// A posted form that only shows something (revealing the secret).
    fn read_form(&self, body: &[u8]) -> Result<endpoint_pages::Fields, Refused> {
        let fields = endpoint_pages::Fields::parse(body);
        self.check_csrf(fields.get("csrf").unwrap_or_default())?;
        Ok(fields)
    }

    /// The changes this session may make, audited like the API's.
    fn operations<'a>(&self, state: &'a AppState) -> crate::operations::Operations<'a> {
        crate::operations::Operations::new(state, self.principal)
    }

    /// Whether pages offer changes (and forms accept them).
    fn writable(&self) -> bool {
        !self.principal.read_only()
    }

    fn check_csrf(&self, presented: &str) -> Result<(), Refused> {
        if bool::from(self.csrf().as_bytes().ct_eq(presented.as_bytes())) {
            Ok(())
        } else {
            Err(Refused::new((
                StatusCode::FORBIDDEN,
                "this form has expired; reload the page",
            )))
        }
    }
}

fn csrf_of(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(format!("herald-portal-csrf:{token}")))
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
}

/// The session of the request, or a redirect to the login page.
async fn session(state: &AppState, headers: &HeaderMap) -> Result<Session, Refused> {
    let Some(token) = cookie_token(headers) else {
        return Err(Refused::new(Redirect::to("/portal/login")));
    };
    let principal = match principal_of(state, &token).await {
        Ok(Some(principal)) => principal,
        Ok(None) => return Err(Refused::new(Redirect::to("/portal/login?expired=1"))),
        Err(error) => return Err(error.into()),
    };
    // The API's limits hold through this door too: the token's request
    // rate, and its app's share of the request slots.
    if let (Principal::App { token, .. }, Some(limiter)) = (principal, &state.rate_limiter) {
        if let Err(wait) = limiter.take(token, std::time::Instant::now()) {
            return Err(ApiError::RateLimited {
                retry_after_secs: wait.as_secs_f64().ceil() as u64,
            }
            .into());
        }
    }
    let slot = state
        .request_slots
        .take(principal.app())
        .map_err(ApiError::from)?;
    Ok(Session {
        token,
        principal,
        _slot: slot,
    })
}

/// Headers every portal page carries: no caching of customer data, and who
/// may frame it.
fn page(state: &AppState, markup: maud::Markup) -> Response {
    let mut response = Html(markup.into_string()).into_response();
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let policy = format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; frame-ancestors {}",
        state.config.portal_frame_ancestors
    );
    if let Ok(value) = HeaderValue::from_str(&policy) {
        headers.insert("content-security-policy", value);
    }
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn home(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, Refused> {
    let session = session(&state, &headers).await?;
    Ok(match session.principal {
        Principal::App { app, .. } => Redirect::to(&format!("/portal/app/{app}")).into_response(),
        Principal::Admin => {
            let apps = state
                .store
                .list_apps(PageRequest {
                    limit: 250,
                    cursor: Default::default(),
                })
                .await?;
            page(&state, pages::apps(&session.csrf(), &apps.data))
        }
    })
}

#[derive(Debug, Deserialize)]
struct LoginQuery {
    expired: Option<String>,
}

async fn login_page(
    State(state): State<AppState>,
    axum::extract::Query(query): axum::extract::Query<LoginQuery>,
) -> Response {
    page(&state, pages::login(query.expired.is_some(), None))
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> Response {
    let token = form.token.trim().to_owned();
    match principal_of(&state, &token).await {
        Ok(Some(_)) => {
            let secure = headers
                .get("x-forwarded-proto")
                .is_some_and(|v| v.as_bytes() == b"https")
                || state.config.public_url.starts_with("https://");
            let cookie = format!(
                "{COOKIE_NAME}={token}; Path=/portal; HttpOnly; SameSite=Strict{}",
                if secure { "; Secure" } else { "" }
            );
            let mut response = Redirect::to("/portal").into_response();
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().insert(SET_COOKIE, value);
            }
            response
        }
        Ok(None) => {
            let mut response = page(
                &state,
                pages::login(false, Some("That token is not valid (or has expired).")),
            );
            *response.status_mut() = StatusCode::UNAUTHORIZED;
            response
        }
        Err(error) => error.into_response(),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refused> {
    let session = session(&state, &headers).await?;
    session.check_csrf(&form.csrf)?;
    let mut response = Redirect::to("/portal/login").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        HeaderValue::from_static(
            "herald_session=; Path=/portal; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}

/// The app of a portal path, if the session may see it (404 otherwise, as
/// in the API).
async fn app_of(
    state: &AppState,
    session: &Session,
    segment: &str,
) -> Result<herald_store::App, Refused> {
    let missing = || Refused::new(not_found(state));
    let reference = IdOrUid::<AppId>::parse(segment).map_err(|_| missing())?;
    let app = state.store.get_app(&reference).await.map_err(|e| match e {
        herald_store::StoreError::NotFound => missing(),
        other => Refused::from(other),
    })?;
    session.principal.check(app.id).map_err(|_| missing())?;
    Ok(app)
}

fn not_found(state: &AppState) -> Response {
    let mut response = page(state, pages::not_found());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

async fn endpoints(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(app): Path<String>,
) -> Result<Response, Refused> {
    let session = session(&state, &headers).await?;
    let app = app_of(&state, &session, &app).await?;
    let endpoints = state
        .store
        .list_endpoints(
            app.id,
            PageRequest {
                limit: 250,
                cursor: Default::default(),
            },
        )
        .await?
        .data;
    let now = crate::middleware::now_ms();
    let mut rows = Vec::with_capacity(endpoints.len());
    for endpoint in endpoints {
        let health = state
            .store
            .endpoint_health(app.id, endpoint.id, now)
            .await
            .ok();
        rows.push((endpoint, health));
    }
    Ok(page(
        &state,
        pages::endpoints(
            &session.csrf(),
            session.principal == Principal::Admin,
            session.writable(),
            &app,
            &rows,
        ),
    ))
}
