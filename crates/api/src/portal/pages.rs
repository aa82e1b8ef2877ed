//! The portal's pages, as maud templates: one layout, and a function per
//! page that takes exactly what the page shows.

use maud::{html, Markup, DOCTYPE};

use herald_store::{App, Endpoint, EndpointHealth, EventType};

use super::endpoint_pages::{EndpointForm, Extras};

/// The frame of every page; `csrf` is set when someone is logged in.
pub(super) fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Herald" }
                link rel="stylesheet" href="/portal/static/portal.css";
                script src="/portal/static/portal.js" defer {}
            }
            body {
                header.top {
                    a.brand href="/portal" { "Herald" }
                    @if let Some(csrf) = csrf {
                        form.logout method="post" action="/portal/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn login(expired: bool, error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        html! {
            h1 { "Log in" }
            @if expired {
                p.notice role="status" { "Your session has ended. Log in again, or open a new portal link." }
            }
            @if let Some(error) = error {
                p.error role="alert" { (error) }
            }
            form #login method="post" action="/portal/login" {
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="off" required;
                button type="submit" { "Log in" }
            }
            p.hint { "Customers arrive through the link their platform gives them." }
        },
    )
}

pub(super) fn not_found() -> Markup {
    layout(
        "Not found",
        None,
        html! {
            h1 { "Not found" }
            p { "There is nothing here, or it is not yours to see." }
            p { a href="/portal" { "Back to the portal" } }
        },
    )
}

pub(super) fn apps(csrf: &str, apps: &[App]) -> Markup {
    layout(
        "Applications",
        Some(csrf),
        html! {
            h1 { "Applications" }
            @if apps.is_empty() {
                p { "No application yet: create one through the API." }
            } @else {
                ul.apps {
                    @for app in apps {
                        li { a href={ "/portal/app/" (app.id) } { (app.name) } " " small { (app.id) } }
                    }
                }
            }
        },
    )
}

pub(super) fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

pub(super) fn endpoints(
    csrf: &str,
    admin: bool,
    writable: bool,
    app: &App,
    rows: &[(Endpoint, Option<EndpointHealth>)],
) -> Markup {
    layout(
        &format!("Endpoints of {}", app.name),
        Some(csrf),
        html! {
            @if admin {
                nav.crumbs { a href="/portal" { "Applications" } " / " (app.name) }
            }
            h1 { "Endpoints" }
            p {
                @if writable {
                    a.button href={ "/portal/app/" (app.id) "/endpoints/new" } { "Add endpoint" }
                    " "
                } @else {
                    span.badge #read-only { "read-only" } " "
                }
                a href={ "/portal/app/" (app.id) "/catalog" } { "Event catalog" }
                " · "
                a href={ "/portal/app/" (app.id) "/alerts" } { "Alerts" }
                " · "
                a href={ "/portal/app/" (app.id) "/egress" } { "Egress addresses" }
                " · "
                a href={ "/portal/app/" (app.id) "/inspector" } { "Test inspector" }
                " · "
                a #app-activity-link href={ "/portal/app/" (app.id) "/activity" } { "Activity of all endpoints" }
            }
            @if rows.is_empty() {
                p.empty { "No endpoint yet." }
            } @else {
                table.endpoints {
                    thead {
                        tr {
                            th scope="col" { "URL" }
                            th scope="col" { "Status" }
                            th scope="col" { "Events" }
                            th scope="col" { "Success (24 h)" }
                            th scope="col" { "Last delivery" }
                        }
                    }
                    tbody {
                        @for (endpoint, health) in rows {
                            tr data-endpoint=(endpoint.id) {
                                td.url { a href={ "/portal/app/" (app.id) "/endpoint/" (endpoint.id) } { (endpoint.url) } @if !endpoint.description.is_empty() { br; small { (endpoint.description) } } }
                                td {
                                    @if endpoint.disabled {
                                        span.badge.off { "disabled" @if let Some(reason) = &endpoint.disabled_reason { " (" (reason) ")" } }
                                    } @else {
                                        span.badge.on { "enabled" }
                                    }
                                }
                                td { @match &endpoint.filter_types { Some(types) => (types.join(", ")), None => "all events" } }
                                td { (percent(health.as_ref().and_then(|h| h.last_day.success_rate()))) }
                                td {
                                    @match health.as_ref().and_then(|h| h.recent.first()) {
                                        Some(attempt) => {
                                            span class={ "badge " (if attempt.response_status_code / 100 == 2 { "on" } else { "off" }) } {
                                                (attempt.status.text())
                                                @if attempt.response_status_code > 0 { " " (attempt.response_status_code) }
                                            }
                                        }
                                        None => "—",
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The event types by group (`call`, `contact`, …), in catalog order.
fn groups(types: &[EventType]) -> Vec<(String, Vec<&EventType>)> {
    let mut groups: Vec<(String, Vec<&EventType>)> = Vec::new();
    for event_type in types {
        let group = event_type.name.group().unwrap_or("other").to_owned();
        match groups.iter_mut().find(|(name, _)| *name == group) {
            Some((_, members)) => members.push(event_type),
            None => groups.push((group, vec![event_type])),
        }
    }
    groups
}

/// The endpoint form: a new endpoint, or `editing` one.
pub(super) fn new_endpoint(
    csrf: &str,
    app: &App,
    types: &[EventType],
    form: &EndpointForm,
    editing: Option<&Endpoint>,
) -> Markup {
    let checked = |value: &str| form.types.iter().any(|t| t == value);
    let (title, action, button) = match editing {
        Some(endpoint) => (
            "Edit endpoint",
            format!("/portal/app/{}/endpoint/{}/edit", app.id, endpoint.id),
            "Save changes",
        ),
        None => (
            "New endpoint",
            format!("/portal/app/{}/endpoints/new", app.id),
            "Create endpoint",
        ),
    };
    layout(
        title,
        Some(csrf),
        html! {
            nav.crumbs { a href={ "/portal/app/" (app.id) } { "Endpoints" } " / " (title.to_lowercase()) }
            h1 { (title) }
            @if let Some(error) = &form.error {
                p.error role="alert" { (error) }
            }
            form #endpoint-form method="post" action=(action) {
                input type="hidden" name="csrf" value=(csrf);
                label for="url" { "URL" }
                input #url type="url" name="url" value=(form.url) required placeholder="https://example.com/webhooks";
                input type="hidden" name="editing" value=(editing.map(|e| e.id.to_string()).unwrap_or_default());
                button #check-url type="submit" formaction={ "/portal/app/" (app.id) "/url-check" } formnovalidate { "Check URL" }
                @if let Some(check) = &form.check {
                    section #url-check aria-live="polite" {
                        @if check.ok {
                            p { span.badge.on { "reachable" } " The URL answered " (check.status_code) " in " (check.duration_ms) " ms." }
                        } @else {
                            p {
                                span.badge.off { "not reachable" }
                                " "
                                @match check.error_class {
                                    Some("forbidden_address") => "It resolves to an address this server refuses (private, loopback or reserved).",
                                    Some("dns") => "Its name does not resolve.",
                                    Some("tls") => "Its TLS certificate does not verify.",
                                    Some("connect") => "Nothing accepts connections there.",
                                    Some("timeout") => "It did not answer in time.",
                                    Some("local") => "This server is short of resources (connections, memory) right now; try again.",
                                    _ => { "It answered " (check.status_code) "." },
                                }
                            }
                        }
                        @if !check.response.is_empty() {
                            pre #url-check-body { (check.response) }
                        }
                    }
                }
                label for="description" { "Description" }
                input #description type="text" name="description" value=(form.description);
                fieldset {
                    legend { "Events" }
                    label.inline {
                        input type="radio" name="events" value="all" checked[form.all_events];
                        " All events"
                    }
                    label.inline {
                        input #some-events type="radio" name="events" value="some" checked[!form.all_events];
                        " Only these:"
                    }
                    @for (group, members) in groups(types) {
                        div.group {
                            label.inline {
                                input type="checkbox" name="types" value={ (group) ".*" } checked[checked(&format!("{group}.*"))];
                                " every " strong { (group) } " event (" code { (group) ".*" } ")"
                            }
                            @for event_type in members {
                                label.inline.type {
                                    input type="checkbox" name="types" value=(event_type.name) checked[checked(event_type.name.as_str())];
                                    " " code { (event_type.name) } " — " (event_type.description)
                                }
                            }
                        }
                    }
                }
                label for="rate_limit" { "Rate limit (deliveries per second, optional)" }
                input #rate_limit type="number" min="1" name="rate_limit" value=(form.rate_limit);
                fieldset {
                    legend { "Retries" }
                    label for="retry_kind" { "Policy" }
                    select #retry_kind name="retry_kind" {
                        option value="" selected[form.retry_kind.is_empty()] { "the server's schedule" }
                        option value="exponential" selected[form.retry_kind == "exponential"] { "exponential backoff" }
                        option value="schedule" selected[form.retry_kind == "schedule"] { "a fixed schedule" }
                    }
                    label for="retry_schedule" { "Schedule (fixed: delays such as 1m, 10m, 1h)" }
                    input #retry_schedule type="text" name="retry_schedule" value=(form.retry_schedule);
                    label for="retry_initial" { "First delay (exponential, e.g. 5s)" }
                    input #retry_initial type="text" name="retry_initial" value=(form.retry_initial);
                    label for="retry_factor" { "Factor (exponential, e.g. 2)" }
                    input #retry_factor type="text" name="retry_factor" value=(form.retry_factor);
                    label for="retry_max_delay" { "Longest delay (exponential, e.g. 1h)" }
                    input #retry_max_delay type="text" name="retry_max_delay" value=(form.retry_max_delay);
                    label for="retry_max_attempts" { "Attempts at most (exponential)" }
                    input #retry_max_attempts type="number" min="1" name="retry_max_attempts" value=(form.retry_max_attempts);
                    label for="retry_max_age" { "Give up after (e.g. 3d)" }
                    input #retry_max_age type="text" name="retry_max_age" value=(form.retry_max_age);
                }
                label for="headers" { "Custom headers (one `Name: value` per line; credentials stay hidden)" }
                textarea #headers name="headers" rows="3" { (form.headers) }
                fieldset #shaping {
                    legend { "Filter and transformation" }
                    p.hint {
                        "Expressions in " a href="https://cel.dev" rel="noreferrer" { "CEL" }
                        " over the message: " code { "type" } ", " code { "data" } ", " code { "channels" } ", "
                        code { "eventId" } ", " code { "timestamp" } "."
                    }
                    label for="filter" { "Filter (optional): the endpoint gets the messages for which it is true" }
                    textarea #filter name="filter" rows="2" placeholder="data.direction == \"inbound\"" { (form.filter) }
                    label for="transformation" { "Transformation (optional): the JSON body to send instead of the envelope" }
                    textarea #transformation name="transformation" rows="3" placeholder="{\"text\": \"Call \" + data.callId + \" completed\"}" { (form.transformation) }
                    label.inline {
                        input #raw_payload type="checkbox" name="raw_payload" value="on" checked[form.raw_payload];
                        " Send the payload (" code { "data" } ") alone, without the envelope"
                    }
                    label for="preview_type" { "Try it on the example payload of" }
                    select #preview_type name="preview_type" {
                        @for event_type in types {
                            option value=(event_type.name) selected[form.preview.as_ref().is_some_and(|p| p.event_type == event_type.name.as_str())] { (event_type.name) }
                        }
                    }
                    button #try-expressions type="submit" formaction={ "/portal/app/" (app.id) "/try-expressions" } formnovalidate { "Try it" }
                    @if let Some(preview) = &form.preview {
                        section #expression-preview aria-live="polite" {
                            p { "On the example of " code { (preview.event_type) } ":" }
                            @match &preview.filter {
                                None => p { "No filter: the endpoint gets every message it subscribes to." },
                                Some(Ok(true)) => p { span.badge.on { "passes" } " The filter lets this message through." },
                                Some(Ok(false)) => p { span.badge.off { "filtered out" } " The filter keeps this message from the endpoint." },
                                Some(Err(error)) => p.error { (error) },
                            }
                            @match &preview.body {
                                Ok(body) => { p { "The body sent:" } pre #preview-body { (body) } },
                                Err(error) => p.error #preview-error { (error) },
                            }
                        }
                    }
                }
                label for="timeout" { "Timeout (seconds, optional; at most the server's)" }
                input #timeout type="number" min="1" name="timeout" value=(form.timeout);
                button type="submit" { (button) }
            }
        },
    )
}

/// The last 24 hours as stacked bars (succeeded below, failed above), one
/// per hour, drawn as inline SVG.
fn day_chart(hours: &[herald_store::HealthCounts]) -> Markup {
    const WIDTH: u64 = 20;
    const HEIGHT: u64 = 100;
    let most = hours.iter().map(|h| h.attempts()).max().unwrap_or(0).max(1);
    let total: u64 = hours.iter().map(|h| h.attempts()).sum();
    let failed: u64 = hours.iter().map(|h| h.failed).sum();
    let label =
        format!("Attempts in the last 24 hours, hour by hour: {total} in all, {failed} failed");
    html! {
        svg.chart #day-chart role="img" aria-label=(label) viewBox={ "0 0 " (WIDTH * 24) " " (HEIGHT + 2) } width="100%" height="120" preserveAspectRatio="none" {
            @for (hour, counts) in hours.iter().enumerate() {
                @let ok = counts.succeeded * HEIGHT / most;
                @let bad = counts.failed * HEIGHT / most;
                @let x = hour as u64 * WIDTH + 2;
                g {
                    title { (24 - hour) " h ago: " (counts.succeeded) " succeeded, " (counts.failed) " failed" }
                    rect.ok x=(x) y=(HEIGHT - ok) width=(WIDTH - 4) height=(ok) {}
                    rect.bad x=(x) y=(HEIGHT - ok - bad) width=(WIDTH - 4) height=(bad) {}
                }
            }
            line x1="0" y1=(HEIGHT) x2=(WIDTH * 24) y2=(HEIGHT) {}
        }
        p.hint { (label) "." }
    }
}

pub(super) fn when(at: Option<i64>) -> String {
    at.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "never".to_owned())
}

pub(super) fn endpoint(
    csrf: &str,
    writable: bool,
    app: &App,
    endpoint: &Endpoint,
    health: &EndpointHealth,
    examples: &[(String, String)],
    extras: &Extras,
) -> Markup {
    let result = extras.result.as_ref();
    let base = format!("/portal/app/{}/endpoint/{}", app.id, endpoint.id);
    layout(
        "Endpoint",
        Some(csrf),
        html! {
            nav.crumbs { a href={ "/portal/app/" (app.id) } { "Endpoints" } " / " (endpoint.id) }
            h1 { "Endpoint" }
            @if let Some(notice) = extras.notice {
                p.notice role="status" { (notice) }
            }
            p.url { code { (endpoint.url) } }
            dl.facts {
                dt { "Status" }
                dd {
                    @if endpoint.disabled {
                        span.badge.off { "disabled" @if let Some(reason) = &endpoint.disabled_reason { " (" (reason) ")" } }
                    } @else {
                        span.badge.on { "enabled" }
                    }
                }
                dt { "Events" }
                dd #events { @match &endpoint.filter_types { Some(types) => (types.join(", ")), None => "all events" } }
                dt { "Success rate" }
                dd { "1 h " (percent(health.last_hour.success_rate())) " · 24 h " (percent(health.last_day.success_rate())) " · 7 d " (percent(health.last_week.success_rate())) }
                dt { "Last success" }
                dd { (when(health.last_success_at)) }
                dt { "Consecutive failures" }
                dd { (health.consecutive_failures) }
                dt { "Average / p95 (24 h)" }
                dd {
                    @match health.last_day.average_ms() { Some(avg) => (format!("{avg:.0} ms")), None => "—" }
                    " / "
                    @match health.last_day.p95_ms() { Some(p95) => { "≤ " (p95) " ms" }, None => "—" }
                }
            }
            h2 { "Last 24 hours" }
            (day_chart(&health.last_day_by_hour))
            @if !health.recent.is_empty() {
                p.recent aria-label="The last attempts, newest first" {
                    @for attempt in &health.recent {
                        span class={ "dot " (if attempt.error_class.is_none() { "on" } else { "off" }) } title=(attempt.response_status_code) {}
                    }
                }
            }
            @if writable { div.actions {
                form method="post" action={ (base) "/toggle" } {
                    input type="hidden" name="csrf" value=(csrf);
                    @if endpoint.disabled {
                        button #enable type="submit" { "Enable" }
                    } @else {
                        button #disable type="submit" { "Disable" }
                    }
                }
                form method="post" action={ (base) "/delete" } data-confirm="Delete this endpoint? Its deliveries stop at once." {
                    input type="hidden" name="csrf" value=(csrf);
                    button.danger type="submit" { "Delete" }
                }
            } }
            p {
                a #activity-link href={ (base) "/activity" } { "Activity log" }
                @if writable {
                    " · "
                    a #edit-link href={ (base) "/edit" } { "Edit" }
                }
            }
            h2 { "Signing secret" }
            @if let Some((secret, public_key)) = &extras.secret {
                p { code #secret { (secret) } " " button type="button" data-copy="#secret" { "Copy" } }
                @if let Some(public_key) = public_key {
                    p { "Public key for receivers: " code #public-key { (public_key) } }
                }
            } @else {
                form method="post" action={ (base) "/secret" } {
                    input type="hidden" name="csrf" value=(csrf);
                    button #reveal type="submit" { "Reveal secret" }
                }
            }
            @if writable {
            form method="post" action={ (base) "/rotate" } data-confirm="Rotate the signing secret? The current one keeps signing during the grace period." {
                input type="hidden" name="csrf" value=(csrf);
                button #rotate type="submit" { "Rotate secret" }
            }
            h2 { "Recover failed messages" }
            form #recover method="post" action={ (base) "/recover" } {
                input type="hidden" name="csrf" value=(csrf);
                input #offset type="hidden" name="offset" value="0";
                label for="since" { "Failed since" }
                input #since type="datetime-local" name="since" required;
                button type="submit" { "Recover" }
            }
            h2 { "Send a test event" }
            form #test-event method="post" action={ "/portal/app/" (app.id) "/endpoint/" (endpoint.id) "/test" } {
                input type="hidden" name="csrf" value=(csrf);
                label for="event_type" { "Event type" }
                select #event_type name="event_type" {
                    @for (name, _) in examples {
                        option value=(name) selected[result.is_some_and(|r| &r.event_type == name)] { (name) }
                    }
                }
                @for (name, example) in examples {
                    details.example data-type=(name) {
                        summary { "Example payload of " code { (name) } }
                        pre { (example) }
                    }
                }
                button type="submit" { "Send test event" }
            }
            }
            @if let Some(result) = result {
                section #test-result aria-live="polite" {
                    h3 { "Result of " code { (result.event_type) } }
                    @if let Some(error) = &result.error {
                        p.error { (error) }
                    }
                    @if let Some(attempt) = &result.attempt {
                        dl.facts {
                            dt { "Status code" }
                            dd #result-status { (attempt.response_status_code) }
                            dt { "Outcome" }
                            dd #result-outcome {
                                span class={ "badge " (if attempt.error_class.is_none() { "on" } else { "off" }) } {
                                    (attempt.status.text())
                                }
                                @if let Some(class) = attempt.error_class { " (" (class.as_str()) ")" }
                            }
                            dt { "Duration" }
                            dd { (attempt.response_duration_ms) " ms" }
                            dt { "Response body" }
                            dd { pre #result-body { (attempt.response) } }
                        }
                    } @else if result.error.is_none() {
                        p { "No attempt was recorded in time; see the activity log." }
                    }
                }
            }
        },
    )
}

pub(super) fn catalog(csrf: &str, app: &App, types: &[(EventType, String, String)]) -> Markup {
    layout(
        "Event catalog",
        Some(csrf),
        html! {
            nav.crumbs { a href={ "/portal/app/" (app.id) } { "Endpoints" } " / event catalog" }
            h1 { "Event catalog" }
            p { "Every event your endpoints can subscribe to, with its JSON Schema and an example." }
            @for (group, members) in groups(&types.iter().map(|(t, _, _)| t.clone()).collect::<Vec<_>>()) {
                h2 { (group) " events " small { code { (group) ".*" } } }
                @for member in members {
                    @if let Some((event_type, schema, example)) = types.iter().find(|(t, _, _)| t.name == member.name) {
                        section.event-type id=(event_type.name) {
                            h3 { code { (event_type.name) } }
                            p { (event_type.description) }
                            details {
                                summary { "Example payload" }
                                pre.example { (example) }
                            }
                            details {
                                summary { "JSON Schema" }
                                pre.schema { (schema) }
                            }
                        }
                    }
                }
            }
        },
    )
}
