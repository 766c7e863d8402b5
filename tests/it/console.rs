//! The admin console in a real browser (headless Chromium over WebDriver, `console.py`),
//! against the real binary, broker, processor and HTTPS receiver; and its protections
//! over plain HTTP.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::admin::{processor_with_api_settings, Api};
use crate::support::*;
use feedback_webhooks::receiver::Reply;

/// Runs one step of `console.py` in the browser; its standard output.
async fn scenario(root: &str, shots: &Path, name: &str, args: &[(&str, &str)]) -> String {
    let mut command = std::process::Command::new("python3");
    command
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/console.py"))
        .args([name, root])
        .arg(shots)
        .args(args.iter().map(|(k, v)| format!("{k}={v}")));
    let out = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("python3 with selenium (scripts/test installs it)");
    assert!(
        out.status.success(),
        "console scenario {name} failed in the browser:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Requests the receiver got at `path` for event `id`.
fn requests_for(h: &Harness, path: &str, id: &str) -> Vec<feedback_webhooks::receiver::Received> {
    h.receiver
        .received()
        .into_iter()
        .filter(|r| r.path == path && r.header("webhook-id") == Some(id))
        .collect()
}

async fn wait_request(h: &Harness, path: &str, id: &str, n: usize) {
    let until = Instant::now() + PATIENCE;
    while requests_for(h, path, id).len() < n {
        assert!(
            Instant::now() < until,
            "event {id} not delivered to {path} {n} time(s)"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A signed-in console session over plain HTTP: its cookie header and CSRF token.
async fn session(api: &Api, root: &str) -> (String, String) {
    let page = api
        .client
        .get(format!("{root}/console/sign-in"))
        .send()
        .await
        .unwrap();
    let double = page.headers()["set-cookie"].to_str().unwrap().to_owned();
    let double = double.split(';').next().unwrap().to_owned();
    let csrf = double.split_once('=').unwrap().1.to_owned();
    let signed = api
        .client_without_redirects()
        .post(format!("{root}/console/sign-in"))
        .header("cookie", &double)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}&csrf={csrf}", api.token("operator")))
        .send()
        .await
        .unwrap();
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let cookie = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_owned())
        .find(|c| c.starts_with("fw_session="))
        .expect("a session cookie");
    let page = api
        .client
        .get(format!("{root}/console/org"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the session's form token")
        .to_owned();
    (cookie, csrf)
}

/// `datetime-local` text (UTC) of a time.
fn local_input(at: SystemTime) -> String {
    feedback_webhooks::domain::time::rfc3339_millis(at)[..19].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_manages_a_webhook_end_to_end_in_a_browser() {
    let started = SystemTime::now() - Duration::from_secs(60);
    let h = Harness::start("console").await;
    let (api, hook) = Api::with_webhook(&h).await;
    let root = api.base.trim_end_matches("/api/v1").to_owned();

    // Every page: CSP without inline scripts, no framing, no referrer.
    let page = api
        .client
        .get(format!("{root}/console/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    // Served over TLS: browsers are told never to come back over plain HTTP.
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");
    // A form post without its CSRF token is refused, whatever the token: sign-in...
    let forged = api
        .client
        .post(format!("{root}/console/sign-in"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}&csrf=guess", api.token("operator")))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    assert!(
        forged.headers().get("set-cookie").is_none(),
        "no session for a forged form"
    );
    // ...and every form of a signed-in session: nothing is written.
    let (cookie, csrf) = session(&api, &root).await;
    let campaigns = format!("{root}/console/orgs/{ORG}/sandboxes/{SANDBOX}/campaigns");
    for body in [
        "campaign=forged&enabled=true".to_owned(),
        "campaign=forged&enabled=true&csrf=guess".to_owned(),
    ] {
        let refused = api
            .client
            .post(&campaigns)
            .header("cookie", &cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    let edit = format!("{root}/console/orgs/{ORG}/sandboxes/{SANDBOX}/webhook/delete");
    let refused = api
        .client
        .post(&edit)
        .header("cookie", &cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("version=0-0")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let (status, _, _) = api
        .ask(
            Method::GET,
            &format!("/orgs/{ORG}/sandboxes/{SANDBOX}/campaigns/forged"),
            "operator",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a forged form wrote");
    assert!(!csrf.is_empty());

    // `CONSOLE_SCREENSHOTS` keeps them (scripts/screenshots: docs/screenshots); else the
    // test's folder.
    let shots = std::env::var("CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|_| h.dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let base = [("org", ORG), ("sandbox", SANDBOX)];
    let with = |more: &[(&'static str, String)]| -> Vec<(&'static str, String)> {
        base.iter()
            .map(|(k, v)| (*k, v.to_string()))
            .chain(more.iter().cloned())
            .chain([("operator", api.token("operator").to_owned())])
            .collect()
    };
    let run = |name: &'static str, args: Vec<(&'static str, String)>| {
        let (root, shots) = (root.clone(), shots.clone());
        async move {
            let args: Vec<(&str, &str)> = args.iter().map(|(k, v)| (*k, v.as_str())).collect();
            scenario(&root, &shots, name, &args).await
        }
    };

    // Sign in, inventory, picker, campaigns, filters, phone layout, another org.
    run(
        "basics",
        with(&[
            ("name", "Order feedback".into()),
            ("other", api.token("other").to_owned()),
        ]),
    )
    .await;
    let (status, _, campaign) = api
        .ask(
            Method::GET,
            &format!("/orgs/{ORG}/sandboxes/{SANDBOX}/campaigns/cmp-1"),
            "operator",
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&campaign["webhooksEnabled"], &campaign["updatedBy"]),
        (&json!(false), &json!("operator")),
        "the campaign toggled in the browser was published like any API write"
    );

    // Delete (with its confirmation), then create through the form.
    run("delete", with(&[("name", "Order feedback".into())])).await;
    let (status, _, _) = api.ask(Method::GET, &hook, "operator").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "deleted in the browser");
    let first = h.receiver.url("/first");
    run("create", with(&[("url", first.clone())])).await;
    let (status, _, created) = api.ask(Method::GET, &hook, "operator").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(created["url"], first.as_str());
    assert_eq!(created["channels"], json!(["email"]));
    assert_eq!(created["headers"], json!({"X-Partner-Id": "acme"}));
    assert_eq!(created["authentication"], json!({"type": "none"}));
    assert_eq!(created["signing"]["secret"]["set"], true, "{created}");
    assert_eq!(created["updatedBy"], "operator");

    // The processor delivers to the webhook made in the browser, signed.
    let mut processor = processor_with_api_settings(&h);
    let send = |id: &'static str| {
        let producer = &h.producer;
        let topic = h.topics.input.clone();
        async move {
            producer.send_json(&topic, Some(id), &spec_event(id)).await;
        }
    };
    send("e1").await;
    wait_request(&h, "/first", "e1", 1).await;
    let e1 = &requests_for(&h, "/first", "e1")[0];
    assert!(e1
        .header("webhook-signature")
        .is_some_and(|s| s.starts_with("v1,")));
    assert_eq!(e1.header("x-partner-id"), Some("acme"));

    // Edit the URL in the browser: the next event goes to the new one. And a concurrent
    // edit is reported.
    let second = h.receiver.url("/second");
    let jwt_key = "a-console-jwt-hmac-key-of-32-bytes";
    run(
        "edit",
        with(&[("url", second.clone()), ("jwt_key", jwt_key.into())]),
    )
    .await;
    send("e2").await;
    wait_request(&h, "/second", "e2", 1).await;
    assert!(requests_for(&h, "/first", "e2").is_empty());
    // Signed with the JWT key given in the form (and only sealed in the topic).
    let e2 = &requests_for(&h, "/second", "e2")[0];
    let token = e2
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .expect("a JWT");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["acme"]);
    jsonwebtoken::decode::<serde_json::Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(jwt_key.as_bytes()).unwrap(),
        &validation,
    )
    .expect("signed with the key given in the browser");

    // A delivered and a failed event in the log; redeliver one, then a window.
    h.receiver.respond(|_| Reply::status(400));
    send("e3").await;
    send("e4").await;
    let mut outcomes = crate::support::kafka::Reader::on(&h.topics.outcomes, &h.topics.bootstrap);
    let until = Instant::now() + PATIENCE;
    loop {
        outcomes.poll_for(Duration::from_millis(200));
        let by_id = outcomes.by_event_id();
        let failed = |id: &str| by_id.get(id).is_some_and(|o| o["status"] == "failed");
        if failed("e3") && failed("e4") {
            break;
        }
        assert!(Instant::now() < until, "e3 and e4 did not fail");
    }
    h.receiver.respond(|_| Reply::status(200));
    let out = run(
        "log",
        with(&[
            ("failed", "e3".into()),
            ("window_failed", "e4".into()),
            ("since", local_input(started)),
        ]),
    )
    .await;
    wait_request(&h, "/second", "e3", 2).await;
    wait_request(&h, "/second", "e4", 2).await;
    let again = &requests_for(&h, "/second", "e4")[1];
    let replay = out
        .lines()
        .find_map(|l| l.strip_prefix("window-replay "))
        .expect("the window's replay id");
    assert_eq!(again.header("webhook-replay-id"), Some(replay));

    // The receiver fails: the webhook's health says so (once its tracker and the API's
    // log have seen it). Then a test send shows its 503.
    h.receiver.respond(|_| Reply::status(503));
    send("e5").await;
    let until = Instant::now() + PATIENCE;
    loop {
        let (_, _, record) = api.ask(Method::GET, &hook, "operator").await;
        if record["health"]["state"] == "failing" {
            break;
        }
        assert!(Instant::now() < until, "never failing: {record}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    run("send-test", with(&[])).await;
    processor.stop();

    // A filter and a delivery policy through the form: refusals beside their fields, then
    // saved as the record's own fields.
    run("policy", with(&[])).await;
    let (status, _, saved) = api.ask(Method::GET, &hook, "operator").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        saved["filter"],
        json!({"all": [
            {"field": "messageDeliveryFeedback.messageFailure.type", "op": "equals", "value": "Hard"},
            {"not": {"field": "retryCount", "op": "gt", "value": 0}}
        ]}),
        "{saved}"
    );
    assert_eq!(
        saved["delivery"],
        json!({"timeoutMs": 5000, "retrySchedule": [1, 5, 30]})
    );
    assert_eq!(saved["rateLimit"], json!({"perSecond": 50, "burst": 5}));
    assert_eq!(
        saved["url"],
        second.as_str(),
        "the rest of the webhook kept"
    );

    // Failed sign-ins count against the client like the API's failed authentications
    // (5 a minute here): then 429, but a valid token is still let in.
    let attempt = |token: String| {
        let client = api.client.clone();
        let url = format!("{root}/console/sign-in");
        async move {
            client
                .post(url)
                .header("cookie", "fw_csrf=double")
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}&csrf=double"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let mut statuses = Vec::new();
    // Six: the browser's failed sign-in may have left the last minute.
    for _ in 0..6 {
        statuses.push(attempt("fwa_wrong".into()).await);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    let valid = attempt(api.token("operator").to_owned()).await;
    assert!(
        valid.is_success() || valid.is_redirection(),
        "a valid token after the client's failures: {valid}"
    );
    // A screenshot of every screen.
    for shot in [
        "sign-in",
        "org",
        "inventory",
        "inventory-phone",
        "campaigns",
        "delete",
        "edit-errors",
        "webhook",
        "edit-conflict",
        "delivery-log",
        "event",
        "redeliver-progress",
        "send-test",
        "policy-errors",
    ] {
        let bytes = std::fs::read(shots.join(format!("{shot}.png"))).expect("screenshot");
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is not a PNG");
    }
}
