//! Thin on purpose: parse, set up logging, run one command, map its error to an exit code.

use std::io::ErrorKind;
use std::process::ExitCode;

use clap::Parser;
use machnet::cli::{Cli, Command};
use machnet::commands;
use machnet::error::{Error, Result};
use machnet::link_brief::Brief;

fn main() -> ExitCode {
    // Before anything of ours is opened: what the caller passed is theirs to pass on.
    machnet::netns::remember_inherited_fds();
    // Ask machined for the machine the arguments seem to name while clap parses them.
    let args = machnet::argv::hoist_trailing_options(std::env::args_os().collect());
    if let Some(name) = machnet::cli::guess_machine_target(&args) {
        machnet::machined::direct::ask_early(&name);
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.verbose);
    match run(cli) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        // A closed pipe (`machnet routes x | head`) is the reader's choice, not a failure.
        Err(Error::Io { source, .. }) if source.kind() == ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("machnet: {err}");
            ExitCode::from(err.exit_code().clamp(1, 255) as u8)
        }
    }
}

/// --help and --version print as clap prints them; a usage error becomes one line,
/// `machnet: ...`, exit 2, like every other error.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        };
    }
    let text = e.to_string();
    let first = text.lines().next().unwrap_or("bad usage");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    eprintln!("machnet: {first} (see machnet --help)");
    ExitCode::from(2)
}

fn run(cli: Cli) -> Result<i32> {
    if let Command::Generate { what } = cli.command {
        return commands::generate::run(what);
    }
    // The bus and machined answer while the runtime, name tables and checks are set up.
    if let Some(name) = cli.command.machine_target() {
        machnet::machined::direct::ask_early(name);
    }
    // One thread drives D-Bus; netlink work is synchronous and namespace switches happen
    // on threads of their own (netns.rs), never on a runtime thread.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::io("starting the async runtime", e))?;
    runtime.block_on(async {
        match cli.command {
            Command::List(args) => commands::list::run(args).await,
            Command::Routes(args) => commands::routes::run(args).await,
            Command::Route { action } => commands::route::run(action).await,
            Command::Watch(args) => commands::watch::run(args).await,
            Command::Whois(args) => commands::whois::run(args).await,
            Command::Why(args) => commands::why::run(args).await,
            Command::Firewall(args) => commands::firewall::run(args).await,
            Command::Topology(args) => commands::topology::run(args).await,
            Command::Audit(args) => commands::audit::run(args).await,
            Command::Apply(args) => commands::apply::run(args).await,
            Command::Exec(args) => commands::exec::run(args).await,
            Command::Links(args) => commands::links::run(args, Brief::Link).await,
            Command::Addrs(args) => commands::links::run(args, Brief::Addr).await,
            Command::Sockets(args) => commands::sockets::run(args).await,
            Command::Rules(args) => commands::rules::run(args).await,
            Command::Neigh(args) => commands::neigh::run(args).await,
            Command::Link { action } => commands::link::run_link(action).await,
            Command::Addr { action } => commands::link::run_addr(action).await,
            Command::Generate { .. } => unreachable!("handled above"),
        }
    })
}

fn init_tracing(verbose: u8) {
    use tracing_subscriber::filter::LevelFilter;
    let level = match verbose {
        0 => LevelFilter::WARN,
        1 => LevelFilter::INFO,
        _ => LevelFilter::DEBUG,
    };
    let logs = tracing_subscriber::fmt().with_writer(std::io::stderr);
    // An EnvFilter compiles its directive parser's regular expressions when made, about a
    // twentieth of `machnet routes NAME`: made only when RUST_LOG asks for one.
    match std::env::var_os("RUST_LOG") {
        Some(_) => {
            let filter = tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.to_string()));
            logs.with_env_filter(filter).init()
        }
        None => logs.with_max_level(level).init(),
    }
}
