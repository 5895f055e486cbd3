//! `bench`: starts a real `portcullis serve` (built from this workspace) as a
//! subprocess, loads it from an in-process HTTP/1.1 client over loopback, and prints
//! every figure beside the machine's own limit measured in the same run.
//!
//! ```text
//! cargo build --release -p portcullis -p bench
//! cargo run --release -p bench -- [--pin] [--duration 5s] [--connections 64]
//!     [--algorithm RS256|ES256|EdDSA] [--database-url postgres://…] [--json FILE]
//! cargo run -p bench -- --smoke        # a few seconds, for CI (debug build is fine)
//! ```
//!
//! Pinned mode (`--pin`) runs the server under `taskset -c 0` and the load generator
//! on a current-thread Tokio runtime whose thread is pinned to core 1 with
//! `sched_setaffinity` (the `core_affinity` crate); the raw limits are then measured
//! on one thread pinned to core 0.

mod limits;
mod load;
mod report;
mod scenario;
mod server;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use clap::Parser;
use portcullis::{keys::Algorithm, units::HumanDuration};

use crate::{
    load::{Account, Conn, Req, Tokens, Work},
    report::{Machine, Report, RunInfo, ScenarioResult, StartupResult},
    scenario::{Scenario, TargetCtx},
    server::{Launch, Places},
};

const AFTER_HELP: &str = "\
The server runs as a subprocess: the `portcullis` binary next to this executable
(target/<profile>/portcullis). Build both first:

    cargo build --release -p portcullis -p bench
    cargo run --release -p bench -- --pin --json bench.json

Targets are reported, never asserted. See docs/benchmarks.md.";

/// Portcullis benchmark runner.
#[derive(Debug, Clone, Parser)]
#[command(name = "bench", after_help = AFTER_HELP)]
struct Args {
    /// Measured time per scenario (after a warm-up of a fifth of it, at most 1s).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    duration: HumanDuration,
    /// Concurrent keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// A PostgreSQL URL whose user may CREATE DATABASE: each server gets a fresh
    /// database, dropped at the end. Default: SQLite in a temp directory.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Signing algorithm of the server's keys.
    #[arg(long, value_enum, default_value = "RS256")]
    algorithm: Algorithm,
    /// Server on core 0 (taskset), load generator on core 1; limits single-threaded.
    #[arg(long)]
    pin: bool,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// A few seconds in all: tiny durations, 4 connections, 1k seeded users. For CI;
    /// fails only when a scenario does not work at all.
    #[arg(long)]
    smoke: bool,
    /// Only these scenarios (repeatable); default: all.
    #[arg(long = "scenario", value_enum, value_name = "NAME")]
    scenarios: Vec<Scenario>,
    /// Users seeded straight into the database for the start-up measurement.
    #[arg(long, default_value_t = 100_000)]
    seed_users: usize,
    /// Skip the start-up measurements (when profiling one scenario).
    #[arg(long)]
    no_startup: bool,
    /// Accounts registered through the API for the load scenarios.
    #[arg(long, default_value_t = 16)]
    users: usize,
    /// Threads of the load generator's runtime when not pinned.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Extra environment for the server, e.g. `PORTCULLIS_LOG__LEVEL=warn`
    /// (repeatable; recorded in the report).
    #[arg(long = "server-env", value_name = "KEY=VALUE", value_parser = parse_env)]
    server_env: Vec<(String, String)>,
    /// The server binary (default: `portcullis` next to this executable).
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<HumanDuration, String> {
    s.parse()
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

/// Everything the run needs, after `--smoke` and defaults are applied.
#[derive(Debug, Clone)]
struct Settings {
    args: Args,
    warmup: Duration,
    duration: Duration,
    limit_each: Duration,
    settle: Duration,
    empty_starts: usize,
    nproc: usize,
    bin: PathBuf,
}

impl Settings {
    fn new(mut args: Args) -> anyhow::Result<Self> {
        let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if args.smoke {
            args.duration = HumanDuration(Duration::from_millis(300));
            args.connections = 4;
            args.seed_users = args.seed_users.min(1_000);
            args.users = 4;
        }
        if args.connections == 0 || args.connections > 10_000 {
            bail!("--connections must be between 1 and 10000");
        }
        if args.users == 0 {
            bail!("--users must be at least 1");
        }
        let duration = args.duration.0;
        if duration < Duration::from_millis(50) || duration > Duration::from_secs(600) {
            bail!("--duration must be between 50ms and 10m");
        }
        if args.pin {
            if nproc < 2 {
                bail!("--pin needs at least 2 cores (server on core 0, load on core 1)");
            }
            let taskset =
                std::process::Command::new("taskset").arg("-V").output().map(|o| o.status.success()).unwrap_or(false);
            if !taskset {
                bail!("--pin needs `taskset` (util-linux)");
            }
        }
        let bin = server::locate_binary(args.server_bin.as_deref())?;
        if let Some(w) = server::staleness_warning(&bin) {
            eprintln!("{w}");
        }
        Ok(Self {
            warmup: if args.smoke { Duration::from_millis(50) } else { (duration / 5).min(Duration::from_secs(1)) },
            duration,
            limit_each: if args.smoke { Duration::from_millis(60) } else { Duration::from_millis(500) },
            settle: if args.smoke { Duration::from_millis(100) } else { Duration::from_secs(1) },
            empty_starts: if args.smoke { 1 } else { 3 },
            nproc,
            bin,
            args,
        })
    }

    fn server_cores(&self) -> usize {
        if self.args.pin { 1 } else { self.nproc }
    }

    fn wants(&self, s: Scenario) -> bool {
        self.args.scenarios.is_empty() || self.args.scenarios.contains(&s)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let settings = Settings::new(args)?;
    let pin = settings.args.pin;
    let threads = settings.args.client_threads.max(1);
    let driver = {
        let settings = settings.clone();
        std::thread::Builder::new().name("bench-driver".into()).spawn(move || -> anyhow::Result<Report> {
            let rt = if pin {
                if !core_affinity::set_for_current(core_affinity::CoreId { id: 1 }) {
                    bail!("could not pin the load generator to core 1");
                }
                tokio::runtime::Builder::new_current_thread().enable_all().build()?
            } else if threads == 1 {
                tokio::runtime::Builder::new_current_thread().enable_all().build()?
            } else {
                tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
            };
            rt.block_on(drive(settings))
        })?
    };
    let report = driver.join().map_err(|_| anyhow!("the benchmark thread panicked"))??;
    print!("{}", report.markdown());
    if let Some(path) = &settings.args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("bench: wrote {}", path.display());
    }
    // Smoke keeps the runner honest: every scenario must work, whatever its speed.
    if settings.args.smoke {
        let broken: Vec<_> =
            report.scenarios.iter().filter(|s| s.ran && (s.ok == 0 || s.errors > 0)).map(|s| s.key).collect();
        if !broken.is_empty() {
            eprintln!("bench: smoke run failed: scenarios with errors: {broken:?}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn drive(s: Settings) -> anyhow::Result<Report> {
    let mut places = Places::new(s.args.database_url.clone())?;
    let result = drive_in(&s, &mut places).await;
    places.cleanup().await;
    result
}

fn random_hex32() -> anyhow::Result<String> {
    let mut key = [0u8; 32];
    aws_lc_rs::rand::fill(&mut key).map_err(|_| anyhow!("no randomness"))?;
    Ok(key.iter().map(|b| format!("{b:02x}")).collect())
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn drive_in(s: &Settings, places: &mut Places) -> anyhow::Result<Report> {
    let machine = Machine::probe(s.nproc);
    let profile = s.bin.parent().and_then(|d| d.file_name()).and_then(|n| n.to_str()).unwrap_or("?").to_owned();
    eprintln!("bench: server {} ({profile}), data under {}", s.bin.display(), places.root().display());
    if profile == "debug" && !s.args.smoke {
        eprintln!("bench: warning: a debug server is several times slower; use --release");
    }

    // Other work on the machine disturbs every figure: say so.
    let busy_before = {
        let a = server::machine_jiffies();
        tokio::time::sleep(if s.args.smoke { Duration::from_millis(100) } else { Duration::from_millis(500) }).await;
        match (a, server::machine_jiffies()) {
            (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
            _ => 0.0,
        }
    };
    if busy_before > 0.1 {
        eprintln!(
            "bench: warning: the machine is {:.0}% busy before the run; figures will be disturbed",
            busy_before * 100.0
        );
    }
    eprintln!("bench: measuring the machine's limits…");
    let limits = limits::measure(limits::Plan {
        each: s.limit_each,
        threads: (!s.args.pin).then_some(s.nproc),
        pin_core: s.args.pin.then_some(0),
        algorithm: s.args.algorithm,
    })?;

    let launch = Launch {
        bin: s.bin.clone(),
        algorithm: s.args.algorithm,
        pin: s.args.pin,
        master_key: random_hex32()?,
        extra_env: s.args.server_env.clone(),
    };
    let mut startup = Vec::new();
    let mut seed_ms = None;

    if !s.args.no_startup {
        eprintln!("bench: start-up on an empty database…");
        let mut samples = Vec::new();
        let mut idle = None;
        let mut restart = None;
        for i in 0..s.empty_starts {
            let place = places.fresh("empty").await?;
            let (srv, ready) = launch.start(&place).await?;
            samples.push(ready.as_secs_f64() * 1000.0);
            if i == 0 {
                tokio::time::sleep(s.settle).await;
                idle = srv.rss_kib().map(mib);
                srv.stop();
                let (srv, ready) = launch.start(&place).await?;
                restart = Some(ready.as_secs_f64() * 1000.0);
                srv.stop();
            } else {
                srv.stop();
            }
        }
        let ready = median(&samples);
        startup.push(StartupResult {
            key: "empty_first_start",
            label: "empty DB, first start (generates the signing key)".into(),
            ready_ms: ready,
            samples_ms: samples,
            idle_rss_mib: idle,
            ready_met: Some(ready < scenario::READY_MS),
            idle_met: idle.map(|m| m < scenario::IDLE_RSS_MIB),
        });
        if let Some(r) = restart {
            startup.push(StartupResult {
                key: "empty_restart",
                label: "empty DB, restart (key exists)".into(),
                ready_ms: r,
                samples_ms: vec![r],
                idle_rss_mib: None,
                ready_met: Some(r < scenario::READY_MS),
                idle_met: None,
            });
        }
    }

    let ran = load_scenarios(s, places, &launch).await?;
    let ctx = TargetCtx { server_cores: s.server_cores(), sqlite: !places.is_postgres(), algorithm: s.args.algorithm };
    let scenarios = judge(s, ran, &limits, ctx);

    if !s.args.no_startup && s.args.seed_users > 0 {
        let n = s.args.seed_users;
        eprintln!("bench: seeding {n} users, then start-up…");
        let place = places.fresh("seeded").await?;
        launch.migrate(&place)?;
        let phc = server::phc_hash("seeded users all share this password")?;
        let took = server::seed_users(&place.url(), n, &phc).await?;
        seed_ms = Some(took.as_secs_f64() * 1000.0);
        let (srv, ready) = launch.start(&place).await?;
        tokio::time::sleep(s.settle).await;
        let idle = srv.rss_kib().map(mib);
        srv.stop();
        let (srv, again) = launch.start(&place).await?;
        srv.stop();
        let (ready, again) = (ready.as_secs_f64() * 1000.0, again.as_secs_f64() * 1000.0);
        startup.push(StartupResult {
            key: "seeded_first_start",
            label: format!("{n} users, first start (generates the signing key)"),
            ready_ms: ready,
            samples_ms: vec![ready],
            idle_rss_mib: idle,
            ready_met: None,
            idle_met: idle.map(|m| m < scenario::IDLE_RSS_MIB),
        });
        startup.push(StartupResult {
            key: "seeded_restart",
            label: format!("{n} users, restart (key exists)"),
            ready_ms: again,
            samples_ms: vec![again],
            idle_rss_mib: None,
            ready_met: None,
            idle_met: None,
        });
    }

    Ok(Report {
        machine,
        run: RunInfo {
            mode: if s.args.pin { "pinned" } else { "default" },
            backend: if places.is_postgres() { "postgres" } else { "sqlite" },
            algorithm: s.args.algorithm.as_str(),
            duration_ms: u64::try_from(s.duration.as_millis()).unwrap_or(u64::MAX),
            warmup_ms: u64::try_from(s.warmup.as_millis()).unwrap_or(u64::MAX),
            connections: s.args.connections,
            users: s.args.users,
            seed_users: s.args.seed_users,
            client_threads: if s.args.pin { 1 } else { s.args.client_threads.max(1) },
            server_cores: s.server_cores(),
            smoke: s.args.smoke,
            busy_before_pct: busy_before * 100.0,
            server_bin: s.bin.display().to_string(),
            server_profile: profile,
            server_env: s.args.server_env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        },
        limits,
        scenarios,
        startup,
        seed_ms,
    })
}

/// Puts each scenario beside its limit and target, adds the ones that did not run,
/// and sorts them in report order.
fn judge(s: &Settings, ran: Vec<ScenarioResult>, limits: &limits::Limits, ctx: TargetCtx) -> Vec<ScenarioResult> {
    let mut out = Vec::new();
    for sc in Scenario::ALL {
        let limit = sc.limit_key().and_then(|k| limits.get(k));
        let mut r = match ran.iter().find(|r| r.key == sc.key()) {
            Some(r) => r.clone(),
            None if s.wants(sc) => ScenarioResult {
                key: sc.key(),
                label: sc.label(),
                ran: false,
                note: Some("not run".into()),
                rps: 0.0,
                p50_ms: 0.0,
                p99_ms: 0.0,
                p999_ms: 0.0,
                max_ms: 0.0,
                ok: 0,
                errors: 0,
                peak_rss_mib: 0.0,
                start_rss_mib: 0.0,
                server_cpu_cores: 0.0,
                client_cpu_cores: 0.0,
                machine_busy: 0.0,
                other_cores: 0.0,
                server_cpu_us_per_req: None,
                limit: None,
                limit_rate: None,
                ratio: None,
                target: None,
                target_met: None,
                rss_met: None,
            },
            None => continue,
        };
        r.limit = limit.map(|l| short_limit(&l.label));
        if r.ran {
            r.limit_rate = limit.map(|l| l.server_rate());
            r.ratio = r.limit_rate.filter(|x| *x > 0.0).map(|x| r.rps / x);
            if let Some((text, met)) = scenario::target(sc, r.rps, r.p99_ms, r.ratio, ctx) {
                r.target = Some(text);
                r.target_met = Some(met);
            }
        }
        out.push(r);
    }
    out
}

/// "RS256 sign" out of "RS256 sign", "Argon2id" out of "Argon2id hash (…)".
fn short_limit(label: &str) -> String {
    label.split(" (").next().unwrap_or(label).trim_end_matches(" hash").to_owned()
}

/// Runs `jobs` on up to `width` connections at once; results in input order.
async fn on_conns<T, F, Fut>(
    addr: std::net::SocketAddr,
    width: usize,
    jobs: Vec<T>,
    f: F,
) -> anyhow::Result<Vec<Tokens>>
where
    T: Send + 'static,
    F: Fn(Conn, T) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(Conn, Option<Tokens>)>> + Send,
{
    let width = width.clamp(1, jobs.len().max(1));
    let mut lanes: Vec<Vec<(usize, T)>> = (0..width).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        if let Some(lane) = lanes.get_mut(i % width) {
            lane.push((i, job));
        }
    }
    let mut tasks = Vec::new();
    for lane in lanes {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr).await?;
            let mut out = Vec::new();
            for (i, job) in lane {
                let (c, t) = f(conn, job).await?;
                conn = c;
                if let Some(t) = t {
                    out.push((i, t));
                }
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(tokio::time::timeout(Duration::from_secs(120), t).await.context("setup timed out")???);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, t)| t).collect())
}

async fn login_all(addr: std::net::SocketAddr, accounts: &[Account], count: usize) -> anyhow::Result<Vec<Tokens>> {
    let jobs: Vec<Account> = (0..count).filter_map(|i| accounts.get(i % accounts.len()).cloned()).collect();
    on_conns(addr, 4, jobs, |mut c, a: Account| async move {
        let t = load::login(&mut c, &a).await?;
        Ok((c, Some(t)))
    })
    .await
}

async fn load_scenarios(s: &Settings, places: &mut Places, launch: &Launch) -> anyhow::Result<Vec<ScenarioResult>> {
    let wanted: Vec<Scenario> = Scenario::RUN_ORDER.into_iter().filter(|&sc| s.wants(sc)).collect();
    let mut results: Vec<ScenarioResult> = Vec::new();
    if !wanted.is_empty() {
        let place = places.fresh("load").await?;
        let (srv, _) = launch.start(&place).await?;
        eprintln!("bench: server pid {} on {} (attach a profiler now if you like)", srv.pid(), srv.addr);
        let addr = srv.addr;
        let accounts: Vec<Account> = (0..s.args.users)
            .map(|i| Account {
                email: format!("bench-{i}@bench.example"),
                password: format!("bench passphrase number {i}"),
            })
            .collect();
        eprintln!("bench: registering {} accounts…", accounts.len());
        on_conns(addr, 4, accounts.clone(), |mut c, a: Account| async move {
            load::register(&mut c, &a).await?;
            Ok((c, None))
        })
        .await?;
        let conns = s.args.connections;
        let needs_keys = wanted.contains(&Scenario::ApiKey) || wanted.contains(&Scenario::ApiKeyVerify);
        let needs_tokens = wanted.contains(&Scenario::Me) || needs_keys;
        let me_tokens = if needs_tokens { login_all(addr, &accounts, accounts.len()).await? } else { Vec::new() };
        // One API key per account, made through the API with the account's session.
        let mut api_keys = Vec::new();
        if needs_keys {
            let mut c = Conn::open(addr).await?;
            for t in &me_tokens {
                api_keys.push(load::create_api_key(&mut c, &t.access).await?);
            }
        }
        let verifier = if wanted.contains(&Scenario::ApiKeyVerify) {
            let admin =
                Account { email: "verifier@bench.example".into(), password: "bench verifier passphrase".into() };
            launch.create_admin(&place, &admin)?;
            let mut c = Conn::open(addr).await?;
            Some(load::create_verifier_key(&mut c, &admin).await?)
        } else {
            None
        };
        let plan = load::RunPlan { warmup: s.warmup, duration: s.duration, request_timeout: Duration::from_secs(30) };
        for sc in wanted {
            let works: Vec<Work> = match sc {
                Scenario::Jwks => (0..conns).map(|_| Work::Fixed(Req::get("/.well-known/jwks.json"))).collect(),
                Scenario::Me => (0..conns)
                    .filter_map(|i| me_tokens.get(i % me_tokens.len().max(1)))
                    .map(|t| Work::Fixed(Req::get("/v1/me").bearer(&t.access)))
                    .collect(),
                Scenario::ApiKey => (0..conns)
                    .filter_map(|i| api_keys.get(i % api_keys.len().max(1)))
                    .map(|k| Work::Fixed(Req::get("/v1/me").api_key(k)))
                    .collect(),
                Scenario::ApiKeyVerify => (0..conns)
                    .filter_map(|i| Some((api_keys.get(i % api_keys.len().max(1))?, verifier.as_ref()?)))
                    .map(|(k, v)| {
                        Work::Fixed(Req::post("/v1/api-keys/verify", &serde_json::json!({"key": k})).api_key(v))
                    })
                    .collect(),
                Scenario::Refresh => {
                    eprintln!("bench: signing in {conns} sessions for refresh…");
                    let tokens = login_all(addr, &accounts, conns).await?;
                    tokens
                        .into_iter()
                        .enumerate()
                        .filter_map(|(i, t)| {
                            accounts
                                .get(i % accounts.len())
                                .map(|a| Work::RefreshChain { token: t.refresh, account: a.clone() })
                        })
                        .collect()
                }
                Scenario::Login => (0..conns)
                    .filter_map(|i| accounts.get(i % accounts.len()))
                    .map(|a| {
                        Work::Fixed(Req::post(
                            "/v1/auth/login",
                            &serde_json::json!({"email": a.email, "password": a.password}),
                        ))
                    })
                    .collect(),
                Scenario::ClientCredentials => {
                    let (id, secret) = launch.create_client(&place)?;
                    let req = Req::form("/oauth/token", "grant_type=client_credentials").basic(&id, &secret);
                    (0..conns).map(|_| Work::Fixed(req.clone())).collect()
                }
            };
            if works.len() != conns {
                bail!("{}: could not prepare {conns} connections", sc.key());
            }
            eprintln!("bench: {} — {} connections, {:?} + {:?}…", sc.label(), conns, s.warmup, s.duration);
            let start_rss = srv.rss_kib().map(mib).unwrap_or(0.0);
            let pid = srv.pid().to_string();
            let (cpu0, self0) = (server::cpu_secs(&pid), server::cpu_secs("self"));
            let machine0 = server::machine_jiffies();
            let watch = srv.watch_rss();
            let t0 = Instant::now();
            let out = load::run(addr, works, plan).await?;
            let wall = t0.elapsed().as_secs_f64();
            let peak = mib(watch.finish());
            let busy = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if wall > 0.0 => (b - a) / wall,
                _ => 0.0,
            };
            let server_cpu = busy(cpu0, server::cpu_secs(&pid));
            let client_cpu = busy(self0, server::cpu_secs("self"));
            let machine_busy = match (machine0, server::machine_jiffies()) {
                (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => (b1 - b0) as f64 / (t1 - t0) as f64,
                _ => 0.0,
            };
            let pct = |q: f64| out.hist.value_at_quantile(q) as f64 / 1000.0;
            let (p50, p99, p999) = (pct(0.5), pct(0.99), pct(0.999));
            let rps = out.rps();
            eprintln!(
                "bench:   {} req/s, p99 {p99:.2} ms, {} errors; server {server_cpu:.2} cores, \
                 load generator {client_cpu:.2} cores",
                report::rate(rps),
                out.errors,
            );
            // Steady state: average busy cores ÷ requests per second.
            let cpu_per_req = (rps > 0.0 && server_cpu > 0.0).then(|| server_cpu * 1e6 / rps);
            let mut note = out.first_error.clone().map(|e| format!("{} errors, first: {e}", out.errors));
            if out.ok == 0 && note.is_none() {
                note = Some("no request succeeded".into());
            }
            results.push(ScenarioResult {
                key: sc.key(),
                label: sc.label(),
                ran: true,
                note,
                rps,
                p50_ms: p50,
                p99_ms: p99,
                p999_ms: p999,
                max_ms: out.hist.max() as f64 / 1000.0,
                ok: out.ok,
                errors: out.errors,
                peak_rss_mib: peak,
                start_rss_mib: start_rss,
                server_cpu_cores: server_cpu,
                client_cpu_cores: client_cpu,
                machine_busy,
                other_cores: (machine_busy * s.nproc as f64 - server_cpu - client_cpu).max(0.0),
                server_cpu_us_per_req: cpu_per_req,
                limit: None,
                limit_rate: None,
                ratio: None,
                target: None,
                target_met: None,
                rss_met: Some(peak < scenario::LOAD_RSS_MIB),
            });
        }
        srv.stop();
    }
    Ok(results)
}
