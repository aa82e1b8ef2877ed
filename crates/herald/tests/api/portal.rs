//! The portal over HTTP: logging in with a portal link's token, the session
//! cookie's flags, tenant isolation of pages, and CSRF on forms. (The
//! browser walk-through is in `browser.rs`.)

use serde_json::json;

use crate::helpers::{spawn_app, Receiver, TestApp};

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn base(app: &TestApp) -> String {
    app.url("").trim_end_matches("/api/v1").to_owned()
}

async fn portal_token(app: &TestApp, tenant: &str) -> String {
    let (status, access) = app
        .post(&format!("/auth/app-portal-access/{tenant}/"), json!({}))
        .await;
    assert_eq!(status, 200, "{access}");
    let url = access["url"].as_str().unwrap();
    let token = access["token"].as_str().unwrap().to_owned();
    assert!(url.ends_with(&format!("/portal/#token={token}")), "{url}");
    token
}

/// Logs in with `token`; returns the session cookie (`name=value`).
async fn log_in(app: &TestApp, token: &str) -> String {
    let response = client()
        .post(format!("{}/portal/login", base(app)))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 303);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(cookie.contains("Path=/portal"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain http here: {cookie}");
    cookie.split(';').next().unwrap().to_owned()
}

async fn get(
    app: &TestApp,
    path: &str,
    cookie: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut request = client().get(format!("{}{path}", base(app)));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

#[tokio::test]
async fn a_portal_link_opens_its_own_app_only_and_forms_need_their_csrf_token() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (a, b) = (
        app.create_app("Tenant A").await,
        app.create_app("Tenant B").await,
    );
    app.create_endpoint(&a, &receiver.url("/a-hook"), Some(&["call.*"]))
        .await;
    app.create_endpoint(&b, &receiver.url("/b-secret-hook"), None)
        .await;

    // Not logged in: the login page.
    let (status, headers, _) = get(&app, "/portal", None).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], "/portal/login");
    let (status, _, login) = get(&app, "/portal/login", None).await;
    assert_eq!(status, 200);
    assert!(login.contains("name=\"token\""), "{login}");
    let bad = client()
        .post(format!("{}/portal/login", base(&app)))
        .form(&[("token", "htk_wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 401);
    assert!(bad.headers().get("set-cookie").is_none());

    // A's portal link: A's endpoints, not B's.
    let cookie = log_in(&app, &portal_token(&app, &a).await).await;
    let (status, headers, _) = get(&app, "/portal", Some(&cookie)).await;
    assert_eq!(status, 303);
    assert_eq!(headers["location"], format!("/portal/app/{a}").as_str());
    let (status, headers, page) = get(&app, &format!("/portal/app/{a}"), Some(&cookie)).await;
    assert_eq!(status, 200);
    assert!(page.contains(&receiver.url("/a-hook")), "{page}");
    assert!(page.contains("call.*"), "{page}");
    assert!(!page.contains("b-secret-hook"), "{page}");
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("frame-ancestors 'self'"), "{policy}");
    assert!(
        policy.contains("script-src 'self';"),
        "no inline script: {policy}"
    );
    assert!(
        !page.contains("<script>"),
        "scripts come from the binary's file"
    );
    assert_eq!(headers["cache-control"], "no-store");
    assert!(page.len() < 100 * 1024, "a page stays small");
    let (status, _, other) = get(&app, &format!("/portal/app/{b}"), Some(&cookie)).await;
    assert_eq!(status, 404);
    assert!(
        !other.contains("b-secret-hook") && !other.contains("Tenant B"),
        "{other}"
    );

    // Forms without the session's CSRF token are refused.
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    for form in [vec![("csrf", "forged")], vec![]] {
        let refused = client()
            .post(format!("{}/portal/logout", base(&app)))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert!(
            refused.status().is_client_error(),
            "{form:?}: {}",
            refused.status()
        );
        assert!(refused.headers().get("set-cookie").is_none(), "{form:?}");
    }
    // Every other form too: nothing changes without the token.
    let endpoint_id = {
        let (_, list) = app.get(&format!("/app/{a}/endpoint/")).await;
        list["data"][0]["id"].as_str().unwrap().to_owned()
    };
    let ep = format!("/portal/app/{a}/endpoint/{endpoint_id}");
    for path in [
        format!("/portal/app/{a}/endpoints/new"),
        format!("/portal/app/{a}/url-check"),
        format!("/portal/app/{a}/alerts"),
        format!("{ep}/edit"),
        format!("{ep}/test"),
        format!("{ep}/secret"),
        format!("{ep}/rotate"),
        format!("{ep}/toggle"),
        format!("{ep}/recover"),
        format!("{ep}/delete"),
        format!("{ep}/activity/retry"),
        format!("/portal/app/{a}/inspector"),
        format!("/portal/app/{a}/inspector/delete"),
    ] {
        let refused = client()
            .post(format!("{}{path}", base(&app)))
            .header("cookie", &cookie)
            .form(&[("csrf", "forged"), ("url", "https://example.com/x")])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 403, "{path}");
        assert!(!refused.text().await.unwrap().contains("whsec_"), "{path}");
    }
    let (_, still) = app.get(&format!("/app/{a}/endpoint/{endpoint_id}/")).await;
    assert_eq!(still["disabled"], false, "not toggled");
    let (_, list) = app.get(&format!("/app/{a}/endpoint/")).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "none added or deleted"
    );

    let out = client()
        .post(format!("{}/portal/logout", base(&app)))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status().as_u16(), 303);
    assert!(out.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));

    // The admin sees every app.
    let admin = log_in(&app, crate::helpers::TOKEN).await;
    let (status, _, apps) = get(&app, "/portal", Some(&admin)).await;
    assert_eq!(status, 200);
    assert!(
        apps.contains("Tenant A") && apps.contains("Tenant B"),
        "{apps}"
    );
}

#[tokio::test]
async fn a_read_only_portal_link_shows_everything_and_changes_nothing() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let tenant = app.create_app("Tenant A").await;
    let endpoint = app
        .create_endpoint(&tenant, &receiver.url("/hook"), None)
        .await;
    let message = app
        .send(&tenant, "call.completed", json!({"callId": "c1"}))
        .await;
    crate::helpers::attempted(&app, &tenant, &message, 1).await;
    let (status, access) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"readOnly": true}),
        )
        .await;
    assert_eq!(status, 200, "{access}");
    let token = access["token"].as_str().unwrap().to_owned();
    let cookie = log_in(&app, &token).await;
    let ep = format!("/portal/app/{tenant}/endpoint/{endpoint}");

    // Every page reads, and offers no change: its only forms are logging
    // out, filtering and revealing the secret.
    let mut csrf = String::new();
    for path in [
        format!("/portal/app/{tenant}"),
        ep.clone(),
        format!("{ep}/activity"),
        format!("/portal/app/{tenant}/activity"),
        format!("/portal/app/{tenant}/alerts"),
        format!("/portal/app/{tenant}/inspector"),
        format!("/portal/app/{tenant}/catalog"),
    ] {
        let (status, _, page) = get(&app, &path, Some(&cookie)).await;
        assert_eq!(status, 200, "{path}");
        for action in page.split("method=\"post\" action=\"").skip(1) {
            let action = action.split('"').next().unwrap();
            assert!(
                action == "/portal/logout" || action.ends_with("/secret"),
                "{path} offers {action}"
            );
        }
        for control in [
            "Add endpoint",
            "Rotate secret",
            "Send test event",
            "Retry",
            "Save alert rules",
            "Edit",
        ] {
            assert!(
                !page.contains(&format!(">{control}<")),
                "{path} shows {control}"
            );
        }
        if csrf.is_empty() {
            csrf = page
                .split("name=\"csrf\" value=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .unwrap()
                .to_owned();
        }
    }
    let (_, _, page) = get(&app, &ep, Some(&cookie)).await;
    assert!(page.contains(&receiver.url("/hook")), "{page}");

    // The forms' addresses refuse it, even with a valid CSRF token.
    for path in [
        format!("/portal/app/{tenant}/endpoints/new"),
        format!("/portal/app/{tenant}/url-check"),
        format!("/portal/app/{tenant}/alerts"),
        format!("{ep}/edit"),
        format!("{ep}/test"),
        format!("{ep}/rotate"),
        format!("{ep}/toggle"),
        format!("{ep}/recover"),
        format!("{ep}/delete"),
        format!("{ep}/activity/retry"),
        format!("/portal/app/{tenant}/inspector"),
        format!("/portal/app/{tenant}/inspector/delete"),
    ] {
        let refused = client()
            .post(format!("{}{path}", base(&app)))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("url", "https://hooks.test/x"),
                ("message", message.as_str()),
                ("event_type", "call.completed"),
                ("since", "2020-01-01T00:00"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 403, "{path}");
    }
    for path in [
        format!("/portal/app/{tenant}/endpoints/new"),
        format!("{ep}/edit"),
    ] {
        let (status, _, _) = get(&app, &path, Some(&cookie)).await;
        assert_eq!(status, 403, "{path}");
    }
    // Revealing the secret reads.
    let revealed = client()
        .post(format!("{}{ep}/secret", base(&app)))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(revealed.status().as_u16(), 200);
    assert!(revealed.text().await.unwrap().contains("whsec_"));

    let (_, still) = app
        .get(&format!("/app/{tenant}/endpoint/{endpoint}/"))
        .await;
    assert_eq!(still["disabled"], false, "not toggled");
    let (_, list) = app.get(&format!("/app/{tenant}/endpoint/")).await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        1,
        "none added or deleted"
    );
    assert_eq!(
        app.attempts_of(&tenant, &message).await.len(),
        1,
        "nothing re-sent"
    );
}

#[tokio::test]
async fn portal_access_refuses_feature_flags_rather_than_ignoring_them() {
    let app = spawn_app().await;
    let tenant = app.create_app("Tenant A").await;

    let (status, error) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"featureFlags": ["beta"]}),
        )
        .await;
    let (empty, _) = app
        .post(
            &format!("/auth/app-portal-access/{tenant}/"),
            json!({"featureFlags": []}),
        )
        .await;

    assert_eq!(status, 422, "{error}");
    assert!(
        error["detail"].as_str().unwrap().contains("featureFlags"),
        "{error}"
    );
    assert_eq!(empty, 200, "an empty list asks for nothing");
}
