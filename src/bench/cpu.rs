//! The server's CPU over a measuring window, split the way loopback needs it (issue #18
//! item 1): its user and system time, and the softirq time on the core it is pinned to.
//!
//! On loopback the kernel's receive work for the generator's sockets runs in softirq on
//! the sending core, i.e. the server's. With tick-based CPU accounting (no
//! `CONFIG_IRQ_TIME_ACCOUNTING`) that time is also charged to the process it interrupted,
//! the server, so "per server CPU-second" flatters a server that makes fewer, larger
//! writes. Every figure is therefore given with and without the softirq time.

use super::sys::{self, ProcCpu};
use super::{round, si, Report, Target};

/// How this kernel accounts softirq time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SoftirqAccounting {
    /// Tick-based accounting (no `CONFIG_IRQ_TIME_ACCOUNTING`): softirq time is also in
    /// the interrupted process's system time.
    Charged,
    /// `CONFIG_IRQ_TIME_ACCOUNTING=y`: softirq time is counted apart from processes.
    Separate,
}

/// A measuring window's start.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pid: Option<u32>,
    core: Option<usize>,
    accounting: SoftirqAccounting,
    proc_before: Option<ProcCpu>,
    softirq_before: Option<f64>,
}

/// The server's CPU over a window, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Split {
    /// The server process's user time.
    pub user: f64,
    /// The server process's system time.
    pub system: f64,
    /// Softirq time on the server's core (`None` when the core is unknown).
    pub softirq: Option<f64>,
    /// The core, if the server is pinned to one (or `--server-cpu` says).
    pub core: Option<usize>,
    /// Whether `system` already holds the softirq time.
    pub charged: bool,
}

impl Window {
    /// Starts a window on the server of `target` (nothing without `--server-pid`).
    pub fn start(target: &Target) -> Window {
        let pid = target.server_pid;
        let core = target.server_cpu.or_else(|| pid.and_then(sys::pinned_cpu));
        Window {
            pid,
            core,
            accounting: target.softirq_accounting,
            proc_before: pid.and_then(|p| sys::proc_cpu(Some(p))),
            softirq_before: core.and_then(sys::softirq_seconds),
        }
    }

    /// The CPU used since the start; `None` without a server pid.
    pub fn stop(&self) -> Option<Split> {
        let after = self.pid.and_then(|p| sys::proc_cpu(Some(p)))?;
        let before = self.proc_before?;
        let softirq = self
            .core
            .and_then(sys::softirq_seconds)
            .zip(self.softirq_before)
            .map(|(a, b)| (a - b).max(0.0));
        Some(Split {
            user: after.user - before.user,
            system: after.system - before.system,
            softirq,
            core: self.core,
            charged: self.accounting == SoftirqAccounting::Charged,
        })
    }
}

impl Split {
    /// Server CPU with the softirq time on its core (the server's time, plus the softirq
    /// time when the kernel did not already charge it to the server).
    pub fn with_softirq(&self) -> f64 {
        let own = self.user + self.system;
        match (self.charged, self.softirq) {
            (false, Some(s)) => own + s,
            _ => own,
        }
    }

    /// Server CPU without the softirq time on its core (`None` when the core is unknown).
    pub fn without_softirq(&self) -> Option<f64> {
        let own = self.user + self.system;
        let s = self.softirq?;
        Some(if self.charged {
            (own - s).max(0.0)
        } else {
            own
        })
    }

    /// Adds the split and `work` per server CPU-second (with and without softirq) to the
    /// report; `what` names the work (`deliveries`, `round_trips`).
    pub fn report(&self, r: &mut Report, work: u64, what: &str) {
        let per = |cpu: f64| (cpu > 0.0).then(|| work as f64 / cpu);
        let with = per(self.with_softirq());
        let without = self.without_softirq().and_then(per);
        r.row(
            "server CPU",
            format!(
                "{:.2} s user, {:.2} s system, softirq on its core {}",
                self.user,
                self.system,
                match (self.softirq, self.core) {
                    (Some(s), Some(c)) => format!(
                        "{s:.2} s (CPU {c}; {})",
                        if self.charged {
                            "inside system"
                        } else {
                            "not in the process"
                        }
                    ),
                    _ => "unknown (the server is not pinned to one CPU: --server-cpu)".into(),
                }
            ),
        );
        let label = what.replace('_', " ");
        r.row(
            &format!("{label} per server CPU-s"),
            format!(
                "{} with softirq, {} without",
                with.map_or("-".into(), si),
                without.map_or("-".into(), si)
            ),
        );
        r.field("server_cpu_s", round(self.with_softirq(), 2));
        r.field("server_user_s", round(self.user, 2));
        r.field("server_system_s", round(self.system, 2));
        r.field("server_core", self.core.map(|c| c as u64));
        r.field("server_core_softirq_s", self.softirq.map(|s| round(s, 2)));
        r.field("softirq_charged_to_server", self.charged);
        r.field(
            "server_cpu_without_softirq_s",
            self.without_softirq().map(|c| round(c, 2)),
        );
        r.field(
            &format!("{what}_per_server_cpu_s"),
            with.map(|c| round(c, 0)),
        );
        r.field(
            &format!("{what}_per_server_cpu_s_without_softirq"),
            without.map(|c| round(c, 0)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softirq_is_taken_out_or_added_by_the_accounting() {
        let charged = Split {
            user: 1.0,
            system: 2.0,
            softirq: Some(0.5),
            core: Some(0),
            charged: true,
        };
        assert_eq!(charged.with_softirq(), 3.0);
        assert_eq!(charged.without_softirq(), Some(2.5));
        let separate = Split {
            charged: false,
            ..charged
        };
        assert_eq!(separate.with_softirq(), 3.5);
        assert_eq!(separate.without_softirq(), Some(3.0));
        let unknown = Split {
            softirq: None,
            ..charged
        };
        assert_eq!(unknown.with_softirq(), 3.0);
        assert_eq!(unknown.without_softirq(), None);
    }
}
