//! Standard process metrics (`process_*`), read from the OS through sysinfo at scrape time, so that every scrape
//! sees current values without a background poller.

use std::fmt::Write;
use std::sync::Mutex;

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use super::metrics::{
    spec_of, write_header, PROCESS_CPU_SECONDS_TOTAL, PROCESS_MAX_FDS, PROCESS_OPEN_FDS, PROCESS_RESIDENT_MEMORY_BYTES,
    PROCESS_START_TIME_SECONDS, PROCESS_THREADS, PROCESS_VIRTUAL_MEMORY_BYTES,
};

/// Reads this process's figures on demand.
pub struct ProcessCollector {
    pid: Option<Pid>,
    system: Mutex<Option<System>>,
}

impl ProcessCollector {
    /// A collector for the current process. On a platform sysinfo does not support it renders nothing.
    pub fn new() -> Self {
        let pid = sysinfo::get_current_pid().ok();
        ProcessCollector {
            pid,
            system: Mutex::new(System::new().ok()),
        }
    }

    /// Appends the `process_*` families to `out` in Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let Some(pid) = self.pid else { return };
        let mut guard = self.system.lock().unwrap_or_else(|e| e.into_inner());
        let Some(system) = guard.as_mut() else { return };
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().with_cpu().with_tasks(),
        );
        let Some(process) = system.process(pid) else { return };
        let mut family = |name: &str, value: Option<f64>| {
            if let Some(value) = value {
                write_header(out, spec_of(name));
                let _ = writeln!(out, "{name} {value}");
            }
        };
        family(
            PROCESS_CPU_SECONDS_TOTAL,
            Some(process.accumulated_cpu_time() as f64 / 1000.0),
        );
        family(PROCESS_RESIDENT_MEMORY_BYTES, Some(process.memory() as f64));
        family(PROCESS_VIRTUAL_MEMORY_BYTES, Some(process.virtual_memory() as f64));
        family(PROCESS_OPEN_FDS, process.open_files().map(|n| n as f64));
        family(PROCESS_MAX_FDS, process.open_files_limit().map(|n| n as f64));
        family(PROCESS_START_TIME_SECONDS, Some(process.start_time() as f64));
        // sysinfo's task list holds the other threads, not the main one.
        family(PROCESS_THREADS, process.tasks().map(|t| (t.len() + 1) as f64));
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_process_family_on_linux() {
        let mut out = String::new();
        ProcessCollector::new().render(&mut out);
        for name in [
            PROCESS_CPU_SECONDS_TOTAL,
            PROCESS_RESIDENT_MEMORY_BYTES,
            PROCESS_VIRTUAL_MEMORY_BYTES,
            PROCESS_OPEN_FDS,
            PROCESS_MAX_FDS,
            PROCESS_START_TIME_SECONDS,
            PROCESS_THREADS,
        ] {
            let value: f64 = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("no {name} in\n{out}"))
                .parse()
                .unwrap();
            assert!(value >= 0.0, "{name} {value}");
        }
        assert!(out.contains("# TYPE process_cpu_seconds_total counter"));
    }
}
