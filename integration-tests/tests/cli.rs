//! The command line: exit codes and messages for bad configs and unreachable servers, and every
//! example config in configs/ is valid.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sluice_integration_tests::{code_and_output, sluice_bin};

/// Runs `sluice ARGS` on a config with `body`; returns (exit code, stderr, stdout).
fn sluice_with_config(args: &[&str], body: &str) -> (i32, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipeline.toml");
    std::fs::write(
        &path,
        format!("[log]\ndir = \"{}/log\"\n{body}", dir.path().display()),
    )
    .unwrap();
    let output = Command::new(sluice_bin())
        .args(args)
        .arg("-c")
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

const SOURCE: &str = "[[sources]]\nname = \"a\"\nkind = \"postgres\"\n";

#[test]
fn config_mistakes_exit_2_naming_the_key_and_the_file() {
    let cases = [
        (format!("{SOURCE}url = \"postgres://u@h/d\"\ntabels = [\"x\"]\n"), "unknown field `tabels`"),
        (SOURCE.to_owned(), "missing configuration field \"sources[0].url\""),
        (format!("{SOURCE}url = \"postgres://u@h/d\"\nmax_batch_events = \"many\"\n"), "sources[0].max_batch_events: invalid type: string \"many\", expected usize"),
        ("[[sources]]\nname = \"a\"\nkind = \"postgress\"\nurl = \"x\"\n".to_owned(), "unknown kind `postgress`"),
        (format!("{SOURCE}url = \"mysql://u@h/d\"\n"), "sources[0].url"),
        (format!("{SOURCE}url = \"postgres://u@h/d\"\ntables = [\"orders\"]\n"), "sources[0].tables"),
        (format!("[api]\nlistn = \"x\"\n{SOURCE}url = \"postgres://u@h/d\"\n"), "unknown field `listn`"),
        (format!("{SOURCE}url = \"postgres://u@h/d\"\n[[sinks]]\nname = \"f\"\nkind = \"jsonl\"\ntopics = []\npath = \"x\"\n"), "sinks[0].topics"),
        (format!("compression = \"zstd\"\n{SOURCE}url = \"postgres://u@h/d\"\n"), "log.compression: \"zstd\" is not one of lz4, none"),
        (format!("[[log.topic_settings]]\ntopics = \"a.*\"\npartitions = 3\n{SOURCE}url = \"postgres://u@h/d\"\n"), "log.topic_settings: settings of topics on Kafka"),
        (format!("kind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n[[log.topic_settings]]\ntopics = \"a.*\"\npartitions = 0\n{SOURCE}url = \"postgres://u@h/d\"\n"), "log.topic_settings[0].partitions: must be between 1 and 1024"),
        (format!("{SOURCE}url = \"postgres://u@h/d\"\n[[sinks]]\nname = \"r\"\nkind = \"postgres\"\ntopics = [\"a.public.*\"]\nurl = \"postgres://u@h/t\"\nbatch_size = 3\n"), "sinks[0].batch_size: unknown field `batch_size`"),
    ];
    for (body, expected) in cases {
        for command in ["check", "run"] {
            let (code, stderr, _) = sluice_with_config(&[command], &body);
            assert_eq!(code, 2, "{command} on:\n{body}\nstderr: {stderr}");
            assert!(
                stderr.contains(expected),
                "{command}: expected {expected:?} in: {stderr}"
            );
            assert!(
                stderr.contains("pipeline.toml"),
                "the message names the file: {stderr}"
            );
        }
    }
}

#[test]
fn a_missing_file_and_bad_usage_exit_2() {
    let output = Command::new(sluice_bin())
        .args(["run", "-c", "/nonexistent/x.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no such config file"));
    let output = Command::new(sluice_bin())
        .args(["frobnicate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn an_unreachable_server_exits_1_saying_where_it_tried() {
    sluice_bin(); // built before the clock starts
    let started = Instant::now();
    let (code, stderr, _) = sluice_with_config(
        &["run"],
        &format!("{SOURCE}url = \"postgres://postgres@127.0.0.1:1/db\"\n"),
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("cannot connect to Postgres at 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(stderr.contains("refused"), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "gave up in time"
    );

    let (code, stdout_and_err, out) = sluice_with_config(
        &["check", "--connect"],
        &format!("{SOURCE}url = \"postgres://postgres@127.0.0.1:1/db\"\n"),
    );
    assert_eq!(code, 1, "{stdout_and_err}");
    assert!(out.contains("source a: FAILED: cannot connect"), "{out}");
}

#[test]
fn every_example_config_is_valid() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("configs");
    let mut checked = 0;
    for entry in std::fs::read_dir(&configs).unwrap() {
        let path = entry.unwrap().path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("toml" | "yaml" | "yml")
        ) {
            continue;
        }
        let output = Command::new(sluice_bin())
            .arg("check")
            .arg("-c")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        checked += 1;
    }
    assert!(checked >= 2, "configs/ holds the examples");
}

#[test]
fn a_damaged_log_is_refused_with_the_way_out_and_repair_says_what_was_lost() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = sluice_log::Log::open(dir.path(), sluice_log::LogOptions::default()).unwrap();
        log.create_topic("t", 1).unwrap();
        for txn in 0..10u64 {
            let record = sluice_core::batch::Record {
                key: None,
                value: Some(bytes::Bytes::from(format!("record {txn} of the topic"))),
                timestamp_ms: 1,
                headers: Vec::new(),
            };
            let batch = sluice_core::batch::PartitionBatch {
                topic: "t".into(),
                partition: 0,
                records: vec![record].into(),
            };
            log.append_txn("w", &[batch], &txn.to_string()).unwrap();
        }
    }
    // An unclean stop, and a byte changed in the middle of the committed data.
    std::fs::remove_file(dir.path().join(".clean_shutdown")).unwrap();
    let segment = dir.path().join("topics/t/0/00000000000000000000.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    // The last byte of the fifth batch (offset 4): inside its records, under its checksum.
    let mut end = 0;
    for _ in 0..5 {
        end += u32::from_be_bytes(bytes[end + 8..end + 12].try_into().unwrap()) as usize + 12;
    }
    bytes[end - 1] ^= 0xff;
    std::fs::write(&segment, &bytes).unwrap();

    let sluice = |args: &[&str]| {
        let out = Command::new(sluice_bin())
            .args(args)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap();
        code_and_output(out)
    };
    let (code, output) = sluice(&["log", "topics"]);
    assert_eq!(code, Some(1), "{output}");
    assert!(
        output.contains("partition t/0: committed data is damaged")
            && output.contains("sluice log repair"),
        "{output}"
    );
    assert_eq!(std::fs::read(&segment).unwrap(), bytes, "nothing changed");

    let (code, output) = sluice(&["log", "repair"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("partition t/0: offsets 4..5 (1 records) lost; 5 records after the damage verified and were kept"),
        "{output}"
    );
    let (code, output) = sluice(&["log", "topics"]);
    assert_eq!(code, Some(0), "{output}");
    assert!(output.contains("t\tpartitions=1"), "{output}");
    let (_, output) = sluice(&["log", "repair"]);
    assert!(output.contains("nothing to repair"), "{output}");
}

#[test]
fn the_first_ten_minutes_paths_env_values_registry_dir_and_closed_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let configs = dir.path().join("configs");
    std::fs::create_dir_all(&configs).unwrap();
    let config = configs.join("p.toml");
    let registry_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(
        &config,
        format!(
            "[log]\ndir = \"../data/log\"\n[registry]\nlisten = \"127.0.0.1:{registry_port}\"\n{SOURCE}url = \"postgres://u@127.0.0.1:1/d\"\n"
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let out = Command::new(sluice_bin())
            .args(args)
            .arg("-c")
            .arg(&config)
            .envs(env.iter().copied())
            .current_dir("/")
            .output()
            .unwrap();
        code_and_output(out)
    };
    // Relative paths are relative to the config file, wherever sluice runs.
    let (code, output) = run(&["check"], &[]);
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains(&format!("log at {}/../data/log", configs.display())),
        "{output}"
    );
    // An environment value that is not exactly a number stays text.
    let (_, output) = run(&["check"], &[("SLUICE__SOURCES__0__URL", "007")]);
    assert!(
        output.contains("007 is not a valid Postgres URL"),
        "{output}"
    );
    // The registry alone on a directory without a log says so instead of serving nothing.
    let (code, output) = run(&["registry"], &[]);
    assert_eq!(code, Some(2), "{output}");
    assert!(output.contains("holds no sluice log"), "{output}");
    // A reader that closes the pipe early is no error of sluice's.
    std::fs::create_dir_all(dir.path().join("data/log/control")).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} log topics -c {} | head -c 0; {} status -c {} | head -n 1",
            sluice_bin().display(),
            config.display(),
            sluice_bin().display(),
            config.display()
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
