//! The admin REST API against a running pipeline: connectors and their state, pause and resume
//! (a paused sink delivers nothing until resumed, a paused source reads nothing), restart,
//! offsets read, reset and altered, an on-demand snapshot, config validation, the token on
//! every write, the OpenAPI document matching the routes the server answers, and Schemathesis
//! finding the live API true to that document.

use std::time::Duration;

use serde_json::Value as Json;
use sluice_integration_tests::{
    free_port, http_request, jsonl_sink, source_config, wait_for, Sluice, TestDb,
};

const TOKEN: &str = "a-long-random-admin-token";

/// `db`'s source and the JSONL sink `file` reading its table `t`, with the API on `port` (its
/// token in the process's directory), then `extra` sections.
fn config_with_api(db: &TestDb, port: u16, extra: &str) -> String {
    format!(
        "[api]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{{dir}}/token\"\n\n{}{}{extra}",
        source_config(db, ""),
        jsonl_sink("\"src.public.t\""),
    )
}

/// Starts `config`'s pipeline with the API's token in place; returns once the source streams.
async fn start_with_token(db: &TestDb, config: &str) -> Sluice {
    let mut sluice = Sluice::new(config);
    std::fs::write(sluice.path("token"), format!("{TOKEN}\n")).unwrap();
    sluice.start();
    db.wait_for_streaming().await;
    sluice
}

fn lines(sluice: &Sluice) -> usize {
    std::fs::read_to_string(sluice.path("out.jsonl")).map_or(0, |t| t.lines().count())
}

fn state(port: u16, name: &str) -> String {
    let (code, body) = http_request(port, "GET", &format!("/connectors/{name}/status"), None, "");
    assert_eq!(code, 200, "{body}");
    let status: Json = serde_json::from_str(&body).expect("JSON");
    status["state"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_pauses_resumes_and_describes_the_pipeline() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let port = free_port();
    let mut sluice = start_with_token(&db, &config_with_api(&db, port, "")).await;
    db.exec("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 10) g");
    wait_for(Duration::from_secs(30), "10 lines", || lines(&sluice) == 10).await;

    let (code, body) = http_request(port, "GET", "/connectors", None, "");
    assert_eq!((code, body.as_str()), (200, r#"["file","src"]"#));
    let (_, body) = http_request(port, "GET", "/connectors?expand=status", None, "");
    let all: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(all["src"]["status"]["type"], "source");
    assert_eq!(all["file"]["status"]["state"], "RUNNING");
    let (_, body) = http_request(port, "GET", "/connectors/file", None, "");
    let file: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(file["kind"], "jsonl");
    assert_eq!(file["topics"], serde_json::json!(["src.public.t"]));
    assert_eq!(
        http_request(port, "GET", "/connectors/nope/status", None, "").0,
        404
    );

    // Writes without the token, or with a wrong one, change nothing.
    let (code, body) = http_request(port, "PUT", "/connectors/file/pause", None, "");
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        http_request(
            port,
            "PUT",
            "/connectors/file/pause",
            Some("wrong-token-wrong-token"),
            ""
        )
        .0,
        401
    );
    assert_eq!(state(port, "file"), "RUNNING");

    // A paused sink delivers nothing; resumed, it catches up.
    let started = std::time::Instant::now();
    assert_eq!(
        http_request(port, "PUT", "/connectors/file/pause", Some(TOKEN), "").0,
        202
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a pause takes effect within seconds"
    );
    assert_eq!(state(port, "file"), "PAUSED");
    db.exec("INSERT INTO t SELECT g, 'b' FROM generate_series(11, 20) g");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lines(&sluice), 10, "nothing is delivered while paused");
    assert_eq!(
        http_request(port, "PUT", "/connectors/file/resume", Some(TOKEN), "").0,
        202
    );
    wait_for(Duration::from_secs(30), "20 lines", || lines(&sluice) == 20).await;
    assert_eq!(state(port, "file"), "RUNNING");

    // A paused source reads nothing; resumed, it reads on from its slot.
    assert_eq!(
        http_request(port, "PUT", "/connectors/src/pause", Some(TOKEN), "").0,
        202
    );
    assert_eq!(state(port, "src"), "PAUSED");
    db.exec("INSERT INTO t SELECT g, 'c' FROM generate_series(21, 30) g");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(lines(&sluice), 20);
    assert_eq!(
        http_request(port, "PUT", "/connectors/src/resume", Some(TOKEN), "").0,
        202
    );
    wait_for(Duration::from_secs(30), "30 lines", || lines(&sluice) == 30).await;

    // Restart, offsets, an on-demand snapshot.
    assert_eq!(
        http_request(port, "POST", "/connectors/file/restart", Some(TOKEN), "").0,
        202
    );
    assert_eq!(state(port, "file"), "RUNNING");
    let (_, body) = http_request(port, "GET", "/connectors/file/offsets", None, "");
    let offsets: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(
        offsets["offsets"][0]["partition"]["topic"], "src.public.t",
        "{body}"
    );
    let (_, body) = http_request(port, "GET", "/connectors/src/offsets", None, "");
    assert!(body.contains("\"position\":\"pg:"), "{body}");
    let (code, body) = http_request(
        port,
        "POST",
        "/connectors/src/snapshot",
        Some(TOKEN),
        r#"{"tables": ["public.t"]}"#,
    );
    assert_eq!(code, 202, "{body}");
    wait_for(Duration::from_secs(60), "the snapshot's 30 rows", || {
        lines(&sluice) >= 60
    })
    .await;
    let (code, body) = http_request(
        port,
        "POST",
        "/connectors/src/snapshot",
        Some(TOKEN),
        r#"{"table": "t"}"#,
    );
    assert_eq!(code, 400, "{body}");

    // Validation names the field; a good config has no errors.
    let (code, body) = http_request(
        port,
        "PUT",
        "/connector-plugins/http/config/validate",
        Some(TOKEN),
        r#"{"name": "svc", "url": "ftp://x", "topics": ["a"]}"#,
    );
    assert_eq!(code, 200);
    let answer: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["error_count"], 1, "{body}");
    assert_eq!(
        answer["configs"][0]["value"]["name"], "sinks[0].url",
        "{body}"
    );
    let (_, body) = http_request(
        port,
        "PUT",
        "/connector-plugins/http/config/validate",
        Some(TOKEN),
        r#"{"name": "svc", "url": "http://127.0.0.1:1/", "topics": ["a"], "batch_events": "many"}"#,
    );
    assert!(body.contains("batch_events"), "{body}");
    let (_, body) = http_request(
        port,
        "PUT",
        "/connector-plugins/http/config/validate",
        Some(TOKEN),
        r#"{"name": "svc", "url": "http://127.0.0.1:1/", "topics": ["a"]}"#,
    );
    assert!(body.contains("\"error_count\":0"), "{body}");

    // Every operation the document describes is served (nothing 404 or 405), and the server
    // answers nothing the document leaves out.
    let (code, body) = http_request(port, "GET", "/openapi.json", None, "");
    assert_eq!(code, 200);
    let doc: Json = serde_json::from_str(&body).expect("the OpenAPI document is JSON");
    let mut operations = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{name}", "file").replace("{kind}", "jsonl");
            let body = if path.ends_with("/snapshot") {
                r#"{"tables": ["public.t"]}"#
            } else {
                "{}"
            };
            let (code, answer) =
                http_request(port, &method.to_uppercase(), &concrete, Some(TOKEN), body);
            assert!(
                code != 404 && code != 405,
                "{method} {concrete}: {code} {answer}"
            );
            operations += 1;
        }
    }
    assert_eq!(operations, 19);
    assert_eq!(
        http_request(port, "GET", "/connectors/file/tasks", None, "").0,
        404
    );
    assert_eq!(
        http_request(port, "DELETE", "/connectors/file", Some(TOKEN), "").0,
        405
    );
    assert_eq!(sluice.stop(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_and_post_reload_apply_a_new_config_and_refuse_a_bad_one() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let port = free_port();
    let head = config_with_api(&db, port, "");
    let second = "[[sinks]]\nname = \"second\"\nkind = \"jsonl\"\npath = \"{dir}/second.jsonl\"\ntopics = [\"src.public.t\"]\n";
    let mut sluice = start_with_token(&db, &head).await;
    db.exec("INSERT INTO t SELECT g, 'a' FROM generate_series(1, 5) g");
    wait_for(Duration::from_secs(30), "5 lines", || lines(&sluice) == 5).await;

    // SIGHUP with a sink added: it starts and reads the topic from its start.
    sluice.reconfigure(&format!("{head}{second}"));
    sluice.hangup();
    let second_lines = |s: &Sluice| {
        std::fs::read_to_string(s.path("second.jsonl")).map_or(0, |t| t.lines().count())
    };
    wait_for(Duration::from_secs(30), "the new sink's 5 lines", || {
        second_lines(&sluice) == 5
    })
    .await;
    assert!(
        sluice.stderr().contains("config reloaded"),
        "{}",
        sluice.stderr()
    );

    // A file that does not load is refused, and the pipeline goes on as it was.
    sluice.reconfigure(&format!(
        "{head}{second}[[sinks]]\nname = \"bad\"\nkind = \"jsonl\"\n"
    ));
    sluice.hangup();
    wait_for(Duration::from_secs(10), "the refusal in the log", || {
        sluice.stderr().contains("config reload refused")
    })
    .await;
    let (code, body) = http_request(port, "POST", "/reload", Some(TOKEN), "");
    assert_eq!(code, 400, "{body}");
    assert!(
        body.contains("sinks[2]") && body.contains("the running pipeline goes on unchanged"),
        "{body}"
    );
    db.exec("INSERT INTO t SELECT g, 'b' FROM generate_series(6, 10) g");
    wait_for(
        Duration::from_secs(30),
        "both sinks still delivering",
        || lines(&sluice) == 10 && second_lines(&sluice) == 10,
    )
    .await;

    // Through the API: the second sink removed, the first changed (restarted), the source untouched.
    let changed = head.replace("out.jsonl", "third.jsonl");
    sluice.reconfigure(&changed);
    let (code, body) = http_request(port, "POST", "/reload", Some(TOKEN), "");
    assert_eq!(code, 200, "{body}");
    let report: Json = serde_json::from_str(&body).unwrap();
    assert_eq!(report["removed"], serde_json::json!(["second"]), "{body}");
    assert_eq!(report["restarted"], serde_json::json!(["file"]), "{body}");
    assert_eq!(report["unchanged"], serde_json::json!(["src"]), "{body}");
    let (_, body) = http_request(port, "GET", "/connectors", None, "");
    assert_eq!(body, r#"["file","src"]"#);
    assert_eq!(sluice.stop(), Some(0));
}

fn offsets_of(port: u16, name: &str) -> Json {
    let (code, body) = http_request(
        port,
        "GET",
        &format!("/connectors/{name}/offsets"),
        None,
        "",
    );
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// A stopped sink's offsets reset (DELETE) and altered (PATCH): the JSONL sink (offsets in a
/// file beside its output) and the Postgres sink (offsets in its target, which it resumes from
/// whatever the consumer group says) deliver again from the new offsets, once: a restart after
/// the change has settled does not deliver again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_sinks_offsets_are_reset_and_altered() {
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let replica = TestDb::create();
    let port = free_port();
    let copy = format!(
        "[[sinks]]\nname = \"copy\"\nkind = \"postgres\"\nurl = \"{}\"\ntopics = [\"src.public.t\"]\n",
        replica.url(),
    );
    let mut sluice = start_with_token(&db, &config_with_api(&db, port, &copy)).await;
    db.exec("INSERT INTO t SELECT g, 'a' || g FROM generate_series(1, 10) g");
    wait_for(Duration::from_secs(30), "10 lines and rows", || {
        lines(&sluice) == 10 && replica.exec("SELECT count(*) FROM t") == "10"
    })
    .await;
    let end = offsets_of(port, "file")["offsets"][0]["offset"]["offset"]
        .as_u64()
        .unwrap();
    assert!(end >= 10, "{end}");
    let request =
        |method: &str, path: &str, body: &str| http_request(port, method, path, Some(TOKEN), body);

    // Not while it runs, never a source's, nothing without the token.
    let (code, body) = request("DELETE", "/connectors/file/offsets", "");
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("stop it first"), "{body}");
    let (code, body) = request("DELETE", "/connectors/src/offsets", "");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("snapshot"), "{body}");
    assert_eq!(
        http_request(port, "DELETE", "/connectors/file/offsets", None, "").0,
        401
    );

    // Reset: both sinks deliver everything again; the Postgres sink's target gets back a row
    // deleted there by hand.
    for sink in ["file", "copy"] {
        let (code, body) = request("PUT", &format!("/connectors/{sink}/stop"), "");
        assert_eq!(code, 202, "{body}");
        assert_eq!(state(port, sink), "STOPPED");
    }
    replica.exec("DELETE FROM t WHERE id = 3");
    for sink in ["file", "copy"] {
        let (code, body) = request("DELETE", &format!("/connectors/{sink}/offsets"), "");
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("reset successfully"), "{body}");
    }
    let shown = offsets_of(port, "copy");
    assert_eq!(shown["offsets"][0]["offset"]["offset"], 0, "{shown}");
    for sink in ["file", "copy"] {
        assert_eq!(
            request("PUT", &format!("/connectors/{sink}/resume"), "").0,
            202
        );
    }
    wait_for(Duration::from_secs(30), "the file delivered again", || {
        lines(&sluice) == 20
    })
    .await;
    wait_for(Duration::from_secs(30), "the deleted row back", || {
        replica.exec("SELECT count(*) FROM t") == "10"
    })
    .await;
    let text = std::fs::read_to_string(sluice.path("out.jsonl")).unwrap();
    let all: Vec<&str> = text.lines().collect();
    assert_eq!(all[..10], all[10..], "the same events, in the same order");
    wait_for(
        Duration::from_secs(30),
        "the target's offsets at the end",
        || {
            replica.exec("SELECT next_offset FROM _sluice_offsets WHERE sink = 'copy'")
                == end.to_string()
        },
    )
    .await;

    // Alter: the file sink skips to the last three records.
    assert_eq!(request("PUT", "/connectors/file/stop", "").0, 202);
    let bad = [
        (r#"{"offsets": []}"#, "at least one partition"),
        (
            r#"{"offsets": [{"partition": {"topic": "other", "partition": 0}, "offset": {"offset": 1}}]}"#,
            "does not read topic",
        ),
        (
            r#"{"offsets": [{"partition": {"topic": "src.public.t", "partition": 9}, "offset": {"offset": 1}}]}"#,
            "no partition 9",
        ),
        (
            r#"{"offsets": [{"partition": {"topic": "src.public.t", "partition": 0}, "offset": {"offset": 99999}}]}"#,
            "lies past its end",
        ),
        (r#"{"offset": 3}"#, "the body must be"),
    ];
    for (body, says) in bad {
        let (code, answer) = request("PATCH", "/connectors/file/offsets", body);
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(answer.contains(says), "{body}: {answer}");
    }
    let (code, body) = request(
        "PATCH",
        "/connectors/file/offsets",
        &format!(
            r#"{{"offsets": [{{"partition": {{"topic": "src.public.t", "partition": 0}}, "offset": {{"offset": {}}}}}]}}"#,
            end - 3
        ),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("altered successfully"), "{body}");
    assert_eq!(request("PUT", "/connectors/file/resume", "").0, 202);
    wait_for(Duration::from_secs(30), "the last three again", || {
        lines(&sluice) == 23
    })
    .await;
    let text = std::fs::read_to_string(sluice.path("out.jsonl")).unwrap();
    let all: Vec<&str> = text.lines().collect();
    assert_eq!(all[20..], all[7..10]);

    // Settled: a restart delivers nothing again.
    assert_eq!(sluice.stop(), Some(0));
    sluice.start();
    db.exec("INSERT INTO t VALUES (11, 'b')");
    wait_for(Duration::from_secs(30), "the new row", || {
        replica.exec("SELECT count(*) FROM t") == "11"
    })
    .await;
    wait_for(Duration::from_secs(30), "one more line", || {
        lines(&sluice) == 24
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lines(&sluice), 24);
    assert_eq!(sluice.stop(), Some(0));
}

/// Schemathesis (PyPI, `dev/services up schemathesis`) against the live API, from its own
/// OpenAPI document: requests generated from the schema, valid and not, one after another and
/// in sequences, each answer checked against the document (no 5xx, documented status codes,
/// bodies matching their schemas, invalid input refused, 405 naming what is allowed). Once
/// with names that exist nowhere, then against the real sink and source (pausing, stopping,
/// restarting, changing offsets, asking for snapshots at random). The pipeline delivers
/// afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_the_live_api_true_to_its_document() {
    let schemathesis =
        sluice_integration_tests::workspace_root().join("target/schemathesis/bin/schemathesis");
    assert!(
        schemathesis.exists(),
        "{} is missing: run dev/services up schemathesis",
        schemathesis.display()
    );
    let db = TestDb::create();
    db.exec("CREATE TABLE t (id int PRIMARY KEY, v text)");
    let port = free_port();
    let mut sluice = start_with_token(&db, &config_with_api(&db, port, "")).await;
    for name in [None, Some("file"), Some("src")] {
        let mut config = format!("headers = {{ Authorization = \"Bearer {TOKEN}\" }}\n");
        let mut args = vec!["--max-examples", "30"];
        if let Some(name) = name {
            config.push_str(&format!(
                "[parameters]\n\"path.name\" = \"{name}\"\n\"path.kind\" = \"jsonl\"\n"
            ));
            // With real connectors, whether valid data is taken depends on their state (a
            // sink takes no snapshot, reads only its own topics), and offsets reset stay
            // readable, as in Kafka Connect.
            args.extend([
                "--exclude-checks",
                "positive_data_acceptance,use_after_free",
            ]);
        }
        let file = sluice.path("schemathesis.toml");
        std::fs::write(&file, config).unwrap();
        let out = std::process::Command::new(&schemathesis)
            .current_dir(sluice.path(""))
            .arg("--config-file")
            .arg(&file)
            .arg("run")
            .arg(format!("http://127.0.0.1:{port}/openapi.json"))
            .args(&args)
            .output()
            .expect("run schemathesis");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis ({name:?}) found failures:\n{report}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(report.contains(" passed"), "{report}");
    }
    // Whatever it left paused or stopped runs again and delivers.
    for name in ["src", "file"] {
        let (code, body) = http_request(
            port,
            "PUT",
            &format!("/connectors/{name}/resume"),
            Some(TOKEN),
            "",
        );
        assert_eq!(code, 202, "{body}");
    }
    db.exec("INSERT INTO t VALUES (1, 'after the fuzzing')");
    wait_for(Duration::from_secs(60), "the row in the file", || {
        std::fs::read_to_string(sluice.path("out.jsonl"))
            .is_ok_and(|t| t.contains("after the fuzzing"))
    })
    .await;
    assert!(sluice.is_running(), "{}", sluice.stderr());
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}
