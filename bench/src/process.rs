//! Running a child process while sampling its CPU time and peak memory from `/proc`.
//!
//! Linux only. CPU time is `utime + stime` of `/proc/PID/stat` in clock ticks (USER_HZ, 100
//! on every Linux architecture), read once more when the process has exited but is not yet
//! reaped (a zombie's counters include all its threads); peak RSS is `VmHWM` of
//! `/proc/PID/status`, the kernel's own high-water mark, sampled until exit.

use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::BoxError;

/// Clock ticks per second in `/proc/PID/stat` (Linux's USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// What a run used.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    /// User plus system CPU seconds.
    pub cpu_secs: f64,
    /// Peak resident set size, bytes.
    pub peak_rss: u64,
    /// Wall-clock seconds.
    pub wall_secs: f64,
}

/// A finished run.
pub struct Run {
    /// Exit status.
    pub status: ExitStatus,
    /// Captured standard output.
    pub stdout: String,
    /// Captured standard error.
    pub stderr: String,
    /// Resources used.
    pub usage: Usage,
}

impl Run {
    /// An error with the run's output unless it exited 0.
    pub fn check(self, what: &str) -> Result<Self, BoxError> {
        if self.status.success() {
            Ok(self)
        } else {
            Err(format!(
                "{what} failed ({}):\n{}\n{}",
                self.status, self.stdout, self.stderr
            )
            .into())
        }
    }
}

/// Runs `command` to completion, sampling it every 10 ms.
pub fn measure(command: &mut Command) -> Result<Run, BoxError> {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    // Drain the pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let mut usage = Usage::default();
    loop {
        let stat = read_stat(pid);
        if let Some(hwm) = read_hwm(pid) {
            usage.peak_rss = usage.peak_rss.max(hwm);
        }
        if let Some((state, cpu)) = stat {
            usage.cpu_secs = cpu;
            if state == 'Z' {
                break;
            }
        } else {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = child.wait()?;
    usage.wall_secs = started.elapsed().as_secs_f64();
    Ok(Run {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        usage,
    })
}

/// Runs `command` to completion and returns its output (no sampling).
pub fn output(command: &mut Command, what: &str) -> Result<Output, BoxError> {
    let out = command.output()?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    Ok(out)
}

/// Peak RSS of a running process (another process, e.g. a server), bytes.
pub fn peak_rss(pid: u32) -> Option<u64> {
    read_hwm(pid)
}

fn drain<R: std::io::Read + Send + 'static>(pipe: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_string(&mut text);
        }
        text
    })
}

/// The CPU seconds (user + system) process `pid` has used so far.
pub fn cpu_secs(pid: u32) -> Result<f64, BoxError> {
    read_stat(pid)
        .map(|(_, cpu)| cpu)
        .ok_or_else(|| format!("cannot read the CPU time of process {pid} from /proc").into())
}

/// The machine's CPU time so far, in clock ticks over all CPUs: (all, stolen). Stolen time
/// is what the hypervisor gave other guests while this one wanted to run.
pub fn machine_ticks() -> Result<(u64, u64), BoxError> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    parse_machine_ticks(&stat).ok_or_else(|| "cannot read the CPU times in /proc/stat".into())
}

fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    // `cpu  user nice system idle iowait irq softirq steal guest guest_nice`; guest time is
    // already counted in user and nice.
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    Some((ticks.iter().sum(), *ticks.get(7)?))
}

/// The share of the machine's CPU time stolen between two [`machine_ticks`] readings.
pub fn stolen_share(before: (u64, u64), after: (u64, u64)) -> f64 {
    let all = after.0.saturating_sub(before.0);
    let stolen = after.1.saturating_sub(before.1);
    stolen as f64 / all.max(1) as f64
}

/// The state letter and the CPU seconds so far.
fn read_stat(pid: u32) -> Option<(char, f64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

fn parse_stat(stat: &str) -> Option<(char, f64)> {
    // `pid (comm) state ...`: comm may hold spaces and parentheses; fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the state.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((state, (utime + stime) / TICKS_PER_SECOND))
}

fn read_hwm(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Starts `command` in the background with its output in `log` (a pipe nobody reads would
/// fill and stall the process).
pub fn spawn(command: &mut Command, log: &std::path::Path) -> Result<Child, BoxError> {
    let file = std::fs::File::create(log)?;
    Ok(command.stdout(file.try_clone()?).stderr(file).spawn()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (mongo shift) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 1 2 3";
        assert_eq!(parse_stat(line), Some(('S', 3.0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn machine_ticks_sum_eight_fields_and_name_the_stolen_ones() {
        let stat = "cpu  100 5 50 800 10 1 2 32 7 0\ncpu0 50 2 25 400 5 0 1 16 3 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((1000, 32)));
        assert_eq!(parse_machine_ticks("cpu  1 2\n"), None);
        assert!((stolen_share((1000, 32), (2000, 132)) - 0.1).abs() < 1e-9);
        assert_eq!(stolen_share((5, 1), (5, 1)), 0.0);
    }

    #[test]
    fn this_process_can_be_read() {
        let me = std::process::id();
        let (state, cpu) = read_stat(me).unwrap();
        assert!(state == 'R' || state == 'S', "{state}");
        assert!(cpu >= 0.0);
        assert!(read_hwm(me).unwrap() > 0);
    }
}
