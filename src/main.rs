use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tracing::error;

use feedback_webhooks::cli::{config_cmd, receiver_cmd, replay_cmd, CliError};
use feedback_webhooks::domain::config::ConfigKey;
use feedback_webhooks::domain::secret::SealingKey;
use feedback_webhooks::domain::time::rfc3339_millis;
use feedback_webhooks::settings::Settings;
use feedback_webhooks::{admin, pipeline};

// Per event the processor allocates many small buffers across threads (HTTP, JSON, Kafka);
// mimalloc handles that with less CPU and fragmentation than glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Delivers message-feedback events from Kafka to each tenant's HTTPS webhook.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Settings file (TOML). FW_* environment variables override it.
    #[arg(long, short, global = true, env = "FW_CONFIG_FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the processor.
    Run,
    /// Publish, read or delete webhook configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Turn a campaign's webhook opt-in on or off.
    #[command(subcommand)]
    Campaign(CampaignCommand),
    /// Seal secrets for config records with the deployment's config-encryption key.
    #[command(subcommand)]
    Secret(SecretCommand),
    /// A local HTTPS receiver that prints each request as a JSON line.
    Receiver {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        /// Where to write the PEM of the receiver's freshly made CA.
        #[arg(long, default_value = "receiver-ca.pem")]
        ca_out: PathBuf,
        /// HTTP status to answer with.
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// A DNS name to add to the certificate (repeatable), e.g. a compose service name.
        #[arg(long = "name")]
        names: Vec<String>,
    },
    /// Redeliver events: select them from a bounded window of the input topics (or the
    /// events whose outcome failed) and queue them for the running processor, which
    /// delivers them again with the current config. Prints the replay id first.
    Replay(replay_cmd::ReplayArgs),
    /// Run the administration API (the `[admin]` settings), or make a token for it.
    Admin {
        #[command(subcommand)]
        command: Option<AdminCommand>,
    },
    /// Check the settings (file and FW_* environment) and print what they resolve to.
    /// Files they name (CA, keys) are read when the processor starts.
    Check,
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate and publish a webhook, campaign or notification endpoint record (JSON
    /// file), stamped with
    /// `updatedAt` (now) and `updatedBy`. Every refusal is listed at once.
    Put {
        #[arg(long)]
        file: PathBuf,
        /// Who publishes, for `updatedBy` (default `cli:{user}@{host}`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Print the webhook of an org + sandbox.
    Get {
        #[arg(long)]
        org: String,
        #[arg(long)]
        sandbox: String,
    },
    /// List every webhook, campaign and notification endpoint record in force.
    List,
    /// Enable the webhook of an org + sandbox and redeliver what it missed while it was
    /// down: the events that failed, or were skipped as `webhook_disabled`, since it went
    /// down (or `--from`), as one replay from the outcome topic, with its progress.
    Reenable {
        #[arg(long)]
        org: String,
        #[arg(long)]
        sandbox: String,
        /// Where the redelivery starts (RFC 3339); default when the webhook went down (its
        /// record's `updatedAt`; for a disable by health, when it began failing).
        #[arg(long)]
        from: Option<String>,
        /// Only enable it.
        #[arg(long)]
        no_redeliver: bool,
        /// Do not ask for confirmation above replay.confirm_above events.
        #[arg(long)]
        yes: bool,
        /// Who publishes, for `updatedBy` (default `cli:{user}@{host}`).
        #[arg(long)]
        by: Option<String>,
    },
    /// Delete the webhook of an org + sandbox (or a campaign record with --campaign).
    Delete {
        #[arg(long)]
        org: String,
        #[arg(long)]
        sandbox: String,
        #[arg(long)]
        campaign: Option<String>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Print a new random API token (shown once) and the `[[admin.tokens]]` entry that
    /// holds only its Argon2id hash.
    Token {
        /// Who the token is for (logged with each write, published as `updatedBy`).
        #[arg(long)]
        name: String,
        /// `operator`, `{imsOrg}` or `{imsOrg}/{sandboxId}`.
        #[arg(long)]
        scope: String,
        /// `read` or `write`.
        #[arg(long, default_value = "read")]
        right: String,
    },
    /// Make a local CA and a TLS certificate for the API (ca.pem, cert.pem, key.pem in
    /// OUT), for local and test setups; production uses the organisation's certificates.
    Cert {
        #[arg(long)]
        out: PathBuf,
        /// A DNS name or IP address for the certificate (repeatable).
        #[arg(long = "name", default_values_t = ["localhost".to_owned(), "127.0.0.1".to_owned()])]
        names: Vec<String>,
    },
}

#[derive(Subcommand)]
enum SecretCommand {
    /// Print a new random config-encryption key (base64 of 32 bytes) for
    /// secrets.encryption_key_file.
    NewKey,
    /// Print `{"encrypted": ...}` for the exact bytes of FILE (a JWT key, an HS secret, a
    /// whsec_ signing secret), sealed with secrets.encryption_key_file for the record that
    /// will hold it: it opens in no other record.
    Seal {
        #[arg(long)]
        file: PathBuf,
        /// The record's key: `webhook/{imsOrg}/{sandboxId}`.
        #[arg(long)]
        record: String,
    },
}

#[derive(Subcommand)]
enum CampaignCommand {
    Enable(CampaignArgs),
    Disable(CampaignArgs),
}

#[derive(clap::Args)]
struct CampaignArgs {
    #[arg(long)]
    org: String,
    /// Sandbox id.
    #[arg(long)]
    sandbox: String,
    #[arg(long)]
    campaign: String,
}

fn init_logging(settings: &Settings) {
    let directives = std::env::var("RUST_LOG").unwrap_or_else(|_| settings.log.filter.clone());
    let filter = feedback_webhooks::observe::logging::log_filter(&directives);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if settings.log.format == "json" {
        builder.json().with_current_span(true).init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// How long the runtime's shutdown waits for its threads once the command has returned.
/// A transaction call that librdkafka leaves blocked (see `record/watchdog.rs`) keeps its
/// worker thread in C for good, even after the processor took over with a new producer;
/// waiting for that thread, as a runtime dropped normally does, would keep a stopped
/// process from exiting.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(5);

fn main() -> ExitCode {
    // Start-up: without a runtime nothing can run.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot start the async runtime: {e}"));
    let code = runtime.block_on(async_main());
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(cli.command, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// What a long-running command says at start about its settings: variables that name no
/// setting, and secret files every user of the machine may read.
fn warn_at_start(settings: &Settings) {
    if !settings.ignored_env.is_empty() {
        tracing::warn!(variables = ?settings.ignored_env, "FW_* environment variables that name no setting are ignored");
    }
    for (setting, path) in settings.exposed_secret_files() {
        tracing::warn!(
            setting,
            path = %path.display(),
            "a file holding secrets is readable by every user of this machine: chmod 600 it (or 640 for a group)"
        );
    }
}

async fn run(command: Command, settings: Settings) -> Result<(), CliError> {
    match command {
        Command::Run => {
            init_logging(&settings);
            warn_at_start(&settings);
            // On a worker thread, not the main thread's `block_on`: the consume loops are
            // woken by record tasks thousands of times a second, and a worker takes those
            // wake-ups without a cross-thread unpark each time.
            match tokio::spawn(pipeline::run(settings, shutdown_signal())).await {
                Ok(result) => result.map_err(|e| {
                    error!(error = %e, "processor stopped");
                    e.into()
                }),
                Err(e) => {
                    error!(error = %e, "processor task failed");
                    Err(CliError::Failed(e.to_string()))
                }
            }
        }
        Command::Replay(args) => Ok(replay_cmd::run(&settings, &args).await?),
        Command::Check => check(&settings),
        Command::Receiver {
            listen,
            ca_out,
            status,
            names,
        } => Ok(receiver_cmd::run(listen, &ca_out, status, &names).await?),
        Command::Config(command) => config(&settings, command).await,
        Command::Admin { command: None } => {
            init_logging(&settings);
            warn_at_start(&settings);
            admin::run(&settings, shutdown_signal()).await.map_err(|e| {
                error!(error = %e, "admin API stopped");
                e.into()
            })
        }
        Command::Admin {
            command: Some(AdminCommand::Token { name, scope, right }),
        } => admin_token(&name, &scope, &right),
        Command::Admin {
            command: Some(AdminCommand::Cert { out, names }),
        } => admin_cert(&out, &names),
        Command::Secret(SecretCommand::NewKey) => {
            println!("{}", SealingKey::generate_base64());
            Ok(())
        }
        Command::Secret(SecretCommand::Seal { file, record }) => seal(&settings, &file, &record),
        Command::Campaign(command) => {
            let (args, enabled) = match command {
                CampaignCommand::Enable(a) => (a, true),
                CampaignCommand::Disable(a) => (a, false),
            };
            let key = config_cmd::set_campaign(
                &settings,
                &args.org,
                &args.sandbox,
                &args.campaign,
                enabled,
            )
            .await?;
            println!("published {key} (webhooksEnabled: {enabled})");
            Ok(())
        }
    }
}

/// `check`: the settings as the processor and the admin API would read them at start.
fn check(settings: &Settings) -> Result<(), CliError> {
    let k = &settings.kafka;
    println!(
        "settings OK: brokers {} group {} input {:?} config {} outcomes {} retries {}-*; \
         cache {}; operator port {}; drain {} s",
        k.bootstrap_servers,
        k.group_id,
        k.input_topics,
        k.config_topic,
        k.outcome_topic,
        settings.retry_topic_prefix(),
        settings.store.path.display(),
        if settings.http.listen.is_empty() {
            "off"
        } else {
            &settings.http.listen
        },
        settings.shutdown.drain_deadline_secs
    );
    // The admin API's own settings, checked as `admin` would at start.
    let a = &settings.admin;
    let tokens = a.all_tokens()?;
    admin::tokens::Tokens::new(&tokens).map_err(|e| CliError::Usage(e.to_string()))?;
    println!(
        "admin: listen {} ({}); {} token(s); cache {}; operator port {}",
        a.listen,
        match (&a.tls_cert_file, a.allow_plain_http) {
            (Some(_), _) => "TLS",
            (None, true) => "plain HTTP",
            (None, false) => "no TLS files: refused at start",
        },
        tokens.len(),
        a.store_path.display(),
        if a.metrics_listen.is_empty() {
            "off"
        } else {
            &a.metrics_listen
        }
    );
    Ok(())
}

fn admin_cert(out: &std::path::Path, names: &[String]) -> Result<(), CliError> {
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let ca = feedback_webhooks::receiver::LocalCa::generate(&names)?;
    std::fs::create_dir_all(out).map_err(|e| CliError::file(out, e))?;
    for (file, text) in [
        ("ca.pem", &ca.ca_pem),
        ("cert.pem", &ca.cert_pem),
        ("key.pem", &ca.key_pem),
    ] {
        let path = out.join(file);
        // The key is for the API's user only.
        let mode = if file == "key.pem" { 0o600 } else { 0o644 };
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(mode)
                .open(&path)
        }
        .map_err(|e| CliError::file(&path, e))?;
        std::io::Write::write_all(&mut f, text.as_bytes()).map_err(|e| CliError::file(&path, e))?;
    }
    println!(
        "wrote {0}/ca.pem (trust this), {0}/cert.pem and {0}/key.pem for {names:?}",
        out.display()
    );
    Ok(())
}

fn admin_token(name: &str, scope: &str, right: &str) -> Result<(), CliError> {
    use feedback_webhooks::admin::tokens::{self, Right, Scope, TokenEntry};
    let right = match right {
        "read" => Right::Read,
        "write" => Right::Write,
        other => return Err(CliError::Usage(format!("--right {other:?}: read or write"))),
    };
    if Scope::parse(scope).is_none() {
        return Err(CliError::Usage(format!(
            "--scope {scope:?}: operator, {{imsOrg}} or {{imsOrg}}/{{sandboxId}}"
        )));
    }
    let (token, hash) = tokens::generate().map_err(|e| CliError::Failed(e.to_string()))?;
    let entry = TokenEntry {
        name: name.to_owned(),
        hash,
        scope: scope.to_owned(),
        right,
    };
    let toml = toml_entry(&entry);
    println!("token (shown once; give it to {name}): {token}");
    println!("\n# add to the admin API's settings:\n{toml}");
    Ok(())
}

/// The `[[admin.tokens]]` TOML entry of a token.
fn toml_entry(e: &feedback_webhooks::admin::tokens::TokenEntry) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let right = match e.right {
        feedback_webhooks::admin::tokens::Right::Read => "read",
        feedback_webhooks::admin::tokens::Right::Write => "write",
    };
    format!(
        "[[admin.tokens]]\nname = {}\nhash = {}\nscope = {}\nright = \"{right}\"\n",
        quote(&e.name),
        quote(&e.hash),
        quote(&e.scope)
    )
}

fn seal(settings: &Settings, file: &std::path::Path, record: &str) -> Result<(), CliError> {
    // Sealed for a webhook record only: campaigns hold no secrets.
    if !matches!(ConfigKey::parse(record), Ok(ConfigKey::Webhook { .. })) {
        return Err(CliError::Usage(format!(
            "--record {record:?} is not a webhook record key (webhook/{{imsOrg}}/{{sandboxId}})"
        )));
    }
    let key = settings.sealing_key()?.ok_or_else(|| {
        CliError::Usage(
            "set secrets.encryption_key_file (or FW_SECRETS__ENCRYPTION_KEY_FILE) first".into(),
        )
    })?;
    let plaintext = std::fs::read(file).map_err(|e| CliError::file(file, e))?;
    println!(
        "{}",
        serde_json::json!({ "encrypted": key.seal(&plaintext, record) })
    );
    Ok(())
}

async fn config(settings: &Settings, command: ConfigCommand) -> Result<(), CliError> {
    match command {
        ConfigCommand::Put { file, by } => {
            let by = by.unwrap_or_else(config_cmd::operator);
            let key = config_cmd::put(settings, &file, &by).await?;
            println!("published {key}");
            Ok(())
        }
        ConfigCommand::Delete {
            org,
            sandbox,
            campaign,
        } => {
            let key = match campaign {
                Some(c) => ConfigKey::campaign(&org, &sandbox, &c),
                None => ConfigKey::webhook(&org, &sandbox),
            };
            config_cmd::delete(settings, &key).await?;
            println!("deleted {key}");
            Ok(())
        }
        ConfigCommand::Reenable {
            org,
            sandbox,
            from,
            no_redeliver,
            yes,
            by,
        } => {
            let by = by.unwrap_or_else(config_cmd::operator);
            let since = config_cmd::reenable(settings, &org, &sandbox, &by).await?;
            println!(
                "published {} (enabled: true)",
                ConfigKey::webhook(&org, &sandbox)
            );
            if no_redeliver {
                return Ok(());
            }
            let Some(from) = from.or(since.map(rfc3339_millis)) else {
                return Err(CliError::Usage(
                    "the webhook was not disabled, so when it went down is not known: give --from"
                        .into(),
                ));
            };
            println!("redelivering what failed or was skipped as webhook_disabled since {from}");
            let args = replay_cmd::ReplayArgs::missed(&org, &sandbox, from, yes);
            Ok(replay_cmd::run(settings, &args).await?)
        }
        ConfigCommand::Get { org, sandbox } => {
            let state = config_cmd::read_all(settings)?;
            let key = ConfigKey::webhook(&org, &sandbox).to_string();
            let record = state
                .get(&key)
                .ok_or_else(|| CliError::Failed(format!("no webhook for {key}")))?;
            println!(
                "{}",
                serde_json::to_string_pretty(record).unwrap_or_default()
            );
            Ok(())
        }
        ConfigCommand::List => {
            let state = config_cmd::read_all(settings)?;
            for (key, record) in &state {
                let summary = match record["kind"].as_str() {
                    Some("webhook") => format!(
                        "name={:?} enabled={} channels={} url={}",
                        record["name"].as_str().unwrap_or_default(),
                        record["enabled"],
                        record["channels"],
                        record["url"].as_str().unwrap_or_default()
                    ),
                    Some("notification") => format!(
                        "enabled={} url={}",
                        record["enabled"],
                        record["url"].as_str().unwrap_or_default()
                    ),
                    _ => format!("webhooksEnabled={}", record["webhooksEnabled"]),
                };
                println!("{key}\t{summary}");
            }
            Ok(())
        }
    }
}
