//! `machnet whois ADDR|PREFIX`: who owns (or directly reaches) an address, across the
//! host, every machine and every named network namespace.

use crate::cli::WhoisArgs;
use crate::error::{Error, Result};
use crate::machined::Machined;
use crate::whois::{self, Query};

pub async fn run(args: WhoisArgs) -> Result<i32> {
    let query: Query = args.address.parse().map_err(Error::Usage)?;
    let machined = Machined::connect().await?;
    let survey = crate::survey::survey(&machined, &[]).await?;
    let extra = crate::survey::named_namespaces(&survey);
    let answers = whois::whois(&survey, &extra, query);
    let code = survey.report_unreadable(0);
    if answers.is_empty() {
        return Err(Error::NoSuchTarget(format!(
            "no namespace (the host, {} machine{}, {} other named netns) has {} or a connected \
             subnet covering it",
            survey.machines.len(),
            if survey.machines.len() == 1 { "" } else { "s" },
            extra.len(),
            args.address
        )));
    }
    let text = if args.json {
        let mut s = serde_json::to_string(&answers).expect("answers serialise");
        s.push('\n');
        s
    } else {
        whois::text(&answers)
    };
    super::write_stdout(text.as_bytes())?;
    Ok(code)
}
