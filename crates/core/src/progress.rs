//! Progress bars that disappear when stdout is not a terminal (CI logs, pipes, tests).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `len` steps labelled `msg`; hidden unless stdout is a terminal.
pub fn bar(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if std::io::stdout().is_terminal() {
        pb.set_draw_target(ProgressDrawTarget::stderr());
    } else {
        pb.set_draw_target(ProgressDrawTarget::hidden());
    }
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>16} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {per_sec}",
    ) {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.into());
    pb
}
