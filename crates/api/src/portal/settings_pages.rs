//! The templates of an app's settings pages in the portal: alert rules,
//! egress addresses and the test inspector.

use maud::{html, Markup};

use herald_domain::alerts::OPERATIONAL_EVENTS;
use herald_store::App;

use super::pages::layout;
use super::settings::{AlertForm, Defaults};

pub(super) fn alerts(
    csrf: &str,
    writable: bool,
    app: &App,
    form: &AlertForm,
    defaults: &Defaults,
    notice: Option<&str>,
    error: Option<&str>,
) -> Markup {
    let default_threshold = defaults
        .threshold_percent
        .map_or_else(|| "off".to_owned(), |t| format!("{t:.0} %"));
    let fields = html! {
        input type="hidden" name="csrf" value=(csrf);
        fieldset {
            legend { "Notifications" }
            @for event in OPERATIONAL_EVENTS {
                label.inline {
                    input type="checkbox" name="events" value=(event) checked[form.events.iter().any(|e| e == event)];
                    " " code { (event) }
                }
            }
        }
        label for="filter_types" { "Only for these event types (comma-separated, e.g. call.completed, call.*; empty: all)" }
        input #filter_types type="text" name="filter_types" value=(form.filter_types);
        label for="failing_after" { "Consecutive failures before endpoint.failing (server default " (defaults.failing_after) ")" }
        input #failing_after type="number" min="1" name="failing_after" value=(form.failing_after);
        label for="threshold" { "Success rate threshold in % (server default " (default_threshold) ")" }
        input #threshold type="number" min="1" max="100" step="any" name="threshold" value=(form.threshold_percent);
        label for="min_attempts" { "Minimum attempts in the hour (server default " (defaults.min_attempts.map_or_else(|| "20".to_owned(), |n| n.to_string())) ")" }
        input #min_attempts type="number" min="1" name="min_attempts" value=(form.min_attempts);
        label for="email_to" { "Also e-mail (comma-separated addresses)" }
        input #email_to type="text" name="email_to" value=(form.email_to);
    };
    layout(
        "Alerts",
        Some(csrf),
        html! {
            nav.crumbs { a href={ "/portal/app/" (app.id) } { "Endpoints" } " / alerts" }
            h1 { "Alerts" }
            p { "When your endpoints fail, Herald raises these notifications to its operators' endpoints (and by e-mail when configured)." }
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            @if writable {
                form #alerts method="post" action={ "/portal/app/" (app.id) "/alerts" } {
                    (fields)
                    button type="submit" { "Save alert rules" }
                }
            } @else {
                fieldset #alerts disabled { (fields) }
            }
        },
    )
}

pub(super) fn egress(csrf: &str, app: &App, egress: &crate::Egress) -> Markup {
    layout(
        "Egress addresses",
        Some(csrf),
        html! {
            nav.crumbs { a href={ "/portal/app/" (app.id) } { "Endpoints" } " / egress" }
            h1 { "Egress addresses" }
            @if egress.addresses.is_empty() {
                p #egress-none { "This server publishes no fixed egress addresses; ask its operator before allowlisting." }
            } @else {
                p { "Webhooks come from these addresses; allow them in your firewall:" }
                ul #egress-addresses {
                    @for address in &egress.addresses { li { code { (address) } } }
                }
            }
            @if egress.proxied {
                p.hint { "Deliveries leave through the operator's proxy." }
            }
        },
    )
}

/// The test inspector: its address, and what it received.
pub(super) fn inspector(
    csrf: &str,
    writable: bool,
    app: &App,
    inspector: Option<&crate::inspector::InspectorOut>,
    requests: &[crate::inspector::InspectedRequestOut],
) -> Markup {
    layout(
        "Test inspector",
        Some(csrf),
        html! {
            nav.crumbs { a href={ "/portal/app/" (app.id) } { "Endpoints" } " / test inspector" }
            h1 { "Test inspector" }
            p { "A receiving address that keeps the last 100 requests it gets: point an endpoint at it to see what your receiver will get, before it exists." }
            @match inspector {
                None if !writable => {
                    p.empty { "No inspector address." }
                }
                None => {
                    form method="post" action={ "/portal/app/" (app.id) "/inspector" } {
                        input type="hidden" name="csrf" value=(csrf);
                        button type="submit" { "Create an inspector address" }
                    }
                }
                Some(inspector) => {
                    p {
                        "Address: " code #inspector-url { (inspector.url()) }
                        " " button type="button" data-copy="#inspector-url" { "Copy" }
                    }
                    p {
                        @if writable {
                            a.button href={ "/portal/app/" (app.id) "/endpoints/new?url=" (inspector.url()) } { "Add an endpoint pointing here" }
                            " "
                        }
                        a href={ "/portal/app/" (app.id) "/inspector" } { "Refresh" }
                    }
                    @if requests.is_empty() {
                        p.empty #inspector-empty { "Nothing received yet." }
                    } @else {
                        table #inspected {
                            thead {
                                tr {
                                    th scope="col" { "Received" }
                                    th scope="col" { "Request" }
                                    th scope="col" { "Signature" }
                                    th scope="col" { "Details" }
                                }
                            }
                            tbody {
                                @for request in requests {
                                    tr {
                                        td { time { (request.received_at()) } }
                                        td { code { (request.method()) " " (request.path()) } }
                                        td.signature { (request.signature_text()) }
                                        td {
                                            details {
                                                summary { "Headers" }
                                                dl {
                                                    @for (name, value) in request.headers() {
                                                        dt { code { (name) } }
                                                        dd { code { (value) } }
                                                    }
                                                }
                                            }
                                            details {
                                                summary { "Body" @if request.body_truncated() { " (first 64 KiB)" } }
                                                pre { (request.pretty_body()) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                    @if writable {
                        form method="post" action={ "/portal/app/" (app.id) "/inspector/delete" } data-confirm="Delete the inspector and what it received? Its address stops working." {
                            input type="hidden" name="csrf" value=(csrf);
                            button.danger type="submit" { "Delete inspector" }
                        }
                    }
                }
            }
        },
    )
}
