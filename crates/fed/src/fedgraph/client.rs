//! A federated client holding one subgraph: `fit` loads the global model, runs `local_steps`
//! full-batch SGD steps on its training nodes and returns the new parameters, weighted by its
//! number of training nodes (FedAvg's `n_k`). A task config holding `prox_mu` makes it a
//! FedProx client (Li et al., MLSys 2020): every step also descends μ/2 ‖w − w_global‖².
//! Federated HPO's tasks also carry the trial's `dropout` and `seed_round`, and `val_losses`
//! asks for the validation loss of the global and the trained model (FedEx's signal); the
//! privacy study's carry `update_norm` (report the update's norm before clipping) and
//! `dp_clip` / `dp_sigma` (clip and noise the update here, before it is sent; `dp_secret`:
//! with noise from this process's own entropy); see [`super::hpo::fit_config`].

use ferrolab_core::burn::optim::ModuleOptimizer;
use ferrolab_graph::zoo::train::{NodeTask, OptimKind};
use ferrolab_graph::zoo::{FlatParam, GnnModel, ZooConfig, load_params, model_params};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::hpo::Dp;
use super::privacy::{dp_update, noise_seed, noise_seed_secret};
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

/// FedProx's local training: `steps` SGD steps on loss + μ/2 ‖w − w_global‖². The
/// optimiser steps on the task loss (with its weight decay), then the proximal gradient
/// μ (w − w_global), taken at the same pre-step weights, is subtracted times `lr`: for plain
/// SGD this is exactly one step on the sum. A zero correction is not applied, so μ = 0
/// leaves every bit as FedAvg's training would.
#[allow(clippy::too_many_arguments)]
pub fn prox_steps(
    task: &NodeTask,
    mut model: GnnModel,
    cfg: &ZooConfig,
    optim: &mut ModuleOptimizer,
    lr: f64,
    steps: usize,
    mu: f64,
    global: &[FlatParam],
    rng: &mut StdRng,
) -> Result<(GnnModel, f64), ferrolab_graph::GraphError> {
    let mut total = 0f64;
    let scale = (lr * mu) as f32;
    for _ in 0..steps {
        let before = model_params(&model);
        let (m, loss) = task.train_steps(model, cfg, optim, lr, 1, rng);
        total += loss;
        let mut after = model_params(&m);
        for ((a, b), g) in after.iter_mut().zip(&before).zip(global) {
            for ((x, &w), &w0) in a.data.iter_mut().zip(&b.data).zip(&g.data) {
                let c = scale * (w - w0);
                if c != 0.0 {
                    *x -= c;
                }
            }
        }
        model = load_params(m, &after)?;
    }
    Ok((model, total / steps.max(1) as f64))
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
        // Federated HPO runs many trials through one fabric, whose round counts them all:
        // `seed_round` is the trial's own round, which the dropout stream follows in-process.
        let seed_round = match ins.config.get("seed_round") {
            None => ins.round,
            Some(v) => v.as_u64().ok_or_else(|| {
                ClientError(format!(
                    "task config `seed_round` = {v}: not a round number"
                ))
            })?,
        };
        let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(
            self.seed,
            &format!("round{seed_round}"),
        ));
        let cfg = match ins.config.get("dropout") {
            None => self.cfg.clone(),
            Some(v) => match v.as_f64() {
                Some(d) if (0.0..1.0).contains(&d) => ZooConfig {
                    dropout: d,
                    ..self.cfg.clone()
                },
                _ => {
                    return Err(ClientError(format!(
                        "task config `dropout` = {v}: must be a number in [0, 1)"
                    )));
                }
            },
        };
        // The privacy study's local DP: this client clips and noises its own update.
        let dp = match (ins.config.get("dp_clip"), ins.config.get("dp_sigma")) {
            (None, None) => None,
            (Some(c), Some(s)) => match (c.as_f64(), s.as_f64()) {
                (Some(clip), Some(sigma))
                    if clip > 0.0 && clip.is_finite() && sigma > 0.0 && sigma.is_finite() =>
                {
                    let secret =
                        ins.config.get("dp_secret") == Some(&serde_json::Value::Bool(true));
                    Some(Dp {
                        clip,
                        sigma,
                        secret,
                    })
                }
                _ => {
                    return Err(ClientError(format!(
                        "task config `dp_clip` = {c}, `dp_sigma` = {s}: both must be numbers > 0"
                    )));
                }
            },
            _ => {
                return Err(ClientError(
                    "task config has one of `dp_clip` and `dp_sigma` without the other".into(),
                ));
            }
        };
        let update_norm = ins.config.get("update_norm") == Some(&serde_json::Value::Bool(true));
        let template = self
            .model
            .take()
            .ok_or_else(|| ClientError("client model lost by an earlier failure".into()))?;
        let model = load_params(template, &from_params(&ins.params))
            .map_err(|e| ClientError(format!("global model: {e}")))?;
        let val_losses = ins.config.get("val_losses") == Some(&serde_json::Value::Bool(true));
        let before = val_losses.then(|| self.task.evaluate(&model).val_loss);
        let mut optim = OptimKind::Sgd {
            weight_decay: self.weight_decay,
        }
        .init();
        let prox_mu = ins
            .config
            .get("prox_mu")
            .and_then(serde_json::Value::as_f64);
        let (model, loss) = match prox_mu {
            None => self
                .task
                .train_steps(model, &cfg, &mut optim, lr, steps, &mut rng),
            Some(mu) => {
                let global = from_params(&ins.params);
                prox_steps(
                    &self.task, model, &cfg, &mut optim, lr, steps, mu, &global, &mut rng,
                )
                .map_err(|e| ClientError(format!("FedProx step: {e}")))?
            }
        };
        let mut params = to_params(&model_params(&model));
        let mut metrics = Metrics::new();
        if let Some(before) = before {
            metrics.insert("val_loss_before".into(), before);
            metrics.insert("val_loss_after".into(), self.task.evaluate(&model).val_loss);
        }
        // Kept before anything below can fail: a failed task must not cost the next ones.
        self.model = Some(model);
        if update_norm || dp.is_some() {
            let noise = match dp {
                Some(d) if d.secret => noise_seed_secret(),
                _ => noise_seed(self.seed, dp, seed_round as usize),
            };
            let (sent, norm, clipped) = dp_update(&ins.params, params, dp, noise)
                .map_err(|e| ClientError(format!("DP update: {e}")))?;
            params = sent;
            metrics.insert("update_norm".into(), norm);
            metrics.insert("clipped".into(), f64::from(u8::from(clipped)));
        }
        metrics.insert("train_loss".into(), loss);
        // No fabric carries non-finite values (NATS refuses them on arrival): a diverged
        // update goes as its flag, which a search's server reads as the NaN update it is.
        if params.check_finite().is_err() {
            metrics.insert("diverged".into(), 1.0);
            params = Params::new();
        }
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
