//! Schema migrations, one history per backend, applied in order: SQLite records its
//! version in `PRAGMA user_version`, PostgreSQL in the `atrest_schema` table. Both backends
//! hold the same tables, columns and constraints; flags are integers on both, and
//! case-insensitive names use SQLite's `NOCASE` or an ICU collation that ignores case.

use crate::StoreError;

/// The migrations a database at schema version `current` has yet to run, with their
/// indexes; a version newer than `migrations` know is refused.
pub(crate) fn pending<'a>(
    migrations: &'a [&'a str],
    current: i64,
) -> Result<impl Iterator<Item = (usize, &'a &'a str)>, StoreError> {
    let supported = migrations.len() as i64;
    if current > supported {
        return Err(StoreError::SchemaTooNew {
            found: current,
            supported,
        });
    }
    Ok(migrations.iter().enumerate().skip(current as usize))
}

/// Migrations of the state database.
pub(crate) const STATE: &[&str] = &[
    r#"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE principals (
    object_id    TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    kind         TEXT NOT NULL,
    secret_hash  BLOB,
    is_admin     INTEGER NOT NULL DEFAULT 0,
    resource_id  TEXT,
    created      INTEGER NOT NULL
);
CREATE TABLE vaults (
    name            TEXT PRIMARY KEY COLLATE NOCASE,
    vault_id        TEXT NOT NULL UNIQUE,
    subscription    TEXT NOT NULL,
    resource_group  TEXT NOT NULL COLLATE NOCASE,
    location        TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    retention_days  INTEGER NOT NULL,
    purge_protection INTEGER NOT NULL,
    disk_encryption INTEGER NOT NULL,
    rbac            INTEGER NOT NULL,
    tags            TEXT NOT NULL,
    wrapped_key     BLOB NOT NULL,
    created         INTEGER NOT NULL,
    updated         INTEGER NOT NULL,
    deleted         INTEGER,
    scheduled_purge INTEGER
);
CREATE TABLE objects (
    vault_id        TEXT NOT NULL REFERENCES vaults(vault_id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    name            TEXT NOT NULL COLLATE NOCASE,
    deleted         INTEGER,
    scheduled_purge INTEGER,
    PRIMARY KEY (vault_id, kind, name)
);
CREATE TABLE object_versions (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    vault_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT NOT NULL COLLATE NOCASE,
    version      TEXT NOT NULL,
    sealed       BLOB NOT NULL,
    public       TEXT NOT NULL,
    tags         TEXT NOT NULL,
    enabled      INTEGER NOT NULL,
    nbf          INTEGER,
    exp          INTEGER,
    created      INTEGER NOT NULL,
    updated      INTEGER NOT NULL,
    UNIQUE (vault_id, kind, name, version),
    FOREIGN KEY (vault_id, kind, name) REFERENCES objects(vault_id, kind, name) ON DELETE CASCADE
);
CREATE INDEX object_versions_by_name ON object_versions (vault_id, kind, name, seq);
"#,
    r#"
ALTER TABLE objects ADD COLUMN rotation_policy TEXT;
"#,
    r#"
ALTER TABLE objects ADD COLUMN notified_version TEXT;
"#,
    r#"
CREATE TABLE role_assignments (
    id           TEXT PRIMARY KEY COLLATE NOCASE,
    scope        TEXT NOT NULL COLLATE NOCASE,
    role_id      TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    created      INTEGER NOT NULL,
    UNIQUE (scope, role_id, principal_id)
);
"#,
    r#"
ALTER TABLE vaults ADD COLUMN access_policies TEXT NOT NULL DEFAULT '[]';
ALTER TABLE principals ADD COLUMN user_principal_name TEXT COLLATE NOCASE;
CREATE UNIQUE INDEX principals_by_upn ON principals (user_principal_name);
CREATE TABLE group_members (
    group_id  TEXT NOT NULL REFERENCES principals(object_id) ON DELETE CASCADE,
    member_id TEXT NOT NULL REFERENCES principals(object_id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
);
"#,
    r#"
CREATE TABLE resources (
    kind           TEXT NOT NULL,
    resource_group TEXT NOT NULL COLLATE NOCASE,
    name           TEXT NOT NULL COLLATE NOCASE,
    body           TEXT NOT NULL,
    PRIMARY KEY (kind, resource_group, name)
);
CREATE TABLE platform_keys (
    version INTEGER PRIMARY KEY,
    sealed  BLOB NOT NULL,
    created INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
);
"#,
];

/// Migrations of the audit database.
pub(crate) const AUDIT: &[&str] = &[
    r#"
CREATE TABLE audit_events (
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms           INTEGER NOT NULL,
    operation         TEXT NOT NULL,
    result_signature  TEXT NOT NULL,
    result_type       TEXT NOT NULL,
    result_description TEXT NOT NULL,
    status            INTEGER NOT NULL,
    duration_ms       INTEGER NOT NULL,
    caller_ip         TEXT NOT NULL,
    app_id            TEXT,
    object_id         TEXT,
    tenant_id         TEXT,
    identity_type     TEXT,
    mi_resource_id    TEXT,
    resource          TEXT,
    target_id         TEXT,
    http_method       TEXT NOT NULL,
    request_uri       TEXT NOT NULL,
    correlation_id    TEXT NOT NULL,
    client_info       TEXT NOT NULL
);
CREATE INDEX audit_events_by_time ON audit_events (time_ms);
"#,
    r#"
ALTER TABLE audit_events ADD COLUMN prev_hash BLOB;
ALTER TABLE audit_events ADD COLUMN hash BLOB;
CREATE TABLE audit_anchor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB NOT NULL
);
"#,
    r#"
CREATE TABLE alerts (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    time_ms        INTEGER NOT NULL,
    rule           TEXT NOT NULL,
    severity       TEXT NOT NULL,
    caller         TEXT,
    resource       TEXT,
    description    TEXT NOT NULL,
    correlation_id TEXT NOT NULL
);
"#,
    r#"
CREATE TABLE audit_journal (
    id         INTEGER PRIMARY KEY CHECK (id = 1),
    generation INTEGER NOT NULL,
    records    INTEGER NOT NULL
);
"#,
    r#"
CREATE TABLE audit_blocks (
    first_seq   INTEGER PRIMARY KEY,
    last_seq    INTEGER NOT NULL,
    min_time_ms INTEGER NOT NULL,
    max_time_ms INTEGER NOT NULL,
    events      BLOB NOT NULL
);
"#,
    r#"
CREATE TABLE audit_journals (
    replica    TEXT PRIMARY KEY,
    generation INTEGER NOT NULL,
    records    INTEGER NOT NULL
);
INSERT INTO audit_journals (replica, generation, records) SELECT '', generation, records FROM audit_journal;
DROP TABLE audit_journal;
"#,
];

/// Migrations of the state database on PostgreSQL.
pub(crate) const PG_STATE: &[&str] = &[r#"
CREATE COLLATION IF NOT EXISTS atrest_nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE principals (
    object_id    TEXT PRIMARY KEY,
    app_id       TEXT NOT NULL UNIQUE,
    display_name TEXT NOT NULL,
    kind         TEXT NOT NULL,
    secret_hash  BYTEA,
    is_admin     BIGINT NOT NULL DEFAULT 0,
    resource_id  TEXT,
    created      BIGINT NOT NULL,
    user_principal_name TEXT COLLATE atrest_nocase
);
CREATE UNIQUE INDEX principals_by_upn ON principals (user_principal_name);
CREATE TABLE group_members (
    group_id  TEXT NOT NULL REFERENCES principals(object_id) ON DELETE CASCADE,
    member_id TEXT NOT NULL REFERENCES principals(object_id) ON DELETE CASCADE,
    PRIMARY KEY (group_id, member_id)
);
CREATE TABLE vaults (
    name            TEXT COLLATE atrest_nocase PRIMARY KEY,
    vault_id        TEXT NOT NULL UNIQUE,
    subscription    TEXT NOT NULL,
    resource_group  TEXT COLLATE atrest_nocase NOT NULL,
    location        TEXT NOT NULL,
    tenant          TEXT NOT NULL,
    retention_days  BIGINT NOT NULL,
    purge_protection BIGINT NOT NULL,
    disk_encryption BIGINT NOT NULL,
    rbac            BIGINT NOT NULL,
    tags            TEXT NOT NULL,
    wrapped_key     BYTEA NOT NULL,
    created         BIGINT NOT NULL,
    updated         BIGINT NOT NULL,
    deleted         BIGINT,
    scheduled_purge BIGINT,
    access_policies TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE objects (
    vault_id        TEXT NOT NULL REFERENCES vaults(vault_id) ON DELETE CASCADE,
    kind            TEXT NOT NULL,
    name            TEXT COLLATE atrest_nocase NOT NULL,
    deleted         BIGINT,
    scheduled_purge BIGINT,
    rotation_policy TEXT,
    notified_version TEXT,
    PRIMARY KEY (vault_id, kind, name)
);
CREATE TABLE object_versions (
    seq          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    vault_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    name         TEXT COLLATE atrest_nocase NOT NULL,
    version      TEXT NOT NULL,
    sealed       BYTEA NOT NULL,
    public       TEXT NOT NULL,
    tags         TEXT NOT NULL,
    enabled      BIGINT NOT NULL,
    nbf          BIGINT,
    exp          BIGINT,
    created      BIGINT NOT NULL,
    updated      BIGINT NOT NULL,
    UNIQUE (vault_id, kind, name, version),
    FOREIGN KEY (vault_id, kind, name) REFERENCES objects(vault_id, kind, name) ON DELETE CASCADE
);
CREATE INDEX object_versions_by_name ON object_versions (vault_id, kind, name, seq);
CREATE TABLE role_assignments (
    id           TEXT COLLATE atrest_nocase PRIMARY KEY,
    scope        TEXT COLLATE atrest_nocase NOT NULL,
    role_id      TEXT NOT NULL,
    principal_id TEXT NOT NULL,
    created      BIGINT NOT NULL,
    UNIQUE (scope, role_id, principal_id)
);
CREATE TABLE resources (
    kind           TEXT NOT NULL,
    resource_group TEXT COLLATE atrest_nocase NOT NULL,
    name           TEXT COLLATE atrest_nocase NOT NULL,
    body           TEXT NOT NULL,
    PRIMARY KEY (kind, resource_group, name)
);
CREATE TABLE platform_keys (
    version BIGINT PRIMARY KEY,
    sealed  BYTEA NOT NULL,
    created BIGINT NOT NULL
);
CREATE TABLE atrest_generation (
    id    BIGINT PRIMARY KEY CHECK (id = 1),
    value BIGINT NOT NULL
);
INSERT INTO atrest_generation (id, value) VALUES (1, 0);
CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    epoch      BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL
);
"#];

/// Migrations of the audit log on PostgreSQL, in the state database.
pub(crate) const PG_AUDIT: &[&str] = &[r#"
CREATE TABLE audit_blocks (
    first_seq   BIGINT PRIMARY KEY,
    last_seq    BIGINT NOT NULL,
    min_time_ms BIGINT NOT NULL,
    max_time_ms BIGINT NOT NULL,
    events      BYTEA NOT NULL
);
CREATE TABLE audit_anchor (
    id   BIGINT PRIMARY KEY CHECK (id = 1),
    seq  BIGINT NOT NULL,
    hash BYTEA NOT NULL
);
CREATE TABLE alerts (
    id             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    time_ms        BIGINT NOT NULL,
    rule           TEXT NOT NULL,
    severity       TEXT NOT NULL,
    caller         TEXT,
    resource       TEXT,
    description    TEXT NOT NULL,
    correlation_id TEXT NOT NULL
);
CREATE TABLE audit_journals (
    replica    TEXT PRIMARY KEY,
    generation BIGINT NOT NULL,
    records    BIGINT NOT NULL
);
"#];
