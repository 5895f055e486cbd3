//! The server under test: a real `portcullis serve` subprocess built from this
//! workspace, on a fresh SQLite directory or a fresh PostgreSQL database, killed when
//! dropped (even on error). Also: memory readings from `/proc`, and seeding users
//! straight into the database.

use std::{
    fs::File,
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use portcullis::keys::Algorithm;

use crate::load;

/// The `portcullis` binary next to the bench executable (same profile).
pub fn locate_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        if p.is_file() {
            return Ok(p.to_path_buf());
        }
        bail!("--server-bin {} does not exist", p.display());
    }
    let exe = std::env::current_exe().context("cannot find the bench executable")?;
    let dir = exe.parent().ok_or_else(|| anyhow!("the bench executable has no directory"))?;
    let bin = dir.join("portcullis");
    if bin.is_file() {
        return Ok(bin);
    }
    let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("release");
    let flag = if profile == "release" { " --release" } else { "" };
    bail!(
        "the server binary {} is missing: build it first with\n\n    cargo build{flag} -p portcullis\n",
        bin.display()
    )
}

/// Warns when the server binary is older than the `portcullis` library the bench
/// was built with: the server was changed and the binary not rebuilt.
pub fn staleness_warning(bin: &Path) -> Option<String> {
    let server = std::fs::metadata(bin).ok()?.modified().ok()?;
    let deps = bin.parent()?.join("deps");
    let newest_lib = std::fs::read_dir(deps)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libportcullis-") && name.ends_with(".rlib")
        })
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .max()?;
    (server + Duration::from_secs(2) < newest_lib).then(|| {
        format!(
            "warning: {} is older than the portcullis library the bench was built with: \
             rebuild it (cargo build -p portcullis, with --release for release runs)",
            bin.display()
        )
    })
}

/// Where one server instance keeps its data.
#[derive(Debug, Clone)]
pub struct Place {
    /// The data dir (SQLite file and logs; the master key comes from the environment).
    pub dir: PathBuf,
    /// `Some` on PostgreSQL: a database created for this instance.
    pub database_url: Option<String>,
}

impl Place {
    /// The URL of the database, as the server computes it.
    pub fn url(&self) -> String {
        match &self.database_url {
            Some(u) => u.clone(),
            None => format!("sqlite://{}?mode=rwc", self.dir.join("portcullis.db").display()),
        }
    }
}

/// Creates a fresh data place per server instance and removes what it created.
pub struct Places {
    root: tempfile::TempDir,
    admin_url: Option<String>,
    created: Vec<String>,
    count: usize,
}

impl Places {
    /// SQLite in a temp dir, or databases created through the `postgres://` admin URL.
    pub fn new(admin_url: Option<String>) -> anyhow::Result<Self> {
        if let Some(u) = &admin_url
            && !(u.starts_with("postgres://") || u.starts_with("postgresql://"))
        {
            bail!("--database-url must be a postgres:// URL (SQLite is the default)");
        }
        Ok(Self {
            root: tempfile::Builder::new().prefix("portcullis-bench-").tempdir()?,
            admin_url,
            created: Vec::new(),
            count: 0,
        })
    }

    /// The run's temp root (logs go there).
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// Whether the server runs on PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.admin_url.is_some()
    }

    /// A new, empty place.
    pub async fn fresh(&mut self, label: &str) -> anyhow::Result<Place> {
        self.count += 1;
        let dir = self.root.path().join(format!("{:02}-{label}", self.count));
        std::fs::create_dir_all(&dir)?;
        let database_url = match &self.admin_url {
            None => None,
            Some(admin) => {
                use sqlx::Connection as _;
                let name = format!(
                    "pcl_bench_{}",
                    portcullis::crypto::new_id("", portcullis::clock::now_ms()).trim_start_matches('_')
                );
                let mut conn =
                    sqlx::PgConnection::connect(admin).await.context("connecting to the PostgreSQL admin URL")?;
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .with_context(|| {
                        format!(
                            "CREATE DATABASE {name} failed: the URL's user needs the CREATEDB \
                             privilege (the bench makes a fresh database per server it starts)"
                        )
                    })?;
                let _ = conn.close().await;
                self.created.push(name.clone());
                Some(with_database(admin, &name)?)
            }
        };
        Ok(Place { dir, database_url })
    }

    /// Drops every database this run created (best effort; the names start with
    /// `pcl_bench_` if one is ever left behind).
    pub async fn cleanup(&mut self) {
        let Some(admin) = &self.admin_url else { return };
        use sqlx::Connection as _;
        let Ok(mut conn) = sqlx::PgConnection::connect(admin).await else {
            eprintln!("warning: could not drop the bench databases {:?}", self.created);
            return;
        };
        for name in self.created.drain(..) {
            let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
            if let Err(e) = sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await {
                eprintln!("warning: could not drop database {name}: {e}");
            }
        }
        let _ = conn.close().await;
    }
}

/// `url` with its database name replaced by `name` (query string kept).
fn with_database(url: &str, name: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| anyhow!("not a URL: {url}"))?;
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    let authority = before_query.split('/').next().unwrap_or(before_query);
    let mut out = format!("{scheme}://{authority}/{name}");
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// How every server of a run is started.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `portcullis` binary.
    pub bin: PathBuf,
    /// Signing algorithm (`PORTCULLIS_KEYS__ALGORITHM`).
    pub algorithm: Algorithm,
    /// Run under `taskset -c 0`.
    pub pin: bool,
    /// `PORTCULLIS_MASTER_KEY` shared by the run's servers (random, hex).
    pub master_key: String,
    /// `--server-env` settings, applied last.
    pub extra_env: Vec<(String, String)>,
}

impl Launch {
    fn command(&self, place: &Place, args: &[&str]) -> Command {
        let mut cmd = if self.pin {
            let mut c = Command::new("taskset");
            c.arg("-c").arg("0").arg(&self.bin);
            c
        } else {
            Command::new(&self.bin)
        };
        cmd.args(args).arg("--data-dir").arg(&place.dir);
        if let Some(url) = &place.database_url {
            cmd.arg("--database-url").arg(url);
        }
        // Only our settings: nothing from the caller's environment or a stray
        // portcullis.toml in the working directory may change what is measured.
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("PORTCULLIS_") || k == "RUST_LOG") {
                cmd.env_remove(k);
            }
        }
        // All load comes from 127.0.0.1: the per-address login limit (5/1m by default)
        // would refuse it. The limiter still runs (and costs what it costs); it only
        // never says no.
        cmd.env("PORTCULLIS_SECURITY__LOGIN_RATE", "1000000000/1s")
            .env("PORTCULLIS_SECURITY__API_KEY_VERIFY_RATE", "1000000000/1s")
            // Many connections sign in to a few accounts at once: the lockout's
            // in-flight bound and the sign-up limit must not refuse them (both still run).
            .env("PORTCULLIS_SECURITY__LOCKOUT_THRESHOLD", "1000000")
            .env("PORTCULLIS_SECURITY__REGISTER_RATE", "1000000000/1s")
            .env("PORTCULLIS_MASTER_KEY", &self.master_key)
            .env("PORTCULLIS_KEYS__ALGORITHM", self.algorithm.as_str())
            .current_dir(&place.dir)
            .stdin(Stdio::null());
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `portcullis migrate` to completion (used before seeding).
    pub fn migrate(&self, place: &Place) -> anyhow::Result<()> {
        let log = place.dir.join("migrate.log");
        let out = File::create(&log)?;
        let status = self
            .command(place, &["migrate"])
            .stdout(out.try_clone()?)
            .stderr(out)
            .status()
            .context("running portcullis migrate")?;
        if !status.success() {
            bail!("portcullis migrate failed:\n{}", tail(&log));
        }
        Ok(())
    }

    /// Creates an admin account with `portcullis users create` (the bench's
    /// verifier signs in with it).
    pub fn create_admin(&self, place: &Place, a: &load::Account) -> anyhow::Result<()> {
        use std::io::Write as _;
        let mut child = self
            .command(place, &["users", "create", "--email", &a.email, "--role", "admin", "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running portcullis users create")?;
        child.stdin.take().context("stdin")?.write_all(format!("{}\n", a.password).as_bytes())?;
        if !child.wait()?.success() {
            bail!("portcullis users create failed");
        }
        Ok(())
    }

    /// Registers a client-credentials client with `portcullis clients create`;
    /// returns its id and secret.
    pub fn create_client(&self, place: &Place) -> anyhow::Result<(String, String)> {
        let out = self
            .command(
                place,
                &[
                    "clients",
                    "create",
                    "--name",
                    "bench",
                    "--grant-type",
                    "client_credentials",
                    "--scope",
                    "bench:read",
                ],
            )
            .stderr(Stdio::null())
            .output()
            .context("running portcullis clients create")?;
        if !out.status.success() {
            bail!("portcullis clients create failed");
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).context("reading the created client")?;
        let field =
            |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_owned).context("client reply lacks a field");
        Ok((field("client_id")?, field("client_secret")?))
    }

    /// Starts `portcullis serve` on a free loopback port and waits for `/readyz`.
    /// Returns the running server and the time from spawn to the first ready answer.
    pub async fn start(&self, place: &Place) -> anyhow::Result<(Server, Duration)> {
        let mut last_err = None;
        // A port picked free can be taken before the server binds it: retry a little.
        for _ in 0..3 {
            let port = free_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = place.dir.join("server.log");
            let out = File::options().create(true).append(true).open(&log)?;
            let listen = addr.to_string();
            let t0 = Instant::now();
            let child = self
                .command(place, &["serve", "--listen", &listen])
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting {}", self.bin.display()))?;
            let mut server = Server { child, addr, log };
            match server.wait_ready(t0, Duration::from_secs(30)).await {
                Ok(ready) => return Ok((server, ready)),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("the server did not start")))
    }
}

fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind(("127.0.0.1", 0)).context("no free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// The last lines of a log file, for error messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    lines.get(from..).unwrap_or_default().join("\n")
}

/// A running `portcullis serve`; dropping it kills the process.
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Server {
    /// Process id (for `/proc` and `perf -p`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    async fn wait_ready(&mut self, t0: Instant, limit: Duration) -> anyhow::Result<Duration> {
        // Bounded by time; each poll is a fresh connection that fails fast until the
        // socket is bound.
        while t0.elapsed() < limit {
            if let Some(status) = self.child.try_wait()? {
                bail!("the server exited ({status}) before it was ready:\n{}", tail(&self.log));
            }
            if load::get_status(self.addr, "/readyz").await.ok() == Some(200) {
                return Ok(t0.elapsed());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        bail!("the server was not ready within {limit:?}:\n{}", tail(&self.log))
    }

    /// Current resident memory, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        status_field(self.pid(), "VmRSS:")
    }

    /// Watches resident memory until the returned guard is finished.
    pub fn watch_rss(&self) -> RssWatch {
        RssWatch::start(self.pid())
    }

    /// Kills the process now (dropping does the same).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field))?;
    line.trim_start_matches(field).split_whitespace().next()?.parse().ok()
}

/// The machine's CPU counters from /proc/stat: (busy, total) jiffies over all CPUs.
pub fn machine_jiffies() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().next()?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// CPU time a process has used so far (user + system), seconds. Pass `"self"` for
/// this process.
pub fn cpu_secs(pid: &str) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / clock_ticks())
}

fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|t: &f64| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// Peak resident memory over a period: polls VmRSS every 10 ms on its own thread,
/// and also resets the kernel's high-water mark (`clear_refs` 5) at the start so
/// VmHWM at the end catches peaks between polls.
pub struct RssWatch {
    pid: u32,
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    hwm_reset: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RssWatch {
    fn start(pid: u32) -> Self {
        let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(status_field(pid, "VmRSS:").unwrap_or(0)));
        let thread = {
            let (stop, peak) = (stop.clone(), peak.clone());
            std::thread::Builder::new()
                .name("rss-watch".into())
                .spawn(move || {
                    // Bounded: one hour of polls at most, else until told to stop.
                    for _ in 0..360_000 {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        if let Some(kib) = status_field(pid, "VmRSS:") {
                            peak.fetch_max(kib, Ordering::Relaxed);
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
                .ok()
        };
        Self { pid, stop, peak, hwm_reset, thread }
    }

    /// Stops watching; the peak in KiB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let polled = self.peak.load(Ordering::Relaxed);
        let hwm = if self.hwm_reset { status_field(self.pid, "VmHWM:").unwrap_or(0) } else { 0 };
        polled.max(hwm)
    }
}

/// Inserts `n` users (and their `member` role) in ONE transaction, all with the
/// same precomputed Argon2id PHC hash. Schema: migrations/*/0001_foundation.sql
/// (times are BIGINT milliseconds, `email_verified` BIGINT 0/1).
pub async fn seed_users(url: &str, n: usize, phc: &str) -> anyhow::Result<Duration> {
    use sqlx::{AnyConnection, Connection as _};
    sqlx::any::install_default_drivers();
    let t0 = Instant::now();
    let mut conn = AnyConnection::connect(url).await.with_context(|| format!("connecting to {url} for seeding"))?;
    let now = portcullis::clock::now_ms();
    const BATCH: usize = 500;
    let mut tx = conn.begin().await?;
    let mut done = 0usize;
    // Bounded: n / BATCH iterations.
    while done < n {
        let count = BATCH.min(n - done);
        let ids: Vec<String> = (0..count).map(|_| portcullis::crypto::new_id("usr", now)).collect();
        let mut users = String::from(
            "INSERT INTO users (id, email, email_verified, name, password_hash, created_at, updated_at) VALUES ",
        );
        let mut roles = String::from("INSERT INTO user_roles (user_id, role, created_at) VALUES ");
        for i in 0..count {
            let p = i * 3;
            let sep = if i == 0 { "" } else { "," };
            users.push_str(&format!("{sep}(${}, ${}, 1, NULL, ${}, {now}, {now})", p + 1, p + 2, p + 3));
            roles.push_str(&format!("{sep}(${}, 'member', {now})", i + 1));
        }
        let mut q = sqlx::query(sqlx::AssertSqlSafe(users));
        for (i, id) in ids.iter().enumerate() {
            q = q.bind(id.clone()).bind(format!("seed-{}@bench.example", done + i)).bind(phc.to_owned());
        }
        q.execute(&mut *tx).await.context("seeding users")?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(roles));
        for id in &ids {
            q = q.bind(id.clone());
        }
        q.execute(&mut *tx).await.context("seeding user_roles")?;
        done += count;
    }
    tx.commit().await?;
    let _ = conn.close().await;
    Ok(t0.elapsed())
}

/// An Argon2id PHC string made exactly as the server makes them.
pub fn phc_hash(password: &str) -> anyhow::Result<String> {
    use argon2::PasswordHasher as _;
    let params = argon2::Params::new(
        portcullis::passwords::M_COST_KIB,
        portcullis::passwords::T_COST,
        portcullis::passwords::P_COST,
        None,
    )
    .map_err(|e| anyhow!("argon2 params: {e}"))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    Ok(a.hash_password(password.as_bytes()).map_err(|e| anyhow!("argon2: {e}"))?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u:p@h:5/postgres?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x").unwrap(), "postgres://u@h/x");
    }
}
