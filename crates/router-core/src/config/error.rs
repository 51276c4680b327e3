//! Config errors: every problem with its file, field path and line.
use std::fmt;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Field path such as `models[2].base_url`; empty for the whole file.
    pub path: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Every problem found in one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems in the order they should be shown (by line).
    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem before it is tied to a file: what the loading phases collect.
/// `line` is filled in from the field path at the end unless the YAML parser
/// already knew it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub(super) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(line: Option<usize>, path: &str, message: &str) -> ConfigError {
        ConfigError {
            file: PathBuf::from("config.yaml"),
            path: path.to_owned(),
            line,
            message: message.to_owned(),
        }
    }

    fn check(errors: &[ConfigError], expected: &str) {
        assert_eq!(ConfigErrors(errors.to_vec()).to_string(), expected);
    }

    #[test]
    fn display_is_file_line_path_message() {
        check(
            &[error(
                Some(14),
                "models[2].bse_url",
                "unknown field, did you mean `base_url`?",
            )],
            "config.yaml:14: models[2].bse_url: unknown field, did you mean `base_url`?",
        );
        check(
            &[error(None, "server.port", "bad")],
            "config.yaml: server.port: bad",
        );
        check(
            &[error(Some(1), "", "the file is empty")],
            "config.yaml:1: the file is empty",
        );
        check(
            &[error(Some(1), "a", "x"), error(None, "", "y")],
            "config.yaml:1: a: x\nconfig.yaml: y",
        );
    }
}
