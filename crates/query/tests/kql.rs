//! The engine against small tables, including an auditor's query verbatim.

use std::collections::HashMap;

use atrest_query::{run, Catalog, Table, Value};

struct Tables(HashMap<&'static str, Table>);

impl Catalog for Tables {
    fn table(&self, name: &str) -> Option<Table> {
        self.0.get(name).cloned()
    }
}

const NOW: i64 = 1_800_000_000_000;
const MIN: i64 = 60_000;

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn event(mins_ago: i64, op: &str, id: &str, app: &str, result: &str) -> Vec<Value> {
    vec![
        Value::DateTime(NOW - mins_ago * MIN),
        s("MICROSOFT.KEYVAULT"),
        s(op),
        s(id),
        s(app),
        s(result),
        s(if result == "OK" {
            ""
        } else {
            "Caller is not authorized"
        }),
        Value::Real(if result == "OK" { 200.0 } else { 403.0 }),
    ]
}

fn catalog() -> Tables {
    let diag = Table {
        columns: [
            "TimeGenerated",
            "ResourceProvider",
            "OperationName",
            "id_s",
            "identity_claim_appid_g",
            "ResultSignature",
            "ResultDescription",
            "httpStatusCode_d",
        ]
        .map(String::from)
        .to_vec(),
        rows: vec![
            event(
                50,
                "KeyUnwrap",
                "https://kv1.vault.azure.net/keys/cmk/v1",
                "des",
                "OK",
            ),
            event(
                40,
                "KeyUnwrap",
                "https://kv1.vault.azure.net/keys/cmk/v1",
                "des",
                "OK",
            ),
            event(
                30,
                "KeyWrap",
                "https://kv1.vault.azure.net/keys/cmk/v2",
                "des",
                "OK",
            ),
            event(
                20,
                "KeyUnwrap",
                "https://kv1.vault.azure.net/keys/cmk/v1",
                "app",
                "Forbidden",
            ),
            event(
                10,
                "KeyGet",
                "https://kv1.vault.azure.net/keys/cmk/v2",
                "app",
                "OK",
            ),
            event(
                5,
                "SecretGet",
                "https://kv2.vault.azure.net/secrets/s/v9",
                "app",
                "OK",
            ),
        ],
    };
    let signins = Table {
        columns: ["AppId", "ServicePrincipalName", "TimeGenerated"]
            .map(String::from)
            .to_vec(),
        rows: vec![
            vec![s("des"), s("des-identity"), Value::DateTime(NOW - 60 * MIN)],
            vec![s("app"), s("billing-app"), Value::DateTime(NOW - 60 * MIN)],
        ],
    };
    Tables(HashMap::from([
        ("AzureDiagnostics", diag),
        ("AADManagedIdentitySignInLogs", signins),
    ]))
}

fn query(q: &str) -> Table {
    run(q, &catalog(), NOW).unwrap_or_else(|e| panic!("{q}\n{e}"))
}

fn texts(t: &Table) -> Vec<Vec<String>> {
    t.rows
        .iter()
        .map(|r| r.iter().map(Value::to_text).collect())
        .collect()
}

#[test]
fn the_cmk_verification_query_runs_verbatim() {
    let t = query(
        r#"AzureDiagnostics
| where ResourceProvider =="MICROSOFT.KEYVAULT"
| extend targetKeyVaultName = replace_string(tostring(split(id_s,"/")[2]),".vault.azure.net","")
| extend targetKeyName = tostring(split(id_s,"/")[4])
| extend targetKeyVersion = tostring(split(id_s,"/")[5])
| summarize count() by targetKeyVaultName, targetKeyName, targetKeyVersion, callerId = identity_claim_appid_g, OperationName, ResultSignature, ResultDescription
| project targetKeyVaultName, targetKeyName, targetKeyVersion, callerId , OperationName, ResultSignature, ResultDescription, CallsNumber = count_
| order by CallsNumber desc"#,
    );
    assert_eq!(
        t.columns,
        [
            "targetKeyVaultName",
            "targetKeyName",
            "targetKeyVersion",
            "callerId",
            "OperationName",
            "ResultSignature",
            "ResultDescription",
            "CallsNumber"
        ]
    );
    let rows = texts(&t);
    assert_eq!(
        rows[0],
        ["kv1", "cmk", "v1", "des", "KeyUnwrap", "OK", "", "2"]
    );
    assert_eq!(rows.len(), 5);
    assert!(rows.contains(
        &[
            "kv1",
            "cmk",
            "v1",
            "app",
            "KeyUnwrap",
            "Forbidden",
            "Caller is not authorized",
            "1"
        ]
        .map(String::from)
        .to_vec()
    ));
    assert!(rows.contains(
        &["kv2", "s", "v9", "app", "SecretGet", "OK", "", "1"]
            .map(String::from)
            .to_vec()
    ));
}

#[test]
fn last_key_call_per_caller_joined_with_sign_ins() {
    let t = query(
        r#"AzureDiagnostics
| where OperationName startswith "Key" and OperationName != "KeyGet"
| extend KeyVersion = tostring(split(id_s, "/")[5])
| summarize arg_max(TimeGenerated, OperationName, ResultSignature) by identity_claim_appid_g, KeyVersion
| join kind=inner (AADManagedIdentitySignInLogs | distinct AppId, ServicePrincipalName) on $left.identity_claim_appid_g == $right.AppId
| project ServicePrincipalName, KeyVersion, OperationName, ResultSignature, TimeGenerated
| order by ServicePrincipalName asc, KeyVersion asc"#,
    );
    let rows = texts(&t);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(
        rows[0][..4],
        ["billing-app", "v1", "KeyUnwrap", "Forbidden"]
    );
    assert_eq!(rows[1][..4], ["des-identity", "v1", "KeyUnwrap", "OK"]);
    assert_eq!(
        rows[1][4],
        Value::DateTime(NOW - 40 * MIN).to_text(),
        "the latest of the two unwraps"
    );
    assert_eq!(rows[2][..4], ["des-identity", "v2", "KeyWrap", "OK"]);
}

#[test]
fn operators_and_functions() {
    let one = |q: &str| texts(&query(q));
    assert_eq!(
        one("AzureDiagnostics | where TimeGenerated > ago(25m) | count"),
        [["3"]]
    );
    assert_eq!(
        one("AzureDiagnostics | where OperationName in (\"KeyWrap\", \"KeyGet\") | project OperationName | order by OperationName asc"),
        [["KeyGet"], ["KeyWrap"]]
    );
    assert_eq!(
        one("AzureDiagnostics | where not(OperationName contains \"key\") | project OperationName"),
        [["SecretGet"]]
    );
    assert_eq!(
        one("AzureDiagnostics | where id_s endswith \"/v9\" or httpStatusCode_d == 403 | count"),
        [["2"]]
    );
    assert_eq!(one("AzureDiagnostics | where OperationName !in (\"KeyUnwrap\") and isnotempty(id_s) | count"), [["3"]]);
    assert_eq!(
        one("AzureDiagnostics | summarize dcount(identity_claim_appid_g), min(httpStatusCode_d), max(httpStatusCode_d), n = count()"),
        [["2", "200", "403", "6"]]
    );
    assert_eq!(
        one("AzureDiagnostics | summarize count() by bin(TimeGenerated, 30m) | order by TimeGenerated asc | project c = count_"),
        [["2"], ["4"]]
    );
    assert_eq!(one("AzureDiagnostics | distinct identity_claim_appid_g | order by identity_claim_appid_g asc"), [["app"], ["des"]]);
    assert_eq!(
        one("union (AzureDiagnostics | take 1 | project a = 1), (AADManagedIdentitySignInLogs | take 1 | project b = 2)"),
        [["1", ""], ["", "2"]]
    );
    assert_eq!(one("AzureDiagnostics | take 1 | extend x = strcat(toupper(\"a\"), strlen(\"abc\"), iff(true, \"y\", \"n\")) | project x"), [["A3y"]]);
    assert_eq!(one("AzureDiagnostics | take 1 | project s = split(\"a/b\", \"/\")[-1], t = 1d + 2h, u = 7 / 2"), [["b", "1.02:00:00", "3"]]);
}

#[test]
fn faults_are_placed() {
    let err = |q: &str| run(q, &catalog(), NOW).unwrap_err();
    let e = err("AzureDiagnostics\n| where Nope == 1");
    assert_eq!((e.line, e.column), (2, 9));
    assert!(e.message.contains("unknown column 'Nope'"), "{e}");
    let e = err("AzureDiagnostics | summarize count( by x");
    assert!(e.message.contains("expected"), "{e}");
    assert_eq!(e.line, 1);
    let e = err("Missing | take 1");
    assert_eq!(
        (e.column, e.message.as_str()),
        (1, "unknown table 'Missing'")
    );
    let e = err("AzureDiagnostics | wher x");
    assert!(
        e.message.contains("unknown tabular operator 'wher'") && e.column == 20,
        "{e}"
    );
    let e = err("AzureDiagnostics | where OperationName");
    assert!(e.message.contains("true/false"), "{e}");
    let e = err("AzureDiagnostics | project count()");
    assert!(e.message.contains("aggregate"), "{e}");
    let e = err("AzureDiagnostics | where x == 'open");
    assert!(e.message.contains("unterminated"), "{e}");
    let e = err("AzureDiagnostics | take 1 | project bogus(1)");
    assert!(e.message.contains("unknown function 'bogus'"), "{e}");
}
