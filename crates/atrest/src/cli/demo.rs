//! `atrest demo`: the whole customer-managed-key story on a throw-away data directory, in
//! about a minute, printing each step. It starts its own server and speaks to it the way
//! the CLI does (HTTPS) and the way qemu does (NBD).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use atrest_api::client::Method;
use atrest_nbd::client::{Client, ClientError};
use serde_json::json;

use super::connection::{connect_to, Connection};
use super::monitor::monitor_query;
use super::output::Format;

const VAULT: &str = "demo-kv";
const KEY: &str = "disk-cmk";
const DES: &str = "demo-des";
const DISK: &str = "demo-disk";
const VM: &str = "demo-vm";
const ROLE: &str = "Key Vault Crypto Service Encryption User";
const KEY_CHECK: Duration = Duration::from_secs(1);
/// How long a change driven by the key checks may take to show.
const WAIT: Duration = Duration::from_secs(15);
const MESSAGE: &[u8] = b"Customer-managed keys keep this sentence unreadable at rest.";

fn step(n: u32, title: &str) {
    println!("\n== {n}. {title}");
}

fn say(line: impl AsRef<str>) {
    println!("   {}", line.as_ref());
}

/// Runs the demo on a fresh directory under the system temporary directory, removed
/// afterwards unless `keep`.
pub(crate) async fn run(keep: bool) -> anyhow::Result<()> {
    let tmp = tempfile::Builder::new().prefix("atrest-demo-").tempdir()?;
    let dir = tmp.path().to_owned();
    let opts = atrest_api::Options {
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".parse()?,
        token_lifetime: 3600,
        purge_interval: Duration::from_secs(60),
        audit_retention: None,
        limits: Default::default(),
        alert_webhook: None,
        nbd_listen: Some("127.0.0.1:0".parse()?),
        blob_store: None,
        blob_garbage_grace: Duration::from_secs(900),
        snapshot_copy_bandwidth: None,
        snapshot_limits: Default::default(),
        key_check_interval: KEY_CHECK,
        audit_durability: Default::default(),
        state: None,
        replica_name: None,
        public_port: None,
        lease_duration: Duration::from_secs(10),
    };
    let instance = atrest_api::Instance::start(&opts).await?;
    println!(
        "atrest demo: a server on {} with data directory {}",
        instance.local_addr(),
        dir.display()
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(instance.run(async {
        let _ = stopped.await;
    }));
    let outcome = story(&connect_to(&dir)?, &dir).await;
    let _ = stop.send(());
    server.await??;
    if keep {
        println!("\nThe data directory stays at {}.", tmp.keep().display());
    }
    outcome
}

async fn story(conn: &Connection, dir: &Path) -> anyhow::Result<()> {
    let rg = format!(
        "/subscriptions/{}/resourceGroups/{}",
        conn.subscription, conn.resource_group
    );
    let vault_id = format!("{rg}/providers/Microsoft.KeyVault/vaults/{VAULT}");
    let compute =
        |kind: &str, name: &str| format!("{rg}/providers/Microsoft.Compute/{kind}/{name}");

    step(
        1,
        "A vault with purge protection, an RSA key, a disk encryption set and its role",
    );
    let body = json!({ "location": "westeurope", "properties": { "enablePurgeProtection": true, "sku": { "family": "A", "name": "standard" } } });
    conn.management(Method::PUT, &vault_id, Some(&body)).await?;
    say(format!(
        "vault {VAULT}: soft delete and purge protection on"
    ));
    let key = conn
        .data_plane(
            VAULT,
            Method::POST,
            &format!("/keys/{KEY}/create"),
            "",
            Some(&json!({ "kty": "RSA", "key_size": 3072 })),
        )
        .await?;
    let kid = key["key"]["kid"]
        .as_str()
        .context("the new key has no kid")?
        .to_owned();
    say(format!("key {kid} (RSA 3072)"));
    let body = json!({
        "location": "westeurope",
        "identity": { "type": "SystemAssigned" },
        "properties": {
            "encryptionType": "EncryptionAtRestWithCustomerKey",
            "activeKey": { "keyUrl": kid, "sourceVault": { "id": vault_id } },
            "rotationToLatestKeyVersionEnabled": true,
        },
    });
    let des = conn
        .management(
            Method::PUT,
            &compute("diskEncryptionSets", DES),
            Some(&body),
        )
        .await?;
    let principal = des["identity"]["principalId"]
        .as_str()
        .context("the set has no identity")?
        .to_owned();
    say(format!(
        "disk encryption set {DES}, identity {principal}, following the key's latest version"
    ));
    let assignment = format!(
        "{vault_id}/providers/Microsoft.Authorization/roleAssignments/{}",
        atrest_crypto::random_uuid()
    );
    conn.management(
        Method::PUT,
        &assignment,
        Some(&json!({ "properties": { "roleDefinitionId": ROLE, "principalId": principal } })),
    )
    .await?;
    say(format!("role '{ROLE}' for the set's identity on {VAULT}"));

    step(
        2,
        "A customer-key disk and a virtual machine; data written and read over NBD",
    );
    let body = json!({ "location": "westeurope", "properties": { "creationData": { "createOption": "Empty" }, "diskSizeGB": 1, "encryption": { "diskEncryptionSetId": compute("diskEncryptionSets", DES) } } });
    let disk = conn
        .management(Method::PUT, &compute("disks", DISK), Some(&body))
        .await?;
    say(format!(
        "disk {DISK}: 1 GiB, {}",
        disk["properties"]["encryption"]["type"]
            .as_str()
            .unwrap_or("?")
    ));
    let body = json!({ "properties": { "storageProfile": { "dataDisks": [{ "lun": 0, "createOption": "Attach", "managedDisk": { "id": compute("disks", DISK) } }] } } });
    conn.management(Method::PUT, &compute("virtualMachines", VM), Some(&body))
        .await?;
    let vm = conn
        .management(
            Method::POST,
            &format!("{}/start", compute("virtualMachines", VM)),
            None,
        )
        .await?;
    let uri = vm["properties"]["storageProfile"]["dataDisks"][0]["nbdUri"]
        .as_str()
        .context("no NBD URI")?
        .to_owned();
    say(format!(
        "vm {VM} started; its disk is at {uri} (qemu-img info {uri})"
    ));
    let (addr, export) = uri
        .strip_prefix("nbd://")
        .and_then(|rest| rest.split_once('/'))
        .context("not an nbd://HOST:PORT/EXPORT URI")?;
    let mut nbd = Client::connect(addr.parse()?, export).await?;
    nbd.write(0, MESSAGE).await?;
    nbd.flush().await?;
    say(format!(
        "wrote at offset 0: {:?}",
        String::from_utf8_lossy(MESSAGE)
    ));
    let back = nbd.read(0, MESSAGE.len() as u32).await?;
    say(format!(
        "read it back:      {:?}",
        String::from_utf8_lossy(&back)
    ));

    step(3, "What the data directory holds: ciphertext");
    let unique = disk["properties"]["uniqueId"]
        .as_str()
        .context("no uniqueId")?;
    // The flush committed the disk's first chunk; its newest generation sorts last.
    let chunk_dir = dir.join("disks").join("chunks").join(unique);
    let path = std::fs::read_dir(&chunk_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .max()
        .context("the disk has no stored chunk")?;
    let stored = std::fs::read(&path)?;
    say(format!("{}:", path.display()));
    say(format!("first bytes on disk: {}", hex(&stored[..32])));
    say(format!("the plaintext:       {}", hex(&MESSAGE[..32])));
    if stored.windows(MESSAGE.len()).any(|w| w == MESSAGE) {
        bail!("the plaintext was found in the disk's chunk");
    }
    say("the sentence appears nowhere in the chunk");

    step(
        4,
        "Revocation: the key disabled, I/O fails; enabled again, the data is intact",
    );
    let set_enabled = |enabled: bool| async move {
        let body = json!({ "attributes": { "enabled": enabled } });
        conn.data_plane(
            VAULT,
            Method::PATCH,
            &format!("/keys/{KEY}"),
            "",
            Some(&body),
        )
        .await
    };
    set_enabled(false).await?;
    say(format!(
        "key {KEY} disabled; the disk re-checks its key every {}s",
        KEY_CHECK.as_secs()
    ));
    let errno = match read_until(&mut nbd, 16, false).await? {
        Err(e) => e.to_string(),
        Ok(_) => String::new(),
    };
    say(format!("read now fails: {errno}"));
    let shown = conn
        .management(Method::GET, &compute("disks", DISK), None)
        .await?;
    say(format!(
        "disk {DISK}: {}",
        shown["properties"]["keyAccess"]["message"]
            .as_str()
            .unwrap_or("unavailable")
    ));
    set_enabled(true).await?;
    say(format!("key {KEY} enabled again"));
    let back = read_until(&mut nbd, MESSAGE.len() as u32, true)
        .await?
        .unwrap_or_default();
    say(format!("read: {:?}", String::from_utf8_lossy(&back)));

    step(
        5,
        "Rotation, and the audit rows that prove the set's identity uses the key",
    );
    let rotated = conn
        .data_plane(
            VAULT,
            Method::POST,
            &format!("/keys/{KEY}/rotate"),
            "",
            None,
        )
        .await?;
    let new_kid = rotated["key"]["kid"].as_str().context("no kid")?.to_owned();
    say(format!("new key version {new_kid}"));
    let deadline = Instant::now() + WAIT;
    while conn
        .management(Method::GET, &compute("diskEncryptionSets", DES), None)
        .await?["properties"]["activeKey"]["keyUrl"]
        != new_kid.as_str()
    {
        if Instant::now() > deadline {
            bail!("the disk encryption set did not adopt the new key version in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    say("the set moved to it and rewrapped the disk's data key; no block was rewritten");
    say(format!(
        "read after rotation: {:?}",
        String::from_utf8_lossy(&nbd.read(0, MESSAGE.len() as u32).await?)
    ));
    println!();
    let query = format!(
        "AzureDiagnostics | where identity_claim_xms_mirid_s == '{}' | where OperationName in ('KeyWrap', 'KeyUnwrap') \
         | extend KeyVersion = tostring(split(id_s, '/')[5]) | summarize Calls = count() by OperationName, KeyVersion, ResultSignature",
        compute("diskEncryptionSets", DES)
    );
    println!("   $ atrest monitor query \"{query}\"");
    monitor_query(conn, &query, Format::Table).await?;
    println!("\nDone. Every wrap and unwrap above was made as the disk encryption set's identity, through the vault's own API.");
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads the start of the disk until the read succeeds (`ok`) or fails (`!ok`).
async fn read_until(
    nbd: &mut Client,
    len: u32,
    ok: bool,
) -> anyhow::Result<Result<Vec<u8>, ClientError>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let result = nbd.read(0, len).await;
        if result.is_ok() == ok {
            return Ok(result);
        }
        if Instant::now() > deadline {
            bail!("the disk's key access did not change in time");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
