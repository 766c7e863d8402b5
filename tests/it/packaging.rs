//! docker-compose.yml, the Dockerfile and deploy/kubernetes cannot be run here (no Docker
//! engine, no cluster): their structure is checked instead, and kept in step with the local
//! scripts and with the settings the processor accepts (by running `feedback-webhooks check`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_yaml::Value as Yaml;

use crate::support::processor::bin;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml_docs(path: &str) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Yaml::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
        .filter(|d| !d.is_null())
        .collect()
}

fn s<'a>(v: &'a Yaml, path: &str) -> &'a str {
    get(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("{path} is not a string in {v:?}"))
}

/// `a.b.0.c`-style lookup (a key may itself contain dots, as `config.toml` does); panics
/// with the path when something is missing.
fn get<'a>(v: &'a Yaml, path: &str) -> &'a Yaml {
    let parts: Vec<&str> = path.split('.').collect();
    let mut at = v;
    let mut i = 0;
    while i < parts.len() {
        let (next, used) = (i + 1..=parts.len())
            .rev()
            .find_map(|j| {
                let key = parts[i..j].join(".");
                let found = match key.parse::<usize>() {
                    Ok(n) => at.get(n),
                    Err(_) => at.get(key.as_str()),
                };
                found.map(|f| (f, j))
            })
            .unwrap_or_else(|| panic!("{path}: nothing at {:?}", parts[i]));
        at = next;
        i = used;
    }
    at
}

/// Runs `feedback-webhooks check` with exactly these settings (no inherited FW_* variables).
fn check_settings(env: &[(String, String)], file: Option<&Path>) -> String {
    let mut command = Command::new(bin());
    command.arg("check");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("FW_")) {
        command.env_remove(k);
    }
    command.envs(env.iter().map(|(k, v)| (k, v)));
    if let Some(file) = file {
        command.arg("--config").arg(file);
    }
    let out = command.output().expect("run check");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "settings refused: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// (topic, partitions, configs) from `create_topic NAME --partitions N --config K=V ...` lines.
fn created_topics(text: &str) -> BTreeSet<(String, String, BTreeSet<String>)> {
    let mut topics = BTreeSet::new();
    for line in text.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.first() != Some(&"create_topic") {
            continue;
        }
        let name = words[1]
            .trim_start_matches("\"${KAFKA_INPUT_TOPIC:-")
            .trim_start_matches("\"${KAFKA_CONFIG_TOPIC:-")
            .trim_start_matches("\"${KAFKA_OUTCOME_TOPIC:-")
            .trim_end_matches("}\"")
            .to_owned();
        let mut partitions = String::new();
        let mut configs = BTreeSet::new();
        let rest: Vec<&str> = words[2..].iter().copied().filter(|w| *w != "\\").collect();
        for pair in rest.windows(2) {
            match pair[0] {
                "--partitions" => partitions = pair[1].replace("\"$partitions\"", "6"),
                "--config" => {
                    configs.insert(pair[1].to_owned());
                }
                _ => {}
            }
        }
        topics.insert((name, partitions, configs));
    }
    topics
}

#[test]
fn compose_runs_kafka_kraft_the_processor_a_receiver_and_prometheus() {
    let mut compose = yaml_docs("docker-compose.yml").remove(0);
    compose.apply_merge().expect("merge keys");
    let compose = &compose;
    let services = get(compose, "services");
    for name in [
        "kafka",
        "kafka-init",
        "receiver",
        "setup",
        "processor",
        "admin-setup",
        "admin",
        "prometheus",
    ] {
        assert!(services.get(name).is_some(), "service {name} missing");
    }

    // The official image, in KRaft mode (no ZooKeeper anywhere).
    let kafka = get(services, "kafka");
    assert!(s(kafka, "image").starts_with("apache/kafka:4."));
    let roles = s(kafka, "environment.KAFKA_PROCESS_ROLES");
    assert!(roles.contains("broker") && roles.contains("controller"));
    assert!(!read("docker-compose.yml")
        .to_lowercase()
        .contains("zookeeper"));

    // Same topics, partitions and topic configs as scripts/kafka creates locally.
    let init = get(services, "kafka-init");
    let script = s(init, "command.0");
    let local = read("scripts/kafka").replace(
        "\\\n    --config",
        " --config", // join continued lines
    );
    let ours = created_topics(&local);
    assert_eq!(ours.len(), 3, "{ours:?}");
    assert_eq!(created_topics(script), ours);

    // The processor: built from the Dockerfile, settings the binary accepts, topics as created.
    let processor = get(services, "processor");
    assert_eq!(s(processor, "build.context"), ".");
    assert_eq!(s(processor, "build.dockerfile"), "Dockerfile");
    let env: Vec<(String, String)> = get(processor, "environment")
        .as_mapping()
        .expect("environment map")
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| serde_yaml::to_string(v).unwrap().trim().to_owned());
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect();
    let checked = check_settings(&env, None);
    let names: Vec<String> = ours.iter().map(|(n, _, _)| n.clone()).collect();
    for topic in &names {
        assert!(
            checked.contains(topic.as_str()),
            "{topic} not used: {checked}"
        );
    }
    let vars: HashMap<_, _> = env.iter().cloned().collect();
    let port = vars["FW_HTTP__LISTEN"]
        .rsplit(':')
        .next()
        .unwrap()
        .to_owned();
    assert!(get(processor, "ports")
        .as_sequence()
        .unwrap()
        .iter()
        .any(|p| p.as_str() == Some(&format!("{port}:{port}"))));
    // Stopping waits longer than the drain deadline.
    let drain: u64 = vars["FW_SHUTDOWN__DRAIN_DEADLINE_SECS"].parse().unwrap();
    let grace: u64 = s(processor, "stop_grace_period")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        grace > drain,
        "stop_grace_period {grace}s <= drain {drain}s"
    );
    // The guard is opened for the compose network, where the receiver lives.
    let subnet = s(compose, "networks.default.ipam.config.0.subnet");
    assert_eq!(vars["FW_DELIVERY__ALLOW_CIDRS"], format!("[{subnet}]"));
    // It trusts the receiver's CA, which the receiver writes to the shared volume, with the
    // receiver's service name in its certificate.
    let receiver = get(services, "receiver");
    let args: Vec<&str> = get(receiver, "command")
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    let ca_out = args[args.iter().position(|a| *a == "--ca-out").unwrap() + 1];
    assert_eq!(vars["FW_DELIVERY__EXTRA_CA_FILE"], ca_out);
    assert!(args.windows(2).any(|w| w == ["--name", "receiver"]));
    let webhook: serde_json::Value =
        serde_json::from_str(&read("deploy/compose/webhook.json")).unwrap();
    assert!(webhook["url"]
        .as_str()
        .unwrap()
        .starts_with("https://receiver:8443/"));
    feedback_webhooks::schema::validate(feedback_webhooks::schema::Kind::Webhook, &webhook)
        .expect("the compose webhook matches the schema");

    // The admin API: its setup script, run here as written (paths moved to a scratch
    // folder), makes what the API's settings name, and the binary accepts them with the
    // operator token it made.
    let setup = get(services, "admin-setup");
    let script = s(setup, "command.0").replace("$$", "$");
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    let script = script
        .replace("/shared", shared.to_str().unwrap())
        .lines()
        .filter(|l| !l.trim_start().starts_with("chown"))
        .collect::<Vec<_>>()
        .join("\n");
    let bin_dir = Path::new(&bin()).parent().unwrap().to_owned();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let out = Command::new("sh")
        .args(["-ec", &script])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let admin = get(services, "admin");
    assert_eq!(get(admin, "command.0").as_str(), Some("admin"));
    let admin_env: Vec<(String, String)> = get(admin, "environment")
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = v
                .as_str()
                .unwrap()
                .replace("/shared", shared.to_str().unwrap());
            (k.as_str().unwrap().to_owned(), v)
        })
        .collect();
    let checked = check_settings(&admin_env, None);
    assert!(
        checked.contains("admin: listen 0.0.0.0:8443 (TLS); 1 token(s)"),
        "{checked}"
    );
    let admin_vars: HashMap<_, _> = admin_env.iter().cloned().collect();
    for file in [
        "FW_ADMIN__TLS_CERT_FILE",
        "FW_ADMIN__TLS_KEY_FILE",
        "FW_SECRETS__ENCRYPTION_KEY_FILE",
    ] {
        assert!(
            Path::new(&admin_vars[file]).exists(),
            "{file} not made by admin-setup"
        );
    }
    // The processor opens what the API seals: the same key.
    assert_eq!(
        vars["FW_SECRETS__ENCRYPTION_KEY_FILE"],
        s(admin, "environment.FW_SECRETS__ENCRYPTION_KEY_FILE")
    );

    // Prometheus scrapes the processor's operator port.
    let prometheus = get(services, "prometheus");
    let mount = s(prometheus, "volumes.0");
    let file = mount.split(':').next().unwrap().trim_start_matches("./");
    let scrape = &yaml_docs(file)[0];
    assert_eq!(
        s(scrape, "scrape_configs.0.static_configs.0.targets.0"),
        format!("processor:{port}")
    );
    assert_eq!(s(scrape, "scrape_configs.0.metrics_path"), "/metrics");
    let admin_port = admin_vars["FW_ADMIN__METRICS_LISTEN"]
        .rsplit(':')
        .next()
        .unwrap();
    assert_eq!(
        s(scrape, "scrape_configs.1.static_configs.0.targets.0"),
        format!("admin:{admin_port}")
    );
}

#[test]
fn dockerfile_builds_with_the_ci_toolchain_into_a_small_non_root_image() {
    let dockerfile = read("Dockerfile");
    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    assert!(stages[0].ends_with(" AS build"));
    assert!(stages[1].contains("-slim"), "runtime image: {}", stages[1]);
    // Every Debian package CI (and the README's commands) install to build, through
    // scripts/deps, is installed in the build stage.
    for script in [".ci/run", "scripts/test", "scripts/demo"] {
        assert!(
            read(script).contains("scripts/deps"),
            "{script} does not install the build dependencies"
        );
    }
    let deps = read("scripts/deps");
    let build_stage = &dockerfile[..dockerfile.find(stages[1]).unwrap()];
    for package in [
        "libclang-dev",
        "cmake",
        "pkg-config",
        "libcurl4-openssl-dev",
        "libsasl2-dev",
        "libssl-dev",
        "zlib1g-dev",
    ] {
        assert!(deps.contains(package), "{package} is not in scripts/deps");
        assert!(build_stage.contains(package), "{package} not installed");
    }
    assert!(dockerfile.contains("cargo build --locked --release --bin feedback-webhooks"));
    assert!(dockerfile.contains("USER 10001"));
    assert!(dockerfile.contains("ENTRYPOINT [\"feedback-webhooks\"]"));
    assert!(dockerfile.contains("EXPOSE 9464"));
    // The build context leaves out local state.
    let ignore = read(".dockerignore");
    for path in ["target", ".kafka", ".git"] {
        assert!(ignore.lines().any(|l| l == path), "{path} not ignored");
    }
}

fn kube_objects() -> Vec<(String, Yaml)> {
    let kustomization = &yaml_docs("deploy/kubernetes/kustomization.yaml")[0];
    let mut objects = Vec::new();
    for file in get(kustomization, "resources").as_sequence().unwrap() {
        let path = format!("deploy/kubernetes/{}", file.as_str().unwrap());
        for doc in yaml_docs(&path) {
            objects.push((path.clone(), doc));
        }
    }
    objects
}

fn find<'a>(objects: &'a [(String, Yaml)], kind: &str, name: &str) -> &'a Yaml {
    objects
        .iter()
        .map(|(_, o)| o)
        .find(|o| {
            o.get("kind").and_then(Yaml::as_str) == Some(kind) && s(o, "metadata.name") == name
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

/// The oldest Kubernetes the manifests target (the `preStop.sleep` action needs 1.30).
const KUBERNETES_VERSION: &str = "1.30";

/// Runs Debian's `promtool` (package `prometheus`, installed by scripts/deps --tests).
fn promtool(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool (apt-get install prometheus)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{report}");
    report
}

#[test]
fn the_alert_rules_are_valid_fire_on_the_exported_series_and_are_loaded_by_compose() {
    let rules = root().join("deploy/prometheus");
    let report = promtool(&["check", "rules", "alerts.yaml"], &rules);
    assert!(report.contains("SUCCESS: 6 rules found"), "{report}");
    promtool(&["test", "rules", "alerts.test.yaml"], &rules);
    // The compose Prometheus loads them (the file is mounted beside its config).
    let compose = tempfile::tempdir().unwrap();
    for (from, to) in [
        ("deploy/compose/prometheus.yml", "prometheus.yml"),
        ("deploy/prometheus/alerts.yaml", "alerts.yaml"),
    ] {
        std::fs::copy(root().join(from), compose.path().join(to)).unwrap();
    }
    let report = promtool(&["check", "config", "prometheus.yml"], compose.path());
    assert!(report.contains("SUCCESS: 6 rules found"), "{report}");
    assert!(read("docker-compose.yml")
        .contains("./deploy/prometheus/alerts.yaml:/etc/prometheus/alerts.yaml:ro"));
}

#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    // kubernetes-validate (PyPI) bundles the API's JSON schemas; strict mode refuses
    // misspelt or misplaced fields. scripts/test installs it.
    let kustomization = &yaml_docs("deploy/kubernetes/kustomization.yaml")[0];
    let files: Vec<PathBuf> = get(kustomization, "resources")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|f| root().join("deploy/kubernetes").join(f.as_str().unwrap()))
        .collect();
    let out = Command::new("python3")
        .args([
            "-m",
            "kubernetes_validate",
            "--strict",
            "-k",
            KUBERNETES_VERSION,
        ])
        .args(&files)
        .output()
        .expect("python3");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate refused the manifests (pip install kubernetes-validate):\n{report}"
    );
    let passed = report.matches(" passed for resource ").count();
    assert_eq!(passed, kube_objects().len(), "{report}");
}

#[test]
fn kubernetes_manifests_are_complete_and_consistent() {
    let objects = kube_objects();
    for (path, o) in &objects {
        for field in ["apiVersion", "kind", "metadata.name"] {
            assert!(!s(o, field).is_empty(), "{path}: {field}");
        }
    }
    // Every manifest in the folder is either applied or documented as optional.
    let listed: BTreeSet<&str> = objects.iter().map(|(p, _)| p.as_str()).collect();
    for entry in std::fs::read_dir(root().join("deploy/kubernetes")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let path = format!("deploy/kubernetes/{name}");
        if name != "kustomization.yaml" && !listed.contains(path.as_str()) {
            assert!(
                read("deploy/kubernetes/kustomization.yaml").contains(&name),
                "{name} is neither applied nor mentioned"
            );
        }
    }
    let deployment = find(&objects, "Deployment", "feedback-webhooks");
    let spec = get(deployment, "spec");
    let pod = get(spec, "template");
    let labels = get(pod, "metadata.labels");
    assert_eq!(get(spec, "selector.matchLabels"), labels);
    let service = find(&objects, "Service", "feedback-webhooks");
    assert_eq!(get(service, "spec.selector"), labels);
    let pdb = find(&objects, "PodDisruptionBudget", "feedback-webhooks");
    assert_eq!(get(pdb, "spec.selector.matchLabels"), labels);
    assert!(get(spec, "replicas").as_u64().unwrap() >= 2);

    // The settings in the ConfigMap are accepted by the binary.
    let config_map = find(&objects, "ConfigMap", "feedback-webhooks-config");
    let toml_text = s(config_map, "data.config.toml");
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("config.toml");
    std::fs::write(&file, toml_text).unwrap();
    check_settings(&[], Some(&file));
    let settings: toml::Value = toml::from_str(toml_text).unwrap();
    let listen = settings["http"]["listen"].as_str().unwrap();
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    let drain = settings["shutdown"]["drain_deadline_secs"]
        .as_integer()
        .unwrap() as u64;

    let container = get(pod, "spec.containers.0");
    assert_eq!(get(container, "ports.0.containerPort").as_u64(), Some(port));
    let port_name = s(container, "ports.0.name");
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
        ("startupProbe", "/healthz"),
    ] {
        assert_eq!(s(container, &format!("{probe}.httpGet.path")), path);
        assert_eq!(s(container, &format!("{probe}.httpGet.port")), port_name);
    }
    for field in [
        "resources.requests.cpu",
        "resources.requests.memory",
        "resources.limits.memory",
    ] {
        assert!(!s(container, field).is_empty());
    }
    // SIGTERM comes after preStop; the drain must end before the kubelet's SIGKILL.
    let pre_stop = get(container, "lifecycle.preStop.sleep.seconds")
        .as_u64()
        .unwrap();
    let grace = get(pod, "spec.terminationGracePeriodSeconds")
        .as_u64()
        .unwrap();
    assert!(
        grace > pre_stop + drain,
        "terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain}"
    );
    for o in [&pod["metadata"], &service["metadata"]] {
        assert_eq!(s(o, "annotations.prometheus.io/scrape"), "true");
        assert_eq!(s(o, "annotations.prometheus.io/port"), port.to_string());
    }

    // The files the settings name are mounted: the config itself, the key, the cache.
    let mounts: HashMap<&str, &str> = get(container, "volumeMounts")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (s(m, "mountPath"), s(m, "name")))
        .collect();
    let volumes: HashMap<&str, &Yaml> = get(pod, "spec.volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (s(v, "name"), v))
        .collect();
    let config_env = get(container, "env")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| s(e, "name") == "FW_CONFIG_FILE")
        .expect("FW_CONFIG_FILE");
    let config_path = s(config_env, "value");
    let config_volume = volumes[mounts[config_path]];
    assert_eq!(
        s(config_volume, "configMap.name"),
        "feedback-webhooks-config"
    );

    let mounted_under = |path: &str| {
        mounts
            .iter()
            .filter(|(m, _)| path.starts_with(&format!("{m}/")))
            .map(|(_, v)| volumes[v])
            .next()
            .unwrap_or_else(|| panic!("{path} is on no volume"))
    };
    let key_file = settings["secrets"]["encryption_key_file"].as_str().unwrap();
    let key_volume = mounted_under(key_file);
    let secret = find(&objects, "Secret", s(key_volume, "secret.secretName"));
    let key_name = key_file.rsplit('/').next().unwrap();
    assert!(
        get(secret, "stringData").get(key_name).is_some(),
        "Secret lacks {key_name}"
    );
    let store = settings["store"]["path"].as_str().unwrap();
    assert!(mounted_under(store).get("emptyDir").is_some());

    // The admin API: its settings accepted (with the token entries of its Secret), each
    // file they name on a volume of the right Secret, probes on its operator port.
    let admin = find(&objects, "Deployment", "feedback-webhooks-admin");
    let admin_pod = get(admin, "spec.template");
    let admin_labels = get(admin_pod, "metadata.labels");
    assert_eq!(get(admin, "spec.selector.matchLabels"), admin_labels);
    let admin_service = find(&objects, "Service", "feedback-webhooks-admin");
    assert_eq!(get(admin_service, "spec.selector"), admin_labels);
    // Console sessions live in the instance that signed in: a browser stays with it.
    assert_eq!(s(admin_service, "spec.sessionAffinity"), "ClientIP");
    let admin_toml = s(config_map, "data.admin.toml");
    let admin_settings: toml::Value = toml::from_str(admin_toml).unwrap();
    let tokens_secret = find(&objects, "Secret", "feedback-webhooks-admin-tokens");
    let tokens_path = dir.path().join("tokens.toml");
    let (_, hash) = feedback_webhooks::admin::tokens::generate().unwrap();
    std::fs::write(
        &tokens_path,
        format!(
            "{}\n[[tokens]]\nname = \"t\"\nhash = \"{hash}\"\nscope = \"operator\"\nright = \"read\"\n",
            s(tokens_secret, "stringData.tokens.toml")
        ),
    )
    .unwrap();
    let named_tokens = admin_settings["admin"]["tokens_file"].as_str().unwrap();
    let admin_file = dir.path().join("admin.toml");
    std::fs::write(
        &admin_file,
        admin_toml.replace(named_tokens, tokens_path.to_str().unwrap()),
    )
    .unwrap();
    let checked = check_settings(&[], Some(&admin_file));
    assert!(
        checked.contains("admin: listen 0.0.0.0:8443 (TLS); 1 token(s)"),
        "{checked}"
    );
    let admin_container = get(admin_pod, "spec.containers.0");
    assert_eq!(s(admin_container, "args.0"), "admin");
    let admin_mounts: HashMap<&str, &str> = get(admin_container, "volumeMounts")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| (s(m, "mountPath"), s(m, "name")))
        .collect();
    let admin_volumes: HashMap<&str, &Yaml> = get(admin_pod, "spec.volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| (s(v, "name"), v))
        .collect();
    let secret_of = |path: &str| {
        let (_, volume) = admin_mounts
            .iter()
            .find(|(m, _)| path.starts_with(&format!("{m}/")))
            .unwrap_or_else(|| panic!("{path} is on no volume"));
        s(admin_volumes[volume], "secret.secretName").to_owned()
    };
    let a = &admin_settings["admin"];
    assert_eq!(secret_of(named_tokens), "feedback-webhooks-admin-tokens");
    let tls = find(&objects, "Secret", "feedback-webhooks-admin-tls");
    assert_eq!(s(tls, "type"), "kubernetes.io/tls");
    for file in ["tls_cert_file", "tls_key_file"] {
        assert_eq!(
            secret_of(a[file].as_str().unwrap()),
            "feedback-webhooks-admin-tls"
        );
    }
    assert_eq!(
        admin_settings["secrets"]["encryption_key_file"].as_str(),
        Some(key_file),
        "the processor's key"
    );
    let metrics_port: u64 = a["metrics_listen"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let ports = get(admin_container, "ports").as_sequence().unwrap();
    let metrics = ports.iter().find(|p| s(p, "name") == "metrics").unwrap();
    assert_eq!(get(metrics, "containerPort").as_u64(), Some(metrics_port));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        assert_eq!(
            s(admin_container, &format!("{probe}.httpGet.port")),
            "metrics"
        );
    }
}
