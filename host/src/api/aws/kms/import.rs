//! `GetParametersForImport` → `get-parameters-for-import`, `ImportKeyMaterial` →
//! `import-key-material`, `DeleteImportedKeyMaterial` → `delete-imported-key-material`. The import token travels as a blob (the bytes of keyplane's token).

use serde::{Deserialize, Serialize};

use super::key_state::Empty;
use super::{epoch, required, KmsAction};
use crate::api::aws::error::KmsError;
use crate::api::aws::ids::{length_of, one_of, served_of, Cx};
use crate::error::{Error, Result};
use crate::ops::rfc3339;
use crate::ops::{
    delete_imported_key_material as delete, get_parameters_for_import as params,
    import_key_material as import,
};
use crate::ops::{Base64, Operation};

/// `AlgorithmSpec` (`WrappingAlgorithm`) of AWS's model, in its order.
const MODEL_WRAPPING_ALGORITHMS: &[&str] = &[
    "RSAES_PKCS1_V1_5",
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
    "SM2PKE",
];

/// The wrapping algorithms keyplane implements: RSA-OAEP, alone or around an AES key wrap
/// (whether the HSM takes the SHA-256 ones is the operation's to say).
const WRAPPING_ALGORITHMS: &[&str] = &[
    "RSAES_OAEP_SHA_1",
    "RSAES_OAEP_SHA_256",
    "RSA_AES_KEY_WRAP_SHA_1",
    "RSA_AES_KEY_WRAP_SHA_256",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImport {
    key_id: Option<String>,
    wrapping_algorithm: Option<String>,
    wrapping_key_spec: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetParametersForImportResponse {
    key_id: String,
    import_token: Base64,
    public_key: Base64,
    parameters_valid_to: Option<i64>,
}

impl KmsAction for GetParametersForImport {
    type Op = params::GetParametersForImport;
    type Response = GetParametersForImportResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let algorithm = required("wrappingAlgorithm", self.wrapping_algorithm)?;
        served_of(
            "wrappingAlgorithm",
            "WrappingAlgorithm",
            &algorithm,
            MODEL_WRAPPING_ALGORITHMS,
            WRAPPING_ALGORITHMS,
        )?;
        let spec = required("wrappingKeySpec", self.wrapping_key_spec)?;
        served_of(
            "wrappingKeySpec",
            "WrappingKeySpec",
            &spec,
            &["RSA_2048", "RSA_3072", "RSA_4096", "SM2"],
            &["RSA_2048", "RSA_3072", "RSA_4096"],
        )?;
        Ok(params::GetParametersForImport {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            wrapping_algorithm: algorithm,
            wrapping_key_spec: spec,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(GetParametersForImportResponse {
            key_id: cx.key_arn(&out.key_id),
            import_token: Base64::new(out.import_token.into_bytes()),
            public_key: out.public_key,
            parameters_valid_to: epoch(&out.parameters_valid_to),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterial {
    key_id: Option<String>,
    import_token: Option<Base64>,
    encrypted_key_material: Option<Base64>,
    valid_to: Option<f64>,
    expiration_model: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImportKeyMaterialResponse {
    key_id: String,
}

impl KmsAction for ImportKeyMaterial {
    type Op = import::ImportKeyMaterial;
    type Response = ImportKeyMaterialResponse;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        let token = required("importToken", self.import_token)?;
        length_of("importToken", token.len(), 1, 6144)?;
        let import_token = String::from_utf8(token.0.to_vec()).map_err(|_| {
            Error::InvalidImportToken(
                "ImportToken is not a token from GetParametersForImport".into(),
            )
        })?;
        let material = required("encryptedKeyMaterial", self.encrypted_key_material)?;
        length_of("encryptedKeyMaterial", material.len(), 1, 6144)?;
        let model = self
            .expiration_model
            .unwrap_or_else(|| "KEY_MATERIAL_EXPIRES".into());
        one_of(
            "expirationModel",
            &model,
            &["KEY_MATERIAL_EXPIRES", "KEY_MATERIAL_DOES_NOT_EXPIRE"],
        )?;
        let valid_to =
            match (model.as_str(), self.valid_to) {
                ("KEY_MATERIAL_EXPIRES", Some(t)) => Some(rfc3339(t as i64)),
                ("KEY_MATERIAL_EXPIRES", None) => {
                    return Err(Error::validation(
                        "ValidTo is required when ExpirationModel is KEY_MATERIAL_EXPIRES",
                    ))
                }
                (_, Some(_)) => return Err(Error::validation(
                    "ValidTo must not be set when ExpirationModel is KEY_MATERIAL_DOES_NOT_EXPIRE",
                )),
                (_, None) => None,
            };
        Ok(import::ImportKeyMaterial {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
            import_token,
            encrypted_key_material: Some(material),
            pkcs12: None,
            password: None,
            valid_to,
            public_key: None,
        })
    }

    fn response(
        out: <Self::Op as Operation>::Output,
        cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(ImportKeyMaterialResponse {
            key_id: cx.key_arn(&out.key_id),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DeleteImportedKeyMaterial {
    key_id: Option<String>,
}

impl KmsAction for DeleteImportedKeyMaterial {
    type Op = delete::DeleteImportedKeyMaterial;
    type Response = Empty;

    fn into_op(self, cx: &Cx) -> Result<Self::Op> {
        Ok(delete::DeleteImportedKeyMaterial {
            key_id: cx.key_id("keyId", &required("keyId", self.key_id)?)?,
        })
    }

    fn response(
        _out: <Self::Op as Operation>::Output,
        _cx: &Cx,
    ) -> std::result::Result<Self::Response, KmsError> {
        Ok(Empty {})
    }
}
