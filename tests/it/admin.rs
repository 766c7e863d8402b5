//! The administration API (`feedback-webhooks admin`): the real binary over TLS, with tokens
//! hashed in its settings, publishing to the real broker; and the processor delivering
//! with what it published.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use feedback_webhooks::admin::tokens;
use feedback_webhooks::receiver::LocalCa;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::processor::{cli, Processor};
use crate::support::*;

/// A running admin API with its tokens.
pub struct Api {
    process: Processor,
    pub base: String,
    pub client: reqwest::Client,
    /// Tokens by name: `operator` (every org, write), `acme` (org acme, write),
    /// `acme-reader` (acme/sb1, read), `other` (org other, write).
    tokens: Vec<(String, String)>,
    /// The CA that signed the API's certificate.
    ca_pem: String,
    /// How it was started (for a second instance).
    env: Vec<(String, String)>,
    config: std::path::PathBuf,
}

const KEY_FILE: &str = "config-key";

/// An answer: its status, its ETag, and its JSON body.
pub type Answer = (StatusCode, Option<String>, Value);

impl Api {
    pub fn start(h: &Harness) -> Api {
        Api::start_with(h, &[])
    }

    fn start_with(h: &Harness, extra_env: &[(&str, &str)]) -> Api {
        let dir = h.dir.path();
        let ca = LocalCa::generate(&["127.0.0.1"]).expect("CA");
        std::fs::write(dir.join("admin-cert.pem"), &ca.cert_pem).unwrap();
        std::fs::write(dir.join("admin-key.pem"), &ca.key_pem).unwrap();
        write_key(dir);
        let mut settings = String::new();
        let mut known = Vec::new();
        for (name, scope, right) in [
            ("operator", "operator", "write"),
            ("acme", "acme", "write"),
            ("acme-reader", "acme/sb1", "read"),
            ("other", "other", "write"),
            ("reader", "myImsOrg", "read"),
        ] {
            let (token, hash) = tokens::generate().unwrap();
            settings.push_str(&format!(
                "[[admin.tokens]]\nname = \"{name}\"\nhash = \"{hash}\"\nscope = \"{scope}\"\nright = \"{right}\"\n"
            ));
            known.push((name.to_owned(), token));
        }
        let config = dir.join("admin.toml");
        std::fs::write(&config, settings).unwrap();
        let mut env = admin_env(h);
        env.push((
            "FW_ADMIN__TLS_CERT_FILE".into(),
            dir.join("admin-cert.pem").display().to_string(),
        ));
        env.push((
            "FW_ADMIN__TLS_KEY_FILE".into(),
            dir.join("admin-key.pem").display().to_string(),
        ));
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let mut process = Processor::spawn(&["admin"], &env, dir.join("admin.log"), Some(&config));
        let line = process.wait_log("admin API listening", 1);
        let base = line[0]["fields"]["url"].as_str().expect("url").to_owned();
        Api {
            process,
            base,
            client: client(&ca.ca_pem),
            tokens: known,
            ca_pem: ca.ca_pem.clone(),
            env,
            config,
        }
    }

    /// Another instance with the same settings and tokens, and its own cache and log index
    /// (as behind a load balancer).
    fn another(&self, dir: &Path, name: &str) -> Api {
        let mut env = self.env.clone();
        for (key, folder) in [
            ("FW_ADMIN__STORE_PATH", "store"),
            ("FW_ADMIN__DELIVERIES_PATH", "deliveries"),
        ] {
            env.retain(|(k, _)| k != key);
            let path = dir.join(format!("{name}-{folder}"));
            env.push((key.into(), path.display().to_string()));
        }
        let log = dir.join(format!("{name}.log"));
        let mut process = Processor::spawn(&["admin"], &env, log, Some(&self.config));
        let line = process.wait_log("admin API listening", 1);
        Api {
            process,
            base: line[0]["fields"]["url"].as_str().expect("url").to_owned(),
            client: client(&self.ca_pem),
            tokens: self.tokens.clone(),
            ca_pem: self.ca_pem.clone(),
            env,
            config: self.config.clone(),
        }
    }

    /// A client of this API that shows redirects instead of following them.
    pub fn client_without_redirects(&self) -> reqwest::Client {
        client_with(&self.ca_pem, reqwest::redirect::Policy::none())
    }

    pub fn token(&self, name: &str) -> &str {
        &self.tokens.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// The API of `h`, once ready, with the webhook of ORG + SANDBOX (to `h`'s receiver)
    /// created and CAMPAIGN opted in, by the operator; and the webhook's path.
    pub async fn with_webhook(h: &Harness) -> (Api, String) {
        Api::with_webhook_and(h, &[]).await
    }

    /// [`Api::with_webhook`], the API started with `extra_env` too.
    pub async fn with_webhook_and(h: &Harness, extra_env: &[(&str, &str)]) -> (Api, String) {
        let api = Api::start_with(h, extra_env);
        api.wait_ready().await;
        let hook = format!("/orgs/{ORG}/sandboxes/{SANDBOX}/webhook");
        let body = webhook_body(&h.receiver.url("/api"));
        let (status, _, created) = api.send(Method::PUT, &hook, "operator", &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let campaign = format!("/orgs/{ORG}/sandboxes/{SANDBOX}/campaigns/{CAMPAIGN}");
        let (status, _, _) = api.ask(Method::PUT, &campaign, "operator").await;
        assert_eq!(status, StatusCode::CREATED);
        (api, hook)
    }

    /// A request without a body as `who`.
    pub async fn ask(&self, method: Method, path: &str, who: &str) -> Answer {
        self.call(method, path, Some(who), None, None).await
    }

    /// A request with a JSON `body` as `who`.
    pub async fn send(&self, method: Method, path: &str, who: &str, body: &Value) -> Answer {
        self.call(method, path, Some(who), None, Some(body)).await
    }

    /// One request as `who` (a token name, or `None` for no token).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        who: Option<&str>,
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Answer {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(who) = who {
            request = request.bearer_auth(self.token(who));
        }
        if let Some(tag) = if_match {
            request = request.header("if-match", tag);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        let etag = response
            .headers()
            .get("etag")
            .map(|v| v.to_str().unwrap().to_owned());
        if status.is_client_error() || status.is_server_error() {
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json",
                "{status}"
            );
        }
        let text = response.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, etag, value)
    }

    pub async fn wait_ready(&self) {
        let until = Instant::now() + PATIENCE;
        loop {
            let url = self.base.replace("/api/v1", "/readyz");
            if let Ok(r) = self.client.get(&url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(Instant::now() < until, "admin API not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn write_key(dir: &Path) {
    let key = feedback_webhooks::domain::secret::SealingKey::generate_base64();
    std::fs::write(dir.join(KEY_FILE), key).unwrap();
}

/// A processor with the API's settings (its key file among them), but none of the API's own.
pub(crate) fn processor_with_api_settings(h: &Harness) -> Processor {
    let mut env = admin_env(h);
    env.retain(|(k, _)| !k.starts_with("FW_ADMIN"));
    Processor::start(&env, h.dir.path().join("processor.log"))
}

pub(crate) fn admin_env(h: &Harness) -> Vec<(String, String)> {
    let dir = h.dir.path();
    let mut env = h.env.clone();
    env.extend([
        ("FW_ADMIN__LISTEN".into(), "127.0.0.1:0".into()),
        ("FW_ADMIN__METRICS_LISTEN".into(), "127.0.0.1:0".into()),
        (
            "FW_ADMIN__STORE_PATH".into(),
            dir.join("admin-store").display().to_string(),
        ),
        (
            "FW_ADMIN__DELIVERIES_PATH".into(),
            dir.join("admin-deliveries").display().to_string(),
        ),
        (
            "FW_SECRETS__ENCRYPTION_KEY_FILE".into(),
            dir.join(KEY_FILE).display().to_string(),
        ),
        ("FW_ADMIN__AUTH_FAILURES_PER_MINUTE".into(), "5".into()),
    ]);
    env
}

fn client(ca_pem: &str) -> reqwest::Client {
    client_with(ca_pem, reqwest::redirect::Policy::default())
}

/// A TLS client configuration that trusts `ca_pem` only.
fn tls_trusting(ca_pem: &str) -> rustls::ClientConfig {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

fn client_with(ca_pem: &str, redirects: reqwest::redirect::Policy) -> reqwest::Client {
    reqwest::Client::builder()
        .use_preconfigured_tls(tls_trusting(ca_pem))
        .redirect(redirects)
        .build()
        .unwrap()
}

/// The webhook record the config topic holds now (`config get`).
fn in_topic(h: &Harness, org: &str, sandbox: &str) -> Value {
    let (ok, out, err) = cli(
        &h.env,
        &["config", "get", "--org", org, "--sandbox", sandbox],
    );
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

const HMAC_KEY: &str = "a-shared-jwt-hmac-key-of-32-bytes!";
/// A receiver's API key, given to the API as a secret header value.
const API_KEY: &str = "partner-api-key-7f3a";

pub fn webhook_body(url: &str) -> Value {
    json!({
        "sandbox": { "name": "prod" },
        "name": "Order feedback",
        "channels": ["email"],
        "url": url,
        "enabled": true,
        "authentication": {
            "type": "jwt", "algorithm": "HS256", "key": { "value": HMAC_KEY },
            "issuer": "ajo", "subject": "feedback", "audience": "acme", "expiresInSeconds": 300
        },
        "headers": { "X-Partner-Id": "acme", "X-Api-Key": { "value": API_KEY } }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn webhooks_are_published_validated_and_versioned() {
    let h = Harness::start("admin-crud").await;
    let api = Api::start(&h);
    api.wait_ready().await;
    let hook = "/orgs/acme/sandboxes/sb1/webhook";

    // Create: 201 with its version; the secret is never shown, only set and a fingerprint.
    let (status, etag, created) = api
        .send(
            Method::PUT,
            hook,
            "acme",
            &webhook_body("https://hooks.example.com/a"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let etag = etag.expect("ETag");
    assert_eq!(
        etag,
        format!("\"{}\"", created["version"].as_str().unwrap())
    );
    assert_eq!(created["imsOrg"], "acme");
    assert_eq!(created["sandbox"]["id"], "sb1");
    assert_eq!(created["updatedBy"], "acme");
    let key = &created["authentication"]["key"];
    assert_eq!(key["set"], true);
    assert_eq!(key["fingerprint"].as_str().unwrap().len(), 8);
    assert!(!created.to_string().contains(HMAC_KEY));
    // A header value given as a secret is sealed like the key; text stays text.
    assert_eq!(created["headers"]["X-Api-Key"]["set"], true);
    assert_eq!(created["headers"]["X-Partner-Id"], "acme");
    assert!(!created.to_string().contains(API_KEY));

    // Read your write: the same version, at once.
    let (status, get_tag, read) = api.ask(Method::GET, hook, "acme").await;
    assert_eq!(
        (status, get_tag.as_deref()),
        (StatusCode::OK, Some(etag.as_str()))
    );
    assert_eq!(read, created);

    // In the topic: sealed, stamped, no plaintext.
    let record = in_topic(&h, "acme", "sb1");
    assert!(record["authentication"]["key"]["encrypted"].is_string());
    assert!(record["headers"]["X-Api-Key"]["encrypted"].is_string());
    assert!(!record.to_string().contains(HMAC_KEY) && !record.to_string().contains(API_KEY));
    assert_eq!(record["updatedBy"], "acme");

    // A second create is a conflict; a stale version is refused; a missing one required.
    let body = webhook_body("https://hooks.example.com/b");
    let (status, _, problem) = api.send(Method::PUT, hook, "acme", &body).await;
    assert_eq!(status, StatusCode::CONFLICT, "{problem}");
    let (status, _, _) = api
        .call(
            Method::PUT,
            hook,
            Some("acme"),
            Some("\"9-999\""),
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);
    let (status, _, _) = api.ask(Method::DELETE, hook, "acme").await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);

    // Replace with the current version, keeping the secret by sending back what was shown.
    let mut edit = read.clone();
    edit["url"] = json!("https://hooks.example.com/b");
    let filter = json!({"any": [
        {"field": "feedbackStatus", "op": "in", "values": ["bounce", "error"]},
        {"not": {"field": "messageDeliveryFeedback.messageFailure.type", "op": "exists"}}
    ]});
    edit["filter"] = filter.clone();
    let (status, new_tag, replaced) = api
        .call(Method::PUT, hook, Some("acme"), Some(&etag), Some(&edit))
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    assert_ne!(new_tag.as_deref(), Some(etag.as_str()));
    assert_eq!(replaced["url"], "https://hooks.example.com/b");
    assert_eq!(replaced["filter"], filter, "a filter reads back as written");
    assert_eq!(
        replaced["authentication"]["key"],
        read["authentication"]["key"]
    );
    // The old version no longer replaces anything: no silent overwrite.
    let (status, _, _) = api
        .call(Method::PUT, hook, Some("acme"), Some(&etag), Some(&edit))
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED);

    // Every refusal at once, each with its JSON pointer; nothing published.
    let mut bad = webhook_body("http://hooks.example.com/x");
    bad["headers"] = json!({ "Host": "evil.example.com" });
    bad["channels"] = json!(["fax"]);
    bad["filter"] = json!({"all": [{"field": "retryCount", "op": "gt", "value": "many"}]});
    let (status, _, problem) = api
        .send(
            Method::PUT,
            "/orgs/acme/sandboxes/sb2/webhook",
            "acme",
            &bad,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    for p in [
        "/url",
        "/headers/Host",
        "/channels/0",
        "/filter/all/0/value",
    ] {
        assert!(pointers.contains(&p), "{p} not in {problem}");
    }
    assert!(!problem.to_string().contains(HMAC_KEY));

    // Disable and enable keep everything else.
    let (status, _, disabled) = api
        .ask(Method::POST, &format!("{hook}/disable"), "acme")
        .await;
    assert_eq!(
        (status, &disabled["enabled"]),
        (StatusCode::OK, &json!(false))
    );
    assert_eq!(disabled["url"], "https://hooks.example.com/b");

    // The inventory: paged, filtered.
    let second = webhook_body("https://hooks.example.com/c");
    let (status, _, _) = api
        .send(
            Method::PUT,
            "/orgs/acme/sandboxes/sb0/webhook",
            "acme",
            &second,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (_, _, page) = api
        .ask(Method::GET, "/orgs/acme/webhooks?limit=1", "acme")
        .await;
    assert_eq!(page["items"][0]["sandbox"]["id"], "sb0");
    let cursor = page["nextCursor"].as_str().expect("a next page");
    let (_, _, page2) = api
        .ask(
            Method::GET,
            &format!("/orgs/acme/webhooks?limit=1&cursor={cursor}"),
            "acme",
        )
        .await;
    assert_eq!(page2["items"][0]["sandbox"]["id"], "sb1");
    assert_eq!(page2["nextCursor"], Value::Null);
    let (_, _, enabled) = api
        .ask(Method::GET, "/orgs/acme/webhooks?enabled=true", "acme")
        .await;
    assert_eq!(enabled["items"].as_array().unwrap().len(), 1);
    let (_, _, sms) = api
        .ask(Method::GET, "/orgs/acme/webhooks?channel=sms", "acme")
        .await;
    assert_eq!(sms["items"], json!([]));

    // Campaign opt-ins: on, listed, off.
    let campaigns = "/orgs/acme/sandboxes/sb1/campaigns";
    let (status, _, c) = api
        .ask(Method::PUT, &format!("{campaigns}/c1"), "acme")
        .await;
    assert_eq!(
        (status, &c["webhooksEnabled"]),
        (StatusCode::CREATED, &json!(true))
    );
    let off = json!({ "webhooksEnabled": false });
    let (status, _, c) = api
        .send(Method::PUT, &format!("{campaigns}/c2"), "acme", &off)
        .await;
    assert_eq!(
        (status, &c["webhooksEnabled"]),
        (StatusCode::CREATED, &json!(false))
    );
    let (_, _, list) = api.ask(Method::GET, campaigns, "acme").await;
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["campaignID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
    // Like a webhook's: a second create conflicts, a delete names the version it removes.
    let (status, _, _) = api
        .send(Method::PUT, &format!("{campaigns}/c2"), "acme", &off)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let c2 = format!("{campaigns}/c2");
    let (status, _, _) = api.ask(Method::DELETE, &c2, "acme").await;
    assert_eq!(status, StatusCode::PRECONDITION_REQUIRED);
    let (_, c2_tag, _) = api.ask(Method::GET, &c2, "acme").await;
    let (status, _, _) = api
        .call(Method::DELETE, &c2, Some("acme"), c2_tag.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, _, list) = api.ask(Method::GET, campaigns, "acme").await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);

    // Delete with the current version: gone.
    let (_, tag, _) = api.ask(Method::GET, hook, "acme").await;
    let (status, _, _) = api
        .call(Method::DELETE, hook, Some("acme"), tag.as_deref(), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = api.ask(Method::GET, hook, "acme").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every write is an audit line naming who, the key and the versions; no secret logged.
    let audit: Vec<Value> = api
        .process
        .log_lines()
        .into_iter()
        .filter(|l| l["fields"]["message"] == "config write")
        .collect();
    assert!(audit.len() >= 8, "{audit:?}");
    assert!(audit
        .iter()
        .any(|l| l["fields"]["action"] == "delete" && l["fields"]["key"] == "webhook/acme/sb1"));
    let log = std::fs::read_to_string(h.dir.path().join("admin.log")).unwrap();
    assert!(!log.contains(HMAC_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_reach_only_their_scope() {
    let h = Harness::start("admin-scope").await;
    let api = Api::start(&h);
    api.wait_ready().await;
    let hook = "/orgs/acme/sandboxes/sb1/webhook";
    let body = webhook_body("https://hooks.example.com/a");
    let (status, _, _) = api.send(Method::PUT, hook, "acme", &body).await;
    assert_eq!(status, StatusCode::CREATED);

    // `%2F` decodes to `/` in a path segment: refused at the edge, never part of a key.
    for path in [
        "/orgs/acme%2Fsb1/webhooks",
        "/orgs/acme/sandboxes/sb1%2Fx/webhook",
        "/orgs/acme/sandboxes/sb1/campaigns/c%2F1",
        "/orgs/acme/sandboxes/sb1/webhook/deliveries/e%20with%20space/redeliver",
    ] {
        let method = if path.ends_with("redeliver") {
            Method::POST
        } else {
            Method::GET
        };
        let (status, _, body) = api.ask(method, path, "operator").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
    }

    // Another org's token: the webhook and the org do not exist for it.
    for path in [
        hook,
        "/orgs/acme/webhooks",
        "/orgs/acme/sandboxes/sb1/campaigns",
    ] {
        let (status, _, _) = api.ask(Method::GET, path, "other").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    let (status, _, _) = api
        .call(Method::DELETE, hook, Some("other"), Some("*"), None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A read token of acme/sb1 reads there, writes nowhere, and sees no other sandbox.
    let (status, _, _) = api.ask(Method::GET, hook, "acme-reader").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api
        .ask(Method::POST, &format!("{hook}/disable"), "acme-reader")
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = api
        .ask(
            Method::GET,
            "/orgs/acme/sandboxes/sb2/webhook",
            "acme-reader",
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The operator sees everything.
    let (status, _, _) = api.ask(Method::GET, hook, "operator").await;
    assert_eq!(status, StatusCode::OK);

    // Without a valid token: 401 with a challenge; too many failures: 429; the token is
    // never logged.
    let response = api
        .client
        .get(format!("{}{hook}", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let wrong = "fwa_not-a-token-anyone-was-given";
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let r = api
            .client
            .get(format!("{}{hook}", api.base))
            .bearer_auth(wrong)
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 429, 429],
        "5 failures a minute"
    );
    // A valid token from the same client is still served: others' failures lock no one out.
    let (status, _, _) = api.ask(Method::GET, hook, "operator").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a valid token after the client's 429s"
    );
    let log = std::fs::read_to_string(h.dir.path().join("admin.log")).unwrap();
    assert!(log.contains("authentication failed"));
    for (_, token) in &api.tokens {
        assert!(!log.contains(token.as_str()));
    }
    assert!(!log.contains(wrong));
    // Every authenticated attempt to change something is audited, refused ones too, with
    // who and from where.
    let audited: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| {
            l["target"] == "feedback_webhooks::audit" && l["fields"]["message"] == "request"
        })
        .collect();
    let refused = audited
        .iter()
        .find(|l| l["fields"]["who"] == "acme-reader" && l["fields"]["status"] == 403);
    let refused =
        refused.unwrap_or_else(|| panic!("no audit line of the refused write: {audited:?}"));
    assert_eq!(refused["fields"]["client"], "127.0.0.1");
    assert_eq!(refused["fields"]["method"], "POST");
}

/// What the API publishes is what the processor delivers with: the JWT key sealed by the
/// API opens in the processor, and the campaign opt-in takes effect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_processor_delivers_with_what_the_api_published() {
    let h = Harness::start("admin-e2e").await;
    // Two single redeliveries a minute per webhook (e1's refused one counts).
    let budget = [("FW_ADMIN__REDELIVERIES_PER_MINUTE", "2")];
    let (api, hook) = Api::with_webhook_and(&h, &budget).await;

    // A test send goes through the same sender (the JWT included) and writes no outcome.
    let test = format!("{hook}/test");
    let (status, _, sent) = api.ask(Method::POST, &test, "operator").await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(
        (&sent["delivered"], &sent["httpStatus"]),
        (&json!(true), &json!(200))
    );
    let tested = h.receiver.wait_for(1).await;
    let id = tested[0].header("webhook-id").unwrap().to_owned();
    assert!(id.starts_with("test-") && sent["webhookId"] == id.as_str());
    assert!(tested[0]
        .header("authorization")
        .unwrap()
        .starts_with("Bearer "));
    let payload: Value = serde_json::from_slice(&tested[0].body).unwrap();
    assert_eq!(
        (&payload["imsOrg"], &payload["sandbox"]["id"]),
        (&json!(ORG), &json!(SANDBOX))
    );
    h.receiver
        .respond(|_| feedback_webhooks::receiver::Reply::status(503));
    let (status, _, failed) = api.ask(Method::POST, &test, "operator").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&failed["delivered"], &failed["httpStatus"]),
        (&json!(false), &json!(503))
    );
    assert!(failed["latencyMs"].is_u64());
    h.receiver
        .respond(|_| feedback_webhooks::receiver::Reply::status(200));

    let mut processor = processor_with_api_settings(&h);
    h.producer
        .send_json(&h.topics.input, Some("e1"), &spec_event("e1"))
        .await;
    let received = h.receiver.wait_for(3).await;
    let event = received
        .iter()
        .find(|r| r.header("webhook-id") == Some("e1"))
        .expect("the event delivered");
    let auth = event.header("authorization").expect("a JWT");
    let token = auth.strip_prefix("Bearer ").unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.set_audience(&["acme"]);
    let claims = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(HMAC_KEY.as_bytes()).unwrap(),
        &validation,
    )
    .expect("signed with the key given to the API");
    assert_eq!(claims.claims["iss"], "ajo");
    assert_eq!(event.header("x-partner-id"), Some("acme"));
    assert_eq!(
        event.header("x-api-key"),
        Some(API_KEY),
        "the sealed header, opened"
    );
    assert_eq!(tested[0].header("x-api-key"), Some(API_KEY));
    // One outcome: the event's; the test sends wrote none.
    let mut outcomes = crate::support::kafka::Reader::on(&h.topics.outcomes, &h.topics.bootstrap);
    outcomes.wait_for(1);
    outcomes.poll_for(Duration::from_secs(2));
    let ids: Vec<&str> = outcomes
        .records
        .iter()
        .map(|o| o["eventId"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["e1"]);

    // The delivery log: the outcome, under its webhook, with its attempts.
    let deliveries = format!("{hook}/deliveries?status=delivered&channel=email");
    let until = Instant::now() + PATIENCE;
    let log = loop {
        let (status, _, log) = api.ask(Method::GET, &deliveries, "operator").await;
        assert_eq!(status, StatusCode::OK, "{log}");
        if !log["items"].as_array().unwrap().is_empty() {
            break log;
        }
        assert!(
            Instant::now() < until,
            "the outcome never reached the delivery log"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let entry = &log["items"][0];
    assert_eq!(
        (&entry["eventId"], &entry["status"]),
        (&json!("e1"), &json!("delivered"))
    );
    assert_eq!(entry["attempts"][0]["httpStatus"], 200);
    let (_, _, none) = api
        .ask(
            Method::GET,
            &format!("{hook}/deliveries?status=failed"),
            "operator",
        )
        .await;
    assert_eq!(none["items"], json!([]));
    let (status, _, _) = api
        .ask(Method::GET, &format!("{hook}/deliveries"), "other")
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A failed event, then redeliver: it ends delivered, under the replay id returned.
    let since = feedback_webhooks::domain::time::rfc3339_millis(std::time::SystemTime::now());
    h.receiver
        .respond(|_| feedback_webhooks::receiver::Reply::status(400));
    h.producer
        .send_json(&h.topics.input, Some("e2"), &spec_event("e2"))
        .await;
    let failed = wait_for_outcome(&api, &hook, "e2", |o| o["status"] == "failed").await;
    assert_eq!(failed["attempts"][0]["httpStatus"], 400);
    assert_eq!(failed["reason"], "http_status");
    h.receiver
        .respond(|_| feedback_webhooks::receiver::Reply::status(200));
    let redeliver = |id: &str| format!("{hook}/deliveries/{id}/redeliver");
    let (status, _, _) = api.ask(Method::POST, &redeliver("e2"), "reader").await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "a read token may not redeliver"
    );
    let (status, _, refused) = api.ask(Method::POST, &redeliver("e1"), "operator").await;
    assert_eq!(status, StatusCode::CONFLICT, "e1 was delivered: {refused}");
    let (status, _, _) = api.ask(Method::POST, &redeliver("nope"), "operator").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, queued) = api.ask(Method::POST, &redeliver("e2"), "operator").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{queued}");
    let replay_id = queued["replayId"].as_str().expect("a replay id").to_owned();
    let (status, _, limited) = api.ask(Method::POST, &redeliver("e2"), "operator").await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "the webhook's budget: {limited}"
    );
    let again = wait_for_outcome(&api, &hook, "e2", |o| o["status"] == "delivered").await;
    assert_eq!(again["replay"]["id"], replay_id.as_str());
    let requests = h.receiver.received();
    let redelivered: Vec<_> = requests
        .iter()
        .filter(|r| r.header("webhook-id") == Some("e2"))
        .collect();
    assert_eq!(redelivered.len(), 2, "sent once, redelivered once");
    assert_eq!(
        redelivered[1].header("webhook-replay-id"),
        Some(replay_id.as_str())
    );

    // A window: only e3 still has a failed latest outcome (e2 was delivered since).
    h.receiver
        .respond(|_| feedback_webhooks::receiver::Reply::status(400));
    h.producer
        .send_json(&h.topics.input, Some("e3"), &spec_event("e3"))
        .await;
    wait_for_outcome(&api, &hook, "e3", |o| o["status"] == "failed").await;
    h.receiver
        .respond(|_| feedback_webhooks::receiver::Reply::status(200));
    let window = format!("{hook}/redeliver");
    let (status, _, refused) = api
        .send(
            Method::POST,
            &window,
            "operator",
            &json!({ "status": ["delivered"] }),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let pointers: Vec<&str> = refused["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap())
        .collect();
    assert_eq!(pointers, ["/status/0", "/from"]);
    let (status, _, started) = api
        .send(
            Method::POST,
            &window,
            "operator",
            &json!({ "status": ["failed"], "from": since }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let window_id = started["replayId"].as_str().unwrap().to_owned();
    let progress = &format!("{window}/{window_id}");
    let until = Instant::now() + PATIENCE;
    let done = loop {
        let (status, _, run) = api.ask(Method::GET, progress, "operator").await;
        assert_eq!(status, StatusCode::OK, "{run}");
        if run["state"] != "running" {
            break run;
        }
        assert!(Instant::now() < until, "the window never finished: {run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (&done["state"], &done["queued"]),
        (&json!("done"), &json!(1)),
        "{done}"
    );
    let (status, _, _) = api.ask(Method::GET, progress, "other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let redone = wait_for_outcome(&api, &hook, "e3", |o| o["status"] == "delivered").await;
    assert_eq!(redone["replay"]["id"], window_id.as_str());
    processor.stop();
    // The JWT key given to the API is in no outcome, log or delivery-log answer.
    let mut outcomes = crate::support::kafka::Reader::on(&h.topics.outcomes, &h.topics.bootstrap);
    outcomes.wait_for(5);
    for o in &outcomes.records {
        assert!(
            !o.to_string().contains(HMAC_KEY),
            "secret in an outcome: {o}"
        );
    }
    for log in ["processor.log", "admin.log"] {
        let text = std::fs::read_to_string(h.dir.path().join(log)).unwrap();
        assert!(!text.contains(HMAC_KEY), "secret in {log}");
    }
    let (_, _, all) = api
        .ask(Method::GET, &format!("{hook}/deliveries"), "operator")
        .await;
    assert!(!all.to_string().contains(HMAC_KEY));
}

/// Waits until the delivery log's newest outcome of `event` passes `done`.
async fn wait_for_outcome(
    api: &Api,
    hook: &str,
    event: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let until = Instant::now() + PATIENCE;
    loop {
        let (status, _, log) = api
            .ask(Method::GET, &format!("{hook}/deliveries"), "operator")
            .await;
        assert_eq!(status, StatusCode::OK, "{log}");
        let newest = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["eventId"] == event)
            .cloned();
        if let Some(outcome) = newest.filter(|o| done(o)) {
            return outcome;
        }
        assert!(
            Instant::now() < until,
            "no such outcome of {event} in the delivery log: {log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A property-based tester, driven by the served OpenAPI document, finds no server error and
/// no answer that the document does not describe (status, content type, body, headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_server_conforms_to_its_openapi_document() {
    let h = Harness::start("admin-openapi").await;
    // The tester sends requests without a token on purpose; past the failure limit (or the
    // write quota) every answer would be 429 and nothing behind it tested.
    let api = Api::start_with(
        &h,
        &[
            ("FW_ADMIN__AUTH_FAILURES_PER_MINUTE", "1000000"),
            ("FW_ADMIN__WRITES_PER_MINUTE", "1000000"),
        ],
    );
    api.wait_ready().await;
    // Something to read: a webhook and an opt-in.
    let hook = format!("/orgs/{ORG}/sandboxes/{SANDBOX}/webhook");
    let body = webhook_body(&h.receiver.url("/api"));
    let (status, _, _) = api.send(Method::PUT, &hook, "operator", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, document) = api.ask(Method::GET, "/openapi.json", "operator").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(document["openapi"], "3.1.0");
    let dir = h.dir.path();
    std::fs::write(dir.join("api-ca.pem"), &api.ca_pem).unwrap();
    let root = api.base.trim_end_matches("/api/v1");
    let out = std::process::Command::new("python3")
        .current_dir(dir)
        .args(["-m", "schemathesis.cli", "run"])
        .arg(format!("{}/openapi.json", api.base))
        .args(["--url", root])
        .arg("--header")
        .arg(format!("Authorization: Bearer {}", api.token("operator")))
        .arg("--tls-verify")
        .arg(dir.join("api-ca.pem"))
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
            "--max-examples",
            "25",
            "--generation-deterministic",
            // A test send would call whatever URL a generated webhook names: never leave
            // loopback. Test sends are covered by the end-to-end test.
            "--exclude-path-regex",
            "/test$",
            "--report",
            "junit",
            "--report-junit-path",
        ])
        .arg(dir.join("junit.xml"))
        .output()
        .expect("schemathesis (scripts/test installs it)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
    assert!(
        !stdout.contains("Rate limited"),
        "the tester was rate limited:\n{stdout}"
    );
    let junit = std::fs::read_to_string(dir.join("junit.xml")).expect("junit report");
    let operations = junit.matches("<testcase").count();
    assert!(
        operations >= 14,
        "only {operations} operations were tested:\n{stdout}"
    );
}

/// Two instances behind a load balancer answer consistently: each sees the other's writes,
/// and a version one handed out is checked by the other before it writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_answer_consistently() {
    let h = Harness::start("admin-two").await;
    let a = Api::start(&h);
    let b = a.another(h.dir.path(), "admin-b");
    a.wait_ready().await;
    b.wait_ready().await;
    let hook = format!("/orgs/{ORG}/sandboxes/{SANDBOX}/webhook");
    let body = webhook_body(&h.receiver.url("/a"));
    let (status, v1, _) = a.send(Method::PUT, &hook, "operator", &body).await;
    assert_eq!(status, StatusCode::CREATED);
    // B follows the topic: it serves A's write shortly after.
    let until = Instant::now() + PATIENCE;
    loop {
        let (status, tag, _) = b.ask(Method::GET, &hook, "operator").await;
        if status == StatusCode::OK {
            assert_eq!(tag, v1);
            break;
        }
        assert!(Instant::now() < until, "B never saw A's webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A second create on B is refused, however fresh B's cache.
    let (status, _, _) = b.send(Method::PUT, &hook, "operator", &body).await;
    assert_eq!(status, StatusCode::CONFLICT);
    // B replaces with A's version; then A's stale version is refused at A.
    let mut edited = body.clone();
    edited["url"] = json!(h.receiver.url("/b"));
    let (status, v2, _) = b
        .call(
            Method::PUT,
            &hook,
            Some("operator"),
            v1.as_deref(),
            Some(&edited),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(v2, v1);
    let (status, _, stale) = a
        .call(
            Method::PUT,
            &hook,
            Some("operator"),
            v1.as_deref(),
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::PRECONDITION_FAILED, "{stale}");
    // A answers reads with B's write once it has applied it, and both list the same.
    let (status, tag, read) = a.ask(Method::GET, &hook, "operator").await;
    assert_eq!((status, tag), (StatusCode::OK, v2.clone()));
    assert_eq!(read["url"], h.receiver.url("/b"));
    let inventory = format!("/orgs/{ORG}/webhooks");
    let (_, _, from_a) = a.ask(Method::GET, &inventory, "operator").await;
    let (_, _, from_b) = b.ask(Method::GET, &inventory, "operator").await;
    assert_eq!(from_a, from_b);
    assert_eq!(from_a["items"].as_array().unwrap().len(), 1);

    // Two administrators replace the same version at once, one through each instance:
    // exactly one wins, the other is told (412), every time.
    let mut version = v2;
    for round in 0..10 {
        let mut at_a = body.clone();
        at_a["name"] = json!(format!("a-{round}"));
        let mut at_b = body.clone();
        at_b["name"] = json!(format!("b-{round}"));
        let (ra, rb) = tokio::join!(
            a.call(
                Method::PUT,
                &hook,
                Some("operator"),
                version.as_deref(),
                Some(&at_a)
            ),
            b.call(
                Method::PUT,
                &hook,
                Some("operator"),
                version.as_deref(),
                Some(&at_b)
            ),
        );
        let statuses = [ra.0, rb.0];
        assert!(
            statuses.contains(&StatusCode::OK)
                && statuses.contains(&StatusCode::PRECONDITION_FAILED),
            "round {round}: {statuses:?} {} {}",
            ra.2,
            rb.2
        );
        let (winner, name) = if ra.0 == StatusCode::OK {
            (ra.1, format!("a-{round}"))
        } else {
            (rb.1, format!("b-{round}"))
        };
        // What both instances serve is the winner's write.
        for api in [&a, &b] {
            let until = Instant::now() + PATIENCE;
            loop {
                let (_, tag, read) = api.ask(Method::GET, &hook, "operator").await;
                if tag == winner {
                    assert_eq!(read["name"], name.as_str());
                    break;
                }
                assert!(
                    Instant::now() < until,
                    "round {round}: the winner never showed"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        version = winner;
    }
}

/// Silent connections, half-sent requests and a flood of connections cannot take the API:
/// the TLS handshake and a request's header have deadlines (10 s and 15 s), and the
/// connections it holds are capped (`admin.max_connections`); beyond the cap a client
/// waits to be accepted instead of the server running out of file descriptors.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn silent_connections_are_closed_and_connections_are_capped() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::start("admin-deadlines").await;
    let api = Api::start_with(&h, &[("FW_ADMIN__MAX_CONNECTIONS", "8")]);
    api.wait_ready().await;
    let addr = api.base["https://".len()..]
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    // Reads until the server closes the connection (EOF or a reset), or fails the test.
    async fn closed_within(stream: &mut (impl AsyncReadExt + Unpin), secs: u64, what: &str) {
        let mut buf = [0u8; 1024];
        let read = async {
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(secs), read)
            .await
            .unwrap_or_else(|_| panic!("{what}: still open after {secs} s"));
    }

    // Nine silent TCP connections: eight are accepted (the cap) and say nothing.
    let mut silent = Vec::new();
    for _ in 0..9 {
        silent.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let started = Instant::now();
    // A request now waits for a place, and is served once the silent ones are closed.
    let client = client(&api.ca_pem);
    let url = format!("{}/orgs/{ORG}/sandboxes/{SANDBOX}/webhook", api.base);
    let token = api.token("operator").to_owned();
    let waiting = tokio::spawn(async move { client.get(url).bearer_auth(token).send().await });
    for (i, stream) in silent.iter_mut().enumerate() {
        closed_within(stream, 45, &format!("silent connection {i}")).await;
    }
    let answer = tokio::time::timeout(Duration::from_secs(45), waiting)
        .await
        .expect("the waiting request was served")
        .unwrap()
        .expect("an answer");
    assert_eq!(answer.status(), StatusCode::NOT_FOUND, "no webhook yet");
    eprintln!(
        "silent connections closed and the waiting request served after {:?}",
        started.elapsed()
    );

    // A request whose header never ends, over TLS: closed within the header deadline.
    // A request whose header never ends, over TLS: closed within the header deadline.
    let config = tls_trusting(&api.ca_pem);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut tls = connector.connect(name, tcp).await.expect("handshake");
    tls.write_all(b"GET /api/v1/orgs HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    closed_within(&mut tls, 30, "half-sent header").await;
}

/// A range opened for one org (`delivery.org_allow_cidrs`) is reached by that org's test
/// sends and deliveries only, and a test send into it shows the status and the kind of
/// error, never the answer's body or the error's detail: the API is no relay into the
/// networks the operator opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_range_opened_for_one_org_is_no_relay_for_another() {
    let mut h = Harness::start("admin-relay").await;
    h.env.retain(|(k, _)| k != "FW_DELIVERY__ALLOW_CIDRS");
    let own = format!("{{{ORG}=[\"127.0.0.1/32\"]}}");
    h.env.push(("FW_DELIVERY__ORG_ALLOW_CIDRS".into(), own));
    h.receiver.respond(|_| feedback_webhooks::receiver::Reply {
        body: bytes::Bytes::from_static(b"internal page: do not show"),
        ..feedback_webhooks::receiver::Reply::status(200)
    });
    let (api, hook) = Api::with_webhook(&h).await;

    let (status, _, sent) = api
        .ask(Method::POST, &format!("{hook}/test"), "operator")
        .await;
    assert_eq!(status, StatusCode::OK, "{sent}");
    assert_eq!(
        (&sent["delivered"], &sent["httpStatus"]),
        (&json!(true), &json!(200))
    );
    assert_eq!(sent["response"], "", "{sent}");

    // Another org's webhook at the same address cannot reach the range.
    let other = "/orgs/other/sandboxes/sb1/webhook";
    let body = webhook_body(&h.receiver.url("/other"));
    let (status, _, created) = api.send(Method::PUT, other, "other", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, _, refused) = api
        .ask(Method::POST, &format!("{other}/test"), "other")
        .await;
    assert_eq!(status, StatusCode::OK, "{refused}");
    assert_eq!(refused["delivered"], false);
    assert_eq!(refused["error"], "destination blocked", "{refused}");
    assert_eq!(
        h.receiver.received().len(),
        1,
        "only the org's own test arrived"
    );

    // A closed port in the range: the kind of error, not the socket's words.
    let closed = format!("/orgs/{ORG}/sandboxes/closed/webhook");
    let body = webhook_body("https://127.0.0.1:1/x");
    let (status, _, created) = api.send(Method::PUT, &closed, "operator", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (_, _, failed) = api
        .ask(Method::POST, &format!("{closed}/test"), "operator")
        .await;
    assert_eq!(failed["delivered"], false);
    assert_eq!(failed["error"], "connect", "{failed}");

    // The processor keeps the same scope: the org's own deliveries arrive.
    let mut processor = processor_with_api_settings(&h);
    h.producer
        .send_json(&h.topics.input, Some("e1"), &spec_event("e1"))
        .await;
    let received = h.receiver.wait_for(2).await;
    assert_eq!(received[1].header("webhook-id"), Some("e1"));
    // ...and the other org's, to the same address, are blocked.
    let campaign = format!("/orgs/other/sandboxes/sb1/campaigns/{CAMPAIGN}");
    let (status, _, _) = api.ask(Method::PUT, &campaign, "other").await;
    assert_eq!(status, StatusCode::CREATED);
    let mut event = spec_event("e2");
    event["imsOrg"] = json!("other");
    event["sandbox"]["id"] = json!("sb1");
    h.producer
        .send_json(&h.topics.input, Some("e2"), &event)
        .await;
    let mut reader = crate::support::kafka::Reader::new(&h.topics.outcomes);
    let outcomes = reader.wait_for(2);
    let e2 = outcomes
        .iter()
        .find(|o| o["eventId"] == "e2")
        .expect("e2's outcome");
    assert_eq!(e2["reason"], "destination_blocked", "{e2}");
    assert_eq!(h.receiver.received().len(), 2);
    processor.stop();
}

/// A webhook disabled by health is re-enabled through the API, which redelivers what it
/// missed while it was down (its failed events, and those skipped as `webhook_disabled`),
/// each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_disabled_by_health_is_reenabled_and_gets_what_it_missed_once() {
    let mut h = Harness::start("admin-reenable").await;
    for (k, v) in [
        ("FW_HEALTH__DISABLE_AFTER_SECS", "4"),
        ("FW_HEALTH__TICK_MS", "200"),
        ("FW_DELIVERY__BREAKER_FAILURES", "1000"),
    ] {
        h.env.retain(|(key, _)| key != k);
        h.env.push((k.into(), v.into()));
    }
    let (api, hook) = Api::with_webhook(&h).await;
    // The org's notification endpoint, set through the API with its signing secret as a
    // value (sealed before it is published); it works while the webhook fails.
    let whsec = format!(
        "whsec_{}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            rand::random::<[u8; 32]>()
        )
    );
    let endpoint = format!("/orgs/{ORG}/notification-endpoint");
    let notification = json!({
        "url": h.receiver.url("/ops"), "enabled": true, "name": "Ops",
        "authentication": {"type": "none"}, "headers": {"X-Team": "ops"},
        "signing": {"secret": {"value": whsec}},
    });
    let unsigned =
        json!({"url": h.receiver.url("/ops"), "enabled": true, "authentication": {"type": "none"}});
    let (status, _, refused) = api
        .send(Method::PUT, &endpoint, "operator", &unsigned)
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(refused.to_string().contains("signing"), "{refused}");
    let (status, _, created) = api
        .send(Method::PUT, &endpoint, "operator", &notification)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["signing"]["secret"]["set"], true, "{created}");
    assert!(
        !created.to_string().contains(&whsec),
        "the secret shown: {created}"
    );
    // It concerns every sandbox: a token for one sandbox does not see it.
    let (status, _, _) = api.ask(Method::GET, &endpoint, "acme-reader").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = api.ask(Method::GET, &endpoint, "other").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, shown) = api.ask(Method::GET, &endpoint, "reader").await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["url"], notification["url"]);
    h.receiver.respond(|r| {
        feedback_webhooks::receiver::Reply::status(if r.path == "/ops" { 200 } else { 503 })
    });
    let mut processor = processor_with_api_settings(&h);
    // Events keep failing until health disables the webhook after its period; meanwhile
    // the webhook's health says it is failing, and why.
    let mut failed: Vec<String> = Vec::new();
    let mut seen_failing = None;
    let until = Instant::now() + PATIENCE;
    loop {
        let (_, _, record) = api.ask(Method::GET, &hook, "operator").await;
        if record["health"]["state"] == "failing" && seen_failing.is_none() {
            seen_failing = Some(record["health"].clone());
        }
        if record["enabled"] == false {
            assert_eq!(record["updatedBy"], "health", "{record}");
            assert_eq!(record["health"]["state"], "disabled", "{record}");
            break;
        }
        assert!(Instant::now() < until, "never disabled: {record}");
        let id = format!("r-failed-{}", failed.len());
        h.producer
            .send_json(&h.topics.input, Some(&id), &spec_event(&id))
            .await;
        failed.push(id);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Those that ended before it (the last few may have been skipped as it went down).
    let mut missed = Vec::new();
    for id in &failed {
        let o = wait_for_outcome(&api, &hook, id, |o| o["status"] != "delivered").await;
        assert!(
            o["status"] == "failed" || o["reason"] == "webhook_disabled",
            "{o}"
        );
        missed.push(id.clone());
    }
    for id in ["r-skipped-0", "r-skipped-1"] {
        h.producer
            .send_json(&h.topics.input, Some(id), &spec_event(id))
            .await;
        wait_for_outcome(&api, &hook, id, |o| o["reason"] == "webhook_disabled").await;
        missed.push(id.to_owned());
    }

    let failing = seen_failing.expect("the webhook's health never said failing");
    assert_eq!(failing["lastError"]["httpStatus"], 503, "{failing}");
    assert!(failing["since"].is_string(), "{failing}");
    assert!(
        failing["counts"]["failures"].as_u64().unwrap() > 0,
        "{failing}"
    );
    assert_eq!(failing["counts"]["successes"], 0, "{failing}");
    // The inventory shows it too, and the org's operational events say what happened,
    // newest first, a page at a time.
    let (_, _, inventory) = api
        .ask(Method::GET, &format!("/orgs/{ORG}/webhooks"), "operator")
        .await;
    assert_eq!(
        inventory["items"][0]["health"]["state"], "disabled",
        "{inventory}"
    );
    let events = format!("/orgs/{ORG}/operational-events");
    let until = Instant::now() + PATIENCE;
    let listed = loop {
        let (status, _, page) = api.ask(Method::GET, &events, "operator").await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let types: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        if types.contains(&"webhook.disabled") && types.contains(&"webhook.failing") {
            break page;
        }
        assert!(Instant::now() < until, "operational events: {page}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let items = listed["items"].as_array().unwrap();
    assert_eq!(
        items[0]["type"], "webhook.disabled",
        "newest first: {listed}"
    );
    assert_eq!(items.last().unwrap()["type"], "webhook.failing", "{listed}");
    let (_, _, first) = api
        .ask(
            Method::GET,
            &format!("{events}?limit=1&type=webhook.failing"),
            "operator",
        )
        .await;
    assert_eq!(first["items"].as_array().unwrap().len(), 1, "{first}");
    assert_eq!(first["items"][0]["type"], "webhook.failing", "{first}");
    let (status, _, refused) = api
        .ask(Method::GET, &format!("{events}?type=nope"), "operator")
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");

    // The owner was told, signed with the secret given to the API.
    let notified = crate::notify::wait_notified(&h, "/ops", items).await;
    crate::notify::verify(&notified, &whsec, h.dir.path());

    // Fixed, re-enabled: everything it missed comes again, once, under one replay id.
    h.receiver
        .respond(|_| feedback_webhooks::receiver::Reply::status(200));
    let (status, tag, answer) = api
        .ask(Method::POST, &format!("{hook}/reenable"), "operator")
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    assert!(tag.is_some());
    assert_eq!(answer["webhook"]["enabled"], true, "{answer}");
    let replay_id = answer["redelivery"]["replayId"]
        .as_str()
        .unwrap()
        .to_owned();
    let progress = format!("{hook}/redeliver/{replay_id}");
    let until = Instant::now() + PATIENCE;
    let done = loop {
        let (_, _, run) = api.ask(Method::GET, &progress, "operator").await;
        if run["state"] != "running" {
            break run;
        }
        assert!(Instant::now() < until, "never finished: {run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (&done["state"], &done["queued"]),
        (&json!("done"), &json!(missed.len())),
        "{done}"
    );
    for id in &missed {
        let o = wait_for_outcome(&api, &hook, id, |o| o["status"] == "delivered").await;
        assert_eq!(o["replay"]["id"], replay_id.as_str());
    }
    let requests = h.receiver.received();
    for id in &missed {
        let delivered = requests
            .iter()
            .filter(|r| r.header("webhook-id") == Some(id.as_str()))
            .filter(|r| r.header("webhook-replay-id") == Some(replay_id.as_str()))
            .count();
        assert_eq!(delivered, 1, "{id} redelivered {delivered} times");
    }
    // Without a time to start from, a webhook that is not disabled says so.
    let (status, _, refused) = api
        .ask(Method::POST, &format!("{hook}/reenable"), "operator")
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert_eq!(refused["errors"][0]["pointer"], "/from");
    assert!(processor.stop().success());
}
