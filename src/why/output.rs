//! `why`'s hops as text (one line a hop, the fix under the first failure) and as JSON.

use super::{Hop, Verdict};

/// One line a hop: its mark, where, what, and why; a failed hop's rule and fix follow it,
/// indented.
pub fn text(hops: &[Hop]) -> String {
    let width = hops.iter().map(|h| h.namespace.len()).max().unwrap_or(0);
    let hop_width = hops.iter().map(|h| h.hop.len()).max().unwrap_or(0);
    let mut out = String::new();
    for h in hops {
        let mark = match h.verdict {
            Verdict::Pass => "✔",
            Verdict::Fail => "✘",
            Verdict::Unknown => "?",
        };
        out.push_str(&format!(
            "{mark} {:width$}  {:hop_width$}  {}\n",
            h.namespace, h.hop, h.reason
        ));
        for event in &h.trace {
            out.push_str(&format!("    trace: {event}\n"));
        }
        if let Some(rule) = &h.rule {
            out.push_str(&format!("    rule: {rule}\n"));
        }
        if let Some(fix) = &h.fix {
            out.push_str(&format!("    fix: {}\n", fix.command));
            if let Some(nixos) = &fix.nixos {
                out.push_str(&format!("    NixOS: {nixos}\n"));
            }
        }
    }
    out
}

pub fn json(hops: &[Hop]) -> String {
    let mut out = serde_json::to_string(hops).expect("hops serialize");
    out.push('\n');
    out
}
