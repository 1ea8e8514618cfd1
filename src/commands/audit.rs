//! `machnet audit [NAME...]`: every machine checked against the rules in audit/, findings
//! as a table, JSON or Prometheus text; the exit code is the worst severity found.

use std::io::Write;

use crate::audit::{self, output, Finding, Severity, ROUTE_DRIFT};
use crate::cli::AuditArgs;
use crate::error::{exit, Error, Result};
use crate::machined::Machined;

pub async fn run(args: AuditArgs) -> Result<i32> {
    let ids = audit::rule_ids();
    if args.list_rules {
        let mut out = String::new();
        for rule in audit::RULES {
            out.push_str(&format!("{:<20} {}\n", rule.id, rule.about));
        }
        out.push_str(&format!(
            "{ROUTE_DRIFT:<20} declared routes (--expect FILE, an apply file) missing or changed\n"
        ));
        super::write_stdout(out.as_bytes())?;
        return Ok(0);
    }
    for id in args.rule.iter().chain(&args.skip) {
        if !ids.contains(&id.as_str()) {
            return Err(Error::Usage(format!(
                "no audit rule {id:?}; the rules are: {}",
                ids.join(", ")
            )));
        }
    }
    let selected: Vec<&str> = ids
        .iter()
        .copied()
        .filter(|id| args.rule.is_empty() || args.rule.iter().any(|r| r == id))
        .filter(|id| !args.skip.iter().any(|s| s == id))
        .collect();

    let machined = Machined::connect().await?;
    let survey = crate::survey::survey(&machined, &args.names).await?;
    let mut findings = audit::run(&survey, &selected);
    if let Some(file) = &args.expect {
        if selected.contains(&ROUTE_DRIFT) {
            findings.extend(drift_findings(file, &args.names, &machined).await?);
            audit::sort(&mut findings);
        }
    }
    if survey.firewall.is_none() && selected.contains(&"nat-missing") && !args.prometheus {
        eprintln!("machnet: note: nft is not available, so nat-missing was not checked");
    }

    let text = if args.json {
        output::json(&findings)
    } else if args.prometheus {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        output::prometheus(&findings, survey.machines.len(), now)
    } else {
        output::table(&findings)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|_| stdout.flush())
        .map_err(|e| Error::io("writing output", e))?;
    // Findings cover only the machines that could be read (unreadable-machine names the
    // rest): a partial audit says so in its exit code, whatever it found.
    if survey.unreadable().next().is_some() {
        return Ok(exit::PARTIAL);
    }
    Ok(exit_code(&findings))
}

/// 0 with no finding worse than info, else the worst severity's code.
fn exit_code(findings: &[Finding]) -> i32 {
    match findings.iter().map(|f| f.severity).max() {
        Some(Severity::Error) => exit::AUDIT_ERROR,
        Some(Severity::Warning) => exit::AUDIT_WARNING,
        _ => 0,
    }
}

/// route-drift: each difference between an apply file and the machines it names.
async fn drift_findings(
    file: &std::path::Path,
    only: &[String],
    machined: &Machined,
) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    for (machine, lines) in super::apply::drift(file, only, Some(machined)).await? {
        let lines = match lines {
            Ok(lines) => lines,
            Err(e) => {
                findings.push(Finding {
                    rule: ROUTE_DRIFT,
                    severity: Severity::Error,
                    machine: machine.clone(),
                    subject: "routes".into(),
                    message: format!("cannot compare with {}: {e}", file.display()),
                    fix: "check that the machine is running".into(),
                });
                continue;
            }
        };
        for line in lines {
            let (sign, route) = line.split_at(1);
            let route = route.trim().lines().next().unwrap_or("").to_string();
            let message = match sign {
                "+" => format!("declared route missing: {route}"),
                "~" => format!(
                    "declared route differs: wanted {route}, found {}",
                    line.lines()
                        .nth(1)
                        .unwrap_or("")
                        .trim_start_matches("#   was: ")
                ),
                _ => format!("route of machnet's no longer declared: {route}"),
            };
            findings.push(Finding {
                rule: ROUTE_DRIFT,
                severity: Severity::Warning,
                machine: machine.clone(),
                subject: route
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" "),
                message,
                fix: format!("machnet apply {} --machine {machine}", file.display()),
            });
        }
    }
    Ok(findings)
}
