//! `POST /ui/api/stack`: a stack file pasted into the dashboard's deploy form, read with
//! `courier_core::stack` (the format `courier up -f` and `courier deploy -f` read) into the
//! function specs it names. Nothing is deployed here: the script sends each spec to
//! `/system/functions` (update, else deploy, as `courier deploy` does), so every check of a
//! deploy stays in one place.
//!
//! A file that does not parse answers 400 with the message and the line (and column) it
//! points at, for the form to show. Knows the stack format's entry point; nothing else.

use axum::Json;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use courier_core::FunctionDeployment;
use http::StatusCode;
use serde::Serialize;

/// A stack file the form could not use.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StackProblem {
    /// What is wrong.
    error: String,
    /// The line it points at (1-based), when known.
    line: Option<u64>,
    /// The column it points at (1-based), when known.
    column: Option<u64>,
}

/// The specs of a stack file, or the problem with it.
pub(crate) fn read(body: &[u8]) -> Result<Vec<FunctionDeployment>, StackProblem> {
    let text = std::str::from_utf8(body).map_err(|e| StackProblem {
        error: format!("the stack file is not UTF-8: {e}"),
        line: None,
        column: None,
    })?;
    courier_core::stack::parse(text).map_err(|e| StackProblem {
        line: e.line(),
        column: e.column(),
        error: e.to_string(),
    })
}

/// `POST /ui/api/stack`.
pub(crate) async fn parse(body: Bytes) -> Response {
    match read(&body) {
        Ok(specs) => Json(specs).into_response(),
        Err(problem) => (StatusCode::BAD_REQUEST, Json(problem)).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_file_becomes_specs() {
        let specs = read(b"functions:\n  hi:\n    fprocess: echo hi\n").unwrap();
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].service, "hi");
    }

    #[test]
    fn a_bad_stack_file_says_which_line() {
        let problem =
            read(b"functions:\n  a:\n    fprocess: cat\n  b:\n    image: x\n").unwrap_err();
        assert_eq!(problem.line, Some(4));
        assert!(problem.error.contains("fprocess"), "{}", problem.error);
        let problem = read(b"functions:\n  a:\n    secrets: 7\n").unwrap_err();
        assert_eq!((problem.line, problem.column), (Some(3), Some(14)));
        assert!(read(&[0xff, 0xfe]).unwrap_err().error.contains("UTF-8"));
    }
}
