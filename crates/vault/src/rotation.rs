//! Key rotation policies: the API's JSON shape, Azure's rules (from `atrest_core`), storage.

use atrest_core::names::check_object_name;
use atrest_core::rotation::{Action, Period, RotationPolicy, Trigger};
use atrest_store::{ObjectKind, VaultRow};
use serde_json::{json, Value};

use crate::objects::live_state;
use crate::{VaultError, Vaults};

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

impl Vaults {
    /// A key's rotation policy (the default one when none was set).
    pub fn get_rotation_policy(&self, vault: &VaultRow, name: &str) -> Result<Value, VaultError> {
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
        vault: &VaultRow,
        name: &str,
        body: &Value,
        now: i64,
    ) -> Result<Value, VaultError> {
        check_object_name(name)?;
        let policy = parse_policy(body)?;
        self.store.write(|tx| {
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
}
