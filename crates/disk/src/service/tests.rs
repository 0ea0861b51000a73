//! The compute service against an in-memory vault: customer-key disks written and read
//! through their open files, revocation and its return, rotation by rewrap, refused
//! access, and platform-key disks that never reach a vault. The real vault path (the
//! in-process client of `atrest-api`) is covered by the HTTP and SDK suites.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use atrest_crypto::{DataKey, RootKey, TokenSigner};
use atrest_identity::Identity;
use atrest_store::Store;
use zeroize::Zeroizing;

use super::*;
use crate::keys::{KeyDescription, KeyFuture, KeyVersion, PlatformSecret, VaultDescription};
use crate::model::WrappedDek;

const RG: &str = "rg";
const LOCATION: &str = "westeurope";
const KEY: &str = "https://kv1.vault.localhost:8443/keys/cmk";

/// The URL of version `v1`, `v2`, …: a 32-digit version like Key Vault's.
fn version_url(version: &str) -> String {
    format!("{KEY}/{}", version.trim_start_matches('v').repeat(32))
}

/// A vault holding one key name with versions that wrap with AES-GCM: it records who
/// called what, and refuses disabled versions and denied identities as Key Vault would.
#[derive(Debug, Default)]
struct MemoryVault(Mutex<VaultState>);

#[derive(Debug, Default)]
struct VaultState {
    /// Versioned key URL → (wrapping key, enabled).
    versions: HashMap<String, (Arc<DataKey>, bool)>,
    latest: Option<String>,
    denied: HashSet<String>,
    /// (operation, identity, key URL) of every call made as an identity.
    calls: Vec<(&'static str, String, String)>,
    /// Secret URL → (value, content type, tags).
    secrets: HashMap<String, (String, String, BTreeMap<String, String>)>,
}

fn refused(status: u16, code: &str) -> KeyAccessError {
    KeyAccessError {
        status,
        code: code.to_owned(),
        message: format!("refused: {code}"),
    }
}

impl MemoryVault {
    fn state(&self) -> std::sync::MutexGuard<'_, VaultState> {
        self.0.lock().unwrap()
    }

    fn add_version(&self, version: &str) {
        let mut state = self.state();
        state
            .versions
            .insert(version_url(version), (Arc::new(DataKey::generate()), true));
        state.latest = Some(version_url(version));
    }

    fn set_enabled(&self, version: &str, enabled: bool) {
        self.state()
            .versions
            .get_mut(&version_url(version))
            .expect("a known version")
            .1 = enabled;
    }

    /// The wrapping key of `key_url` if `identity` may use it now.
    fn usable(
        &self,
        operation: &'static str,
        identity: &str,
        key_url: &str,
    ) -> Result<Arc<DataKey>, KeyAccessError> {
        let mut state = self.state();
        state
            .calls
            .push((operation, identity.to_owned(), key_url.to_owned()));
        if state.denied.contains(identity) {
            return Err(refused(403, "ForbiddenByRbac"));
        }
        match state.versions.get(key_url) {
            None => Err(refused(404, "KeyNotFound")),
            Some((_, false)) => Err(refused(403, "KeyDisabled")),
            Some((key, true)) => Ok(key.clone()),
        }
    }
}

impl KeyVaultAccess for MemoryVault {
    fn describe_vault(&self, vault: &str) -> Result<VaultDescription, KeyAccessError> {
        Ok(VaultDescription {
            resource_id: format!(
                "/subscriptions/sub/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{vault}"
            ),
            location: LOCATION.to_owned(),
            enabled_for_disk_encryption: true,
            uri: format!("https://{vault}.vault.localhost:8443"),
        })
    }

    fn set_secret<'a>(
        &'a self,
        identity: &'a str,
        vault: &'a str,
        name: &'a str,
        secret: &'a PlatformSecret,
    ) -> KeyFuture<'a, String> {
        Box::pin(async move {
            let url = format!("https://{vault}.vault.localhost:8443/secrets/{name}/1");
            let mut state = self.state();
            state
                .calls
                .push(("setSecret", identity.to_owned(), url.clone()));
            state.secrets.insert(
                url.clone(),
                (
                    secret.value.to_string(),
                    secret.content_type.clone(),
                    secret.tags.clone(),
                ),
            );
            Ok(url)
        })
    }

    fn create_key<'a>(
        &'a self,
        identity: &'a str,
        vault: &'a str,
        name: &'a str,
        _key_size: u32,
    ) -> KeyFuture<'a, KeyVersion> {
        Box::pin(async move {
            let kid = format!(
                "https://{vault}.vault.localhost:8443/keys/{name}/{}",
                atrest_crypto::random_uuid().replace('-', "")
            );
            let mut state = self.state();
            state
                .calls
                .push(("createKey", identity.to_owned(), kid.clone()));
            state
                .versions
                .insert(kid.clone(), (Arc::new(DataKey::generate()), true));
            Ok(KeyVersion { kid })
        })
    }

    fn backup_key<'a>(&'a self, identity: &'a str, key_url: &'a str) -> KeyFuture<'a, Vec<u8>> {
        Box::pin(async move {
            self.usable("backup", identity, key_url)?;
            Ok(key_url.as_bytes().to_vec())
        })
    }

    fn get_secret<'a>(
        &'a self,
        identity: &'a str,
        secret_url: &'a str,
    ) -> KeyFuture<'a, PlatformSecret> {
        Box::pin(async move {
            let mut state = self.state();
            state
                .calls
                .push(("getSecret", identity.to_owned(), secret_url.to_owned()));
            if state.denied.contains(identity) {
                return Err(refused(403, "ForbiddenByPolicy"));
            }
            let (value, content_type, tags) = state
                .secrets
                .get(secret_url)
                .cloned()
                .ok_or(refused(404, "SecretNotFound"))?;
            Ok(PlatformSecret {
                value: Zeroizing::new(value),
                content_type,
                tags,
            })
        })
    }

    fn describe(
        &self,
        vault: &str,
        key: &str,
        version: &str,
    ) -> Result<KeyDescription, KeyAccessError> {
        let state = self.state();
        let found = state.versions.get(&format!(
            "https://{vault}.vault.localhost:8443/keys/{key}/{version}"
        ));
        Ok(KeyDescription {
            vault_resource_id: format!(
                "/subscriptions/sub/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/{vault}"
            ),
            vault_location: LOCATION.to_owned(),
            purge_protection: true,
            kty: found.map(|_| "RSA".to_owned()),
            key_size: found.map(|_| 2048),
            usable: found.is_some_and(|(_, enabled)| *enabled),
            certificate: false,
        })
    }

    fn get_key<'a>(&'a self, identity: &'a str, key_url: &'a str) -> KeyFuture<'a, KeyVersion> {
        Box::pin(async move {
            let kid = if key_url.trim_end_matches('/') == KEY {
                self.state()
                    .latest
                    .clone()
                    .ok_or(refused(404, "KeyNotFound"))?
            } else {
                key_url.to_owned()
            };
            self.usable("get", identity, &kid)?;
            Ok(KeyVersion { kid })
        })
    }

    fn wrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        _alg: &'a str,
        dek: &'a [u8],
    ) -> KeyFuture<'a, Vec<u8>> {
        Box::pin(async move {
            Ok(self
                .usable("wrap", identity, key_url)?
                .seal(key_url.as_bytes(), dek))
        })
    }

    fn unwrap_key<'a>(
        &'a self,
        identity: &'a str,
        key_url: &'a str,
        _alg: &'a str,
        wrapped: &'a [u8],
    ) -> KeyFuture<'a, Zeroizing<Vec<u8>>> {
        Box::pin(async move {
            let key = self.usable("unwrap", identity, key_url)?;
            key.open(key_url.as_bytes(), wrapped)
                .map(Zeroizing::new)
                .map_err(|_| refused(400, "BadParameter"))
        })
    }
}

struct Fixture {
    compute: Compute,
    identity: Identity,
    vault: Arc<MemoryVault>,
    store: Arc<Store>,
    dir: tempfile::TempDir,
}

/// The compute service of the replica `replica` on the fixture's store and blocks.
fn replica(
    dir: &tempfile::TempDir,
    store: &Arc<Store>,
    vault: &Arc<MemoryVault>,
    replica: &str,
    lease_ttl: Duration,
) -> Compute {
    let root = RootKey::load_or_create(&dir.path().join("root.key")).unwrap();
    let config = ComputeConfig {
        subscription: "sub".into(),
        blocks: BlockStore::open(&dir.path().join("disks"), None).unwrap(),
        vault_host_suffix: ".vault.localhost".into(),
        garbage_grace: 0,
        snapshot_limits: SnapshotLimits::default(),
        copy_bandwidth: None,
        replica: replica.into(),
        lease_ttl,
        nbd: Some(format!("{replica}:10809")),
    };
    Compute::new(store.clone(), &root, vault.clone(), config, 0).unwrap()
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open_file(&dir.path().join("state.db")).unwrap());
    let identity = Identity::new(
        store.clone(),
        TokenSigner::generate().unwrap(),
        "t1".into(),
        "https://localhost:8443".into(),
        "https://vault.localhost:8443".into(),
    );
    let vault = Arc::new(MemoryVault::default());
    vault.add_version("v1");
    let compute = replica(&dir, &store, &vault, "here", Duration::from_secs(60));
    Fixture {
        compute,
        identity,
        vault,
        store,
        dir,
    }
}

impl Fixture {
    async fn des(
        &self,
        name: &str,
        version: &str,
        encryption: &str,
    ) -> Result<DiskEncryptionSet, ComputeError> {
        let req = DesRequest {
            location: Some(LOCATION.into()),
            key_url: Some(version_url(version)),
            encryption_type: Some(encryption.into()),
            ..Default::default()
        };
        let (des, _) = self
            .compute
            .put_des(&self.identity, RG, name, &req, 0)
            .await?;
        Ok(des)
    }

    async fn disk(
        &self,
        name: &str,
        encryption: &str,
        des: Option<&str>,
    ) -> Result<Disk, ComputeError> {
        let req = DiskRequest {
            location: Some(LOCATION.into()),
            size_gb: Some(1),
            encryption_type: Some(encryption.into()),
            disk_encryption_set: des.map(str::to_owned),
            ..Default::default()
        };
        Ok(self.compute.put_disk(RG, name, &req, 0).await?.0)
    }

    /// Starts a machine with `disk` and returns the disk's export.
    async fn start(&self, vm: &str, disk: &str) -> Arc<OpenDisk> {
        let req = VmRequest {
            location: Some(LOCATION.into()),
            disks: Some(vec![disk.to_owned()]),
            ..Default::default()
        };
        self.compute.put_vm(RG, vm, &req, 0).await.unwrap();
        self.compute.start_vm(RG, vm, 0, None).await.unwrap();
        self.compute
            .export(&Compute::export_name(RG, disk))
            .expect("exported while running")
    }

    /// The newest stored first chunk of the disk, where the tests write.
    fn block_file(&self, disk: &Disk) -> Vec<u8> {
        self.chunk_file(disk, 0)
    }

    /// The newest stored chunk `index` the disk wrote itself.
    fn chunk_file(&self, disk: &Disk, index: u32) -> Vec<u8> {
        let prefix = format!("{index:08x}-");
        let chunks = self.dir.path().join("disks/chunks").join(&disk.unique_id);
        let newest = std::fs::read_dir(chunks)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&prefix)
            })
            .max()
            .expect("the chunk is stored");
        std::fs::read(newest).unwrap()
    }
}

const CUSTOMER: &str = "EncryptionAtRestWithCustomerKey";
const DOUBLE: &str = "EncryptionAtRestWithPlatformAndCustomerKeys";
const PLATFORM: &str = "EncryptionAtRestWithPlatformKey";

const DATA: &[u8] = b"a sentence that must never reach the block file in the clear";

#[tokio::test]
async fn customer_key_disk_round_trip_revocation_and_return() {
    let f = fixture();
    let des = f.des("des1", "v1", CUSTOMER).await.unwrap();
    let disk = f.disk("d1", CUSTOMER, Some("des1")).await.unwrap();
    assert!(matches!(
        disk.keys.as_slice(),
        [WrappedDek::Customer { key_url, .. }] if *key_url == version_url("v1")
    ));
    let open = f.start("vm1", "d1").await;
    open.file.write(4096, DATA).unwrap();
    open.file.flush().unwrap();
    let mut back = vec![0u8; DATA.len()];
    open.file.read(4096, &mut back).unwrap();
    assert_eq!(back, DATA);
    let stored = f.block_file(&disk);
    assert!(
        !stored.windows(DATA.len()).any(|w| w == DATA),
        "no plaintext at rest"
    );

    // Every vault call was made as the set's identity.
    let calls = f.vault.state().calls.clone();
    assert!(calls.iter().any(|(op, _, _)| *op == "unwrap"));
    assert!(calls.iter().all(|(_, identity, _)| *identity == des.id));

    // The key disabled: the next check withdraws the data key, and I/O fails.
    f.vault.set_enabled("v1", false);
    f.compute.check_keys().await.unwrap();
    assert_eq!(f.compute.key_available(&disk), Some(false));
    assert!(open.file.read(4096, &mut back).is_err());
    assert!(f
        .compute
        .get_disk(RG, "d1")
        .unwrap()
        .key_error
        .is_some_and(|e| e.contains("KeyDisabled")));

    // Enabled again: the data comes back as written.
    f.vault.set_enabled("v1", true);
    f.compute.check_keys().await.unwrap();
    assert_eq!(f.compute.key_available(&disk), Some(true));
    let mut again = vec![0u8; DATA.len()];
    open.file.read(4096, &mut again).unwrap();
    assert_eq!(again, DATA);
    assert_eq!(f.compute.get_disk(RG, "d1").unwrap().key_error, None);
}

#[tokio::test]
async fn a_new_key_version_rewraps_and_touches_no_block() {
    let f = fixture();
    f.des("des1", "v1", DOUBLE).await.unwrap();
    let disk = f.disk("d1", DOUBLE, Some("des1")).await.unwrap();
    assert_eq!(
        disk.keys.len(),
        2,
        "double encryption: a platform and a customer layer"
    );
    let open = f.start("vm1", "d1").await;
    open.file.write(0, DATA).unwrap();
    open.file.flush().unwrap();
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    let before = f.block_file(&disk);

    f.vault.add_version("v2");
    f.des("des1", "v2", DOUBLE).await.unwrap();
    let rewrapped = f.compute.get_disk(RG, "d1").unwrap();
    assert!(rewrapped.keys.iter().any(
        |k| matches!(k, WrappedDek::Customer { key_url, .. } if *key_url == version_url("v2"))
    ));
    assert_eq!(f.block_file(&disk), before, "rotation rewrites no block");

    // The old version may go: the disk needs only the new one.
    f.vault.set_enabled("v1", false);
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    let open = f.compute.export(&Compute::export_name(RG, "d1")).unwrap();
    let mut back = vec![0u8; DATA.len()];
    open.file.read(0, &mut back).unwrap();
    assert_eq!(back, DATA);
}

#[tokio::test]
async fn refused_access_creates_nothing() {
    let f = fixture();
    // A set is created with its identity, before anyone can grant that identity access;
    // the first disk that uses the set proves the access.
    let des = f.des("des2", "v1", CUSTOMER).await.unwrap();
    f.vault.state().denied.insert(des.id.clone());
    let err = f.disk("d2", CUSTOMER, Some("des2")).await.unwrap_err();
    assert!(
        matches!(&err, ComputeError::KeyVaultAccessForbidden { cause, .. } if cause.code == "ForbiddenByRbac"),
        "{err}"
    );
    assert!(matches!(
        f.compute.get_disk(RG, "d2"),
        Err(ComputeError::NotFound { .. })
    ));

    // A disabled key refuses a start, and the disk says why.
    f.des("des1", "v1", CUSTOMER).await.unwrap();
    f.disk("d1", CUSTOMER, Some("des1")).await.unwrap();
    f.compute
        .put_vm(
            RG,
            "vm1",
            &VmRequest {
                location: Some(LOCATION.into()),
                disks: Some(vec!["d1".into()]),
                ..Default::default()
            },
            0,
        )
        .await
        .unwrap();
    f.vault.set_enabled("v1", false);
    assert!(matches!(
        f.compute.start_vm(RG, "vm1", 0, None).await,
        Err(ComputeError::KeyUnusable { .. })
    ));
    assert!(f.compute.export(&Compute::export_name(RG, "d1")).is_none());
    assert!(f.compute.get_disk(RG, "d1").unwrap().key_error.is_some());
}

#[tokio::test]
async fn platform_key_disks_never_reach_a_vault() {
    let f = fixture();
    let disk = f.disk("d1", PLATFORM, None).await.unwrap();
    assert!(matches!(
        disk.keys.as_slice(),
        [WrappedDek::Platform { .. }]
    ));
    let open = f.start("vm1", "d1").await;
    open.file.write(8192, DATA).unwrap();
    let mut back = vec![0u8; DATA.len()];
    open.file.read(8192, &mut back).unwrap();
    assert_eq!(back, DATA);
    f.compute.check_keys().await.unwrap();
    assert_eq!(f.compute.key_available(&disk), Some(true));
    assert!(f.vault.state().calls.is_empty());
}

#[tokio::test]
async fn one_replica_serves_a_disk_and_a_move_hands_it_over_flushed() {
    let f = fixture();
    let there = replica(&f.dir, &f.store, &f.vault, "there", Duration::from_secs(60));
    f.disk("d1", PLATFORM, None).await.unwrap();
    let here = f.start("vm1", "d1").await;
    here.file.write(0, DATA).unwrap();
    let vm = f.compute.get_vm(RG, "vm1").unwrap();
    assert_eq!(
        (vm.host.as_deref(), vm.nbd.as_deref()),
        (Some("here"), Some("here:10809"))
    );

    // A start without a host leaves a running machine where it runs.
    there.start_vm(RG, "vm1", 0, None).await.unwrap();
    assert!(there.export(&here.export).is_none());
    // Started on "there" while "here" holds the lease: recorded, served once free.
    let moved = there.start_vm(RG, "vm1", 0, Some("there")).await.unwrap();
    assert_eq!(
        (moved.host.as_deref(), moved.nbd.as_deref()),
        (Some("there"), None)
    );
    there.reconcile(0).await.unwrap();
    assert!(
        there.export(&here.export).is_none(),
        "the lease is still held here"
    );
    f.compute.reconcile(0).await.unwrap();
    assert!(here.is_closed(), "moved away: closed here");
    there.reconcile(0).await.unwrap();
    let served = there
        .export(&here.export)
        .expect("served there once the lease was free");
    let mut back = vec![0u8; DATA.len()];
    served.file.read(0, &mut back).unwrap();
    assert_eq!(
        back, DATA,
        "what was written here was flushed when it closed"
    );
    assert_eq!(
        f.compute.get_vm(RG, "vm1").unwrap().nbd.as_deref(),
        Some("there:10809")
    );
    // A plain start here, while "there" serves it, is a no-op; a stop anywhere ends it
    // there at its next reconcile and frees the lease.
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    assert!(f.compute.export(&here.export).is_none());
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    there.reconcile(0).await.unwrap();
    assert!(served.is_closed());
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    assert!(
        f.compute.export(&here.export).is_some(),
        "the lease was given up"
    );
}

#[tokio::test]
async fn a_disk_whose_lease_cannot_be_renewed_stops_serving_before_the_lease_ends() {
    let f = fixture();
    let short = replica(
        &f.dir,
        &f.store,
        &f.vault,
        "short",
        Duration::from_millis(300),
    );
    f.disk("d1", PLATFORM, None).await.unwrap();
    let req = VmRequest {
        location: Some(LOCATION.into()),
        disks: Some(vec!["d1".to_owned()]),
        ..Default::default()
    };
    short.put_vm(RG, "vm1", &req, 0).await.unwrap();
    short.start_vm(RG, "vm1", 0, None).await.unwrap();
    let open = short.export(&Compute::export_name(RG, "d1")).unwrap();
    assert!(!open.is_closed());
    std::thread::sleep(Duration::from_millis(260));
    assert!(
        open.is_closed(),
        "four fifths of the lease passed without a renewal"
    );
    // Another replica takes the lease once it has run out: the old holder, renewing,
    // finds it lost and abandons the disk.
    std::thread::sleep(Duration::from_millis(60));
    f.compute
        .start_vm(RG, "vm1", 0, Some("here"))
        .await
        .unwrap();
    assert!(f.compute.export(&open.export).is_some());
    short.renew_leases();
    assert!(short.export(&open.export).is_none());
}

fn ade_request(settings: &[(&str, &str)]) -> ExtensionRequest {
    ExtensionRequest {
        publisher: "Microsoft.Azure.Security".into(),
        extension_type: "AzureDiskEncryptionForLinux".into(),
        type_handler_version: "1.1".into(),
        auto_upgrade_minor_version: true,
        settings: settings
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

/// The plaintext of a served disk's first `len` bytes.
fn served(f: &Fixture, disk: &str, len: usize) -> Vec<u8> {
    let open = f.compute.export(&Compute::export_name(RG, disk)).unwrap();
    let mut out = vec![0u8; len];
    open.file.read(0, &mut out).unwrap();
    out
}

/// The passphrase the vault holds for an ADE disk (a `BEK` secret: base64 of the text).
fn stored_passphrase(f: &Fixture, disk: &str) -> Vec<u8> {
    let ade = f
        .compute
        .get_disk(RG, disk)
        .unwrap()
        .ade
        .expect("encrypted");
    let (value, content_type, tags) = f.vault.state().secrets[&ade.secret_url].clone();
    assert_eq!(content_type, "BEK");
    assert_eq!(tags["DiskEncryptionKeyFileName"], ade.file_name);
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(value)
        .unwrap()
}

#[tokio::test]
async fn ade_encrypts_in_place_formats_serves_its_bek_volume_and_decrypts() {
    let f = fixture();
    f.disk("os", PLATFORM, None).await.unwrap();
    f.disk("data", PLATFORM, None).await.unwrap();
    let req = VmRequest {
        location: Some(LOCATION.into()),
        os_disk: Some("os".into()),
        disks: Some(vec!["data".into()]),
        ..Default::default()
    };
    f.compute.put_vm(RG, "vm1", &req, 0).await.unwrap();
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    for disk in ["os", "data"] {
        let open = f.compute.export(&Compute::export_name(RG, disk)).unwrap();
        open.file.write(4096, DATA).unwrap();
        open.file.flush().unwrap();
    }
    let enable = ade_request(&[
        ("EncryptionOperation", "EnableEncryption"),
        ("VolumeType", "All"),
        ("KeyVaultURL", "https://kv1.vault.localhost:8443/"),
    ]);
    let refused = f
        .compute
        .put_extension(
            &f.identity,
            RG,
            "vm1",
            "AzureDiskEncryptionForLinux",
            &enable,
            0,
        )
        .await;
    assert!(
        matches!(refused, Err(ComputeError::Conflict { .. })),
        "a running machine is refused"
    );
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    f.compute
        .put_extension(
            &f.identity,
            RG,
            "vm1",
            "AzureDiskEncryptionForLinux",
            &enable,
            0,
        )
        .await
        .unwrap();
    let vm = f.compute.get_vm(RG, "vm1").unwrap();
    let status = f.compute.encryption_status(&vm).unwrap();
    assert_eq!((status.os, status.data), ("Encrypted", "Encrypted"));
    assert_eq!(
        f.compute
            .get_disk(RG, "data")
            .unwrap()
            .ade
            .unwrap()
            .file_name,
        "LinuxPassPhraseFileName_1_0"
    );
    let calls = f.vault.state().calls.clone();
    assert!(calls
        .iter()
        .filter(|(op, _, _)| *op == "setSecret")
        .all(|(_, identity, _)| identity == atrest_core::ade::PLATFORM_IDENTITY));

    // Started: the BEK VOLUME holds both passphrases, and each opens its volume, whose
    // data was kept, shifted behind the header, and is nowhere in the clear.
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    let Some(Export::Bek(bek)) = f.compute.nbd_export("rg/vm1/bek") else {
        panic!("the BEK VOLUME is exported");
    };
    let mut image = vec![0u8; bek.size() as usize];
    bek.read(0, &mut image);
    for disk in ["os", "data"] {
        let passphrase = stored_passphrase(&f, disk);
        assert_eq!(passphrase.len(), 172);
        assert!(
            image.windows(172).any(|w| w == passphrase),
            "{disk}'s passphrase is on the BEK VOLUME"
        );
        let plain = served(&f, disk, 32 << 20);
        assert!(
            !plain.windows(DATA.len()).any(|w| w == DATA),
            "{disk} shows no plaintext"
        );
        let header = atrest_luks::Header::parse(&plain).unwrap();
        let key = header.unlock(&plain, &passphrase).unwrap();
        let mut cipher = atrest_luks::DataCipher::new(&header, &key).unwrap();
        let at = header.data_offset as usize + 4096;
        let mut sector = plain[at..at + 4096].to_vec();
        cipher.decrypt(4096, &mut sector).unwrap();
        assert_eq!(&sector[..DATA.len()], DATA);
    }
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    assert!(
        f.compute.nbd_export("rg/vm1/bek").is_none(),
        "stopping ends the BEK VOLUME's export"
    );

    // Linux decrypts data volumes only, and only while the OS volume is not encrypted.
    let disable = |volume: &str| {
        ade_request(&[
            ("EncryptionOperation", "DisableEncryption"),
            ("VolumeType", volume),
        ])
    };
    let all = f
        .compute
        .put_extension(
            &f.identity,
            RG,
            "vm1",
            "AzureDiskEncryptionForLinux",
            &disable("All"),
            0,
        )
        .await;
    assert!(matches!(all, Err(ComputeError::Invalid { .. })));
    let with_os = f
        .compute
        .put_extension(
            &f.identity,
            RG,
            "vm1",
            "AzureDiskEncryptionForLinux",
            &disable("Data"),
            0,
        )
        .await;
    assert!(matches!(with_os, Err(ComputeError::Conflict { .. })));
    assert!(matches!(
        f.compute
            .delete_extension(RG, "vm1", "AzureDiskEncryptionForLinux")
            .await,
        Err(ComputeError::Conflict { .. })
    ));
}

#[tokio::test]
async fn ade_formats_data_volumes_and_decrypts_them_back() {
    let f = fixture();
    f.disk("data", PLATFORM, None).await.unwrap();
    f.disk("kept", PLATFORM, None).await.unwrap();
    let req = VmRequest {
        location: Some(LOCATION.into()),
        disks: Some(vec!["data".into()]),
        ..Default::default()
    };
    f.compute.put_vm(RG, "vm1", &req, 0).await.unwrap();
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    let open = f.compute.export(&Compute::export_name(RG, "data")).unwrap();
    open.file.write(40 << 20, DATA).unwrap();
    open.file.flush().unwrap();
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    let format = ade_request(&[
        ("EncryptionOperation", "EnableEncryptionFormatAll"),
        ("VolumeType", "Data"),
        (
            "KeyVaultResourceId",
            &format!(
                "/subscriptions/sub/resourceGroups/{RG}/providers/Microsoft.KeyVault/vaults/kv1"
            ),
        ),
        ("LuksVersion", "LUKS1"),
    ]);
    f.compute
        .put_extension(&f.identity, RG, "vm1", "ade", &format, 0)
        .await
        .unwrap();
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    let plain = served(&f, "data", 48 << 20);
    assert!(
        !plain.windows(DATA.len()).any(|w| w == DATA),
        "formatting trims the old data"
    );
    let header = atrest_luks::Header::parse(&plain).unwrap();
    assert_eq!(header.version, atrest_luks::Version::Luks1);
    // Written through the LUKS volume as a guest would, then decrypted in place.
    let passphrase = stored_passphrase(&f, "data");
    let key = header.unlock(&plain, &passphrase).unwrap();
    let mut sector = vec![0u8; 512];
    sector[..DATA.len()].copy_from_slice(DATA);
    atrest_luks::DataCipher::new(&header, &key)
        .unwrap()
        .encrypt(512, &mut sector)
        .unwrap();
    let open = f.compute.export(&Compute::export_name(RG, "data")).unwrap();
    open.file.write(header.data_offset + 512, &sector).unwrap();
    open.file.flush().unwrap();
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    f.compute
        .put_extension(
            &f.identity,
            RG,
            "vm1",
            "ade",
            &ade_request(&[
                ("EncryptionOperation", "DisableEncryption"),
                ("VolumeType", "Data"),
            ]),
            0,
        )
        .await
        .unwrap();
    let disk = f.compute.get_disk(RG, "data").unwrap();
    assert!(disk.ade.is_none() && disk.ade_ever);
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    let plain = served(&f, "data", 1 << 20);
    assert_eq!(&plain[512..512 + DATA.len()], DATA);
    assert!(
        atrest_luks::Header::parse(&plain).is_err(),
        "the header is gone"
    );
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    f.compute.delete_extension(RG, "vm1", "ade").await.unwrap();

    // A disk that had ADE never takes a customer key.
    f.des("des1", "v1", CUSTOMER).await.unwrap();
    let cmk = DiskRequest {
        encryption_type: Some(CUSTOMER.into()),
        disk_encryption_set: Some("des1".into()),
        ..Default::default()
    };
    assert!(matches!(
        f.compute.put_disk(RG, "data", &cmk, 0).await,
        Err(ComputeError::Conflict { .. })
    ));
    // And a customer-key disk never takes ADE.
    f.disk("cmk", CUSTOMER, Some("des1")).await.unwrap();
    let req = VmRequest {
        location: Some(LOCATION.into()),
        disks: Some(vec!["kept".into(), "cmk".into()]),
        ..Default::default()
    };
    f.compute.put_vm(RG, "vm2", &req, 0).await.unwrap();
    let refused = f
        .compute
        .put_extension(&f.identity, RG, "vm2", "ade", &format, 0)
        .await;
    assert!(
        matches!(refused, Err(ComputeError::Conflict { message, .. }) if message.contains("customer-managed"))
    );
    assert!(
        f.compute.get_disk(RG, "kept").unwrap().ade.is_none(),
        "a refusal changes nothing"
    );
}

#[tokio::test]
async fn ade_believes_a_guest_written_header_only_inside_the_disk() {
    let f = fixture();
    f.disk("data", PLATFORM, None).await.unwrap();
    let req = VmRequest {
        location: Some(LOCATION.into()),
        disks: Some(vec!["data".into()]),
        ..Default::default()
    };
    f.compute.put_vm(RG, "vm1", &req, 0).await.unwrap();
    let format = ade_request(&[
        ("EncryptionOperation", "EnableEncryptionFormatAll"),
        ("VolumeType", "Data"),
        ("KeyVaultURL", "https://kv1.vault.localhost:8443"),
        ("LuksVersion", "LUKS1"),
    ]);
    f.compute
        .put_extension(&f.identity, RG, "vm1", "ade", &format, 0)
        .await
        .unwrap();
    // The guest moves LUKS1's payload offset (which no checksum covers) past the disk's end.
    f.compute.start_vm(RG, "vm1", 0, None).await.unwrap();
    let open = f.compute.export(&Compute::export_name(RG, "data")).unwrap();
    open.file.write(104, &0xFFFF_FF00u32.to_be_bytes()).unwrap();
    open.file.flush().unwrap();
    f.compute.stop_vm(RG, "vm1").await.unwrap();
    let disable = ade_request(&[
        ("EncryptionOperation", "DisableEncryption"),
        ("VolumeType", "Data"),
    ]);
    let refused = f
        .compute
        .put_extension(&f.identity, RG, "vm1", "ade", &disable, 0)
        .await;
    assert!(
        matches!(&refused, Err(ComputeError::Conflict { message, .. }) if message.contains("past the disk's end")),
        "{refused:?}"
    );
    assert!(
        f.compute.get_disk(RG, "data").unwrap().ade.is_some(),
        "nothing changed"
    );
}

/// The plaintext of `len` bytes at `offset` of a hidden disk (a cut, replica or point).
async fn hidden_bytes(f: &Fixture, id: &str, offset: u64, len: usize) -> Vec<u8> {
    let disk = f.compute.recovery_disk(id).unwrap();
    let layers = f.compute.unwrap_layers(&disk).await.unwrap();
    let volume = f.compute.open_volume(&disk, layers).await.unwrap();
    let mut out = vec![0u8; len];
    volume.read(offset, &mut out).unwrap();
    out
}

#[tokio::test]
async fn replicas_follow_each_cut_under_their_own_keys_and_a_repeated_cycle_changes_nothing() {
    use atrest_blocks::CHUNK;
    let f = fixture();
    f.disk("d", PLATFORM, None).await.unwrap();
    let open = f.start("vm", "d").await;
    open.file.write(0, &[0x11; 8192]).unwrap();
    open.file.write(3 * CHUNK, &[0x22; 4096]).unwrap();
    let targets = BTreeMap::from([(Some(0), ReplicaTarget::default())]);
    let [replica] = <[RecoveryDisk; 1]>::try_from(
        f.compute
            .create_replicas(RG, "vm", ("rg-asr", "eastus"), "p-replica", &targets, 0)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(replica.copy.location, "eastus");
    let source = f.compute.get_disk(RG, "d").unwrap();
    assert!(replica.copy.key_binding.is_none() && replica.copy.keys != source.keys);

    let cycle = |previous: Option<&str>, cut: &str, point: &str| {
        let pair = ReplicaPair {
            lun: Some(0),
            replica: replica.copy.id.clone(),
            previous_cut: previous.map(str::to_owned),
            cut: cut.to_owned(),
        };
        let point = point.to_owned();
        let compute = &f.compute;
        async move { compute.replicate(&[pair], &point, 0).await.unwrap() }
    };
    let cut1 = f
        .compute
        .take_recovery_point(RG, "vm", "p-cut1", RG, 0)
        .await
        .unwrap();
    let (point1, shipped) = cycle(None, &cut1[0].copy.id, "p-rp1").await;
    assert_eq!(
        shipped,
        2 * CHUNK,
        "the first cycle ships every chunk the disk holds"
    );

    // A range cleared, another written: the next cycle ships just those.
    open.file.write_zeroes(0, 8192).unwrap();
    open.file.write(5 * CHUNK, &[0x33; 4096]).unwrap();
    let cut2 = f
        .compute
        .take_recovery_point(RG, "vm", "p-cut2", RG, 0)
        .await
        .unwrap();
    let (point2, shipped) = cycle(Some(&cut1[0].copy.id), &cut2[0].copy.id, "p-rp2").await;
    assert_eq!(shipped, 8192 + 4096);
    // Run again for the same cuts, as after a crash: the replica is the same.
    let (point2b, _) = cycle(Some(&cut1[0].copy.id), &cut2[0].copy.id, "p-rp2b").await;

    let expect = |first: u8, fifth: u8| {
        let mut v = vec![first; 8192];
        v.extend([0x22; 4096]);
        v.extend(vec![fifth; 4096]);
        v
    };
    for (point, want) in [
        (&point1, expect(0x11, 0)),
        (&point2, expect(0, 0x33)),
        (&point2b, expect(0, 0x33)),
    ] {
        let id = &point[0].copy.id;
        let mut got = hidden_bytes(&f, id, 0, 8192).await;
        got.extend(hidden_bytes(&f, id, 3 * CHUNK, 4096).await);
        got.extend(hidden_bytes(&f, id, 5 * CHUNK, 4096).await);
        assert!(got == want, "{} holds its cut", point[0].copy.name);
        assert_eq!(
            point[0].copy.keys, replica.copy.keys,
            "a point keeps the replica's keys"
        );
    }
    // The replica's blocks are its own ciphertext: no plaintext, and not the source's.
    let index = 3;
    let replica_block = f.chunk_file(&replica.copy, index);
    assert!(!replica_block.windows(64).any(|w| w == [0x22; 64]));
    assert!(replica_block != f.chunk_file(&source, index));
}
