//! What the generator reads from the system: a process's CPU time and memory from /proc,
//! the wall clock, and the fd limit.

use std::time::{SystemTime, UNIX_EPOCH};

/// Clock ticks per second of /proc/PID/stat's utime and stime (`CLK_TCK`, 100 on Linux).
const CLK_TCK: f64 = 100.0;

/// Raises the soft limit on open files to the hard limit; the new soft limit.
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Nanoseconds since the Unix epoch (the send and receive stamps; same machine).
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A process: `Some(pid)`, or this process for `None`.
fn proc_dir(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_string(),
    }
}

/// A process's CPU time so far, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcCpu {
    /// User time.
    pub user: f64,
    /// System (kernel) time.
    pub system: f64,
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    proc_cpu(pid).map(|c| c.user + c.system)
}

/// A process's user and system CPU time so far.
pub fn proc_cpu(pid: Option<u32>) -> Option<ProcCpu> {
    let stat = std::fs::read_to_string(format!("{}/stat", proc_dir(pid))).ok()?;
    parse_cpu(&stat)
}

/// utime and stime from the text of /proc/PID/stat, in seconds.
fn parse_cpu(stat: &str) -> Option<ProcCpu> {
    // The command name may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(ProcCpu {
        user: utime as f64 / CLK_TCK,
        system: stime as f64 / CLK_TCK,
    })
}

/// Seconds CPU `cpu` has spent in softirq so far (/proc/stat; on loopback that is
/// mostly the receive work of the packets sent from that core).
pub fn softirq_seconds(cpu: usize) -> Option<f64> {
    parse_softirq(&std::fs::read_to_string("/proc/stat").ok()?, cpu)
}

fn parse_softirq(stat: &str, cpu: usize) -> Option<f64> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))?;
    // cpuN user nice system idle iowait irq softirq steal ...
    let ticks: u64 = line.split_whitespace().nth(7)?.parse().ok()?;
    Some(ticks as f64 / CLK_TCK)
}

/// The CPU a process is pinned to, when its affinity is exactly one CPU.
pub fn pinned_cpu(pid: u32) -> Option<usize> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_pinned(&status)
}

fn parse_pinned(status: &str) -> Option<usize> {
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    // A single CPU is `N` (or `N-N`); a list or a real range is not pinned to one.
    let (a, b) = list.split_once('-').unwrap_or((list, list));
    let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
    (a == b).then_some(a)
}

/// A `Vm*` line of /proc/PID/status (e.g. `VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: Option<u32>, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("{}/status", proc_dir(pid))).ok()?;
    parse_status(&status, key)
}

fn parse_status(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_odd_command_name() {
        let stat = "42 (a b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 1 2 3";
        let cpu = parse_cpu(stat).unwrap();
        assert_eq!((cpu.user, cpu.system), (2.5, 0.5));
    }

    #[test]
    fn parses_softirq_of_one_cpu() {
        let stat =
            "cpu  9 9 9 9 9 9 99 0 0 0\ncpu0 1 2 3 4 5 6 250 8 0 0\ncpu1 1 2 3 4 5 6 70 8 0 0\n";
        assert_eq!(parse_softirq(stat, 0), Some(2.5));
        assert_eq!(parse_softirq(stat, 1), Some(0.7));
        assert_eq!(parse_softirq(stat, 2), None);
    }

    #[test]
    fn pinned_only_to_a_single_cpu() {
        let status = |list: &str| format!("Name:\tx\nCpus_allowed_list:\t{list}\n");
        assert_eq!(parse_pinned(&status("0")), Some(0));
        assert_eq!(parse_pinned(&status("3-3")), Some(3));
        assert_eq!(parse_pinned(&status("0-1")), None);
        assert_eq!(parse_pinned(&status("0,2")), None);
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\twspush\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_status(status, "VmRSS"), Some(10240));
        assert_eq!(parse_status(status, "VmHWM"), Some(20480));
        assert_eq!(parse_status(status, "VmSwap"), None);
    }

    #[test]
    fn reads_own_process() {
        assert!(cpu_seconds(None).is_some());
        assert!(status_kib(None, "VmRSS").unwrap() > 0);
    }
}
