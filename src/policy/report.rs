//! Effective permissions: for each key and principal, which of the action
//! groups (administer, encrypt, decrypt, re-encrypt, audit) the principal
//! holds, under which conditions, and which denies override which allows,
//! computed from every statement of a [`PolicySet`] with the engine's own
//! matching (principal globs, resource names and globs, action sets).
//!
//! Per action of a group: an unconditional deny wins (`denied`); else an
//! unconditional allow holds it (a conditional deny then makes it hold only
//! when that deny's condition does not); else a conditional allow holds it
//! under its condition. The group is `allow` when every action is held
//! outright, `conditional` when every action is held but some only under a
//! condition, `partial` when only some actions are held, `denied` when none
//! is held and a deny matched.
//!
//! Grants count as the engine counts them: a grant in force gives its
//! grantee its operations on its key as an allow would (an explicit deny
//! still wins), under its constraints for the cryptographic operations
//! (the only ones constraints bind), and is named in `allowed_by` as
//! `grant <id>` (with its name in brackets). The report lists every grant
//! in force beside the rows.

use super::{group_members, Action, Effect, PolicySet, Statement, CRYPTOGRAPHIC, GROUPS};
use serde::Serialize;

/// A key as policies name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyNames {
    /// The key ARN.
    pub arn: String,
    /// Its alias names (`alias/x`).
    pub aliases: Vec<String>,
    /// Every name a statement may match: key id, key ARN, alias names and
    /// alias ARNs.
    pub names: Vec<String>,
}

/// How a principal holds one group of actions on one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Access {
    /// Every action, with no condition.
    Allow,
    /// Every action, some or all only under a condition.
    Conditional,
    /// Some of the actions (listed).
    Partial,
    /// None: a deny matched (and overrides any allow).
    Denied,
}

impl Access {
    /// The lowercase name, as in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Access::Allow => "allow",
            Access::Conditional => "conditional",
            Access::Partial => "partial",
            Access::Denied => "denied",
        }
    }
}

/// One row: a principal's access to one group of actions on one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccessRow {
    /// The key ARN.
    pub key: String,
    /// The key's alias names.
    pub aliases: Vec<String>,
    /// The principal.
    pub principal: String,
    /// The group: `administer`, `encrypt`, `decrypt`, `re-encrypt` or `audit`.
    pub permission: String,
    /// How the group is held.
    pub access: Access,
    /// The actions held, outright or under a condition (AWS names).
    pub actions: Vec<String>,
    /// The conditions an action is held under: `statement: condition` of
    /// each conditional allow (conditional denies are in `denied_by`).
    pub conditions: Vec<String>,
    /// The allow statements that grant the held actions.
    pub allowed_by: Vec<String>,
    /// The deny statements that match (with `when <condition>` if conditional).
    pub denied_by: Vec<String>,
}

/// A grant in force on a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GrantInForce {
    /// The key ARN.
    pub key: String,
    /// The grant id.
    pub grant_id: String,
    /// The name given at creation, if any.
    pub name: Option<String>,
    /// The principal it gives rights to.
    pub grantee: String,
    /// Its operations (AWS grant operation names: `Decrypt`, `ReEncryptFrom`).
    pub operations: Vec<String>,
    /// Its encryption-context constraints, described; `None` without any.
    pub constraints: Option<String>,
}

impl GrantInForce {
    /// How `allowed_by` and `conditions` name it.
    fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("grant {} ({name})", self.grant_id),
            None => format!("grant {}", self.grant_id),
        }
    }

    /// Whether it gives `principal` `action`.
    fn gives(&self, principal: &str, action: Action) -> bool {
        let name = action.name();
        self.grantee == principal
            && self
                .operations
                .iter()
                .any(|o| name.strip_prefix("kms:") == Some(o.as_str()))
    }
}

/// The effective permissions of every principal on every key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AccessReport {
    /// One row per (key, principal, group) some statement or grant matches,
    /// by key (in the order given), principal, then group (in [`GROUPS`]
    /// order).
    pub rows: Vec<AccessRow>,
    /// The grants in force on the keys, by key (in the order given), then
    /// grant id.
    pub grants: Vec<GrantInForce>,
}

/// One allow of an action: a policy statement or a grant.
struct Allow {
    label: String,
    condition: Option<String>,
}

/// What the statements and grants matching one (principal, key, action)
/// say.
#[derive(Default)]
struct ActionFacts<'s> {
    allows: Vec<Allow>,
    denies: Vec<&'s Statement>,
}

impl ActionFacts<'_> {
    fn denied_outright(&self) -> bool {
        self.denies.iter().any(|s| s.condition_text.is_none())
    }
    fn allowed_outright(&self) -> bool {
        self.allows.iter().any(|a| a.condition.is_none())
    }
    /// Held outright or under a condition, and not denied outright.
    fn held(&self) -> bool {
        !self.denied_outright() && !self.allows.is_empty()
    }
    /// Held with no condition on either side.
    fn held_outright(&self) -> bool {
        self.held() && self.allowed_outright() && self.denies.is_empty()
    }
}

impl PolicySet {
    /// The effective permissions of `principals` on `keys` with `grants`
    /// in force (see the module documentation). A principal glob in a
    /// statement applies to every principal of `principals` it matches.
    pub fn access_report(
        &self,
        keys: &[KeyNames],
        principals: &[String],
        grants: &[GrantInForce],
    ) -> AccessReport {
        let mut report = AccessReport::default();
        for key in keys {
            let names: Vec<&str> = key.names.iter().map(String::as_str).collect();
            let mut on_key: Vec<&GrantInForce> =
                grants.iter().filter(|g| g.key == key.arn).collect();
            on_key.sort_by(|a, b| a.grant_id.cmp(&b.grant_id));
            for principal in principals {
                for group in GROUPS {
                    let actions = group_members(group).unwrap_or(&[]);
                    let asked = Asked {
                        key,
                        names: &names,
                        principal,
                        grants: &on_key,
                    };
                    if let Some(row) = self.group_row(&asked, group, actions) {
                        report.rows.push(row);
                    }
                }
            }
            report.grants.extend(on_key.into_iter().cloned());
        }
        report
    }

    /// Every principal name a statement spells out without a glob.
    pub fn literal_principals(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .inner
            .statements
            .iter()
            .flat_map(|s| &s.principals)
            .filter_map(|p| match p {
                super::Pattern::Exact(name) => Some(name.to_string()),
                _ => None,
            })
            .collect();
        out.sort();
        out.dedup();
        out
    }

    fn facts(&self, asked: &Asked<'_>, action: Action) -> ActionFacts<'_> {
        let mut facts = ActionFacts::default();
        for s in &self.inner.statements {
            if s.actions & action.bit() == 0
                || !s.matches_principal(asked.principal)
                || !s.matches_resources(asked.names)
            {
                continue;
            }
            match s.effect {
                Effect::Allow => facts.allows.push(Allow {
                    label: s.label.to_string(),
                    condition: s.condition_text.as_deref().map(str::to_string),
                }),
                Effect::Deny => facts.denies.push(s),
            }
        }
        // Constraints bind only the operations that take an encryption
        // context, as in the engine.
        let constrained = CRYPTOGRAPHIC.contains(&action);
        for g in asked
            .grants
            .iter()
            .filter(|g| g.gives(asked.principal, action))
        {
            facts.allows.push(Allow {
                label: g.label(),
                condition: g.constraints.clone().filter(|_| constrained),
            });
        }
        facts
    }

    fn group_row(&self, asked: &Asked<'_>, group: &str, actions: &[Action]) -> Option<AccessRow> {
        let per_action: Vec<(Action, ActionFacts<'_>)> = actions
            .iter()
            .map(|a| (*a, self.facts(asked, *a)))
            .collect();
        if per_action
            .iter()
            .all(|(_, f)| f.allows.is_empty() && f.denies.is_empty())
        {
            return None;
        }
        let held: Vec<&(Action, ActionFacts<'_>)> =
            per_action.iter().filter(|(_, f)| f.held()).collect();
        let access = if held.is_empty() {
            Access::Denied
        } else if held.len() < per_action.len() {
            Access::Partial
        } else if held.iter().all(|(_, f)| f.held_outright()) {
            Access::Allow
        } else {
            Access::Conditional
        };
        let mut conditions = Vec::new();
        let mut allowed_by = Vec::new();
        for (_, f) in &held {
            // An outright allow makes the conditional ones beside it moot.
            let outright = f.allowed_outright();
            for a in &f.allows {
                match &a.condition {
                    None => allowed_by.push(a.label.clone()),
                    Some(c) if !outright => {
                        allowed_by.push(a.label.clone());
                        conditions.push(format!("{}: {c}", a.label));
                    }
                    Some(_) => {}
                }
            }
        }
        let denied_by = per_action
            .iter()
            .flat_map(|(_, f)| &f.denies)
            .map(|s| match &s.condition_text {
                None => s.label.to_string(),
                Some(c) => format!("{} when {c}", s.label),
            })
            .collect();
        Some(AccessRow {
            key: asked.key.arn.clone(),
            aliases: asked.key.aliases.clone(),
            principal: asked.principal.to_string(),
            permission: group.to_string(),
            access,
            actions: held.iter().map(|(a, _)| a.name().to_string()).collect(),
            conditions: dedup(conditions),
            allowed_by: dedup(allowed_by),
            denied_by: dedup(denied_by),
        })
    }
}

/// One (key, principal) the report asks about, with the key's grants.
struct Asked<'a> {
    key: &'a KeyNames,
    names: &'a [&'a str],
    principal: &'a str,
    grants: &'a [&'a GrantInForce],
}

/// `list` without repeats, first occurrence kept.
fn dedup(list: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(list.len());
    for item in list {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

impl AccessReport {
    /// One line per row, grouped by key: `key <id>  <aliases>`, then
    /// principal, permission, access and what qualifies it.
    pub fn to_table(&self) -> String {
        let detail = |r: &AccessRow| {
            let mut parts = Vec::new();
            if r.access == Access::Partial {
                parts.push(format!("only {}", r.actions.join(", ")));
            }
            if !r.conditions.is_empty() {
                parts.push(format!("if {}", r.conditions.join("; ")));
            }
            if !r.denied_by.is_empty() {
                parts.push(format!("denied by {}", r.denied_by.join("; ")));
            }
            parts.join("; ")
        };
        let cells: Vec<[String; 4]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.principal.clone(),
                    r.permission.clone(),
                    r.access.name().to_string(),
                    detail(r),
                ]
            })
            .collect();
        let header = ["PRINCIPAL", "PERMISSION", "ACCESS", "DETAIL"].map(str::to_string);
        let mut widths = [0; 3];
        for row in std::iter::once(&header).chain(&cells) {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |row: &[String; 4]| {
            let mut line = String::from("  ");
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i < 3 {
                    let pad = widths[i] - cell.chars().count();
                    line.extend(std::iter::repeat_n(' ', pad + 2));
                }
            }
            format!("{}\n", line.trim_end())
        };
        let mut out = line(&header);
        let mut current: Option<&str> = None;
        for (r, row) in self.rows.iter().zip(&cells) {
            if current != Some(r.key.as_str()) {
                if let Some(done) = current {
                    out.push_str(&self.grant_lines(done));
                }
                current = Some(&r.key);
                let id = r.key.rsplit_once(":key/").map_or(&*r.key, |(_, id)| id);
                if r.aliases.is_empty() {
                    out.push_str(&format!("key {id}\n"));
                } else {
                    out.push_str(&format!("key {id}  {}\n", r.aliases.join(", ")));
                }
            }
            out.push_str(&line(row));
        }
        if let Some(done) = current {
            out.push_str(&self.grant_lines(done));
        }
        out
    }

    /// The grants in force on `key`, one line each, below its rows.
    fn grant_lines(&self, key: &str) -> String {
        let mut out = String::new();
        for g in self.grants.iter().filter(|g| g.key == key) {
            out.push_str(&format!(
                "  {} to {}: {}",
                g.label(),
                g.grantee,
                g.operations.join(", ")
            ));
            if let Some(c) = &g.constraints {
                out.push_str(&format!(" if {c}"));
            }
            out.push('\n');
        }
        out
    }

    /// RFC 4180 CSV with a header line; lists joined by `; `.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "key,aliases,principal,permission,access,actions,conditions,allowed_by,denied_by\r\n",
        );
        for r in &self.rows {
            let fields = [
                r.key.clone(),
                r.aliases.join("; "),
                r.principal.clone(),
                r.permission.clone(),
                r.access.name().to_string(),
                r.actions.join("; "),
                r.conditions.join("; "),
                r.allowed_by.join("; "),
                r.denied_by.join("; "),
            ];
            let quoted: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&quoted.join(","));
            out.push_str("\r\n");
        }
        out
    }
}

/// A CSV field, quoted when it holds a comma, a quote or a line break.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_string()
    }
}
