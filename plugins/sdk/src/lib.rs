//! The keyplane plugin SDK: write a rotation schedule or a storage backend in a few lines.
//!
//! ```ignore
//! use keyplane_plugin_sdk::rotation::{Config, KeyInfo, Schedule, Timestamp};
//!
//! struct Daily;
//! impl Schedule for Daily {
//!     fn next_rotation(_config: Config, info: KeyInfo, _now: Timestamp) -> Result<Option<Timestamp>, String> {
//!         Ok(Some(info.last_rotation.unwrap_or(info.created_at) + 86_400))
//!     }
//! }
//! keyplane_plugin_sdk::rotation::export_rotation_schedule!(Daily);
//! ```
//!
//! Storage backends implement [`storage::Storage`] and use [`storage::export_storage_backend!`].
//! [`config`] parses the string-map configuration into typed values with clear errors.

pub mod config;

/// The `rotation-schedule` world.
pub mod rotation {
    wit_bindgen::generate!({
        world: "rotation-schedule",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_rotation_schedule",
        default_bindings_module: "keyplane_plugin_sdk::rotation",
    });

    pub use self::exports::keyplane::plugin::schedule::Guest as Schedule;
    pub use self::keyplane::plugin::log::{log, Level};
    pub use self::keyplane::plugin::types::{Config, KeyInfo, Timestamp};
}

/// The `storage-backend` world.
pub mod storage {
    wit_bindgen::generate!({
        world: "storage-backend",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "export_storage_backend",
        default_bindings_module: "keyplane_plugin_sdk::storage",
    });

    pub use self::exports::keyplane::plugin::storage::Guest as Storage;
    pub use self::keyplane::plugin::kv;
    pub use self::keyplane::plugin::log::{log, Level};
    pub use self::keyplane::plugin::types::{Blob, BlobPage, Config, StorageError};
}
