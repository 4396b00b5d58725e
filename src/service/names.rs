//! Key and alias names: parsing any form of key name, looking keys up,
//! ARNs, and the names of a key as policy resources.

use super::keys::is_past_deletion;
use super::{KmsService, Snapshot};
use crate::error::{ErrorCode, KmsError, Result};
use crate::keystore::{Config, KeyRecord};
use uuid::Uuid;

pub(super) fn key_arn(c: &Config, id: &Uuid) -> String {
    format!("arn:aws:kms:{}:{}:key/{id}", c.region, c.account)
}

pub(super) fn alias_arn(c: &Config, name: &str) -> String {
    format!("arn:aws:kms:{}:{}:{name}", c.region, c.account)
}

impl KmsService {
    pub(super) fn key_arn(&self, id: &Uuid) -> String {
        key_arn(self.keystore.config(), id)
    }

    pub(super) fn alias_arn(&self, name: &str) -> String {
        alias_arn(self.keystore.config(), name)
    }

    /// Parses any form of key name to a key id or an alias name.
    pub(super) fn parse_key_name<'a>(&self, name: &'a str) -> Result<KeyName<'a>> {
        if name.is_empty() {
            return Err(super::validation::too_short("keyId", name, 1));
        }
        let not_found = || KmsError::not_found(format!("Invalid keyId '{name}'"));
        let local = if let Some(rest) = name.strip_prefix("arn:") {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            let c = self.keystore.config();
            if parts.len() != 5 || parts[1] != "kms" {
                return Err(KmsError::new(
                    ErrorCode::InvalidArn,
                    format!("{name:?} is not a KMS key or alias ARN"),
                ));
            }
            if parts[2] != c.region || parts[3] != c.account {
                return Err(KmsError::not_found(format!(
                    "Key '{name}' is not in this service's region and account ({}:{})",
                    c.region, c.account
                )));
            }
            parts[4]
        } else {
            name
        };
        if local.starts_with("alias/") {
            return Ok(KeyName::Alias(local));
        }
        let id = local.strip_prefix("key/").unwrap_or(local);
        Uuid::parse_str(id)
            .map(KeyName::Id)
            .map_err(|_| not_found())
    }

    pub(super) fn lookup<'s>(&self, snap: &'s Snapshot, name: &str) -> Result<&'s KeyRecord> {
        let id = match self.parse_key_name(name)? {
            KeyName::Id(id) => id,
            KeyName::Alias(alias) => {
                snap.state
                    .aliases
                    .get(alias)
                    .ok_or_else(|| self.alias_not_found(alias))?
                    .target
            }
        };
        snap.state
            .keys
            .get(&id)
            .filter(|k| !is_past_deletion(k, self.now()))
            .ok_or_else(|| self.key_not_found(&id))
    }

    /// NotFound for a key id.
    pub(super) fn key_not_found(&self, id: &Uuid) -> KmsError {
        KmsError::not_found(format!("Key '{}' does not exist", self.key_arn(id)))
    }

    /// NotFound for an alias name.
    pub(super) fn alias_not_found(&self, name: &str) -> KmsError {
        KmsError::not_found(format!("Alias {} is not found.", self.alias_arn(name)))
    }

    /// Every name of a key, as policy resources.
    pub(super) fn resource_names<'s>(&self, snap: &'s Snapshot, key: &KeyRecord) -> &'s [String] {
        snap.names.get(&key.id).map_or(&[], Vec::as_slice)
    }
}

pub(super) enum KeyName<'a> {
    Id(Uuid),
    Alias(&'a str),
}
