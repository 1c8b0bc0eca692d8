//! Host bindings of the WIT package, one module per semver-incompatible package version.
//! `v0_1` is generated from the newest 0.1 release (`@0.1.1`) and serves every `@0.1.x`
//! plugin: wasmtime matches imports and exports semver-compatibly, and a 0.1.x release only
//! adds to 0.1.0. A `@0.2.0` would get a module (and linkers) of its own beside this one.

/// `keyplane:plugin@0.1.x` (generated from `@0.1.1`).
pub mod v0_1 {
    /// The `rotation-schedule` world.
    pub mod rotation {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "rotation-schedule",
            imports: { default: async },
            exports: { default: async },
        });
    }

    /// The `storage-backend` world (shares `types` and `log` with `rotation`).
    pub mod storage {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "storage-backend",
            imports: { default: async },
            exports: { default: async },
            with: {
                "keyplane:plugin/types": super::rotation::keyplane::plugin::types,
                "keyplane:plugin/log": super::rotation::keyplane::plugin::log,
            },
        });
    }
}
