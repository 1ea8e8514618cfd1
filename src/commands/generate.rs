//! `machnet generate man DIR` and `machnet generate completions SHELL`, straight from the
//! clap definitions so the docs cannot drift from the parser.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::{Cli, Generate, Shell};
use crate::error::{Error, Result};

pub fn run(what: Generate) -> Result<i32> {
    match what {
        Generate::Man { dir } => write_man_pages(&dir)?,
        Generate::Completions { shell } => {
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            // Into a buffer first: clap_complete panics on a failed write, we report it.
            let mut cmd = Cli::command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd, "machnet", &mut script);
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&script)
                .and_then(|_| stdout.flush())
                .map_err(|e| Error::io("writing the completion script", e))?;
        }
    }
    Ok(0)
}

/// machnet.1, then machnet-SUBCOMMAND.1 for each subcommand (recursively).
pub fn write_man_pages(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut cmd = Cli::command();
    cmd.build();
    write_page(&cmd, dir)
}

fn write_page(cmd: &clap::Command, dir: &Path) -> Result<()> {
    let name = cmd
        .get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_string();
    let path = dir.join(format!("{name}.1"));
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .render(&mut page)
        .map_err(|e| Error::io("rendering a man page", e))?;
    std::fs::write(&path, page).map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        write_page(sub, dir)?;
    }
    Ok(())
}
