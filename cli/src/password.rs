//! The admin password: from `COURIER_BASIC_AUTH_PASSWORD`, else from
//! `<data-dir>/secrets/basic-auth-password`, generated there (mode 0600) on first start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Letters and digits only, so the password can sit in a URL's user-info.
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const LENGTH: usize = 32;

/// Where the password file lives in a data directory.
pub(crate) fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("secrets").join("basic-auth-password")
}

/// Reads the password file, if there is one.
pub(crate) fn read(data_dir: &Path) -> Result<Option<String>> {
    let file = path(data_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => Ok(Some(text.trim().to_owned()).filter(|p| !p.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", file.display())),
    }
}

/// The password given (flag or environment) unless empty, else the one stored in `data_dir`
/// (for the processes that talk to a gateway: clients, the standalone worker and triggers).
pub(crate) fn given_or_read(given: Option<String>, data_dir: &Path) -> Result<Option<String>> {
    match given.filter(|p| !p.is_empty()) {
        Some(p) => Ok(Some(p)),
        None => read(data_dir),
    }
}

/// The stored password, or a new random one written with mode 0600.
pub(crate) fn load_or_generate(data_dir: &Path) -> Result<(String, bool)> {
    if let Some(existing) = read(data_dir)? {
        return Ok((existing, false));
    }
    let password = generate()?;
    let file = path(data_dir);
    let dir = file.parent().expect("has a parent");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("securing {}", dir.display()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&file)
        .with_context(|| format!("creating {}", file.display()))?;
    f.write_all(password.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", file.display()))?;
    Ok((password, true))
}

/// A random password from [`ALPHABET`], without modulo bias.
fn generate() -> Result<String> {
    let mut out = String::with_capacity(LENGTH);
    let limit = 256 - (256 % ALPHABET.len());
    while out.len() < LENGTH {
        let mut buf = [0u8; 64];
        getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
        for b in buf {
            if (b as usize) < limit && out.len() < LENGTH {
                out.push(ALPHABET[b as usize % ALPHABET.len()] as char);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_password_is_alphanumeric_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let (first, created) = load_or_generate(dir.path()).unwrap();
        assert!(created);
        assert_eq!(first.len(), LENGTH);
        assert!(first.chars().all(|c| c.is_ascii_alphanumeric()));
        let mode = std::fs::metadata(path(dir.path()))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (second, created) = load_or_generate(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(first, second);
    }

    #[test]
    fn passwords_differ() {
        assert_ne!(generate().unwrap(), generate().unwrap());
    }
}
