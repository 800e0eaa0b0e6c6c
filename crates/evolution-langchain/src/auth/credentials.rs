//! `Credentials`: a key id and its secret, the secret held in a zeroizing box.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};

use crate::error::{Error, Result};

/// A Cloud.ru service-account access key: its id and its secret.
///
/// The secret is kept in a [`SecretString`] (zeroized on drop) and never shown:
/// `Debug` prints the key id and `<redacted>`.
#[derive(Clone)]
pub struct Credentials {
    key_id: String,
    secret: SecretString,
}

impl Credentials {
    /// Credentials from a key id and secret.
    pub fn new(key_id: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            key_id: key_id.into(),
            secret: SecretString::from(secret.into()),
        }
    }

    /// Replaces the key id (builders fill credentials field by field).
    pub(crate) fn set_key_id(&mut self, key_id: String) {
        self.key_id = key_id;
    }

    /// Replaces the secret.
    pub(crate) fn set_secret(&mut self, secret: SecretString) {
        self.secret = secret;
    }

    /// The key id (not secret; it names the key in errors and logs).
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The secret, for the IAM request body only.
    pub fn expose_secret(&self) -> &str {
        self.secret.expose_secret()
    }

    /// Checks that both parts are present; `role` names them in the error
    /// (e.g. "key_id" or "fallback key_id").
    pub(crate) fn validate(&self, role: &str) -> Result<()> {
        if self.key_id.trim().is_empty() {
            return Err(Error::config(
                format!("{role}key_id"),
                "is empty: set it to your access key id (EVOLUTION_KEY_ID)",
            ));
        }
        if self.expose_secret().trim().is_empty() {
            return Err(Error::config(
                format!("{role}secret"),
                "is empty: set it to your access key secret (EVOLUTION_SECRET)",
            ));
        }
        Ok(())
    }

    /// Decrypts credentials stored with Fernet (the `cryptography` package's
    /// format): `encrypted_key_id` and `encrypted_secret` are Fernet tokens
    /// made with `fernet_key` (URL-safe base64, 32 bytes).
    ///
    /// The decrypted bytes are moved into the returned value; the intermediate
    /// buffers are zeroized.
    #[cfg(feature = "fernet")]
    pub fn from_fernet(
        encrypted_key_id: &str,
        encrypted_secret: &str,
        fernet_key: &str,
    ) -> Result<Self> {
        use zeroize::Zeroize;

        let fernet = fernet::Fernet::new(fernet_key.trim()).ok_or_else(|| {
            Error::config(
                "fernet_key",
                "is not a valid Fernet key: expected 32 bytes in URL-safe base64",
            )
        })?;
        let decrypt = |field: &str, token: &str| -> Result<String> {
            let mut bytes = fernet.decrypt(token.trim()).map_err(|_| {
                Error::config(
                    field,
                    "could not be decrypted: wrong Fernet key, or the value was not encrypted with it",
                )
            })?;
            let text = String::from_utf8(bytes.clone())
                .map_err(|_| Error::config(field, "decrypts to bytes that are not UTF-8 text"));
            bytes.zeroize();
            text
        };
        let key_id = decrypt("encrypted_key_id", encrypted_key_id)?;
        let mut secret = decrypt("encrypted_secret", encrypted_secret)?;
        let credentials = Self::new(key_id, secret.as_str());
        secret.zeroize();
        Ok(credentials)
    }
}

impl Default for Credentials {
    /// Empty credentials, to be filled in (and rejected by `build` if not).
    fn default() -> Self {
        Self::new("", "")
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("key_id", &self.key_id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() {
        let c = Credentials::new("key-1", "very-secret-value");
        let shown = format!("{c:?}");
        assert!(shown.contains("key-1"));
        assert!(!shown.contains("very-secret-value"));
    }

    #[test]
    fn empty_parts_are_config_errors() {
        let err = Credentials::new("", "s").validate("").unwrap_err();
        assert!(matches!(err, Error::Config { ref field, .. } if field == "key_id"));
        let err = Credentials::new("k", " ")
            .validate("fallback ")
            .unwrap_err();
        assert!(matches!(err, Error::Config { ref field, .. } if field == "fallback secret"));
    }

    #[cfg(feature = "fernet")]
    #[test]
    fn fernet_round_trip() {
        let key = fernet::Fernet::generate_key();
        let f = fernet::Fernet::new(&key).unwrap();
        let c =
            Credentials::from_fernet(&f.encrypt(b"key-7"), &f.encrypt(b"s3cr3t"), &key).unwrap();
        assert_eq!(c.key_id(), "key-7");
        assert_eq!(c.expose_secret(), "s3cr3t");

        let other = fernet::Fernet::generate_key();
        let err =
            Credentials::from_fernet(&f.encrypt(b"key-7"), &f.encrypt(b"s"), &other).unwrap_err();
        assert!(err.to_string().contains("could not be decrypted"), "{err}");
        let err = Credentials::from_fernet("x", "y", "not-a-key").unwrap_err();
        assert!(err.to_string().contains("fernet_key"), "{err}");
    }
}
