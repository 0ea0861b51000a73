//! The store's contract, checked on both backends by one body per test: SQLite always,
//! PostgreSQL on the server `ATREST_TEST_DATABASE_URL` names (`scripts/test` starts a
//! throw-away one), each test in a database of its own.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use atrest_core::audit::{Alert, AuditEvent, AuditFilter, Verification};
use atrest_core::principal::{PrincipalKind, PrincipalRecord};
use atrest_core::vault::{ObjectKind, VaultRecord};

use crate::{
    Acquired, AuditLog, ChainLink, Database, RoleAssignmentRow, Store, StoreError, VersionRow,
};

/// One backend's databases for a test: the state and the audit log.
struct Backend {
    name: &'static str,
    state: Database,
    audit: Database,
    _dir: tempfile::TempDir,
}

/// SQLite, and PostgreSQL when a server is given.
fn backends() -> Vec<Backend> {
    let dir = crate::test_dir();
    let mut out = vec![Backend {
        name: "sqlite",
        state: Database::Sqlite(dir.path().join("state.db")),
        audit: Database::Sqlite(dir.path().join("audit.db")),
        _dir: dir,
    }];
    match std::env::var("ATREST_TEST_DATABASE_URL") {
        Ok(url) => {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "atrest_test_{}_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .subsec_nanos()
            );
            let target = crate::postgres::create_database(&url, &name);
            out.push(Backend {
                name: "postgres",
                state: Database::Postgres(target.clone()),
                audit: Database::Postgres(target),
                _dir: crate::test_dir(),
            });
        }
        Err(_) => eprintln!(
            "ATREST_TEST_DATABASE_URL is not set: the PostgreSQL half of this test did not run"
        ),
    }
    out
}

/// Runs `body` on each backend, naming the backend when it fails.
fn on_each_backend(body: impl Fn(&Backend)) {
    for backend in backends() {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&backend)));
        if let Err(panic) = result {
            eprintln!("failed on the {} backend", backend.name);
            std::panic::resume_unwind(panic);
        }
    }
}

fn vault(name: &str, id: &str) -> VaultRecord {
    VaultRecord {
        name: name.into(),
        vault_id: id.into(),
        subscription: "sub".into(),
        resource_group: "Group".into(),
        location: "westeurope".into(),
        tenant: "tenant".into(),
        retention_days: 90,
        purge_protection: false,
        disk_encryption: true,
        rbac: true,
        tags: BTreeMap::from([("env".into(), "test".into())]),
        access_policies: Vec::new(),
        wrapped_key: vec![1, 2, 3],
        created: 10,
        updated: 10,
        deleted: None,
        scheduled_purge: None,
    }
}

fn version(vault_id: &str, name: &str, version: &str, created: i64) -> VersionRow {
    VersionRow {
        vault_id: vault_id.into(),
        kind: ObjectKind::Secret,
        name: name.into(),
        version: version.into(),
        sealed: vec![0xAA; 40],
        public: serde_json::json!({ "contentType": "text/plain" }),
        tags: BTreeMap::new(),
        enabled: true,
        nbf: None,
        exp: Some(created + 1000),
        created,
        updated: created,
    }
}

fn principal(object_id: &str, kind: PrincipalKind, upn: Option<&str>) -> PrincipalRecord {
    PrincipalRecord {
        object_id: object_id.into(),
        app_id: format!("app-{object_id}"),
        display_name: object_id.into(),
        kind,
        secret_hash: Some(vec![7; 32]),
        is_admin: false,
        resource_id: None,
        user_principal_name: upn.map(str::to_owned),
        created: 1,
    }
}

#[test]
fn a_failed_write_leaves_nothing_and_reopening_keeps_what_was_committed() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        let r: Result<(), StoreError> = store.write(|tx| {
            tx.meta_put("k", b"v")?;
            Err(StoreError::CorruptJson("forced"))
        });
        assert!(r.is_err());
        assert_eq!(store.read(|tx| tx.meta_get("k")).unwrap(), None);
        store.write(|tx| tx.meta_put("k", b"1")).unwrap();
        store.write(|tx| tx.meta_put("k", b"2")).unwrap();
        drop(store);
        let store = Store::open(&b.state).unwrap();
        assert_eq!(
            store.read(|tx| tx.meta_get("k")).unwrap().as_deref(),
            Some(&b"2"[..])
        );
    });
}

#[test]
fn a_schema_newer_than_the_binary_is_refused() {
    on_each_backend(|b| {
        drop(Store::open(&b.state).unwrap());
        match &b.state {
            Database::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.pragma_update(None, "user_version", 999).unwrap();
            }
            Database::Postgres(target) => {
                let mut conn = crate::postgres::Conn::open(target).unwrap();
                let tx = conn
                    .begin(crate::postgres::Begin::Write { lock: 1 })
                    .unwrap();
                tx.batch("UPDATE atrest_schema SET version = 999 WHERE component = 'state'")
                    .unwrap();
                tx.commit().unwrap();
            }
        }
        match Store::open(&b.state) {
            Err(StoreError::SchemaTooNew { found: 999, .. }) => {}
            other => panic!("a newer schema was accepted: {other:?}"),
        }
    });
}

#[test]
fn vaults_are_found_by_name_whatever_its_case() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        store
            .write(|tx| {
                tx.insert_vault(&vault("Alpha", "id-a"))?;
                tx.insert_vault(&vault("beta", "id-b"))
            })
            .unwrap();
        let got = store.read(|tx| tx.vault("ALPHA")).unwrap().unwrap();
        assert_eq!(got, vault("Alpha", "id-a"));
        assert!(
            store
                .write(|tx| tx.insert_vault(&vault("alpha", "id-c")))
                .is_err(),
            "a second vault of the same name in another case"
        );
        let listed = store
            .read(|tx| tx.list_vaults("sub", Some("GROUP"), false))
            .unwrap();
        let names: Vec<&str> = listed.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["Alpha", "beta"]);
        let mut deleted = vault("beta", "id-b");
        (deleted.deleted, deleted.scheduled_purge) = (Some(20), Some(30));
        store.write(|tx| tx.update_vault(&deleted)).unwrap();
        assert_eq!(
            store.read(|tx| tx.list_vaults("sub", None, true)).unwrap(),
            vec![deleted]
        );
        assert_eq!(store.read(|tx| tx.vaults_due_for_purge(29)).unwrap(), []);
        assert_eq!(
            store.read(|tx| tx.vaults_due_for_purge(30)).unwrap().len(),
            1
        );
        store.write(|tx| tx.purge_vault("id-b")).unwrap();
        assert_eq!(store.read(|tx| tx.vault("beta")).unwrap(), None);
    });
}

#[test]
fn object_versions_list_page_by_page_and_purge_with_their_object() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        store
            .write(|tx| {
                tx.insert_vault(&vault("v", "vid"))?;
                for (i, name) in ["a", "B", "c"].iter().enumerate() {
                    tx.insert_version(&version("vid", name, &format!("{i}1"), 100))?;
                    tx.insert_version(&version("vid", name, &format!("{i}2"), 200))?;
                }
                Ok::<_, StoreError>(())
            })
            .unwrap();
        let latest = store
            .read(|tx| tx.version("vid", ObjectKind::Secret, "b", None))
            .unwrap()
            .unwrap();
        assert_eq!((latest.name.as_str(), latest.version.as_str()), ("B", "12"));
        assert_eq!(
            latest.public,
            serde_json::json!({ "contentType": "text/plain" })
        );
        let first = store
            .read(|tx| tx.version("vid", ObjectKind::Secret, "B", Some("11")))
            .unwrap()
            .unwrap();
        assert_eq!(first.created, 100);
        let page = |after: Option<&str>| {
            store
                .read(|tx| tx.list_objects("vid", ObjectKind::Secret, false, after, 2))
                .unwrap()
                .into_iter()
                .map(|(state, v)| (state.name, v.version))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            page(None),
            [("a".into(), "02".into()), ("B".into(), "12".into())]
        );
        assert_eq!(page(Some("B")), [("c".into(), "22".into())]);
        let versions = store
            .read(|tx| tx.list_versions("vid", ObjectKind::Secret, "c", 0, 10))
            .unwrap();
        assert_eq!(versions.len(), 2);
        assert!(versions[0].1 < versions[1].1, "versions come oldest first");
        let after_first = store
            .read(|tx| tx.list_versions("vid", ObjectKind::Secret, "c", versions[0].1, 10))
            .unwrap();
        assert_eq!(after_first.len(), 1);

        let mut changed = latest.clone();
        changed.enabled = false;
        changed.tags.insert("k".into(), "v".into());
        store.write(|tx| tx.update_version(&changed)).unwrap();
        let read = store
            .read(|tx| tx.version("vid", ObjectKind::Secret, "B", Some("12")))
            .unwrap();
        assert_eq!(read, Some(changed));

        store
            .write(|tx| tx.set_object_deleted("vid", ObjectKind::Secret, "a", Some((5, 50))))
            .unwrap();
        let due = store.read(|tx| tx.objects_due_for_purge(50)).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].deleted, Some(5));
        store
            .write(|tx| tx.purge_object("vid", ObjectKind::Secret, "A"))
            .unwrap();
        assert_eq!(
            store
                .read(|tx| tx.object_state("vid", ObjectKind::Secret, "a"))
                .unwrap(),
            None
        );
    });
}

#[test]
fn keys_with_a_lifetime_carry_their_policy_and_latest_version() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        let policy = serde_json::json!({ "lifetimeActions": [] });
        store
            .write(|tx| {
                tx.insert_vault(&vault("v", "vid"))?;
                let mut key = version("vid", "k1", "01", 100);
                key.kind = ObjectKind::Key;
                tx.insert_version(&key)?;
                tx.set_rotation_policy("vid", "K1", &policy)?;
                tx.set_notified_version("vid", "k1", "01")
            })
            .unwrap();
        let keys = store.read(|tx| tx.keys_with_lifetime()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].policy.as_ref(), Some(&policy));
        assert_eq!(keys[0].notified_version.as_deref(), Some("01"));
        assert_eq!(keys[0].expires, Some(1100));
        assert_eq!(
            store.read(|tx| tx.rotation_policy("vid", "k1")).unwrap(),
            Some(policy)
        );
    });
}

#[test]
fn principals_groups_and_role_assignments_round_trip() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        store
            .write(|tx| {
                tx.insert_principal(&principal(
                    "u1",
                    PrincipalKind::User,
                    Some("Alice@Contoso.com"),
                ))?;
                tx.insert_principal(&principal("g1", PrincipalKind::Group, None))?;
                let mut mi = principal("mi1", PrincipalKind::ManagedIdentity, None);
                mi.resource_id = Some("/subscriptions/S/Identity".into());
                tx.insert_principal(&mi)
            })
            .unwrap();
        let by_upn = store
            .read(|tx| tx.principal_by_upn("alice@contoso.com"))
            .unwrap();
        assert_eq!(by_upn.map(|p| p.object_id), Some("u1".into()));
        let by_resource = store
            .read(|tx| tx.principal_by_resource_id("/SUBSCRIPTIONS/s/identity"))
            .unwrap();
        assert_eq!(by_resource.map(|p| p.object_id), Some("mi1".into()));
        assert_eq!(
            store.read(|tx| tx.principal_by_app_id("app-g1")).unwrap(),
            Some(principal("g1", PrincipalKind::Group, None))
        );
        assert!(store.write(|tx| tx.add_group_member("g1", "u1")).unwrap());
        assert!(!store.write(|tx| tx.add_group_member("g1", "u1")).unwrap());
        assert_eq!(
            store.read(|tx| tx.group_memberships()).unwrap(),
            [("g1".to_owned(), "u1".to_owned())]
        );
        assert!(store
            .write(|tx| tx.set_principal_secret("u1", &[9; 32]))
            .unwrap());
        assert!(!store
            .write(|tx| tx.set_principal_secret("nobody", &[9; 32]))
            .unwrap());

        let assignment = RoleAssignmentRow {
            id: "A1".into(),
            scope: "/subscriptions/S".into(),
            role_id: "role".into(),
            principal_id: "u1".into(),
            created: 5,
        };
        store
            .write(|tx| tx.insert_role_assignment(&assignment))
            .unwrap();
        let again = RoleAssignmentRow {
            id: "A2".into(),
            scope: "/SUBSCRIPTIONS/s".into(),
            ..assignment.clone()
        };
        assert!(
            store.write(|tx| tx.insert_role_assignment(&again)).is_err(),
            "the same role at the same scope (in another case) twice"
        );
        assert_eq!(
            store.read(|tx| tx.role_assignments()).unwrap(),
            [(assignment, PrincipalKind::User)]
        );
        assert!(store.write(|tx| tx.delete_role_assignment("a1")).unwrap());
        assert!(store.write(|tx| tx.delete_principal("u1")).unwrap());
        assert_eq!(store.read(|tx| tx.group_memberships()).unwrap(), []);
        assert_eq!(
            store
                .read(|tx| tx.list_principals(PrincipalKind::Group))
                .unwrap()
                .len(),
            1
        );
    });
}

#[test]
fn resources_round_trip_case_insensitively() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        let doc = serde_json::json!({ "size": 4 });
        store
            .write(|tx| tx.put_resource("disks", "rg", "Disk1", &doc))
            .unwrap();
        let got: Option<serde_json::Value> = store
            .read(|tx| tx.resource("disks", "RG", "disk1"))
            .unwrap();
        assert_eq!(got, Some(doc));
        let other: Option<serde_json::Value> =
            store.read(|tx| tx.resource("vms", "rg", "disk1")).unwrap();
        assert_eq!(other, None);
        store
            .write(|tx| tx.insert_vault(&vault("kv", "kvid")))
            .unwrap();
        assert_eq!(
            store
                .read(|tx| tx.resource_group_contents("GROUP", "resourceGroups"))
                .unwrap(),
            [("vaults".to_owned(), "kv".to_owned())]
        );
        let listed: Vec<serde_json::Value> = store.read(|tx| tx.resources("disks", None)).unwrap();
        assert_eq!(listed.len(), 1);
        assert!(store
            .write(|tx| tx.delete_resource("disks", "rg", "DISK1"))
            .unwrap());
        assert!(!store
            .write(|tx| tx.delete_resource("disks", "rg", "disk1"))
            .unwrap());
    });
}

#[test]
fn platform_keys_keep_every_version() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        store
            .write(|tx| {
                tx.insert_platform_key(1, b"one", 10)?;
                tx.insert_platform_key(2, b"two", 20)
            })
            .unwrap();
        let keys = store.read(|tx| tx.platform_keys()).unwrap();
        assert_eq!(keys, vec![(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert!(store
            .write(|tx| tx.insert_platform_key(2, b"again", 30))
            .is_err());
    });
}

#[test]
fn writers_on_two_handles_are_serialized() {
    on_each_backend(|b| {
        // Two handles stand for two replicas: each increment reads and writes in one
        // transaction, so none may be lost.
        let stores = [
            Arc::new(Store::open(&b.state).unwrap()),
            Arc::new(Store::open(&b.state).unwrap()),
        ];
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let store = stores[i % 2].clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        store
                            .write(|tx| {
                                let n = tx
                                    .meta_get("counter")?
                                    .map_or(0, |v| u32::from_le_bytes(v.try_into().unwrap()));
                                tx.meta_put("counter", &(n + 1).to_le_bytes())
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let n = stores[0]
            .read(|tx| tx.meta_get("counter"))
            .unwrap()
            .unwrap();
        assert_eq!(u32::from_le_bytes(n.try_into().unwrap()), 100);
    });
}

fn link() -> ChainLink {
    Box::new(|prev, record| {
        let mut out = *prev;
        for (i, b) in record.iter().enumerate() {
            out[i % 32] = out[i % 32].rotate_left(5) ^ b;
        }
        out
    })
}

fn event(i: i64) -> AuditEvent {
    AuditEvent {
        time_ms: 1000 * i,
        operation: format!("Op{i}"),
        status: 200,
        ..Default::default()
    }
}

#[test]
fn two_writers_extend_one_audit_chain() {
    on_each_backend(|b| {
        let replica = |name| Arc::new(AuditLog::open(&b.audit, link(), name).unwrap());
        let (a, c) = (replica("a"), replica("b"));
        let threads: Vec<_> = [a.clone(), c.clone()]
            .into_iter()
            .enumerate()
            .map(|(w, log)| {
                std::thread::spawn(move || {
                    for i in 0..20 {
                        let e = event(100 * w as i64 + i);
                        log.append(&[e.view()]).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        match c.verify(None).unwrap() {
            Verification::Intact { events, head, .. } => {
                assert_eq!(events, 40);
                assert_eq!(head, a.head().unwrap());
            }
            broken => panic!("two writers broke the chain: {broken:?}"),
        }
        let seqs: Vec<i64> = a.export(0, 100).unwrap().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        let newest = a
            .list(&AuditFilter {
                limit: 3,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [40, 39, 38]
        );
        assert_eq!(a.hash_at(40).unwrap(), Some(a.head().unwrap().1));
        // Retention on one replica moves the anchor the other continues from.
        assert_eq!(a.prune(1_000_000).unwrap(), 40);
        c.append(&[event(7).view()]).unwrap();
        assert!(matches!(
            a.verify(None).unwrap(),
            Verification::Intact {
                events: 1,
                first_seq: 41,
                ..
            }
        ));
    });
}

#[test]
fn each_replica_recovers_its_own_journal() {
    on_each_backend(|b| {
        let dirs = [crate::test_dir(), crate::test_dir()];
        for (name, dir) in ["a", "b"].iter().zip(&dirs) {
            let log = AuditLog::open(&b.audit, link(), name).unwrap();
            let (journal, _) = log.recover_journal(dir.path()).unwrap();
            let mut record = Vec::new();
            crate::encode_record(&event(1), &mut record);
            journal.append(&record, 1).unwrap();
        }
        // Both processes died before storing their event; each restart stores its own.
        for (name, dir) in ["a", "b"].iter().zip(&dirs) {
            let log = AuditLog::open(&b.audit, link(), name).unwrap();
            let (_, recovered) = log.recover_journal(dir.path()).unwrap();
            assert_eq!(recovered.events, 1, "replica {name}");
        }
        let log = AuditLog::open(&b.audit, link(), "a").unwrap();
        assert!(matches!(
            log.verify(None).unwrap(),
            Verification::Intact { events: 2, .. }
        ));
    });
}

#[test]
fn alerts_are_counted_per_rule() {
    on_each_backend(|b| {
        let log = AuditLog::open(&b.audit, link(), "").unwrap();
        let alert = |rule: &str| Alert {
            id: 0,
            time_ms: 1,
            rule: rule.into(),
            severity: "High".into(),
            caller: None,
            resource: Some("kv".into()),
            description: "d".into(),
            correlation_id: "c".into(),
        };
        let first = log.add_alert(&alert("r1")).unwrap();
        let second = log.add_alert(&alert("r2")).unwrap();
        log.add_alert(&alert("r1")).unwrap();
        assert!(second > first);
        assert_eq!(log.alerts(2).unwrap()[1].id, second);
        assert_eq!(
            log.alert_counts().unwrap(),
            [("r1".to_owned(), 2), ("r2".to_owned(), 1)]
        );
    });
}

#[test]
fn a_lease_passes_to_another_holder_only_when_its_time_runs_out() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        let acquire = |holder: &str, ttl_ms| {
            store
                .write(|tx| tx.acquire_lease("leader", holder, ttl_ms))
                .unwrap()
        };
        assert_eq!(acquire("a", 60_000), Acquired::Held { epoch: 1 });
        match acquire("b", 60_000) {
            Acquired::HeldBy(row) => assert_eq!((row.holder.as_str(), row.epoch), ("a", 1)),
            granted => panic!("a held lease was granted: {granted:?}"),
        }
        assert_eq!(acquire("a", 0), Acquired::Held { epoch: 1 }, "renewed");
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(
            acquire("b", 60_000),
            Acquired::Held { epoch: 2 },
            "taken over"
        );
        assert!(matches!(acquire("a", 60_000), Acquired::HeldBy(_)));
        assert!(
            !store
                .write(|tx| tx.release_lease("leader", "b", 1))
                .unwrap(),
            "a stale epoch releases nothing"
        );
        assert!(store
            .write(|tx| tx.release_lease("leader", "b", 2))
            .unwrap());
        assert_eq!(
            acquire("a", 60_000),
            Acquired::Held { epoch: 3 },
            "released: free at once, the epoch still growing"
        );
        let now = store.read(|tx| tx.database_now_ms()).unwrap();
        let system = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!(
            (now - system).abs() < 5_000,
            "the database clock is {now}, the system's {system}"
        );
        store
            .write(|tx| tx.acquire_lease("disk/one", "a", 1000))
            .unwrap();
        let disks = store.read(|tx| tx.leases("disk/")).unwrap();
        assert_eq!(disks.len(), 1);
    });
}

#[test]
fn every_write_moves_the_generation() {
    on_each_backend(|b| {
        let store = Store::open(&b.state).unwrap();
        let before = store.generation().unwrap();
        store.read(|tx| tx.meta_get("k")).unwrap();
        assert_eq!(store.generation().unwrap(), before, "a read moves nothing");
        store.write(|tx| tx.meta_put("k", b"v")).unwrap();
        let after = store.generation().unwrap();
        assert!(after > before);
        if store.is_shared() {
            // Another replica's write shows in this one's generation.
            let other = Store::open(&b.state).unwrap();
            other.write(|tx| tx.meta_put("k", b"w")).unwrap();
            assert!(store.generation().unwrap() > after);
        }
    });
}
