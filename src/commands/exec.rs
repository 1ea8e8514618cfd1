//! `machnet exec TARGET -- CMD...`: a host command with the machine's network namespace.

use crate::cli::ExecArgs;
use crate::error::Result;
use crate::netns::ExtraNamespaces;

pub async fn run(args: ExecArgs) -> Result<i32> {
    let extra = ExtraNamespaces {
        mount: args.mount,
        uts: args.uts,
        ipc: args.ipc,
        pid: args.pid,
    };
    // machined's connection is closed by now: only the pinned namespaces go on.
    let resolved = super::resolve(&args.target, extra, None).await?;
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    resolved.namespace.exec(program, rest, extra)
}
