//! Differentiable decision layers.

pub mod budget;
pub(crate) mod linalg;
pub mod portfolio;
pub mod topk;

pub use budget::{BudgetAllocation, BudgetSolver};
pub use portfolio::Portfolio;
pub use topk::TopK;

/// Invalid construction parameters or input shapes for a decision layer or task generator.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecisionError {
    #[error("{what}: expected {expected} values, got {got}")]
    Shape {
        what: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("invalid parameter {name}: {why}")]
    Param { name: &'static str, why: String },
}

impl DecisionError {
    pub(crate) fn param(name: &'static str, why: impl Into<String>) -> Self {
        DecisionError::Param {
            name,
            why: why.into(),
        }
    }
}

/// Panics with a message naming the layer when a trait-method argument has the wrong length:
/// [`crate::DecisionProblem`] methods cannot return errors, and a wrong length there is a bug
/// in the caller's bookkeeping, not a data condition.
pub(crate) fn check_len(layer: &str, what: &str, got: usize, expected: usize) {
    assert!(
        got == expected,
        "{layer}: {what} has {got} values, expected {expected}"
    );
}
