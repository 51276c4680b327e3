//! The only place that parses YAML.
