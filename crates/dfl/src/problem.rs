//! The shape every TaskMet task shares: instances of rows, a predictor shared across rows, and
//! a decision problem solved from the predictions of a whole instance.

/// Decision instances. Instance `i` has `rows` rows; row `r` has `d` features and `o` targets.
/// The predictor is shared across rows (as in the reference, where one network maps a stock's
/// features to its next-day return): it maps one row's features to that row's targets.
/// `ids[i]` is the instance's index in the full dataset, which is how a [`DecisionProblem`]
/// finds instance-specific data (a portfolio's risk factor) whatever the split.
#[derive(Debug, Clone)]
pub struct Instances {
    pub rows: usize,
    pub d: usize,
    pub o: usize,
    /// `len * rows * d` features, instance-major then row-major.
    pub x: Vec<f32>,
    /// `len * rows * o` targets.
    pub y: Vec<f32>,
    pub ids: Vec<usize>,
}

impl Instances {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Features of instance `i` (`rows * d` values).
    pub fn x_of(&self, i: usize) -> &[f32] {
        let s = self.rows * self.d;
        &self.x[i * s..(i + 1) * s]
    }

    /// Targets of instance `i` (`rows * o` values).
    pub fn y_of(&self, i: usize) -> &[f32] {
        let s = self.rows * self.o;
        &self.y[i * s..(i + 1) * s]
    }

    /// The instances at positions `idx` (positions in `self`, not ids).
    pub fn subset(&self, idx: &[usize]) -> Instances {
        let (sx, sy) = (self.rows * self.d, self.rows * self.o);
        let mut x = Vec::with_capacity(idx.len() * sx);
        let mut y = Vec::with_capacity(idx.len() * sy);
        for &i in idx {
            x.extend_from_slice(self.x_of(i));
            y.extend_from_slice(self.y_of(i));
        }
        Instances {
            rows: self.rows,
            d: self.d,
            o: self.o,
            x,
            y,
            ids: idx.iter().map(|&i| self.ids[i]).collect(),
        }
    }

    /// Contiguous positions `[start, end)`.
    pub fn range(&self, start: usize, end: usize) -> Instances {
        self.subset(&(start..end).collect::<Vec<_>>())
    }
}

/// A decision problem solved from the predictions of one instance (`rows * o` values, in the
/// row-major order of [`Instances::y_of`]). Quality is the objective the decision maker
/// maximises, evaluated under the true targets; the task loss is its negative.
pub trait DecisionProblem: Send + Sync {
    fn name(&self) -> &'static str;

    /// The optimal decision `z*(ŷ)` for instance `id` (an [`Instances::ids`] value).
    fn decide(&self, id: usize, yhat: &[f64]) -> Vec<f64>;

    /// The objective of decision `z` when the targets turn out to be `y`.
    fn quality(&self, id: usize, z: &[f64], y: &[f64]) -> f64;

    /// `d quality(decide(ŷ), y) / dŷ`: what DFL trains on and TaskMet's outer step needs.
    fn quality_grad(&self, id: usize, yhat: &[f64], y: &[f64]) -> Vec<f64>;
}
