//! Runs one child process under a memory cap (`ulimit -v`, i.e. RLIMIT_AS, set by `sh` before
//! it `exec`s the program, so no unsafe code is needed here) and a wall-clock timeout enforced
//! by the parent, which kills the child when it expires.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal (abort = 6, segfault = 11, ...).
    Signal(i32),
    /// Still running at the deadline; killed.
    Hang,
}

impl End {
    /// The class a failure is reported under, or `None` when `allowed` holds the exit status.
    pub fn failure(&self, allowed: &[i32]) -> Option<String> {
        match self {
            End::Code(c) if allowed.contains(c) => None,
            End::Code(101) => Some("panic".into()),
            End::Code(c) => Some(format!("exit-{c}")),
            End::Signal(6) => Some("abort".into()),
            End::Signal(s) => Some(format!("signal-{s}")),
            End::Hang => Some("hang".into()),
        }
    }
}

/// What a child printed and how it ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub end: End,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Runs `program args` in `dir` with `stdin` (a file) or an empty stdin, at most `mem_mb` MiB
/// of address space and `timeout`. Output goes to files in `dir` (no pipe can fill up).
pub fn run(
    program: &Path,
    args: &[String],
    dir: &Path,
    stdin: Option<&Path>,
    mem_mb: u64,
    timeout: Duration,
) -> std::io::Result<Outcome> {
    let out_p = dir.join(".stdout");
    let err_p = dir.join(".stderr");
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -v {} && exec \"$0\" \"$@\"", mem_mb * 1024))
        .arg(program)
        .args(args)
        .current_dir(dir)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::from(std::fs::File::create(&out_p)?))
        .stderr(Stdio::from(std::fs::File::create(&err_p)?));
    match stdin {
        Some(p) => cmd.stdin(Stdio::from(std::fs::File::open(p)?)),
        None => cmd.stdin(Stdio::null()),
    };
    let mut child = cmd.spawn()?;
    let start = Instant::now();
    let end = loop {
        if let Some(status) = child.try_wait()? {
            use std::os::unix::process::ExitStatusExt;
            break match (status.code(), status.signal()) {
                (Some(c), _) => End::Code(c),
                (None, Some(s)) => End::Signal(s),
                (None, None) => End::Code(-1),
            };
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break End::Hang;
        }
        let waited = start.elapsed();
        std::thread::sleep(if waited < Duration::from_millis(20) {
            Duration::from_millis(1)
        } else {
            Duration::from_millis(10)
        });
    };
    Ok(Outcome {
        end,
        stdout: std::fs::read(&out_p).unwrap_or_default(),
        stderr: std::fs::read(&err_p).unwrap_or_default(),
    })
}

/// Whether stderr keeps the error rule: on failure its last line is the only one starting with
/// `error:`; on success no line starts with `error:`.
pub fn stderr_rule_holds(end: &End, stderr: &[u8]) -> bool {
    let text = String::from_utf8_lossy(stderr);
    let errors = text.lines().filter(|l| l.starts_with("error:")).count();
    match end {
        End::Code(0) => errors == 0,
        End::Code(1 | 2) => {
            errors == 1 && text.lines().last().is_some_and(|l| l.starts_with("error:"))
        }
        _ => true,
    }
}
