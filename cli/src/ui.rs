//! Output: one line per step on stderr, spinners only on a terminal, data on stdout.

use std::{
    io::IsTerminal,
    time::{Duration, Instant},
};

use indicatif::{ProgressBar, ProgressStyle};

/// A line on stderr that starts with the local time, for what runs for long (the scheduler).
pub fn log(message: &str) {
    eprintln!(
        "{} {message}",
        chrono::Local::now().format("%Y-%m-%dT%H:%M:%S%:z")
    );
}

pub struct Ui {
    quiet: bool,
    tty: bool,
    started: Instant,
}

impl Ui {
    pub fn new(quiet: bool) -> Self {
        Self {
            quiet,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    /// `==> message`
    pub fn step(&self, message: &str) {
        if !self.quiet {
            eprintln!("{} {message}", console::style("==>").bold().cyan());
        }
    }

    /// An indented detail line under a step.
    pub fn detail(&self, message: &str) {
        if !self.quiet {
            eprintln!("    {message}");
        }
    }

    /// A spinner on a terminal; hidden otherwise (and with --quiet).
    pub fn spinner(&self, message: &str) -> ProgressBar {
        if self.quiet || !self.tty {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("    {spinner} {msg} ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(message.to_owned());
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    }

    /// A byte counter with its rate, on a terminal; hidden otherwise (and with --quiet).
    pub fn bytes(&self, message: &str) -> ProgressBar {
        let bar = self.spinner(message);
        bar.set_style(
            ProgressStyle::with_template(
                "    {spinner} {msg}: {bytes} ({bytes_per_sec}, {elapsed})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar
    }

    /// `done in 12.4s`
    pub fn done(&self) {
        if !self.quiet {
            eprintln!("done in {:.1}s", self.started.elapsed().as_secs_f64());
        }
    }
}
