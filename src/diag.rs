//! Diagnostics: one finding about one place in one file, and the renderers that print
//! them for people (`human`), machines (`json`) and GitHub Actions (`github`).
//! Findings are data, never `Err`; this module never decides what is wrong.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;

/// How bad a finding is. Only errors make `chom validate` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Blocks the resource.
    Error,
    /// Worth a look; does not block anything.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One problem at one place: file, 1-based line and column, and the JSON pointer of the
/// offending node when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// A stable kebab-case code (`unknown-role`), for tests, docs and suppression.
    pub code: &'static str,
    /// The file, as given or found under the inventory.
    pub file: PathBuf,
    /// 1-based line; 0 when the finding is about the whole file and it has no lines.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// JSON pointer of the node inside the document (`/spec/ssh/port`); empty for the file.
    pub pointer: String,
    /// What is wrong, in one sentence.
    pub message: String,
    /// What to do about it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
}

impl Diagnostic {
    /// An error at `file:line:column`.
    pub fn error(code: &'static str, file: &Path, at: Position, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            file: file.to_path_buf(),
            line: at.line,
            column: at.column,
            pointer: String::new(),
            message: message.into(),
            help: None,
        }
    }

    /// A warning at `file:line:column`.
    pub fn warning(code: &'static str, file: &Path, at: Position, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, file, at, message)
        }
    }

    /// Adds the JSON pointer of the node the finding is about.
    pub fn pointer(mut self, pointer: impl Into<String>) -> Self {
        self.pointer = pointer.into();
        self
    }

    /// Adds a line saying what to do.
    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// True for errors.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A 1-based line and column in a file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

impl Position {
    /// The start of a file.
    pub const START: Position = Position { line: 1, column: 1 };
}

/// Sorts findings by file, then position, then code, so output is stable and reads top
/// to bottom.
pub fn sort(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, a.column, a.code, &a.message).cmp(&(&b.file, b.line, b.column, b.code, &b.message))
    });
}

/// The output formats of `chom validate --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `path:line:col: error[code]: message`, the source line and a help line.
    Human,
    /// A JSON array of findings.
    Json,
    /// GitHub Actions workflow commands (`::error file=…`), shown inline on pull requests.
    Github,
}

/// A file's text for the snippet lines of the human format: read as every file is
/// ([`crate::fsread`]), so a finding about a FIFO or device never hangs the rendering.
pub fn source(path: &Path) -> Option<String> {
    crate::fsread::read_to_string(path, crate::fsread::cap::SECRETS).ok()
}

/// Renders findings in `format`. `source` returns a file's text for the snippet lines
/// of the human format (absent for files that could not be read).
pub fn render(diagnostics: &[Diagnostic], format: Format, source: &dyn Fn(&Path) -> Option<String>) -> String {
    match format {
        Format::Human => render_human(diagnostics, source),
        Format::Json => {
            let mut out = serde_json::to_string_pretty(diagnostics).unwrap_or_else(|_| "[]".to_owned());
            out.push('\n');
            out
        }
        Format::Github => render_github(diagnostics),
    }
}

fn render_human(diagnostics: &[Diagnostic], source: &dyn Fn(&Path) -> Option<String>) -> String {
    let mut out = String::new();
    let mut cached: Option<(&Path, Option<String>)> = None;
    for d in diagnostics {
        let _ = writeln!(
            out,
            "{}:{}:{}: {}[{}]: {}",
            d.file.display(),
            d.line,
            d.column,
            d.severity.as_str(),
            d.code,
            d.message
        );
        if cached.as_ref().is_none_or(|(path, _)| *path != d.file.as_path()) {
            cached = Some((d.file.as_path(), source(&d.file)));
        }
        let line_text = cached
            .as_ref()
            .and_then(|(_, text)| text.as_deref())
            .and_then(|text| text.lines().nth(d.line.saturating_sub(1)));
        if let Some(text) = line_text.filter(|_| d.line > 0) {
            // Long lines (minified or binary input) would flood the terminal; the
            // position is already in the header.
            if text.len() <= 200 {
                let gutter = d.line.to_string().len();
                let _ = writeln!(out, "{:gutter$} |", "");
                let _ = writeln!(out, "{} | {}", d.line, text);
                let caret_pad: String = text
                    .chars()
                    .take(d.column.saturating_sub(1))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let _ = writeln!(out, "{:gutter$} | {caret_pad}^", "");
            }
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  = help: {help}");
        }
    }
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = diagnostics.len() - errors;
    if !diagnostics.is_empty() {
        let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    }
    out
}

/// GitHub workflow commands need `%`, CR and LF escaped in the message and also `,` and
/// `:` in properties, or the annotation is cut short.
fn github_escape(text: &str, property: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '%' => out.push_str("%25"),
            '\r' => out.push_str("%0D"),
            '\n' => out.push_str("%0A"),
            ':' if property => out.push_str("%3A"),
            ',' if property => out.push_str("%2C"),
            c => out.push(c),
        }
    }
    out
}

fn render_github(diagnostics: &[Diagnostic]) -> String {
    let mut out = String::new();
    for d in diagnostics {
        let mut message = d.message.clone();
        if let Some(help) = &d.help {
            message.push_str("\nhelp: ");
            message.push_str(help);
        }
        let _ = writeln!(
            out,
            "::{} file={},line={},col={},title={}::{}",
            d.severity.as_str(),
            github_escape(&d.file.display().to_string(), true),
            d.line,
            d.column,
            github_escape(&format!("chom {}", d.code), true),
            github_escape(&message, false),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Diagnostic {
        Diagnostic::error(
            "unknown-role",
            Path::new("inventory.d/web-1.yaml"),
            Position { line: 3, column: 9 },
            "role \"webb\" is not defined",
        )
        .pointer("/spec/role")
        .help("define it, or fix the name")
    }

    #[test]
    fn human_output_has_position_code_snippet_and_help() {
        let text = render(&[sample()], Format::Human, &|_| {
            Some("a: 1\nb: 2\nrole:   webb\n".to_owned())
        });
        assert!(text.starts_with("inventory.d/web-1.yaml:3:9: error[unknown-role]: role \"webb\" is not defined\n"));
        assert!(text.contains("3 | role:   webb\n"));
        assert!(text.contains("  |         ^\n"), "{text}");
        assert!(text.contains("  = help: define it, or fix the name\n"));
        assert!(text.ends_with("1 error(s), 0 warning(s)\n"));
    }

    #[test]
    fn github_output_escapes_properties_and_newlines() {
        let text = render(&[sample()], Format::Github, &|_| None);
        assert_eq!(
            text,
            "::error file=inventory.d/web-1.yaml,line=3,col=9,title=chom unknown-role::role \"webb\" is not defined%0Ahelp: define it, or fix the name\n"
        );
    }

    #[test]
    fn json_output_carries_every_field() {
        let text = render(&[sample()], Format::Json, &|_| None);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let first = &value[0];
        assert_eq!(first["file"], "inventory.d/web-1.yaml");
        assert_eq!(first["line"], 3);
        assert_eq!(first["column"], 9);
        assert_eq!(first["pointer"], "/spec/role");
        assert_eq!(first["code"], "unknown-role");
        assert_eq!(first["severity"], "error");
        assert_eq!(first["help"], "define it, or fix the name");
    }
}
