//! Key rotation policies: the API's JSON shape, Azure's rules (from `atrest_core`), storage.

use atrest_core::names::check_object_name;
use atrest_core::rotation::{Action, Period, RotationPolicy, Trigger};
use atrest_core::vault::{ObjectKind, VaultRecord};
use serde_json::{json, Value};

use crate::objects::live_state;
use crate::{Key, VaultError, Vaults};

fn bad(message: impl Into<String>) -> VaultError {
    VaultError::BadParameter(message.into())
}

fn period(text: Option<&Value>, field: &str) -> Result<Period, VaultError> {
    let text = text
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("'{field}' must be an ISO 8601 duration string.")))?;
    Period::parse(text).map_err(|e| bad(e.to_string()))
}

/// Parses `{"lifetimeActions": [...], "attributes": {"expiryTime": ...}}`.
pub(crate) fn parse_policy(body: &Value) -> Result<RotationPolicy, VaultError> {
    let actions = match body.get("lifetimeActions") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                let trigger = item
                    .get("trigger")
                    .ok_or_else(|| bad("Each lifetime action needs a 'trigger'."))?;
                let trigger = match (
                    trigger.get("timeAfterCreate"),
                    trigger.get("timeBeforeExpiry"),
                ) {
                    (Some(t), None) => Trigger::AfterCreate(period(Some(t), "timeAfterCreate")?),
                    (None, Some(t)) => Trigger::BeforeExpiry(period(Some(t), "timeBeforeExpiry")?),
                    _ => return Err(bad(
                        "A trigger needs exactly one of 'timeAfterCreate' and 'timeBeforeExpiry'.",
                    )),
                };
                let action = match item
                    .pointer("/action/type")
                    .and_then(Value::as_str)
                    .map(str::to_ascii_lowercase)
                    .as_deref()
                {
                    Some("rotate") => Action::Rotate,
                    Some("notify") => Action::Notify,
                    _ => return Err(bad("An action type must be 'Rotate' or 'Notify'.")),
                };
                Ok((trigger, action))
            })
            .collect::<Result<_, VaultError>>()?,
        Some(_) => return Err(bad("'lifetimeActions' must be a list.")),
    };
    let expiry = match body.pointer("/attributes/expiryTime") {
        None | Some(Value::Null) => None,
        e => Some(period(e, "expiryTime")?),
    };
    let policy = RotationPolicy { actions, expiry };
    policy.check().map_err(|e| bad(e.to_string()))?;
    Ok(policy)
}

fn policy_json(policy: &RotationPolicy, created: Option<i64>, updated: Option<i64>) -> Value {
    let actions: Vec<Value> = policy
        .actions
        .iter()
        .map(|(trigger, action)| {
            let trigger = match trigger {
                Trigger::AfterCreate(p) => json!({ "timeAfterCreate": p.to_string() }),
                Trigger::BeforeExpiry(p) => json!({ "timeBeforeExpiry": p.to_string() }),
            };
            json!({ "trigger": trigger, "action": { "type": format!("{action:?}") } })
        })
        .collect();
    let mut attributes = json!({});
    if let Some(e) = policy.expiry {
        attributes["expiryTime"] = e.to_string().into();
    }
    if let (Some(c), Some(u)) = (created, updated) {
        attributes["created"] = c.into();
        attributes["updated"] = u.into();
    }
    json!({ "lifetimeActions": actions, "attributes": attributes })
}

/// The policy a key has before one is set: notify 30 days before expiry, as Azure's default.
fn default_policy() -> Value {
    json!({
        "lifetimeActions": [{ "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "Notify" } }],
        "attributes": {},
    })
}

/// What one pass of the lifetime actions did to one key.
#[derive(Debug)]
pub enum LifetimeEvent {
    /// The Rotate action was due and created a new version.
    Rotated {
        /// The vault's name.
        vault: String,
        /// The version that was latest before.
        previous_version: String,
        /// The new version (boxed: it dwarfs the other events).
        key: Box<Key>,
    },
    /// The Rotate action was due but the rotation failed.
    RotationFailed {
        /// The vault's name.
        vault: String,
        /// The key's name.
        name: String,
        /// Why.
        error: VaultError,
    },
    /// A certificate's `AutoRenew` action was due: a new version was issued (or, with
    /// `error`, could not be).
    CertificateRenewed {
        /// The vault's name.
        vault: String,
        /// The certificate's name.
        name: String,
        /// The version that was due.
        previous_version: String,
        /// Why the renewal failed, if it did.
        error: Option<VaultError>,
    },
    /// A certificate's `EmailContacts` action was due for its latest version.
    CertificateNearExpiry {
        /// The vault's name.
        vault: String,
        /// The certificate's name.
        name: String,
        /// The version nearing expiry.
        version: String,
        /// Its `exp`.
        expires: i64,
        /// The vault's certificate contacts' e-mail addresses.
        contacts: Vec<String>,
    },
    /// The Notify action was due for the latest version (once per version).
    NearExpiry {
        /// The vault's name.
        vault: String,
        /// The key's name.
        name: String,
        /// The version nearing expiry.
        version: String,
        /// Its `exp`.
        expires: i64,
    },
}

impl Vaults {
    /// A key's rotation policy (the default one when none was set).
    pub fn get_rotation_policy(
        &self,
        vault: &VaultRecord,
        name: &str,
    ) -> Result<Value, VaultError> {
        check_object_name(name)?;
        self.store.read(|tx| {
            let state = live_state(tx, vault, ObjectKind::Key, name)?;
            Ok(tx
                .rotation_policy(&vault.vault_id, &state.name)?
                .unwrap_or_else(default_policy))
        })
    }

    /// Replaces a key's rotation policy after checking Azure's rules.
    pub fn set_rotation_policy(
        &self,
        vault: &VaultRecord,
        name: &str,
        body: &Value,
        now: i64,
    ) -> Result<Value, VaultError> {
        check_object_name(name)?;
        let policy = parse_policy(body)?;
        self.write(|tx| {
            let state = live_state(tx, vault, ObjectKind::Key, name)?;
            let created = tx
                .rotation_policy(&vault.vault_id, &state.name)?
                .and_then(|p| p.pointer("/attributes/created").and_then(Value::as_i64))
                .unwrap_or(now);
            let stored = policy_json(&policy, Some(created), Some(now));
            tx.set_rotation_policy(&vault.vault_id, &state.name, &stored)?;
            Ok(stored)
        })
    }
}

impl Vaults {
    /// Runs every due lifetime action as of `now`: rotates keys whose Rotate trigger has
    /// passed and notifies, once per version, of versions nearing expiry. One key's failure
    /// does not stop the others.
    pub fn run_lifetime_actions(&self, now: i64) -> Result<Vec<LifetimeEvent>, VaultError> {
        let keys = self.store.read(|tx| tx.keys_with_lifetime())?;
        let mut events = Vec::new();
        for k in keys {
            let policy = match parse_policy(k.policy.as_ref().unwrap_or(&default_policy())) {
                Ok(policy) => policy,
                Err(error) => {
                    events.push(LifetimeEvent::RotationFailed {
                        vault: k.vault_name,
                        name: k.name,
                        error,
                    });
                    continue;
                }
            };
            if policy.rotation_due(k.created, k.expires, now) {
                let rotated = self
                    .data_plane_vault(&k.vault_name)
                    .and_then(|vault| self.rotate_key(&vault, &k.name, now));
                events.push(match rotated {
                    Ok(key) => LifetimeEvent::Rotated {
                        vault: k.vault_name,
                        previous_version: k.latest_version,
                        key: Box::new(key),
                    },
                    Err(error) => LifetimeEvent::RotationFailed {
                        vault: k.vault_name,
                        name: k.name,
                        error,
                    },
                });
            } else if policy.notify_due(k.created, k.expires, now)
                && k.notified_version.as_deref() != Some(&k.latest_version)
            {
                let vault = self.data_plane_vault(&k.vault_name)?;
                self.write(|tx| {
                    Ok(tx.set_notified_version(&vault.vault_id, &k.name, &k.latest_version)?)
                })?;
                events.push(LifetimeEvent::NearExpiry {
                    vault: k.vault_name,
                    name: k.name,
                    version: k.latest_version,
                    expires: k.expires.unwrap_or(now),
                });
            }
        }
        events.extend(self.run_certificate_lifetime_actions(now)?);
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_shape_round_trips_and_rules_apply() {
        let body = json!({
            "lifetimeActions": [
                { "trigger": { "timeAfterCreate": "P90D" }, "action": { "type": "Rotate" } },
                { "trigger": { "timeBeforeExpiry": "P30D" }, "action": { "type": "notify" } },
            ],
            "attributes": { "expiryTime": "P1Y" },
        });
        let policy = parse_policy(&body).unwrap();
        let back = policy_json(&policy, None, None);
        assert_eq!(back["lifetimeActions"][1]["action"]["type"], "Notify");
        assert_eq!(back["attributes"]["expiryTime"], "P1Y");
        assert_eq!(parse_policy(&back).unwrap(), policy);
        for bad in [
            json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P1D" }, "action": { "type": "Rotate" } }] }),
            json!({ "lifetimeActions": [{ "trigger": {}, "action": { "type": "Rotate" } }] }),
            json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": "P9D" }, "action": { "type": "Explode" } }] }),
            json!({ "lifetimeActions": [{ "trigger": { "timeAfterCreate": 9 }, "action": { "type": "Rotate" } }] }),
            json!({ "lifetimeActions": "P9D" }),
            json!({ "attributes": { "expiryTime": "P10D" } }),
        ] {
            assert!(parse_policy(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn scheduled_rotation_and_near_expiry_notice() {
        use crate::test_support::fixture;
        use crate::{AttributesPatch, CreateKey};
        const DAY: i64 = 86_400;
        let f = fixture();
        let v = crate::test_support::vault(&f.vaults, "kv1", "westeurope", false);
        let ec = CreateKey {
            curve: Some("P-256".into()),
            ..CreateKey::of_type("EC")
        };
        let first = f.vaults.create_key(&v, "k", &ec, 100).unwrap();
        f.vaults.create_key(&v, "no-policy", &ec, 100).unwrap();
        f.vaults
            .set_rotation_policy(
                &v,
                "K",
                &json!({
                    "lifetimeActions": [
                        { "trigger": { "timeAfterCreate": "P7D" }, "action": { "type": "Rotate" } },
                        { "trigger": { "timeBeforeExpiry": "P7D" }, "action": { "type": "Notify" } },
                    ],
                    "attributes": { "expiryTime": "P28D" },
                }),
                100,
            )
            .unwrap();
        assert!(f
            .vaults
            .run_lifetime_actions(100 + 7 * DAY - 1)
            .unwrap()
            .is_empty());

        let day7 = 100 + 7 * DAY;
        let events = f.vaults.run_lifetime_actions(day7).unwrap();
        let [LifetimeEvent::Rotated {
            previous_version,
            key,
            ..
        }] = &events[..]
        else {
            panic!("expected one rotation, got {events:?}");
        };
        assert_eq!(previous_version, &first.version);
        assert_eq!(key.attributes.created, day7);
        assert_eq!(key.attributes.expires, Some(day7 + 28 * DAY));
        assert!(f.vaults.run_lifetime_actions(day7 + 1).unwrap().is_empty());

        f.vaults.delete_key(&v, "k", day7 + 2).unwrap();
        assert!(
            f.vaults
                .run_lifetime_actions(day7 + 100 * DAY)
                .unwrap()
                .is_empty(),
            "deleted keys rest"
        );

        // The default policy notifies 30 days before expiry, once per version.
        let expires = day7 + 60 * DAY;
        let expiring = f
            .vaults
            .create_key(
                &v,
                "expiring",
                &CreateKey {
                    attributes: AttributesPatch {
                        expires: Some(expires),
                        ..Default::default()
                    },
                    ..ec
                },
                day7,
            )
            .unwrap();
        let notice_at = expires - 30 * DAY;
        assert!(f
            .vaults
            .run_lifetime_actions(notice_at - 1)
            .unwrap()
            .is_empty());
        let events = f.vaults.run_lifetime_actions(notice_at).unwrap();
        assert!(
            matches!(&events[..], [LifetimeEvent::NearExpiry { version, .. }] if version == &expiring.version),
            "{events:?}"
        );
        assert!(
            f.vaults
                .run_lifetime_actions(notice_at + 1)
                .unwrap()
                .is_empty(),
            "one notice per version"
        );
    }
}
