//! Tags: TagResource, UntagResource, ListResourceTags, and the tag rules
//! CreateKey shares (AWS's limits and `TagException`).
//!
//! Tags are administration data (`kms:TagResource` is in the `administer`
//! group), but a policy condition can follow them (`resource_tags`, AWS's
//! `aws:ResourceTag/KEY`): whoever may tag a key may therefore change who
//! may use it, as in AWS.

use super::validation;
use super::{page, Caller, KmsService};
use crate::api::{
    Empty, ListResourceTagsRequest, ListResourceTagsResponse, Operation, Tag, TagResourceRequest,
    UntagResourceRequest,
};
use crate::error::{ErrorCode, KmsError, Result};
use crate::operation::Action;
use std::collections::BTreeMap;

/// Most tags a key may carry, as in AWS.
pub(super) const MAX_TAGS: usize = 50;
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;

fn tag_error(message: String) -> KmsError {
    KmsError::new(ErrorCode::Tag, message)
}

/// A tag key's length: 1 to 128 characters, a constraint of AWS's API
/// model, so a `ValidationException` naming the list member
/// (`tags.1.member.tagKey`, 1-based) as AWS's front end words it.
fn check_tag_key(member: &str, key: &str) -> Result<()> {
    validation::required(member, key, MAX_TAG_KEY)
}

/// Checks the `index`-th tag (1-based) against AWS's rules: lengths as
/// the API model constrains them (`ValidationException`), the reserved
/// `aws:` prefix as KMS does (`TagException`).
fn check_tag(index: usize, tag: &Tag) -> Result<()> {
    check_tag_key(&format!("tags.{index}.member.tagKey"), &tag.tag_key)?;
    if tag.tag_value.chars().count() > MAX_TAG_VALUE {
        return Err(validation::too_long(
            &format!("tags.{index}.member.tagValue"),
            MAX_TAG_VALUE,
        ));
    }
    if tag
        .tag_key
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("aws:"))
    {
        return Err(tag_error(format!(
            "Tag key '{}' uses the reserved prefix 'aws:'",
            tag.tag_key
        )));
    }
    Ok(())
}

/// Applies `tags` to `current` (new keys added, existing ones replaced)
/// after checking each and the total.
pub(super) fn apply_tags(current: &mut BTreeMap<String, String>, tags: &[Tag]) -> Result<()> {
    let mut next = current.clone();
    for (i, tag) in tags.iter().enumerate() {
        check_tag(i + 1, tag)?;
        next.insert(tag.tag_key.clone(), tag.tag_value.clone());
    }
    if next.len() > MAX_TAGS {
        return Err(tag_error(format!(
            "A key can have at most {MAX_TAGS} tags; this request would give it {}",
            next.len()
        )));
    }
    *current = next;
    Ok(())
}

impl KmsService {
    pub(super) fn tag_resource(&self, caller: &Caller, r: &TagResourceRequest) -> Result<Empty> {
        self.tag_change(caller, Operation::TagResource, &r.key_id, |tags| {
            apply_tags(tags, &r.tags)
        })
    }

    pub(super) fn untag_resource(
        &self,
        caller: &Caller,
        r: &UntagResourceRequest,
    ) -> Result<Empty> {
        if r.tag_keys.is_empty() {
            return Err(validation::too_short("tagKeys", "[]", 1));
        }
        self.tag_change(caller, Operation::UntagResource, &r.key_id, |tags| {
            for (i, k) in r.tag_keys.iter().enumerate() {
                check_tag_key(&format!("tagKeys.{}.member", i + 1), k)?;
                // As in AWS, a key the resource does not carry is no error.
                tags.remove(k);
            }
            Ok(())
        })
    }

    /// TagResource and UntagResource: the key id is checked first, then
    /// `op`'s action, then the key's state (not pending deletion).
    fn tag_change(
        &self,
        caller: &Caller,
        op: Operation,
        key_id: &str,
        change: impl FnOnce(&mut BTreeMap<String, String>) -> Result<()>,
    ) -> Result<Empty> {
        validation::key_id("keyId", key_id)?;
        self.change_key(caller, op, key_id, |key, _| {
            self.not_pending(key)?;
            change(&mut key.tags)?;
            Ok(Empty {})
        })
    }

    pub(super) fn list_resource_tags(
        &self,
        caller: &Caller,
        r: &ListResourceTagsRequest,
    ) -> Result<ListResourceTagsResponse> {
        validation::key_id("keyId", &r.key_id)?;
        self.audited(caller, Operation::ListResourceTags, |trail| {
            let snap = self.snapshot()?;
            let key = self.authorized_key(
                trail,
                caller,
                &snap,
                &r.key_id,
                Action::ListResourceTags,
                None,
            )?;
            let all: Vec<Tag> = key
                .tags
                .iter()
                .map(|(k, v)| Tag {
                    tag_key: k.clone(),
                    tag_value: v.clone(),
                })
                .collect();
            let (tags, next_marker) = page(&all, r.limit.or(Some(50)), &r.marker)?;
            Ok(ListResourceTagsResponse {
                tags,
                truncated: next_marker.is_some(),
                next_marker,
            })
        })
    }
}
