//! Raw serde structs mirroring the YAML file.
