//! The admin console in a real browser (headless Chromium over WebDriver, `console.py`),
//! against the real binary, broker and TLS listener; and its protections over plain HTTP.

use reqwest::{Method, StatusCode};

use crate::admin::{webhook_body, Api};
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_signs_in_shows_the_inventory_and_refuses_forged_forms() {
    let h = Harness::start("console").await;
    let api = Api::start(&h);
    api.wait_ready().await;
    let hook = format!("/orgs/{ORG}/sandboxes/{SANDBOX}/webhook");
    let (status, _, _) = api
        .call(
            Method::PUT,
            &hook,
            Some("operator"),
            None,
            Some(&webhook_body(&h.receiver.url("/api"))),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
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
    // A form post without its CSRF token is refused, whatever the token.
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

    // `CONSOLE_SCREENSHOTS` keeps them (e.g. docs/screenshots); else the test's folder.
    let shots = std::env::var("CONSOLE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| h.dir.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let out = std::process::Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/console.py"))
        .args([
            root.as_str(),
            api.token("operator"),
            api.token("other"),
            ORG,
            "Order feedback",
        ])
        .arg(&shots)
        .output()
        .expect("python3 with selenium (scripts/test installs it)");
    assert!(
        out.status.success(),
        "the console failed in the browser:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The campaign toggled in the browser was published like any API write.
    let (status, _, campaign) = api
        .call(
            Method::GET,
            &format!("/orgs/{ORG}/sandboxes/{SANDBOX}/campaigns/cmp-1"),
            Some("operator"),
            None,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(campaign["webhooksEnabled"], false);
    assert_eq!(campaign["updatedBy"], "operator");
    // Failed sign-ins count against the address like the API's failed authentications
    // (5 a minute here; the browser made one): then even a valid token waits.
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
    for _ in 0..5 {
        statuses.push(attempt("fwa_wrong".into()).await);
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    assert_eq!(
        attempt(api.token("operator").to_owned()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    for shot in ["sign-in.png", "inventory.png", "campaigns.png"] {
        let bytes = std::fs::read(shots.join(shot)).expect("screenshot");
        assert!(bytes.starts_with(b"\x89PNG"), "{shot} is not a PNG");
    }
}
