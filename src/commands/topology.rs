//! `machnet topology`: machines, interfaces, veth pairs and bridges as a graph.

use crate::cli::{TopologyArgs, TopologyFormat};
use crate::error::Result;
use crate::machined::Machined;
use crate::topology;

pub async fn run(args: TopologyArgs) -> Result<i32> {
    let machined = Machined::connect().await?;
    let survey = crate::survey::survey(&machined, &args.names).await?;
    let graph = topology::build(&survey);
    let text = match args.format {
        TopologyFormat::Text => topology::text(&graph),
        TopologyFormat::Json => topology::json(&graph),
        TopologyFormat::Dot => topology::dot(&graph),
        TopologyFormat::Mermaid => topology::mermaid(&graph),
    };
    super::write_stdout(text.as_bytes())?;
    Ok(survey.report_unreadable(0))
}
