//! How deployments connect to MySQL/MariaDB: TLS against the shared MariaDB with the
//! certificate `dev/services` made for it (target/tls). VERIFY_IDENTITY on the source (binlog,
//! catalog and the snapshot's own connections) and the sink, as a user the server refuses
//! without TLS; a wrong CA refused at once, naming the check; REQUIRED against a server without
//! TLS refused, saying so.

use std::time::Duration;

use sluice_integration_tests::{
    mysql_source_config, run_to_exit, sluice_bin, wait_for, workspace_root, MariaDb,
    PrivateMariaDb, Sluice, MARIADB_URL,
};

fn tls_file(name: &str) -> String {
    let path = workspace_root().join("target/tls").join(name);
    assert!(
        path.exists(),
        "{} is missing: run dev/services up (it makes the test certificates)",
        path.display()
    );
    path.display().to_string()
}

/// A user the server lets in over TLS only (`REQUIRE SSL`), dropped at the end.
struct TlsOnlyUser {
    name: String,
    admin: MariaDb,
}

impl TlsOnlyUser {
    fn create(admin: MariaDb) -> TlsOnlyUser {
        let name = format!("tls_{}", &admin.name[admin.name.len() - 8..]);
        admin.exec(&format!(
            "CREATE USER '{name}'@'%' IDENTIFIED BY 'secret-pw' REQUIRE SSL; \
             GRANT ALL PRIVILEGES ON *.* TO '{name}'@'%'"
        ));
        TlsOnlyUser { name, admin }
    }

    /// The server's URL as this user, with `params`.
    fn url(&self, db: &str, params: &str) -> String {
        format!(
            "mysql://{}:secret-pw@127.0.0.1:3306/{db}?{params}",
            self.name
        )
    }
}

impl Drop for TlsOnlyUser {
    fn drop(&mut self) {
        let _ = self
            .admin
            .try_exec(&format!("DROP USER IF EXISTS '{}'@'%'", self.name));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_identity_carries_snapshot_binlog_and_sink_over_tls() {
    let source = MariaDb::create();
    let target = MariaDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'snap')");
    let user = TlsOnlyUser::create(MariaDb::create());
    let params = format!("ssl-mode=VERIFY_IDENTITY&ssl-ca={}", tls_file("ca.pem"));

    // Without TLS the server refuses this user: what follows works only over TLS.
    let plain = Sluice::new(&mysql_source_config(&source, "").replace(
        &format!("url = \"{MARIADB_URL}\""),
        &format!("url = \"{}\"", user.url("", "ssl-mode=DISABLED")),
    ));
    let out = std::process::Command::new(sluice_bin())
        .args(["check", "--connect", "-c"])
        .arg(&plain.config)
        .output()
        .expect("run sluice check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("Access denied"), "{text}");

    let config = format!(
        "{}[[sinks]]\nname = \"replica\"\nkind = \"mysql\"\nurl = \"{}\"\ntopics = [\"src.{}.*\"]\n",
        mysql_source_config(&source, "").replace(
            &format!("url = \"{MARIADB_URL}\""),
            &format!("url = \"{}\"", user.url("", &params)),
        ),
        user.url(&target.name, &params),
        source.name,
    );
    let mut sluice = Sluice::new(&config);
    sluice.start();
    wait_for(
        Duration::from_secs(60),
        "the snapshot's row in the replica",
        || {
            target
                .try_exec("SELECT v FROM t WHERE id = 1")
                .ok()
                .as_deref()
                == Some("snap")
        },
    )
    .await;
    source.exec("INSERT INTO t VALUES (2, 'streamed')");
    wait_for(
        Duration::from_secs(30),
        "the streamed row in the replica",
        || {
            target
                .try_exec("SELECT group_concat(v ORDER BY id) FROM t")
                .ok()
                .as_deref()
                == Some("snap,streamed")
        },
    )
    .await;
    assert_eq!(sluice.stop(), Some(0), "{}", sluice.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_another_ca_is_refused_at_once_naming_the_check() {
    let source = MariaDb::create();
    source.exec("CREATE TABLE t (id int PRIMARY KEY)");
    let url = format!(
        "{MARIADB_URL}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}",
        tls_file("other-ca.pem")
    );
    let mut sluice = Sluice::new(&mysql_source_config(&source, "").replace(
        &format!("url = \"{MARIADB_URL}\""),
        &format!("url = \"{url}\""),
    ));
    let (code, stderr) = run_to_exit(&mut sluice);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("TLS to MySQL at 127.0.0.1:3306 failed")
            && stderr.contains("not signed by a trusted CA (ssl-mode=VERIFY_IDENTITY)")
            && stderr.contains("ssl-ca="),
        "{stderr}"
    );
    assert!(
        !stderr.contains("retry"),
        "a bad certificate is not retried:\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_against_a_server_without_tls_is_refused_saying_so() {
    let server = PrivateMariaDb::start();
    let url = format!("{}?ssl-mode=REQUIRED", server.url(""));
    let mut sluice = Sluice::new(&format!(
        "[[sources]]\nname = \"src\"\nkind = \"mysql\"\nurl = \"{url}\"\ntables = [\"shop.*\"]\n"
    ));
    let (code, stderr) = run_to_exit(&mut sluice);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "the server does not accept TLS connections and ssl-mode=REQUIRED requires one"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("retry"), "it is not retried:\n{stderr}");

    // A sink says the same (through `check --connect`, which connects as `run` does).
    let source = MariaDb::create();
    let sink = Sluice::new(&format!(
        "{}[[sinks]]\nname = \"replica\"\nkind = \"mysql\"\nurl = \"{url}\"\ntopics = [\"src.*\"]\n",
        mysql_source_config(&source, "")
    ));
    let out = std::process::Command::new(sluice_bin())
        .args(["check", "--connect", "-c"])
        .arg(&sink.config)
        .output()
        .expect("run sluice check");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("sink replica: FAILED: TLS to the target database failed: the server does not accept TLS"),
        "{text}"
    );
}
