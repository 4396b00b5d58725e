//! The tag and grant subcommands (issue 15): each builds one request for
//! [`super::run`], like the other `aws kms`-style subcommands.

use super::tags_arg;
use clap::Subcommand;
use rewrap::api::*;
use rewrap::kms::to_json;
use rewrap::secret::Secret;

/// Tag and grant operations, named as in `aws kms`.
#[derive(Debug, Subcommand)]
#[allow(missing_docs)] // reason: clap shows the doc of each field as its help
pub(crate) enum TagsGrantsCommand {
    /// Adds or replaces tags on a key (at most 50; keys 1-128 characters, values up to 256, no `aws:` prefix).
    #[command(
        after_help = "Examples:\n  rewrap tag-resource --key-id alias/app-data --tags team=storage,env=prod"
    )]
    TagResource {
        #[arg(long)]
        key_id: String,
        /// Tags as KEY=VALUE,... or a JSON object.
        #[arg(long)]
        tags: String,
    },
    /// Removes tags from a key.
    #[command(
        after_help = "Examples:\n  rewrap untag-resource --key-id alias/app-data --tag-keys env team"
    )]
    UntagResource {
        #[arg(long)]
        key_id: String,
        #[arg(long, value_delimiter = ' ', num_args = 1..)]
        tag_keys: Vec<String>,
    },
    /// Lists a key's tags.
    #[command(after_help = "Examples:\n  rewrap list-resource-tags --key-id alias/app-data")]
    ListResourceTags {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Gives a principal some operations on a key, revocable; prints the grant id and token.
    #[command(
        after_help = "Examples:\n  rewrap create-grant --key-id alias/app-data --grantee-principal storage-rotator --operations ReEncryptFrom ReEncryptTo --retiring-principal storage-rotator --name nightly-rotation\n  rewrap create-grant --key-id alias/app-data --grantee-principal app-reader --operations Decrypt --constraints '{\"EncryptionContextSubset\":{\"purpose\":\"app-data\"}}'"
    )]
    CreateGrant {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        grantee_principal: String,
        #[arg(long, value_delimiter = ' ', num_args = 1..)]
        operations: Vec<String>,
        #[arg(long)]
        retiring_principal: Option<String>,
        /// JSON: {"EncryptionContextEquals": {...}} or {"EncryptionContextSubset": {...}}.
        #[arg(long)]
        constraints: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Lists a key's grants.
    #[command(after_help = "Examples:\n  rewrap list-grants --key-id alias/app-data")]
    ListGrants {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        grant_id: Option<String>,
        #[arg(long)]
        grantee_principal: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Lists the grants a principal may retire.
    #[command(
        after_help = "Examples:\n  rewrap list-retirable-grants --retiring-principal storage-rotator"
    )]
    ListRetirableGrants {
        #[arg(long)]
        retiring_principal: String,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        marker: Option<String>,
    },
    /// Retires a grant, by its token or by key and grant id.
    #[command(
        after_help = "Examples:\n  rewrap retire-grant --grant-token TOKEN\n  rewrap retire-grant --key-id alias/app-data --grant-id GRANTID"
    )]
    RetireGrant {
        #[arg(long)]
        grant_token: Option<String>,
        #[arg(long)]
        key_id: Option<String>,
        #[arg(long)]
        grant_id: Option<String>,
        #[arg(long)]
        dry_run: bool,
    },
    /// Revokes a grant of a key.
    #[command(
        after_help = "Examples:\n  rewrap revoke-grant --key-id alias/app-data --grant-id GRANTID"
    )]
    RevokeGrant {
        #[arg(long)]
        key_id: String,
        #[arg(long)]
        grant_id: String,
        #[arg(long)]
        dry_run: bool,
    },
}

fn constraints_arg(arg: Option<&str>) -> anyhow::Result<Option<GrantConstraints>> {
    let Some(arg) = arg else { return Ok(None) };
    let text = match arg.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path)?,
        None => arg.to_string(),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        crate::cli::ConfigError(format!(
            "--constraints is not a JSON object with EncryptionContextEquals or EncryptionContextSubset: {e}"
        ))
        .into()
    })
}

/// Builds the request of a command as (operation, JSON body).
pub(super) fn request(
    cmd: &TagsGrantsCommand,
) -> anyhow::Result<(Operation, rewrap::error::Result<Secret>)> {
    use Operation as O;
    use TagsGrantsCommand as C;
    let dry = |d: &bool| d.then_some(true);
    Ok(match cmd {
        C::TagResource { key_id, tags } => (
            O::TagResource,
            to_json(&TagResourceRequest {
                key_id: key_id.clone(),
                tags: tags_arg(Some(tags))?.unwrap_or_default(),
            }),
        ),
        C::UntagResource { key_id, tag_keys } => (
            O::UntagResource,
            to_json(&UntagResourceRequest {
                key_id: key_id.clone(),
                tag_keys: tag_keys.clone(),
            }),
        ),
        C::ListResourceTags {
            key_id,
            limit,
            marker,
        } => (
            O::ListResourceTags,
            to_json(&ListResourceTagsRequest {
                key_id: key_id.clone(),
                limit: *limit,
                marker: marker.clone(),
            }),
        ),
        C::CreateGrant {
            key_id,
            grantee_principal,
            operations,
            retiring_principal,
            constraints,
            name,
            dry_run,
        } => (
            O::CreateGrant,
            to_json(&CreateGrantRequest {
                key_id: key_id.clone(),
                grantee_principal: grantee_principal.clone(),
                retiring_principal: retiring_principal.clone(),
                operations: operations.clone(),
                constraints: constraints_arg(constraints.as_deref())?,
                grant_tokens: None,
                name: name.clone(),
                dry_run: dry(dry_run),
            }),
        ),
        C::ListGrants {
            key_id,
            grant_id,
            grantee_principal,
            limit,
            marker,
        } => (
            O::ListGrants,
            to_json(&ListGrantsRequest {
                key_id: key_id.clone(),
                limit: *limit,
                marker: marker.clone(),
                grant_id: grant_id.clone(),
                grantee_principal: grantee_principal.clone(),
            }),
        ),
        C::ListRetirableGrants {
            retiring_principal,
            limit,
            marker,
        } => (
            O::ListRetirableGrants,
            to_json(&ListRetirableGrantsRequest {
                retiring_principal: retiring_principal.clone(),
                limit: *limit,
                marker: marker.clone(),
            }),
        ),
        C::RetireGrant {
            grant_token,
            key_id,
            grant_id,
            dry_run,
        } => (
            O::RetireGrant,
            to_json(&RetireGrantRequest {
                grant_token: grant_token.clone(),
                key_id: key_id.clone(),
                grant_id: grant_id.clone(),
                dry_run: dry(dry_run),
            }),
        ),
        C::RevokeGrant {
            key_id,
            grant_id,
            dry_run,
        } => (
            O::RevokeGrant,
            to_json(&RevokeGrantRequest {
                key_id: key_id.clone(),
                grant_id: grant_id.clone(),
                dry_run: dry(dry_run),
            }),
        ),
    })
}
