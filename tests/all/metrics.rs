//! Prometheus metrics and the access log (docs/operations.md): a Flow's
//! `GET /metrics` parses as Prometheus text and its counters move with
//! traffic, errors by kind included; a standalone Pea serves its own on
//! `--port-monitoring`; an export annotates every unit for Prometheus (golden
//! files; `JINA_WASM_BLESS=1` rewrites them); `--log-format json` writes JSON
//! lines, the access line with its fields.

use std::collections::{BTreeMap, HashMap};
use std::io::BufRead as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::flow::{FlowProcess, post};
use crate::pea::{PeaProcess, client, request};
use crate::util::{http, text_doc, wasm};

/// Samples of a scrape, keyed `name{k="v",...}` with the labels sorted.
type Samples = BTreeMap<String, f64>;

/// Reads Prometheus text (format 0.0.4) strictly: every line a `# HELP`, a
/// `# TYPE` (once per family, before its samples) or a sample of a declared
/// family (a histogram's `_bucket`, `_sum`, `_count`), names and label names
/// well formed, label values quoted with only `\\`, `\"`, `\n` escapes,
/// values numbers; no sample twice.
fn parse(text: &str) -> Samples {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Samples::new();
    let is_name = |s: &str, colon: bool| {
        let mut chars = s.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
    };
    for (number, line) in text.lines().enumerate() {
        let at = |what: &str| format!("line {}: {what}: {line:?}", number + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (keyword, name, value) = (parts.next(), parts.next(), parts.next());
            let (Some(keyword), Some(name)) = (keyword, name) else {
                panic!("{}", at("a comment without a keyword and a name"));
            };
            assert!(is_name(name, true), "{}", at("a bad metric name"));
            match keyword {
                "HELP" => {}
                "TYPE" => {
                    let kind = value.unwrap_or_default();
                    assert!(
                        ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                        "{}",
                        at("an unknown type")
                    );
                    let earlier = types.insert(name.to_string(), kind.to_string());
                    assert!(earlier.is_none(), "{}", at("a family declared twice"));
                }
                _ => panic!("{}", at("an unknown comment keyword")),
            }
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..name_end];
        assert!(is_name(name, true), "{}", at("a bad sample name"));
        let declared = types.contains_key(name)
            || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
                name.strip_suffix(suffix)
                    .and_then(|family| types.get(family))
                    .is_some_and(|t| t == "histogram")
            });
        assert!(declared, "{}", at("a sample of no declared family"));
        let mut rest = &line[name_end..];
        let mut labels: Vec<(String, String)> = Vec::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            loop {
                if let Some((i, '}')) = chars.peek().copied() {
                    rest = &inner[i + 1..];
                    break;
                }
                let start = chars
                    .peek()
                    .map(|(i, _)| *i)
                    .expect("an unclosed label set");
                let eq = inner[start..]
                    .find('=')
                    .map(|e| start + e)
                    .expect("a label without =");
                let key = &inner[start..eq];
                assert!(is_name(key, false), "{}", at("a bad label name"));
                while chars.peek().is_some_and(|(i, _)| *i <= eq) {
                    chars.next();
                }
                assert_eq!(
                    chars.next().map(|(_, c)| c),
                    Some('"'),
                    "{}",
                    at("an unquoted label value")
                );
                let mut value = String::new();
                loop {
                    match chars.next().map(|(_, c)| c) {
                        Some('"') => break,
                        Some('\\') => match chars.next().map(|(_, c)| c) {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            _ => panic!("{}", at("a bad escape")),
                        },
                        Some(c) => value.push(c),
                        None => panic!("{}", at("an unterminated label value")),
                    }
                }
                labels.push((key.to_string(), value));
                match chars.peek().map(|(_, c)| *c) {
                    Some(',') => {
                        chars.next();
                    }
                    Some('}') => {}
                    _ => panic!("{}", at("labels not separated by commas")),
                }
            }
        }
        let value = rest
            .strip_prefix(' ')
            .unwrap_or_else(|| panic!("{}", at("no space before the value")));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("{}", at("a value that is not a number"))),
        };
        labels.sort();
        let key = key(name, &labels);
        assert!(
            samples.insert(key, value).is_none(),
            "{}",
            at("a sample twice")
        );
    }
    samples
}

fn key(name: &str, labels: &[(String, String)]) -> String {
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{name}{{{}}}", labels.join(","))
}

/// The sample `name` with exactly `labels`, 0 when absent (a counter not yet
/// moved).
fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples.get(&key(name, &labels)).copied().unwrap_or(0.0)
}

fn scrape(url: &str) -> Samples {
    let response = http().get(url).send().unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    parse(&response.text().unwrap())
}

const FLOW: &str = "with:\n  monitoring: true\npods:\n  - name: idx\n    uses: {W}/passthrough.wasm\n    shards: 2\n  - name: bad\n    uses: {W}/misbehave.wasm\n";

#[test]
fn a_flows_metrics_parse_and_move_with_traffic() {
    let flow = FlowProcess::start(FLOW);
    let port = flow.port();
    let url = format!("http://127.0.0.1:{port}/metrics");
    let before = scrape(&url);
    assert_eq!(
        sample(&before, "jina_pod_peas_connected", &[("pod", "idx")]),
        2.0
    );
    assert_eq!(
        sample(&before, "jina_pod_peas_expected", &[("pod", "idx")]),
        2.0
    );
    let bad = [("pod", "bad"), ("pea", "bad")];
    assert_eq!(
        sample(&before, "jina_pea_memory_limit_bytes", &bad),
        (1u64 << 30) as f64
    );

    let docs = json!({"data": [{"id": "a", "text": "x"}, {"id": "b", "text": "y"}, {"id": "c", "text": "z"}]});
    for _ in 0..2 {
        let (code, answer) = post(port, "/echo", &docs);
        assert_eq!(code, 200, "{answer}");
    }
    let (code, answer) = post(port, "/panic", &docs);
    assert_eq!(code, 500, "{answer}");
    let kind = answer["header"]["status"]["exception"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = http()
        .post(format!("http://127.0.0.1:{port}/echo"))
        .header("content-type", "application/json")
        .body("{")
        .send()
        .unwrap();
    assert_eq!(refused.status(), 422);

    let after = scrape(&url);
    let gateway = |endpoint: &str, status: &str| {
        sample(
            &after,
            "jina_gateway_requests_total",
            &[
                ("protocol", "http"),
                ("endpoint", endpoint),
                ("status", status),
            ],
        )
    };
    assert_eq!(gateway("/echo", "success"), 2.0);
    assert_eq!(gateway("/panic", &kind), 1.0);
    assert_eq!(gateway("/echo", "bad-request"), 1.0);
    let echo = [("protocol", "http"), ("endpoint", "/echo")];
    assert_eq!(sample(&after, "jina_gateway_documents_total", &echo), 6.0);
    assert_eq!(
        sample(&after, "jina_gateway_request_duration_seconds_count", &echo),
        3.0
    );
    // The scrape itself is the one request in flight.
    assert_eq!(
        sample(
            &after,
            "jina_gateway_requests_in_flight",
            &[("protocol", "http")]
        ),
        1.0
    );
    assert!(
        sample(
            &after,
            "jina_gateway_received_bytes_total",
            &[("protocol", "http")]
        ) > 0.0
    );
    assert!(
        sample(
            &after,
            "jina_gateway_sent_bytes_total",
            &[("protocol", "http")]
        ) > 0.0
    );

    // The Pea that panicked: its requests, the error by kind, the trap and
    // the replacement instance, its handle() times and memory.
    let with = |endpoint: &'static str| [bad[0], bad[1], ("endpoint", endpoint)];
    assert_eq!(
        sample(&after, "jina_pea_requests_total", &with("/echo")),
        2.0
    );
    assert_eq!(
        sample(&after, "jina_pea_requests_total", &with("/panic")),
        1.0
    );
    assert_eq!(
        sample(
            &after,
            "jina_pea_errors_total",
            &[bad[0], bad[1], ("kind", &kind)]
        ),
        1.0
    );
    assert_eq!(sample(&after, "jina_pea_traps_total", &bad), 1.0);
    assert_eq!(
        sample(&after, "jina_pea_instance_restarts_total", &bad),
        1.0
    );
    assert_eq!(
        sample(&after, "jina_pea_handle_seconds_count", &with("/echo")),
        2.0
    );
    assert!(sample(&after, "jina_pea_memory_bytes", &bad) > 0.0);
    assert_eq!(sample(&after, "jina_pea_state_lost", &bad), 0.0);

    // The sharded Pod: every request through its head and tail, each part
    // sent came back, and the shards' Peas counted theirs.
    let idx = [("pod", "idx")];
    assert_eq!(sample(&after, "jina_pod_requests_total", &idx), 3.0);
    assert_eq!(sample(&after, "jina_pod_completed_total", &idx), 3.0);
    let parts = sample(&after, "jina_pod_parts_sent_total", &idx);
    assert!(parts >= 3.0, "{parts}");
    assert_eq!(sample(&after, "jina_pod_parts_received_total", &idx), parts);
    assert_eq!(sample(&after, "jina_pod_timeouts_total", &idx), 0.0);
    let shards: f64 = ["idx/shard-0", "idx/shard-1"]
        .iter()
        .flat_map(|pea| {
            ["/echo", "/panic"].map(|endpoint| {
                sample(
                    &after,
                    "jina_pea_requests_total",
                    &[("pod", "idx"), ("pea", pea), ("endpoint", endpoint)],
                )
            })
        })
        .sum();
    assert_eq!(shards, parts);

    // The Grafana dashboard asks only for metrics the Flow serves.
    let dashboard = std::fs::read_to_string("examples/grafana/jina-wasm.json").unwrap();
    let families: std::collections::BTreeSet<&str> =
        after.keys().map(|k| k.split('{').next().unwrap()).collect();
    let mut asked = 0;
    for (i, _) in dashboard.match_indices("jina_") {
        let name: String = dashboard[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name == "jina_wasm" || name.starts_with("jina_daemon_") {
            continue;
        }
        asked += 1;
        assert!(
            families.contains(name.as_str()),
            "the dashboard asks for {name}, not served"
        );
    }
    assert!(asked > 20, "{asked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_pea_serves_its_own_metrics() {
    let pea = PeaProcess::start("passthrough", &["--name", "solo", "--port-monitoring", "0"]);
    let url = pea.addr("monitoring");
    let mut client = client(&pea).await;
    let reply = client
        .call(request("/index", &[text_doc("a", "x")]))
        .await
        .unwrap();
    assert_eq!(reply.envelope.status, jina_wasm::wire::Status::Success);
    client.close().await;
    let status = crate::util::control(&pea.addr("ctrl"), "STATUS")
        .await
        .unwrap();
    assert_eq!(status["monitoring"].as_str(), Some(url.as_str()));
    let samples = tokio::task::spawn_blocking(move || scrape(&url))
        .await
        .unwrap();
    let solo = [("pod", "solo"), ("pea", "solo")];
    assert_eq!(
        sample(
            &samples,
            "jina_pea_requests_total",
            &[solo[0], solo[1], ("endpoint", "/index")]
        ),
        1.0
    );
    assert_eq!(
        sample(&samples, "jina_pea_memory_limit_bytes", &solo),
        (1u64 << 30) as f64
    );
    // Only the Pea: this process has no gateway.
    assert!(
        samples
            .keys()
            .all(|k| !k.starts_with("jina_gateway_requests_total{"))
    );
}

/// `jina-wasm export` of a Flow with `monitoring: true`: the golden files of
/// tests/exports/monitoring/, and each unit scraped on one port.
#[test]
fn an_export_annotates_every_unit_for_prometheus() {
    let flow = "tests/exports/monitoring.yml";
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("k8s");
    let compose = dir.path().join("docker-compose.yml");
    for (kind, out) in [("kubernetes", &k8s), ("docker-compose", &compose)] {
        let output = crate::util::jina_command()
            .args(["export", kind, flow, out.to_str().unwrap()])
            .env("JINA_WASM_LOG", "warn")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let golden = Path::new("tests/exports/monitoring");
    let mut names: Vec<String> = std::fs::read_dir(&k8s)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in &names {
        let text = std::fs::read_to_string(k8s.join(name)).unwrap();
        if name != "00-namespace.yml" {
            assert!(
                text.contains("prometheus.io/scrape: 'true'"),
                "{name}:\n{text}"
            );
            assert!(
                text.contains("prometheus.io/port: '9090'"),
                "{name}:\n{text}"
            );
            assert!(text.contains("- --port-monitoring\n"), "{name}:\n{text}");
        }
        check(&golden.join("kubernetes").join(name), &text);
    }
    // The gateway, a singleton Pea, a head, its shards (no --namespace).
    assert_eq!(names.len(), 4, "{names:?}");
    let text = std::fs::read_to_string(&compose).unwrap();
    // The gateway, `encode`, `index-head`, `index-0`, `index-1`.
    assert_eq!(
        text.matches("prometheus.io/scrape: 'true'").count(),
        5,
        "{text}"
    );
    check(&golden.join("docker-compose.yml"), &text);
}

fn check(golden: &Path, actual: &str) {
    if std::env::var_os("JINA_WASM_BLESS").is_some() {
        std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
        std::fs::write(golden, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(golden).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "{} differs (JINA_WASM_BLESS=1 rewrites it)",
        golden.display()
    );
}

/// A Flow child whose stderr goes to a file, killed on drop.
struct Logged {
    child: std::process::Child,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn json_logs_parse_and_the_access_line_has_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yml");
    std::fs::write(
        &file,
        format!(
            "pods:\n  - name: p\n    uses: {}\n",
            wasm("passthrough").display()
        ),
    )
    .unwrap();
    let log = dir.path().join("stderr.log");
    let mut child = crate::util::jina_command()
        .args(["flow", "--log-format", "json", "--uses"])
        .arg(&file)
        .env("JINA_WASM_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let flow = Logged { child };
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    let port = ready["port"].as_u64().unwrap() as u16;
    let (code, answer) = post(
        port,
        "/post",
        &json!({"data": [{"text": "a"}, {"text": "b"}], "exec_endpoint": "/index", "header": {"request_id": "req-42"}}),
    );
    assert_eq!(code, 200, "{answer}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let access = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        if let Some(access) = lines.into_iter().find(|l| l["target"] == "access") {
            break access;
        }
        assert!(Instant::now() < deadline, "no access line in:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(flow);
    assert_eq!(access["level"], "INFO", "{access}");
    assert_eq!(access["request"], "req-42", "{access}");
    assert_eq!(access["endpoint"], "/index", "{access}");
    assert_eq!(access["docs"], 2, "{access}");
    assert_eq!(access["status"], "success", "{access}");
    assert_eq!(access["protocol"], "http", "{access}");
    assert!(
        access["duration_ms"].as_f64().is_some_and(|d| d > 0.0),
        "{access}"
    );
}

/// A daemon's `GET /metrics`: the caller's tenant's usage beside its quota,
/// moving when it starts a Pea; another tenant's token sees only its own.
#[test]
fn a_daemon_reports_each_tenants_usage_to_that_tenant() {
    let tenants = "tenants:\n  - name: alice\n    token: alice-token\n    quota: {max_peas: 2, total_memory: 300MiB}\n  - name: bob\n    token: bob-token-x\n";
    let d = crate::daemon::DaemonProcess::start("127.0.0.1", tenants, &[]);
    let scrape_as = |token: Option<&str>| {
        let mut request = http().get(format!("http://{}/metrics", d.address()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().unwrap();
        let code = response.status().as_u16();
        (code, response.text().unwrap())
    };
    assert_eq!(scrape_as(None).0, 401);
    let (code, text) = scrape_as(Some("alice-token"));
    assert_eq!(code, 200, "{text}");
    let before = parse(&text);
    let alice = [("tenant", "alice")];
    assert_eq!(sample(&before, "jina_daemon_tenant_peas", &alice), 0.0);
    assert_eq!(
        sample(&before, "jina_daemon_tenant_peas_quota", &alice),
        2.0
    );
    assert_eq!(
        sample(&before, "jina_daemon_tenant_memory_quota_bytes", &alice),
        (300u64 << 20) as f64
    );

    let (code, up) = d.upload(
        "alice-token",
        "w",
        &[(
            "passthrough.wasm",
            std::fs::read(wasm("passthrough")).unwrap(),
        )],
    );
    assert_eq!(code, 200, "{up}");
    let (code, pea) = d.json(
        "POST",
        "/peas",
        "alice-token",
        &json!({"workspace": "w", "uses": "passthrough.wasm", "memory_hwm": "128MiB"}),
    );
    assert_eq!(code, 201, "{pea}");
    let after = parse(&scrape_as(Some("alice-token")).1);
    assert_eq!(sample(&after, "jina_daemon_tenant_peas", &alice), 1.0);
    assert_eq!(
        sample(&after, "jina_daemon_tenant_memory_bytes", &alice),
        (128u64 << 20) as f64
    );
    assert!(sample(&after, "jina_daemon_tenant_disk_bytes", &alice) > 0.0);
    // Bob's scrape: his own tenant, nothing of Alice's.
    let (code, text) = scrape_as(Some("bob-token-x"));
    assert_eq!(code, 200, "{text}");
    assert!(!text.contains("alice"), "{text}");
    assert_eq!(
        sample(
            &parse(&text),
            "jina_daemon_tenant_peas",
            &[("tenant", "bob")]
        ),
        0.0
    );
}
