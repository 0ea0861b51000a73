// The flows of the Azure SDK for JavaScript's Key Vault samples (hello world, listing,
// backup and restore, soft delete, recovery and purge, key rotation, cryptography), run
// against the vault at KEY_VAULT_URI with DefaultAzureCredential, as an application would.
// Prints "ok NAME" per flow; any failed assertion exits non-zero.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";

import { DefaultAzureCredential } from "@azure/identity";
import { CryptographyClient, KeyClient } from "@azure/keyvault-keys";
import { SecretClient } from "@azure/keyvault-secrets";

const url = process.env.KEY_VAULT_URI;
assert.ok(url, "KEY_VAULT_URI is required");
const credential = new DefaultAzureCredential();
const secrets = new SecretClient(url, credential);
const keys = new KeyClient(url, credential);
const unique = (prefix) => `${prefix}-${randomUUID().slice(0, 8)}`;

async function collect(iterator) {
  const items = [];
  for await (const item of iterator) items.push(item);
  return items;
}

const flows = {
  async secretsHelloWorld() {
    const name = unique("hello");
    const created = await secrets.setSecret(name, "first value");
    assert.equal((await secrets.getSecret(name)).value, "first value");
    await secrets.setSecret(name, "second value");
    const updated = await secrets.updateSecretProperties(name, created.properties.version, { enabled: false });
    assert.equal(updated.enabled, false);
    assert.equal((await secrets.getSecret(name)).value, "second value");
    await (await secrets.beginDeleteSecret(name)).pollUntilDone();
    await assert.rejects(secrets.getSecret(name), (e) => e.statusCode === 404);
  },

  async listSecrets() {
    const name = unique("list");
    await secrets.setSecret(name, "one");
    await secrets.setSecret(name, "two");
    const listed = await collect(secrets.listPropertiesOfSecrets());
    assert.ok(listed.some((p) => p.name === name));
    assert.equal((await collect(secrets.listPropertiesOfSecretVersions(name))).length, 2);
    assert.deepEqual(await collect(secrets.listPropertiesOfSecretVersions(unique("never-set"))), []);
    await (await secrets.beginDeleteSecret(name)).pollUntilDone();
    const deleted = await collect(secrets.listDeletedSecrets());
    assert.ok(deleted.some((d) => d.name === name));
  },

  async backupAndRestoreSecret() {
    const name = unique("backup");
    await secrets.setSecret(name, "kept in a backup");
    const backup = await secrets.backupSecret(name);
    assert.ok(backup && backup.length > 0);
    await (await secrets.beginDeleteSecret(name)).pollUntilDone();
    await secrets.purgeDeletedSecret(name);
    const restored = await secrets.restoreSecretBackup(backup);
    assert.equal(restored.name, name);
    assert.equal((await secrets.getSecret(name)).value, "kept in a backup");
  },

  async softDeleteRecoverAndPurge() {
    const name = unique("recover");
    await secrets.setSecret(name, "comes back");
    await (await secrets.beginDeleteSecret(name)).pollUntilDone();
    assert.equal((await secrets.getDeletedSecret(name)).name, name);
    await (await secrets.beginRecoverDeletedSecret(name)).pollUntilDone();
    assert.equal((await secrets.getSecret(name)).value, "comes back");
    await (await secrets.beginDeleteSecret(name)).pollUntilDone();
    await secrets.purgeDeletedSecret(name);
    await assert.rejects(secrets.getDeletedSecret(name), (e) => e.statusCode === 404);
  },

  async keysHelloWorld() {
    const rsa = await keys.createRsaKey(unique("rsa"), { keySize: 2048 });
    const ec = await keys.createEcKey(unique("ec"), { curve: "P-256" });
    assert.equal(rsa.keyType, "RSA");
    assert.equal(ec.key.crv, "P-256");
    assert.equal((await keys.getKey(rsa.name)).id, rsa.id);
    const names = (await collect(keys.listPropertiesOfKeys())).map((p) => p.name);
    assert.ok(names.includes(rsa.name) && names.includes(ec.name));
    await (await keys.beginDeleteKey(ec.name)).pollUntilDone();
    await (await keys.beginRecoverDeletedKey(ec.name)).pollUntilDone();
    assert.equal((await keys.getKey(ec.name)).name, ec.name);
  },

  async keyRotation() {
    const name = unique("rotate");
    const first = await keys.createRsaKey(name);
    const policy = await keys.updateKeyRotationPolicy(name, {
      lifetimeActions: [{ action: "Rotate", timeAfterCreate: "P90D" }],
      expiresIn: "P2Y",
    });
    assert.equal(policy.expiresIn, "P2Y");
    assert.equal((await keys.getKeyRotationPolicy(name)).lifetimeActions[0].timeAfterCreate, "P90D");
    const second = await keys.rotateKey(name);
    assert.notEqual(second.properties.version, first.properties.version);
  },

  async cryptography() {
    const rsa = await keys.createRsaKey(unique("crypto"), { keySize: 2048 });
    const rsaCrypto = new CryptographyClient(rsa.id, credential);
    const plaintext = Buffer.from("hello from node");
    const encrypted = await rsaCrypto.encrypt("RSA-OAEP", plaintext);
    assert.deepEqual(Buffer.from((await rsaCrypto.decrypt("RSA-OAEP", encrypted.result)).result), plaintext);
    const cek = Buffer.alloc(32, 7);
    const wrapped = await rsaCrypto.wrapKey("RSA-OAEP-256", cek);
    assert.deepEqual(Buffer.from((await rsaCrypto.unwrapKey("RSA-OAEP-256", wrapped.result)).result), cek);
    const ec = await keys.createEcKey(unique("sign"), { curve: "P-256" });
    const ecCrypto = new CryptographyClient(ec.id, credential);
    const signed = await ecCrypto.signData("ES256", Buffer.from("a message"));
    assert.equal((await ecCrypto.verifyData("ES256", Buffer.from("a message"), signed.result)).result, true);
    assert.equal((await ecCrypto.verifyData("ES256", Buffer.from("another"), signed.result)).result, false);
  },
};

for (const [name, flow] of Object.entries(flows)) {
  await flow();
  console.log(`ok ${name}`);
}
