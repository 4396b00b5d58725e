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
//! ```
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
pub const GROUPS: &[&str] = &["administer", "encrypt", "decrypt", "re-encrypt", "audit"];

/// Key and alias lifecycle, rotation, deletion, principals, policy reads,
/// Describe and List. Deliberately no cryptographic use.
const ADMINISTER: &[Action] = &[
    Action::CreateKey,
    Action::DescribeKey,
    Action::ListKeys,
    Action::ListAliases,
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
];
const ENCRYPT: &[Action] = &[
    Action::Encrypt,
    Action::GenerateDataKey,
    Action::GenerateDataKeyWithoutPlaintext,
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
];

/// The actions of a group in [`GROUPS`], or `None` for an unknown group name.
pub fn group_members(group: &str) -> Option<&'static [Action]> {
    match group {
        "administer" => Some(ADMINISTER),
        "encrypt" => Some(ENCRYPT),
        "decrypt" => Some(DECRYPT),
        "re-encrypt" => Some(RE_ENCRYPT),
        "audit" => Some(AUDIT),
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

/// Conditions on the request's encryption context; all must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// Context keys that must be present with exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_equals: BTreeMap<String, String>,
    /// Context keys that must be present, with any value.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_keys_required: Vec<String>,
}

impl Condition {
    fn holds(&self, context: Option<&BTreeMap<String, String>>) -> bool {
        if self.context_equals.is_empty() && self.context_keys_required.is_empty() {
            return true;
        }
        let Some(context) = context else {
            return false;
        };
        self.context_equals
            .iter()
            .all(|(k, v)| context.get(k) == Some(v))
            && self
                .context_keys_required
                .iter()
                .all(|k| context.contains_key(k))
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
    /// The encryption context of the request, if it has one.
    pub context: Option<&'a BTreeMap<String, String>>,
}

/// The outcome of [`PolicySet::evaluate`] and what decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The deciding statement, as `file#index (sid)`, or why the request was
    /// denied implicitly (`implicit deny: no statement allows`).
    pub decided_by: String,
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
                    || !s.condition.holds(req.context)
                {
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
            },
        }
    }

    fn decided(&self, allowed: bool, statement: u32) -> Decision {
        Decision {
            allowed,
            decided_by: self.inner.statements[statement as usize].label.to_string(),
        }
    }

    /// True when `holder` holds, unconditionally and on every resource, every
    /// action that any statement could ever allow `target` (on any resource,
    /// under any context). Used to refuse credentials for a principal to a
    /// caller who would gain rights through them.
    pub fn covers(&self, holder: &str, target: &str) -> bool {
        let statements = &self.inner.statements;
        let target_may: u64 = statements
            .iter()
            .filter(|s| s.effect == Effect::Allow && s.matches_principal(target))
            .fold(0, |acc, s| acc | s.actions);
        let holder_always: u64 = statements
            .iter()
            .filter(|s| {
                s.effect == Effect::Allow
                    && s.matches_principal(holder)
                    && s.resources.iter().any(|r| matches!(r, Pattern::Any))
                    && s.condition.holds(None)
            })
            .fold(0, |acc, s| acc | s.actions);
        let holder_denied: u64 = statements
            .iter()
            .filter(|s| s.effect == Effect::Deny && s.matches_principal(holder))
            .fold(0, |acc, s| acc | s.actions);
        target_may & !(holder_always & !holder_denied) == 0
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_refuses_credentials_that_would_add_rights() {
        let set = PolicySet::from_toml(
            "p.toml",
            "[[statement]]\neffect = \"allow\"\nprincipals = [\"admin\"]\nactions = [\"administer\"]\nresources = [\"*\"]\n\
             [[statement]]\neffect = \"allow\"\nprincipals = [\"owner\"]\nactions = [\"*\"]\nresources = [\"*\"]\n\
             [[statement]]\neffect = \"allow\"\nprincipals = [\"reader\"]\nactions = [\"decrypt\"]\nresources = [\"alias/x\"]\n\
             [statement.condition]\ncontext_equals = { a = \"b\" }\n",
        )
        .unwrap();
        assert!(!set.covers("admin", "reader"), "admin would gain decrypt");
        assert!(set.covers("owner", "reader"));
        assert!(
            set.covers("admin", "nobody"),
            "a principal with no rights adds nothing"
        );
        assert!(set.covers("admin", "admin"));
        assert!(!set.covers("reader", "admin"));
    }

    const KEY_ID: &str = "1234abcd-12ab-34cd-56ef-1234567890ab";
    const KEY_ARN: &str =
        "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
    const ALIAS: &str = "alias/app-data";
    const ALIAS_ARN: &str = "arn:aws:kms:us-east-1:111122223333:alias/app-data";
    const KEY_NAMES: &[&str] = &[KEY_ID, KEY_ARN, ALIAS, ALIAS_ARN];

    fn set(text: &str) -> PolicySet {
        PolicySet::from_toml("test.toml", text).unwrap()
    }

    fn load_error(text: &str) -> String {
        PolicySet::from_toml("policies/bad.toml", text)
            .unwrap_err()
            .to_string()
    }

    fn ctx(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn check(
        set: &PolicySet,
        principal: &str,
        action: &str,
        resources: &[&str],
        context: Option<&BTreeMap<String, String>>,
    ) -> Decision {
        set.evaluate(&AccessRequest {
            principal,
            action,
            resources,
            context,
        })
    }

    fn allowed(set: &PolicySet, principal: &str, action: &str, resources: &[&str]) -> bool {
        check(set, principal, action, resources, None).allowed
    }

    /// Every action `principal` may call on `resources` under `context`.
    fn allowed_actions(
        set: &PolicySet,
        principal: &str,
        resources: &[&str],
        context: Option<&BTreeMap<String, String>>,
    ) -> Vec<&'static str> {
        ACTIONS
            .iter()
            .copied()
            .filter(|a| check(set, principal, a, resources, context).allowed)
            .collect()
    }

    fn statement(principals: &str, actions: &str, resources: &str) -> String {
        format!(
            "[[statement]]\neffect = \"allow\"\nprincipals = {principals}\n\
             actions = {actions}\nresources = {resources}\n"
        )
    }

    #[test]
    fn explicit_deny_wins_over_allow_in_any_order_and_any_file() {
        let text = r#"
[[statement]]
sid = "all"
effect = "allow"
principals = ["*"]
actions = ["*"]
resources = ["*"]

[[statement]]
sid = "no-decrypt"
effect = "deny"
principals = ["mallory"]
actions = ["kms:Decrypt"]
resources = ["*"]
"#;
        let s = set(text);
        let d = check(&s, "mallory", "kms:Decrypt", KEY_NAMES, None);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                decided_by: "test.toml#2 (no-decrypt)".to_string()
            }
        );
        let d = check(&s, "mallory", "kms:Encrypt", KEY_NAMES, None);
        assert_eq!(d.decided_by, "test.toml#1 (all)");
        assert!(d.allowed);
        assert!(allowed(&s, "alice", "kms:Decrypt", KEY_NAMES));

        // The deny in an earlier file, the allow (literal principal) in a later one.
        let mut merged = PolicySet::default();
        merged.merge(
            PolicySet::from_toml(
                "a-deny.toml",
                &statement(r#"["mal*"]"#, r#"["decrypt"]"#, r#"["*"]"#)
                    .replace("\"allow\"", "\"deny\""),
            )
            .unwrap(),
        );
        merged.merge(
            PolicySet::from_toml(
                "b-allow.toml",
                &statement(r#"["mallory"]"#, r#"["decrypt"]"#, r#"["*"]"#),
            )
            .unwrap(),
        );
        assert_eq!(merged.len(), 2);
        let d = check(&merged, "mallory", "kms:Decrypt", KEY_NAMES, None);
        assert_eq!((d.allowed, d.decided_by.as_str()), (false, "a-deny.toml#1"));
    }

    #[test]
    fn nothing_allows_means_implicit_deny() {
        let s = set(&statement(r#"["alice"]"#, r#"["encrypt"]"#, r#"["*"]"#));
        let d = check(&s, "alice", "kms:Decrypt", KEY_NAMES, None);
        assert_eq!(
            d,
            Decision {
                allowed: false,
                decided_by: "implicit deny: no statement allows".to_string()
            }
        );
        assert_eq!(
            check(&s, "bob", "kms:Encrypt", KEY_NAMES, None).decided_by,
            IMPLICIT_DENY
        );
        let d = check(&s, "alice", "kms:Frobnicate", KEY_NAMES, None);
        assert_eq!(
            (d.allowed, d.decided_by.as_str()),
            (false, "implicit deny: unknown action \"kms:Frobnicate\"")
        );
        let empty = PolicySet::default();
        assert!(empty.is_empty());
        assert!(!allowed(&empty, "owner", "kms:ListKeys", &["*"]));
    }

    #[test]
    fn groups_expand_to_exactly_their_actions() {
        let expect: &[(&str, &[&str])] = &[
            (
                "administer",
                &[
                    "kms:CreateKey",
                    "kms:DescribeKey",
                    "kms:ListKeys",
                    "kms:ListAliases",
                    "kms:EnableKey",
                    "kms:DisableKey",
                    "kms:ScheduleKeyDeletion",
                    "kms:CancelKeyDeletion",
                    "kms:CreateAlias",
                    "kms:UpdateAlias",
                    "kms:DeleteAlias",
                    "kms:EnableKeyRotation",
                    "kms:DisableKeyRotation",
                    "kms:GetKeyRotationStatus",
                    "kms:RotateKeyOnDemand",
                    "kms:ListKeyRotations",
                    "kms:GetKeyPolicy",
                    "kms:ListKeyPolicies",
                    "kms:CreatePrincipal",
                    "kms:DeletePrincipal",
                    "kms:ListPrincipals",
                    "kms:CreateAccessKey",
                    "kms:DeleteAccessKey",
                ],
            ),
            (
                "encrypt",
                &[
                    "kms:Encrypt",
                    "kms:GenerateDataKey",
                    "kms:GenerateDataKeyWithoutPlaintext",
                ],
            ),
            ("decrypt", &["kms:Decrypt"]),
            ("re-encrypt", &["kms:ReEncryptFrom", "kms:ReEncryptTo"]),
            (
                "audit",
                &[
                    "kms:DescribeKey",
                    "kms:ListKeys",
                    "kms:ListAliases",
                    "kms:ListKeyRotations",
                    "kms:GetKeyRotationStatus",
                    "kms:GetKeyPolicy",
                    "kms:ListKeyPolicies",
                    "rewrap:ReadAuditTrail",
                ],
            ),
        ];
        assert_eq!(expect.len(), GROUPS.len());
        for (group, actions) in expect {
            let s = set(&statement(r#"["p"]"#, &format!("[{group:?}]"), r#"["*"]"#));
            let mut got = allowed_actions(&s, "p", &["*"], None);
            let mut want = actions.to_vec();
            got.sort_unstable();
            want.sort_unstable();
            assert_eq!(got, want, "group {group}");
            assert!(actions.iter().all(|a| is_known_action(a)), "group {group}");
        }
        let admin = group_members("administer").unwrap();
        for crypto in [
            "kms:Encrypt",
            "kms:Decrypt",
            "kms:ReEncryptFrom",
            "kms:ReEncryptTo",
            "kms:GenerateDataKey",
            "kms:GenerateDataKeyWithoutPlaintext",
        ] {
            assert!(!admin.contains(&crypto), "administer grants {crypto}");
        }
        assert_eq!(group_members("admin"), None);
    }

    #[test]
    fn wildcard_actions_expand_over_known_actions() {
        let s = set(&statement(
            r#"["p"]"#,
            r#"["kms:GenerateDataKey*"]"#,
            r#"["*"]"#,
        ));
        assert_eq!(
            allowed_actions(&s, "p", &["*"], None),
            ["kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext"]
        );
        let s = set(&statement(r#"["p"]"#, r#"["kms:*"]"#, r#"["*"]"#));
        assert_eq!(
            allowed_actions(&s, "p", &["*"], None).len(),
            ACTIONS.len() - 1
        );
        assert!(!allowed(&s, "p", "rewrap:ReadAuditTrail", &["*"]));
        let s = set(&statement(r#"["p"]"#, r#"["*"]"#, r#"["*"]"#));
        assert_eq!(allowed_actions(&s, "p", &["*"], None), ACTIONS);
        let s = set(&statement(
            r#"["p"]"#,
            r#"["kms:*", "rewrap:*"]"#,
            r#"["*"]"#,
        ));
        assert_eq!(allowed_actions(&s, "p", &["*"], None), ACTIONS);
        // AWS action names are case-insensitive, in policies and in requests.
        let s = set(&statement(
            r#"["p"]"#,
            r#"["KMS:decrypt", "kms:list*"]"#,
            r#"["*"]"#,
        ));
        assert_eq!(
            allowed_actions(&s, "p", &["*"], None),
            [
                "kms:Decrypt",
                "kms:ListKeys",
                "kms:ListAliases",
                "kms:ListKeyRotations",
                "kms:ListKeyPolicies",
                "kms:ListPrincipals"
            ]
        );
        assert!(allowed(&s, "p", "kms:DECRYPT", &["*"]));
        assert!(is_known_action("kms:reencryptfrom"));
        assert!(!is_known_action("kms:ReEncrypt"));
        assert!(!is_known_action("kms:*"));
    }

    #[test]
    fn principal_globs_match() {
        let s = set(&statement(
            r#"["app-*", "ops?", "svc/*/reader"]"#,
            r#"["decrypt"]"#,
            r#"["*"]"#,
        ));
        for p in [
            "app-reader",
            "app-",
            "ops1",
            "svc/eu/reader",
            "svc/a:b/reader",
        ] {
            assert!(allowed(&s, p, "kms:Decrypt", KEY_NAMES), "{p}");
        }
        for p in [
            "app",
            "xapp-reader",
            "ops12",
            "ops",
            "svc/eu/writer",
            "App-reader",
        ] {
            assert!(!allowed(&s, p, "kms:Decrypt", KEY_NAMES), "{p}");
        }
    }

    #[test]
    fn resource_globs_match_ids_arns_and_aliases() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            // pattern, names that match, names that do not
            (KEY_ID, &[KEY_ID], &[KEY_ARN, "*"]),
            (KEY_ARN, &[KEY_ARN], &[KEY_ID]),
            ("alias/app-*", &[ALIAS], &[ALIAS_ARN, "alias/other"]),
            ("arn:aws:kms:*:*:key/*", &[KEY_ARN], &[ALIAS_ARN, KEY_ID]),
            (
                "arn:aws:kms:us-east-1:111122223333:*",
                &[KEY_ARN, ALIAS_ARN],
                &[ALIAS],
            ),
            ("*:alias/app-data", &[ALIAS_ARN], &[ALIAS]),
            ("arn:*:alias/app-{data,logs}", &[ALIAS_ARN], &[KEY_ARN]),
            ("alias/app-?ata", &[ALIAS], &["alias/app-data2"]),
            (r"alias/\*", &["alias/*"], &[ALIAS]),
            (r"*/app-\*", &["alias/app-*"], &[ALIAS]),
            ("*", &[KEY_ID, ALIAS, "*"], &[]),
        ];
        for (pattern, yes, no) in cases {
            let s = set(&statement(
                r#"["p"]"#,
                r#"["decrypt"]"#,
                &format!("[{pattern:?}]"),
            ));
            for name in *yes {
                assert!(
                    allowed(&s, "p", "kms:Decrypt", &[name]),
                    "{pattern} vs {name}"
                );
            }
            for name in *no {
                assert!(
                    !allowed(&s, "p", "kms:Decrypt", &[name]),
                    "{pattern} vs {name}"
                );
            }
        }
        // Any of the key's names is enough.
        let s = set(&statement(
            r#"["p"]"#,
            r#"["decrypt"]"#,
            r#"["alias/app-data"]"#,
        ));
        assert!(allowed(&s, "p", "kms:Decrypt", KEY_NAMES));
        assert!(!allowed(&s, "p", "kms:Decrypt", &[KEY_ID, KEY_ARN]));
    }

    #[test]
    fn conditions_on_the_encryption_context() {
        let s = set(r#"
[[statement]]
effect = "allow"
principals = ["p"]
actions = ["decrypt"]
resources = ["*"]
[statement.condition]
context_equals = { purpose = "app-data" }
context_keys_required = ["file-id"]
"#);
        let both = ctx(&[("purpose", "app-data"), ("file-id", "7"), ("extra", "x")]);
        assert!(check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&both)).allowed);
        let wrong = ctx(&[("purpose", "billing"), ("file-id", "7")]);
        assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&wrong)).allowed);
        let no_file = ctx(&[("purpose", "app-data")]);
        assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&no_file)).allowed);
        let empty = ctx(&[]);
        assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&empty)).allowed);
        assert!(!check(&s, "p", "kms:Decrypt", KEY_NAMES, None).allowed);

        // An empty condition table holds for any request, with or without context.
        let s = set(&format!(
            "{}[statement.condition]\n",
            statement(r#"["p"]"#, r#"["decrypt"]"#, r#"["*"]"#)
        ));
        assert!(check(&s, "p", "kms:Decrypt", KEY_NAMES, None).allowed);
    }

    #[test]
    fn a_conditional_deny_applies_only_when_its_condition_holds() {
        let s = set(r#"
[[statement]]
effect = "allow"
principals = ["p"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "no-billing"
effect = "deny"
principals = ["p"]
actions = ["decrypt"]
resources = ["*"]
condition = { context_equals = { app = "billing" } }
"#);
        let billing = ctx(&[("app", "billing")]);
        let d = check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&billing));
        assert_eq!(
            (d.allowed, d.decided_by.as_str()),
            (false, "test.toml#2 (no-billing)")
        );
        let other = ctx(&[("app", "web")]);
        let d = check(&s, "p", "kms:Decrypt", KEY_NAMES, Some(&other));
        assert_eq!((d.allowed, d.decided_by.as_str()), (true, "test.toml#1"));
        assert!(check(&s, "p", "kms:Decrypt", KEY_NAMES, None).allowed);
    }

    #[test]
    fn bad_toml_syntax_names_file_and_line() {
        let text = "[[statement]]\neffect = \"allow\"\nprincipals = [\"a\"\nactions = []\n";
        assert_eq!(
            load_error(text),
            "policies/bad.toml line 4: invalid array; expected `]`"
        );
    }

    #[test]
    fn unknown_action_names_file_and_line() {
        let text = "# comment\n[[statement]]\neffect = \"allow\"\nprincipals = [\"a\"]\n\
                    actions = [\n  \"kms:Encrypt\",\n  \"kms:Decrypy\",\n]\nresources = [\"*\"]\n";
        assert_eq!(
            load_error(text),
            "policies/bad.toml line 7: unknown action \"kms:Decrypy\""
        );
        // A wildcard that matches nothing is a typo too.
        let text = statement(
            r#"["a"]"#,
            r#"["kms:GenerateDatakey*", "kms:Decript*"]"#,
            r#"["*"]"#,
        );
        assert_eq!(
            load_error(&text),
            "policies/bad.toml line 4: unknown action \"kms:Decript*\""
        );
        let text = statement(r#"["a"]"#, r#"["admin"]"#, r#"["*"]"#);
        assert_eq!(
            load_error(&text),
            "policies/bad.toml line 4: unknown action group \"admin\""
        );
    }

    #[test]
    fn unknown_field_names_file_and_line() {
        let text = "[[statement]]\neffect = \"allow\"\nprincipal = [\"a\"]\n";
        assert_eq!(
            load_error(text),
            "policies/bad.toml line 3: unknown field `principal`, expected one of \
             `sid`, `effect`, `principals`, `actions`, `resources`, `condition`"
        );
        let text = format!(
            "{}[statement.condition]\ncontext_equal = {{ a = \"b\" }}\n",
            statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["*"]"#)
        );
        assert_eq!(
            load_error(&text),
            "policies/bad.toml line 7: unknown field `context_equal`, expected \
             `context_equals` or `context_keys_required`"
        );
        assert_eq!(
            load_error("[[statements]]\n"),
            "policies/bad.toml line 1: unknown field `statements`, expected `statement`"
        );
    }

    #[test]
    fn bad_effect_names_file_and_line() {
        let text = statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["*"]"#).replace("allow", "permit");
        assert_eq!(
            load_error(&text),
            "policies/bad.toml line 2: unknown variant `permit`, expected `allow` or `deny`"
        );
    }

    #[test]
    fn missing_field_empty_list_bad_glob_and_duplicate_sid_are_refused() {
        let text =
            "\n[[statement]]\neffect = \"allow\"\nprincipals = [\"a\"]\nactions = [\"decrypt\"]\n";
        assert_eq!(
            load_error(text),
            "policies/bad.toml line 2: missing field `resources`"
        );
        let text = statement(r#"["a"]"#, r#"["decrypt"]"#, "[]");
        assert_eq!(
            load_error(&text),
            "policies/bad.toml line 5: statement 1 has no resources"
        );
        let text = statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["alias/[x"]"#);
        assert_eq!(
            load_error(&text),
            "policies/bad.toml line 5: invalid glob \"alias/[x\": unclosed character class; missing ']'"
        );
        let text = r#"
[[statement]]
sid = "s"
effect = "allow"
principals = ["a"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "s"
effect = "deny"
principals = ["a"]
actions = ["decrypt"]
resources = ["*"]
"#;
        assert_eq!(
            load_error(text),
            "policies/bad.toml line 10: duplicate sid \"s\" (also statement 1)"
        );
    }

    #[test]
    fn load_dir_refuses_the_whole_set_for_one_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.toml"),
            statement(r#"["a"]"#, r#"["decrypt"]"#, r#"["*"]"#),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("b.toml"),
            "[[statement]]\neffect = \"maybe\"\n",
        )
        .unwrap();
        let err = PolicySet::load_dir(dir.path()).unwrap_err();
        let bad = dir.path().join("b.toml").display().to_string();
        assert_eq!(
            err.to_string(),
            format!("{bad} line 2: unknown variant `maybe`, expected `allow` or `deny`")
        );
        assert!(matches!(err, PolicyError::Parse { line: 2, .. }));
    }

    #[test]
    fn load_dir_reads_toml_files_sorted_and_not_recursively() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, principal: &str| {
            std::fs::write(
                dir.path().join(name),
                statement(&format!("[{principal:?}]"), r#"["decrypt"]"#, r#"["*"]"#),
            )
            .unwrap()
        };
        write("b.toml", "p");
        write("a.toml", "p");
        write("notes.txt", "q");
        std::fs::create_dir(dir.path().join("sub.toml")).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/c.toml"), "not toml at all [").unwrap();
        let s = PolicySet::load_dir(dir.path()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(
            check(&s, "p", "kms:Decrypt", &["*"], None).decided_by,
            "a.toml#1"
        );
        assert!(!allowed(&s, "q", "kms:Decrypt", &["*"]));
    }

    #[test]
    fn load_dir_empty_is_deny_all_and_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let s = PolicySet::load_dir(dir.path()).unwrap();
        assert_eq!(s.len(), 0);
        assert_eq!(
            check(&s, "owner", "kms:CreateKey", &["*"], None).decided_by,
            IMPLICIT_DENY
        );

        let missing = dir.path().join("nope");
        let err = PolicySet::load_dir(&missing).unwrap_err();
        assert!(
            matches!(&err, PolicyError::Io { path, source }
                if *path == missing.display().to_string()
                    && source.kind() == std::io::ErrorKind::NotFound),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with(&format!("{}: ", missing.display())));
    }

    fn shipped() -> PolicySet {
        PolicySet::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")).unwrap()
    }

    #[test]
    fn shipped_policies_give_each_role_exactly_its_part() {
        let s = shipped();
        assert_eq!(s.len(), 6);
        let app = ctx(&[("purpose", "app-data")]);
        let on_key = |p| allowed_actions(&s, p, KEY_NAMES, Some(&app));
        let on_account = |p| allowed_actions(&s, p, &["*"], None);

        let mut admin: Vec<&str> = group_members("administer").unwrap().to_vec();
        let order = |v: &mut Vec<&str>| v.sort_by_key(|a| ACTIONS.iter().position(|x| x == a));
        order(&mut admin);
        assert_eq!(on_key("key-admin"), admin);
        assert_eq!(on_account("key-admin"), admin);

        let writer = [
            "kms:Encrypt",
            "kms:GenerateDataKey",
            "kms:GenerateDataKeyWithoutPlaintext",
            "kms:DescribeKey",
        ];
        assert_eq!(on_key("app-writer"), writer);

        assert_eq!(on_key("app-reader"), ["kms:Decrypt"]);
        assert_eq!(
            allowed_actions(&s, "app-reader", KEY_NAMES, None),
            [] as [&str; 0]
        );
        let other = ctx(&[("purpose", "billing")]);
        assert_eq!(
            allowed_actions(&s, "app-reader", KEY_NAMES, Some(&other)),
            [] as [&str; 0]
        );

        assert_eq!(
            on_key("storage-rotator"),
            [
                "kms:ReEncryptFrom",
                "kms:ReEncryptTo",
                "kms:DescribeKey",
                "kms:ListAliases"
            ]
        );
        let d = check(&s, "storage-rotator", "kms:Decrypt", KEY_NAMES, Some(&app));
        assert_eq!(
            (d.allowed, d.decided_by.as_str()),
            (false, "storage-rotator.toml#1 (rotator-no-plaintext)")
        );

        let mut audit = group_members("audit").unwrap().to_vec();
        order(&mut audit);
        assert_eq!(on_account("auditor"), audit);

        assert_eq!(on_key("owner"), [] as [&str; 0]);
        assert_eq!(on_key("key-admin*"), [] as [&str; 0]);
    }

    #[test]
    fn decisions_name_the_deciding_file_and_statement() {
        let s = shipped();
        let cases = [
            (
                "key-admin",
                "kms:CreateKey",
                true,
                "key-admin.toml#1 (admin-lifecycle)",
            ),
            ("key-admin", "kms:Decrypt", false, IMPLICIT_DENY),
            (
                "app-writer",
                "kms:Encrypt",
                true,
                "app-writer.toml#1 (writer-encrypt)",
            ),
            (
                "app-reader",
                "kms:Decrypt",
                true,
                "app-reader.toml#1 (reader-decrypt)",
            ),
            (
                "storage-rotator",
                "kms:ReEncryptTo",
                true,
                "storage-rotator.toml#2 (rotator-reencrypt)",
            ),
            (
                "storage-rotator",
                "kms:GenerateDataKey",
                false,
                "storage-rotator.toml#1 (rotator-no-plaintext)",
            ),
            (
                "auditor",
                "rewrap:ReadAuditTrail",
                true,
                "auditor.toml#1 (auditor-read)",
            ),
        ];
        let app = ctx(&[("purpose", "app-data")]);
        for (principal, action, allowed, by) in cases {
            let d = check(&s, principal, action, KEY_NAMES, Some(&app));
            assert_eq!(
                d,
                Decision {
                    allowed,
                    decided_by: by.to_string()
                },
                "{principal} {action}"
            );
        }
    }

    #[test]
    fn the_owner_policy_shape_allows_everything() {
        let mut s = shipped();
        s.merge(set(&statement(
            r#"["owner"]"#,
            r#"["kms:*", "rewrap:*"]"#,
            r#"["*"]"#,
        )));
        s.merge(set(&statement(r#"["root"]"#, r#"["*"]"#, r#"["*"]"#)));
        assert_eq!(allowed_actions(&s, "owner", KEY_NAMES, None), ACTIONS);
        assert_eq!(allowed_actions(&s, "root", &["*"], None), ACTIONS);
    }

    #[test]
    fn statements_for_resources_lists_matching_statements_as_json() {
        let mut s = set(r#"
[[statement]]
sid = "one-key"
effect = "allow"
principals = ["p"]
actions = ["decrypt", "kms:DescribeKey"]
resources = ["alias/app-data"]
[statement.condition]
context_equals = { purpose = "app-data" }

[[statement]]
effect = "deny"
principals = ["q"]
actions = ["encrypt"]
resources = ["alias/other"]
"#);
        s.merge(
            PolicySet::from_toml(
                "dir/all.toml",
                &statement(r#"["r"]"#, r#"["audit"]"#, r#"["*"]"#),
            )
            .unwrap(),
        );
        let refs = s.statements_for_resources(KEY_NAMES);
        assert_eq!(refs.len(), 2);
        assert_eq!(
            serde_json::to_string(&refs).unwrap(),
            r#"[{"file":"test.toml","index":1,"sid":"one-key","effect":"allow","principals":["p"],"actions":["decrypt","kms:DescribeKey"],"resources":["alias/app-data"],"condition":{"context_equals":{"purpose":"app-data"}}},{"file":"all.toml","index":1,"effect":"allow","principals":["r"],"actions":["audit"],"resources":["*"]}]"#
        );
        assert_eq!(s.statements_for_resources(&["alias/other"]).len(), 2);
        assert_eq!(
            s.statements_for_resources(&["alias/none"])[0].file,
            "all.toml"
        );
    }

    #[test]
    fn mixed_literal_and_glob_principals_pick_the_first_deciding_statement() {
        let s = set(r#"
[[statement]]
sid = "glob-allow"
effect = "allow"
principals = ["team-*"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "literal-allow"
effect = "allow"
principals = ["team-a", "team-b"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "literal-deny"
effect = "deny"
principals = ["team-b"]
actions = ["decrypt"]
resources = ["*"]

[[statement]]
sid = "glob-deny"
effect = "deny"
principals = ["*-b"]
actions = ["decrypt"]
resources = ["*"]
"#);
        let by = |p| check(&s, p, "kms:Decrypt", KEY_NAMES, None).decided_by;
        assert_eq!(by("team-a"), "test.toml#1 (glob-allow)");
        assert_eq!(by("team-b"), "test.toml#3 (literal-deny)");
        assert_eq!(by("x-b"), "test.toml#4 (glob-deny)");
        assert_eq!(by("x-a"), IMPLICIT_DENY);
    }

    #[test]
    fn policy_sets_are_shareable() {
        fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync>() {}
        assert_traits::<PolicySet>();
    }
}
