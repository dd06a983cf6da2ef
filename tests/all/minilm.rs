//! The MiniLM sentence encoder (examples/executors/minilm-encoder) with the
//! real all-MiniLM-L6-v2 (`make models`): its embeddings against an independent
//! NumPy implementation (tests/interop/minilm/reference.py) on 50+ sentences,
//! its traversal and text handling, a missing or corrupt model as a
//! `bad-config` naming the file, and the same component answering in a Pea, a
//! Pod of two replicas and `jina-wasm run` as docs/minilm.md prints it.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use jina_wasm::Document;
use jina_wasm::executor::{ErrorKind, Sandbox, Volume};
use jina_wasm::wire::Status;
use serde_json::{Value, json};

use crate::pea::{PeaProcess, client, documents, request};
use crate::util::{python_venv, start, target_dir, text_doc, try_start};

const GUEST: &str = "minilm-encoder";

/// The model `make models` installs (`make test` runs it first).
fn model_dir() -> PathBuf {
    let dir = target_dir().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join(".installed").exists(),
        "{} is missing: run `make models` (or `make test`)",
        dir.display()
    );
    dir
}

fn mounted(host: PathBuf) -> Sandbox {
    Sandbox {
        volumes: vec![Volume {
            host,
            guest: "/model".into(),
            read_only: true,
        }],
        ..Sandbox::default()
    }
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}

/// 50+ texts: plain English, accents, non-Latin scripts, CJK, emoji, control
/// characters, empty and blank, and texts far longer than `max_length`.
fn sentences() -> Vec<String> {
    let mut texts: Vec<String> = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "A man is riding a horse.",
        "A woman is playing violin.",
        "Two men pushed carts through the woods.",
        "A man is riding a white horse on an enclosed ground.",
        "A monkey is playing drums.",
        "Someone in a gorilla costume is playing a set of drums.",
        "The new movie is awesome.",
        "The cat sits outside.",
        "The new movie is so great!",
        "Do you like pizza?",
        "Sourdough bread rises because wild yeast and bacteria ferment the flour.",
        "Owls hunt at night by listening for the rustle of mice under the snow.",
        "A write-ahead log lets a database recover committed transactions after a crash.",
        "The tides are driven by the gravitational pull of the moon on the oceans.",
        "WebAssembly components give every executor its own sandbox and memory limit.",
        "ZeroMQ carries requests between peas, heads and tails without a broker.",
        "How do I reset my password if I no longer have access to my e-mail?",
        "Stock markets fell sharply on Tuesday after the central bank raised interest rates.",
        "Photosynthesis converts light energy into chemical energy stored in glucose.",
        "The quick brown fox jumps over the lazy dog.",
        "I can't believe it's not butter!",
        "Error 404: the page you requested (/docs/v2/index.html) could not be found.",
        "e = mc^2, where c ≈ 299,792,458 m/s.",
        "She sells sea-shells by the sea-shore; the shells she sells are sea-shells, I'm sure.",
        "Rust's borrow checker rejects data races at compile time.",
        "UPPER CASE TEXT IS LOWERCASED BY THE UNCASED TOKENIZER",
        "supercalifragilisticexpialidocious antidisestablishmentarianism",
        // Non-ASCII.
        "Café naïve crème brûlée à la française.",
        "Straße, Größe und Übermut: ein Märchen über Bäume.",
        "¿Dónde está la biblioteca? ¡Está cerca de la estación!",
        "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.",
        "Привет, мир! Как дела сегодня?",
        "机器学习正在改变世界。",
        "日本語のテキストも埋め込みできます。",
        "한국어 문장도 처리합니다.",
        "مرحبا بالعالم",
        "emoji 😀🚀✨ in a sentence 👍",
        "Ｆｕｌｌｗｉｄｔｈ ｌｅｔｔｅｒｓ and ligatures ﬁ ﬂ",
        "İstanbul, Kraków, Zürich, São Paulo, Reykjavík",
        "tabs\tand\nnewlines\r\nand a NUL\u{0} and a BOM\u{feff} inside",
        // Empty, blank, punctuation only.
        "",
        "   ",
        "?!...",
        "a",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // Longer than max_length (256 tokens), by far.
    let paragraph = "Shards keep their part of the index in a workspace that survives restarts, \
                     and the gateway turns HTTP requests into messages for the flow. ";
    texts.push(paragraph.repeat(20));
    texts.push("word ".repeat(1000));
    texts.push(format!(
        "{} {}",
        "Ünïcödé ".repeat(300),
        "tail that is cut off"
    ));
    texts.push("x".repeat(500));
    texts
}

/// The reference embeddings of `texts`, cut at `max_length` tokens.
fn reference(texts: &[String], max_length: usize) -> Vec<Vec<f32>> {
    use std::io::Write;
    let python = python_venv(
        "minilm-reference-venv",
        "tests/interop/minilm/requirements.txt",
    );
    let mut child = Command::new(python)
        .arg("tests/interop/minilm/reference.py")
        .arg(model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let input = json!({"texts": texts, "max_length": max_length}).to_string();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "reference.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    serde_json::from_value(answer["embeddings"].clone()).unwrap()
}

#[test]
fn embeddings_match_an_independent_numpy_reference() {
    let texts = sentences();
    assert!(texts.len() >= 50, "{} texts", texts.len());
    let docs: Vec<Document> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| text_doc(&format!("s{i}"), t))
        .collect();
    // The defaults (max_length 256, batches of 32, the host's sgemm through
    // jina:linalg), a short max_length with small batches, so that many texts
    // are cut and batches split, and the component's own simd128 sgemm.
    let mut references = std::collections::HashMap::new();
    for (config, max_length) in [
        (json!({}), 256),
        (json!({"max_length": 12, "batch_size": 5}), 12),
        (json!({"max_length": 12, "kernel": "wasm"}), 12),
    ] {
        let mut encoder = start(GUEST, config.clone(), mounted(model_dir()));
        let out = encoder.handle("/encode", &docs, &Value::Null).unwrap();
        let expected = references
            .entry(max_length)
            .or_insert_with(|| reference(&texts, max_length));
        assert_eq!((out.len(), expected.len()), (texts.len(), texts.len()));
        for (i, (doc, want)) in out.iter().zip(expected.iter()).enumerate() {
            let got = doc
                .embedding
                .as_ref()
                .unwrap_or_else(|| panic!("text {i} has no embedding"));
            assert_eq!(got.len(), 384, "text {i}");
            let norm = got.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "text {i}: norm {norm}");
            let cos = cosine(got, want);
            assert!(
                cos >= 0.999,
                "{config}: text {i} {:?}: cosine {cos} with the reference",
                texts[i].chars().take(40).collect::<String>()
            );
        }
    }
}

#[test]
fn similar_sentences_are_closer_and_chunks_are_embedded_by_traversal() {
    let mut encoder = start(
        GUEST,
        json!({"traversal": "chunks", "normalize": false}),
        mounted(model_dir()),
    );
    let mut root = text_doc("root", "the root's own text stays unembedded");
    root.chunks = vec![
        text_doc("bread", "A man is eating a piece of bread."),
        text_doc("food", "A man is eating food."),
        text_doc("horse", "A man is riding a horse."),
        Document {
            id: "no-text".into(),
            ..Default::default()
        },
    ]
    .into();
    let out = encoder.handle("/", &[root], &Value::Null).unwrap();
    assert!(
        out[0].embedding.is_none(),
        "traversal chunks embeds only chunks"
    );
    let chunk = |id: &str| {
        out[0]
            .chunks
            .iter()
            .find(|c| c.id == id)
            .unwrap()
            .embedding
            .clone()
    };
    let (bread, food, horse) = (
        chunk("bread").unwrap(),
        chunk("food").unwrap(),
        chunk("horse").unwrap(),
    );
    assert!(chunk("no-text").is_none());
    assert!(
        cosine(&bread, &food) > cosine(&bread, &horse) + 0.2,
        "{} vs {}",
        cosine(&bread, &food),
        cosine(&bread, &horse)
    );
    // normalize: false keeps the pooled vector's own length.
    let norm = bread.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() > 0.01, "norm {norm}");

    // A request's parameters override the traversal; a bad one is named.
    let docs = [text_doc("r", "root text")];
    let out = encoder
        .handle("/encode", &docs, &json!({"traversal": "r"}))
        .unwrap();
    assert_eq!(out[0].embedding.as_ref().map(Vec::len), Some(384));
    let err = encoder
        .handle("/encode", &docs, &json!({"traversal": "x"}))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::BadRequest);
    assert!(err.message.contains("parameters.traversal"), "{err}");
    // Still serving.
    assert!(encoder.handle("/encode", &docs, &Value::Null).is_ok());
}

#[test]
fn a_missing_or_corrupt_model_is_a_bad_config_naming_the_file() {
    let bad = |config: Value, sandbox: Sandbox, file: &str| {
        let err = try_start(GUEST, config, sandbox)
            .err()
            .unwrap_or_else(|| panic!("started without a usable {file}"));
        assert_eq!(err.kind, ErrorKind::BadConfig, "{err}");
        assert!(err.message.contains(file), "expected {file:?} in: {err}");
    };
    // Nothing mounted at /model.
    bad(json!({}), Sandbox::default(), "/model/config.json");
    bad(
        json!({"max_length": 1000}),
        mounted(model_dir()),
        "with.max_length = 1000",
    );
    bad(
        json!({"batch_size": 0}),
        mounted(model_dir()),
        "with.batch_size = 0",
    );
    bad(
        json!({"traversal": "up"}),
        mounted(model_dir()),
        "with.traversal",
    );
    bad(
        json!({"kernel": "gpu"}),
        mounted(model_dir()),
        "with.kernel = \"gpu\"",
    );

    // A copy of the model with one file broken at a time. The directory is in
    // the target directory so the weights can be hard-linked, not copied.
    let scratch = tempfile::tempdir_in(target_dir()).unwrap();
    let dir = scratch.path();
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let from = model_dir().join(file);
        if std::fs::hard_link(&from, dir.join(file)).is_err() {
            std::fs::copy(&from, dir.join(file)).unwrap();
        }
    }
    let weights = std::fs::read(model_dir().join("model.safetensors")).unwrap();
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &weights[..weights.len() / 2]).unwrap();
    bad(
        json!({}),
        mounted(dir.to_path_buf()),
        "/model/model.safetensors",
    );
    std::fs::write(dir.join("model.safetensors"), b"not a model").unwrap();
    bad(
        json!({}),
        mounted(dir.to_path_buf()),
        "/model/model.safetensors",
    );
    std::fs::write(dir.join("model.safetensors"), &weights).unwrap();
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer.json"), b"{\"truncated\": ").unwrap();
    bad(
        json!({}),
        mounted(dir.to_path_buf()),
        "/model/tokenizer.json",
    );
    std::fs::remove_file(dir.join("config.json")).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"hidden_size\": 384}").unwrap();
    bad(json!({}), mounted(dir.to_path_buf()), "/model/config.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_in_a_pea_and_in_a_pod_of_two_replicas() {
    let volume = format!("{}:/model:ro", model_dir().display());
    let texts = [
        "The tides follow the moon.",
        "Sourdough rises with wild yeast.",
        "",
        "Привет, мир!",
    ];
    let docs: Vec<Document> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| text_doc(&format!("d{i}"), t))
        .collect();

    let pea = PeaProcess::start(GUEST, &["--volumes", &volume]);
    let mut pea_client = client(&pea).await;
    let reply = pea_client.call(request("/encode", &docs)).await.unwrap();
    assert_eq!(
        reply.envelope.status,
        Status::Success,
        "{:?}\n{}",
        reply.envelope.status,
        pea.log()
    );
    let want: Vec<Vec<f32>> = documents(&reply)
        .into_iter()
        .map(|d| d.embedding.unwrap())
        .collect();
    assert!(want.iter().all(|e| e.len() == 384));
    pea_client.close().await;
    drop(pea);

    let pod = crate::pod::pod(GUEST, &["--parallel", "2", "--volumes", &volume]);
    let mut pod_client = crate::pod::client(&pod).await;
    let requests: Vec<_> = (0..6).map(|_| request("/encode", &docs)).collect();
    let mut answered = 0;
    pod_client
        .stream(requests, |reply| {
            assert_eq!(
                reply.envelope.status,
                Status::Success,
                "{:?}",
                reply.envelope.status
            );
            for (doc, want) in documents(&reply).iter().zip(&want) {
                let cos = cosine(doc.embedding.as_ref().unwrap(), want);
                assert!(
                    cos > 0.99999,
                    "a replica answered differently: cosine {cos}"
                );
            }
            answered += 1;
            Ok(())
        })
        .await
        .unwrap();
    assert_eq!(answered, 6);
    pod_client.close().await;
}

#[test]
fn jina_wasm_run_encodes_as_the_docs_print_it() {
    let volume = format!("{}:/model:ro", model_dir().display());
    let uses = crate::util::wasm(GUEST);
    let out = crate::cli::jina(
        &[
            "run",
            "--uses",
            uses.to_str().unwrap(),
            "--volumes",
            &volume,
            "--endpoint",
            "/encode",
        ],
        "A man is eating food.\n{\"id\": \"q\", \"text\": \"A man is eating a piece of bread.\"}\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["id"], "q");
    for line in &lines {
        assert_eq!(
            line["embedding"].as_array().map(Vec::len),
            Some(384),
            "{line}"
        );
    }
}

/// recall@1 of `encoder` on examples/data/retrieval.jsonl: each query,
/// written without the answer's key words where possible, against the 12
/// documents of the demo corpus; the nearest by cosine must be its answer.
fn recall_at_1(encoder: &mut jina_wasm::executor::Executor) -> f64 {
    let corpus: Vec<Document> = std::fs::read_to_string("examples/data/corpus.txt")
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let labelled: Vec<Value> = std::fs::read_to_string("examples/data/retrieval.jsonl")
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let queries: Vec<Document> = labelled
        .iter()
        .enumerate()
        .map(|(i, q)| text_doc(&format!("q{i}"), q["query"].as_str().unwrap()))
        .collect();
    let corpus = encoder.handle("/encode", &corpus, &Value::Null).unwrap();
    let queries = encoder.handle("/encode", &queries, &Value::Null).unwrap();
    let hits = queries
        .iter()
        .zip(&labelled)
        .filter(|(q, label)| {
            let q = q.embedding.as_ref().unwrap();
            let best = corpus
                .iter()
                .max_by(|a, b| {
                    cosine(q, a.embedding.as_ref().unwrap())
                        .total_cmp(&cosine(q, b.embedding.as_ref().unwrap()))
                })
                .unwrap();
            best.id == label["answer"].as_str().unwrap()
        })
        .count();
    hits as f64 / labelled.len() as f64
}

#[test]
fn minilm_retrieves_better_than_the_hashing_encoder() {
    let mut hashing = start("text-encoder", Value::Null, Sandbox::default());
    let mut minilm = start(GUEST, json!({}), mounted(model_dir()));
    let (hashing, minilm) = (recall_at_1(&mut hashing), recall_at_1(&mut minilm));
    // docs/minilm.md reports these two figures.
    eprintln!(
        "recall@1 on examples/data/retrieval.jsonl: hashing {hashing:.3}, MiniLM {minilm:.3}"
    );
    assert!(
        minilm >= 0.8 && minilm > hashing + 0.2,
        "recall@1: hashing {hashing:.3}, MiniLM {minilm:.3}"
    );
}

/// The encoder imports the host's matrix product; a component that never
/// calls it (built with the same SDK) does not, so it runs on any host that
/// implements the executor contract, as before.
#[test]
fn only_the_components_that_call_jina_linalg_import_it() {
    let runtime = crate::util::runtime();
    let imports = |guest: &str| {
        runtime
            .load(&crate::util::wasm(guest))
            .unwrap()
            .imports
            .clone()
    };
    let encoder = imports(GUEST);
    assert!(
        encoder.iter().any(|i| i == "jina:linalg/linalg@0.1.0"),
        "{encoder:?}"
    );
    for guest in ["passthrough", "text-encoder", "vector-indexer"] {
        let imports = imports(guest);
        assert!(
            !imports.iter().any(|i| i.starts_with("jina:linalg")),
            "{guest}: {imports:?}"
        );
    }
}
