//! Running external commands with their output shown as it comes.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The cargo that started us (cargo sets `CARGO` for `cargo run`), so a toolchain
/// chosen with `cargo +x xtask` is the one used for every step.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Runs `command` in `dir`, inheriting stdout and stderr, and fails unless it exits 0.
pub fn run(dir: &Path, command: &mut Command) -> Result<()> {
    command.current_dir(dir);
    let shown = display(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` in `dir` and returns its stdout; stderr is shown as it comes.
pub fn output(dir: &Path, command: &mut Command) -> Result<String> {
    command.current_dir(dir);
    let shown = display(command);
    let output = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !output.status.success() {
        bail!("`{shown}` failed ({})", output.status);
    }
    String::from_utf8(output.stdout).with_context(|| format!("`{shown}` printed invalid UTF-8"))
}

/// Whether `command` starts and exits 0, with its output discarded: used to probe for
/// optional tools such as cargo-nextest.
pub fn succeeds(command: &mut Command) -> bool {
    command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

fn display(command: &Command) -> String {
    // Our own cargo is shown as `cargo`; anything else (a venv's python) in full, so
    // the log says which one ran.
    let program = if std::env::var_os("CARGO").as_deref() == Some(command.get_program()) {
        "cargo".to_owned()
    } else {
        command.get_program().to_string_lossy().into_owned()
    };
    std::iter::once(program)
        .chain(
            command
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ")
}
