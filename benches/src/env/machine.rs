//! What a run records about where and from what it ran (machine, git commit), and the CPU
//! time processes used, from the kernel's own accounting of each process.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Logical CPUs.
    pub cores: usize,
    /// Physical memory, GiB.
    pub memory_gib: f64,
    /// CPU model name.
    pub cpu_model: String,
    /// `uname -sr`.
    pub kernel: String,
}

impl Machine {
    /// Reads the running machine.
    pub fn current() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            memory_gib: (memory_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            cpu_model,
            kernel: command_line("uname", &["-sr"]).unwrap_or_else(|| "unknown".into()),
        }
    }
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The git commit of the source tree the tool was built from (`QUIVER_BENCH_COMMIT`
/// overrides), with `-dirty` when the tree had uncommitted changes; `unknown` outside a
/// work tree.
pub fn git_commit() -> String {
    if let Ok(c) = std::env::var("QUIVER_BENCH_COMMIT") {
        return c;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = dir.to_str().unwrap_or(".");
    let Some(head) = command_line("git", &["-C", dir, "rev-parse", "HEAD"]) else {
        return "unknown".into();
    };
    let dirty = command_line(
        "git",
        &["-C", dir, "status", "--porcelain", "--untracked-files=no"],
    )
    .is_some_and(|s| !s.is_empty());
    if dirty { format!("{head}-dirty") } else { head }
}

/// Clock ticks per second of /proc's CPU times.
fn clock_ticks() -> f64 {
    static TICKS: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        command_line("getconf", &["CLK_TCK"])
            .and_then(|s| s.parse().ok())
            .unwrap_or(100.0)
    })
}

/// `(ppid, utime + stime in ticks)` of `pid`, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(u32, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow its ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): ppid is field 4, utime 14, stime 15.
    let ppid = f.get(1)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((ppid, utime + stime))
}

/// `pid` and all its living descendants.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
                && let Some((ppid, _)) = stat(p)
            {
                parents.push((p, ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// CPU seconds (user + system) used so far by `pids` and their descendants.
pub fn cpu_seconds(pids: &[u32]) -> f64 {
    let ticks: u64 = pids
        .iter()
        .flat_map(|p| process_tree(*p))
        .filter_map(|p| stat(p).map(|(_, t)| t))
        .sum();
    ticks as f64 / clock_ticks()
}

/// Resident memory of `pid`, bytes.
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CPU seconds this thread has used (its own /proc entry, independent of the code
    /// under test).
    fn thread_cpu_seconds() -> f64 {
        let text = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let after = &text[text.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        // utime and stime: fields 14 and 15 of stat, 12 and 13 after the command.
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        ticks as f64 / clock_ticks()
    }

    #[test]
    fn a_busy_process_is_charged_its_cpu_time() {
        let me = std::process::id();
        let before = cpu_seconds(&[me]);
        // Spin until this thread has had 0.3 s of CPU (not of wall time: on a busy
        // machine the scheduler gives it less), within a generous wall deadline.
        let (t0, deadline) = (
            thread_cpu_seconds(),
            std::time::Instant::now() + std::time::Duration::from_secs(60),
        );
        let mut x = 0u64;
        while thread_cpu_seconds() - t0 < 0.3 && std::time::Instant::now() < deadline {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let used = cpu_seconds(&[me]) - before;
        assert!(used >= 0.25, "charged {used} s for 0.3 s of spinning");
        assert!(rss_bytes(me) > 0);
    }

    #[test]
    fn the_machine_is_described() {
        let m = Machine::current();
        assert!(m.cores >= 1 && m.memory_gib > 0.0);
    }
}
