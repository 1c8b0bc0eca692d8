//! `tag-key`, `untag-key` and `list-key-tags`: a key's tags after its creation. Cedar:
//! `TagResource`, `UntagResource` and `ListResourceTags` on the key (AWS's names).
//!
//! A key's tags are its Cedar tags: policies read them (the shipped `key-required-purpose`
//! reads `purpose`), so changing them changes decisions, and the shipped policies let only
//! the tenant's admins do it. Each change is a compare-and-set on the tags it read, so two
//! requests tagging one key at once cannot lose either's tags.

use crate::model::KeyState;
use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::resolve::{key_row, resolve_key};
use super::validate::{validate_key_id, validate_tags, MAX_TAGS};
use super::{OpContext, Operation, WriteScope};
use crate::authz::ResourceRef;
use crate::error::{Error, Result};
use crate::store::keys::{self, KeyRow};

/// A destroyed key keeps its record, but nothing about it changes any more.
pub fn refuse_if_destroyed(key: &KeyRow) -> Result<()> {
    if key.state == KeyState::Destroyed {
        return Err(Error::KeyDestroyed {
            what: format!("key {}", key.id),
        });
    }
    Ok(())
}

fn stored(key: &KeyRow) -> Result<BTreeMap<String, String>> {
    if key.tags.is_empty() {
        return Ok(BTreeMap::new());
    }
    serde_json::from_str(&key.tags).map_err(|_| Error::Internal)
}

/// Replace the tags of `key` (as read) with `tags`.
async fn replace(
    ctx: &OpContext<'_>,
    scope: &mut WriteScope,
    key: &KeyRow,
    tags: &BTreeMap<String, String>,
) -> Result<()> {
    let json = serde_json::to_string(tags).map_err(|_| Error::Internal)?;
    crate::pause::point("key-settings:resolved", &key.id).await;
    let conn = scope.conn(ctx.state).await?;
    // Against the key's state as well as its tags: a key destroyed meanwhile keeps the tags
    // it had.
    if !keys::set_tags(conn, &key.id, key.state, &key.tags, &json).await? {
        return Err(Error::InvalidState(format!(
            "key {} or its tags changed while this request ran; read them again and retry",
            key.id
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct TagsOutput {
    pub key_id: String,
    pub tags: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TagKey {
    pub key_id: String,
    /// Added, or replacing the value of a tag of the same key.
    pub tags: BTreeMap<String, String>,
}

impl Operation for TagKey {
    const NAME: &'static str = "tag-key";
    const ACTION: &'static str = "TagResource";
    type Output = TagsOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        validate_tags(&self.tags)
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        refuse_if_destroyed(key)?;
        let mut tags = stored(key)?;
        tags.extend(self.tags);
        if tags.len() > MAX_TAGS {
            return Err(super::validate::too_many_tags());
        }
        replace(ctx, scope, key, &tags).await?;
        Ok(TagsOutput {
            key_id: key.id.clone(),
            tags,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UntagKey {
    pub key_id: String,
    pub tag_keys: Vec<String>,
}

impl Operation for UntagKey {
    const NAME: &'static str = "untag-key";
    const ACTION: &'static str = "UntagResource";
    type Output = TagsOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self.tag_keys.len() > MAX_TAGS {
            return Err(Error::validation(format!(
                "at most {MAX_TAGS} tag keys at a time"
            )));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        ctx: &OpContext<'_>,
        r: ResourceRef,
        scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        refuse_if_destroyed(key)?;
        let mut tags = stored(key)?;
        for k in &self.tag_keys {
            tags.remove(k);
        }
        replace(ctx, scope, key, &tags).await?;
        Ok(TagsOutput {
            key_id: key.id.clone(),
            tags,
        })
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListKeyTags {
    pub key_id: String,
    /// At most this many (1 to 50; default all).
    pub limit: Option<i64>,
    /// Tags after this tag key (the last of the previous page).
    pub next_token: Option<String>,
}

/// One tag.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Tag {
    pub tag_key: String,
    pub tag_value: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListKeyTagsOutput {
    pub key_id: String,
    /// In tag-key order.
    pub tags: Vec<Tag>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_token: Option<String>,
}

impl Operation for ListKeyTags {
    const NAME: &'static str = "list-key-tags";
    const ACTION: &'static str = "ListResourceTags";
    type Output = ListKeyTagsOutput;

    fn validate(&self) -> Result<()> {
        validate_key_id(&self.key_id)?;
        if self
            .limit
            .is_some_and(|l| !(1..=MAX_TAGS as i64).contains(&l))
        {
            return Err(Error::validation(format!("limit must be 1 to {MAX_TAGS}")));
        }
        Ok(())
    }

    async fn resolve(&self, ctx: &OpContext<'_>) -> Result<ResourceRef> {
        resolve_key(ctx, &self.key_id).await
    }

    async fn execute(
        self,
        _ctx: &OpContext<'_>,
        r: ResourceRef,
        _scope: &mut WriteScope,
    ) -> Result<Self::Output> {
        let key = key_row(&r)?;
        let tags = stored(key)?;
        let after = self.next_token.unwrap_or_default();
        let limit = self.limit.unwrap_or(MAX_TAGS as i64) as usize;
        let page: Vec<(String, String)> = tags
            .into_iter()
            .filter(|(k, _)| after.is_empty() || *k > after)
            .take(limit + 1)
            .collect();
        let more = page.len() > limit;
        let page: Vec<Tag> = page
            .into_iter()
            .take(limit)
            .map(|(tag_key, tag_value)| Tag { tag_key, tag_value })
            .collect();
        Ok(ListKeyTagsOutput {
            key_id: key.id.clone(),
            next_token: more
                .then(|| page.last().map(|t| t.tag_key.clone()))
                .flatten(),
            tags: page,
        })
    }
}
