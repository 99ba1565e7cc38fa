//! Showing a running migration: bars on a terminal (one per active collection and one overall),
//! a plain line every few seconds otherwise, or one JSON event per line with `--json`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use mongoshift::plan::model::approx_bytes;
use mongoshift::state::CopyStatus;
use mongoshift::sync::Progress;
use mongoshift::sync::progress::{Rate, summary_line, sync_summary};
use tokio::sync::watch;

/// The bars, when shown: logs print above them instead of through them.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Writes log output without tearing the bars.
pub fn write_log(bytes: &[u8]) -> std::io::Result<()> {
    match BARS.get() {
        Some(bars) => bars.suspend(|| std::io::stderr().write_all(bytes)),
        None => std::io::stderr().write_all(bytes),
    }
}

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// Bars on stderr (a terminal).
    Bars,
    /// A line on stderr every few seconds.
    Lines,
    /// JSON events on stdout.
    Json,
}

impl ProgressMode {
    /// Picks the mode for this run.
    pub fn choose(json: bool) -> Self {
        if json {
            Self::Json
        } else if std::io::stderr().is_terminal() {
            Self::Bars
        } else {
            Self::Lines
        }
    }
}

/// Renders progress until the sender is dropped.
pub async fn render(mode: ProgressMode, mut updates: watch::Receiver<Progress>) {
    let mut view = View::new(mode);
    let mut ticker = tokio::time::interval(match mode {
        ProgressMode::Bars => Duration::from_millis(200),
        ProgressMode::Lines => Duration::from_secs(5),
        ProgressMode::Json => Duration::from_secs(1),
    });
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = updates.changed() => if changed.is_err() { break },
        }
        let snapshot = updates.borrow_and_update().clone();
        view.show(&snapshot, false);
    }
    let last = updates.borrow().clone();
    view.show(&last, true);
    view.finish();
}

struct View {
    mode: ProgressMode,
    bars: Option<MultiProgress>,
    overall: Option<ProgressBar>,
    per_namespace: BTreeMap<String, ProgressBar>,
    last_line: Option<Instant>,
    last_json: Option<Progress>,
    rate: Rate,
}

impl View {
    fn new(mode: ProgressMode) -> Self {
        let (bars, overall) = if mode == ProgressMode::Bars {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(5));
            let overall = multi.add(ProgressBar::new(0));
            overall.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} docs {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            overall.set_prefix("total");
            let _ = BARS.set(multi.clone());
            (Some(multi), Some(overall))
        } else {
            (None, None)
        };
        Self {
            mode,
            bars,
            overall,
            per_namespace: BTreeMap::new(),
            last_line: None,
            last_json: None,
            rate: Rate::default(),
        }
    }

    fn show(&mut self, p: &Progress, last: bool) {
        let rate = self.rate.update(p.documents, p.bytes);
        match self.mode {
            ProgressMode::Json => {
                if self.last_json.as_ref() != Some(p) || last {
                    let event = serde_json::json!({ "event": "progress", "progress": p });
                    println!("{event}");
                    self.last_json = Some(p.clone());
                }
            }
            ProgressMode::Lines => {
                // Nothing worth a line before the plan is known.
                if p.namespaces.is_empty() && !last {
                    return;
                }
                let due = self
                    .last_line
                    .is_none_or(|t| t.elapsed() >= Duration::from_secs(5));
                if due || last {
                    eprintln!("{}", summary_line(p, rate));
                    self.last_line = Some(Instant::now());
                }
            }
            ProgressMode::Bars => self.show_bars(p, rate),
        }
    }

    fn show_bars(&mut self, p: &Progress, rate: (f64, f64)) {
        let (Some(multi), Some(overall)) = (&self.bars, &self.overall) else {
            return;
        };
        overall.set_length(p.documents_estimate.max(p.documents));
        overall.set_position(p.documents);
        overall.set_message(format!(
            "{} {}/s, {}",
            p.activity,
            approx_bytes(rate.1 as u64),
            sync_summary(p)
        ));
        for n in &p.namespaces {
            let active = n.status == CopyStatus::Copying;
            match (active, self.per_namespace.get(&n.destination)) {
                (true, None) => {
                    let bar =
                        multi.insert_before(overall, ProgressBar::new(n.documents_estimate.max(1)));
                    bar.set_style(
                        ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_bar())
                            .progress_chars("=> "),
                    );
                    bar.set_prefix(short(&n.destination, 12));
                    self.per_namespace.insert(n.destination.clone(), bar);
                }
                (false, Some(bar)) => {
                    bar.finish_and_clear();
                    multi.remove(bar);
                    self.per_namespace.remove(&n.destination);
                    continue;
                }
                _ => {}
            }
            if let Some(bar) = self.per_namespace.get(&n.destination) {
                bar.set_length(n.documents_estimate.max(n.documents));
                bar.set_position(n.documents);
                bar.set_message(format!("{}/{} partitions", n.partitions_done, n.partitions));
            }
        }
    }

    fn finish(&mut self) {
        for bar in self.per_namespace.values() {
            bar.finish_and_clear();
        }
        if let Some(o) = &self.overall {
            o.finish();
        }
    }
}

fn short(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_owned()
    } else {
        let tail: String = s
            .chars()
            .rev()
            .take(width - 1)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        format!("…{tail}")
    }
}
