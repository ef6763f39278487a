//! Output: every run writes JSON (stable schemas `quiver-bench.<kind>.v1`), a Markdown
//! report and SVG plots, and records its parameters, the machine and the git commit.

pub mod ingest;
pub mod lookup;
pub mod plot;

use std::path::Path;
use std::time::{Instant, SystemTime};

use serde::Serialize;

use crate::env::Machine;
use crate::env::machine::git_commit;

/// Facts of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    /// `quiver-bench` and its version.
    pub tool: String,
    /// Git commit of the source (`-dirty` with uncommitted changes).
    pub commit: String,
    /// The command line.
    pub command: Vec<String>,
    /// Start, RFC 3339.
    pub started_at: String,
    /// Wall time, s.
    pub duration_secs: f64,
    /// The machine.
    pub machine: Machine,
    /// The load generator runs on the same machine as every server, sharing its cores.
    pub client_shares_machine: bool,
    #[serde(skip)]
    clock: Option<Instant>,
}

impl RunInfo {
    /// Notes the start of a run.
    pub fn start() -> RunInfo {
        RunInfo {
            tool: format!("quiver-bench {}", env!("CARGO_PKG_VERSION")),
            commit: git_commit(),
            command: std::env::args().collect(),
            started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            duration_secs: 0.0,
            machine: Machine::current(),
            client_shares_machine: true,
            clock: Some(Instant::now()),
        }
    }

    /// Notes the end.
    pub fn finish(mut self) -> RunInfo {
        self.duration_secs = self.clock.map_or(0.0, |c| c.elapsed().as_secs_f64());
        self
    }

    /// The Markdown lines every report starts with.
    pub fn markdown(&self) -> String {
        let m = &self.machine;
        format!(
            "- commit `{}`, {}; started {} ({:.0} s)\n- machine: {} cores ({}), {} GiB, {}\n- command: `{}`\n- the load generator ran on the same machine, sharing its {} cores with every server it measured\n",
            self.commit,
            self.tool,
            self.started_at,
            self.duration_secs,
            m.cores,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            self.command.join(" "),
            m.cores
        )
    }
}

/// Writes `value` as pretty JSON to `dir/name`.
///
/// # Errors
/// When the file cannot be written.
pub fn write_json(dir: &Path, name: &str, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(name), serde_json::to_string_pretty(value)? + "\n")?;
    Ok(())
}

/// Formats an optional number with `digits` decimals, `–` when absent.
pub fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

/// Thousands separators for a count.
pub fn count(v: f64) -> String {
    let n = v.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_grouped() {
        assert_eq!(count(1234567.4), "1,234,567");
        assert_eq!(count(999.0), "999");
        assert_eq!(count(-1000.0), "-1,000");
        assert_eq!(opt(None, 1), "–");
        assert_eq!(opt(Some(1.25), 1), "1.2");
    }
}
