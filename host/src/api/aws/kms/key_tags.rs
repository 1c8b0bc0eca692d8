//! `TagResource` → `tag-key`, `UntagResource` → `untag-key`, `ListResourceTags` →
//! `list-key-tags` (`Marker`: the last tag key of the previous page).

use serde::{Deserialize, Serialize};

use super::create_key::{tags, Tag};
use super::key_state::Empty;
use super::{required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length, length_of, range, Cx};
use crate::error::Result;
use crate::ops::key_tags as op;
use crate::ops::Operation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagResource {
    key_id: Option<String>,
    tags: Option<Vec<Tag>>,
}

impl KmsAction for TagResource {
    type Op = op::TagKey;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(op::TagKey {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            tags: tags(required("tags", self.tags)?)?,
        })
    }

    fn response(
        _out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(Empty {})
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UntagResource {
    key_id: Option<String>,
    tag_keys: Option<Vec<String>>,
}

impl KmsAction for UntagResource {
    type Op = op::UntagKey;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let tag_keys = required("tagKeys", self.tag_keys)?;
        for k in &tag_keys {
            length("tagKeys.member", k, 1, 128)?;
        }
        Ok(op::UntagKey {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            tag_keys,
        })
    }

    fn response(
        _out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(Empty {})
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTags {
    key_id: Option<String>,
    limit: Option<i64>,
    marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagEntry {
    tag_key: String,
    tag_value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListResourceTagsResponse {
    tags: Vec<TagEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
    truncated: bool,
}

impl KmsAction for ListResourceTags {
    type Op = op::ListKeyTags;
    type Response = ListResourceTagsResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let limit = self.limit.unwrap_or(50);
        range("limit", limit, 1, 50)?;
        if let Some(m) = &self.marker {
            length_of("marker", m.len(), 1, 1024)?;
        }
        Ok(op::ListKeyTags {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            limit: Some(limit),
            next_token: self.marker,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(ListResourceTagsResponse {
            tags: out
                .tags
                .into_iter()
                .map(|t| TagEntry {
                    tag_key: t.tag_key,
                    tag_value: t.tag_value,
                })
                .collect(),
            truncated: out.next_token.is_some(),
            next_marker: out.next_token,
        })
    }
}
