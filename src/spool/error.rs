//! The spool's one error type.

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// SQLite refused an operation: logged and counted; records stay in
    /// memory and the write is retried at the next commit.
    #[error("spool {what}: {source}")]
    Sql {
        what: String,
        #[source]
        source: rusqlite::Error,
    },
    /// A file operation failed (creating the directory, moving a corrupt
    /// spool aside): the store is degraded and tried again later.
    #[error("spool {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A spool stayed unreadable even after being replaced: degraded.
    #[error("spool is corrupt and could not be replaced: {0}")]
    Corrupt(String),
    /// The store cannot be written now (the reason in words): records stay in
    /// memory; the caller need not do anything, the spool retries.
    #[error("spool degraded: {0}")]
    Degraded(String),
    /// A blocking task failed to complete (runtime shutting down).
    #[error("spool task failed: {0}")]
    Task(String),
}
