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
    let machined = super::machined_for(&args.target).await?;
    let resolved = args.target.resolve(machined.as_ref(), extra).await?;
    // machined's connection is not needed while the command runs; its socket is
    // close-on-exec in the child either way.
    drop(machined);
    let (program, rest) = args.command.split_first().expect("clap requires a command");
    resolved.namespace.exec(program, rest, extra)
}
