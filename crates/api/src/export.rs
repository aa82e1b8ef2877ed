//! The activity log's export: an app's (or one endpoint's) attempts, with
//! the log's filters, as JSON Lines or CSV, streamed page by page from the
//! database so that a million rows take no more memory than one page.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use herald_domain::AppId;
use herald_store::{AttemptFilter, AttemptQuery, Cursor, PageRequest};

use crate::apps::resolve;
use crate::attempts::{endpoint_id, AttemptFilters, MessageAttemptOut};
use crate::error::{ApiError, ApiResult};
use crate::extract::{Path, Query};
use crate::openapi::{AppPath, Errors};
use crate::AppState;
use utoipa_axum::{router::OpenApiRouter, routes};

pub(crate) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::default().routes(routes!(export))
}

/// Rows read from the database at a time.
pub(crate) const PAGE: usize = 1_000;

/// The CSV columns, in order (the JSON Lines objects carry the same fields).
pub const COLUMNS: [&str; 12] = [
    "id",
    "timestamp",
    "msgId",
    "endpointId",
    "url",
    "status",
    "statusText",
    "responseStatusCode",
    "responseDurationMs",
    "errorClass",
    "triggerType",
    "response",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    JsonLines,
    Csv,
}

impl Format {
    pub(crate) fn parse(text: Option<&str>) -> ApiResult<Self> {
        match text.unwrap_or("jsonl") {
            "jsonl" | "ndjson" => Ok(Self::JsonLines),
            "csv" => Ok(Self::Csv),
            _ => Err(ApiError::invalid("format", "must be `jsonl` or `csv`")),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Self::JsonLines => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Self::JsonLines => "jsonl",
            Self::Csv => "csv",
        }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct ExportParams {
    /// `jsonl` (JSON Lines, the default) or `csv`.
    format: Option<String>,
    /// Only this endpoint's attempts (id or uid); all of the app's without.
    endpoint: Option<String>,
    /// 0 succeeded, 1 pending, 2 failed, 3 sending.
    status: Option<i64>,
    /// 0 (no answer), 100, 200, 300, 400 or 500.
    status_code_class: Option<u16>,
    /// Comma-separated.
    event_types: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

/// Export the activity log: every attempt of the app, or of one endpoint,
/// that the filters keep, newest first, as JSON Lines or CSV (Herald's
/// addition). Streamed: the first rows arrive while later ones are read.
#[utoipa::path(
    get,
    path = "/api/v1/app/{app}/attempt/export",
    tag = "Message Attempt",
    operation_id = "v1.message-attempt.export",
    params(AppPath, ExportParams),
    responses(
        (status = 200, description = "JSON Lines (`application/x-ndjson`) or CSV (`text/csv`), one attempt per line", content_type = "application/x-ndjson"),
        Errors
    ),
    extensions(("x-herald" = json!({"access": "tenant"})))
)]
pub(crate) async fn export(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<ExportParams>,
) -> ApiResult<Response> {
    let app = resolve(&state, &app).await?;
    let format = Format::parse(params.format.as_deref())?;
    let filter = match &params.endpoint {
        Some(endpoint) => AttemptFilter::Endpoint(endpoint_id(&state, app, endpoint).await?),
        None => AttemptFilter::App,
    };
    let filters = AttemptFilters {
        status: params.status,
        status_code_class: params.status_code_class,
        event_types: params.event_types,
        before: params.before,
        after: params.after,
    };
    let query = filters.query(filter, page(Cursor::Start))?;
    // The first page is read before answering, so that a failing database
    // is a 503 rather than a cut-off 200.
    let first = state.store.list_attempts(app, query.clone()).await?;
    Ok(stream(
        state,
        app,
        query,
        first,
        format,
        &format!("attempts-{app}"),
    ))
}

fn page(cursor: Cursor) -> PageRequest {
    PageRequest {
        limit: PAGE,
        cursor,
    }
}

/// The streamed answer: `first`, then the pages after it, encoded as they
/// are read. A database failure past the first page ends the body with an
/// error, which the client sees as a cut-off transfer.
pub(crate) fn stream(
    state: AppState,
    app: AppId,
    query: AttemptQuery,
    first: herald_store::Page<herald_store::Attempt>,
    format: Format,
    name: &str,
) -> Response {
    struct Reading {
        state: AppState,
        query: AttemptQuery,
        next: Option<herald_store::Page<herald_store::Attempt>>,
        header: bool,
    }
    let reading = Reading {
        state,
        query,
        next: Some(first),
        header: format == Format::Csv,
    };
    let pages = futures_util::stream::try_unfold(reading, move |mut reading| async move {
        let Some(page) = reading.next.take() else {
            return Ok::<_, std::io::Error>(None);
        };
        if !page.done {
            if let Some(iterator) = &page.iterator {
                let mut query = reading.query.clone();
                query.page = self::page(Cursor::After(iterator.clone()));
                let read = reading.state.store.list_attempts(app, query).await;
                reading.next = Some(read.map_err(|error| {
                    tracing::warn!(%error, %app, "an export stopped: reading a page failed");
                    std::io::Error::other(error.to_string())
                })?);
            }
        }
        let mut out = Vec::with_capacity(page.data.len() * 256);
        if std::mem::take(&mut reading.header) {
            out.extend_from_slice(COLUMNS.join(",").as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        for attempt in page.data {
            let row = MessageAttemptOut::from(attempt);
            match format {
                Format::JsonLines => {
                    serde_json::to_writer(&mut out, &row)?;
                    out.push(b'\n');
                }
                Format::Csv => csv_row(&mut out, &row),
            }
        }
        Ok(Some((bytes::Bytes::from(out), reading)))
    });
    let mut response = Body::from_stream(pages).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{name}.{}\"",
        format.extension()
    )) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// One CSV record (RFC 4180: a field with a comma, quote or line break is
/// quoted, its quotes doubled).
fn csv_row(out: &mut Vec<u8>, row: &MessageAttemptOut) {
    let fields: [&str; 12] = [
        &row.id,
        &row.timestamp,
        &row.msg_id,
        &row.endpoint_id,
        &row.url,
        &row.status.to_string(),
        row.status_text,
        &row.response_status_code.to_string(),
        &row.response_duration_ms.to_string(),
        row.error_class.unwrap_or_default(),
        &row.trigger_type.to_string(),
        &row.response,
    ];
    for (index, field) in fields.iter().enumerate() {
        if index > 0 {
            out.push(b',');
        }
        if field.contains([',', '"', '\n', '\r']) {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}
