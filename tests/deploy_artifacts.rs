//! Checks the deployment artefacts with the tools that consume them:
//! - `systemd/`: `systemd-analyze verify` is clean and `systemd-analyze security`
//!   rates each service's exposure at or below 2.0; the daemon and the one-shot
//!   unit share one sandbox; `systemd/idsync.toml` loads with `$CREDENTIALS_DIRECTORY`.
//! - `deploy/kubernetes/example/` (a stand-in gateway Deployment with the sidecar
//!   component `deploy/kubernetes/component/`) and `deploy/kubernetes/cronjob/`:
//!   rendered by `kubectl kustomize`, turned into JSON by `kubectl patch --local`
//!   (no cluster needed), then security context, probes, volumes, resources, the
//!   generated config maps' hash suffixes and the CronJob's policy are checked, and
//!   the config maps load with idsync's own config loader. The component holds no
//!   Deployment (only patches), patches only the labelled Deployment, and a config
//!   change renames the config map the pod mounts.
//! - `deploy/Dockerfile`: multi-stage, non-root user, `ENTRYPOINT ["idsync"]`.
//!
//! Needs `systemd-analyze` (Debian package `systemd`, 252 or newer for `--offline`)
//! and `kubectl` (Debian package `kubectl` on this machine image, or Debian's
//! `kubernetes-client`). A missing tool fails the test: it is never skipped.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use idsync::config::Config;
use serde_json::Value;

/// Highest `systemd-analyze security` exposure allowed (0.0 best, 10.0 worst).
const MAX_EXPOSURE: f64 = 2.0;
/// The two service units, which must both pass the sandbox checks.
const SERVICES: [&str; 2] = ["idsync.service", "idsync-sync.service"];
/// The secrets every shipped config reads, as file names (credential or Secret keys).
const SECRET_NAMES: [&str; 2] = ["hoop_api_key", "idp_client_secret"];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    let path = repo().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()))
}

/// Which package brings each external tool, for the failure message.
fn install_hint(program: &str) -> &'static str {
    match program {
        "systemd-analyze" => "install the Debian package `systemd` (252 or newer)",
        "kubectl" => {
            "install the Debian package `kubectl` (as on this machine image) or `kubernetes-client`"
        }
        _ => "install it",
    }
}

/// Runs `cmd` with `stdin`, failing the test with an install hint when the tool is missing.
fn run(cmd: &mut Command, stdin: Option<&[u8]>) -> Output {
    let program = cmd.get_program().to_string_lossy().into_owned();
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|err| {
        panic!(
            "cannot run `{program}` ({err}): this test needs it; {}",
            install_hint(&program)
        )
    });
    let writer = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let bytes = bytes.to_vec();
        std::thread::spawn(move || pipe.write_all(&bytes))
    });
    let output = child.wait_with_output().expect("wait for the tool");
    if let Some(writer) = writer {
        writer
            .join()
            .expect("stdin writer")
            .unwrap_or_else(|err| panic!("write to `{program}`: {err}"));
    }
    output
}

fn describe(cmd: &Command, output: &Output) -> String {
    format!(
        "{cmd:?} exited with {}\n--- stdout\n{}--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

// ------------------------------------------------------------------ systemd

/// `(section, key, value)` of every directive of a unit file, in order.
fn unit_directives(text: &str) -> Vec<(String, String, String)> {
    let mut section = String::new();
    let mut directives = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
        } else if let Some((key, value)) = line.split_once('=') {
            directives.push((
                section.clone(),
                key.trim().to_owned(),
                value.trim().to_owned(),
            ));
        } else {
            panic!("not a unit file line: {line:?}");
        }
    }
    directives
}

fn values<'a>(
    directives: &'a [(String, String, String)],
    section: &str,
    key: &str,
) -> Vec<&'a str> {
    directives
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

fn value<'a>(directives: &'a [(String, String, String)], section: &str, key: &str) -> &'a str {
    match values(directives, section, key).as_slice() {
        [one] => one,
        other => panic!("expected one {key}= in [{section}], found {other:?}"),
    }
}

/// The exposure `systemd-analyze security` reports for a unit file, checked against
/// [`MAX_EXPOSURE`] both by its exit status (`--threshold`, in tenths) and by its text.
fn exposure(unit: &str) -> f64 {
    let path = repo().join("systemd").join(unit);
    let threshold = format!("--threshold={}", (MAX_EXPOSURE * 10.0).round() as u32);
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["security", "--offline=true", &threshold, "--no-pager"])
        .arg(&path)
        .env("SYSTEMD_COLORS", "0");
    let output = run(&mut cmd, None);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|line| line.contains("Overall exposure level"))
        .unwrap_or_else(|| {
            panic!(
                "no exposure level in the output of {}",
                describe(&cmd, &output)
            )
        });
    let score: f64 = line
        .rsplit(':')
        .next()
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"));
    assert!(
        output.status.success() && score <= MAX_EXPOSURE,
        "{unit}: exposure {score} is above {MAX_EXPOSURE}; the ✗ lines say what to tighten:\n{}",
        describe(&cmd, &output)
    );
    let unit_warnings: Vec<_> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|line| line.contains(unit))
        .map(str::to_owned)
        .collect();
    assert!(unit_warnings.is_empty(), "{unit}: {unit_warnings:#?}");
    score
}

#[test]
fn service_units_expose_at_most_2_0() {
    for unit in SERVICES {
        let score = exposure(unit);
        eprintln!("{unit}: systemd-analyze security exposure {score}");
    }
}

/// Runs `systemd-analyze verify` on copies of the units whose `ExecStart=` runs the
/// binary cargo just built (verify insists that the program exists), after applying
/// `edit` to each; returns what verify said about our units, if anything.
fn verify_units(edit: impl Fn(&str) -> String) -> Vec<String> {
    let binary = env!("CARGO_BIN_EXE_idsync");
    assert!(
        !binary.contains(char::is_whitespace),
        "the built binary's path has spaces: {binary}"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let mut units = Vec::new();
    for entry in std::fs::read_dir(repo().join("systemd")).expect("systemd/") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.ends_with(".service") || name.ends_with(".timer") {
            let text = std::fs::read_to_string(&path).expect("read unit");
            assert!(text.contains("ExecStart=/usr/bin/idsync ") || name.ends_with(".timer"));
            let copy = dir.path().join(&name);
            std::fs::write(&copy, edit(&text.replace("/usr/bin/idsync", binary)))
                .expect("write unit copy");
            units.push(copy);
        }
    }
    assert_eq!(
        units.len(),
        3,
        "systemd/ should hold 2 services and 1 timer: {units:?}"
    );
    let mut complaints = Vec::new();
    for unit in &units {
        let mut cmd = Command::new("systemd-analyze");
        cmd.args(["verify", "--man=no", "--no-pager"]).arg(unit);
        let output = run(&mut cmd, None);
        // verify also speaks of the host's own units; keep what concerns ours. It
        // exits 0 on unknown keys and bad values, so the text is what counts.
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        complaints.extend(
            text.lines()
                .filter(|l| l.contains("idsync"))
                .map(str::to_owned),
        );
        if !output.status.success() {
            complaints.push(describe(&cmd, &output));
        }
    }
    complaints
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let complaints = verify_units(str::to_owned);
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:#?}"
    );
}

/// The check above can fail: a misspelt directive is reported.
#[test]
fn verify_reports_a_misspelt_directive() {
    let complaints = verify_units(|text| text.replace("ProtectHome=yes", "ProtectHomes=yes"));
    assert!(
        complaints.iter().any(|c| c.contains("ProtectHomes")),
        "expected a complaint about ProtectHomes: {complaints:#?}"
    );
}

#[test]
fn daemon_unit_is_a_notify_service_with_credentials_and_state() {
    let text = read("systemd/idsync.service");
    let d = unit_directives(&text);
    assert_eq!(value(&d, "Service", "Type"), "notify");
    assert_eq!(
        value(&d, "Service", "ExecStart"),
        "/usr/bin/idsync --config /etc/idsync/idsync.toml"
    );
    assert!(!value(&d, "Service", "WatchdogSec").is_empty());
    assert_eq!(value(&d, "Service", "Restart"), "on-failure");
    assert_eq!(value(&d, "Service", "RestartPreventExitStatus"), "2");
    // In-flight requests finish within target.timeout_secs (30 s by default).
    let stop = value(&d, "Service", "TimeoutStopSec");
    let stop_secs: u64 = stop
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("TimeoutStopSec={stop} should be in seconds, like 45s"));
    assert!(
        stop_secs > 30,
        "TimeoutStopSec={stop} leaves no margin above 30 s"
    );
    assert_eq!(value(&d, "Install", "WantedBy"), "multi-user.target");
}

#[test]
fn both_services_share_identity_state_credentials_and_sandbox() {
    let daemon = unit_directives(&read("systemd/idsync.service"));
    let oneshot = unit_directives(&read("systemd/idsync-sync.service"));
    for d in [&daemon, &oneshot] {
        assert_eq!(value(d, "Service", "DynamicUser"), "yes");
        assert_eq!(value(d, "Service", "StateDirectory"), "idsync");
        let mut creds = values(d, "Service", "LoadCredential");
        creds.sort_unstable();
        assert_eq!(
            creds,
            [
                "hoop_api_key:/etc/idsync/credentials/hoop_api_key",
                "idp_client_secret:/etc/idsync/credentials/idp_client_secret"
            ]
        );
    }
    // Everything but how each one runs must be the same, the sandbox above all.
    const PER_UNIT: [&str; 10] = [
        "Type",
        "NotifyAccess",
        "ExecStart",
        "TimeoutStartSec",
        "TimeoutStopSec",
        "WatchdogSec",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "Environment",
    ];
    let shared = |d: &[(String, String, String)]| -> Vec<(String, String)> {
        let mut kept: Vec<_> = d
            .iter()
            .filter(|(s, k, _)| s == "Service" && !PER_UNIT.contains(&k.as_str()))
            .map(|(_, k, v)| (k.clone(), v.clone()))
            .collect();
        kept.sort();
        kept
    };
    assert_eq!(
        shared(&daemon),
        shared(&oneshot),
        "idsync.service and idsync-sync.service differ outside how they run"
    );
}

#[test]
fn oneshot_unit_and_timer_run_sync_now_and_never_beside_the_daemon() {
    let oneshot = unit_directives(&read("systemd/idsync-sync.service"));
    assert_eq!(value(&oneshot, "Service", "Type"), "oneshot");
    assert_eq!(
        value(&oneshot, "Service", "ExecStart"),
        "/usr/bin/idsync --config /etc/idsync/idsync.toml --sync-now"
    );
    assert_eq!(value(&oneshot, "Unit", "Conflicts"), "idsync.service");
    assert!(
        values(&oneshot, "Install", "WantedBy").is_empty(),
        "the timer starts it"
    );

    let timer = unit_directives(&read("systemd/idsync-sync.timer"));
    assert!(!value(&timer, "Timer", "OnCalendar").is_empty());
    assert_eq!(value(&timer, "Timer", "Persistent"), "true");
    assert_eq!(value(&timer, "Install", "WantedBy"), "timers.target");
}

/// Parses `text` with idsync's loader, its secrets read from files in a temporary
/// folder: `rewrite` points the config's secret paths there.
fn load_config(origin: &str, text: &str, rewrite: impl Fn(&str, &Path) -> String) -> Config {
    let secrets = tempfile::tempdir().expect("temp dir");
    for name in SECRET_NAMES {
        std::fs::write(secrets.path().join(name), format!("test-{name}\n")).expect("secret");
    }
    let text = rewrite(text, secrets.path());
    let dir = secrets.path().to_string_lossy().into_owned();
    let env = move |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| dir.clone());
    Config::parse(&text, origin, &env).unwrap_or_else(|err| panic!("{origin} does not load: {err}"))
}

#[test]
fn systemd_config_loads_with_credentials_directory() {
    let text = read("systemd/idsync.toml");
    for name in SECRET_NAMES {
        assert!(
            text.contains(&format!("\"$CREDENTIALS_DIRECTORY/{name}\"")),
            "systemd/idsync.toml should read {name} from $CREDENTIALS_DIRECTORY"
        );
    }
    let config = load_config("systemd/idsync.toml", &text, |text, _| text.to_owned());
    assert_eq!(config.target.api_key.expose(), "test-hoop_api_key");
    assert_eq!(
        config.cache.path,
        Path::new("/var/lib/idsync"),
        "StateDirectory=idsync"
    );
    assert_eq!(
        config.service.listen,
        Some("127.0.0.1:9464".parse().expect("address"))
    );
}

// --------------------------------------------------------------- kubernetes

/// The objects `kubectl kustomize DIR` renders, as JSON (through `kubectl patch
/// --local` with an empty patch, which needs no cluster).
fn kustomize(dir: &str) -> Vec<Value> {
    kustomize_at(&repo().join(dir))
}

/// [`kustomize`] of a folder anywhere (say a temporary overlay).
fn kustomize_at(dir: &Path) -> Vec<Value> {
    let mut render = Command::new("kubectl");
    render.arg("kustomize").arg(dir);
    let yaml = run(&mut render, None);
    assert!(yaml.status.success(), "{}", describe(&render, &yaml));
    to_json(&yaml.stdout)
}

fn to_json(yaml: &[u8]) -> Vec<Value> {
    let mut convert = Command::new("kubectl");
    convert.args([
        "patch", "--local", "-f", "-", "--type", "merge", "-p", "{}", "-o", "json",
    ]);
    let json = run(&mut convert, Some(yaml));
    assert!(json.status.success(), "{}", describe(&convert, &json));
    let mut objects = Vec::new();
    for object in serde_json::Deserializer::from_slice(&json.stdout).into_iter::<Value>() {
        let object = object.expect("kubectl printed JSON");
        match object["kind"].as_str() {
            Some("List") => objects.extend(object["items"].as_array().cloned().unwrap_or_default()),
            _ => objects.push(object),
        }
    }
    objects
}

fn object<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = objects.iter().filter(|o| o["kind"] == kind).collect();
    match found.as_slice() {
        [one] => one,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value:#}"))
}

/// A container's `args`, as text.
fn args_of(container: &Value) -> Vec<&str> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg"))
        .collect()
}

/// Checks the idsync container of `pod_spec` and its volumes against the objects
/// rendered with it; returns the container.
fn check_idsync_pod<'a>(pod_spec: &'a Value, objects: &[Value]) -> &'a Value {
    let containers = pod_spec["containers"].as_array().expect("containers");
    let idsync = containers
        .iter()
        .find(|c| c["name"] == "idsync")
        .expect("a container named idsync");
    assert!(str_at(idsync, "/image").contains("idsync"));

    // Security context (on the container; the pod's may be the gateway's).
    let sc = &idsync["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true, "runAsNonRoot");
    assert_eq!(sc["runAsUser"], 65532, "runAsUser");
    assert_eq!(sc["readOnlyRootFilesystem"], true, "readOnlyRootFilesystem");
    assert_eq!(
        sc["allowPrivilegeEscalation"], false,
        "allowPrivilegeEscalation"
    );
    assert_eq!(
        sc["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "capabilities"
    );
    assert_eq!(
        sc["seccompProfile"]["type"], "RuntimeDefault",
        "seccompProfile"
    );
    assert_eq!(
        pod_spec["securityContext"]["fsGroup"], 65532,
        "fsGroup lets the idsync user use the cache volume and the 0440 secret files"
    );
    // In-flight requests finish within target.timeout_secs (30 s) after SIGTERM.
    let grace = pod_spec["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap_or(30);
    assert!(
        grace > 30,
        "terminationGracePeriodSeconds {grace} leaves no margin"
    );

    // Resources.
    for pointer in ["/requests/cpu", "/requests/memory", "/limits/memory"] {
        assert!(
            idsync["resources"].pointer(pointer).is_some(),
            "resources{pointer} is not set"
        );
    }

    // Volumes: config from the ConfigMap, secrets from a Secret, cache on the PVC.
    let volumes = pod_spec["volumes"].as_array().expect("volumes");
    let volume_at = |mount_path: &str| -> &Value {
        let mount = idsync["volumeMounts"]
            .as_array()
            .expect("volumeMounts")
            .iter()
            .find(|m| m["mountPath"] == mount_path)
            .unwrap_or_else(|| panic!("nothing mounted at {mount_path}"));
        volumes
            .iter()
            .find(|v| v["name"] == mount["name"])
            .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
    };
    let config_map = object(objects, "ConfigMap");
    assert_eq!(
        volume_at("/etc/idsync")["configMap"]["name"],
        config_map["metadata"]["name"],
        "/etc/idsync should come from the rendered ConfigMap"
    );
    assert!(config_map["data"]["idsync.toml"].is_string());
    assert_eq!(
        volume_at("/run/secrets/idsync")["secret"]["secretName"],
        "idsync-secrets"
    );
    let pvc = object(objects, "PersistentVolumeClaim");
    assert_eq!(
        volume_at("/var/lib/idsync")["persistentVolumeClaim"]["claimName"],
        pvc["metadata"]["name"]
    );
    idsync
}

/// Loads the rendered ConfigMap's idsync.toml with idsync's loader and checks it
/// against the mounts: secrets under /run/secrets/idsync, the cache on the volume.
fn check_config_map(objects: &[Value], origin: &str) -> Config {
    let text = str_at(object(objects, "ConfigMap"), "/data/idsync.toml");
    let config = load_config(origin, text, |text, dir| {
        text.replace("\"/run/secrets/idsync/", &format!("\"{}/", dir.display()))
    });
    assert_eq!(config.target.api_key.expose(), "test-hoop_api_key");
    assert_eq!(config.cache.path, PathBuf::from("/var/lib/idsync"));
    config
}

fn port_number(container: &Value, port: &Value) -> u64 {
    match port {
        Value::Number(n) => n.as_u64().expect("port"),
        Value::String(name) => container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}")),
        other => panic!("bad probe port {other}"),
    }
}

/// The label the component's patches select the gateway Deployment by.
const SIDECAR_LABEL: (&str, &str) = ("idsync/sidecar", "true");

fn objects_of<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn container<'a>(pod_spec: &'a Value, name: &str) -> &'a Value {
    pod_spec["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name} in {pod_spec:#}"))
}

/// The name kustomize's configMapGenerator gives `base`: `base-` and a content hash.
fn assert_hash_suffixed(name: &str, base: &str) {
    let suffix = name
        .strip_prefix(base)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or_else(|| panic!("{name} should be {base}-<hash>"));
    assert!(
        suffix.len() >= 5 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
        "{name} should end in a content hash"
    );
}

/// Copies `deploy/kubernetes/component/` into `dir/component/`, so a test can put
/// overlays of its own next to it (kustomize refuses absolute component paths).
fn copy_component(dir: &Path) -> PathBuf {
    let from = repo().join("deploy/kubernetes/component");
    let to = dir.join("component");
    std::fs::create_dir(&to).expect("mkdir component");
    for entry in std::fs::read_dir(&from).expect("component/") {
        let path = entry.expect("entry").path();
        std::fs::copy(&path, to.join(path.file_name().expect("name"))).expect("copy");
    }
    to
}

fn write_overlay(dir: &Path, resources: &str) -> PathBuf {
    let overlay = dir.join("overlay");
    std::fs::create_dir(&overlay).expect("mkdir overlay");
    std::fs::write(overlay.join("resources.yaml"), resources).expect("resources");
    std::fs::write(
        overlay.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
         resources:\n  - resources.yaml\ncomponents:\n  - ../component\n",
    )
    .expect("kustomization");
    overlay
}

#[test]
fn kubernetes_example_adds_the_sidecar_to_the_users_gateway() {
    let objects = kustomize("deploy/kubernetes/example");
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "Secret" || o["kind"] == "CronJob"),
        "neither the example Secret nor the CronJob"
    );
    // One Deployment, the user's: the component adds none of its own.
    let deployments = objects_of(&objects, "Deployment");
    assert_eq!(deployments.len(), 1, "only the gateway's Deployment");
    let deployment = deployments[0];
    assert_eq!(deployment["metadata"]["name"], "hoopgateway");
    assert_eq!(
        deployment["metadata"]["labels"][SIDECAR_LABEL.0],
        SIDECAR_LABEL.1
    );
    assert_eq!(deployment["spec"]["replicas"], 1, "one writer of the cache");
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    assert!(deployment["spec"]["strategy"]["rollingUpdate"].is_null());
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 2, "the gateway and idsync");
    // The gateway's container stays first: the default of kubectl logs and exec.
    assert_eq!(containers[0]["name"], "hoopgateway");
    assert!(str_at(&containers[0], "/image").starts_with("hoophq/hoop:"));
    assert_eq!(
        port_number(&containers[0], &Value::from("api")),
        8009,
        "the API idsync.toml points at"
    );
    assert_eq!(containers[1]["name"], "idsync");
    let idsync = check_idsync_pod(pod, &objects);
    assert_eq!(
        str_at(idsync, "/image"),
        "registry.example.com/idsync:0.1.0",
        "set by the component's images:"
    );
    let args = args_of(idsync);
    assert_eq!(
        args,
        [
            "--config",
            "/etc/idsync/idsync.toml",
            "--log-format",
            "json"
        ]
    );

    // The generated ConfigMap: a hash suffix, and the pod mounts that very name
    // (check_idsync_pod compared the volume with it), so a config change rolls it.
    let config_map = object(&objects, "ConfigMap");
    assert_hash_suffixed(str_at(config_map, "/metadata/name"), "idsync-config");

    let config = check_config_map(&objects, "deploy/kubernetes/component/idsync.toml");
    let listen = config.service.listen.expect("[service] listen");
    assert!(
        listen.ip().is_unspecified(),
        "probes come from outside the pod: {listen}"
    );
    // The sidecar's readiness must not depend on sync runs: it would gate the gateway.
    for (probe, path) in [
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/healthz"),
    ] {
        let get = &idsync[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            port_number(idsync, &get["port"]),
            u64::from(listen.port()),
            "{probe} port"
        );
    }
    assert_eq!(
        config.target.url.host_str(),
        Some("127.0.0.1"),
        "the gateway in the pod"
    );
}

/// `(kind, file)` of every top-level `kind:` line of the YAML files in `dir`.
fn top_level_kinds(dir: &Path) -> Vec<(String, String)> {
    let mut kinds = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if !name.ends_with(".yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read yaml");
        for line in text.lines() {
            if let Some(kind) = line.strip_prefix("kind:") {
                kinds.push((kind.trim().to_owned(), name.clone()));
            }
        }
    }
    kinds.sort();
    kinds
}

/// The items of the top-level YAML list `key:` in `text` (`- item` or `- path: item`).
fn list_items(text: &str, key: &str) -> Vec<String> {
    let header = format!("{key}:");
    let mut lines = text.lines().skip_while(|line| line.trim_end() != header);
    assert!(lines.next().is_some(), "no {header} in {text}");
    lines
        .take_while(|line| line.is_empty() || line.starts_with(' ') || line.starts_with('#'))
        .filter_map(|line| line.trim().strip_prefix("- "))
        .map(|item| item.trim_start_matches("path:").trim().to_owned())
        .collect()
}

#[test]
fn kubernetes_component_holds_no_deployment_only_patches() {
    let dir = repo().join("deploy/kubernetes/component");
    let kustomization = read("deploy/kubernetes/component/kustomization.yaml");
    assert!(kustomization.contains("\napiVersion: kustomize.config.k8s.io/v1alpha1\n"));
    assert!(kustomization.contains("\nkind: Component\n"));
    assert_eq!(list_items(&kustomization, "resources"), ["pvc.yaml"]);
    let patches = list_items(&kustomization, "patches");
    assert_eq!(patches, ["sidecar-pod.yaml", "sidecar-container.yaml"]);
    let selector = format!("labelSelector: {}={}", SIDECAR_LABEL.0, SIDECAR_LABEL.1);
    assert_eq!(
        kustomization.matches(&selector).count(),
        patches.len(),
        "every patch targets the labelled Deployment"
    );
    assert!(
        !kustomization.contains("    name:"),
        "the patches select by label, not by a fixed name"
    );
    // The one Deployment in the folder is the strategic merge patch; the JSON
    // patch has no kind; nothing else describes a workload.
    assert_eq!(
        top_level_kinds(&dir),
        [
            ("Component".to_owned(), "kustomization.yaml".to_owned()),
            ("Deployment".to_owned(), "sidecar-pod.yaml".to_owned()),
            ("PersistentVolumeClaim".to_owned(), "pvc.yaml".to_owned()),
        ]
    );
}

/// The patches land on the labelled Deployment only, keep what the gateway had,
/// and turn a rolling update into Recreate (the cache has one writer).
#[test]
fn kubernetes_component_patches_only_the_labelled_deployment() {
    let dir = tempfile::tempdir().expect("temp dir");
    copy_component(dir.path());
    let overlay = write_overlay(
        dir.path(),
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: my-gateway
  labels: {idsync/sidecar: "true", app.kubernetes.io/name: hoopgateway}
spec:
  replicas: 3
  strategy: {type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}
  selector: {matchLabels: {app: my-gateway}}
  template:
    metadata: {labels: {app: my-gateway}}
    spec:
      securityContext: {runAsNonRoot: true}
      containers:
        - {name: gateway, image: "hoophq/hoop:1", volumeMounts: [{name: data, mountPath: /data}]}
      volumes: [{name: data, emptyDir: {}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: unlabelled
  labels: {app.kubernetes.io/name: hoopgateway}
spec:
  replicas: 2
  selector: {matchLabels: {app: unlabelled}}
  template:
    metadata: {labels: {app: unlabelled}}
    spec:
      containers: [{name: other, image: "other:1"}]
"#,
    );
    let objects = kustomize_at(&overlay);
    let deployment = |name: &str| -> &Value {
        objects
            .iter()
            .find(|o| o["kind"] == "Deployment" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    };

    let gateway = deployment("my-gateway");
    assert_eq!(gateway["spec"]["replicas"], 1);
    assert_eq!(
        gateway["spec"]["strategy"],
        serde_json::json!({"type": "Recreate"})
    );
    let pod = &gateway["spec"]["template"]["spec"];
    let names: Vec<&str> = pod["containers"]
        .as_array()
        .expect("containers")
        .iter()
        .map(|c| str_at(c, "/name"))
        .collect();
    assert_eq!(names, ["gateway", "idsync"]);
    assert_eq!(container(pod, "gateway")["volumeMounts"][0]["name"], "data");
    assert!(
        pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == "data" && v["emptyDir"].is_object()),
        "the gateway's own volume is kept"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "kept");
    check_idsync_pod(pod, &objects);

    let other = deployment("unlabelled");
    assert_eq!(other["spec"]["replicas"], 2);
    let pod = &other["spec"]["template"]["spec"];
    assert_eq!(pod["containers"].as_array().expect("containers").len(), 1);
    assert!(pod["volumes"].is_null() && pod["securityContext"].is_null());
}

/// A changed idsync.toml gives the ConfigMap a new name, which the pod template
/// follows: that change of the template is what rolls the pod.
#[test]
fn kubernetes_config_change_renames_the_config_map_in_the_pod() {
    let dir = tempfile::tempdir().expect("temp dir");
    let component = copy_component(dir.path());
    let gateway = read("deploy/kubernetes/example/gateway.yaml");
    let overlay = write_overlay(dir.path(), &gateway);
    let mounted = |objects: &[Value]| -> (String, String) {
        let name = str_at(object(objects, "ConfigMap"), "/metadata/name").to_owned();
        let pod = &object(objects, "Deployment")["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["name"] == "idsync-config")
            .expect("idsync-config volume");
        (name, str_at(volume, "/configMap/name").to_owned())
    };
    let (before, before_in_pod) = mounted(&kustomize_at(&overlay));
    assert_eq!(before, before_in_pod);
    assert_hash_suffixed(&before, "idsync-config");

    let toml = component.join("idsync.toml");
    let text = std::fs::read_to_string(&toml).expect("read idsync.toml");
    std::fs::write(
        &toml,
        text.replace("run_on_start = true", "run_on_start = false"),
    )
    .expect("write idsync.toml");
    let (after, after_in_pod) = mounted(&kustomize_at(&overlay));
    assert_eq!(after, after_in_pod);
    assert_hash_suffixed(&after, "idsync-config");
    assert_ne!(before, after, "a config change must rename the ConfigMap");
}

#[test]
fn kubernetes_cronjob_forbids_overlap_and_runs_sync_now() {
    let objects = kustomize("deploy/kubernetes/cronjob");
    assert!(
        !objects
            .iter()
            .any(|o| o["kind"] == "Deployment" || o["kind"] == "Secret"),
        "the CronJob mode has no sidecar and no example Secret"
    );
    let cronjob = object(&objects, "CronJob");
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    let pod = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let idsync = check_idsync_pod(pod, &objects);
    let args = args_of(idsync);
    assert!(args.contains(&"--sync-now"), "{args:?}");
    assert!(
        args.windows(2).any(|w| w == ["--log-format", "json"]),
        "{args:?}"
    );
    check_config_map(&objects, "deploy/kubernetes/cronjob/idsync.toml");

    assert_hash_suffixed(
        str_at(object(&objects, "ConfigMap"), "/metadata/name"),
        "idsync-config",
    );
    let sidecar = kustomize("deploy/kubernetes/example");
    assert_eq!(
        object(&objects, "PersistentVolumeClaim"),
        object(&sidecar, "PersistentVolumeClaim"),
        "cronjob/pvc.yaml should stay the same as component/pvc.yaml"
    );
}

#[test]
fn example_secret_holds_the_keys_the_configs_read_and_no_real_values() {
    let objects = to_json(read("deploy/kubernetes/secret.example.yaml").as_bytes());
    let secret = object(&objects, "Secret");
    assert_eq!(secret["metadata"]["name"], "idsync-secrets");
    let data: BTreeMap<String, Value> =
        serde_json::from_value(secret["stringData"].clone()).expect("stringData");
    assert_eq!(data.keys().collect::<Vec<_>>(), SECRET_NAMES.to_vec());
    for (key, value) in &data {
        assert!(
            value.as_str().is_some_and(|v| v.starts_with("REPLACE-ME")),
            "{key} should be an obvious placeholder"
        );
    }
}

// ------------------------------------------------------------------- docker

#[test]
fn dockerfile_builds_locked_and_runs_idsync_as_non_root() {
    let text = read("deploy/Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let from = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .count();
    assert!(from >= 2, "multi-stage: a build stage and a runtime stage");
    assert!(text.contains("cargo build --release --locked --bin idsync"));
    // The last stage is the image: its last USER must not be root.
    let last_stage = instructions
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("FROM");
    let user = instructions[last_stage..]
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER in the runtime stage");
    let uid = user.split(':').next().unwrap_or(user).trim();
    assert!(
        uid.parse::<u32>().is_ok_and(|uid| uid != 0),
        "USER {user} should be a numeric non-root uid (for runAsNonRoot)"
    );
    assert!(instructions[last_stage..].contains(&r#"ENTRYPOINT ["idsync"]"#));
    assert!(instructions[last_stage..].contains(&r#"CMD ["--config", "/etc/idsync/idsync.toml"]"#));
    assert!(instructions[last_stage..].contains(&"EXPOSE 9464"));
}

// ------------------------------------------------------------------ push mode

/// The push-mode kustomization: a one-replica daemon whose SCIM port the
/// Service and the Ingress reach (only `/scim/v2`, over TLS), with a config that
/// loads as a push source listening on that port.
#[test]
fn kubernetes_push_mode_exposes_the_scim_port_through_service_and_ingress() {
    let objects = kustomize("deploy/kubernetes/push");
    let deployment = object(&objects, "Deployment");
    assert_eq!(deployment.pointer("/spec/replicas"), Some(&Value::from(1)));
    assert_eq!(str_at(deployment, "/spec/strategy/type"), "Recreate");
    let pod = deployment.pointer("/spec/template/spec").expect("pod spec");
    let idsync = container(pod, "idsync");
    assert!(
        !args_of(idsync).contains(&"--sync-now"),
        "a daemon, not one run"
    );
    let service = object(&objects, "Service");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[key], value, "the Service selects the pod by {key}");
    }
    let scim = service["spec"]["ports"]
        .as_array()
        .and_then(|ports| ports.iter().find(|p| p["name"] == "scim"))
        .expect("a scim port");
    let scim_port = port_number(idsync, &scim["targetPort"]);
    let ingress = object(&objects, "Ingress");
    let path = &ingress["spec"]["rules"][0]["http"]["paths"][0];
    assert_eq!(str_at(path, "/path"), "/scim/v2");
    assert_eq!(
        str_at(path, "/backend/service/name"),
        str_at(service, "/metadata/name")
    );
    assert_eq!(str_at(path, "/backend/service/port/name"), "scim");
    assert!(
        ingress["spec"]["tls"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "TLS for the IdP"
    );
    // The SCIM token file exists only in the cluster; inline for the load.
    let text = str_at(object(&objects, "ConfigMap"), "/data/idsync.toml").replace(
        "bearer_token_file = \"/run/secrets/idsync/idsync_scim_token\"",
        "bearer_token = \"test-scim-token-0123456789\"",
    );
    let config = load_config("deploy/kubernetes/push/idsync.toml", &text, |text, dir| {
        text.replace("\"/run/secrets/idsync/", &format!("\"{}/", dir.display()))
    });
    let idsync::config::SourceKind::Push(push) = &config.source.kind else {
        panic!("a push source")
    };
    assert_eq!(u64::from(push.listen.port()), scim_port);
}
