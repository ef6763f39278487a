//! A progress bar on stderr for long runs: `label [#####.....] done/total elapsed`,
//! redrawn at most ten times a second, only when stderr is a terminal (logs stay clean).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One bar.
pub struct Progress {
    label: String,
    total: u64,
    started: Instant,
    last: Mutex<Option<Instant>>,
    tty: bool,
}

impl Progress {
    /// Starts a bar of `total` units.
    pub fn new(label: &str, total: u64) -> Progress {
        Progress {
            label: label.to_string(),
            total: total.max(1),
            started: Instant::now(),
            last: Mutex::new(None),
            tty: std::io::stderr().is_terminal(),
        }
    }

    /// The bar's text at `done` units.
    pub fn render(&self, done: u64) -> String {
        const WIDTH: u64 = 30;
        let done = done.min(self.total);
        let filled = (done * WIDTH / self.total) as usize;
        format!(
            "{:<28} [{}{}] {done}/{} {:.0}s",
            self.label,
            "#".repeat(filled),
            ".".repeat(WIDTH as usize - filled),
            self.total,
            self.started.elapsed().as_secs_f64()
        )
    }

    /// Moves the bar to `done` units.
    pub fn set(&self, done: u64) {
        if !self.tty {
            return;
        }
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.is_some_and(|t| t.elapsed() < Duration::from_millis(100)) && done < self.total {
            return;
        }
        *last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}", self.render(done));
        let _ = err.flush();
    }

    /// Completes the bar (one line, also when not a terminal).
    pub fn finish(&self) {
        let line = self.render(self.total);
        if self.tty {
            eprintln!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_in_proportion() {
        let p = Progress::new("x", 10);
        assert!(
            p.render(5)
                .contains(&format!("[{}{}] 5/10", "#".repeat(15), ".".repeat(15)))
        );
        assert!(p.render(99).contains("10/10"));
    }
}
