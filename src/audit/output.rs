//! Findings for people (a table), for programs (JSON) and for Prometheus (the text
//! exposition format, for node_exporter's textfile collector).

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{Finding, Severity};

pub fn table(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "no findings\n".into();
    }
    let header = ["SEVERITY", "RULE", "MACHINE", "FINDING"];
    let rows: Vec<[&str; 4]> = findings
        .iter()
        .map(|f| {
            [
                f.severity.name(),
                f.rule,
                f.machine.as_str(),
                f.message.as_str(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row).take(3) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cols: [&str; 4]| {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    };
    line(&mut out, header);
    for (row, f) in rows.iter().zip(findings) {
        line(&mut out, *row);
        let indent = widths[0] + widths[1] + widths[2] + 6;
        let _ = writeln!(out, "{:indent$}fix: {}", "", f.fix);
    }
    out
}

pub fn json(findings: &[Finding]) -> String {
    let mut text = serde_json::to_string(findings).expect("findings serialise");
    text.push('\n');
    text
}

/// The text exposition format. One `machnet_audit_finding` series per (machine, rule,
/// severity, subject), valued by how many findings share those labels; totals by severity
/// (zeros included, so alerts can test `> 0`); how many machines were looked at; and when.
pub fn prometheus(findings: &[Finding], machines: usize, unix_time: f64) -> String {
    let mut series: BTreeMap<(&str, &str, &str, &str), usize> = BTreeMap::new();
    for f in findings {
        *series
            .entry((&f.machine, f.rule, f.severity.name(), &f.subject))
            .or_default() += 1;
    }
    let mut out = String::new();
    out.push_str(
        "# HELP machnet_audit_finding A finding of machnet audit (the value counts findings with these labels).\n\
         # TYPE machnet_audit_finding gauge\n",
    );
    for ((machine, rule, severity, subject), n) in &series {
        let _ = writeln!(
            out,
            "machnet_audit_finding{{machine=\"{}\",rule=\"{}\",severity=\"{}\",subject=\"{}\"}} {n}",
            escape(machine),
            escape(rule),
            severity,
            escape(subject)
        );
    }
    out.push_str(
        "# HELP machnet_audit_findings Findings of machnet audit by severity.\n\
         # TYPE machnet_audit_findings gauge\n",
    );
    for severity in [Severity::Error, Severity::Warning, Severity::Info] {
        let n = findings.iter().filter(|f| f.severity == severity).count();
        let _ = writeln!(
            out,
            "machnet_audit_findings{{severity=\"{}\"}} {n}",
            severity.name()
        );
    }
    let _ = write!(
        out,
        "# HELP machnet_audit_machines Machines machnet audit looked at.\n\
         # TYPE machnet_audit_machines gauge\n\
         machnet_audit_machines {machines}\n\
         # HELP machnet_audit_last_run_timestamp_seconds When machnet audit ran.\n\
         # TYPE machnet_audit_last_run_timestamp_seconds gauge\n\
         machnet_audit_last_run_timestamp_seconds {unix_time:.3}\n"
    );
    out
}

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(machine: &str, subject: &str) -> Finding {
        Finding {
            rule: "lo-down",
            severity: Severity::Error,
            machine: machine.into(),
            subject: subject.into(),
            message: "m".into(),
            fix: "f".into(),
        }
    }

    #[test]
    fn label_values_are_escaped_and_duplicates_counted() {
        let text = prometheus(
            &[
                finding("we\"ird\\", "lo"),
                finding("a", "x"),
                finding("a", "x"),
            ],
            3,
            1.5,
        );
        assert!(text.contains(r#"machine="we\"ird\\""#), "{text}");
        assert!(
            text.contains(r#"machnet_audit_finding{machine="a",rule="lo-down",severity="error",subject="x"} 2"#),
            "{text}"
        );
        assert!(text.contains("machnet_audit_findings{severity=\"warning\"} 0"));
    }
}
