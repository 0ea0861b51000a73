//! Mapping service errors to HTTP statuses and Azure (or OAuth2) error bodies.

use atrest_core::attributes::Unusable;
use atrest_core::vault::ObjectKind;
use atrest_crypto::KeyError;
use atrest_disk::ComputeError;
use atrest_identity::{DirectoryError, OAuthError, RoleError, TokenError};
use atrest_runtime::throttle::Throttled;
use atrest_vault::VaultError;
use hyper::header::{HeaderValue, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::StatusCode;
use serde_json::json;

use crate::http::{json, Resp};

/// An error response on its way out.
#[derive(Debug)]
pub(crate) struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Azure error code (or OAuth2 `error`).
    pub code: String,
    /// Human-readable message; never contains secret values.
    pub message: String,
    inner: Option<&'static str>,
    challenge: Option<String>,
    retry_after: Option<u64>,
    oauth_number: Option<u32>,
}

impl ApiError {
    /// An error with an Azure body.
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
            inner: None,
            challenge: None,
            retry_after: None,
            oauth_number: None,
        }
    }

    /// 429 `Throttled` with `Retry-After`, as Key Vault answers a vault over its limits.
    pub(crate) fn throttled(t: &Throttled, vault: &str) -> Self {
        ApiError {
            retry_after: Some(t.retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "Throttled",
                format!(
                    "Request was not processed because too many requests were received. Reason: the vault '{vault}' reached its limit of {} {} transactions per {} seconds. Retry after {} seconds.",
                    t.limit,
                    t.class.as_str(),
                    t.window_secs,
                    t.retry_after_secs
                ),
            )
        }
    }

    /// 400 with an Azure body.
    pub(crate) fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401 carrying the Key Vault bearer challenge.
    pub(crate) fn unauthorized(err: &TokenError, challenge: String) -> Self {
        ApiError {
            challenge: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", err.to_string())
        }
    }

    /// 403 for a principal that lacks administrator rights.
    pub(crate) fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
    }

    /// 403 `Forbidden` with the inner code `ForbiddenByRbac`, as Key Vault denies a caller
    /// without a role granting the action.
    pub(crate) fn forbidden_by_rbac(message: impl Into<String>) -> Self {
        let mut e = Self::forbidden(message);
        e.inner = Some("ForbiddenByRbac");
        e
    }

    /// 403 `Forbidden` with the inner code `ForbiddenByPolicy`, as Key Vault denies a caller
    /// no access policy entry grants the permission.
    pub(crate) fn forbidden_by_policy(message: impl Into<String>) -> Self {
        let mut e = Self::forbidden(message);
        e.inner = Some("ForbiddenByPolicy");
        e
    }

    /// 404 for a path or method this server does not serve.
    pub(crate) fn no_route(method: &hyper::Method, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No route for {method} {path}."),
        )
    }

    /// 500 without internal detail in the body; the detail goes to the log.
    pub(crate) fn internal(detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalServerError",
            "The server encountered an internal error.",
        )
    }

    /// The inner error code (`ForbiddenByRbac`, `KeyDisabled`, …), if one.
    pub(crate) fn inner_code(&self) -> Option<&'static str> {
        self.inner
    }

    /// The same error as ARM names it: resource providers answer invalid input with
    /// `BadRequest` where the Key Vault data plane says `BadParameter`.
    pub(crate) fn in_arm_terms(mut self) -> Self {
        if self.code == "BadParameter" {
            self.code = "BadRequest".to_owned();
        }
        self
    }

    /// The response.
    pub(crate) fn into_response(self) -> Resp {
        let body = match self.oauth_number {
            Some(number) => json!({
                "error": self.code,
                "error_description": self.message,
                "error_codes": [number],
                "timestamp": humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            }),
            None => {
                let mut error = json!({ "code": self.code, "message": self.message });
                if let Some(inner) = self.inner {
                    error["innererror"] = json!({ "code": inner });
                }
                json!({ "error": error })
            }
        };
        let mut resp = json(self.status, &body);
        if let Some(challenge) = self.challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
            resp.headers_mut().insert(WWW_AUTHENTICATE, challenge);
        }
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<VaultError> for ApiError {
    fn from(e: VaultError) -> Self {
        use ObjectKind::{Certificate, Key, Secret};
        use VaultError as E;
        let (status, code, inner) = match &e {
            E::VaultNotFound(_) => (StatusCode::NOT_FOUND, "ResourceNotFound", None),
            E::PendingNotFound(_) => (StatusCode::NOT_FOUND, "PendingCertificateNotFound", None),
            E::ContactsNotFound => (StatusCode::NOT_FOUND, "ContactsNotFound", None),
            E::IssuerNotFound(_) => (StatusCode::NOT_FOUND, "CertificateIssuerNotFound", None),
            E::VaultConflict(_) => (StatusCode::CONFLICT, "VaultAlreadyExists", None),
            E::NotFound { kind, .. } | E::DeletedNotFound { kind, .. } => (
                StatusCode::NOT_FOUND,
                match kind {
                    Secret => "SecretNotFound",
                    Key => "KeyNotFound",
                    Certificate => "CertificateNotFound",
                },
                None,
            ),
            E::DeletedButRecoverable { .. } => (
                StatusCode::CONFLICT,
                "Conflict",
                Some("ObjectIsDeletedButRecoverable"),
            ),
            E::AlreadyExists { .. } | E::NameInUse { .. } => {
                (StatusCode::CONFLICT, "Conflict", None)
            }
            E::ManagedByKeyVault { kind, .. } => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some(if *kind == Key {
                    "KeyManagedByKeyVault"
                } else {
                    "SecretManagedByKeyVault"
                }),
            ),
            E::Unusable { kind, reason, .. } => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some(match (kind, reason) {
                    (Secret, Unusable::Disabled) => "SecretDisabled",
                    (Secret, Unusable::NotYetValid) => "SecretNotYetValid",
                    (Secret, Unusable::Expired) => "SecretExpired",
                    (Key, Unusable::Disabled) => "KeyDisabled",
                    (Key, Unusable::NotYetValid) => "KeyNotYetValid",
                    (Key, Unusable::Expired) => "KeyExpired",
                    (Certificate, Unusable::Disabled) => "CertificateDisabled",
                    (Certificate, Unusable::NotYetValid) => "CertificateNotYetValid",
                    (Certificate, Unusable::Expired) => "CertificateExpired",
                }),
            ),
            E::PurgeProtected => (
                StatusCode::FORBIDDEN,
                "Forbidden",
                Some("PurgeProtectionEnabled"),
            ),
            E::VaultPurgeProtected(_) | E::OperationNotPermitted(_) => {
                (StatusCode::FORBIDDEN, "Forbidden", None)
            }
            E::Key(KeyError::Library(_)) => return ApiError::internal(&e),
            E::Key(
                KeyError::UnsupportedAlgorithm { .. }
                | KeyError::DigestLength { .. }
                | KeyError::BadInput(_)
                | KeyError::DecryptionFailed
                | KeyError::InvalidJwk(_)
                | KeyError::UnsupportedKey(_),
            )
            | E::BadParameter(_)
            | E::Name(_)
            | E::Rule(_)
            | E::AccessPolicy(_)
            | E::BadBackup(_) => (StatusCode::BAD_REQUEST, "BadParameter", None),
            // Store and crypto faults: the detail goes to the log only.
            E::Store(_) | E::Crypto(_) => return ApiError::internal(&e),
        };
        ApiError {
            inner,
            ..ApiError::new(status, code, e.to_string())
        }
    }
}

impl From<OAuthError> for ApiError {
    /// Entra ID's answer: status, OAuth2 `error` code and `AADSTS` number.
    fn from(e: OAuthError) -> Self {
        use OAuthError as E;
        let (status, code, number) = match &e {
            E::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request", 900144),
            E::UnsupportedGrantType(_) => {
                (StatusCode::BAD_REQUEST, "unsupported_grant_type", 70003)
            }
            E::InvalidClient(_) => (StatusCode::UNAUTHORIZED, "invalid_client", 7000215),
            E::InvalidGrant => (StatusCode::BAD_REQUEST, "invalid_grant", 50126),
            E::UnknownClient(_) => (StatusCode::BAD_REQUEST, "unauthorized_client", 700016),
            E::InvalidResource(_) => (StatusCode::BAD_REQUEST, "invalid_resource", 500011),
            E::IdentityNotFound => (StatusCode::BAD_REQUEST, "invalid_request", 400),
            E::Store(inner) => return ApiError::internal(inner),
        };
        ApiError {
            oauth_number: Some(number),
            ..ApiError::new(status, code, e.to_string())
        }
    }
}

impl From<DirectoryError> for ApiError {
    fn from(e: DirectoryError) -> Self {
        use DirectoryError as E;
        let (status, code) = match &e {
            E::NotFound(_) => (StatusCode::NOT_FOUND, "Request_ResourceNotFound"),
            E::BadUserPrincipalName(_)
            | E::WeakPassword
            | E::BadDisplayName
            | E::UserExists
            | E::Cycle { .. } => (StatusCode::BAD_REQUEST, "Request_BadRequest"),
            E::Store(inner) => return ApiError::internal(inner),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<RoleError> for ApiError {
    fn from(e: RoleError) -> Self {
        let (status, code) = match &e {
            RoleError::UnknownRole(_) => (StatusCode::BAD_REQUEST, "RoleDefinitionDoesNotExist"),
            RoleError::UnknownPrincipal(_) => (StatusCode::BAD_REQUEST, "PrincipalNotFound"),
            RoleError::Exists => (StatusCode::CONFLICT, "RoleAssignmentExists"),
            RoleError::BadDefinition(_) => (StatusCode::BAD_REQUEST, "InvalidRoleDefinition"),
            RoleError::NameTaken(_) => (StatusCode::CONFLICT, "RoleDefinitionWithSameNameExists"),
            RoleError::BuiltIn(_) => (StatusCode::BAD_REQUEST, "RoleDefinitionIsBuiltIn"),
            RoleError::InUse(_) => (StatusCode::CONFLICT, "RoleDefinitionHasAssignments"),
            RoleError::Store(inner) => return ApiError::internal(inner),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<ComputeError> for ApiError {
    fn from(e: ComputeError) -> Self {
        use ComputeError as E;
        let (status, code) = match &e {
            E::Rule(_) => (StatusCode::BAD_REQUEST, "InvalidParameter"),
            E::Invalid { code, .. } => (StatusCode::BAD_REQUEST, *code),
            E::KeyVaultAccessForbidden { .. } => {
                (StatusCode::BAD_REQUEST, "KeyVaultAccessForbidden")
            }
            E::NotFound { .. } => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            E::Conflict { code, .. } => (StatusCode::CONFLICT, *code),
            E::ServedElsewhere { .. } => (StatusCode::CONFLICT, "OperationNotAllowed"),
            E::KeyUnusable { .. } => (StatusCode::CONFLICT, "KeyVaultKeyUnusable"),
            E::Ade(_) => (StatusCode::BAD_REQUEST, "InvalidParameter"),
            E::SecretUnusable { .. } => (StatusCode::CONFLICT, "KeyVaultSecretUnusable"),
            // Store, block-file and internal faults: the detail goes to the log only.
            E::Store(_) | E::Directory(_) | E::Disk(_) | E::Internal(_) => {
                return ApiError::internal(&e)
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<atrest_backup::BackupError> for ApiError {
    fn from(e: atrest_backup::BackupError) -> Self {
        use atrest_backup::BackupError as E;
        let (status, code) = match e {
            E::Compute(c) => return c.into(),
            E::NotFound { .. } => (StatusCode::NOT_FOUND, "ResourceNotFound"),
            E::Invalid { code, .. } => (StatusCode::BAD_REQUEST, code),
            E::Conflict { code, .. } => (StatusCode::CONFLICT, code),
            E::Store(_) | E::Directory(_) => return ApiError::internal(&e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<atrest_resources::ResourceGroupError> for ApiError {
    fn from(e: atrest_resources::ResourceGroupError) -> Self {
        use atrest_resources::ResourceGroupError as E;
        let (status, code) = match &e {
            E::BadName(_) => (StatusCode::BAD_REQUEST, "InvalidResourceGroupName"),
            E::BadLocation(_) => (StatusCode::BAD_REQUEST, "InvalidLocation"),
            E::LocationChange { .. } => (StatusCode::CONFLICT, "InvalidResourceGroupLocation"),
            E::NotFound(_) => (StatusCode::NOT_FOUND, "ResourceGroupNotFound"),
            E::NotEmpty { .. } => (StatusCode::CONFLICT, "ResourceGroupNotEmpty"),
            E::Store(_) => return ApiError::internal(&e),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<atrest_runtime::Error> for ApiError {
    fn from(e: atrest_runtime::Error) -> Self {
        use atrest_runtime::Error as E;
        match e {
            // Faults of the instance's own storage and keys: the detail goes to the log only.
            E::Store(_)
            | E::Directory(_)
            | E::Crypto(_)
            | E::Io { .. }
            | E::Damaged(_)
            | E::WrongRootKey => ApiError::internal(&e),
        }
    }
}
