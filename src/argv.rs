//! Options written after a trailing spec: `machnet route get corpus 10.1.2.3 --json`.
//!
//! The commands that end in `ip` words (`route get|add|del|…`, `link set`, `addr add|del`)
//! take those words as one trailing list, and clap gives such a list everything after its
//! first word, `--json` included. People type options at the end all the same, as they do
//! with `machnet routes NAME --json`. No word of an `ip` spec starts with `-`, so before
//! clap parses, [`hoist_trailing_options`] moves every such word of these commands (with
//! the value of an option that takes one) in front of the spec, where clap reads it as the
//! command's option, or names it as an unknown one.

use std::ffi::{OsStr, OsString};

/// A command whose last argument is a trailing spec: its words on the command line, how
/// many plain arguments come before the spec, and its options that take a value.
struct TrailingSpecCommand {
    path: &'static [&'static str],
    fixed: usize,
    options_with_value: &'static [&'static str],
}

/// Kept in step with cli.rs by `every_trailing_spec_command_is_listed` below.
const TRAILING_SPEC_COMMANDS: &[TrailingSpecCommand] = &[
    TrailingSpecCommand {
        path: &["route", "get"],
        fixed: 1,
        options_with_value: &[],
    },
    TrailingSpecCommand {
        path: &["route", "add"],
        fixed: 1,
        options_with_value: &["--protocol"],
    },
    TrailingSpecCommand {
        path: &["route", "del"],
        fixed: 1,
        options_with_value: &["--protocol"],
    },
    TrailingSpecCommand {
        path: &["route", "delete"],
        fixed: 1,
        options_with_value: &["--protocol"],
    },
    TrailingSpecCommand {
        path: &["route", "replace"],
        fixed: 1,
        options_with_value: &["--protocol"],
    },
    TrailingSpecCommand {
        path: &["route", "change"],
        fixed: 1,
        options_with_value: &["--protocol"],
    },
    TrailingSpecCommand {
        path: &["route", "append"],
        fixed: 1,
        options_with_value: &["--protocol"],
    },
    TrailingSpecCommand {
        path: &["link", "set"],
        fixed: 2,
        options_with_value: &[],
    },
    TrailingSpecCommand {
        path: &["addr", "add"],
        fixed: 1,
        options_with_value: &[],
    },
    TrailingSpecCommand {
        path: &["addr", "del"],
        fixed: 1,
        options_with_value: &[],
    },
    TrailingSpecCommand {
        path: &["addr", "delete"],
        fixed: 1,
        options_with_value: &[],
    },
];

/// The same command line with each option of a trailing-spec command moved to just after
/// the command's plain arguments (TARGET, and IFNAME for `link set`), ahead of the spec.
/// Every other command line comes back unchanged; so does everything after a `--`.
pub fn hoist_trailing_options(args: Vec<OsString>) -> Vec<OsString> {
    let is_global = |a: &OsStr| matches!(a.to_str(), Some("--verbose" | "-v" | "-vv" | "-vvv"));
    let start = 1 + args.iter().skip(1).take_while(|a| is_global(a)).count();
    let Some(command) = TRAILING_SPEC_COMMANDS.iter().find(|c| {
        c.path.len() <= args.len().saturating_sub(start)
            && c.path
                .iter()
                .zip(&args[start..])
                .all(|(want, got)| got.to_str() == Some(*want))
    }) else {
        return args;
    };
    let body = start + command.path.len();
    let mut options = Vec::new();
    let mut plain = Vec::new();
    let mut words = args[body..].iter();
    let mut after_dashes = Vec::new();
    while let Some(word) = words.next() {
        let text = word.to_str().unwrap_or("");
        if text == "--" {
            after_dashes.push(word.clone());
            after_dashes.extend(words.by_ref().cloned());
            break;
        }
        if text.len() > 1 && text.starts_with('-') {
            options.push(word.clone());
            if command.options_with_value.contains(&text) {
                options.extend(words.next().cloned());
            }
        } else {
            plain.push(word.clone());
        }
    }
    let fixed = command.fixed.min(plain.len());
    let mut out = args[..body].to_vec();
    out.extend(plain.drain(..fixed));
    out.extend(options);
    out.extend(plain);
    out.extend(after_dashes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn hoisted(line: &str) -> String {
        let args = line.split(' ').map(OsString::from).collect();
        hoist_trailing_options(args)
            .iter()
            .map(|a| a.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn options_after_the_spec_move_in_front_of_it() {
        assert_eq!(
            hoisted("machnet route get corpus 10.1.2.3 --json"),
            "machnet route get corpus --json 10.1.2.3"
        );
        assert_eq!(
            hoisted("machnet -v route add c 10.0.0.0/8 via 10.1.1.1 --protocol static -4"),
            "machnet -v route add c --protocol static -4 10.0.0.0/8 via 10.1.1.1"
        );
        assert_eq!(
            hoisted("machnet link set c eth0 up --allow-host"),
            "machnet link set c eth0 --allow-host up"
        );
        assert_eq!(
            hoisted("machnet route get --json corpus 10.1.2.3"),
            "machnet route get corpus --json 10.1.2.3"
        );
    }

    #[test]
    fn other_command_lines_are_left_alone() {
        for line in [
            "machnet routes corpus --json",
            "machnet exec corpus -- ip -j route",
            "machnet route add c -- 10.0.0.0/8 --odd",
            "machnet route",
        ] {
            assert_eq!(hoisted(line), line);
        }
    }

    /// Every subcommand with a trailing list is in the table, with every option of it that
    /// takes a value, so an option's value is never mistaken for a spec word.
    #[test]
    fn every_trailing_spec_command_is_listed() {
        fn walk(
            cmd: &clap::Command,
            path: Vec<String>,
            found: &mut Vec<(Vec<String>, Vec<String>)>,
        ) {
            for sub in cmd.get_subcommands() {
                let mut names = vec![sub.get_name().to_string()];
                names.extend(sub.get_all_aliases().map(str::to_string));
                for name in names {
                    let mut p = path.clone();
                    p.push(name);
                    walk(sub, p, found);
                }
            }
            if cmd.get_arguments().any(|a| a.is_trailing_var_arg_set()) {
                let with_value = cmd
                    .get_arguments()
                    .filter(|a| a.get_long().is_some() && a.get_action().takes_values())
                    .map(|a| format!("--{}", a.get_long().unwrap()))
                    .collect();
                found.push((path, with_value));
            }
        }
        let mut found = Vec::new();
        walk(&crate::cli::Cli::command(), Vec::new(), &mut found);
        assert!(!found.is_empty());
        for (path, with_value) in &found {
            let listed = TRAILING_SPEC_COMMANDS
                .iter()
                .find(|c| c.path.iter().eq(path.iter()))
                .unwrap_or_else(|| panic!("{path:?} takes a trailing spec but is not listed"));
            let mut mine: Vec<&str> = listed.options_with_value.to_vec();
            let mut theirs: Vec<&str> = with_value.iter().map(String::as_str).collect();
            mine.sort();
            theirs.sort();
            assert_eq!(mine, theirs, "{path:?}");
            // The plain arguments before the spec: positionals that are not the list.
            let cmd = path.iter().fold(crate::cli::Cli::command(), |c, name| {
                c.find_subcommand(name).cloned().unwrap()
            });
            let fixed = cmd
                .get_positionals()
                .filter(|a| !a.is_trailing_var_arg_set())
                .count();
            assert_eq!(listed.fixed, fixed, "{path:?}");
        }
        assert_eq!(found.len(), TRAILING_SPEC_COMMANDS.len());
    }
}
