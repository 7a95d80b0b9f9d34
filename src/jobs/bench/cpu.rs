//! Where the machine's CPU went during a measurement (Linux `/proc`): the
//! CPU time of named groups of processes and of the whole machine between
//! two readings, as cores used on average. On a shared machine this tells
//! the system under test from everyone else's work.

use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

/// Clock ticks per second of `/proc` times (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_s() -> f64 {
    // SAFETY: sysconf only reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime of a process, in ticks (children not included).
pub fn process_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of stat(5) are the 12th and 13th after the command.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Every process whose command name (`/proc/PID/comm`) is `name`.
pub fn pids_named(name: &str) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name))
        .collect()
}

/// Busy ticks of the whole machine (everything but idle and iowait) and the CPU count.
fn machine_ticks() -> Option<(u64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy = v.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, x)| *x).sum();
    let cpus = stat.lines().filter(|l| l.starts_with("cpu") && !l.starts_with("cpu ")).count();
    Some((busy, cpus))
}

/// Groups of processes to account for, by label.
#[derive(Clone, Debug, Default)]
pub struct Groups {
    groups: BTreeMap<String, Vec<u32>>,
}

impl Groups {
    pub fn add(&mut self, label: &str, pids: impl IntoIterator<Item = u32>) {
        self.groups.entry(label.to_owned()).or_default().extend(pids);
    }

    fn read(&self) -> BTreeMap<String, u64> {
        self.groups.iter().map(|(k, pids)| (k.clone(), pids.iter().filter_map(|p| process_ticks(*p)).sum())).collect()
    }
}

/// A first reading.
pub struct CpuMeter {
    groups: Groups,
    at: Instant,
    start: BTreeMap<String, u64>,
    machine: Option<(u64, usize)>,
}

/// Cores used on average between two readings.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CpuUse {
    pub seconds: f64,
    /// Cores of the machine.
    pub cpus: usize,
    /// Per group, cores used (1.0 = one core busy the whole time).
    pub cores: BTreeMap<String, f64>,
    /// Every process of the machine together.
    pub machine_cores: f64,
    /// The machine minus the groups: other work on a shared machine.
    pub other_cores: f64,
}

impl CpuMeter {
    pub fn start(groups: Groups) -> CpuMeter {
        let start = groups.read();
        CpuMeter { groups, at: Instant::now(), start, machine: machine_ticks() }
    }

    pub fn read(&self) -> CpuUse {
        let secs = self.at.elapsed().as_secs_f64().max(1e-9);
        let tps = ticks_per_s();
        let now = self.groups.read();
        let round = |x: f64| (x * 100.0).round() / 100.0;
        let mut cores = BTreeMap::new();
        let mut ours = 0.0;
        for (k, v) in &now {
            let c = v.saturating_sub(self.start.get(k).copied().unwrap_or(0)) as f64 / tps / secs;
            ours += c;
            cores.insert(k.clone(), round(c));
        }
        let (machine_cores, cpus) = match (self.machine, machine_ticks()) {
            (Some((b0, n)), Some((b1, _))) => (b1.saturating_sub(b0) as f64 / tps / secs, n),
            _ => (0.0, 0),
        };
        CpuUse {
            seconds: round(secs),
            cpus,
            cores,
            machine_cores: round(machine_cores),
            other_cores: round((machine_cores - ours).max(0.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_and_uses_time() {
        let me = std::process::id();
        let t0 = process_ticks(me).unwrap();
        let mut g = Groups::default();
        g.add("me", [me]);
        let m = CpuMeter::start(g);
        let until = Instant::now() + std::time::Duration::from_millis(100);
        let mut x = 0u64;
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(process_ticks(me).unwrap() >= t0);
        let u = m.read();
        assert!(u.cores["me"] > 0.0, "{u:?}");
        assert!(u.cpus >= 1);
    }
}
