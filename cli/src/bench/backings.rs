//! The backings compared.

use super::{Plan, Result, Step};

pub(crate) fn steps(_plan: &Plan) -> Vec<Step> {
    Vec::new()
}

pub(crate) fn child(_role: &str, _names: &[&str], _param: &str) -> Option<Result<()>> {
    None
}
