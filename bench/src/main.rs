//! `mongoshift-bench`: measures mongoshift against `mongoshift-testd` servers running as
//! separate processes, prints a table and writes JSON.
//!
//! ```sh
//! cargo run --release -p mongoshift-bench -- --out target/bench/bench.json
//! ```
//!
//! One run measures: the destination's raw batched-insert ceiling; mongoshift's copy rate and
//! its ratio to the ceiling; CPU seconds per million documents; peak RSS copying 1× and 10×
//! the data; change-application lag under a writer at rising rates; verification against a
//! plain scan; `plan` time for many collections; and a hand-written pymongo copy. Figures are
//! reported, never asserted: the targets are shown as met or not.

#![forbid(unsafe_code)]

mod data;
mod process;
mod report;
mod scenarios;
mod servers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use mongodb::Client;

/// Oplog entries the destination keeps (the test server's default).
const DESTINATION_OPLOG: usize = 100_000;

/// Errors of the harness.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "mongoshift-bench", version, about)]
pub struct Args {
    /// Documents of the copy (the 10× data set; the 1× set for peak memory is a tenth).
    #[arg(long, default_value_t = 1_000_000)]
    pub docs: u64,
    /// Size of each document, bytes.
    #[arg(long, default_value_t = 500)]
    pub doc_size: usize,
    /// Seconds the writer runs at each rate of the lag measurement.
    #[arg(long, default_value_t = 10)]
    pub lag_step: u64,
    /// Writer rates (changes/s) of the lag measurement; by default 5 %, 10 %, 25 %, 50 %, 75 %
    /// and 100 % of the measured ceiling.
    #[arg(long, value_delimiter = ',')]
    pub lag_rates: Vec<u64>,
    /// Collection counts `plan` is timed for.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    pub plan_collections: Vec<usize>,
    /// Rounds of the 10× copy, each between two measurements of the ceiling, and as many 1×
    /// copies; the round with the median copy/ceiling ratio is reported, peak memory as the
    /// medians of each size, and every run is in the JSON. (Five, because on a shared VM
    /// single rounds spread wider than the gap to the copy target.)
    #[arg(long, default_value_t = 5)]
    pub repeat: u32,
    /// Skip the pymongo baseline.
    #[arg(long)]
    pub skip_pymongo: bool,
    /// Where the JSON results go.
    #[arg(long, default_value = "target/bench/bench.json")]
    pub out: PathBuf,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args).await {
        Ok(results) => {
            println!("{}", report::table(&results));
            if let Err(e) = report::save(&results, &args.out) {
                eprintln!("mongoshift-bench: cannot write {}: {e}", args.out.display());
                return ExitCode::FAILURE;
            }
            println!("JSON: {}", args.out.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mongoshift-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The ceiling, with the CPU seconds the destination spent on it; what it wrote is dropped
/// afterwards, outside the measurement (as the copy's is).
async fn measured_ceiling(
    dst: &Client,
    destination: &servers::Server,
    args: &Args,
) -> Result<(scenarios::Rate, f64), BoxError> {
    let spent = process::cpu_secs(destination.pid())?;
    let rate = scenarios::ceiling(dst, args.docs, args.doc_size).await?;
    let cpu = process::cpu_secs(destination.pid())? - spent;
    scenarios::drop_ceiling(dst).await?;
    Ok((rate, cpu))
}

async fn run(args: &Args) -> Result<report::Results, BoxError> {
    let say = |s: &str| eprintln!("bench: {s}");
    let binaries = servers::Binaries::locate()?;
    let root = tempfile::tempdir()?;
    // An oplog ten times the seeded data: seeding fills it quickly, and `plan` projects the
    // window of a partly full oplog to a full one (a real cluster's oplog is sized likewise).
    let oplog = usize::try_from(args.docs.saturating_mul(10))
        .unwrap_or(usize::MAX)
        .max(1_000_000);
    let source = servers::Server::start(&binaries.testd, "src", oplog)?;
    // The destination's oplog is never read. The test server keeps its entries in memory, and
    // an insert's entry shares the document: ten million entries would keep every document
    // of every dropped copy alive (7.5 GiB by the end of a run), where mongod keeps its oplog
    // on disk. So the destination keeps a small one.
    let destination = servers::Server::start(&binaries.testd, "dst", DESTINATION_OPLOG)?;
    let src = Client::with_uri_str(&source.uri).await?;
    let dst = Client::with_uri_str(&destination.uri).await?;
    let small = (args.docs / 10).max(1);

    say(&format!(
        "seeding {} + {small} documents of {} bytes",
        args.docs, args.doc_size
    ));
    data::seed(&src, "bench", "docs", args.docs, args.doc_size, 4).await?;
    data::seed(&src, "bench_small", "docs", small, args.doc_size, 4).await?;

    // Peak memory is compared as the median of as many 1× copies as 10× rounds: one short
    // copy's peak depends on how many partitions happen to write at once.
    let mut small_copies = Vec::new();
    for run in 1..=args.repeat.max(1) {
        say(&format!("mongoshift: copy {run} of the 1× data set"));
        dst.database("bench_small").drop().await?;
        let m = scenarios::Migration::new(
            root.path(),
            &format!("small{run}"),
            &source.uri,
            &destination.uri,
            &["bench_small"],
            "auto",
        )?;
        small_copies.push(scenarios::copy(&binaries, &m)?);
    }
    dst.database("bench_small").drop().await?;

    // The ceiling and the copy alternate, and each copy is compared with the ceilings measured
    // just before and just after it, so that a ratio compares runs made under the same
    // conditions (a shared VM's speed drifts from minute to minute); the round with the
    // median ratio (the lower one of an even count) is reported. Every copy and every ceiling
    // writes into a destination holding none of the benchmark's data.
    say("ceiling (raw batched inserts into the destination)");
    let cpu = |server: &servers::Server| process::cpu_secs(server.pid());
    let (mut before, mut before_cpu) = measured_ceiling(&dst, &destination, args).await?;
    let mut rounds = Vec::new();
    let mut verify = None;
    let repeat = args.repeat.max(1);
    for round in 1..=repeat {
        say(&format!(
            "round {round}: mongoshift's copy of the 10× data set, then the ceiling again"
        ));
        let m = scenarios::Migration::new(
            root.path(),
            &format!("main{round}"),
            &source.uri,
            &destination.uri,
            &["bench"],
            "auto",
        )?;
        let (source_spent, destination_spent) = (cpu(&source)?, cpu(&destination)?);
        let machine = process::machine_ticks()?;
        let copy = scenarios::copy(&binaries, &m)?;
        let copy_stolen = process::stolen_share(machine, process::machine_ticks()?);
        let copy_source = cpu(&source)? - source_spent;
        let copy_destination = cpu(&destination)? - destination_spent;
        if round == repeat {
            say("verify against a plain scan");
            verify = Some(scenarios::verify(&binaries, &m, &src, &dst, "bench").await?);
        }
        dst.database("bench").drop().await?;
        let (after, after_cpu) = measured_ceiling(&dst, &destination, args).await?;
        rounds.push(report::Round {
            ceiling_before: before,
            copy,
            ceiling_after: after,
            servers_cpu: report::ServersCpu {
                ceiling_destination: before_cpu + after_cpu,
                copy_source,
                copy_destination,
                copy_stolen,
            },
        });
        (before, before_cpu) = (after, after_cpu);
    }
    let verify = verify.ok_or("no copy round ran")?;
    let median = report::median_round(&rounds).ok_or("no copy round ran")?;
    let ceiling = median.ceiling();

    let pymongo = if args.skip_pymongo {
        Err("skipped (--skip-pymongo)".to_owned())
    } else {
        say("pymongo baseline");
        scenarios::pymongo(&source.uri, &destination.uri, "bench")
    };

    let rates = if args.lag_rates.is_empty() {
        [0.05, 0.10, 0.25, 0.50, 0.75, 1.0]
            .iter()
            .map(|f| (ceiling.docs_per_sec * f).round() as u64)
            .collect()
    } else {
        args.lag_rates.clone()
    };
    say(&format!("lag under a writer at {rates:?} changes/s"));
    let m_live = scenarios::Migration::new(
        root.path(),
        "live",
        &source.uri,
        &destination.uri,
        &["live"],
        "file",
    )?;
    let lag = scenarios::lag(
        &binaries,
        &m_live,
        &src,
        &dst,
        &rates,
        Duration::from_secs(args.lag_step),
    )
    .await?;

    let mut plans = Vec::new();
    let mut existing = 0;
    let plan_dbs: Vec<String> = (0..10).map(|i| format!("plan{i}")).collect();
    let plan_dbs: Vec<&str> = plan_dbs.iter().map(String::as_str).collect();
    let m_plan = scenarios::Migration::new(
        root.path(),
        "plan",
        &source.uri,
        &destination.uri,
        &plan_dbs,
        "file",
    )?;
    let mut counts = args.plan_collections.clone();
    counts.sort_unstable();
    for total in counts {
        say(&format!("plan with {total} collections"));
        plans.push(scenarios::plan(&binaries, &m_plan, &src, existing, total).await?);
        existing = total;
    }

    Ok(report::Results {
        machine: report::Machine::read(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        documents: args.docs,
        document_size: args.doc_size,
        small_copies,
        rounds,
        median,
        verify,
        pymongo,
        lag,
        half_ceiling_rate: (ceiling.docs_per_sec * 0.5).round() as u64,
        plans,
        source_peak_rss: process::peak_rss(source.pid()),
        destination_peak_rss: process::peak_rss(destination.pid()),
    })
}
