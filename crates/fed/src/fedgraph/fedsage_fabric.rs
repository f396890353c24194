//! FedSage+ with each client behind a [`Fabric`](crate::fabric::Fabric): a client thread of
//! the in-process fabric, or a `ferrolab fed client --system fedgraph` process over NATS
//! (`fed.runtime = "nats"`).
//!
//! The generator stage is FedSage+'s relay with real messages. Each [`FedSageClient`] holds
//! its [`GenClient`]: its impaired graph, hidden neighbours, generator and Adam state, and
//! random stream. No graph crosses the wire (the server loads the whole graph only to
//! evaluate the classifier, as FS-G's protocol does); per generator round:
//!
//! 1. a `gen_grads` task to each client `j` with every other client's generator `θ_i`
//!    (`t0003`, …): `j` returns its feature-loss gradient at each (`g0003`, …), having
//!    computed its own-loss gradient at its own generator in client order among them;
//! 2. a `gen_step` task to each client `i` with the gradients the others returned at `θ_i`:
//!    `i` adds them to its own, takes its Adam step and returns its new generator `theta`.
//!
//! A `gen_start` task first (each client's pre-training; it returns its generator) and a
//! `gen_mend` task last (each client mends its own subgraph with its generator and returns
//! its losses and the nodes it added) frame the rounds. The classifier stage is then FedAvg
//! on the mended subgraphs, each client training on its own, the server evaluating on the
//! whole real graph, as in-process ([`super::run::fedsage`]). Every exchange needs every
//! client: a generator round cannot go on without a member's gradients, so a client that does
//! not answer ends the stage with an error naming it.

use std::time::Duration;

use ferrolab_core::backend::train_device;
use ferrolab_graph::zoo::{GnnModel, ZooConfig};
use serde_json::json;

use super::FedGraphError;
use super::client::GraphClient;
use super::config::FedSageSection;
use super::data::{GraphSet, SeedSetup};
use super::fedsage::{GenClient, GenStats, gen_round_bytes};
use crate::client::{Client, ClientCtx, ClientError, EvaluateRes, FitIns, FitRes};
use crate::fabric::{ClientId, Config, Fabric, FabricError, Metrics, Reply, Task, TaskKind};
use crate::params::Params;

/// The name of client `i`'s generator in a `gen_grads` task.
fn theta_name(i: usize) -> String {
    format!("t{i:04}")
}

/// The name of a gradient at client `i`'s generator (in a `gen_grads` reply) or from
/// client `j` (in a `gen_step` task).
fn grad_name(i: usize) -> String {
    format!("g{i:04}")
}

/// One FedSage+ client: its generator side until its subgraph is mended, then the FedAvg
/// classifier client of the mended subgraph.
pub struct FedSageClient<'a> {
    g: &'a GraphSet,
    setup: &'a SeedSetup,
    c: usize,
    gen_seed: u64,
    generator: GenClient,
    classifier: Option<GraphClient>,
    zoo: ZooConfig,
    model: GnnModel,
    weight_decay: f64,
    client_seed: u64,
}

impl std::fmt::Debug for FedSageClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FedSageClient({}, {})",
            self.c,
            if self.classifier.is_some() {
                "mended"
            } else {
                "training its generator"
            }
        )
    }
}

impl<'a> FedSageClient<'a> {
    /// Client `c` of the seed's `setup`: its generator from `gen_seed` (the run seed's
    /// `fedsage` stream), then a classifier starting from `model` with `client_seed`'s
    /// dropout streams, as [`super::run::fedsage`] builds it.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        g: &'a GraphSet,
        setup: &'a SeedSetup,
        c: usize,
        fs: &FedSageSection,
        gen_seed: u64,
        zoo: ZooConfig,
        model: GnnModel,
        weight_decay: f64,
        client_seed: u64,
    ) -> Result<Self, FedGraphError> {
        let generator = GenClient::new(g, setup, c, fs, zoo.dropout, gen_seed, &train_device())?;
        Ok(FedSageClient {
            g,
            setup,
            c,
            gen_seed,
            generator,
            classifier: None,
            zoo,
            model,
            weight_decay,
            client_seed,
        })
    }

    fn stage(&mut self, stage: &str, ins: &FitIns) -> Result<FitRes, FedGraphError> {
        let mut metrics = Metrics::new();
        let params = match stage {
            "gen_start" => {
                self.generator.pretrain()?;
                Params::flat("theta", self.generator.theta().to_vec())
            }
            "gen_grads" => {
                let others = self.peers(&ins.params, 't', stage)?;
                let grads = self.generator.round_grads(&others)?;
                let mut p = Params::new();
                for ((i, _), gr) in others.iter().zip(grads) {
                    let n = gr.len();
                    p.insert(&grad_name(*i), vec![n], gr)
                        .map_err(|e| FedGraphError::Usage(e.to_string()))?;
                }
                p
            }
            "gen_step" => {
                let cross: Vec<&[f32]> = self
                    .peers(&ins.params, 'g', stage)?
                    .into_iter()
                    .map(|c| c.1)
                    .collect();
                self.generator.step(&cross)?;
                Params::flat("theta", self.generator.theta().to_vec())
            }
            "gen_mend" => {
                let dev = train_device();
                let (m, count, feat) =
                    self.generator
                        .finish(self.g, self.setup, self.gen_seed, &dev)?;
                metrics.insert("count_loss".into(), count);
                metrics.insert("feat_loss".into(), feat);
                metrics.insert("added".into(), m.added as f64);
                self.classifier = Some(GraphClient::new(
                    m.task(self.g.classes, &dev)?,
                    self.zoo.clone(),
                    self.model.clone(),
                    self.weight_decay,
                    self.client_seed,
                ));
                Params::new()
            }
            other => {
                return Err(FedGraphError::Usage(format!(
                    "task config `stage` = {other:?}: not a FedSage+ stage (gen_start, gen_grads, gen_step, gen_mend)"
                )));
            }
        };
        Ok(FitRes {
            params,
            n_examples: 0,
            metrics,
        })
    }

    /// A stage task's tensors, each another client's (`<tag><id>`: a generator `t…` or a
    /// gradient `g…`), in client order whatever the names' sorting: the order fixes the random
    /// stream's use and the sum's.
    fn peers<'p>(
        &self,
        params: &'p Params,
        tag: char,
        stage: &str,
    ) -> Result<Vec<(usize, &'p [f32])>, FedGraphError> {
        let mut out = params
            .iter()
            .map(|(name, t)| {
                let i = name
                    .strip_prefix(tag)
                    .and_then(|d| d.parse::<usize>().ok())
                    .filter(|&i| i != self.c)
                    .ok_or_else(|| {
                        FedGraphError::Usage(format!(
                            "{stage} task tensor `{name}`: not another client's"
                        ))
                    })?;
                Ok((i, t.data.as_slice()))
            })
            .collect::<Result<Vec<_>, FedGraphError>>()?;
        out.sort_by_key(|p| p.0);
        Ok(out)
    }

    fn classifier(&mut self) -> Result<&mut GraphClient, ClientError> {
        self.classifier.as_mut().ok_or_else(|| {
            ClientError("a classifier task before this client's subgraph was mended".into())
        })
    }
}

impl Client for FedSageClient<'_> {
    fn fit(&mut self, ins: &FitIns, ctx: &ClientCtx<'_>) -> Result<FitRes, ClientError> {
        match ins.config.get("stage") {
            None => self.classifier()?.fit(ins, ctx),
            Some(v) => {
                let stage = v.as_str().unwrap_or_default().to_string();
                self.stage(&stage, ins)
                    .map_err(|e| ClientError(format!("FedSage+ {stage}: {e}")))
            }
        }
    }

    fn evaluate(&mut self, ins: &FitIns, ctx: &ClientCtx<'_>) -> Result<EvaluateRes, ClientError> {
        self.classifier()?.evaluate(ins, ctx)
    }
}

/// The server's side of FedSage+'s generator stage over `fabric` with clients `0..k`
/// (replies awaited `deadline`): `theta_len` parameters per generator, `crosses` when
/// generators are relayed (more than one client, `fedsage.cross_weight` > 0). Returns what
/// the stage did and the fabric rounds it used (the classifier stage's `round_offset`).
pub fn gen_stage_on(
    fabric: &dyn Fabric,
    k: usize,
    fs: &FedSageSection,
    theta_len: usize,
    crosses: bool,
    deadline: Duration,
) -> Result<(GenStats, u64), FedGraphError> {
    let ids: Vec<ClientId> = (0..k as ClientId).collect();
    let mut round = 0u64;
    let mut exchange = |stage: &str,
                        params: &dyn Fn(usize) -> Params,
                        validate: &(dyn Fn(&Reply) -> Result<(), String> + Sync)|
     -> Result<Vec<Reply>, FedGraphError> {
        round += 1;
        let mut config = Config::new();
        config.insert("stage".into(), json!(stage));
        for &c in &ids {
            fabric.send_task_owned(
                c,
                Task {
                    round,
                    kind: TaskKind::Fit,
                    config: config.clone(),
                    params: params(c as usize),
                },
            )?;
        }
        let got = fabric.collect_replies(round, TaskKind::Fit, &ids, deadline, validate)?;
        if !got.failures.is_empty() {
            return Err(FedGraphError::Fabric(FabricError::Disconnected(format!(
                "FedSage+ generator stage ({stage}, fabric round {round}) needs every client: {}",
                got.failures
                    .iter()
                    .map(|f| format!("client {}: {}", f.client, f.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            ))));
        }
        Ok(got.replies)
    };
    let theta_ok = |rep: &Reply| match rep.params.get("theta") {
        Some(t) if t.data.len() == theta_len && rep.params.len() == 1 => Ok(()),
        _ => Err(format!(
            "reply is not one generator of {theta_len} parameters"
        )),
    };
    let theta_of = |reps: Vec<Reply>| -> Vec<Vec<f32>> {
        reps.into_iter()
            .map(|mut r| r.params.remove("theta").map(|t| t.data).unwrap_or_default())
            .collect()
    };
    let mut thetas = theta_of(exchange("gen_start", &|_| Params::new(), &theta_ok)?);
    let mut stats = GenStats::default();
    for _ in 0..fs.gen_rounds {
        let to_grads = |j: usize| {
            let mut p = Params::new();
            for (i, t) in thetas
                .iter()
                .enumerate()
                .filter(|&(i, _)| crosses && i != j)
            {
                // Lengths were checked on arrival.
                let _ = p.insert(&theta_name(i), vec![t.len()], t.clone());
            }
            p
        };
        let grads_ok = |rep: &Reply| {
            let want = if crosses { k - 1 } else { 0 };
            let j = rep.id.client as usize;
            let right = rep.params.len() == want
                && (0..k).filter(|&i| crosses && i != j).all(|i| {
                    rep.params
                        .get(&grad_name(i))
                        .is_some_and(|t| t.data.len() == theta_len)
                });
            if right {
                Ok(())
            } else {
                Err(format!(
                    "reply is not {want} gradients of {theta_len} values, one per other client"
                ))
            }
        };
        let mut grads = exchange("gen_grads", &to_grads, &grads_ok)?;
        if crosses {
            stats.server_bytes += gen_round_bytes(k, theta_len);
        }
        // Client i's step task: client j's gradient at θ_i for every j ≠ i, by j.
        let mut steps: Vec<Params> = (0..k).map(|_| Params::new()).collect();
        for (j, rep) in grads.iter_mut().enumerate() {
            for (i, step) in steps.iter_mut().enumerate().filter(|&(i, _)| i != j) {
                if let Some(t) = rep.params.remove(&grad_name(i)) {
                    let _ = step.insert(&grad_name(j), vec![t.data.len()], t.data);
                }
            }
        }
        let steps = std::sync::Mutex::new(steps);
        let take = |i: usize| {
            steps
                .lock()
                .map(|mut s| std::mem::take(&mut s[i]))
                .unwrap_or_default()
        };
        thetas = theta_of(exchange("gen_step", &take, &theta_ok)?);
    }
    let mend_ok = |rep: &Reply| {
        if ["count_loss", "feat_loss", "added"]
            .iter()
            .all(|k| rep.metrics.contains_key(*k))
        {
            Ok(())
        } else {
            Err("reply lacks count_loss, feat_loss or added".to_string())
        }
    };
    for rep in exchange("gen_mend", &|_| Params::new(), &mend_ok)? {
        let m = |key: &str| rep.metrics.get(key).copied().unwrap_or(f64::NAN);
        stats.count_loss.push(m("count_loss"));
        stats.feat_loss.push(m("feat_loss"));
        stats.added.push(m("added") as usize);
    }
    Ok((stats, round))
}

/// FedSage+ as the server of `k` clients behind `fabric` (served elsewhere,
/// [`FedSageClient`]s): one generator stage, then each of `cells` (a seed's grid cells)
/// trained by FedAvg in turn through the same clients (their mended subgraphs kept), each from
/// the same initial model, so every cell's run is bit for bit the in-process
/// [`mend_clients`](super::fedsage::mend_clients) and [`fedsage`](super::run::fedsage) of that
/// cell. Each cell gets `s.rounds` fabric rounds of its own. Also the generator stage's
/// seconds; the clients are not shut down.
#[allow(clippy::too_many_arguments)]
pub fn fedsage_cells_on(
    fabric: &dyn Fabric,
    g: &GraphSet,
    setup: &SeedSetup,
    fs: &FedSageSection,
    zoo: &ZooConfig,
    cells: &[super::run::Schedule],
    seed: u64,
    algo: &super::run::NodeAlgo,
) -> Result<(Vec<super::run::RunResult>, GenStats, f64), FedGraphError> {
    let k = setup.clients.num_clients();
    let t0 = std::time::Instant::now();
    let theta_len = super::fedsage::gen_len(g.features.num_features(), fs)?;
    let crosses = k > 1 && fs.cross_weight > 0.0;
    let deadline = algo.reply_timeout.unwrap_or(Duration::from_secs(900));
    let (stats, used) = gen_stage_on(fabric, k, fs, theta_len, crosses, deadline)?;
    let gen_secs = t0.elapsed().as_secs_f64();
    let mut offset = used;
    let mut runs = Vec::with_capacity(cells.len());
    for s in cells {
        let classifier = super::run::NodeAlgo {
            round_offset: offset,
            ..*algo
        };
        runs.push(super::run::server_on(
            fabric,
            k,
            g,
            setup,
            zoo,
            s,
            seed,
            &classifier,
        )?);
        offset += s.rounds as u64;
    }
    Ok((runs, stats, gen_secs))
}

/// The seed FedSage+'s generator stage of run seed `seed` draws from (as the table's).
pub fn gen_seed(seed: u64) -> u64 {
    ferrolab_core::seed::derive(seed, "fedsage")
}
