//! Throwaway PostgreSQL clusters for tests (std only).
//!
//! [`Cluster::start`] makes a new cluster (`initdb`) in a directory of its own under
//! [`std::env::temp_dir`], starts a postmaster on it that listens only on a Unix socket in that
//! directory (no TCP port is opened, so parallel test binaries never collide), and waits until
//! it accepts connections. Tests connect with [`Cluster::url`], a URL that both sqlx's
//! `PgConnectOptions` and libpq (`psql`) accept, make databases of their own with
//! [`Cluster::create_database`], simulate an outage with [`Cluster::stop`] and
//! [`Cluster::start_again`], and a crash with [`Cluster::kill`]. Dropping the [`Cluster`] stops
//! the server and removes the directory.
//!
//! The programs come from `$PGTEST_BINDIR` if set, else Debian's
//! `/usr/lib/postgresql/15/bin` if it exists, else `$PATH`.
//!
//! # Why `runuser` when running as root
//!
//! `initdb`, `pg_ctl` and `postgres` refuse to run as root: a server running as root would
//! hand the operating system to anyone who gets its superuser (e.g. `COPY ... TO PROGRAM`).
//! Test containers often run as root, so when `id -u` is 0 the cluster's directory is given to
//! the `postgres` OS user (created by Debian's `postgresql` packages) and the server-side
//! programs (`initdb`, `postgres`, `createdb`) are run as `runuser -u postgres -- <program>`;
//! otherwise they run directly as the current user. `runuser` stays as the parent of the
//! program it starts, so the postmaster is signalled by the pid it writes to
//! `data/postmaster.pid`, not by the pid of the child we spawned. Clients (`pg_isready`,
//! `psql`, sqlx) connect as the database superuser `postgres` whoever runs them: the cluster
//! trusts every local connection (`initdb -A trust`), which is fine in a directory only
//! this test and root can reach.
//!
//! # Why durability is off
//!
//! `initdb --no-sync`, `fsync=off` and `full_page_writes=off` only matter when the operating
//! system crashes or loses power: they stop PostgreSQL from forcing data to the disk, and
//! from guarding against pages half written to it. A throwaway cluster is never used again
//! after such a crash, and skipping the disk flushes makes the tests much faster. A crash of
//! PostgreSQL itself ([`Cluster::kill`]) loses nothing committed: each commit still writes
//! its WAL to the kernel before it returns, the kernel keeps it when the process dies, and the
//! next start replays it.
//!
//! `synchronous_commit` is deliberately left on: with it off a commit returns before its WAL
//! is written at all, and a killed postmaster loses the commits of the last fraction of a
//! second (measured: up to ~60 of 20,000 one-row commits), which would make crash tests of
//! "an acknowledged write survives" fail at random. With `fsync=off` leaving it on costs
//! little (a `write`, no flush, per commit).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a start (or a restart) may take before it counts as failed.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a fast shutdown may take before the postmaster is killed instead.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Debian's location of the PostgreSQL 15 programs.
const DEBIAN_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// Clusters started by this process so far (unique directory names and ports).
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A throwaway PostgreSQL cluster: its directory (`data/` the cluster, `log` the server's
/// output, the Unix socket `.s.PGSQL.<port>`) and its postmaster while running.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    /// The spawned process: the postmaster, or the `runuser` that waits for it.
    server: Option<Child>,
}

impl Cluster {
    /// Make a new cluster in a fresh directory under [`std::env::temp_dir`], start it, and wait
    /// (up to 30 s) until it accepts connections.
    pub fn start() -> io::Result<Cluster> {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("pgtest-{pid}-{n}-{nanos}"));
        fs::create_dir(&dir)?;
        // Only the port is in the socket's name (the directory keeps clusters apart): spread
        // the numbers anyway, so that a stray socket or log line names one cluster.
        let port = 20_000 + ((pid.wrapping_mul(64).wrapping_add(n)) % 40_000) as u16;
        // From here on, dropping the cluster removes the directory.
        let mut cluster = Cluster {
            dir,
            port,
            server: None,
        };
        if is_root() {
            run(
                Command::new("chown").arg("postgres:").arg(&cluster.dir),
                "chown",
            )?;
        }
        let data = cluster.data_dir();
        run(
            server_command("initdb", &cluster.dir)
                .arg("-D")
                .arg(&data)
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ]),
            "initdb",
        )?;
        cluster.spawn_and_wait(false)?;
        Ok(cluster)
    }

    /// A URL of `database` on this cluster, through its Unix socket:
    /// `postgres://postgres@localhost:<port>/<database>?host=<dir>`. Both libpq and sqlx
    /// take a `host` parameter starting with `/` as the socket's directory (overriding
    /// `localhost`), and connect to `<dir>/.s.PGSQL.<port>`.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@localhost:{}/{}?host={}",
            self.port,
            percent_encode(database),
            percent_encode(&self.dir.to_string_lossy())
        )
    }

    /// Create the database `name` (`createdb`) and return its [`Cluster::url`].
    pub fn create_database(&self, name: &str) -> io::Result<String> {
        run(
            server_command("createdb", &self.dir)
                .arg("-h")
                .arg(&self.dir)
                .arg("-p")
                .arg(self.port.to_string())
                .args(["-U", "postgres", "--", name]),
            "createdb",
        )?;
        Ok(self.url(name))
    }

    /// Shut the server down (fast shutdown: open sessions are ended, their transactions rolled
    /// back) and wait until it has exited; SIGKILL it if that takes over 30 s. Nothing happens
    /// if it is not running.
    pub fn stop(&mut self) -> io::Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        if self.signal("INT").is_err() {
            // No postmaster.pid (it was never ready): stop what we spawned.
            let _ = server.kill();
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if server.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.server = Some(server);
                self.kill()?;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("PostgreSQL did not shut down within {STOP_TIMEOUT:?}: killed"),
                ));
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// Start the server again after [`Cluster::stop`] or [`Cluster::kill`], on the same data
    /// directory and port (so [`Cluster::url`] stays valid), and wait until it accepts
    /// connections (up to 30 s; after a kill the server first replays its WAL). Nothing
    /// happens if it is running.
    pub fn start_again(&mut self) -> io::Result<()> {
        if self.server.is_some() {
            return Ok(());
        }
        self.spawn_and_wait(true)
    }

    /// Crash the server: SIGKILL the postmaster (no shutdown checkpoint; its other processes
    /// notice and exit on their own) and reap it. Nothing happens if it is not running.
    pub fn kill(&mut self) -> io::Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        if self.signal("KILL").is_err() {
            let _ = server.kill();
        }
        server.wait()?;
        Ok(())
    }

    /// Whether the server has been started and not stopped or killed since.
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// The cluster's directory (the socket's directory; the cluster is in `data/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The port in the socket's name.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's output so far (every start of it).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Spawn the postmaster and wait until `pg_isready` says it accepts connections. With
    /// `retry`, a postmaster that exits before (e.g. refusing to start while the processes of
    /// a killed one still hold its shared memory) is started again until the timeout.
    fn spawn_and_wait(&mut self, retry: bool) -> io::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut server = self.spawn()?;
        loop {
            if let Some(status) = server.try_wait()? {
                if !retry || Instant::now() > deadline {
                    return Err(self.start_error(format!("PostgreSQL exited ({status})")));
                }
                sleep(Duration::from_millis(100));
                server = self.spawn()?;
                continue;
            }
            if self.is_ready()? {
                self.server = Some(server);
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = server.kill();
                let _ = server.wait();
                // A postmaster that outlived runuser (it wrote its pid) goes too.
                let _ = self.signal("KILL");
                return Err(self.start_error(format!(
                    "PostgreSQL did not accept connections within {START_TIMEOUT:?}"
                )));
            }
            sleep(Duration::from_millis(50));
        }
    }

    fn spawn(&self) -> io::Result<Child> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))?;
        server_command("postgres", &self.dir)
            .arg("-D")
            .arg(self.data_dir())
            .arg("-k")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-c", "listen_addresses="])
            .args(["-c", "fsync=off", "-c", "full_page_writes=off"])
            .args(["-c", "max_connections=200"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
    }

    fn is_ready(&self) -> io::Result<bool> {
        let status = Command::new(program("pg_isready"))
            .arg("-q")
            .arg("-h")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["-U", "postgres", "-d", "postgres"])
            .stdin(Stdio::null())
            .status()?;
        Ok(status.success())
    }

    /// Send `signal` (a name for `kill -s`) to the postmaster named by `data/postmaster.pid`.
    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid_file = fs::read_to_string(self.data_dir().join("postmaster.pid"))?;
        let pid = pid_file.lines().next().unwrap_or("").trim();
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "bad postmaster.pid",
            ));
        }
        run(Command::new("kill").args(["-s", signal, pid]), "kill")
    }

    fn start_error(&self, what: String) -> io::Error {
        io::Error::other(format!(
            "{what}; log ({}):\n{}",
            self.dir.display(),
            self.log_tail()
        ))
    }

    /// The last 8 KB of the log.
    fn log_tail(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut f) = File::open(self.dir.join("log")) {
            let len = f.metadata().map_or(0, |m| m.len());
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(8192)));
            let _ = f.read_to_end(&mut text);
        }
        String::from_utf8_lossy(&text).into_owned()
    }
}

impl Drop for Cluster {
    /// Stop the server (kill it if it does not stop) and remove the directory.
    fn drop(&mut self) {
        if self.stop().is_err() {
            let _ = self.kill();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether this process runs as root (`id -u` is 0).
fn is_root() -> bool {
    static ROOT: OnceLock<bool> = OnceLock::new();
    *ROOT.get_or_init(|| {
        Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
    })
}

/// The path of a PostgreSQL program.
fn program(name: &str) -> PathBuf {
    let dir = std::env::var_os("PGTEST_BINDIR")
        .map(PathBuf::from)
        .or_else(|| Some(PathBuf::from(DEBIAN_BINDIR)).filter(|d| d.is_dir()));
    match dir {
        Some(dir) => dir.join(name),
        None => PathBuf::from(name),
    }
}

/// A command running the PostgreSQL program `name` as `postgres` when we are root (through
/// `runuser`), directly otherwise; in `cwd` (a directory the `postgres` user can enter).
fn server_command(name: &str, cwd: &Path) -> Command {
    let mut command = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program(name));
        c
    } else {
        Command::new(program(name))
    };
    command.current_dir(cwd);
    command
}

/// Run a command to completion; an error (with its output) unless it succeeds.
fn run(command: &mut Command, what: &str) -> io::Result<()> {
    let out = command.stdin(Stdio::null()).output()?;
    if out.status.success() {
        return Ok(());
    }
    Err(io::Error::other(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )))
}

/// Percent-encode everything but unreserved characters and `/` (for URL paths and queries).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `psql -c <sql>` against `url`: its output, or an error with its stderr.
    fn psql(url: &str, sql: &str) -> io::Result<String> {
        let out = Command::new(program("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    #[test]
    fn start_create_query_restart_drop() {
        let mut cluster = Cluster::start().unwrap();
        let dir = cluster.dir().to_path_buf();
        assert!(dir.join(format!(".s.PGSQL.{}", cluster.port())).exists());

        let url = cluster.create_database("keyplane_test").unwrap();
        assert_eq!(url, cluster.url("keyplane_test"));
        assert!(url.starts_with("postgres://postgres@localhost:"), "{url}");
        assert!(
            url.ends_with(&format!("/keyplane_test?host={}", dir.display())),
            "{url}"
        );
        assert_eq!(psql(&url, "select 1").unwrap(), "1");
        assert_eq!(
            psql(&url, "select current_database()").unwrap(),
            "keyplane_test"
        );
        assert_eq!(psql(&url, "show fsync").unwrap(), "off");
        psql(&url, "create table t (i bigint); insert into t values (42)").unwrap();

        // An outage: connections fail while stopped, the data is there after.
        cluster.stop().unwrap();
        assert!(!cluster.is_running());
        assert!(psql(&url, "select 1").is_err());
        cluster.stop().unwrap(); // stopping twice is harmless
        cluster.start_again().unwrap();
        assert_eq!(psql(&url, "select i from t").unwrap(), "42");

        drop(cluster);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }

    #[test]
    fn kill_keeps_committed_data() {
        let mut cluster = Cluster::start().unwrap();
        let url = cluster.url("postgres");
        psql(&url, "create table t (i bigint)").unwrap();
        for i in 0..20 {
            psql(&url, &format!("insert into t values ({i})")).unwrap();
        }
        cluster.kill().unwrap();
        assert!(psql(&url, "select 1").is_err());
        cluster.start_again().unwrap();
        assert_eq!(psql(&url, "select count(*) from t").unwrap(), "20");
        assert!(
            cluster.log().contains("not properly shut down"),
            "{}",
            cluster.log()
        );
    }

    #[test]
    fn clusters_are_independent() {
        let a = Cluster::start().unwrap();
        let b = Cluster::start().unwrap();
        assert_ne!(a.dir(), b.dir());
        psql(&a.url("postgres"), "create table only_in_a (i int)").unwrap();
        assert!(psql(&b.url("postgres"), "select * from only_in_a").is_err());
    }

    #[test]
    fn url_encodes_odd_characters() {
        assert_eq!(percent_encode("/tmp/a b/c%d"), "/tmp/a%20b/c%25d");
        assert_eq!(percent_encode("db-1_x.y"), "db-1_x.y");
    }
}
