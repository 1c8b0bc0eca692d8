//! Host bindings of the WIT package, one module per package version. Serving a new version
//! means adding a module here (and a linker for it); plugins built against `@0.1.0` keep
//! using `v0_1_0`.

/// `keyplane:plugin@0.1.0`.
pub mod v0_1_0 {
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
