//! The results: a table for people, JSON for tools, and the targets of the performance issue.

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::scenarios::{CopyRun, LagStep, PlanRun, Rate, VerifyRun};

/// The machine a run was made on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// Memory, bytes.
    pub memory: u64,
    /// Kernel release.
    pub kernel: String,
}

impl Machine {
    /// Reads `/proc` (Linux).
    pub fn read() -> Self {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, m)| m.trim().to_owned());
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024);
        Self {
            cpu,
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub struct Results {
    /// Where.
    pub machine: Machine,
    /// The command line.
    pub command: String,
    /// Documents of the copy.
    pub documents: u64,
    /// Bytes per document.
    pub document_size: usize,
    /// mongoshift copying a tenth of the data, once per round.
    pub small_copies: Vec<CopyRun>,
    /// Every round of the ceiling and the copy.
    pub rounds: Vec<Round>,
    /// The round with the median copy/ceiling ratio ([`median_round`] of `rounds`): the copy
    /// and the ceiling reported. In the JSON as `ceiling` and `copy`.
    #[serde(skip)]
    pub median: Round,
    /// Verification and a plain scan.
    pub verify: VerifyRun,
    /// The pymongo copy, or why it did not run.
    #[serde(serialize_with = "ok_or_reason")]
    pub pymongo: Result<Rate, String>,
    /// Lag per writer rate.
    pub lag: Vec<LagStep>,
    /// Half the ceiling, changes/s (the lag target's rate).
    pub half_ceiling_rate: u64,
    /// `plan` times.
    pub plans: Vec<PlanRun>,
    /// Peak RSS of the source server, bytes.
    pub source_peak_rss: Option<u64>,
    /// Peak RSS of the destination server, bytes.
    pub destination_peak_rss: Option<u64>,
}

fn ok_or_reason<S: serde::Serializer>(v: &Result<Rate, String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Ok(rate) => rate.serialize(s),
        Err(reason) => serde_json::json!({ "skipped": reason }).serialize(s),
    }
}

/// One round: mongoshift's copy, between two measurements of the ceiling (the one after is
/// the next round's before), so that a drift of the machine's speed during the round moves
/// both sides of the ratio alike.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Round {
    /// The destination's raw insert rate, just before the copy.
    pub ceiling_before: Rate,
    /// mongoshift's copy.
    pub copy: CopyRun,
    /// The destination's raw insert rate, just after the copy.
    pub ceiling_after: Rate,
    /// Where the machine's CPU went.
    pub servers_cpu: ServersCpu,
}

/// Where the machine's CPU went during a round's measurements: the CPU seconds (user +
/// system) of the two server processes, since the copy shares the cores three ways and the
/// ceiling gives them all to the destination, and what the hypervisor took.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ServersCpu {
    /// The destination, during the ceilings before and after the copy.
    pub ceiling_destination: f64,
    /// The source, during the copy (the whole `apply` run).
    pub copy_source: f64,
    /// The destination, during the copy.
    pub copy_destination: f64,
    /// The share of the machine's CPU time the hypervisor gave to other guests during the
    /// copy (`steal` in `/proc/stat`): a noisy neighbour shows here.
    pub copy_stolen: f64,
}

/// CPU seconds per million documents.
fn per_million(secs: f64, documents: u64) -> f64 {
    secs / (documents.max(1) as f64 / 1e6)
}

/// CPU seconds per million documents of each process in one round.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct CpuByProcess {
    /// The destination during the ceilings.
    pub ceiling_destination: f64,
    /// The destination during the copy.
    pub copy_destination: f64,
    /// The source during the copy.
    pub copy_source: f64,
    /// mongoshift's `apply` process.
    pub copy_mongoshift: f64,
}

impl Round {
    /// The ceiling around the copy: both measurements as one.
    pub fn ceiling(&self) -> Rate {
        Rate::combined(&self.ceiling_before, &self.ceiling_after)
    }

    /// CPU seconds per million documents of each process, in the ceilings and in the copy.
    pub fn cpu_by_process(&self) -> CpuByProcess {
        let copied = self.copy.rate.documents;
        CpuByProcess {
            ceiling_destination: per_million(
                self.servers_cpu.ceiling_destination,
                self.ceiling().documents,
            ),
            copy_destination: per_million(self.servers_cpu.copy_destination, copied),
            copy_source: per_million(self.servers_cpu.copy_source, copied),
            copy_mongoshift: per_million(self.copy.cpu_secs, copied),
        }
    }

    /// Copy rate over the ceiling around it.
    pub fn ratio(&self) -> f64 {
        self.copy.rate.docs_per_sec / self.ceiling().docs_per_sec
    }
}

/// The median of some values (the mean of the middle two of an even count); 0 for none.
pub fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The round with the median copy/ceiling ratio: the lower one of an even count, so that an
/// even `--repeat` never leans toward the target.
pub fn median_round(rounds: &[Round]) -> Option<Round> {
    let mut by_ratio = rounds.to_vec();
    by_ratio.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
    by_ratio.get(by_ratio.len().checked_sub(1)? / 2).copied()
}

/// A target of the performance issue and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Target {
    /// What is measured.
    pub name: &'static str,
    /// The target.
    pub target: String,
    /// The measured figure.
    pub measured: String,
    /// Met or not (`None`: not measured).
    pub met: Option<bool>,
}

impl Results {
    /// Copy rate over the ceiling (of the median round).
    pub fn copy_ratio(&self) -> f64 {
        self.median.ratio()
    }

    /// Median peak RSS of the 1× copies, bytes.
    pub fn peak_rss_small(&self) -> f64 {
        median(self.small_copies.iter().map(|c| c.peak_rss as f64))
    }

    /// Median peak RSS of the 10× copies, bytes.
    pub fn peak_rss_large(&self) -> f64 {
        median(self.rounds.iter().map(|r| r.copy.peak_rss as f64))
    }

    /// Peak RSS at 10× over 1× (medians of each).
    pub fn rss_ratio(&self) -> f64 {
        self.peak_rss_large() / self.peak_rss_small().max(1.0)
    }

    /// CPU seconds per million documents copied (whole `apply` process), median of the
    /// rounds.
    pub fn cpu_per_million(&self) -> f64 {
        median(
            self.rounds
                .iter()
                .map(|r| r.cpu_by_process().copy_mongoshift),
        )
    }

    /// The highest writer rate whose p99 lag stayed under 2 s (and that the writer reached).
    pub fn highest_rate_under_2s(&self) -> Option<f64> {
        self.lag
            .iter()
            .filter(|s| s.p99_secs < 2.0)
            .map(|s| s.achieved_rate)
            .max_by(f64::total_cmp)
    }

    /// The targets.
    pub fn targets(&self) -> Vec<Target> {
        let half = self
            .lag
            .iter()
            .find(|s| s.target_rate == self.half_ceiling_rate);
        let mut t = vec![
            Target {
                name: "copy rate / ceiling",
                target: "≥ 0.90".into(),
                measured: format!("{:.2}", self.copy_ratio()),
                met: Some(self.copy_ratio() >= 0.90),
            },
            Target {
                name: "peak RSS 10× / 1×",
                target: "≤ 1.3".into(),
                measured: format!("{:.2}", self.rss_ratio()),
                met: Some(self.rss_ratio() <= 1.3),
            },
            Target {
                name: "lag p99 at half the ceiling rate",
                target: format!("< 2 s at {} changes/s", self.half_ceiling_rate),
                measured: half.map_or_else(
                    || "not reached (a lower rate already lagged ≥ 2 s)".into(),
                    |s| format!("{:.2} s (writer made {:.0}/s)", s.p99_secs, s.achieved_rate),
                ),
                met: Some(half.is_some_and(|s| {
                    s.p99_secs < 2.0 && s.achieved_rate >= 0.9 * s.target_rate as f64
                })),
            },
        ];
        for (collections, limit) in [(1000, 3.0), (10_000, 20.0)] {
            let run = self.plans.iter().find(|p| p.collections == collections);
            t.push(Target {
                name: if collections == 1000 {
                    "plan, 1,000 collections"
                } else {
                    "plan, 10,000 collections"
                },
                target: format!("< {limit} s"),
                measured: run.map_or_else(|| "not measured".into(), |p| format!("{:.2} s", p.secs)),
                met: run.map(|p| p.secs < limit),
            });
        }
        t
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn rate(r: &Rate) -> String {
    format!(
        "{:.0} docs/s, {:.1} MiB/s ({} docs in {:.2} s)",
        r.docs_per_sec, r.mib_per_sec, r.documents, r.secs
    )
}

/// The human table.
pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let m = &r.machine;
    let _ = writeln!(
        out,
        "\nmachine: {}, {} CPUs, {}, Linux {}",
        m.cpu,
        m.cpus,
        mib(m.memory),
        m.kernel
    );
    let _ = writeln!(
        out,
        "data: {} documents of {} bytes (1× set: {})\n",
        r.documents,
        r.document_size,
        r.small_copies.first().map_or(0, |c| c.rate.documents)
    );
    let peaks = |runs: &mut dyn Iterator<Item = &CopyRun>| {
        runs.map(|c| format!("{:.0}", c.peak_rss as f64 / (1024.0 * 1024.0)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let cpu = r.median.cpu_by_process();
    let mut rows: Vec<(String, String)> = vec![
        (
            "ceiling (raw batched inserts, before + after)".into(),
            rate(&r.median.ceiling()),
        ),
        ("mongoshift copy".into(), rate(&r.median.copy.rate)),
        (
            "copy / ceiling".into(),
            format!(
                "{:.2} (median of {} rounds, each against the ceiling just before and after it: {})",
                r.copy_ratio(),
                r.rounds.len(),
                r.rounds
                    .iter()
                    .map(|round| format!("{:.2}", round.ratio()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "CPU per million documents".into(),
            format!(
                "{:.2} s (apply process, user + sys; median of rounds)",
                r.cpu_per_million()
            ),
        ),
        (
            "CPU per million documents, by process".into(),
            format!(
                "ceiling: destination {:.2} s; copy: destination {:.2} s, source {:.2} s, mongoshift {:.2} s (the median round)",
                cpu.ceiling_destination, cpu.copy_destination, cpu.copy_source, cpu.copy_mongoshift
            ),
        ),
        (
            "CPU stolen by the hypervisor".into(),
            format!(
                "during each copy: {}",
                r.rounds
                    .iter()
                    .map(|round| format!("{:.0} %", round.servers_cpu.copy_stolen * 100.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "peak RSS 1× / 10×".into(),
            format!(
                "{} / {} (ratio {:.2} of medians; each run, 1×: {} MiB; 10×: {} MiB)",
                mib(r.peak_rss_small() as u64),
                mib(r.peak_rss_large() as u64),
                r.rss_ratio(),
                peaks(&mut r.small_copies.iter()),
                peaks(&mut r.rounds.iter().map(|round| &round.copy)),
            ),
        ),
        ("verify".into(), rate(&r.verify.verify)),
        ("plain scan of both sides".into(), rate(&r.verify.scan)),
        ("verify / scan".into(), format!("{:.2}", r.verify.ratio)),
    ];
    match &r.pymongo {
        Ok(p) => {
            rows.push(("pymongo find → insert_many(1000)".into(), rate(p)));
            rows.push((
                "mongoshift speed-up over pymongo".into(),
                format!("{:.1}×", r.median.copy.rate.docs_per_sec / p.docs_per_sec),
            ));
        }
        Err(reason) => rows.push(("pymongo baseline".into(), reason.clone())),
    }
    for s in &r.lag {
        rows.push((
            format!("lag at {} changes/s", s.target_rate),
            format!(
                "p50 {:.3} s, p99 {:.3} s (writer made {:.0}/s, {} probes)",
                s.p50_secs, s.p99_secs, s.achieved_rate, s.samples
            ),
        ));
    }
    rows.push((
        "highest rate with p99 lag < 2 s".into(),
        r.highest_rate_under_2s()
            .map_or_else(|| "none".into(), |v| format!("{v:.0} changes/s")),
    ));
    for p in &r.plans {
        rows.push((
            format!("plan, {} collections", p.collections),
            format!("{:.2} s", p.secs),
        ));
    }
    if let (Some(s), Some(d)) = (r.source_peak_rss, r.destination_peak_rss) {
        rows.push((
            "servers' peak RSS (source / destination)".into(),
            format!("{} / {}", mib(s), mib(d)),
        ));
    }
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "{k:<width$}  {v}");
    }
    let _ = writeln!(out, "\ntargets:");
    for t in r.targets() {
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "NOT MET",
            None => "-",
        };
        let _ = writeln!(
            out,
            "  {:<34} {:<28} {:<44} {met}",
            t.name, t.target, t.measured
        );
    }
    out
}

/// Writes the JSON results (with the targets).
pub fn save(r: &Results, path: &Path) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut value = serde_json::to_value(r).map_err(std::io::Error::other)?;
    value["targets"] = serde_json::to_value(r.targets()).map_err(std::io::Error::other)?;
    value["peak_rss_small"] = r.peak_rss_small().into();
    value["peak_rss_large"] = r.peak_rss_large().into();
    value["cpu_secs_per_million"] = r.cpu_per_million().into();
    value["ceiling"] = serde_json::to_value(r.median.ceiling()).map_err(std::io::Error::other)?;
    value["copy"] = serde_json::to_value(r.median.copy).map_err(std::io::Error::other)?;
    value["median_round_cpu_secs_per_million"] =
        serde_json::to_value(r.median.cpu_by_process()).map_err(std::io::Error::other)?;
    let text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)?;
    std::fs::write(path, text + "\n")
}
