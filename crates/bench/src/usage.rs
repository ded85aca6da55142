//! Resource accounting from `/proc`: what each Herald process, the bench itself and the three
//! backing services (PostgreSQL, RabbitMQ, Redis) cost during a run.
//!
//! CPU is sampled as utime+stime ticks at the start and at the end of the measured window, so
//! start-up work (migrations, topology) is not charged to the load. Memory is the kernel's own
//! peak (VmHWM) plus a once-a-second VmRSS series of the dispatchers, which shows whether
//! memory stays flat under sustained load.

use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Backing services recognised by process name (`/proc/<pid>/comm`).
const INFRA: [(&str, &str); 3] = [
    ("postgres", "postgres"),
    ("beam.smp", "rabbitmq"),
    ("redis-server", "redis"),
];

/// Clock ticks per second (`getconf CLK_TCK`, 100 on every usual Linux).
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .trim()
                    .parse::<f64>()
                    .ok()
            })
            .filter(|t| *t > 0.0)
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process, in ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); utime is field 14 and stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// A `kB` line of `/proc/<pid>/status` (e.g. `VmRSS`, `VmHWM`).
pub fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// CPU ticks of every running backing-service process, summed per service.
fn infra_ticks() -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        let comm = comm.trim();
        if let Some((_, service)) = INFRA.iter().find(|(name, _)| *name == comm)
            && let Some(ticks) = cpu_ticks(pid)
        {
            *out.entry((*service).to_owned()).or_insert(0) += ticks;
        }
    }
    out
}

/// (busy, total) ticks of the whole machine from `/proc/stat`.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 5 {
        return None;
    }
    let total: u64 = v.iter().sum();
    let idle = v[3] + v[4];
    Some((total.saturating_sub(idle), total))
}

/// CPU counters at one instant.
pub struct CpuSnapshot {
    at: Instant,
    procs: Vec<(String, u32, Option<u64>)>,
    infra: BTreeMap<String, u64>,
    machine: Option<(u64, u64)>,
}

impl CpuSnapshot {
    /// Reads the counters of `procs` (role, pid), the backing services and the machine.
    pub fn take(procs: &[(String, u32)]) -> Self {
        Self {
            at: Instant::now(),
            procs: procs
                .iter()
                .map(|(role, pid)| (role.clone(), *pid, cpu_ticks(*pid)))
                .collect(),
            infra: infra_ticks(),
            machine: machine_ticks(),
        }
    }
}

/// One process's share of a run.
#[derive(Clone, Debug, Serialize)]
pub struct ProcUsage {
    pub role: String,
    pub pid: u32,
    /// CPU seconds spent in the measured window.
    pub cpu_secs: f64,
    /// Of one core over the window (200 % is both cores of this machine).
    pub cpu_pct: f64,
    /// Peak resident memory over the process's life (VmHWM).
    pub peak_rss_mb: f64,
}

/// What the measured window cost.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Usage {
    pub window_secs: f64,
    pub processes: Vec<ProcUsage>,
    /// CPU seconds of the backing services in the window.
    pub infrastructure_cpu_secs: BTreeMap<String, f64>,
    /// Busy share of all cores over the window.
    pub machine_busy_pct: Option<f64>,
}

impl Usage {
    /// CPU seconds a backing service spent in the window (0 when it was not seen).
    pub fn infra_secs(&self, service: &str) -> f64 {
        self.infrastructure_cpu_secs
            .get(service)
            .copied()
            .unwrap_or(0.0)
    }
}

/// The cost between two snapshots of the same processes; peaks are read now.
pub fn usage_between(a: &CpuSnapshot, b: &CpuSnapshot) -> Usage {
    let tck = clk_tck();
    let window = b.at.saturating_duration_since(a.at).as_secs_f64().max(1e-9);
    let processes = b
        .procs
        .iter()
        .map(|(role, pid, end)| {
            let begin = a
                .procs
                .iter()
                .find(|(_, p, _)| p == pid)
                .and_then(|(_, _, t)| *t);
            let ticks = match (begin, end) {
                (Some(s), Some(e)) => e.saturating_sub(s),
                _ => 0,
            };
            let cpu_secs = ticks as f64 / tck;
            ProcUsage {
                role: role.clone(),
                pid: *pid,
                cpu_secs,
                cpu_pct: cpu_secs / window * 100.0,
                peak_rss_mb: status_kb(*pid, "VmHWM").unwrap_or(0) as f64 / 1024.0,
            }
        })
        .collect();
    let infrastructure_cpu_secs = b
        .infra
        .iter()
        .map(|(name, end)| {
            let begin = a.infra.get(name).copied().unwrap_or(0);
            (name.clone(), end.saturating_sub(begin) as f64 / tck)
        })
        .collect();
    let machine_busy_pct = match (a.machine, b.machine) {
        (Some((b0, t0)), Some((b1, t1))) if t1 > t0 => {
            Some(b1.saturating_sub(b0) as f64 / (t1 - t0) as f64 * 100.0)
        }
        _ => None,
    };
    Usage {
        window_secs: window,
        processes,
        infrastructure_cpu_secs,
        machine_busy_pct,
    }
}

/// Resident memory of the dispatchers over the run.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RssTrend {
    pub samples: usize,
    pub first_mb: f64,
    pub last_mb: f64,
    pub max_mb: f64,
    /// (seconds since start, MB), one per second.
    pub series: Vec<(f64, f64)>,
}

/// Samples the summed VmRSS of some processes once a second until stopped.
pub struct RssSampler {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Vec<(f64, f64)>>,
}

impl RssSampler {
    pub fn start(pids: Vec<u32>, start: Instant) -> Self {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            // A run is bounded by --timeout; this only guards against a runaway loop.
            while samples.len() < 100_000 {
                tokio::select! {
                    _ = &mut stopped => break,
                    _ = tick.tick() => {
                        let kb: Option<u64> = pids.iter().map(|p| status_kb(*p, "VmRSS")).sum();
                        match kb {
                            Some(kb) => samples.push((start.elapsed().as_secs_f64(), kb as f64 / 1024.0)),
                            None => break,
                        }
                    }
                }
            }
            samples
        });
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Stops sampling and summarises the series.
    pub async fn finish(mut self) -> RssTrend {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let series = match tokio::time::timeout(Duration::from_secs(5), &mut self.task).await {
            Ok(Ok(series)) => series,
            _ => Vec::new(),
        };
        RssTrend {
            samples: series.len(),
            first_mb: series.first().map_or(0.0, |s| s.1),
            last_mb: series.last().map_or(0.0, |s| s.1),
            max_mb: series.iter().map(|s| s.1).fold(0.0, f64::max),
            series,
        }
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}
