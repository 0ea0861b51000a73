//! Drives the real HTTP API of an in-process instance on an ephemeral port: bad input
//! gets a 4xx Azure error body, nothing stored changes, and the server keeps serving.

use std::time::Duration;

use atrest_api::client::{Client, Response};
use atrest_api::{Instance, Options};
use hyper::Method;
use serde_json::{json, Value};

struct TestServer {
    client: Client,
    port: u16,
    token: String,
    mgmt_token: String,
    subscription: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    /// The data directory, removed when the server is dropped.
    _dir: tempfile::TempDir,
}

impl TestServer {
    async fn start(name: &str) -> TestServer {
        let dir = tempfile::Builder::new()
            .prefix(&format!("atrest-it-{name}-"))
            .tempdir()
            .unwrap();
        let opts = Options {
            data_dir: dir.path().to_owned(),
            listen: "127.0.0.1:0".parse().unwrap(),
            token_lifetime: 3600,
            purge_interval: Duration::from_secs(3600),
            audit_retention: None,
            limits: Default::default(),
            alert_webhook: None,
            nbd_listen: None,
            blob_store: None,
            blob_garbage_grace: Duration::from_secs(900),
            snapshot_copy_bandwidth: None,
            snapshot_limits: Default::default(),
            key_check_interval: Duration::from_secs(60),
            audit_durability: Default::default(),
            state: None,
            replica_name: None,
            public_port: None,
            lease_duration: Duration::from_secs(10),
        };
        let instance = Instance::start(&opts).await.expect("instance starts");
        let port = instance.local_addr().port();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(instance.run(async move {
            let _ = stopped.await;
        }));
        let env = atrest_api::instance::parse_env(
            &std::fs::read_to_string(dir.path().join("env")).unwrap(),
        );
        let client =
            Client::new(&std::fs::read_to_string(dir.path().join("tls/ca.pem")).unwrap()).unwrap();
        let mut server = TestServer {
            client,
            port,
            token: String::new(),
            mgmt_token: String::new(),
            subscription: env["ATREST_SUBSCRIPTION_ID"].clone(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        let id = env["AZURE_CLIENT_ID"].clone();
        let secret = env["AZURE_CLIENT_SECRET"].clone();
        server.token = server
            .token_for(&id, &secret, &format!("https://vault.localhost:{port}"))
            .await;
        server.mgmt_token = server
            .token_for(&id, &secret, "https://management.azure.com")
            .await;
        server
    }

    async fn token_for(&self, id: &str, secret: &str, resource: &str) -> String {
        let form = format!("grant_type=client_credentials&client_id={id}&client_secret={secret}&resource={resource}");
        let resp = self
            .raw(
                Method::POST,
                "localhost",
                "/adfs/oauth2/token",
                "application/x-www-form-urlencoded",
                None,
                form.into_bytes(),
            )
            .await;
        assert_eq!(resp.status, 200, "{:?}", resp.body);
        resp.json()["access_token"].as_str().unwrap().to_owned()
    }

    async fn raw(
        &self,
        method: Method,
        host: &str,
        path: &str,
        content_type: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> Response {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", content_type)];
        if let Some(a) = &auth {
            headers.push(("authorization", a.as_str()));
        }
        self.client
            .send(
                method,
                &format!("https://{host}:{}{path}", self.port),
                &headers,
                body,
            )
            .await
            .expect("request sent")
    }

    /// A data-plane request to vault `kvt`.
    async fn data(&self, method: Method, path: &str, body: &[u8]) -> Response {
        self.raw(
            method,
            "kvt.vault.localhost",
            path,
            "application/json",
            Some(&self.token),
            body.to_vec(),
        )
        .await
    }

    fn vault_path(&self, name: &str) -> String {
        format!(
            "/subscriptions/{}/resourceGroups/default/providers/Microsoft.KeyVault/vaults/{name}",
            self.subscription
        )
    }

    async fn mgmt(&self, method: Method, path: &str, body: &[u8]) -> Response {
        self.raw(
            method,
            "localhost",
            path,
            "application/json",
            Some(&self.mgmt_token),
            body.to_vec(),
        )
        .await
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task
            .take()
            .unwrap()
            .await
            .unwrap()
            .expect("clean shutdown");
    }
}

/// Asserts an Azure error body with `status` and `code`.
#[track_caller]
fn check_error(resp: &Response, status: u16, code: &str) {
    assert_eq!(
        resp.status,
        status,
        "{}",
        String::from_utf8_lossy(&resp.body)
    );
    let body = resp.json();
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_data_plane_input_changes_nothing() {
    let s = TestServer::start("data").await;
    let create = json!({ "location": "westeurope" }).to_string();
    assert_eq!(
        s.mgmt(
            Method::PUT,
            &format!("{}?api-version=2023-07-01", s.vault_path("kvt")),
            create.as_bytes()
        )
        .await
        .status,
        201
    );
    let ok = s
        .data(
            Method::PUT,
            "/secrets/keep?api-version=7.5",
            br#"{"value":"v1","tags":{"a":"b"}}"#,
        )
        .await;
    assert_eq!(ok.status, 200);

    let cases: &[(&str, &[u8], u16, &str)] = &[
        (
            "/secrets/s1?api-version=7.5",
            b"{\"value\": ",
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=7.5",
            b"not json at all",
            400,
            "BadParameter",
        ),
        ("/secrets/s1?api-version=7.5", b"", 400, "BadParameter"),
        (
            "/secrets/s1?api-version=7.5",
            br#"{"value": 5}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=7.5",
            br#"{"value": "x", "tags": ["a"]}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=7.5",
            br#"{"value": "x", "attributes": {"enabled": "yes"}}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=7.5",
            br#"{"value": "x", "attributes": {"exp": "tomorrow"}}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=7.5",
            br#"{"contentType": "x"}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=banana",
            br#"{"value": "x"}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=7.9",
            br#"{"value": "x"}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=2016-10-01",
            br#"{"value": "x"}"#,
            400,
            "BadParameter",
        ),
        (
            "/secrets/s1?api-version=2025-13-45",
            br#"{"value": "x"}"#,
            400,
            "BadParameter",
        ),
        ("/secrets/s1", br#"{"value": "x"}"#, 400, "BadParameter"),
        (
            "/secrets/bad_name?api-version=7.5",
            br#"{"value": "x"}"#,
            400,
            "BadParameter",
        ),
    ];
    for (path, body, status, code) in cases {
        let resp = s.data(Method::PUT, path, body).await;
        check_error(&resp, *status, code);
    }
    // Nothing was stored: s1 does not exist in any form.
    check_error(
        &s.data(Method::GET, "/secrets/s1?api-version=7.5", b"")
            .await,
        404,
        "SecretNotFound",
    );
    check_error(
        &s.data(Method::GET, "/deletedsecrets/s1?api-version=7.5", b"")
            .await,
        404,
        "SecretNotFound",
    );

    // A bad update leaves the secret as it was.
    for body in [&b"{"[..], br#"{"tags": "x"}"#, br#"{"tags": {"t0":"","t1":"","t2":"","t3":"","t4":"","t5":"","t6":"","t7":"","t8":"","t9":"","t10":"","t11":"","t12":"","t13":"","t14":"","t15":""}}"#] {
        let resp = s.data(Method::PATCH, "/secrets/keep/?api-version=7.5", body).await;
        check_error(&resp, 400, "BadParameter");
    }
    let kept = s
        .data(Method::GET, "/secrets/keep/?api-version=7.5", b"")
        .await;
    assert_eq!(kept.status, 200);
    assert_eq!(kept.json()["value"], "v1");
    assert_eq!(kept.json()["tags"], json!({"a": "b"}));

    // Oversized bodies are refused without being buffered whole.
    let huge = vec![b'x'; 2 << 20];
    check_error(
        &s.data(Method::PUT, "/secrets/big?api-version=7.5", &huge)
            .await,
        413,
        "RequestEntityTooLarge",
    );
    // Unknown paths and vaults.
    check_error(
        &s.data(Method::GET, "/storage?api-version=7.5", b"").await,
        404,
        "NotFound",
    );
    let other = s
        .raw(
            Method::GET,
            "nope.vault.localhost",
            "/secrets?api-version=7.5",
            "application/json",
            Some(&s.token),
            vec![],
        )
        .await;
    check_error(&other, 404, "ResourceNotFound");
    // Still serving.
    assert_eq!(
        s.data(Method::GET, "/secrets?api-version=7.5", b"")
            .await
            .status,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_management_input_changes_nothing() {
    let s = TestServer::start("mgmt").await;
    let path = |q: &str| format!("{}{q}", s.vault_path("kv2"));
    let cases: &[(&str, &[u8], &str)] = &[
        ("?api-version=2023-07-01", b"{", "BadRequest"),
        (
            "?api-version=2023-07-01",
            br#"{"location": 7}"#,
            "BadRequest",
        ),
        (
            "?api-version=2023-07-01",
            br#"{"location": "westeurope", "properties": {"softDeleteRetentionInDays": "ninety"}}"#,
            "BadRequest",
        ),
        (
            "?api-version=2023-07-01",
            br#"{"location": "westeurope", "properties": {"softDeleteRetentionInDays": 91}}"#,
            "BadRequest",
        ),
        (
            "?api-version=2023-07-01",
            br#"{"location": "westeurope", "properties": {"enableSoftDelete": false}}"#,
            "BadRequest",
        ),
        (
            "?api-version=2023-07-01",
            br#"{"location": "westeurope", "properties": {"createMode": "sideways"}}"#,
            "BadRequest",
        ),
        (
            "?api-version=2023-07-01",
            br#"{"location": "west-europe!"}"#,
            "BadRequest",
        ),
        (
            "?api-version=2023-07-01",
            br#"{"properties": {}}"#,
            "BadRequest",
        ),
        (
            "",
            br#"{"location": "westeurope"}"#,
            "MissingApiVersionParameter",
        ),
        (
            "?api-version=7.4",
            br#"{"location": "westeurope"}"#,
            "InvalidApiVersionParameter",
        ),
    ];
    for (q, body, code) in cases {
        check_error(&s.mgmt(Method::PUT, &path(q), body).await, 400, code);
    }
    check_error(
        &s.mgmt(Method::GET, &path("?api-version=2023-07-01"), b"")
            .await,
        404,
        "ResourceNotFound",
    );

    let created = s
        .mgmt(
            Method::PUT,
            &path("?api-version=2023-07-01"),
            br#"{"location": "westeurope", "properties": {"enablePurgeProtection": true}}"#,
        )
        .await;
    assert_eq!(created.status, 201);
    assert_eq!(
        created.json()["properties"]["provisioningState"],
        "Succeeded"
    );
    let again = s
        .mgmt(
            Method::PUT,
            &path("?api-version=2023-07-01"),
            br#"{"location": "westeurope", "properties": {"enablePurgeProtection": true}}"#,
        )
        .await;
    assert_eq!(again.status, 200);
    for body in [
        &br#"{"properties": {"enablePurgeProtection": false}}"#[..],
        br#"{"properties": {"softDeleteRetentionInDays": 30}}"#,
        br#"{"location": "eastus"}"#,
        b"[]",
    ] {
        check_error(
            &s.mgmt(Method::PATCH, &path("?api-version=2023-07-01"), body)
                .await,
            400,
            "BadRequest",
        );
    }
    let vault = s
        .mgmt(Method::GET, &path("?api-version=2023-07-01"), b"")
        .await
        .json();
    assert_eq!(vault["properties"]["enablePurgeProtection"], true);
    assert_eq!(vault["properties"]["softDeleteRetentionInDays"], 90);
    assert_eq!(vault["location"], "westeurope");

    // Other subscriptions do not exist; management needs a management token.
    let foreign = "/subscriptions/00000000-0000-0000-0000-000000000000/providers/Microsoft.KeyVault/vaults?api-version=2023-07-01";
    check_error(
        &s.mgmt(Method::GET, foreign, b"").await,
        404,
        "SubscriptionNotFound",
    );
    let wrong_audience = s
        .raw(
            Method::GET,
            "localhost",
            &path("?api-version=2023-07-01"),
            "application/json",
            Some(&s.token),
            vec![],
        )
        .await;
    check_error(&wrong_audience, 401, "Unauthorized");
    let token = s
        .raw(
            Method::POST,
            "localhost",
            "/adfs/oauth2/v2.0/token",
            "application/json",
            None,
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(token.status, 400);
    assert_eq!(token.json()["error"], "invalid_request");
    check_error(&s.mgmt(Method::GET, "/nowhere", b"").await, 404, "NotFound");
    assert_eq!(
        s.mgmt(Method::GET, &path("?api-version=2023-07-01"), b"")
            .await
            .status,
        200
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_audited_before_the_response() {
    let s = TestServer::start("audit").await;
    let resp = s.data(Method::GET, "/secrets/x?api-version=7.5", b"").await;
    check_error(&resp, 404, "ResourceNotFound");
    let unauth = s
        .raw(
            Method::GET,
            "kvt.vault.localhost",
            "/secrets/x?api-version=7.5",
            "application/json",
            None,
            vec![],
        )
        .await;
    assert_eq!(unauth.status, 401);
    let correlation = unauth.headers["x-ms-client-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let events = s
        .raw(
            Method::GET,
            "localhost",
            "/atrest/audit?limit=10",
            "application/json",
            Some(&s.mgmt_token),
            vec![],
        )
        .await
        .json();
    let events = events["value"].as_array().unwrap();
    let denied = events
        .iter()
        .find(|e| e["correlationId"] == correlation.as_str())
        .expect("the 401 is audited");
    assert_eq!(denied["properties"]["httpStatusCode"], 401);
    assert_eq!(denied["operationName"], "SecretGet");
    assert_eq!(denied["identity"]["claim"]["appid"], Value::Null);
    assert!(events
        .iter()
        .any(|e| e["properties"]["httpStatusCode"] == 404 && e["operationName"] == "SecretGet"));
    assert!(
        events
            .iter()
            .filter(|e| e["operationName"] == "Authentication")
            .count()
            >= 2
    );
    check_error(
        &s.mgmt(Method::GET, "/atrest/audit?limit=0", b"").await,
        400,
        "BadRequest",
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_clock_moves_forward_only() {
    let s = TestServer::start("clock").await;
    for body in [
        &b"{"[..],
        br#"{"by": 7}"#,
        br#"{"by": "7 days"}"#,
        br#"{"by": "P0D"}"#,
        br#"{"by": "P1D", "back": true}"#,
        br#"{}"#,
    ] {
        let resp = s.mgmt(Method::POST, "/atrest/clock/advance", body).await;
        assert_eq!(resp.status, 400, "{}", String::from_utf8_lossy(body));
        assert!(resp.json()["error"]["message"].as_str().is_some());
    }
    let clock = s.mgmt(Method::GET, "/atrest/clock", b"").await.json();
    assert_eq!(clock["offsetSeconds"], 0, "refused advances change nothing");
    let moved = s
        .mgmt(
            Method::POST,
            "/atrest/clock/advance",
            br#"{"by": "P1DT1H"}"#,
        )
        .await
        .json();
    assert_eq!(moved["offsetSeconds"], 90_000);
    assert_eq!(moved["actions"], serde_json::json!([]));
    check_error(
        &s.mgmt(Method::PUT, "/atrest/clock", b"{}").await,
        404,
        "NotFound",
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_compute_input_changes_nothing() {
    let s = TestServer::start("compute").await;
    let compute = |kind: &str, name: &str, suffix: &str| {
        format!(
            "/subscriptions/{}/resourceGroups/default/providers/Microsoft.Compute/{kind}/{name}{suffix}?api-version=2024-03-02",
            s.subscription
        )
    };
    async fn put(s: &TestServer, path: String, body: &str) -> Response {
        s.mgmt(Method::PUT, &path, body.as_bytes()).await
    }
    check_error(
        &put(&s, compute("disks", "d1", ""), "{").await,
        400,
        "BadRequest",
    );
    check_error(
        &put(&s, compute("disks", "d1", ""), "").await,
        400,
        "BadRequest",
    );
    check_error(
        &put(
            &s,
            compute("disks", "d1", ""),
            r#"{"location":"westeurope","properties":{"diskSizeGB":"big"}}"#,
        )
        .await,
        400,
        "BadRequest",
    );
    check_error(
        &put(&s, compute("disks", "d1", ""), r#"{"location":"westeurope","properties":{"diskSizeGB":4,"creationData":{"createOption":"Copy"}}}"#).await,
        400,
        "InvalidParameter",
    );
    check_error(
        &put(
            &s,
            compute("disks", "d1", ""),
            r#"{"properties":{"diskSizeGB":4}}"#,
        )
        .await,
        400,
        "LocationRequired",
    );
    check_error(
        &put(&s, compute("disks", "d1", ""), r#"{"location":"westeurope","properties":{"diskSizeGB":4,"encryption":{"diskEncryptionSetId":"nope"}}}"#).await,
        400,
        "NotFound",
    );
    check_error(
        &put(
            &s,
            compute("diskEncryptionSets", "s1", ""),
            r#"{"location":"westeurope","identity":{"type":"UserAssigned"},"properties":{}}"#,
        )
        .await,
        400,
        "InvalidParameter",
    );
    check_error(
        &put(&s, compute("diskEncryptionSets", "s1", ""), r#"{"location":"westeurope","properties":{"activeKey":{"keyUrl":"https://kvt.vault.localhost/keys/k"}}}"#).await,
        400,
        "InvalidParameter",
    );
    check_error(
        &put(&s, compute("virtualMachines", "v1", ""), r#"{"location":"westeurope","properties":{"storageProfile":{"dataDisks":[{"lun":0}]}}}"#).await,
        400,
        "InvalidParameter",
    );
    check_error(
        &s.mgmt(
            Method::PATCH,
            &compute("disks", "missing", ""),
            br#"{"properties":{}}"#,
        )
        .await,
        404,
        "ResourceNotFound",
    );
    check_error(
        &s.mgmt(
            Method::POST,
            &compute("virtualMachines", "v1", "/reboot"),
            b"",
        )
        .await,
        404,
        "NotFound",
    );
    check_error(
        &s.mgmt(Method::POST, &compute("disks", "d1", "/start"), b"")
            .await,
        404,
        "NotFound",
    );
    // Snapshots: a body that does not parse, no source, an unknown source, another
    // createOption, a missing snapshot to update.
    for (body, status, code) in [
        ("{", 400, "BadRequest"),
        (
            r#"{"location":"westeurope","properties":{"incremental":"yes"}}"#,
            400,
            "BadRequest",
        ),
        (
            r#"{"location":"westeurope","properties":{}}"#,
            400,
            "InvalidParameter",
        ),
        (
            r#"{"properties":{"creationData":{"createOption":"Copy","sourceResourceId":"d9"}}}"#,
            400,
            "LocationRequired",
        ),
        (
            r#"{"location":"westeurope","properties":{"creationData":{"createOption":"Copy","sourceResourceId":"d9"}}}"#,
            400,
            "InvalidParameter",
        ),
        (
            r#"{"location":"westeurope","properties":{"creationData":{"createOption":"Empty"}}}"#,
            400,
            "InvalidParameter",
        ),
    ] {
        check_error(
            &put(&s, compute("snapshots", "s1", ""), body).await,
            status,
            code,
        );
    }
    check_error(
        &s.mgmt(
            Method::PATCH,
            &compute("snapshots", "missing", ""),
            br#"{"properties":{}}"#,
        )
        .await,
        404,
        "ResourceNotFound",
    );
    check_error(
        &s.mgmt(
            Method::POST,
            &compute("snapshots", "missing", "/beginGetAccess"),
            br#"{"access": "Read", "durationInSeconds": 60}"#,
        )
        .await,
        404,
        "ResourceNotFound",
    );
    // Images: a body that does not parse, no disks, a data disk without a LUN, an OS
    // disk without its type, an unknown generation; a disk from an image not named.
    for (body, code) in [
        ("{", "BadRequest"),
        (
            r#"{"location":"westeurope","properties":{}}"#,
            "InvalidParameter",
        ),
        (
            r#"{"location":"westeurope","properties":{"storageProfile":{"dataDisks":[{"managedDisk":{"id":"d1"}}]}}}"#,
            "InvalidParameter",
        ),
        (
            r#"{"location":"westeurope","properties":{"storageProfile":{"osDisk":{"osState":"Generalized","managedDisk":{"id":"d1"}}}}}"#,
            "InvalidParameter",
        ),
        (
            r#"{"location":"westeurope","properties":{"hyperVGeneration":"V9","storageProfile":{"osDisk":{"osType":"Linux","osState":"Generalized","managedDisk":{"id":"d1"}}}}}"#,
            "InvalidParameter",
        ),
    ] {
        check_error(&put(&s, compute("images", "i1", ""), body).await, 400, code);
    }
    check_error(
        &put(&s, compute("disks", "d2", ""), r#"{"location":"westeurope","properties":{"creationData":{"createOption":"FromImage"}}}"#).await,
        400,
        "InvalidParameter",
    );
    // Nothing was created, and the server still serves.
    for kind in [
        "disks",
        "diskEncryptionSets",
        "images",
        "snapshots",
        "virtualMachines",
    ] {
        let list = s
            .mgmt(
                Method::GET,
                &format!(
                    "/subscriptions/{}/providers/Microsoft.Compute/{kind}?api-version=2024-03-02",
                    s.subscription
                ),
                b"",
            )
            .await;
        assert_eq!(list.status, 200);
        assert_eq!(list.json()["value"], serde_json::json!([]), "{kind}");
    }
    let created = put(
        &s,
        compute("disks", "d1", ""),
        r#"{"location":"westeurope","properties":{"diskSizeGB":4}}"#,
    )
    .await;
    // The compute spec allows 200 or 202 for a disk's PUT, not 201.
    assert_eq!(created.status, 200, "{:?}", created.json());
    assert_eq!(
        created.json()["properties"]["encryption"]["type"],
        "EncryptionAtRestWithPlatformKey"
    );
    // Disk access: bad requests are refused by name, and a URL that was never granted
    // serves nothing.
    let access_path = compute("disks", "d1", "/beginGetAccess");
    for body in [
        &br#"{"access": "Read", "durationInSeconds": 0}"#[..],
        br#"{"access": "Read", "durationInSeconds": 9999999}"#,
        br#"{"access": "Sideways", "durationInSeconds": 60}"#,
        br#"{"access": "Read", "durationInSeconds": 60, "fileFormat": "VHDX"}"#,
    ] {
        let resp = s.mgmt(Method::POST, &access_path, body).await;
        assert_eq!(resp.status, 400, "{:?}", resp.json());
    }
    check_error(
        &s.mgmt(
            Method::POST,
            &compute("disks", "nope", "/beginGetAccess"),
            br#"{"access": "Read", "durationInSeconds": 60}"#,
        )
        .await,
        404,
        "ResourceNotFound",
    );
    for body in [
        r#"{"location":"westeurope","properties":{"creationData":{"createOption":"Upload"}}}"#,
        r#"{"location":"westeurope","properties":{"creationData":{"createOption":"Upload","uploadSizeBytes":20971520}}}"#,
        r#"{"location":"westeurope","properties":{"creationData":{"createOption":"Upload","uploadSizeBytes":1049088}}}"#,
        r#"{"location":"westeurope","properties":{"creationData":{"createOption":"Copy"}}}"#,
    ] {
        check_error(
            &put(&s, compute("disks", "up1", ""), body).await,
            400,
            "InvalidParameter",
        );
    }
    check_error(
        &s.mgmt(Method::GET, &compute("disks", "up1", ""), b"").await,
        404,
        "ResourceNotFound",
    );
    let forged_write = s
        .raw(
            Method::PUT,
            "localhost",
            "/atrest-md/default/d1.vhd?comp=page&sig=0000",
            "application/octet-stream",
            None,
            vec![0; 512],
        )
        .await;
    check_error(&forged_write, 403, "AuthenticationFailed");
    let forged = s
        .raw(
            Method::GET,
            "localhost",
            "/atrest-md/default/d1.vhd?sig=0000",
            "application/json",
            None,
            Vec::new(),
        )
        .await;
    check_error(&forged, 403, "AuthenticationFailed");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_resource_manager_input_changes_nothing() {
    let s = TestServer::start("resources").await;
    let groups = format!("/subscriptions/{}/resourcegroups", s.subscription);
    let group = |name: &str| format!("{groups}/{name}?api-version=2024-11-01");
    let list = || async {
        let resp = s
            .mgmt(
                Method::GET,
                &format!("{groups}?api-version=2024-11-01"),
                b"",
            )
            .await;
        assert_eq!(resp.status, 200);
        resp.json()["value"].clone()
    };
    let before = list().await;
    assert_eq!(
        before.as_array().map(Vec::len),
        Some(1),
        "only 'default': {before}"
    );
    let bad_puts: &[(&str, &[u8], u16, &str)] = &[
        (
            "bad%20name",
            br#"{"location": "westeurope"}"#,
            400,
            "InvalidResourceGroupName",
        ),
        (
            "ends.",
            br#"{"location": "westeurope"}"#,
            400,
            "InvalidResourceGroupName",
        ),
        ("rg1", br#"{}"#, 400, "LocationRequired"),
        (
            "rg1",
            br#"{"location": "west europe!"}"#,
            400,
            "InvalidLocation",
        ),
        ("rg1", b"{", 400, "BadRequest"),
        (
            "default",
            br#"{"location": "eastus"}"#,
            409,
            "InvalidResourceGroupLocation",
        ),
    ];
    for (name, body, status, code) in bad_puts {
        check_error(
            &s.mgmt(Method::PUT, &group(name), body).await,
            *status,
            code,
        );
    }
    check_error(
        &s.mgmt(Method::GET, &group("missing"), b"").await,
        404,
        "ResourceGroupNotFound",
    );
    assert_eq!(
        s.mgmt(Method::HEAD, &group("missing"), b"").await.status,
        404
    );
    assert_eq!(
        s.mgmt(Method::HEAD, &group("default"), b"").await.status,
        204
    );
    // A vault in a group that does not exist is refused, and none is created.
    let vault = format!(
        "/subscriptions/{}/resourceGroups/missing/providers/Microsoft.KeyVault/vaults/kvx?api-version=2026-02-01",
        s.subscription
    );
    check_error(
        &s.mgmt(Method::PUT, &vault, br#"{"location": "westeurope"}"#)
            .await,
        404,
        "ResourceGroupNotFound",
    );
    // Deleting a group deletes what it holds: its vault is soft-deleted, recoverable.
    let created = s
        .mgmt(
            Method::PUT,
            &group("doomed"),
            br#"{"location": "westeurope"}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    let doomed_vault = format!(
        "/subscriptions/{}/resourceGroups/doomed/providers/Microsoft.KeyVault/vaults/kvdoomed?api-version=2026-02-01",
        s.subscription
    );
    let created = s
        .mgmt(Method::PUT, &doomed_vault, br#"{"location": "westeurope"}"#)
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    assert_eq!(
        s.mgmt(Method::DELETE, &group("doomed"), b"").await.status,
        200
    );
    check_error(
        &s.mgmt(Method::GET, &group("doomed"), b"").await,
        404,
        "ResourceGroupNotFound",
    );
    check_error(
        &s.mgmt(Method::DELETE, &group("doomed"), b"").await,
        404,
        "ResourceGroupNotFound",
    );
    let deleted = s
        .mgmt(
            Method::GET,
            &format!(
                "/subscriptions/{}/providers/Microsoft.KeyVault/deletedVaults?api-version=2026-02-01",
                s.subscription
            ),
            b"",
        )
        .await;
    assert!(
        deleted.json()["value"]
            .as_array()
            .is_some_and(|v| v.iter().any(|d| d["name"] == "kvdoomed")),
        "{:?}",
        deleted.json()
    );
    let created = s
        .mgmt(
            Method::PUT,
            &format!("{}?api-version=2026-02-01", s.vault_path("kvrg")),
            br#"{"location": "westeurope"}"#,
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.json());
    // Filters that are not understood are refused, not ignored.
    for filter in [
        "location%20eq%20'x'",
        "name%20ne%20'kvrg'",
        "name%20eq%20'a'%20or%20name%20eq%20'b'",
    ] {
        let path = format!(
            "/subscriptions/{}/resources?api-version=2024-11-01&$filter={filter}",
            s.subscription
        );
        check_error(
            &s.mgmt(Method::GET, &path, b"").await,
            400,
            "InvalidFilterInQueryString",
        );
    }
    let path = format!(
        "/subscriptions/{}/resources?api-version=2024-11-01&$filter=resourceType%20eq%20'Microsoft.KeyVault/vaults'%20and%20name%20eq%20'KVRG'",
        s.subscription
    );
    let found = s.mgmt(Method::GET, &path, b"").await;
    assert_eq!(
        found.json()["value"][0]["name"],
        "kvrg",
        "{:?}",
        found.json()
    );
    // Graph needs its own audience: a management token is refused.
    let graph = s
        .mgmt(
            Method::POST,
            "/v1.0/directoryObjects/getByIds",
            br#"{"ids": []}"#,
        )
        .await;
    assert_eq!(graph.status, 401);
    let env = atrest_api::instance::parse_env(
        &std::fs::read_to_string(s._dir.path().join("env")).unwrap(),
    );
    let graph_token = s
        .token_for(
            &env["AZURE_CLIENT_ID"],
            &env["AZURE_CLIENT_SECRET"],
            &format!("https://localhost:{}", s.port),
        )
        .await;
    let graph = |method: Method, path: &'static str, body: &'static [u8]| {
        s.raw(
            method,
            "localhost",
            path,
            "application/json",
            Some(&graph_token),
            body.to_vec(),
        )
    };
    check_error(
        &graph(Method::POST, "/v1.0/directoryObjects/getByIds", b"{").await,
        400,
        "BadRequest",
    );
    check_error(
        &graph(
            Method::GET,
            "/v1.0/servicePrincipals?$filter=startswith(displayName,'a')",
            b"",
        )
        .await,
        400,
        "InvalidFilterInQueryString",
    );
    check_error(
        &graph(Method::GET, "/v1.0/users/nobody@contoso.com", b"").await,
        404,
        "Request_ResourceNotFound",
    );
    let found = graph(
        Method::POST,
        "/v1.0/directoryObjects/getByIds",
        br#"{"ids": ["not-an-id"]}"#,
    )
    .await;
    assert_eq!(
        (found.status, found.json()["value"].clone()),
        (200, json!([]))
    );
    // The cloud's metadata needs no token and names this instance.
    let metadata = s
        .raw(
            Method::GET,
            "localhost",
            "/metadata/endpoints?api-version=2022-09-01",
            "application/json",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(metadata.status, 200);
    assert_eq!(
        metadata.json()["suffixes"]["keyVaultDns"],
        format!("vault.localhost:{}", s.port)
    );
    // Nothing above changed the groups, and the server still serves.
    assert_eq!(list().await, before);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probes_answer_without_credentials() {
    let s = TestServer::start("health").await;
    for path in ["/healthz", "/readyz"] {
        let resp = s
            .raw(Method::GET, "localhost", path, "", None, Vec::new())
            .await;
        assert_eq!(resp.status, 200, "{path}: {:?}", resp.body);
        assert_eq!(resp.json()["status"], "ok", "{path}");
    }
    // Only GET: anything else is no route.
    let resp = s
        .raw(Method::POST, "localhost", "/readyz", "", None, Vec::new())
        .await;
    assert_eq!(resp.status, 404, "{:?}", resp.body);
}
