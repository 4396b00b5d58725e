//! The policy engine: who may call which KMS action on which key.
//!
//! Policies are TOML files, one or more `[[statement]]` tables each:
//!
//! ```toml
//! [[statement]]
//! sid = "reader-decrypt"                 # optional, shown in explanations
//! effect = "allow"                       # "allow" or "deny"
//! principals = ["app-reader"]            # names or globs
//! actions = ["decrypt"]                  # groups, AWS names, or wildcards ("kms:GenerateDataKey*")
//! resources = ["alias/app-data", "arn:aws:kms:*:key/*"]  # key ids, ARNs, aliases, globs
//! [statement.condition]                  # optional; every part must hold
//! context_equals = { purpose = "app-data" }
//! context_keys_required = ["file-id"]
//! context_keys_allowed = ["purpose", "file-id", "rewrap:file-id"]
//! reencrypt_same_context = true          # rewrap:ReEncryptSameContext
//! reencrypt_on_same_key = false          # kms:ReEncryptOnSameKey
//! resource_tags = { team = "hr" }        # aws:ResourceTag/team
//! ```
//!
//! [`Condition`] lists what each condition key means. Alias names used as
//! resources match the key's aliases at request time (like AWS's
//! `kms:ResourceAliases`); the service refuses alias moves that would widen
//! cryptographic access ([`PolicySet::alias_move_widens`]).
//!
//! Evaluation follows AWS: an explicit deny wins, otherwise some statement
//! must allow, otherwise the request is denied implicitly. A condition
//! restricts a deny the same way it restricts an allow: the deny applies only
//! when the condition holds.
//!
//! Loading is all or nothing: a file that does not parse, names an unknown
//! action, group, effect or field, or holds an invalid glob refuses the whole
//! set, with an error naming the file and the line.
//!
//! [`PolicySet::evaluate`] runs on every KMS call, so everything is compiled at
//! load time: actions to a bitset over [`Action`], globs to literal fast paths
//! or a [`globset::GlobMatcher`], and statements indexed by literal principal.

pub use crate::operation::Action;
use globset::{GlobBuilder, GlobMatcher};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use toml::Spanned;

/// The names of the action groups a policy may use instead of action names.
pub const GROUPS: &[&str] = &[
    "administer",
    "encrypt",
    "decrypt",
    "re-encrypt",
    "audit",
    "sign",
];

/// Key and alias lifecycle, rotation, deletion, principals, policy reads,
/// Describe and List. Deliberately no cryptographic use.
const ADMINISTER: &[Action] = &[
    Action::CreateKey,
    Action::DescribeKey,
    Action::ListKeys,
    Action::ListAliases,
    Action::UpdateKeyDescription,
    Action::EnableKey,
    Action::DisableKey,
    Action::ScheduleKeyDeletion,
    Action::CancelKeyDeletion,
    Action::CreateAlias,
    Action::UpdateAlias,
    Action::DeleteAlias,
    Action::EnableKeyRotation,
    Action::DisableKeyRotation,
    Action::GetKeyRotationStatus,
    Action::RotateKeyOnDemand,
    Action::ListKeyRotations,
    Action::GetKeyPolicy,
    Action::ListKeyPolicies,
    Action::CreatePrincipal,
    Action::DeletePrincipal,
    Action::ListPrincipals,
    Action::CreateAccessKey,
    Action::DeleteAccessKey,
    Action::CheckPolicy,
    // Custom key stores (issue 13).
    Action::CreateCustomKeyStore,
    Action::DescribeCustomKeyStores,
    Action::ConnectCustomKeyStore,
    Action::DisconnectCustomKeyStore,
    Action::UpdateCustomKeyStore,
    Action::DeleteCustomKeyStore,
    Action::TagResource,
    Action::UntagResource,
    Action::ListResourceTags,
    Action::CreateGrant,
    Action::ListGrants,
    Action::ListRetirableGrants,
    Action::RetireGrant,
    Action::RevokeGrant,
    // Imported key material (issue 13): lifecycle, no cryptographic use.
    Action::GetParametersForImport,
    Action::ImportKeyMaterial,
    Action::DeleteImportedKeyMaterial,
];
const ENCRYPT: &[Action] = &[
    Action::Encrypt,
    Action::GenerateDataKey,
    Action::GenerateDataKeyWithoutPlaintext,
    // Asymmetric keys (issue 15): data key pairs are wrapped like data keys,
    // and encrypting offline needs the public key.
    Action::GenerateDataKeyPair,
    Action::GenerateDataKeyPairWithoutPlaintext,
    Action::GetPublicKey,
];
/// Signatures and MACs (issue 15): asymmetric SIGN_VERIFY and HMAC keys.
const SIGN: &[Action] = &[
    Action::Sign,
    Action::Verify,
    Action::GenerateMac,
    Action::VerifyMac,
    Action::GetPublicKey,
];
const DECRYPT: &[Action] = &[Action::Decrypt];
const RE_ENCRYPT: &[Action] = &[Action::ReEncryptFrom, Action::ReEncryptTo];
/// Read-only: what an auditor needs to see keys, rotations, policies and the trail.
const AUDIT: &[Action] = &[
    Action::DescribeKey,
    Action::ListKeys,
    Action::ListAliases,
    Action::GetKeyRotationStatus,
    Action::ListKeyRotations,
    Action::GetKeyPolicy,
    Action::ListKeyPolicies,
    Action::ReadAuditTrail,
    Action::CheckPolicy,
    Action::ListResourceTags,
    Action::ListGrants,
    Action::ListRetirableGrants,
];

/// Every cryptographic use of a key: what an alias move must never hand out
/// (see [`PolicySet::alias_move_widens`]).
pub const CRYPTOGRAPHIC: &[Action] = &[
    Action::Encrypt,
    Action::Decrypt,
    Action::ReEncryptFrom,
    Action::ReEncryptTo,
    Action::GenerateDataKey,
    Action::GenerateDataKeyWithoutPlaintext,
    Action::Sign,
    Action::Verify,
    Action::GenerateMac,
    Action::VerifyMac,
    Action::GenerateDataKeyPair,
    Action::GenerateDataKeyPairWithoutPlaintext,
];

/// The actions of a group in [`GROUPS`], or `None` for an unknown group name.
pub fn group_members(group: &str) -> Option<&'static [Action]> {
    match group {
        "administer" => Some(ADMINISTER),
        "encrypt" => Some(ENCRYPT),
        "decrypt" => Some(DECRYPT),
        "re-encrypt" => Some(RE_ENCRYPT),
        "audit" => Some(AUDIT),
        "sign" => Some(SIGN),
        _ => None,
    }
}

/// Whether a statement allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    /// The statement grants the actions.
    Allow,
    /// The statement forbids the actions, whatever else allows them.
    Deny,
}

/// Conditions on the request; all must hold. Each field is named after the
/// AWS condition key it models (shown by `policy check` and in errors):
///
/// | field | condition key | holds when |
/// | --- | --- | --- |
/// | `context_equals` | `kms:EncryptionContext:KEY` | each key is present with exactly that value |
/// | `context_keys_required` | `kms:EncryptionContextKeys` (ForAnyValue) | each key is present |
/// | `context_keys_allowed` | `kms:EncryptionContextKeys` (ForAllValues) | every key of the context is in the list |
/// | `reencrypt_same_context` | `rewrap:ReEncryptSameContext` | a ReEncrypt whose destination context equals its source context (`true`), or differs (`false`) |
/// | `reencrypt_on_same_key` | `kms:ReEncryptOnSameKey` | a ReEncrypt whose source and destination key are the same (`true`) or not (`false`) |
/// | `resource_tags` | `aws:ResourceTag/KEY` | the key carries each tag with exactly that value (never for account-level actions) |
///
/// As in AWS, a condition on a key the request does not carry does not hold:
/// the two ReEncrypt conditions never hold outside ReEncryptFrom / ReEncryptTo.
/// For ReEncrypt the context conditions see the context of the side being
/// checked (the source for ReEncryptFrom, the destination for ReEncryptTo).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Context keys that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_equals: BTreeMap<String, String>,
    /// Context keys that must be present, with any value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_keys_required: Vec<String>,
    /// The only context keys the request may carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_keys_allowed: Option<Vec<String>>,
    /// `rewrap:ReEncryptSameContext`: whether a ReEncrypt keeps its context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reencrypt_same_context: Option<bool>,
    /// `kms:ReEncryptOnSameKey`: whether a ReEncrypt stays on its key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reencrypt_on_same_key: Option<bool>,
    /// `aws:ResourceTag/KEY`: tags the key must carry with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resource_tags: BTreeMap<String, String>,
}

/// The condition key of `rewrap:ReEncryptSameContext`.
pub const REENCRYPT_SAME_CONTEXT: &str = "rewrap:ReEncryptSameContext";

fn same_context(
    a: Option<&BTreeMap<String, String>>,
    b: Option<&BTreeMap<String, String>>,
) -> bool {
    // No context and an empty context authenticate the same bytes.
    let empty = BTreeMap::new();
    a.unwrap_or(&empty) == b.unwrap_or(&empty)
}

impl Condition {
    /// The first part of the condition that does not hold for `req`, by its
    /// condition key, or `None` when every part holds.
    ///
    /// Without `explain` the description is left empty, so the hot path of
    /// [`PolicySet::evaluate`] never allocates for a failed condition.
    fn unmet(&self, req: &AccessRequest<'_>, explain: bool) -> Option<String> {
        let say = |f: &dyn Fn() -> String| Some(if explain { f() } else { String::new() });
        let context = req.context;
        for (k, v) in &self.context_equals {
            if context.and_then(|c| c.get(k)) != Some(v) {
                return say(&|| format!("kms:EncryptionContext:{k} = {v:?}"));
            }
        }
        for k in &self.context_keys_required {
            if !context.is_some_and(|c| c.contains_key(k)) {
                return say(&|| format!("kms:EncryptionContextKeys includes {k:?}"));
            }
        }
        if let Some(allowed) = &self.context_keys_allowed {
            if context.is_some_and(|c| c.keys().any(|k| !allowed.contains(k))) {
                return say(&|| format!("kms:EncryptionContextKeys within {allowed:?}"));
            }
        }
        if let Some(want) = self.reencrypt_same_context {
            let holds = req
                .re_encrypt
                .is_some_and(|r| same_context(r.source_context, r.destination_context) == want);
            if !holds {
                return say(&|| format!("{REENCRYPT_SAME_CONTEXT} = {want}"));
            }
        }
        if let Some(want) = self.reencrypt_on_same_key {
            if req.re_encrypt.is_none_or(|r| r.same_key != want) {
                return say(&|| format!("kms:ReEncryptOnSameKey = {want}"));
            }
        }
        for (k, v) in &self.resource_tags {
            if req.resource_tags.and_then(|t| t.get(k)) != Some(v) {
                return say(&|| format!("aws:ResourceTag/{k} = {v:?}"));
            }
        }
        None
    }

    /// Whether the condition has no part (holds for every request).
    fn is_empty(&self) -> bool {
        *self == Condition::default()
    }

    /// The condition as condition keys, for explanations:
    /// `rewrap:ReEncryptSameContext = true, kms:ReEncryptOnSameKey = false`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .context_equals
            .iter()
            .map(|(k, v)| format!("kms:EncryptionContext:{k} = {v:?}"))
            .collect();
        parts.extend(
            self.context_keys_required
                .iter()
                .map(|k| format!("kms:EncryptionContextKeys includes {k:?}")),
        );
        if let Some(allowed) = &self.context_keys_allowed {
            parts.push(format!("kms:EncryptionContextKeys within {allowed:?}"));
        }
        if let Some(want) = self.reencrypt_same_context {
            parts.push(format!("{REENCRYPT_SAME_CONTEXT} = {want}"));
        }
        if let Some(want) = self.reencrypt_on_same_key {
            parts.push(format!("kms:ReEncryptOnSameKey = {want}"));
        }
        parts.extend(
            self.resource_tags
                .iter()
                .map(|(k, v)| format!("aws:ResourceTag/{k} = {v:?}")),
        );
        parts.join(", ")
    }
}

/// One statement as written, with where it came from; what GetKeyPolicy shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatementRef {
    /// The file name the statement was loaded from (e.g. `app-reader.toml`).
    pub file: String,
    /// The statement's position in its file, counting `[[statement]]` tables from 1.
    pub index: usize,
    /// The statement's `sid`, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// Principal names or globs, as written.
    pub principals: Vec<String>,
    /// Actions, groups or action wildcards, as written.
    pub actions: Vec<String>,
    /// Resource names or globs, as written.
    pub resources: Vec<String>,
    /// The condition, if the statement has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub condition: Option<Condition>,
}

/// One access check: who wants to do what to which key, under which context.
#[derive(Debug, Clone, Copy)]
pub struct AccessRequest<'a> {
    /// The authenticated principal's name.
    pub principal: &'a str,
    /// The action, e.g. [`Action::Decrypt`].
    pub action: Action,
    /// Every name of the key (key id, key ARN, each alias name and alias ARN),
    /// or `["*"]` for account-level actions such as CreateKey or ListKeys.
    pub resources: &'a [&'a str],
    /// The encryption context of the request, if it has one (for ReEncrypt,
    /// the context of the side checked: source for From, destination for To).
    pub context: Option<&'a BTreeMap<String, String>>,
    /// For ReEncryptFrom / ReEncryptTo, the whole re-encryption, which the
    /// ReEncrypt conditions look at; `None` for every other action.
    pub re_encrypt: Option<ReEncryptFacts<'a>>,
    /// The key's tags (`aws:ResourceTag/...`); `None` for account-level actions.
    pub resource_tags: Option<&'a BTreeMap<String, String>>,
}

/// What the ReEncrypt conditions see of a ReEncrypt request.
#[derive(Debug, Clone, Copy)]
pub struct ReEncryptFacts<'a> {
    /// The context the ciphertext was made with, as presented.
    pub source_context: Option<&'a BTreeMap<String, String>>,
    /// The context the new ciphertext is made with.
    pub destination_context: Option<&'a BTreeMap<String, String>>,
    /// Whether the source and destination key are the same key.
    pub same_key: bool,
}

/// The outcome of [`PolicySet::evaluate`] and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The deciding statement, as `file#index (sid)`, or why the request was
    /// denied implicitly (`implicit deny: no statement allows`).
    pub decided_by: String,
    /// The condition that decided: the deciding statement's condition (as
    /// condition keys), or for an implicit deny the condition that kept the
    /// first otherwise matching allow from applying (`file#index (sid):
    /// rewrap:ReEncryptSameContext = true not met`). `None` when no
    /// condition took part.
    pub condition: Option<String>,
}

/// A statement through which an alias move would widen cryptographic
/// access (see [`PolicySet::alias_move_widens`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Widening {
    /// The statement, as `file#index (sid)`.
    pub statement: String,
    /// An allow that would start to apply, or a deny that would stop.
    pub effect: Effect,
    /// The first cryptographic action it would widen.
    pub action: Action,
}

/// What `decided_by` says when no statement matched.
pub const IMPLICIT_DENY: &str = "implicit deny: no statement allows";

/// Why a policy set could not be loaded. Every variant names the file as given.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy directory or a policy file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path as given.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or not a valid policy shape (unknown field,
    /// unknown effect, missing field, wrong type).
    #[error("{path} line {line}: {message}")]
    Parse {
        /// The file path as given.
        path: String,
        /// The 1-based line of the problem.
        line: usize,
        /// The parser's description of the problem.
        message: String,
    },
    /// An action name or action wildcard matches no known action.
    #[error("{path} line {line}: unknown action {action:?}")]
    UnknownAction {
        /// The file path as given.
        path: String,
        /// The 1-based line of the action.
        line: usize,
        /// The action as written.
        action: String,
    },
    /// A name without a `service:` prefix is not one of [`GROUPS`].
    #[error("{path} line {line}: unknown action group {group:?}")]
    UnknownGroup {
        /// The file path as given.
        path: String,
        /// The 1-based line of the group name.
        line: usize,
        /// The group as written.
        group: String,
    },
    /// A principal, resource or action glob does not compile.
    #[error("{path} line {line}: invalid glob {glob:?}: {reason}")]
    InvalidGlob {
        /// The file path as given.
        path: String,
        /// The 1-based line of the glob.
        line: usize,
        /// The glob as written.
        glob: String,
        /// Why it does not compile.
        reason: String,
    },
    /// The statement parses but cannot mean anything sensible (an empty list,
    /// a duplicate sid).
    #[error("{path} line {line}: {message}")]
    Invalid {
        /// The file path as given.
        path: String,
        /// The 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

// ---------------------------------------------------------------- parsing

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    statement: Vec<RawStatement>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatement {
    sid: Option<Spanned<String>>,
    effect: Effect,
    principals: Spanned<Vec<Spanned<String>>>,
    actions: Spanned<Vec<Spanned<String>>>,
    resources: Spanned<Vec<Spanned<String>>>,
    condition: Option<Condition>,
}

/// Where a file's errors point: its path as given and its text, for line numbers.
struct Source<'a> {
    path: &'a str,
    text: &'a str,
}

impl Source<'_> {
    fn line(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn line_of<T>(&self, spanned: &Spanned<T>) -> usize {
        self.line(spanned.span().start)
    }

    fn parse_error(&self, err: toml::de::Error) -> PolicyError {
        let line = err.span().map_or(1, |s| self.line(s.start));
        // toml's messages can span lines; an error is one line in logs.
        let message = err.message().trim().replace('\n', "; ");
        PolicyError::Parse {
            path: self.path.to_string(),
            line,
            message,
        }
    }
}

/// A compiled name pattern. Most patterns are literals, `*`, or a literal with
/// one `*` at an end; those skip the regex engine.
#[derive(Debug, Clone)]
enum Pattern {
    Any,
    Exact(Box<str>),
    Prefix(Box<str>),
    Suffix(Box<str>),
    /// A full glob, behind a cheap test of its literal ends: most names a
    /// resource glob sees (other keys' ids and ARNs) fail on those.
    Glob {
        prefix: Box<str>,
        suffix: Box<str>,
        matcher: GlobMatcher,
    },
}

const GLOB_META: &[char] = &['*', '?', '[', ']', '{', '}', '\\'];

impl Pattern {
    fn compile(src: &Source<'_>, glob: &Spanned<String>) -> Result<Pattern, PolicyError> {
        let text = glob.get_ref().as_str();
        let matcher = GlobBuilder::new(text)
            .literal_separator(false)
            .build()
            .map_err(|e| PolicyError::InvalidGlob {
                path: src.path.to_string(),
                line: src.line_of(glob),
                glob: text.to_string(),
                reason: e.kind().to_string(),
            })?
            .compile_matcher();
        let is_literal = |s: &str| !s.contains(GLOB_META);
        Ok(if text == "*" {
            Pattern::Any
        } else if is_literal(text) {
            Pattern::Exact(text.into())
        } else if let Some(prefix) = text.strip_suffix('*').filter(|p| is_literal(p)) {
            Pattern::Prefix(prefix.into())
        } else if let Some(suffix) = text.strip_prefix('*').filter(|s| is_literal(s)) {
            Pattern::Suffix(suffix.into())
        } else {
            let prefix = &text[..text.find(GLOB_META).unwrap_or(0)];
            let suffix = &text[text.rfind(GLOB_META).map_or(text.len(), |i| i + 1)..];
            Pattern::Glob {
                prefix: prefix.into(),
                suffix: suffix.into(),
                matcher,
            }
        })
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Pattern::Any => true,
            Pattern::Exact(s) => **s == *name,
            Pattern::Prefix(p) => name.starts_with(&**p),
            Pattern::Suffix(s) => name.ends_with(&**s),
            Pattern::Glob {
                prefix,
                suffix,
                matcher,
            } => name.starts_with(&**prefix) && name.ends_with(&**suffix) && matcher.is_match(name),
        }
    }
}

/// Expands one entry of `actions` (a group, an AWS name, or a wildcard) to a bitset.
fn compile_action(src: &Source<'_>, action: &Spanned<String>) -> Result<u64, PolicyError> {
    let text = action.get_ref().as_str();
    if text == "*" {
        return Ok(Action::bits(Action::ALL));
    }
    if !text.contains(':') {
        return group_members(text)
            .map(Action::bits)
            .ok_or_else(|| PolicyError::UnknownGroup {
                path: src.path.to_string(),
                line: src.line_of(action),
                group: text.to_string(),
            });
    }
    let unknown = || PolicyError::UnknownAction {
        path: src.path.to_string(),
        line: src.line_of(action),
        action: text.to_string(),
    };
    if !text.contains(GLOB_META) {
        return Action::from_name(text).map(Action::bit).ok_or_else(unknown);
    }
    let matcher = GlobBuilder::new(text)
        .literal_separator(false)
        .case_insensitive(true)
        .build()
        .map_err(|e| PolicyError::InvalidGlob {
            path: src.path.to_string(),
            line: src.line_of(action),
            glob: text.to_string(),
            reason: e.kind().to_string(),
        })?
        .compile_matcher();
    let bits = Action::ALL
        .iter()
        .filter(|a| matcher.is_match(a.name()))
        .fold(0, |bits, a| bits | a.bit());
    // A wildcard that matches nothing is a typo, not a rule.
    if bits == 0 {
        return Err(unknown());
    }
    Ok(bits)
}

// ---------------------------------------------------------------- the set

/// One statement, compiled for evaluation.
#[derive(Debug, Clone)]
struct Statement {
    source: StatementRef,
    effect: Effect,
    actions: u64,
    principals: Vec<Pattern>,
    resources: Vec<Pattern>,
    condition: Condition,
    /// `file#index (sid)`, built once so a decision is one copy.
    label: Box<str>,
    /// The condition as condition keys, or `None` for no condition.
    condition_text: Option<Box<str>>,
}

impl Statement {
    fn compile(
        src: &Source<'_>,
        index: usize,
        raw: RawStatement,
    ) -> Result<Statement, PolicyError> {
        for (field, list) in [
            ("principals", &raw.principals),
            ("actions", &raw.actions),
            ("resources", &raw.resources),
        ] {
            if list.get_ref().is_empty() {
                return Err(PolicyError::Invalid {
                    path: src.path.to_string(),
                    line: src.line_of(list),
                    message: format!("statement {index} has no {field}"),
                });
            }
        }
        let patterns = |list: &Spanned<Vec<Spanned<String>>>| {
            list.get_ref()
                .iter()
                .map(|p| Pattern::compile(src, p))
                .collect::<Result<Vec<_>, _>>()
        };
        let principals = patterns(&raw.principals)?;
        let resources = patterns(&raw.resources)?;
        let mut actions = 0;
        for action in raw.actions.get_ref() {
            actions |= compile_action(src, action)?;
        }
        let strings = |list: &Spanned<Vec<Spanned<String>>>| {
            list.get_ref()
                .iter()
                .map(|s| s.get_ref().clone())
                .collect::<Vec<_>>()
        };
        let file = Path::new(src.path).file_name().map_or_else(
            || src.path.to_string(),
            |f| f.to_string_lossy().into_owned(),
        );
        let sid = raw.sid.map(Spanned::into_inner);
        let label = match &sid {
            Some(sid) => format!("{file}#{index} ({sid})"),
            None => format!("{file}#{index}"),
        };
        let condition = raw.condition.unwrap_or_default();
        Ok(Statement {
            source: StatementRef {
                file,
                index,
                sid,
                effect: raw.effect,
                principals: strings(&raw.principals),
                actions: strings(&raw.actions),
                resources: strings(&raw.resources),
                condition: (condition != Condition::default()).then(|| condition.clone()),
            },
            effect: raw.effect,
            actions,
            principals,
            resources,
            condition_text: (!condition.is_empty()).then(|| condition.describe().into()),
            condition,
            label: label.into(),
        })
    }

    fn matches_principal(&self, principal: &str) -> bool {
        self.principals.iter().any(|p| p.matches(principal))
    }

    fn matches_resources(&self, resources: &[&str]) -> bool {
        resources
            .iter()
            .any(|name| self.resources.iter().any(|p| p.matches(name)))
    }
}

#[derive(Debug, Clone, Default)]
struct Inner {
    statements: Vec<Statement>,
    /// Statements with a literal principal, by that principal, in load order.
    by_principal: HashMap<Box<str>, Vec<u32>>,
    /// Statements with at least one glob principal, in load order.
    glob_principal: Vec<u32>,
}

impl Inner {
    fn reindex(&mut self) {
        self.by_principal.clear();
        self.glob_principal.clear();
        for (i, s) in self.statements.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 statements");
            let mut globbed = false;
            for p in &s.principals {
                match p {
                    Pattern::Exact(name) => {
                        let list = self.by_principal.entry(name.clone()).or_default();
                        if list.last() != Some(&i) {
                            list.push(i);
                        }
                    }
                    _ => globbed = true,
                }
            }
            if globbed {
                self.glob_principal.push(i);
            }
        }
    }
}

/// A loaded, compiled set of policy statements. Cloning is cheap (shared).
#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    inner: Arc<Inner>,
}

impl PolicySet {
    /// Loads every `*.toml` file of `dir` (sorted by name, not recursive).
    ///
    /// A missing directory is an error; an empty one yields a set that denies
    /// everything. Any bad file refuses the whole set.
    pub fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
        let io_error = |path: &Path, source| PolicyError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
            let path = entry.map_err(|e| io_error(dir, e))?.path();
            if path.extension().is_some_and(|e| e == "toml") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut set = PolicySet::default();
        for path in files {
            let text = std::fs::read_to_string(&path).map_err(|e| io_error(&path, e))?;
            set.merge(PolicySet::from_toml(&path.display().to_string(), &text)?);
        }
        Ok(set)
    }

    /// Parses one policy file. `file_name` is used in errors as given and, by
    /// its last component, in explanations.
    pub fn from_toml(file_name: &str, text: &str) -> Result<PolicySet, PolicyError> {
        let src = Source {
            path: file_name,
            text,
        };
        let raw: RawFile = toml::from_str(text).map_err(|e| src.parse_error(e))?;
        let mut statements = Vec::with_capacity(raw.statement.len());
        let mut sids: HashMap<String, usize> = HashMap::new();
        for (i, raw) in raw.statement.into_iter().enumerate() {
            if let Some(sid) = &raw.sid {
                if let Some(first) = sids.insert(sid.get_ref().clone(), i + 1) {
                    return Err(PolicyError::Invalid {
                        path: file_name.to_string(),
                        line: src.line_of(sid),
                        message: format!(
                            "duplicate sid {:?} (also statement {first})",
                            sid.get_ref()
                        ),
                    });
                }
            }
            statements.push(Statement::compile(&src, i + 1, raw)?);
        }
        let mut inner = Inner {
            statements,
            ..Inner::default()
        };
        inner.reindex();
        Ok(PolicySet {
            inner: Arc::new(inner),
        })
    }

    /// Appends `other`'s statements after this set's.
    pub fn merge(&mut self, other: PolicySet) {
        let inner = Arc::make_mut(&mut self.inner);
        inner
            .statements
            .extend(other.inner.statements.iter().cloned());
        inner.reindex();
    }

    /// The number of statements.
    pub fn len(&self) -> usize {
        self.inner.statements.len()
    }

    /// Whether the set has no statements (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.inner.statements.is_empty()
    }

    /// Decides a request: an explicit deny wins, otherwise the first allowing
    /// statement decides, otherwise the request is denied implicitly.
    pub fn evaluate(&self, req: &AccessRequest<'_>) -> Decision {
        let bit = req.action.bit();
        let inner = &*self.inner;
        let mut deny: Option<u32> = None;
        let mut allow: Option<u32> = None;
        // The first allow that failed only on its condition, to explain an implicit deny.
        let mut unmet_allow: Option<u32> = None;
        let literal = inner
            .by_principal
            .get(req.principal)
            .map_or(&[][..], Vec::as_slice);
        for (list, principal_known) in [(literal, true), (&inner.glob_principal[..], false)] {
            for &i in list {
                // Lists are in load order: past the first deny, nothing can change the outcome.
                if deny.is_some_and(|d| i >= d) {
                    break;
                }
                let s = &inner.statements[i as usize];
                if s.actions & bit == 0
                    || (s.effect == Effect::Allow && allow.is_some_and(|a| a <= i))
                    || !(principal_known || s.matches_principal(req.principal))
                    || !s.matches_resources(req.resources)
                {
                    continue;
                }
                if s.condition_text.is_some() && s.condition.unmet(req, false).is_some() {
                    if s.effect == Effect::Allow && unmet_allow.is_none_or(|u| i < u) {
                        unmet_allow = Some(i);
                    }
                    continue;
                }
                match s.effect {
                    Effect::Deny => deny = Some(i),
                    Effect::Allow => allow = Some(i),
                }
            }
        }
        match (deny, allow) {
            (Some(i), _) => self.decided(false, i),
            (None, Some(i)) => self.decided(true, i),
            (None, None) => Decision {
                allowed: false,
                decided_by: IMPLICIT_DENY.to_string(),
                condition: unmet_allow.map(|i| {
                    let s = &inner.statements[i as usize];
                    let unmet = s.condition.unmet(req, true).unwrap_or_default();
                    format!("{}: {unmet} not met", s.label)
                }),
            },
        }
    }

    fn decided(&self, allowed: bool, statement: u32) -> Decision {
        let s = &self.inner.statements[statement as usize];
        Decision {
            allowed,
            decided_by: s.label.to_string(),
            condition: s.condition_text.as_deref().map(str::to_string),
        }
    }

    /// True when `holder` holds, unconditionally and on every resource, every
    /// action that any statement could ever allow `target` (on any resource,
    /// under any context). Used to refuse credentials for a principal to a
    /// caller who would gain rights through them.
    pub fn covers(&self, holder: &str, target: &str) -> bool {
        let target_may: u64 = self
            .inner
            .statements
            .iter()
            .filter(|s| s.effect == Effect::Allow && s.matches_principal(target))
            .fold(0, |acc, s| acc | s.actions);
        target_may & !self.always_held(holder) == 0
    }

    /// The actions `holder` holds unconditionally, on every resource, and
    /// that no statement ever denies it.
    fn always_held(&self, holder: &str) -> u64 {
        let statements = &self.inner.statements;
        let always: u64 = statements
            .iter()
            .filter(|s| {
                s.effect == Effect::Allow
                    && s.matches_principal(holder)
                    && s.resources.iter().any(|r| matches!(r, Pattern::Any))
                    && s.condition.is_empty()
            })
            .fold(0, |acc, s| acc | s.actions);
        let denied: u64 = statements
            .iter()
            .filter(|s| s.effect == Effect::Deny && s.matches_principal(holder))
            .fold(0, |acc, s| acc | s.actions);
        always & !denied
    }

    /// Whether a key whose policy names change from `before` to `after`
    /// (an alias created, moved or deleted) would widen some principal's
    /// cryptographic access beyond what `holder`, who makes the change,
    /// holds itself: an allow that starts to match the key, or a deny that
    /// stops matching it, for a cryptographic action `holder` does not hold
    /// unconditionally on every key. Returns the first such statement.
    ///
    /// Conditions and principals are ignored on purpose (any principal,
    /// any context): the check is conservative, so an alias move can never
    /// hand out what its maker could not use itself.
    pub fn alias_move_widens(
        &self,
        holder: &str,
        before: &[&str],
        after: &[&str],
    ) -> Option<Widening> {
        let withheld = Action::bits(CRYPTOGRAPHIC) & !self.always_held(holder);
        if withheld == 0 {
            return None;
        }
        self.inner.statements.iter().find_map(|s| {
            let actions = s.actions & withheld;
            if actions == 0 {
                return None;
            }
            let (was, is) = (s.matches_resources(before), s.matches_resources(after));
            let widens = match s.effect {
                Effect::Allow => !was && is,
                Effect::Deny => was && !is,
            };
            let action = Action::ALL.iter().find(|a| actions & a.bit() != 0)?;
            widens.then(|| Widening {
                statement: s.label.to_string(),
                effect: s.effect,
                action: *action,
            })
        })
    }

    /// True when `principal` holds every action, unconditionally, on every
    /// resource, with no deny: a principal like the owner, of which the
    /// keystore must always keep one.
    pub fn holds_every_right(&self, principal: &str) -> bool {
        let denied = self
            .inner
            .statements
            .iter()
            .any(|s| s.effect == Effect::Deny && s.matches_principal(principal));
        !denied && self.always_held(principal) == Action::bits(Action::ALL)
    }

    /// The statements any of whose resource patterns match one of `resources`
    /// (for GetKeyPolicy), in load order.
    pub fn statements_for_resources(&self, resources: &[&str]) -> Vec<StatementRef> {
        self.inner
            .statements
            .iter()
            .filter(|s| s.matches_resources(resources))
            .map(|s| s.source.clone())
            .collect()
    }
}

pub mod report;
#[cfg(test)]
mod tests;
