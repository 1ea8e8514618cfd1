//! The command line, shared by the parser, the man pages and the shell completions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::target::Target;

const EXIT_CODES: &str = "\
Exit status:
  0  success (for exec: the command's own status, 128+N if killed by signal N)
  1  any other failure
  2  bad usage or malformed input
  3  no such machine, namespace or process
  4  systemd-machined or the system bus unreachable
  5  permission denied (run as root)
  6  stale machine: its registered leader is gone
  7  the kernel refused a request
  8  the table changed during a dump and output may be inconsistent
  9  apply --check: routes differ from the declared set
  10 apply: a declared route collides with a route machnet does not own
  11 audit: the worst finding is a warning
  12 audit: the worst finding is an error
  13 partial: list, routes --all, audit, whois or topology printed every machine it could
     read, but one or more could not be read (permission denied on its namespace, say);
     their rows (or notes on stderr) say why
  126/127  exec could not run / could not find the command";

/// See and change the network inside systemd-nspawn machines.
///
/// machnet asks systemd-machined for a machine's leader process, pins it, and reads
/// the machine's network namespace over rtnetlink: `ip route` for machines, by name.
#[derive(Debug, Parser)]
#[command(name = "machnet", version, after_long_help = EXIT_CODES)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG works too.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

/// A subcommand that takes one TARGET is listed in [`Command::machine_target`], and in
/// [`guess_machine_target`] if its shape is plain: keep the three in step.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List every machine machined knows, with its network namespace and addresses.
    List(ListArgs),
    /// Print a machine's routing table as `ip route show` prints it inside.
    Routes(RoutesArgs),
    /// Show or change routes inside a machine, in `ip route` syntax.
    Route {
        #[command(subcommand)]
        action: RouteAction,
    },
    /// A machine's links as `ip -br link` prints them, with each veth's peer on the host.
    Links(BriefArgs),
    /// A machine's addresses as `ip -br addr` prints them, with each veth's peer on the host.
    Addrs(BriefArgs),
    /// A machine's policy routing rules as `ip rule show` prints them inside.
    Rules(RulesArgs),
    /// A machine's neighbour (ARP and NDP) entries as `ip neigh show` prints them inside.
    Neigh(NeighArgs),
    /// Listening TCP/UDP sockets inside a machine and their processes (like `ss -tulpn`).
    Sockets(BriefArgs),
    /// Change a link inside a machine: `link set TARGET IFNAME up|down|mtu N`.
    Link {
        #[command(subcommand)]
        action: LinkAction,
    },
    /// Add or delete an address inside a machine: `addr add TARGET ADDR/LEN dev IFNAME`.
    Addr {
        #[command(subcommand)]
        action: AddrAction,
    },
    /// Bring machines' routes to a declared set (TOML or JSON): add, replace, delete.
    ///
    /// Each machine is applied whole or not at all: a kernel refusal, or SIGTERM, SIGINT or
    /// SIGHUP, puts back everything changed in the machine being applied (machines before
    /// it stay applied, those after it are not touched); a signal then exits 128+N (143,
    /// 130, 129) saying how many steps were undone. After SIGKILL, which cannot be caught,
    /// the next apply converges the table from wherever it was left.
    Apply(ApplyArgs),
    /// Check every machine's network (and the host side of it) for common faults.
    Audit(AuditArgs),
    /// Which namespace (host, machine, named netns) owns an address or reaches it directly.
    Whois(WhoisArgs),
    /// The path a packet takes from a machine to an address, hop by hop, and the first hop
    /// where it dies, with the fix.
    ///
    /// Each hop is the kernel's own decision where it can be asked: the machine's route
    /// lookup, its link and the host end (up, MTU, bridge), the host's lookup with the
    /// packet arriving from the machine (forwarding and rp_filter applied by the kernel),
    /// the host's nftables forward filter and NAT (iptables-nft rules included), and the
    /// way back, and the machine's own nftables output and input chains. A name is
    /// resolved first (a loopback nameserver with nothing listening is named). A rule the
    /// evaluator cannot judge (named sets, marks, ...) is "unknown".
    /// Exit 0: the path is open; 13: a hop fails (✘); 14: a hop cannot be judged (?).
    Why(WhyArgs),
    /// A machine's own nftables ruleset, and the host's rules that concern it: those
    /// naming its veth's host end or bridge, covering its addresses, or forwarding to them.
    Firewall(FirewallArgs),
    /// The host and its machines as a graph: interfaces, veth pairs, bridges, addresses.
    Topology(TopologyArgs),
    /// Stream route, address and link changes of every machine, as `ip monitor` prints them.
    Watch(WatchArgs),
    /// Run a host command inside a machine's network namespace (like `nsenter -n`).
    Exec(ExecArgs),
    /// Generate man pages or shell completions from these definitions.
    Generate {
        #[command(subcommand)]
        what: Generate,
    },
}

impl Command {
    /// The machine this command works on, when it names exactly one by name: its lookup
    /// can be sent before the command starts (`machined::direct::ask_early`).
    pub fn machine_target(&self) -> Option<&str> {
        let target = match self {
            Command::Routes(args)
            | Command::Route {
                action: RouteAction::Show(args),
            } => args.target.as_ref()?,
            Command::Route {
                action: RouteAction::Get(args),
            } => &args.target,
            Command::Route {
                action:
                    RouteAction::Add(args)
                    | RouteAction::Del(args)
                    | RouteAction::Replace(args)
                    | RouteAction::Change(args)
                    | RouteAction::Append(args),
            } => &args.target,
            Command::Links(args) | Command::Addrs(args) | Command::Sockets(args) => &args.target,
            Command::Rules(args) => &args.target,
            Command::Neigh(args) => &args.target,
            Command::Link {
                action: LinkAction::Set(args),
            } => &args.target,
            Command::Addr {
                action: AddrAction::Add(args) | AddrAction::Del(args),
            } => &args.target,
            Command::Exec(args) => &args.target,
            _ => return None,
        };
        match target {
            Target::Machine(name) => Some(name),
            _ => None,
        }
    }
}

/// The machine a command line most likely names, read from the raw arguments before clap
/// parses them: building clap's whole command tree takes about a tenth of `machnet routes
/// NAME`, and machined's answer can be on its way meanwhile. Only the plainest shapes are
/// read: `[-v...] routes|rules|neigh|links|addrs|sockets|exec NAME`, and `route ACTION NAME`, `link set
/// NAME`, `addr add|del NAME`. A guess is only a head start: the lookup it sends is used
/// only if clap then parses the same name ([`Command::machine_target`]), so a wrong guess
/// costs one lookup, never a wrong answer.
pub fn guess_machine_target(args: &[std::ffi::OsString]) -> Option<String> {
    let asks_for_help =
        |a: &std::ffi::OsString| matches!(a.to_str(), Some("-h" | "--help" | "-V" | "--version"));
    if args.iter().any(asks_for_help) {
        return None;
    }
    let mut words = args
        .iter()
        .skip(1)
        .map(|a| a.to_str())
        .skip_while(|a| matches!(a, Some("--verbose" | "-v" | "-vv" | "-vvv")));
    let name = match words.next()?? {
        "routes" | "rules" | "neigh" | "links" | "addrs" | "sockets" | "exec" => words.next()??,
        "route" => match words.next()?? {
            "show" | "get" | "add" | "del" | "delete" | "replace" | "change" | "append" => {
                words.next()??
            }
            _ => return None,
        },
        "link" => match words.next()?? {
            "set" => words.next()??,
            _ => return None,
        },
        "addr" => match words.next()?? {
            "add" | "del" | "delete" => words.next()??,
            _ => return None,
        },
        _ => return None,
    };
    match name.parse() {
        Ok(Target::Machine(name)) => Some(name),
        _ => None,
    }
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print JSON (one array of machines) instead of a table.
    #[arg(long, short = 'j')]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RoutesArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET", required_unless_present = "all")]
    pub target: Option<Target>,

    /// Every machine machined knows: each text line prefixed `NAME: `, each JSON object
    /// given a "machine" key. Stale machines are skipped with a note.
    #[arg(long, conflicts_with = "target")]
    pub all: bool,

    /// IPv4 routes only (the default unless --table all).
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 routes only.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Which table: main (default), local, all, or a number or rt_tables name.
    #[arg(long, short = 't', value_name = "TABLE", default_value = "main")]
    pub table: String,

    /// Print `ip -j route show` JSON.
    #[arg(long, short = 'j')]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RulesArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// IPv4 rules (the default: `ip rule show` shows one family, IPv4 unless asked).
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 rules.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Print `ip -j rule show` JSON.
    #[arg(long, short = 'j')]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct NeighArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// IPv4 (ARP) entries only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// IPv6 (NDP) entries only.
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Proxy entries (`ip neigh show proxy`) instead of the neighbour cache.
    #[arg(long)]
    pub proxy: bool,

    /// Only entries in this state, as `ip neigh show nud STATE` (repeat for several):
    /// permanent, reachable, stale, delay, probe, incomplete, failed, noarp, none or all.
    /// Without it, as ip: every state but noarp and none.
    #[arg(long, value_name = "STATE")]
    pub nud: Vec<String>,

    /// Print `ip -j neigh show` JSON.
    #[arg(long, short = 'j')]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RouteAction {
    /// The routing table, as `machnet routes` prints it.
    Show(RoutesArgs),
    /// The kernel's routing decision for destinations, as `ip route get` prints it.
    Get(GetArgs),
    /// Add a route; fails if a route with the same key exists.
    Add(EditArgs),
    /// Delete the route that matches every field given.
    #[command(alias = "delete")]
    Del(EditArgs),
    /// Add a route, or overwrite the one with the same key.
    Replace(EditArgs),
    /// Overwrite an existing route; fails if there is none.
    Change(EditArgs),
    /// Add a route next to existing ones with the same key.
    Append(EditArgs),
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Print `ip -j route get` JSON: one array, an object per destination.
    #[arg(long, short = 'j')]
    pub json: bool,

    /// Destinations, and options as `ip route get` takes them (from, iif, oif, mark, tos,
    /// uid, fibmatch, ipproto, sport, dport) for all of them. With no destination, one query a line on stdin.
    #[arg(value_name = "DEST|OPTION", trailing_var_arg = true)]
    pub words: Vec<String>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Machines to watch (default: every machine, including those registered later).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Print one JSON object a line (time, machine, kind, action, object in `ip -j` shape).
    #[arg(long)]
    pub json: bool,

    /// Put declared routes back when they vanish (an apply file), at most 3 times a minute
    /// per machine; past that machnet reports the fight and stops re-applying for a minute.
    #[arg(long, value_name = "FILE")]
    pub reapply: Option<PathBuf>,

    /// The kernel's receive queue for each machine's notifications, in bytes (default 4
    /// MiB; `ip -rcvbuf`). When a burst overflows it, machnet says so, then prints the
    /// machine's whole current state (links, addresses, routes) between `resync` notes.
    #[arg(long, value_name = "BYTES")]
    pub rcvbuf: Option<u32>,
}

#[derive(Debug, Args)]
pub struct WhoisArgs {
    /// An address (`192.168.2.1`) or a prefix (`10.77.0.0/16`).
    #[arg(value_name = "ADDR|PREFIX")]
    pub address: String,

    /// Print JSON (an array of answers).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FirewallArgs {
    /// A machine name, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Print JSON: {"ruleset": what `nft -j list ruleset` prints inside, "host_rules":
    /// [{family, table, chain, handle, rule, why}]}.
    #[arg(long, short = 'j')]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct WhyArgs {
    /// A machine name, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// The destination: an address, or a name, resolved as the machine resolves it (its
    /// own resolv.conf, one query from inside its network namespace, 2 s at most).
    #[arg(value_name = "DEST")]
    pub dest: String,

    /// The destination port (for TCP and UDP).
    #[arg(value_name = "PORT")]
    pub port: Option<u16>,

    /// The packet's protocol.
    #[arg(long, value_enum, default_value = "tcp")]
    pub proto: WhyProto,

    /// The other way: from a process on the host to PORT of the machine, at one of its
    /// addresses or at a host address whose port is forwarded to it (DNAT, as nspawn
    /// `--port` and NixOS `forwardPorts` make): the forward, the host's route, the
    /// machine's input chain, and whether anything listens there.
    #[arg(long)]
    pub from_host: bool,

    /// Also send one real packet (a TCP connect, or a UDP datagram) from inside the
    /// machine, with nftrace set on it in the machine and on the host, and report what
    /// `nft monitor trace` saw beside the walked verdicts. Adds a trace-marking table of
    /// its own to both rulesets for the moment it takes (about half a second), and
    /// deletes it.
    #[arg(long, requires = "port", conflicts_with = "from_host")]
    pub probe: bool,

    /// Print the hops as a JSON array of objects (hop, namespace, verdict, reason, rule,
    /// fix).
    #[arg(long, short = 'j')]
    pub json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WhyProto {
    Tcp,
    Udp,
    Icmp,
}

#[derive(Debug, Args)]
pub struct TopologyArgs {
    /// Machines to include (default: all).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Output: text, json, dot (Graphviz: `| dot -Tsvg > net.svg`) or mermaid.
    #[arg(long, value_enum, default_value = "text")]
    pub format: TopologyFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TopologyFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Machines to audit (default: every machine machined knows).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,

    /// Print the findings as JSON (an array) instead of a table.
    #[arg(long, conflicts_with = "prometheus")]
    pub json: bool,

    /// Print Prometheus text exposition format (for node_exporter's textfile collector).
    #[arg(long)]
    pub prometheus: bool,

    /// Run only this rule (repeat for several).
    #[arg(long, value_name = "ID")]
    pub rule: Vec<String>,

    /// Skip this rule (repeat for several).
    #[arg(long, value_name = "ID")]
    pub skip: Vec<String>,

    /// Also report routes that differ from this apply file (rule route-drift).
    #[arg(long, value_name = "FILE")]
    pub expect: Option<PathBuf>,

    /// List the rules and what each checks, then exit.
    #[arg(long)]
    pub list_rules: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The route set: TOML, or JSON (`.json`, or text starting with `{`); `-` reads stdin.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,

    /// Apply only to this machine of the file (repeat for several); default: all of them.
    #[arg(short, long, value_name = "NAME")]
    pub machine: Vec<String>,

    /// Print the plan as a diff (`+` add, `~` replace, `-` delete, in `ip route` syntax)
    /// and change nothing.
    #[arg(long, conflicts_with = "check")]
    pub dry_run: bool,

    /// Change nothing; print the plan and exit 0 when every machine is in sync, 9 when
    /// not (for monitoring and CI).
    #[arg(long)]
    pub check: bool,

    /// Replace a route machnet does not own (another protocol) when a declared route has
    /// its key; without this, that is an error (exit 10) and nothing changes.
    #[arg(long)]
    pub adopt: bool,

    /// Wait up to SECONDS for each machine to be registered and its declared devices to
    /// exist (a container that is still starting).
    #[arg(long, value_name = "SECONDS")]
    pub wait: Option<f64>,

    /// The protocol that marks machnet's routes: declared routes get it unless they name
    /// one, and only routes with it are replaced or deleted (default 109, `machnet`).
    #[arg(long, value_name = "PROTO")]
    pub protocol: Option<String>,

    /// Apply even to a machine that shares the host's network namespace (changes the
    /// host's own routes).
    #[arg(long)]
    pub allow_host: bool,
}

#[derive(Debug, Args)]
pub struct EditArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Read addresses in SPEC as IPv4 (needed only for `default` without a gateway).
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Read addresses in SPEC as IPv6 (needed only for `default` without a gateway).
    #[arg(short = '6')]
    pub ipv6: bool,

    /// Change routes even though TARGET shares the host's network namespace: this edits
    /// the host's own routing table.
    #[arg(long)]
    pub allow_host: bool,

    /// The routing protocol routes get when SPEC names none (default 109, `proto machnet`);
    /// with `del`, only a route of this protocol is deleted.
    #[arg(long, value_name = "PROTO")]
    pub protocol: Option<String>,

    /// The route in `ip route` syntax, e.g. `10.0.0.0/8 via 10.77.1.2 dev host0 metric 100`.
    #[arg(value_name = "SPEC", required = true, trailing_var_arg = true)]
    pub spec: Vec<String>,
}

#[derive(Debug, Args)]
pub struct BriefArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Print `ip -j -br` JSON (with a "peer" object where the peer is known).
    #[arg(long, short = 'j')]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum LinkAction {
    /// Bring a link up or down, or set its MTU.
    Set(LinkSetArgs),
}

#[derive(Debug, Args)]
pub struct LinkSetArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Change the link even though TARGET shares the host's network namespace.
    #[arg(long)]
    pub allow_host: bool,

    /// The interface, e.g. lo or host0.
    #[arg(value_name = "IFNAME")]
    pub ifname: String,

    /// up, down, mtu N (several may be given).
    #[arg(value_name = "CHANGE", required = true, trailing_var_arg = true)]
    pub change: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum AddrAction {
    /// Add an address: ADDR/LEN dev IFNAME [brd +|ADDR].
    Add(AddrArgs),
    /// Delete an address: ADDR/LEN dev IFNAME.
    #[command(alias = "delete")]
    Del(AddrArgs),
}

#[derive(Debug, Args)]
pub struct AddrArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Change addresses even though TARGET shares the host's network namespace.
    #[arg(long)]
    pub allow_host: bool,

    /// ADDR/LEN dev IFNAME [brd +|ADDR], as `ip addr add` takes it.
    #[arg(value_name = "SPEC", required = true, trailing_var_arg = true)]
    pub spec: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// A machine name, .host, netns:NAME or pid:N.
    #[arg(value_name = "TARGET")]
    pub target: Target,

    /// Also join the machine's mount namespace (the command is then looked up inside it).
    #[arg(short = 'm', long)]
    pub mount: bool,

    /// Also join the machine's UTS namespace (hostname).
    #[arg(short = 'u', long)]
    pub uts: bool,

    /// Also join the machine's IPC namespace.
    #[arg(short = 'i', long)]
    pub ipc: bool,

    /// Also join the machine's PID namespace (the command runs as a child there).
    #[arg(short = 'p', long)]
    pub pid: bool,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum Generate {
    /// Write man pages (machnet.1 and one per subcommand) into DIR.
    Man {
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Print a completion script for SHELL on stdout.
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(line: &str) -> Vec<std::ffi::OsString> {
        line.split_whitespace().map(Into::into).collect()
    }

    fn parsed(line: &str) -> Option<String> {
        let cli = Cli::try_parse_from(argv(line)).ok()?;
        cli.command.machine_target().map(str::to_string)
    }

    #[test]
    fn guesses_the_machine_of_the_plain_shapes() {
        for (line, name) in [
            ("machnet routes web", "web"),
            ("machnet rules web -6", "web"),
            ("machnet neigh web --json", "web"),
            ("machnet -vv routes web -6 --json", "web"),
            ("machnet --verbose links db", "db"),
            ("machnet exec web -- ip route", "web"),
            ("machnet route get web 10.0.0.1", "web"),
            ("machnet route add web 10.0.0.0/8 dev eth0", "web"),
            ("machnet link set web eth0 up", "web"),
            ("machnet addr del web 10.0.0.1/24 dev eth0", "web"),
        ] {
            assert_eq!(
                guess_machine_target(&argv(line)).as_deref(),
                Some(name),
                "{line}"
            );
            assert_eq!(parsed(line).as_deref(), Some(name), "{line}");
        }
    }

    /// A guess is either nothing or what clap then parses, for every shape tried here.
    #[test]
    fn never_guesses_other_than_clap_parses() {
        for line in [
            "machnet routes",
            "machnet routes --all",
            "machnet routes -4 web",
            "machnet routes .host",
            "machnet routes pid:1",
            "machnet routes netns:blue",
            "machnet exec -m web -- true",
            "machnet route web",
            "machnet link show web",
            "machnet list",
            "machnet apply set.json",
            "machnet whois 10.0.0.1",
            "machnet -x routes web",
            "machnet routes web --help",
            "machnet",
        ] {
            let guess = guess_machine_target(&argv(line));
            assert!(
                guess.is_none() || guess == parsed(line),
                "{line}: {guess:?}"
            );
        }
    }
}
