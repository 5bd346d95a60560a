//! Conformance reports: one line per checked clause (`PASS FCGI-4.2-1 MUST app: …`), a
//! summary, and JSON or JUnit for CI. The verdict of a broken clause follows its level
//! (shared/specs/README.md): MUST/MUST NOT → FAIL, SHOULD/SHOULD NOT → WARN, MAY, FACT,
//! AMB and RW → INFO.

use std::fmt::Write as _;
use std::time::Duration;

/// A clause's level, as the digests write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// MUST
    Must,
    /// MUST NOT
    MustNot,
    /// SHOULD
    Should,
    /// SHOULD NOT
    ShouldNot,
    /// MAY
    May,
    /// FACT (a byte layout, constant or definition)
    Fact,
    /// An ambiguity and portico's reading (`-AMB-`).
    Amb,
    /// Real-world practice (`-RW-`).
    Rw,
}

impl Level {
    /// The level as written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Must => "MUST",
            Level::MustNot => "MUST NOT",
            Level::Should => "SHOULD",
            Level::ShouldNot => "SHOULD NOT",
            Level::May => "MAY",
            Level::Fact => "FACT",
            Level::Amb => "AMB",
            Level::Rw => "RW",
        }
    }

    /// The verdict when a clause of this level is broken.
    pub fn broken(self) -> Verdict {
        match self {
            Level::Must | Level::MustNot => Verdict::Fail,
            Level::Should | Level::ShouldNot => Verdict::Warn,
            _ => Verdict::Info,
        }
    }
}

/// Which side a clause binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The web server (FastCGI/SCGI client).
    Ws,
    /// The application (FastCGI application, SCGI server, CGI script).
    App,
    /// Both.
    Both,
}

impl Side {
    /// As written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Ws => "ws",
            Side::App => "app",
            Side::Both => "both",
        }
    }
}

/// The outcome of one check on one clause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// The clause held.
    Pass,
    /// An observation only (MAY/FACT/AMB/RW, or a check that could not decide).
    Info,
    /// A SHOULD was broken.
    Warn,
    /// A MUST was broken.
    Fail,
    /// The check could not run (connection refused, time limit) — counted as a failure
    /// of the probe, not of a clause.
    Error,
}

impl Verdict {
    /// As written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Info => "INFO",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Error => "ERROR",
        }
    }
}

/// One line of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check that produced it (a short slug, e.g. `unknown-type`).
    pub check: String,
    /// The clause ID, e.g. `FCGI-4.2-1`.
    pub clause: String,
    /// The clause's level.
    pub level: Level,
    /// The side it binds.
    pub side: Side,
    /// The verdict.
    pub verdict: Verdict,
    /// What was observed, short.
    pub observation: String,
}

impl Finding {
    fn with(
        verdict: Verdict,
        check: &str,
        clause: &str,
        level: Level,
        side: Side,
        observation: String,
    ) -> Finding {
        Finding {
            check: check.into(),
            clause: clause.into(),
            level,
            side,
            verdict,
            observation,
        }
    }

    /// A clause that held.
    pub fn pass(
        check: &str,
        clause: &str,
        level: Level,
        side: Side,
        observation: impl Into<String>,
    ) -> Finding {
        Finding::with(
            Verdict::Pass,
            check,
            clause,
            level,
            side,
            observation.into(),
        )
    }

    /// A clause that was broken: the verdict follows the level.
    pub fn broken(
        check: &str,
        clause: &str,
        level: Level,
        side: Side,
        observation: impl Into<String>,
    ) -> Finding {
        Finding::with(
            level.broken(),
            check,
            clause,
            level,
            side,
            observation.into(),
        )
    }

    /// An observation (INFO) about a clause.
    pub fn info(
        check: &str,
        clause: &str,
        level: Level,
        side: Side,
        observation: impl Into<String>,
    ) -> Finding {
        Finding::with(
            Verdict::Info,
            check,
            clause,
            level,
            side,
            observation.into(),
        )
    }

    /// A check that could not run.
    pub fn error(
        check: &str,
        clause: &str,
        level: Level,
        side: Side,
        observation: impl Into<String>,
    ) -> Finding {
        Finding::with(
            Verdict::Error,
            check,
            clause,
            level,
            side,
            observation.into(),
        )
    }

    /// `PASS FCGI-4.2-1 MUST app: observation [check]`.
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {}: {} [{}]",
            self.verdict.as_str(),
            self.clause,
            self.level.as_str(),
            self.side.as_str(),
            self.observation,
            self.check
        )
    }
}

/// A whole report: what was probed, every finding, how long it took.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target, as given.
    pub target: String,
    /// Findings in the order the checks ran.
    pub findings: Vec<Finding>,
    /// Wall time of the probe.
    pub elapsed: Duration,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One line per finding and a summary.
    Text,
    /// A JSON document.
    Json,
    /// JUnit XML (one test case per finding).
    Junit,
}

impl Report {
    /// Counts by verdict: (pass, info, warn, fail, error).
    pub fn counts(&self) -> (usize, usize, usize, usize, usize) {
        let c = |v| self.findings.iter().filter(|f| f.verdict == v).count();
        (
            c(Verdict::Pass),
            c(Verdict::Info),
            c(Verdict::Warn),
            c(Verdict::Fail),
            c(Verdict::Error),
        )
    }

    /// Whether any MUST was broken or a check could not run.
    pub fn failed(&self) -> bool {
        let (_, _, _, fail, error) = self.counts();
        fail + error > 0
    }

    /// The number of distinct checks that ran.
    pub fn checks(&self) -> usize {
        let mut names: Vec<&str> = self.findings.iter().map(|f| f.check.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }

    /// Renders the report.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Text => self.text(),
            Format::Json => self.json(),
            Format::Junit => self.junit(),
        }
    }

    /// The summary line alone (`TARGET: N checks, M findings: … in 1.23s`), for reports whose
    /// findings were printed as they came (`probe --serve`).
    pub fn summary_line(&self) -> String {
        self.summary()
    }

    fn summary(&self) -> String {
        let (p, i, w, f, e) = self.counts();
        format!(
            "{}: {} checks, {} findings: {p} PASS, {i} INFO, {w} WARN, {f} FAIL, {e} ERROR in {:.2}s",
            self.target,
            self.checks(),
            self.findings.len(),
            self.elapsed.as_secs_f64()
        )
    }

    fn text(&self) -> String {
        let mut o = String::new();
        for f in &self.findings {
            o.push_str(&f.line());
            o.push('\n');
        }
        o.push_str(&self.summary());
        o.push('\n');
        o
    }

    fn json(&self) -> String {
        let (p, i, w, f, e) = self.counts();
        let mut o = String::new();
        let _ = write!(
            o,
            "{{\"target\":{},\"elapsed_seconds\":{:.3},\"summary\":{{\"checks\":{},\"pass\":{p},\"info\":{i},\"warn\":{w},\"fail\":{f},\"error\":{e}}},\"findings\":[",
            crate::text::json_str(&self.target),
            self.elapsed.as_secs_f64(),
            self.checks()
        );
        for (n, f) in self.findings.iter().enumerate() {
            let _ = write!(
                o,
                "{}{{\"verdict\":\"{}\",\"clause\":{},\"level\":\"{}\",\"side\":\"{}\",\"check\":{},\"observation\":{}}}",
                if n > 0 { "," } else { "" },
                f.verdict.as_str(),
                crate::text::json_str(&f.clause),
                f.level.as_str(),
                f.side.as_str(),
                crate::text::json_str(&f.check),
                crate::text::json_str(&f.observation)
            );
        }
        o.push_str("]}\n");
        o
    }

    fn junit(&self) -> String {
        let (_, _, _, f, e) = self.counts();
        let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            o,
            "<testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{e}\" time=\"{:.3}\">",
            crate::text::markup(&self.target),
            self.findings.len(),
            self.elapsed.as_secs_f64()
        );
        for finding in &self.findings {
            let _ = write!(
                o,
                "  <testcase classname=\"{}\" name=\"{} {}\">",
                crate::text::markup(&finding.check),
                crate::text::markup(&finding.clause),
                finding.level.as_str()
            );
            match finding.verdict {
                Verdict::Fail => {
                    let _ = write!(
                        o,
                        "<failure message=\"{}\"/>",
                        crate::text::markup(&finding.observation)
                    );
                }
                Verdict::Error => {
                    let _ = write!(
                        o,
                        "<error message=\"{}\"/>",
                        crate::text::markup(&finding.observation)
                    );
                }
                Verdict::Warn | Verdict::Info => {
                    let _ = write!(
                        o,
                        "<system-out>{} {}</system-out>",
                        finding.verdict.as_str(),
                        crate::text::markup(&finding.observation)
                    );
                }
                Verdict::Pass => {}
            }
            o.push_str("</testcase>\n");
        }
        o.push_str("</testsuite>\n");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdict_follows_level() {
        let f = Finding::broken(
            "t",
            "FCGI-4.2-1",
            Level::Must,
            Side::App,
            "no reply to type 200",
        );
        assert_eq!(
            f.line(),
            "FAIL FCGI-4.2-1 MUST app: no reply to type 200 [t]"
        );
        assert_eq!(
            Finding::broken("t", "X", Level::Should, Side::App, "").verdict,
            Verdict::Warn
        );
        assert_eq!(
            Finding::broken("t", "X", Level::Amb, Side::App, "").verdict,
            Verdict::Info
        );
    }

    #[test]
    fn formats_render() {
        let r = Report {
            target: "fastcgi://x".into(),
            findings: vec![
                Finding::pass("a", "FCGI-3.3-3", Level::Must, Side::App, "version 1"),
                Finding::broken("b", "FCGI-4.2-1", Level::Must, Side::App, "no \"reply\""),
            ],
            elapsed: Duration::from_millis(5),
        };
        assert!(r.failed());
        assert!(
            r.render(Format::Text).ends_with(
                "2 checks, 2 findings: 1 PASS, 0 INFO, 0 WARN, 1 FAIL, 0 ERROR in 0.01s\n"
            )
        );
        assert!(
            r.render(Format::Json)
                .contains("\"observation\":\"no \\\"reply\\\"\"")
        );
        assert!(
            r.render(Format::Junit)
                .contains("<failure message=\"no &quot;reply&quot;\"/>")
        );
    }
}
