//! Live progress of the one-shot commands (`reconcile`, `detect`, `plan`, `trust`,
//! `rollback`), and the log writer that keeps log lines and progress apart.
//!
//! On a terminal, a [`Board`] draws one line per server in flight with its current step
//! (connecting, detecting, component N/M name) above a bar with done / failed / remaining
//! (indicatif). Every log line goes through [`LogWriter`], which clears the board, writes
//! the line and redraws the board, so the two never share a screen line. Without a
//! terminal, a board prints one plain line per server when it finishes.
//!
//! Code deep in a pass reports its steps with [`emit`]: the server's task runs inside
//! [`Board::scope`], which puts a task-local sink in place, so neither the pass nor the
//! SSH transport needs to know whether anyone is watching.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A step of one server's work, as the board shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Waiting for a dependency (`dependsOn`) to finish.
    Waiting(String),
    /// Opening the SSH connection.
    Connecting,
    /// A connection is up; the first thing run on it is the hardware probe.
    Connected,
    /// Component `index` (from 1) of `total`, in `mode` (`apply`, `check`, `remove`).
    Component {
        /// Its position in the pass, from 1.
        index: usize,
        /// How many the pass has.
        total: usize,
        /// Its name.
        name: String,
        /// `apply`, `check` or `remove`.
        mode: &'static str,
    },
    /// Free text (`fetching the host key`).
    Doing(String),
}

type SinkFn = Arc<dyn Fn(&str, Event) + Send + Sync>;

/// Where a server's steps go (see [`Board::scope`]).
#[derive(Clone)]
pub struct Sink {
    server: Arc<str>,
    send: SinkFn,
}

tokio::task_local! {
    static SINK: Sink;
}

/// Reports a step of the server whose task this is (see [`Board::scope`]); nothing when no
/// board is watching.
pub fn emit(event: Event) {
    let _ = SINK.try_with(|sink| (sink.send)(&sink.server, event));
}

/// The bar log lines are printed above, while a board is on screen.
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

fn active() -> MutexGuard<'static, Option<ProgressBar>> {
    ACTIVE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Writes `bytes` to stderr, clearing the board around it when one is on screen.
fn write_stderr(bytes: &[u8]) {
    let bar = active().clone();
    let write = || {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(bytes);
        let _ = err.flush();
    };
    match bar {
        Some(bar) => bar.suspend(write),
        None => write(),
    }
}

/// Prints a line on stderr without tearing the board (`eprintln!` for the one-shot commands).
pub fn eprintln(text: impl std::fmt::Display) {
    write_stderr(format!("{text}\n").as_bytes());
}

/// The tracing writer: each event is buffered and written at once, above the board.
#[derive(Default)]
pub struct LogWriter {
    buf: Vec<u8>,
}

impl std::io::Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            write_stderr(&self.buf);
        }
    }
}

/// Makes a [`LogWriter`] per event, for `tracing_subscriber::fmt().with_writer`.
pub fn log_writer() -> LogWriter {
    LogWriter::default()
}

/// Whether log lines on stderr get colours: only on a terminal, and never under
/// `NO_COLOR` (any non-empty value, as no-color.org says).
pub fn stderr_colours(no_color: Option<std::ffi::OsString>) -> bool {
    std::io::stderr().is_terminal() && no_color.is_none_or(|v| v.is_empty())
}

struct State {
    verb: &'static str,
    total: usize,
    done: usize,
    failed: usize,
    /// Servers in flight, in the order they started: sequence → (name, step).
    flight: BTreeMap<u64, (String, String)>,
    seq: u64,
    started: Instant,
}

impl State {
    fn slot(&mut self, server: &str) -> u64 {
        if let Some((k, _)) = self.flight.iter().find(|(_, (n, _))| n == server) {
            return *k;
        }
        self.seq += 1;
        self.flight.insert(self.seq, (server.to_owned(), String::new()));
        self.seq
    }

    fn set(&mut self, server: &str, event: Event) {
        let key = self.slot(server);
        let Some((_, step)) = self.flight.get_mut(&key) else {
            return;
        };
        *step = match event {
            Event::Waiting(dep) => format!("waiting for {dep}"),
            Event::Connecting => "connecting".to_owned(),
            // Only the first connection of a pass is followed by detection.
            Event::Connected if step == "connecting" => "detecting hardware".to_owned(),
            Event::Connected => return,
            Event::Component {
                index,
                total,
                name,
                mode,
            } => format!("component {index}/{total} {name} ({mode})"),
            Event::Doing(text) => text,
        };
    }

    /// The board's text: a line per server in flight (as many as fit), then the bar line.
    fn render(&self, width: usize, height: usize) -> String {
        let name_width = self.flight.values().map(|(n, _)| n.len()).max().unwrap_or(0).min(40);
        let room = height.saturating_sub(2).max(1);
        let mut lines: Vec<String> = Vec::new();
        let shown = if self.flight.len() > room {
            room - 1
        } else {
            self.flight.len()
        };
        for (name, step) in self.flight.values().take(shown) {
            lines.push(fit(&format!("  {name:<name_width$}  {step}"), width));
        }
        if self.flight.len() > shown {
            lines.push(format!("  … and {} more in flight", self.flight.len() - shown));
        }
        if self.total == 0 {
            // Not known in advance (a pass handed to the daemon).
            let line = format!(
                "{}: {} done, {} failed, {:.0}s",
                self.verb,
                self.done,
                self.failed,
                self.started.elapsed().as_secs_f64()
            );
            lines.push(fit(&line, width));
            return lines.join("\n");
        }
        let remaining = self.total.saturating_sub(self.done + self.failed);
        let bar_width = 30usize;
        let filled = ((self.done + self.failed) * bar_width / self.total).min(bar_width);
        let bar = format!(
            "{} [{}{}] {}/{} done, {} failed, {} remaining, {:.0}s",
            self.verb,
            "#".repeat(filled),
            "-".repeat(bar_width - filled),
            self.done,
            self.total,
            self.failed,
            remaining,
            self.started.elapsed().as_secs_f64()
        );
        lines.push(fit(&bar, width));
        lines.join("\n")
    }
}

/// Cuts `line` to `width` columns (a wrapped line would break the redraw).
fn fit(line: &str, width: usize) -> String {
    if line.chars().count() <= width {
        return line.to_owned();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// The progress of one command over many servers.
#[derive(Clone)]
pub struct Board {
    state: Arc<Mutex<State>>,
    /// `None` without a terminal: plain lines instead.
    bar: Option<Arc<Live>>,
}

impl Board {
    /// A board for `total` servers; live on a terminal (stderr), plain lines otherwise.
    /// `verb` names the work (`reconciling`).
    pub fn new(verb: &'static str, total: usize) -> Board {
        Board::with_terminal(verb, total, std::io::stderr().is_terminal())
    }

    /// A board drawn only when `live`.
    pub fn with_terminal(verb: &'static str, total: usize, live: bool) -> Board {
        let state = Arc::new(Mutex::new(State {
            verb,
            total,
            done: 0,
            failed: 0,
            flight: BTreeMap::new(),
            seq: 0,
            started: Instant::now(),
        }));
        let bar = live.then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr_with_hz(10));
            bar.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
            *active() = Some(bar.clone());
            Arc::new(Live(bar))
        });
        let board = Board { state, bar };
        board.redraw();
        if let Some(Live(bar)) = board.bar.as_deref() {
            // Keeps the elapsed time moving while every server waits on a slow script.
            bar.enable_steady_tick(Duration::from_millis(500));
        }
        board
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn redraw(&self) {
        if let Some(Live(bar)) = self.bar.as_deref() {
            let (height, width) = console::Term::stderr().size();
            let text = self
                .state()
                .render(usize::from(width).max(20), usize::from(height).max(4));
            bar.set_message(text);
        }
    }

    /// Shows `server`'s current step.
    pub fn update(&self, server: &str, event: Event) {
        if self.bar.is_none() {
            return;
        }
        self.state().set(server, event);
        self.redraw();
    }

    /// `server` is done (`ok` or failed); `line` says how, for the plain output.
    pub fn finish(&self, server: &str, ok: bool, line: &str) {
        let counted = {
            let mut state = self.state();
            if let Some(key) = state.flight.iter().find(|(_, (n, _))| n == server).map(|(k, _)| *k) {
                state.flight.remove(&key);
            }
            if ok {
                state.done += 1;
            } else {
                state.failed += 1;
            }
            (state.done + state.failed, state.total, state.verb)
        };
        match &self.bar {
            Some(_) => self.redraw(),
            None if counted.1 == 0 => eprintln(format!("{}: {server} {line} [{}]", counted.2, counted.0)),
            None => eprintln(format!("{}: {server} {line} [{}/{}]", counted.2, counted.0, counted.1)),
        }
    }

    /// `fut` (one server's work) with its steps reported to this board.
    pub fn scope<F: std::future::Future>(
        &self,
        server: &str,
        fut: F,
    ) -> tokio::task::futures::TaskLocalFuture<Sink, F> {
        let board = self.clone();
        let sink = Sink {
            server: Arc::from(server),
            send: Arc::new(move |server: &str, event| board.update(server, event)),
        };
        SINK.scope(sink, fut)
    }

    /// Runs `f` with the board off the screen (for output on stdout or a question).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match self.bar.as_deref() {
            Some(Live(bar)) => bar.suspend(f),
            None => f(),
        }
    }

    /// Takes the board off the screen; later log lines go straight to stderr.
    pub fn clear(&self) {
        if let Some(Live(bar)) = self.bar.as_deref() {
            let mut active = active();
            bar.finish_and_clear();
            *active = None;
        }
    }
}

/// The bar of a live board; the last clone of the board gone, it is cleared and log lines
/// go straight to stderr again (also when a command returns early with an error).
struct Live(ProgressBar);

impl Drop for Live {
    fn drop(&mut self) {
        let mut active = active();
        self.0.finish_and_clear();
        *active = None;
    }
}

/// A text kept on screen below the log lines and redrawn in place when it changes (the
/// demo's fleet table); printed anew each time without a terminal.
pub struct Pinned {
    bar: Option<ProgressBar>,
    last: String,
}

impl Pinned {
    /// Live on a terminal (stdout), plain otherwise.
    pub fn new() -> Pinned {
        let bar = std::io::stdout().is_terminal().then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout_with_hz(4));
            bar.set_style(ProgressStyle::with_template("{msg}").unwrap_or_else(|_| ProgressStyle::default_bar()));
            *active() = Some(bar.clone());
            bar
        });
        Pinned {
            bar,
            last: String::new(),
        }
    }

    /// Shows `text`; returns false when it is what is already shown (nothing is drawn).
    pub fn show(&mut self, text: &str) -> bool {
        if text == self.last {
            return false;
        }
        text.clone_into(&mut self.last);
        match &self.bar {
            Some(bar) => bar.set_message(text.trim_end().to_owned()),
            None => println!("{text}"),
        }
        true
    }
}

impl Default for Pinned {
    fn default() -> Self {
        Pinned::new()
    }
}

impl Drop for Pinned {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            let mut active = active();
            // Left on screen: the last table stays readable after the demo stops.
            bar.finish();
            *active = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(total: usize) -> State {
        State {
            verb: "reconciling",
            total,
            done: 0,
            failed: 0,
            flight: BTreeMap::new(),
            seq: 0,
            started: Instant::now(),
        }
    }

    #[test]
    fn the_board_shows_each_server_in_flight_and_the_counts() {
        let mut s = state(3);
        s.set("web-1", Event::Connecting);
        s.set("db-1", Event::Connecting);
        s.set("web-1", Event::Connected);
        s.set("db-1", Event::Connected);
        s.set(
            "db-1",
            Event::Component {
                index: 2,
                total: 3,
                name: "mariadb".into(),
                mode: "apply",
            },
        );
        // A later connection (a script on a channel of its own) is not a detection.
        s.set("db-1", Event::Connected);
        s.done = 1;
        let text = s.render(80, 24);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "  web-1  detecting hardware");
        assert_eq!(lines[1], "  db-1   component 2/3 mariadb (apply)");
        assert!(
            lines[2].starts_with("reconciling [##########--------------------] 1/3 done, 0 failed, 2 remaining"),
            "{text}"
        );
    }

    #[test]
    fn a_board_taller_than_the_terminal_says_how_many_are_hidden_and_never_wraps() {
        let mut s = state(50);
        for i in 0..50 {
            s.set(&format!("server-{i:02}"), Event::Doing("x".repeat(200)));
        }
        let text = s.render(60, 10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 9, "{text}");
        assert_eq!(lines[7], "  … and 43 more in flight");
        assert!(lines.iter().all(|l| l.chars().count() <= 60), "{text}");
    }

    #[test]
    fn a_pinned_text_is_drawn_only_when_it_changed() {
        let mut pinned = Pinned {
            bar: None,
            last: String::new(),
        };
        assert!(pinned.show("NAME  READY\nweb-1 True\n"));
        assert!(
            !pinned.show("NAME  READY\nweb-1 True\n"),
            "the same table is not drawn again"
        );
        assert!(pinned.show("NAME  READY\nweb-1 False\n"));
    }

    #[test]
    fn colours_only_without_no_color() {
        // The test's stderr is not a terminal under cargo test's capture or CI.
        if !std::io::stderr().is_terminal() {
            assert!(!stderr_colours(None));
        }
        assert!(!stderr_colours(Some("1".into())));
    }
}
