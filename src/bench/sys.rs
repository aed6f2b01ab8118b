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

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("{}/stat", proc_dir(pid))).ok()?;
    parse_cpu(&stat)
}

/// utime + stime from the text of /proc/PID/stat, in seconds.
fn parse_cpu(stat: &str) -> Option<f64> {
    // The command name may hold spaces and parentheses: fields restart after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / CLK_TCK)
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
        assert_eq!(parse_cpu(stat), Some(3.0));
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
