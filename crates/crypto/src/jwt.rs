//! Compact JWS (JWT) signing and verification with ES256.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::{json, Value};
use thiserror::Error;

use crate::{sha256, CryptoError, RootKey};

/// Why a token's signature layer was rejected. Claims checks belong to the caller.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum JwtError {
    /// Not three base64url segments with JSON header and claims.
    #[error("the token is malformed")]
    Malformed,
    /// The header names an algorithm or key this server did not sign with.
    #[error("the token was not signed by this token service")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the token signature is invalid")]
    BadSignature,
}

/// The token service's signing key (ECDSA P-256).
pub struct TokenSigner {
    pair: EcdsaKeyPair,
    pkcs8: zeroize::Zeroizing<Vec<u8>>,
    kid: String,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// A new random signing key.
    pub fn generate() -> Result<Self, CryptoError> {
        let doc = EcdsaKeyPair::generate_pkcs8(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &SystemRandom::new(),
        )
        .map_err(|_| CryptoError::Library("P-256 key generation"))?;
        Self::from_pkcs8(doc.as_ref().to_vec())
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, CryptoError> {
        let pkcs8 = zeroize::Zeroizing::new(pkcs8);
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| CryptoError::Malformed("token signing key"))?;
        let kid = B64.encode(&sha256(pair.public_key().as_ref())[..12]);
        Ok(TokenSigner { pair, pkcs8, kid })
    }

    /// The private key sealed under the root key.
    pub fn seal(&self, root: &RootKey, context: &str) -> Vec<u8> {
        root.seal(context, &self.pkcs8)
    }

    /// Recovers a key sealed by [`TokenSigner::seal`].
    pub fn open(root: &RootKey, context: &str, sealed: &[u8]) -> Result<Self, CryptoError> {
        Self::from_pkcs8(root.open(context, sealed)?)
    }

    /// The key id placed in token headers and the JWKS.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWK for the JWKS document.
    pub fn public_jwk(&self) -> Value {
        let point = self.pair.public_key().as_ref(); // 0x04 || X (32) || Y (32)
        json!({
            "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": self.kid,
            "x": B64.encode(&point[1..33]), "y": B64.encode(&point[33..65]),
        })
    }

    /// Signs `claims` as a compact JWT.
    pub fn sign(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "ES256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = self
            .pair
            .sign(&SystemRandom::new(), signing_input.as_bytes())
            .expect("ECDSA signing with a valid key does not fail");
        format!("{signing_input}.{}", B64.encode(sig.as_ref()))
    }

    /// Verifies a compact JWT's header and signature and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwtError::Malformed);
        };
        let decode_json = |seg: &str| -> Result<Value, JwtError> {
            let bytes = B64.decode(seg).map_err(|_| JwtError::Malformed)?;
            serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
        };
        let header = decode_json(h)?;
        if header["alg"] != "ES256" || header["kid"] != self.kid.as_str() {
            return Err(JwtError::UnknownKey);
        }
        let sig = B64.decode(s).map_err(|_| JwtError::Malformed)?;
        UnparsedPublicKey::new(
            &signature::ECDSA_P256_SHA256_FIXED,
            self.pair.public_key().as_ref(),
        )
        .verify(&token.as_bytes()[..h.len() + 1 + c.len()], &sig)
        .map_err(|_| JwtError::BadSignature)?;
        let claims = decode_json(c)?;
        if !claims.is_object() {
            return Err(JwtError::Malformed);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_forgery() {
        let signer = TokenSigner::generate().unwrap();
        let token = signer.sign(&json!({"aud": "x", "n": 1}));
        assert_eq!(signer.verify(&token).unwrap()["n"], 1);

        let other = TokenSigner::generate().unwrap();
        assert_eq!(other.verify(&token), Err(JwtError::UnknownKey));

        // Same header, claims altered: the signature no longer matches.
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!(
            "{}.{}.{}",
            parts[0],
            B64.encode(json!({"aud": "x", "n": 2}).to_string()),
            parts[2]
        );
        assert_eq!(signer.verify(&forged), Err(JwtError::BadSignature));
        assert_eq!(signer.verify("a.b"), Err(JwtError::Malformed));
        assert_eq!(
            signer.verify(&format!("{token}.x")),
            Err(JwtError::Malformed)
        );
    }

    #[test]
    fn jwk_and_seal() {
        let signer = TokenSigner::generate().unwrap();
        let jwk = signer.public_jwk();
        assert_eq!(B64.decode(jwk["x"].as_str().unwrap()).unwrap().len(), 32);
        assert!(jwk.get("d").is_none());
        let dir = tempfile::tempdir().unwrap();
        let root = RootKey::load_or_create(&dir.path().join("root.key")).unwrap();
        let sealed = signer.seal(&root, "token-signer");
        let back = TokenSigner::open(&root, "token-signer", &sealed).unwrap();
        assert_eq!(back.kid(), signer.kid());
        assert!(back.verify(&signer.sign(&json!({}))).is_ok());
        assert!(format!("{back:?}").contains("kid"));
    }
}
