//! What the processes of a system cost and hold: CPU time and limits from `/proc`, figures
//! from a service's `/metrics`.

use std::net::SocketAddr;
use std::time::Instant;

/// CPU seconds (user + system) process `pid` has used so far; 0 once it is gone.
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// CPU use of the processes of the system, between two points in time.
pub struct CpuMeter {
    processes: Vec<(String, u32)>,
    start: Vec<f64>,
    wall: Instant,
}

impl CpuMeter {
    /// Starts measuring `processes` (name, pid) now.
    pub fn start(processes: &[(impl AsRef<str>, u32)]) -> Self {
        Self {
            processes: processes
                .iter()
                .map(|(name, pid)| (name.as_ref().to_owned(), *pid))
                .collect(),
            start: processes.iter().map(|(_, pid)| cpu_seconds(*pid)).collect(),
            wall: Instant::now(),
        }
    }

    /// CPU seconds the process called `name` used over the period.
    pub fn used(&self, name: &str) -> f64 {
        self.processes
            .iter()
            .zip(&self.start)
            .find(|((n, _), _)| *n == name)
            .map_or(0.0, |((_, pid), start)| cpu_seconds(*pid) - start)
    }

    /// One line: each process's share of the two cores over the period.
    pub fn report(&self) -> String {
        let wall = self.wall.elapsed().as_secs_f64();
        let parts: Vec<String> = self
            .processes
            .iter()
            .zip(&self.start)
            .map(|((name, pid), start)| {
                format!("{name} {:.0}%", (cpu_seconds(*pid) - start) / wall * 100.0)
            })
            .collect();
        format!("  CPU (of 200%): {}", parts.join(", "))
    }
}

/// A benchmark's numeric setting from the environment, or `default`.
pub fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// This process's soft limit on open files (children inherit it).
pub fn fd_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|limits| {
            limits
                .lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(1024)
}

/// The first sample of counter or gauge `name` on the `/metrics` of `http` (0 when it does
/// not answer).
pub async fn metric(http: SocketAddr, name: &str) -> u64 {
    wasmbed_test_support::http_get(http, "/metrics")
        .await
        .1
        .lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
