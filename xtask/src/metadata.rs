//! The parts of `cargo metadata --format-version 1` that xtask reads, as plain structs,
//! so the checks in `tidy` read like the rules they enforce and not like JSON walking.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::Value;

use crate::process;

/// Which section of a manifest declares a dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependencyKind {
    Normal,
    Dev,
    Build,
}

#[derive(Debug, Clone)]
pub struct Dependency {
    /// The package name, not the rename: a renamed `hyper` is still hyper.
    pub name: String,
    pub kind: DependencyKind,
    /// Features requested in this member's manifest (not the unified set).
    pub features: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Member {
    pub name: String,
    pub manifest_path: PathBuf,
    pub dependencies: Vec<Dependency>,
    /// The `src/lib.rs` (or whatever path) of the library target, when there is one.
    pub lib_path: Option<PathBuf>,
}

#[derive(Debug)]
pub struct Metadata {
    pub target_directory: PathBuf,
    pub members: Vec<Member>,
    /// Names of every package in the resolved graph: all members, all dependency
    /// kinds, all platforms.
    pub all_package_names: Vec<String>,
}

impl Metadata {
    pub fn load(root: &Path) -> Result<Self> {
        let json = process::output(
            root,
            process::cargo().args(["metadata", "--format-version", "1"]),
        )?;
        parse(&json)
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.name == name)
    }
}

fn parse(json: &str) -> Result<Metadata> {
    let value: Value = serde_json::from_str(json).context("`cargo metadata` printed bad JSON")?;
    let target_directory = PathBuf::from(str_field(&value, "target_directory")?);
    let member_ids: Vec<&str> = array_field(&value, "workspace_members")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let packages = array_field(&value, "packages")?;

    let mut members = Vec::new();
    let mut all_package_names = Vec::new();
    for package in packages {
        let name = str_field(package, "name")?.to_owned();
        all_package_names.push(name.clone());
        if member_ids.contains(&str_field(package, "id")?) {
            members.push(parse_member(package, name)?);
        }
    }
    Ok(Metadata {
        target_directory,
        members,
        all_package_names,
    })
}

fn parse_member(package: &Value, name: String) -> Result<Member> {
    let dependencies = array_field(package, "dependencies")?
        .iter()
        .map(|dependency| {
            let kind = match dependency.get("kind").and_then(Value::as_str) {
                None => DependencyKind::Normal,
                Some("dev") => DependencyKind::Dev,
                Some("build") => DependencyKind::Build,
                Some(other) => anyhow::bail!("unknown dependency kind `{other}`"),
            };
            let features = dependency
                .get("features")
                .and_then(Value::as_array)
                .map(|features| {
                    features
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            Ok(Dependency {
                name: str_field(dependency, "name")?.to_owned(),
                kind,
                features,
            })
        })
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("reading the dependencies of {name}"))?;
    let lib_path = array_field(package, "targets")?
        .iter()
        .find(|target| {
            target
                .get("kind")
                .and_then(Value::as_array)
                .is_some_and(|kinds| kinds.iter().any(|kind| kind == "lib"))
        })
        .map(|target| str_field(target, "src_path").map(PathBuf::from))
        .transpose()?;
    Ok(Member {
        manifest_path: PathBuf::from(str_field(package, "manifest_path")?),
        name,
        dependencies,
        lib_path,
    })
}

fn str_field<'a>(value: &'a Value, field: &str) -> Result<&'a str> {
    value
        .get(field)
        .and_then(Value::as_str)
        .with_context(|| format!("`cargo metadata` output has no string `{field}`"))
}

fn array_field<'a>(value: &'a Value, field: &str) -> Result<&'a Vec<Value>> {
    value
        .get(field)
        .and_then(Value::as_array)
        .with_context(|| format!("`cargo metadata` output has no array `{field}`"))
}
