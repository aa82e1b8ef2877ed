//! The portal's pages, as maud templates: one layout, and a function per
//! page that takes exactly what the page shows.

use maud::{html, Markup, PreEscaped, DOCTYPE};

use herald_store::{App, Endpoint, EndpointHealth};

/// The frame of every page; `csrf` is set when someone is logged in.
fn layout(title: &str, csrf: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Herald" }
                link rel="stylesheet" href="/portal/static/portal.css";
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
            // A portal link carries its token in the fragment (#token=…),
            // which browsers never send to servers or in Referer headers;
            // it is posted once and removed from the address bar.
            script {
                (PreEscaped(r#"
(function () {
  var match = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (!match) return;
  history.replaceState(null, '', location.pathname + location.search);
  var form = document.getElementById('login');
  form.token.value = decodeURIComponent(match[1]);
  form.submit();
})();
"#))
            }
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

fn percent(rate: Option<f64>) -> String {
    rate.map_or_else(|| "—".to_owned(), |r| format!("{:.1} %", r * 100.0))
}

pub(super) fn endpoints(
    csrf: &str,
    admin: bool,
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
                                td.url { (endpoint.url) @if !endpoint.description.is_empty() { br; small { (endpoint.description) } } }
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
