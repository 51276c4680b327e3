//! `cargo xtask conformance`: the real OpenAI SDKs against a running router-server.
//!
//! Two clients, because they fail differently: the official Python `openai` package
//! (what most users run) and the Rust `async-openai` crate (strict deserialization, so
//! a missing or mistyped field fails loudly). Each check starts its own router-server
//! on port 0 with a config it writes itself, so nothing here depends on free ports or
//! on the repository's config file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::metadata::Metadata;
use crate::process;

const CONFORMANCE_DIR: &str = "crates/router-server/tests/conformance";
const REQUIREMENTS: &str = "requirements.txt";
const PYTHON_CHECKS: &str = "test_openai_sdk.py";
/// Written into the venv after a successful install: when it matches requirements.txt
/// the venv is reused as it is.
const INSTALLED_STAMP: &str = "installed-requirements.txt";

pub fn run(root: &Path) -> Result<()> {
    let metadata = Metadata::load(root)?;
    let server = build_server(root, &metadata.target_directory)?;

    let conformance_dir = root.join(CONFORMANCE_DIR);
    let venv = metadata.target_directory.join("conformance-venv");
    let python = prepare_venv(root, &venv, &conformance_dir.join(REQUIREMENTS))?;

    println!("\n--> conformance: Python openai SDK");
    process::run(
        root,
        Command::new(&python)
            // Keep __pycache__ out of the source tree.
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .arg(conformance_dir.join(PYTHON_CHECKS))
            .arg("--server")
            .arg(&server),
    )
    .context("the Python openai SDK conformance checks failed")?;

    println!("\n--> conformance: Rust async-openai");
    // `--workspace` resolves features as the test step did, so its build is reused.
    process::run(
        root,
        process::cargo()
            .args(["test", "--workspace", "--test", "conformance_async_openai"])
            .env("ROUTER_SERVER_BIN", &server),
    )
    .context("the async-openai conformance test failed")?;
    println!("conformance: both SDKs agree with router-server");
    Ok(())
}

/// Builds router-server as a user would (`cargo build -p router-server`, so without
/// the features that dev-dependencies turn on) and copies it out of `target/debug`,
/// where test builds of the same binary would replace it.
fn build_server(root: &Path, target_directory: &Path) -> Result<PathBuf> {
    process::run(
        root,
        process::cargo().args(["build", "--package", "router-server"]),
    )?;
    let built = target_directory.join("debug").join("router-server");
    let copy_dir = target_directory.join("conformance");
    let copy = copy_dir.join("router-server");
    std::fs::create_dir_all(&copy_dir)
        .with_context(|| format!("creating {}", copy_dir.display()))?;
    std::fs::copy(&built, &copy)
        .with_context(|| format!("copying {} to {}", built.display(), copy.display()))?;
    Ok(copy)
}

/// Creates (or reuses) the venv and returns its python. Reuse needs the stamp to match
/// the requirements file byte for byte and the SDK to import.
fn prepare_venv(root: &Path, venv: &Path, requirements: &Path) -> Result<PathBuf> {
    let wanted = std::fs::read_to_string(requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let python = venv.join("bin").join("python");
    let stamp = venv.join(INSTALLED_STAMP);

    if python.is_file()
        && std::fs::read_to_string(&stamp).is_ok_and(|installed| installed == wanted)
        && process::succeeds(Command::new(&python).args(["-c", "import openai"]))
    {
        println!("reusing {}", venv.display());
        return Ok(python);
    }

    if !python.is_file() {
        process::run(
            root,
            Command::new("python3").arg("-m").arg("venv").arg(venv),
        )
        .context(
            "could not create the conformance venv: python3 with the venv module is needed \
             (on Debian: apt-get install python3-venv)",
        )?;
    }
    process::run(
        root,
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--requirement",
            ])
            .arg(requirements),
    )
    .context("could not install the Python conformance requirements from PyPI")?;
    std::fs::write(&stamp, &wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}
