//! Learning-rate schedules, evaluated per epoch: constant, step decay, cosine annealing and
//! polynomial ("poly", as used by segmentation papers), each with an optional linear warm-up.

use crate::config::{Validate, check};
use crate::error::ConfigError;
use serde::{Deserialize, Serialize};

/// A learning-rate schedule; `total` is the number of epochs it spans.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The base rate throughout.
    #[default]
    Constant,
    /// Multiply by `gamma` every `step_size` epochs.
    Step {
        /// Epochs between decays.
        step_size: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// Cosine annealing from the base rate to `min_lr` over `total` epochs.
    Cosine {
        /// Epochs of the half cosine period.
        total: usize,
        /// Final rate.
        min_lr: f64,
    },
    /// `base * (1 - epoch/total)^power`.
    Poly {
        /// Epochs until the rate reaches zero.
        total: usize,
        /// Exponent (0.9 in most segmentation papers).
        power: f64,
    },
}

impl LrSchedule {
    /// The learning rate at 0-based `epoch`.
    pub fn lr(&self, base: f64, epoch: usize) -> f64 {
        match *self {
            LrSchedule::Constant => base,
            LrSchedule::Step { step_size, gamma } => {
                base * gamma.powi((epoch / step_size.max(1)) as i32)
            }
            LrSchedule::Cosine { total, min_lr } => {
                let t = (epoch.min(total) as f64) / (total.max(1) as f64);
                min_lr + 0.5 * (base - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
            }
            LrSchedule::Poly { total, power } => {
                let t = (epoch.min(total) as f64) / (total.max(1) as f64);
                base * (1.0 - t).powf(power)
            }
        }
    }
}

impl Validate for LrSchedule {
    fn validate(&self) -> Result<(), ConfigError> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::Step { step_size, gamma } => {
                check(
                    step_size > 0,
                    "schedule.step_size",
                    step_size,
                    "must be > 0",
                )?;
                check(
                    gamma > 0.0 && gamma <= 1.0,
                    "schedule.gamma",
                    gamma,
                    "must be in (0, 1]",
                )
            }
            LrSchedule::Cosine { total, min_lr } => {
                check(total > 0, "schedule.total", total, "must be > 0")?;
                check(min_lr >= 0.0, "schedule.min_lr", min_lr, "must be >= 0")
            }
            LrSchedule::Poly { total, power } => {
                check(total > 0, "schedule.total", total, "must be > 0")?;
                check(power > 0.0, "schedule.power", power, "must be > 0")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn hand_computed_values() {
        assert!(close(LrSchedule::Constant.lr(0.1, 50), 0.1));
        let s = LrSchedule::Step {
            step_size: 10,
            gamma: 0.5,
        };
        assert!(close(s.lr(1.0, 9), 1.0));
        assert!(close(s.lr(1.0, 10), 0.5));
        assert!(close(s.lr(1.0, 25), 0.25));
        let c = LrSchedule::Cosine {
            total: 10,
            min_lr: 0.0,
        };
        assert!(close(c.lr(1.0, 0), 1.0));
        assert!(close(c.lr(1.0, 5), 0.5));
        assert!(close(c.lr(1.0, 10), 0.0));
        assert!(close(c.lr(1.0, 20), 0.0));
        let p = LrSchedule::Poly {
            total: 4,
            power: 2.0,
        };
        assert!(close(p.lr(1.0, 2), 0.25));
        assert!(close(p.lr(1.0, 4), 0.0));
    }

    #[test]
    fn invalid_parameters_are_named() {
        let e = LrSchedule::Step {
            step_size: 0,
            gamma: 0.5,
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("schedule.step_size"));
    }
}
