//! `keyplane policy fmt`: canonical formatting of the `*.cedar` files of a policy directory
//! with cedar-policy's own formatter (`cedar-policy-formatter`, 80 columns, 2-space indent:
//! what `cedar format` produces). The schema file is not reformatted.

use std::path::{Path, PathBuf};

use cedar_policy_formatter::{policies_str_to_pretty, Config};

/// Why formatting failed.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot format: {message}")]
    Parse { path: PathBuf, message: String },
}

/// The canonical form of one policy file's text.
pub fn canonical(text: &str) -> Result<String, String> {
    policies_str_to_pretty(text, &Config::default()).map_err(|e| format!("{e:?}"))
}

fn cedar_files(dir: &Path) -> Result<Vec<PathBuf>, FormatError> {
    let io = |source| FormatError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.is_file() && path.extension().is_some_and(|e| e == "cedar") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Format every `*.cedar` file in `dir` in place, or with `check` only list those that are
/// not formatted. Returns the files that were (or would be) changed.
pub fn run(dir: &Path, check: bool) -> Result<Vec<PathBuf>, FormatError> {
    let mut changed = Vec::new();
    for path in cedar_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| FormatError::Io {
            path: path.clone(),
            source,
        })?;
        let pretty = canonical(&text).map_err(|message| FormatError::Parse {
            path: path.clone(),
            message,
        })?;
        if pretty != text {
            if !check {
                std::fs::write(&path, &pretty).map_err(|source| FormatError::Io {
                    path: path.clone(),
                    source,
                })?;
            }
            changed.push(path);
        }
    }
    Ok(changed)
}
