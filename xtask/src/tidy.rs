//! `cargo xtask tidy`: the architecture invariants of DESIGN.md §2 and STYLE.md, checked
//! against what cargo actually resolves rather than what a reader believes.
//!
//! Each rule says why it exists; a violation names the crate, the offending package and
//! the rule, and every violation is reported in one run.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::metadata::{DependencyKind, Metadata};
use crate::process;

/// The library crates the binary wires together.
const LIBRARY_CRATES: [&str; 4] = [
    "router-core",
    "router-limits",
    "router-providers",
    "router-http",
];

/// The only crate allowed to see every library crate.
const BINARY_CRATE: &str = "router-server";

/// Packages that must not be reachable through a crate's normal dependencies (with all
/// of its features on), whatever the rest of the workspace enables. A rule whose crate
/// is not a workspace member is skipped (the examples may come and go); the crates of
/// DESIGN.md §2 are required by `check_members_exist`.
struct ForbiddenReach {
    krate: &'static str,
    forbidden: &'static [&'static str],
    why: &'static str,
}

const FORBIDDEN_REACH: &[ForbiddenReach] = &[
    ForbiddenReach {
        krate: "router-core",
        forbidden: &[
            "router-limits",
            "router-providers",
            "router-http",
            "router-server",
        ],
        why: "router-core is the bottom layer: the other router crates depend on it, never the reverse",
    },
    ForbiddenReach {
        krate: "router-core",
        forbidden: &[
            "hyper",
            "hyper-util",
            "hyper-rustls",
            "h2",
            "reqwest",
            "governor",
            "rustls",
            "tokio-rustls",
            "rusqlite",
            "libsqlite3-sys",
            "redis",
            "tokio-postgres",
            "deadpool-postgres",
        ],
        why: "router-core has no sockets, HTTP, TLS, limiter or storage backend, so an embedder gets the engine without them",
    },
    ForbiddenReach {
        krate: "router-http",
        forbidden: &["router-providers", "router-limits", "router-server"],
        why: "router-http is the thin HTTP layer: it reaches the engine through router-core only",
    },
    ForbiddenReach {
        krate: "router-providers",
        forbidden: &["router-http", "router-limits", "router-server"],
        why: "implementations depend on router-core only; only the binary wires them together",
    },
    ForbiddenReach {
        krate: "router-limits",
        forbidden: &["router-http", "router-providers", "router-server"],
        why: "implementations depend on router-core only; only the binary wires them together",
    },
    ForbiddenReach {
        krate: "example-custom-provider",
        forbidden: &[
            "router-limits",
            "router-providers",
            "router-http",
            "router-server",
        ],
        why: "a third-party provider is a crate that depends on router-core alone",
    },
    ForbiddenReach {
        krate: "example-ollama-provider",
        forbidden: &[
            "router-limits",
            "router-providers",
            "router-http",
            "router-server",
        ],
        why: "a third-party provider is a crate that depends on router-core alone",
    },
    ForbiddenReach {
        krate: "example-embedded",
        forbidden: &["router-http", "router-server"],
        why: "the embedding example shows the engine used as a library, without the HTTP server",
    },
];

/// The limiter and the stores behind the limiter, usage and health ports:
/// only router-limits may depend on them (other crates' tests may, to look
/// inside a ledger file), so the engine and the server stay free of any one
/// store.
const STORE_ENGINES: &[&str] = &[
    "governor",
    "redis",
    "rusqlite",
    "tokio-postgres",
    "deadpool-postgres",
];

/// Packages that must not appear anywhere in the resolved graph (all members, all
/// dependency kinds, all platforms).
const FORBIDDEN_ANYWHERE: &[&str] = &[
    "openssl-sys",
    "openssl",
    "native-tls",
    "aws-lc-sys",
    "aws-lc-fips-sys",
    "aws-lc-rs",
];

#[derive(Debug)]
struct Violation {
    rule: &'static str,
    detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.rule, self.detail)
    }
}

pub fn run(root: &Path) -> Result<()> {
    let metadata = Metadata::load(root)?;
    let mut violations = Vec::new();

    check_members_exist(&metadata, &mut violations);
    check_forbidden_reach(root, &metadata, &mut violations)?;
    check_direct_dependencies(&metadata, &mut violations);
    check_forbidden_anywhere(&metadata, &mut violations);
    check_crate_docs(&metadata, &mut violations)?;
    check_workspace_lints(&metadata, &mut violations)?;
    check_crates_are_members(root, &metadata, &mut violations)?;

    if violations.is_empty() {
        println!("tidy: all architecture invariants hold");
        return Ok(());
    }
    for violation in &violations {
        println!("tidy: {violation}");
    }
    bail!("tidy found {} violation(s)", violations.len())
}

fn check_members_exist(metadata: &Metadata, violations: &mut Vec<Violation>) {
    for name in LIBRARY_CRATES.iter().chain([&BINARY_CRATE]) {
        if metadata.member(name).is_none() {
            violations.push(Violation {
                rule: "layout",
                detail: format!(
                    "{name} is not a workspace member; the rules below cannot check it"
                ),
            });
        }
    }
}

fn check_forbidden_reach(
    root: &Path,
    metadata: &Metadata,
    violations: &mut Vec<Violation>,
) -> Result<()> {
    // One `cargo tree` per crate, however many rules name it.
    let mut closures: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for rule in FORBIDDEN_REACH {
        if metadata.member(rule.krate).is_some() && !closures.contains_key(rule.krate) {
            closures.insert(rule.krate, normal_dependency_closure(root, rule.krate)?);
        }
    }
    for rule in FORBIDDEN_REACH {
        let Some(reachable) = closures.get(rule.krate) else {
            continue;
        };
        for forbidden in rule.forbidden {
            if reachable.contains(*forbidden) {
                violations.push(Violation {
                    rule: "layering",
                    detail: format!(
                        "{} depends (normal deps, all features) on {forbidden}: {}. \
                         See who pulls it: cargo tree -p {} -e normal --all-features -i {forbidden}",
                        rule.krate, rule.why, rule.krate
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Every package a crate pulls in through normal dependencies, with all its features,
/// on every platform, resolved as if it were built alone (so features that other
/// members turn on do not hide or add anything).
fn normal_dependency_closure(root: &Path, krate: &str) -> Result<BTreeSet<String>> {
    let tree = process::output(
        root,
        process::cargo().args([
            "tree",
            "--package",
            krate,
            "--edges",
            "normal",
            "--all-features",
            "--target",
            "all",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ]),
    )?;
    let mut names = tree_package_names(&tree);
    // The crate itself is the first line; it is not its own dependency.
    names.remove(krate);
    Ok(names)
}

/// The package names in `cargo tree --prefix none --format {p}` output: the first word
/// of each line (`hyper v1.6.0 (*)`, `router-core v0.1.0 (/path)`).
fn tree_package_names(tree: &str) -> BTreeSet<String> {
    tree.lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

fn check_direct_dependencies(metadata: &Metadata, violations: &mut Vec<Violation>) {
    if let Some(core) = metadata.member("router-core") {
        for dependency in &core.dependencies {
            if dependency.name.starts_with("router-") {
                violations.push(Violation {
                    rule: "layering",
                    detail: format!(
                        "router-core names {} as a {} dependency: router-core depends on no other router crate, not even in tests",
                        dependency.name,
                        match dependency.kind {
                            DependencyKind::Normal => "normal",
                            DependencyKind::Dev => "dev",
                            DependencyKind::Build => "build",
                        }
                    ),
                });
            }
            if dependency.name == "tokio"
                && dependency.kind == DependencyKind::Normal
                && dependency.features.iter().any(|feature| feature == "net")
            {
                violations.push(Violation {
                    rule: "layering",
                    detail:
                        "router-core asks for tokio's `net` feature: router-core opens no sockets"
                            .to_owned(),
                });
            }
        }
    }

    for member in &metadata.members {
        if let Some(engine) = member.dependencies.iter().find(|dependency| {
            member.name != "router-limits"
                && dependency.kind == DependencyKind::Normal
                && STORE_ENGINES.contains(&dependency.name.as_str())
        }) {
            violations.push(Violation {
                rule: "layering",
                detail: format!(
                    "{} names {}: only router-limits talks to the limits' and the ledger's stores, everyone else goes through the limiter, usage and health ports",
                    member.name, engine.name
                ),
            });
        }

        let sees_every_library = LIBRARY_CRATES.iter().all(|library| {
            member.dependencies.iter().any(|dependency| {
                dependency.kind == DependencyKind::Normal && dependency.name == *library
            })
        });
        if member.name == BINARY_CRATE && !sees_every_library {
            violations.push(Violation {
                rule: "layering",
                detail: format!(
                    "{BINARY_CRATE} does not depend on every library crate ({}): it is the one place they are wired together",
                    LIBRARY_CRATES.join(", ")
                ),
            });
        }
        if member.name != BINARY_CRATE && sees_every_library {
            violations.push(Violation {
                rule: "layering",
                detail: format!(
                    "{} depends on every library crate: only {BINARY_CRATE} sees all of them",
                    member.name
                ),
            });
        }
    }
}

fn check_forbidden_anywhere(metadata: &Metadata, violations: &mut Vec<Violation>) {
    let present: BTreeSet<&str> = metadata
        .all_package_names
        .iter()
        .map(String::as_str)
        .collect();
    for forbidden in FORBIDDEN_ANYWHERE {
        if present.contains(forbidden) {
            violations.push(Violation {
                rule: "tls",
                detail: format!(
                    "{forbidden} is in the dependency graph: TLS is rustls with ring, with no C crypto library to build or link. \
                     See who pulls it: cargo tree --workspace --target all -e all -i {forbidden}"
                ),
            });
        }
    }
}

fn check_crate_docs(metadata: &Metadata, violations: &mut Vec<Violation>) -> Result<()> {
    for member in &metadata.members {
        let Some(lib_path) = &member.lib_path else {
            continue;
        };
        let source = std::fs::read_to_string(lib_path)
            .with_context(|| format!("reading {}", lib_path.display()))?;
        if !opens_with_inner_doc(&source) {
            violations.push(Violation {
                rule: "docs",
                detail: format!(
                    "{} does not open with a `//!` comment saying what {} owns and what it does not",
                    lib_path.display(),
                    member.name
                ),
            });
        }
    }
    Ok(())
}

fn opens_with_inner_doc(source: &str) -> bool {
    source
        .lines()
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.trim_start().starts_with("//!"))
}

fn check_workspace_lints(metadata: &Metadata, violations: &mut Vec<Violation>) -> Result<()> {
    for member in &metadata.members {
        let manifest = std::fs::read_to_string(&member.manifest_path)
            .with_context(|| format!("reading {}", member.manifest_path.display()))?;
        if !inherits_workspace_lints(&manifest) {
            violations.push(Violation {
                rule: "lints",
                detail: format!(
                    "{} does not inherit the workspace lints: add `[lints]` with `workspace = true` to {}",
                    member.name,
                    member.manifest_path.display()
                ),
            });
        }
    }
    Ok(())
}

/// Whether a manifest says `lints.workspace = true`, in any of the three ways TOML
/// allows it to be written. A line scan is enough for cargo manifests and keeps toml
/// out of xtask's dependencies.
fn inherits_workspace_lints(manifest: &str) -> bool {
    let mut table = String::new();
    for line in manifest.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if let Some(header) = line.strip_prefix('[') {
            table = header.trim_end_matches(']').trim().to_owned();
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        let value: String = value.chars().filter(|c| !c.is_whitespace()).collect();
        let inherits = match (table.as_str(), key) {
            ("lints", "workspace") | ("", "lints.workspace") => value == "true",
            ("", "lints") => value == "{workspace=true}",
            _ => false,
        };
        if inherits {
            return true;
        }
    }
    false
}

fn check_crates_are_members(
    root: &Path,
    metadata: &Metadata,
    violations: &mut Vec<Violation>,
) -> Result<()> {
    let crates_dir = root.join("crates");
    let entries = std::fs::read_dir(&crates_dir)
        .with_context(|| format!("listing {}", crates_dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        let manifest = path.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let is_member = metadata.members.iter().any(|member| {
            member
                .manifest_path
                .canonicalize()
                .ok()
                .zip(manifest.canonicalize().ok())
                .is_some_and(|(a, b)| a == b)
        });
        if !is_member {
            violations.push(Violation {
                rule: "layout",
                detail: format!(
                    "{} is not listed in the root Cargo.toml's workspace members",
                    path.display()
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_lints(manifest: &str, expected: bool) {
        assert_eq!(inherits_workspace_lints(manifest), expected, "{manifest}");
    }

    #[test]
    fn workspace_lints_are_recognised_in_every_spelling() {
        check_lints(
            "[package]\nname = \"a\"\n\n[lints]\nworkspace = true\n",
            true,
        );
        check_lints("[lints]\nworkspace=true # inherit\n", true);
        check_lints("lints.workspace = true\n[package]\nname = \"a\"\n", true);
        check_lints("lints = { workspace = true }\n", true);
    }

    #[test]
    fn missing_or_disabled_workspace_lints_are_refused() {
        check_lints("[package]\nname = \"a\"\n", false);
        check_lints("[lints]\nworkspace = false\n", false);
        check_lints("[lints.rust]\nworkspace = true\n", false);
        check_lints("[package]\nlints.workspace = true\n", false);
        check_lints("# [lints]\n# workspace = true\n", false);
    }

    #[test]
    fn crate_docs_must_come_first() {
        assert!(opens_with_inner_doc("//! The core.\nmod a;\n"));
        assert!(opens_with_inner_doc("\n//! The core.\n"));
        assert!(!opens_with_inner_doc("/// Not inner.\nmod a;\n"));
        assert!(!opens_with_inner_doc("mod a;\n//! late\n"));
        assert!(!opens_with_inner_doc(""));
    }

    #[test]
    fn tree_lines_give_package_names() {
        let tree = "router-core v0.1.0 (/w/crates/router-core)\n\
                    async-trait v0.1.92 (proc-macro)\n\
                    hyper v1.6.0\n\
                    hyper v1.6.0 (*)\n\n";
        let names: Vec<String> = tree_package_names(tree).into_iter().collect();
        assert_eq!(names, ["async-trait", "hyper", "router-core"]);
    }
}
