//! `machnet why TARGET DEST [PORT]`: walks the path (crate::why) and prints it.

use crate::cli::{WhyArgs, WhyProto};
use crate::error::{Error, Result};
use crate::netns::Isolation;
use crate::target::Target;
use crate::why::{self, Question};

pub async fn run(args: WhyArgs) -> Result<i32> {
    let named = args.dest.parse::<std::net::IpAddr>().is_err();
    if named && !args.dest.contains(|c: char| c.is_ascii_alphanumeric()) {
        return Err(Error::Usage(format!(
            "why: {:?} is neither an address nor a name",
            args.dest
        )));
    }
    if named && args.from_host {
        return Err(Error::Usage(
            "why --from-host: give DEST as an address (the machine's, or the host's whose port \
             is forwarded)"
                .into(),
        ));
    }
    if args.port.is_some() && args.proto == WhyProto::Icmp {
        return Err(Error::Usage("why: icmp has no ports".into()));
    }
    // As the user names it, so that the fixes printed can be run as they are.
    let machine = match &args.target {
        Target::Machine(name) => name.clone(),
        Target::Host => ".host".into(),
        Target::Netns(name) => format!("netns:{name}"),
        Target::Pid(pid) => format!("pid:{pid}"),
    };
    let namespace = super::pin(&args.target).await?;
    if namespace.isolation == Isolation::SharesHost {
        return Err(Error::Usage(format!(
            "{} shares the host's network namespace: there is no path between it and the \
             host to walk (ask `machnet route get {} {}`)",
            namespace.label, machine, args.dest
        )));
    }
    // A name is resolved as the machine resolves it; the walk goes to its address.
    let (mut hops, dest) = if named {
        let netns_name = match &args.target {
            Target::Netns(name) => Some(name.as_str()),
            _ => None,
        };
        why::dns::dns_hops(&namespace, &machine, netns_name, &args.dest)?
    } else {
        (Vec::new(), args.dest.parse().ok())
    };
    if let Some(dest) = dest {
        let proto = match args.proto {
            WhyProto::Tcp => 6,
            WhyProto::Udp => 17,
            WhyProto::Icmp if dest.is_ipv6() => 58,
            WhyProto::Icmp => 1,
        };
        let question = Question {
            dest,
            proto,
            dport: args.port,
        };
        if args.from_host {
            hops.extend(why::walk_from_host(&machine, &namespace, &question)?);
        } else {
            hops.extend(why::walk(&machine, &namespace, &question)?);
        }
        if let (true, Some(port)) = (args.probe, args.port) {
            let udp = args.proto == WhyProto::Udp;
            hops.push(why::probe::probe(&machine, &namespace, dest, port, udp)?);
        }
    }
    let out = if args.json {
        why::output::json(&hops)
    } else {
        why::output::text(&hops)
    };
    super::write_stdout(out.as_bytes())?;
    Ok(why::exit_code(&hops))
}
