//! The OpenAPI 3.1 document of the native API, generated from the operation types.
//!
//! Each operation of [`crate::ops::operations!`] is `POST /v1/<name>`: its request body is the
//! JSON Schema of how the operation's type deserializes, its `200` answer the schema of how its
//! output serializes, both made by `schemars` from the same serde attributes that decode and
//! encode them (so the document follows the code; nothing here is kept by hand but the
//! envelope: the error body and `POST /v1/batch`). Schemas are inlined per operation rather
//! than shared under `components`: a type's deserialized and serialized shapes differ (defaults,
//! skipped fields), and inlining keeps each exact.
//!
//! Served at `GET /v1/openapi.json` (no credential: it is the public contract); `keyplane
//! openapi` prints it, and `docs/openapi.json` is that output, checked against the served one
//! by `host/tests/openapi.rs`, which also runs schemathesis against a live node.

use schemars::generate::{Contract, SchemaSettings};
use schemars::JsonSchema;
use serde_json::{json, Map, Value};

use super::native::{ErrorBody, BATCHABLE};
use crate::ops::{Operation, MAX_BATCH_ITEMS};

/// The JSON Schema of `T` as it deserializes (a request) or serializes (an answer), with
/// every subschema inlined.
fn schema_of<T: JsonSchema>(contract: Contract) -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|s| {
            s.inline_subschemas = true;
            s.contract = contract;
            s.meta_schema = None;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

/// The path item of one operation.
fn path<O>() -> (String, Value)
where
    O: Operation + JsonSchema,
    O::Output: JsonSchema,
{
    let item = json!({
        "post": {
            "operationId": O::NAME,
            "summary": format!("{} (Cedar action {})", O::NAME, O::ACTION),
            "requestBody": {
                "required": true,
                "content": json_content(schema_of::<O>(Contract::Deserialize)),
            },
            "responses": {
                "200": {
                    "description": "The operation's output.",
                    "content": json_content(schema_of::<O::Output>(Contract::Serialize)),
                },
                "default": { "$ref": "#/components/responses/Error" },
            },
        }
    });
    (format!("/v1/{}", O::NAME), item)
}

macro_rules! paths_of {
    ($($op:ty),* $(,)?) => {
        vec![$(path::<$op>()),*]
    };
}

/// `POST /v1/batch`: its items are the bodies of the operation it names.
fn batch() -> Value {
    let names: Vec<&str> = BATCHABLE.iter().map(|(name, _)| *name).collect();
    json!({
        "post": {
            "operationId": "batch",
            "summary": "Many requests of one operation (each item that operation's body)",
            "requestBody": {
                "required": true,
                "content": json_content(json!({
                    "type": "object",
                    "required": ["operation", "items"],
                    "additionalProperties": false,
                    "properties": {
                        "operation": { "enum": names },
                        "items": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_BATCH_ITEMS,
                            "items": { "type": "object" },
                        },
                    },
                })),
            },
            "responses": {
                "200": {
                    "description": "One result per item, in order.",
                    "content": json_content(json!({
                        "type": "object",
                        "required": ["results", "failed"],
                        "properties": {
                            "results": {
                                "type": "array",
                                "items": {
                                    "oneOf": [
                                        { "type": "object", "required": ["output"] },
                                        {
                                            "type": "object",
                                            "required": ["error"],
                                            "properties": { "error": schema_of::<ErrorBody>(Contract::Serialize) },
                                        },
                                    ],
                                },
                            },
                            "failed": { "type": "integer", "minimum": 0 },
                        },
                    })),
                },
                "default": { "$ref": "#/components/responses/Error" },
            },
        }
    })
}

/// The whole document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for (path, item) in crate::ops::operations!(paths_of) {
        paths.insert(path, item);
    }
    paths.insert("/v1/batch".into(), batch());
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "keyplane native API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every operation is POST /v1/<operation> with a JSON body and a bearer token; binary fields are base64. See README.md, Native API.",
        },
        "security": [{ "bearer": [] }],
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "responses": {
                "Error": {
                    "description": "The error: its code (stable) and message; the status says its class (README.md, Native API).",
                    "content": json_content(json!({
                        "type": "object",
                        "required": ["error"],
                        "properties": { "error": schema_of::<ErrorBody>(Contract::Serialize) },
                    })),
                },
            },
        },
    })
}
