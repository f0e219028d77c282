//! Servers of one test's own, for tests that stop or restart them: the shared servers
//! dev/services starts must stay up under every other test.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::free_port;

/// A Postgres cluster of one test's own (initdb in a temp directory, on a free port), for tests
/// that restart or stop the server: the shared server on 5432 must stay up under the other
/// tests. Started with `wal_level = logical` and trust authentication on loopback; stopped
/// (immediately) and removed when dropped.
pub struct PrivateCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    /// The postgres user's password, when the cluster asks for one (`with_password`).
    password: Option<String>,
    /// Where its server's programs are.
    bin: String,
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

/// PostgreSQL 17's programs, which dev/services unpacks from Maven Central.
fn pg17_bin() -> String {
    let bin = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/pg17/bin");
    assert!(
        std::path::Path::new(bin).join("postgres").exists(),
        "no PostgreSQL 17 in {bin}: run dev/services up"
    );
    bin.to_owned()
}

impl PrivateCluster {
    pub fn start() -> PrivateCluster {
        Self::start_with(None, PG_BIN.to_owned(), "")
    }

    /// A cluster that asks TCP clients for a password (scram-sha-256); the postgres user's
    /// is `password`.
    pub fn with_password(password: &str) -> PrivateCluster {
        Self::start_with(Some(password.to_owned()), PG_BIN.to_owned(), "")
    }

    /// A PostgreSQL 17 cluster with `conf` added to its postgresql.conf.
    pub fn v17(conf: &str) -> PrivateCluster {
        Self::start_with(None, pg17_bin(), conf)
    }

    /// A hot standby of `primary` (same version), streaming from it, with `conf` added. The
    /// primary is stopped for the moment its files are copied.
    pub fn standby_of(primary: &PrivateCluster, conf: &str) -> PrivateCluster {
        let out = primary.pg_ctl(&["stop", "-m", "fast", "-w", "-t", "60"]);
        assert!(
            out.status.success(),
            "stop the primary: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .expect("tempdir for a standby");
        let copy = Command::new("cp")
            .arg("-a")
            .arg(primary.dir.path().join("data"))
            .arg(dir.path().join("data"))
            .status()
            .expect("copy the primary's files");
        assert!(copy.success(), "copy the primary's files");
        let out = primary.pg_ctl(&["start", "-w", "-t", "60"]);
        assert!(
            out.status.success(),
            "restart the primary: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let data = dir.path().join("data");
        let _ = std::fs::remove_file(data.join("postmaster.pid"));
        std::fs::write(data.join("standby.signal"), "").expect("standby.signal");
        let port = free_port();
        let conf = format!(
            "port = {port}\nunix_socket_directories = '{}'\n\
             primary_conninfo = 'host=127.0.0.1 port={} user=postgres dbname=postgres'\n{conf}\n",
            dir.path().display(),
            primary.port
        );
        append_conf(&data, &conf);
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown the standby directory");
        assert!(chown.success(), "chown the standby directory");
        let standby = PrivateCluster {
            port,
            dir,
            password: None,
            bin: primary.bin.clone(),
        };
        let out = standby.pg_ctl(&["start", "-w", "-t", "60"]);
        assert!(
            out.status.success(),
            "start the standby: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            standby.server_log()
        );
        standby
    }

    fn start_with(password: Option<String>, bin: String, extra_conf: &str) -> PrivateCluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-pg-")
            .tempdir()
            .expect("tempdir for a private cluster");
        // initdb refuses to run as root: the cluster belongs to the postgres user.
        let chown = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .expect("chown the cluster directory");
        assert!(chown.success(), "chown the cluster directory");
        let data = dir.path().join("data");
        let mut initdb = Command::new(format!("{bin}/initdb"));
        initdb.args(["-U", "postgres", "--no-sync", "--auth-local=trust"]);
        match &password {
            None => initdb.arg("--auth-host=trust"),
            Some(password) => {
                let file = dir.path().join("pwfile");
                std::fs::write(&file, password).expect("write the password file");
                initdb
                    .arg("--auth-host=scram-sha-256")
                    .arg(format!("--pwfile={}", file.display()))
            }
        };
        let out = Self::as_postgres(initdb.arg("-D").arg(&data));
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             wal_level = logical\nmax_replication_slots = 8\nmax_wal_senders = 8\n\
             fsync = off\nshared_buffers = 32MB\n{extra_conf}\n",
            dir.path().display()
        );
        append_conf(&data, &conf);
        let cluster = PrivateCluster {
            port,
            dir,
            password,
            bin,
        };
        let out = cluster.pg_ctl(&["start", "-w", "-t", "60"]);
        assert!(
            out.status.success(),
            "pg_ctl start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        cluster
    }

    fn as_postgres(command: &mut Command) -> std::process::Output {
        let program = command.get_program().to_owned();
        let args: Vec<_> = command.get_args().map(|a| a.to_owned()).collect();
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .output()
            .expect("run a Postgres tool as the postgres user")
    }

    /// Runs `pg_ctl ACTION…` on this cluster as the postgres user.
    pub fn pg_ctl(&self, args: &[&str]) -> std::process::Output {
        Self::as_postgres(
            Command::new(format!("{}/pg_ctl", self.bin))
                .arg("-D")
                .arg(self.dir.path().join("data"))
                .arg("-l")
                .arg(self.dir.path().join("server.log"))
                .args(args),
        )
    }

    /// The postgres user's URL for database `db` (with the password, when there is one).
    pub fn url(&self, db: &str) -> String {
        match &self.password {
            None => format!("postgres://postgres@127.0.0.1:{}/{db}", self.port),
            Some(password) => {
                format!(
                    "postgres://postgres:{password}@127.0.0.1:{}/{db}",
                    self.port
                )
            }
        }
    }

    /// Runs SQL through psql against database `db` of this cluster.
    pub fn exec(&self, db: &str, sql: &str) -> String {
        let out = crate::run_ok(
            Command::new("psql")
                .env("PGPASSWORD", self.password.as_deref().unwrap_or_default())
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &self.port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    db,
                ])
                .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql]),
            "psql",
        );
        out.trim().to_owned()
    }

    /// The server's log so far (for assertion messages).
    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

fn append_conf(data: &std::path::Path, conf: &str) {
    std::fs::OpenOptions::new()
        .append(true)
        .open(data.join("postgresql.conf"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, conf.as_bytes()))
        .expect("write postgresql.conf");
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["stop", "-m", "immediate", "-t", "20"]);
    }
}

/// A MariaDB server of its own, on a free port, for tests that stop or restart the server
/// (the shared one on 3306 serves every other MariaDB test). Binlog settings as dev/services
/// sets them; stopped and removed when dropped.
pub struct PrivateMariaDb {
    pub port: u16,
    dir: tempfile::TempDir,
    /// The running mariadbd.
    server: std::sync::Mutex<Option<std::process::Child>>,
}

impl PrivateMariaDb {
    pub fn start() -> PrivateMariaDb {
        let dir = tempfile::Builder::new()
            .prefix("sluice-maria-")
            .tempdir()
            .expect("tempdir for a private MariaDB");
        // mariadbd runs as the mysql user, which must own its files.
        let chown = Command::new("chown")
            .args(["-R", "mysql:mysql"])
            .arg(dir.path())
            .status()
            .expect("chown the MariaDB directory");
        assert!(chown.success(), "chown the MariaDB directory");
        // Two installs at once in one test binary have failed on each other's temporary
        // tables ("Unknown table 'mysql.tmp_user_sys'"): one at a time, each with its own tmpdir.
        static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let tmp = dir.path().join("tmp");
        std::fs::create_dir_all(&tmp).expect("the MariaDB tmpdir");
        let chown_tmp = Command::new("chown")
            .args(["mysql:mysql"])
            .arg(&tmp)
            .status()
            .expect("chown the MariaDB tmpdir");
        assert!(chown_tmp.success(), "chown the MariaDB tmpdir");
        let out = {
            let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
            Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    "--user=mysql",
                    "--auth-root-authentication-method=normal",
                    "--skip-test-db",
                ])
                .arg(format!("--datadir={}", dir.path().join("data").display()))
                .arg(format!("--tmpdir={}", tmp.display()))
                .output()
                .expect("run mariadb-install-db")
        };
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let server = PrivateMariaDb {
            port: free_port(),
            dir,
            server: std::sync::Mutex::new(None),
        };
        server.start_server();
        server
    }

    /// Starts the server and waits until it answers.
    pub fn start_server(&self) {
        let path = |name: &str| self.dir.path().join(name).display().to_string();
        let child = Command::new("mariadbd")
            .args([
                "--no-defaults",
                "--user=mysql",
                "--bind-address=127.0.0.1",
                "--server-id=1",
                "--log-bin=mysql-bin",
                "--binlog-format=ROW",
                "--binlog-row-image=FULL",
                "--binlog-row-metadata=FULL",
                "--innodb-buffer-pool-size=64M",
                "--innodb-flush-log-at-trx-commit=2",
            ])
            .arg(format!("--port={}", self.port))
            .arg(format!("--datadir={}", path("data")))
            .arg(format!("--socket={}", path("sock")))
            .arg(format!("--pid-file={}", path("pid")))
            .arg(format!("--log-error={}", path("error.log")))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start mariadbd");
        *self.server.lock().unwrap() = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.admin("ping") {
            assert!(
                Instant::now() < deadline,
                "the private MariaDB did not start: {}",
                std::fs::read_to_string(path("error.log")).unwrap_or_default()
            );
            #[allow(clippy::disallowed_methods)] // synchronous: polls the server until it answers
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Shuts the server down (cleanly) and waits until it is gone.
    pub fn shutdown(&self) {
        assert!(self.admin("shutdown"), "mariadb-admin shutdown");
        if let Some(mut child) = self.server.lock().unwrap().take() {
            let _ = child.wait();
        }
    }

    fn admin(&self, command: &str) -> bool {
        Command::new("mariadb-admin")
            .arg(format!(
                "--socket={}",
                self.dir.path().join("sock").display()
            ))
            .args(["-u", "root", command])
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// The root user's URL (database `db`, or the server for "").
    pub fn url(&self, db: &str) -> String {
        format!("mysql://root@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with the `mariadb` client in database `db`; returns stdout.
    pub fn exec(&self, db: &str, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "-P",
                &self.port.to_string(),
                "-u",
                "root",
            ])
            .args(["-N", "-B", "-r", "-e", sql, db])
            .output()
            .expect("run the mariadb client");
        assert!(
            out.status.success(),
            "mariadb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for PrivateMariaDb {
    fn drop(&mut self) {
        if self.admin("shutdown") {
            if let Some(mut child) = self.server.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = child.wait();
            }
        }
    }
}
