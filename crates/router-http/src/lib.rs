//! router-http: the thin HTTP layer.
