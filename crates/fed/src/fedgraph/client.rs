//! A federated client holding one subgraph: `fit` loads the global model, runs `local_steps`
//! full-batch SGD steps on its training nodes and returns the new parameters, weighted by its
//! number of training nodes (FedAvg's `n_k`).

use ferrolab_graph::zoo::train::{NodeTask, OptimKind};
use ferrolab_graph::zoo::{FlatParam, GnnModel, ZooConfig, load_params, model_params};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::client::{Client, ClientCtx, ClientError, EvaluateRes, FitIns, FitRes};
use crate::fabric::{Config, Metrics};
use crate::params::Params;

/// Model parameters in the wire form (names `p000`… sort in visiting order).
pub fn to_params(flat: &[FlatParam]) -> Params {
    let mut p = Params::new();
    for f in flat {
        // Shapes come from the model itself, so they always match their data.
        let _ = p.insert(&f.name, f.shape.clone(), f.data.clone());
    }
    p
}

/// The wire form back as the model's parameter list.
pub fn from_params(p: &Params) -> Vec<FlatParam> {
    p.iter()
        .map(|(name, t)| FlatParam {
            name: name.clone(),
            shape: t.shape.clone(),
            data: t.data.clone(),
        })
        .collect()
}

/// A number from a task's config.
pub fn config_f64(c: &Config, key: &str) -> Result<f64, ClientError> {
    c.get(key)
        .and_then(serde_json::Value::as_f64)
        .ok_or_else(|| ClientError(format!("task config lacks a numeric `{key}`")))
}

/// One client of a node-classification federation.
pub struct GraphClient {
    task: NodeTask,
    cfg: ZooConfig,
    model: Option<GnnModel>,
    weight_decay: f64,
    seed: u64,
}

impl std::fmt::Debug for GraphClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GraphClient({} nodes, {} training)",
            self.task.graph.num_nodes,
            self.task.num_train()
        )
    }
}

impl GraphClient {
    /// `model` fixes the architecture (its values are replaced by every task's parameters);
    /// `seed` drives the dropout masks, combined with the round.
    pub fn new(
        task: NodeTask,
        cfg: ZooConfig,
        model: GnnModel,
        weight_decay: f64,
        seed: u64,
    ) -> Self {
        GraphClient {
            task,
            cfg,
            model: Some(model),
            weight_decay,
            seed,
        }
    }
}

impl Client for GraphClient {
    fn fit(&mut self, ins: &FitIns, _ctx: &ClientCtx<'_>) -> Result<FitRes, ClientError> {
        let lr = config_f64(&ins.config, "lr")?;
        let steps = config_f64(&ins.config, "local_steps")? as usize;
        let template = self
            .model
            .take()
            .ok_or_else(|| ClientError("client model lost by an earlier failure".into()))?;
        let model = load_params(template, &from_params(&ins.params))
            .map_err(|e| ClientError(format!("global model: {e}")))?;
        let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(
            self.seed,
            &format!("round{}", ins.round),
        ));
        let mut optim = OptimKind::Sgd {
            weight_decay: self.weight_decay,
        }
        .init();
        let (model, loss) = self
            .task
            .train_steps(model, &self.cfg, &mut optim, lr, steps, &mut rng);
        let params = to_params(&model_params(&model));
        self.model = Some(model);
        let mut metrics = Metrics::new();
        metrics.insert("train_loss".into(), loss);
        Ok(FitRes {
            params,
            n_examples: self.task.num_train() as u64,
            metrics,
        })
    }

    fn evaluate(&mut self, ins: &FitIns, _ctx: &ClientCtx<'_>) -> Result<EvaluateRes, ClientError> {
        let template = self
            .model
            .take()
            .ok_or_else(|| ClientError("client model lost by an earlier failure".into()))?;
        let model = load_params(template, &from_params(&ins.params))
            .map_err(|e| ClientError(format!("global model: {e}")))?;
        let e = self.task.evaluate(&model);
        self.model = Some(model);
        let mut metrics = Metrics::new();
        metrics.insert("val_accuracy".into(), e.val_accuracy);
        metrics.insert("test_accuracy".into(), e.test_accuracy);
        Ok(EvaluateRes {
            loss: e.val_loss,
            n_examples: self.task.split.val.len() as u64,
            metrics,
        })
    }
}
