//! The report: machine facts, the run's settings, the raw limits, each scenario
//! beside its limit and target, start-up and idle memory. Rendered as a markdown
//! table for people and serialised as JSON for tools.

use std::fmt::Write as _;

use serde::Serialize;

use crate::limits::Limits;

/// Facts about the machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Online CPUs.
    pub nproc: usize,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory, MiB.
    pub mem_total_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// When the run started, RFC 3339 UTC.
    pub date: String,
    /// `git describe` of the working tree, when available.
    pub git: Option<String>,
}

impl Machine {
    /// Reads /proc and git; `nproc` is counted before any pinning.
    pub fn probe(nproc: usize) -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_total_mib = meminfo
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib / 1024)
            .unwrap_or(0);
        let kernel =
            std::fs::read_to_string("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()).unwrap_or_default();
        let git = std::process::Command::new("git")
            .args(["describe", "--always", "--dirty"])
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
        Self {
            nproc,
            cpu_model,
            mem_total_mib,
            kernel,
            date: portcullis::clock::rfc3339(portcullis::clock::now_ms()),
            git,
        }
    }
}

/// The settings of the run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `default` or `pinned`.
    pub mode: &'static str,
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// Signing algorithm.
    pub algorithm: &'static str,
    /// Measured window per scenario, ms.
    pub duration_ms: u64,
    /// Unrecorded warm-up per scenario, ms.
    pub warmup_ms: u64,
    /// Connections (= in-flight requests) per scenario.
    pub connections: usize,
    /// Accounts registered through the API.
    pub users: usize,
    /// Users seeded for the start-up measurement.
    pub seed_users: usize,
    /// Threads of the load generator's runtime.
    pub client_threads: usize,
    /// Cores the server may use.
    pub server_cores: usize,
    /// `--smoke`.
    pub smoke: bool,
    /// How busy the machine was just before the run, percent (others' work).
    pub busy_before_pct: f64,
    /// The server binary.
    pub server_bin: String,
    /// `release` or `debug`, from the binary's directory.
    pub server_profile: String,
    /// Extra server environment given with `--server-env`.
    pub server_env: Vec<String>,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Stable key.
    pub key: &'static str,
    /// What was requested.
    pub label: &'static str,
    /// Whether it ran (false for endpoints the server does not have yet).
    pub ran: bool,
    /// Why it did not run, or what went wrong.
    pub note: Option<String>,
    /// Successful requests per second.
    pub rps: f64,
    /// Latency percentiles, ms.
    pub p50_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Slowest, ms.
    pub max_ms: f64,
    /// Successful requests in the window.
    pub ok: u64,
    /// Failed requests in the window.
    pub errors: u64,
    /// Server's peak RSS during the scenario, MiB.
    pub peak_rss_mib: f64,
    /// Server's RSS when the scenario started, MiB.
    pub start_rss_mib: f64,
    /// Cores the server kept busy (CPU seconds ÷ wall seconds, warm-up included).
    pub server_cpu_cores: f64,
    /// Cores the load generator kept busy, same measure.
    pub client_cpu_cores: f64,
    /// Share of the whole machine's CPU time that was busy (0–1), all processes.
    pub machine_busy: f64,
    /// Cores used by processes other than the server and the bench (a disturbed run).
    pub other_cores: f64,
    /// Server CPU time per successful request, microseconds.
    pub server_cpu_us_per_req: Option<f64>,
    /// The limit compared with.
    pub limit: Option<String>,
    /// The limit's rate, per second, for the server's core count.
    pub limit_rate: Option<f64>,
    /// rps ÷ limit_rate.
    pub ratio: Option<f64>,
    /// Target text.
    pub target: Option<String>,
    /// Whether the throughput target was met.
    pub target_met: Option<bool>,
    /// Whether peak RSS stayed under the load target.
    pub rss_met: Option<bool>,
}

/// One start-up measurement.
#[derive(Debug, Clone, Serialize)]
pub struct StartupResult {
    /// Stable key.
    pub key: &'static str,
    /// What was measured.
    pub label: String,
    /// Spawn to first 200 from /readyz, ms (median when several samples).
    pub ready_ms: f64,
    /// Every sample, ms.
    pub samples_ms: Vec<f64>,
    /// RSS after settling, MiB, when measured.
    pub idle_rss_mib: Option<f64>,
    /// Whether ready time met its target, when it has one.
    pub ready_met: Option<bool>,
    /// Whether idle RSS met its target, when measured.
    pub idle_met: Option<bool>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// The settings.
    pub run: RunInfo,
    /// Raw limits.
    pub limits: Limits,
    /// Scenarios, in report order.
    pub scenarios: Vec<ScenarioResult>,
    /// Start-up and idle memory.
    pub startup: Vec<StartupResult>,
    /// Time to seed the users for the start-up measurement, ms.
    pub seed_ms: Option<f64>,
}

fn mark(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "✓",
        Some(false) => "✗",
        None => "",
    }
}

/// `12.3k`, `456`, `7.89`.
pub fn rate(x: f64) -> String {
    if x >= 1_000_000.0 {
        format!("{:.1}M", x / 1_000_000.0)
    } else if x >= 10_000.0 {
        format!("{:.1}k", x / 1000.0)
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

/// `0.94`, or `3.1e-4` for ratios too small for two decimals.
fn ratio(x: f64) -> String {
    if x >= 0.01 || x == 0.0 { format!("{x:.2}") } else { format!("{x:.1e}") }
}

fn ms(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0} ms")
    } else if x >= 10.0 {
        format!("{x:.1} ms")
    } else {
        format!("{x:.2} ms")
    }
}

impl Report {
    /// The markdown rendering.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        let r = &self.run;
        let mut o = String::new();
        let _ = writeln!(o, "## Portcullis benchmark — {}\n", m.date);
        let _ = writeln!(
            o,
            "- machine: {} × {}, {} MiB, Linux {}{}",
            m.nproc,
            m.cpu_model,
            m.mem_total_mib,
            m.kernel,
            m.git.as_deref().map(|g| format!(", tree {g}")).unwrap_or_default()
        );
        let mode = if r.mode == "pinned" {
            "pinned: server on core 0 (taskset -c 0), load generator on core 1".to_owned()
        } else {
            format!("default: server and load generator share all {} cores", m.nproc)
        };
        let _ = writeln!(o, "- mode: {mode}");
        let _ = writeln!(
            o,
            "- server: {} build, {}, {} keys; load: {} connections, {} ms warm-up + {} ms measured per scenario, {} client thread(s){}",
            r.server_profile,
            if r.backend == "sqlite" { "SQLite" } else { "PostgreSQL" },
            r.algorithm,
            r.connections,
            r.warmup_ms,
            r.duration_ms,
            r.client_threads,
            if r.smoke { "; SMOKE RUN: figures are not meaningful" } else { "" }
        );
        if !r.server_env.is_empty() {
            let _ = writeln!(o, "- server environment: `{}`", r.server_env.join(" "));
        }
        if r.busy_before_pct > 10.0 {
            let _ = writeln!(
                o,
                "- WARNING: the machine was {:.0}% busy just before the run: every figure is disturbed",
                r.busy_before_pct
            );
        }
        let _ = writeln!(o);
        let _ = writeln!(o, "### Machine limits (measured in-process, same run)\n");
        let all = self.limits.items.first().and_then(|l| l.all_threads).is_some();
        if all {
            let threads = self.limits.items.first().map(|l| l.threads).unwrap_or(1);
            let _ = writeln!(o, "| primitive | 1 thread | {threads} threads |");
            let _ = writeln!(o, "|---|---:|---:|");
        } else {
            let _ = writeln!(o, "| primitive | 1 thread (server's core) |");
            let _ = writeln!(o, "|---|---:|");
        }
        for l in &self.limits.items {
            match l.all_threads {
                Some(a) => {
                    let _ = writeln!(o, "| {} | {}/s | {}/s |", l.label, rate(l.one_thread), rate(a));
                }
                None => {
                    let _ = writeln!(o, "| {} | {}/s |", l.label, rate(l.one_thread));
                }
            }
        }

        let _ = writeln!(o, "\n### Throughput and latency\n");
        let _ = writeln!(
            o,
            "| scenario | req/s | p50 | p99 | p99.9 | errors | server CPU | peak RSS (< {:.0} MiB) | limit | ratio | target | met |",
            crate::scenario::LOAD_RSS_MIB
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|:---:|");
        for s in &self.scenarios {
            if !s.ran {
                let _ = writeln!(
                    o,
                    "| {} | — | — | — | — | — | — | — | {} | — | {} | |",
                    s.label,
                    s.limit.as_deref().unwrap_or("—"),
                    s.note.as_deref().unwrap_or("not run")
                );
                continue;
            }
            let limit = match (&s.limit, s.limit_rate) {
                (Some(l), Some(x)) => format!("{l} {}/s", rate(x)),
                _ => "—".into(),
            };
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {:.1} MiB {} | {} | {} | {} | {} |",
                s.label,
                rate(s.rps),
                ms(s.p50_ms),
                ms(s.p99_ms),
                ms(s.p999_ms),
                s.errors,
                match s.server_cpu_us_per_req {
                    Some(us) => format!(
                        "{:.2} cores, {us:.0} µs/req (machine {:.0}% busy)",
                        s.server_cpu_cores,
                        s.machine_busy * 100.0
                    ),
                    None => format!("{:.2} cores (machine {:.0}% busy)", s.server_cpu_cores, s.machine_busy * 100.0),
                },
                s.peak_rss_mib,
                mark(s.rss_met),
                limit,
                s.ratio.map(ratio).unwrap_or_else(|| "—".into()),
                s.target.as_deref().unwrap_or("—"),
                mark(s.target_met),
            );
        }
        let errors: Vec<_> = self.scenarios.iter().filter(|s| s.ran && s.note.is_some()).collect();
        if !errors.is_empty() {
            let _ = writeln!(o);
            for s in errors {
                let _ = writeln!(o, "- {}: {}", s.label, s.note.as_deref().unwrap_or_default());
            }
        }

        let busy_others: Vec<_> = self.scenarios.iter().filter(|s| s.ran && s.other_cores > 0.15).collect();
        if !busy_others.is_empty() {
            let _ = writeln!(o);
        }
        for s in busy_others {
            if r.backend == "sqlite" {
                let _ = writeln!(
                    o,
                    "- WARNING: other processes used {:.2} cores during {}: its figures are disturbed.",
                    s.other_cores, s.label
                );
            } else {
                let _ = writeln!(
                    o,
                    "- {}: other processes, the PostgreSQL server among them, used {:.2} cores.",
                    s.label, s.other_cores
                );
            }
        }
        let client: Vec<f64> = self.scenarios.iter().filter(|s| s.ran).map(|s| s.client_cpu_cores).collect();
        if !client.is_empty() {
            let lo = client.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = client.iter().copied().fold(0.0, f64::max);
            let _ = writeln!(
                o,
                "\nServer CPU: CPU seconds the server used ÷ wall seconds of the scenario (warm-up \
                 included), and that per request; machine busy: all CPUs, all processes. The load \
                 generator used {lo:.2}–{hi:.2} cores."
            );
        }
        if self.startup.is_empty() {
            return o;
        }
        let _ = writeln!(o, "\n### Start-up and idle memory\n");
        let _ = writeln!(o, "| measure | ready (/readyz 200) | target | met | idle RSS | target | met |");
        let _ = writeln!(o, "|---|---:|---|:---:|---:|---|:---:|");
        for s in &self.startup {
            let samples = if s.samples_ms.len() > 1 {
                format!(
                    " (median of {}: {})",
                    s.samples_ms.len(),
                    s.samples_ms.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                o,
                "| {} | {}{} | {} | {} | {} | {} | {} |",
                s.label,
                ms(s.ready_ms),
                samples,
                if s.ready_met.is_some() { format!("< {:.0} ms", crate::scenario::READY_MS) } else { "—".into() },
                mark(s.ready_met),
                s.idle_rss_mib.map(|x| format!("{x:.1} MiB")).unwrap_or_else(|| "—".into()),
                if s.idle_met.is_some() { format!("< {:.0} MiB", crate::scenario::IDLE_RSS_MIB) } else { "—".into() },
                mark(s.idle_met),
            );
        }
        if let Some(seed) = self.seed_ms {
            let _ = writeln!(o, "\nSeeding {} users in one transaction took {}.", r.seed_users, ms(seed));
        }
        o
    }
}
