//! CPU time and memory of the processes under test, read from /proc: a node process with its
//! descendants (the chaincode processes it launched), and the bench itself (the load
//! generator). Linux only; elsewhere nothing is measured and the report says so.

use std::collections::HashMap;
use std::path::Path;

/// Kernel clock ticks per second in /proc/PID/stat (`USER_HZ`): 100 on every Linux
/// architecture's user ABI, whatever the kernel's internal HZ.
const USER_HZ: f64 = 100.0;

/// One reading of one process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Reading {
    /// User plus system CPU seconds of all its threads since it started.
    pub cpu_seconds: f64,
    /// Resident memory now.
    pub rss_bytes: u64,
    /// The most it has been resident since it started (VmHWM).
    pub peak_rss_bytes: u64,
}

/// Reads one process; None when it is gone (or this is not Linux).
pub fn read(pid: u32) -> Option<Reading> {
    let proc_dir = Path::new("/proc").join(pid.to_string());
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    let fields = stat_fields(&stat)?;
    // After the command: state(3) ppid(4) ... utime(14) stime(15), numbered from 1.
    let ticks = |field: usize| fields.get(field - 3)?.parse::<u64>().ok();
    let cpu_seconds = (ticks(14)? + ticks(15)?) as f64 / USER_HZ;
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 1024)
            .unwrap_or(0)
    };
    Some(Reading {
        cpu_seconds,
        rss_bytes: kib("VmRSS:"),
        peak_rss_bytes: kib("VmHWM:"),
    })
}

/// The fields of /proc/PID/stat after the command name (which may hold spaces and parens).
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let after = stat.rfind(')')?;
    Some(stat[after + 1..].split_whitespace().collect())
}

/// Every process whose ancestors include `root` (not `root` itself).
pub fn descendants(root: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(ppid) = stat_fields(&stat)
            .and_then(|f| f.get(1).copied())
            .and_then(|p| p.parse::<u32>().ok())
        {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![root];
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            found.push(child);
            stack.push(child);
        }
    }
    found.sort_unstable();
    found
}

/// A process's command name (`comm`), for labelling.
pub fn name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| format!("pid {pid}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process_and_finds_a_child() {
        let me = std::process::id();
        let before = read(me).expect("this process is readable");
        assert!(before.rss_bytes > 0 && before.peak_rss_bytes >= before.rss_bytes);
        // Burn a little CPU so the counter moves by at least one tick.
        let started = std::time::Instant::now();
        let mut x = 0u64;
        while started.elapsed() < std::time::Duration::from_millis(60) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        let after = read(me).expect("this process is readable");
        assert!(
            after.cpu_seconds > before.cpu_seconds,
            "{before:?} {after:?}"
        );

        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        assert!(descendants(me).contains(&child.id()));
        assert_eq!(name(child.id()), "sleep");
        child.kill().expect("kill sleep");
        child.wait().expect("reap sleep");
        assert!(read(child.id()).is_none(), "a reaped process is gone");
    }

    #[test]
    fn command_names_with_spaces_and_parens_are_skipped() {
        let stat = "42 (a (b) c) S 7 42 42 0 -1 4194560 100 0 0 0 250 50 0 0";
        let fields = stat_fields(stat).expect("parsed");
        assert_eq!(fields[0], "S");
        assert_eq!(fields[1], "7");
        assert_eq!(fields[14 - 3], "250");
        assert_eq!(fields[15 - 3], "50");
    }
}
