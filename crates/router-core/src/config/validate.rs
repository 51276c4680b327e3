//! Raw structs to a validated [`Config`].
use std::path::Path;

use super::{Config, ConfigErrors};

/// Reads and validates a config file. `env` looks up `${VAR}` references.
pub fn load_file(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let _ = (path, env);
    todo!()
}

/// Validates config text. `file` is used in messages only.
pub fn parse(file: &Path, text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let _ = (file, text, env);
    todo!()
}
