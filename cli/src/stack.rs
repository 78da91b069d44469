//! Reading faas-cli stack files (`stack.yml`) from disk; the format itself is
//! `courier_core::stack` (shared with the dashboard's deploy form).

use std::path::Path;

use anyhow::{Context, Result};
use courier_core::FunctionDeployment;

/// Reads and parses a stack file.
pub(crate) fn load(path: &Path) -> Result<Vec<FunctionDeployment>> {
    let yaml = std::fs::read_to_string(path)
        .with_context(|| format!("reading stack file {}", path.display()))?;
    courier_core::stack::parse(&yaml).with_context(|| format!("in {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_file_is_read_and_parsed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.yml");
        std::fs::write(
            &path,
            "functions:\n  echo:\n    environment:\n      fprocess: cat\n",
        )
        .unwrap();
        let deployments = load(&path).unwrap();
        assert_eq!(deployments[0].service, "echo");
        assert_eq!(deployments[0].env_process, "cat");
    }

    #[test]
    fn a_function_without_a_command_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stack.yml");
        std::fs::write(&path, "functions:\n  a:\n    image: x\n").unwrap();
        let err = load(&path).unwrap_err();
        let shown = format!("{err:#}");
        assert!(shown.contains("fprocess"), "{shown}");
        assert!(shown.contains("stack.yml"), "{shown}");
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let err = load(Path::new("/nonexistent/stack.yml")).unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/stack.yml"));
    }
}
