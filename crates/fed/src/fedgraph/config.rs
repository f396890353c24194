//! `ferrolab fedgraph` configuration (TOML + `--set`). Defaults are FS-G's node-classification
//! setting for Cora: 5 clients, Louvain split, GCN with hidden 64 and dropout 0.5, SGD with
//! weight decay 5e-4, 400 rounds with early stopping (patience 100), and the learning-rate ×
//! local-steps grid the published table was selected from.

use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check};

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct FedGraphConfig {
        /// The graph, its node split and its division among clients.
        pub data: DataSection = DataSection::default();
        /// The GNN every client trains.
        pub model: ModelSection = ModelSection::default();
        /// The federated algorithm and its schedule.
        pub fed: FedSection = FedSection::default();
        /// Which baselines run beside the algorithm.
        pub baselines: BaselineSection = BaselineSection::default();
        /// FedSage+'s missing-neighbour generator (used when `fed.algo = "fedsage"`).
        pub fedsage: FedSageSection = FedSageSection::default();
        /// What the run does: the FS-G table, federated HPO or the privacy study.
        pub task: super::hpo::TaskSection = Default::default();
        /// Federated hyper-parameter optimisation (`task.mode = "hpo"`).
        pub hpo: super::hpo::HpoSection = Default::default();
        /// Privacy attacks and the DP defence (`task.mode = "privacy"`).
        pub privacy: super::privacy::PrivacySection = Default::default();
        /// The synthetic graph-classification generator (`data.dataset = "graph-families"`).
        pub families: super::families::FamiliesSection = Default::default();
        /// GCFL+'s clustering server (`fed.algo = "gcfl"`).
        pub gcfl: super::gcfl::GcflSection = Default::default();
    }
}

ferrolab_core::config_section! {
    /// Data keys: `data.dataset`, `data.path`, `data.split`, split sizes.
    pub struct DataSection {
        /// `cora` (`graphs/cora_planetoid.npz` under the data folder; ignored when `path` is
        /// set), or `graph-families`: synthetic graph classification (see `families.*`).
        pub dataset: String = "cora".into(), "`cora` or `graph-families`" => |v| v == "cora" || v == "graph-families";
        /// A CSR graph npz in either layout of the data README (gnn-benchmark or Planetoid).
        pub path: Option<String> = None;
        /// A generated node-classification graph instead of a file: `data.synthetic.nodes`,
        /// `.classes`, `.avg_degree`, `.p_in_ratio`, `.features`, `.feature_signal`,
        /// `.feature_noise`, `.seed` (a contextual stochastic block model, as `cluster-gcn`'s;
        /// deterministic by `--seed`). Needs no data folder.
        pub synthetic: Option<ferrolab_graph::config::SyntheticSection> = None;
        /// How nodes are divided among clients: `louvain`, `random` or `dirichlet`.
        pub split: String = "louvain".into(), "`louvain`, `random` or `dirichlet`" => |v| ["louvain", "random", "dirichlet"].contains(&v.as_str());
        /// Louvain slack δ: pieces of at most ⌊N/K⌋−δ nodes, clients of at most ⌊N/K⌋+δ.
        pub delta: usize = 20, "0..=1000000" => |v| *v <= 1_000_000;
        /// Dirichlet concentration α of the label-skew split.
        pub alpha: f64 = 0.5, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Training nodes per class of PyG's random split (all nodes of a smaller class).
        pub train_per_class: usize = 232, "1..=10000000" => |v| (1..=10_000_000).contains(v);
        /// Validation nodes (the rest is the test set).
        pub num_val: usize = 542, "1..=100000000" => |v| (1..=100_000_000).contains(v);
        /// Scale each bag-of-words feature row to sum 1 (PyG's `NormalizeFeatures`). Off by
        /// default: FS-G's citation yaml sets no transform, so its GCN sees raw 0/1 features.
        pub row_normalize: bool = false;
    }
}

ferrolab_core::config_section! {
    /// Model keys: `model.arch`, `model.hidden`, `model.layers`, `model.dropout`, `model.heads`,
    /// `model.init`.
    pub struct ModelSection {
        /// `gcn`, `sage`, `gat`, `gin` or `gpr`.
        pub arch: String = "gcn".into(), "`gcn`, `sage`, `gat`, `gin` or `gpr`" => |v| ["gcn", "sage", "gat", "gin", "gpr"].contains(&v.as_str());
        /// Hidden width (GAT: heads × per-head width).
        pub hidden: usize = 64, "1..=65536" => |v| (1..=65536).contains(v);
        /// Message-passing layers.
        pub layers: usize = 2, "1..=16" => |v| (1..=16).contains(v);
        /// Dropout between layers.
        pub dropout: f64 = 0.5, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// GAT heads (must divide `hidden`).
        pub heads: usize = 8, "1..=64" => |v| (1..=64).contains(v);
        /// GCN/GAT weight initialisation: `fan_in` (U(±1/√fan_in), burn's and PyTorch's
        /// `Linear` default) or `glorot` (PyG's `GCNConv`/`GATConv`, so FS-G's).
        pub init: String = "fan_in".into(), "`fan_in` or `glorot`" => |v| ["fan_in", "glorot"].contains(&v.as_str());
    }
}

ferrolab_core::config_section! {
    /// Federated keys: `fed.algo`, `fed.clients`, `fed.rounds`, the grid, seeds.
    pub struct FedSection {
        /// `fedavg`, `fedprox`, `fedopt` (server Adam), `fedsage` (FedSage+: FedAvg on graphs
        /// mended by a federatedly trained missing-neighbour generator) or `gcfl` (GCFL+,
        /// graph classification on `data.dataset = "graph-families"` only); FedAvg runs
        /// beside any other algorithm as a baseline.
        pub algo: String = "fedavg".into(), "`fedavg`, `fedprox`, `fedopt`, `fedsage` or `gcfl`" => |v| ["fedavg", "fedprox", "fedopt", "fedsage", "gcfl"].contains(&v.as_str());
        /// FedProx's proximal weight μ: local training minimises loss + μ/2 ‖w − w_global‖².
        pub prox_mu: f64 = 0.01, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// FedOpt (FedAdam, Reddi et al. 2021): the server's Adam step size on the averaged
        /// pseudo-gradient `mean(w_client) − w_global`.
        pub server_lr: f64 = 0.01, "in (0, 100]" => |v| *v > 0.0 && *v <= 100.0;
        /// FedOpt: Adam's first-moment decay.
        pub server_beta1: f64 = 0.9, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// FedOpt: Adam's second-moment decay.
        pub server_beta2: f64 = 0.99, "in [0, 1)" => |v| (0.0..1.0).contains(v);
        /// FedOpt: Adam's adaptivity τ (added to √v; Reddi et al.'s default 1e-3).
        pub server_tau: f64 = 1e-3, "> 0, finite" => |v| *v > 0.0 && v.is_finite();
        /// Clients the graph is divided among (all train every round).
        pub clients: usize = 5, "1..=1000" => |v| (1..=1000).contains(v);
        /// Communication rounds (for `local` and `global`: training rounds of `local_steps` steps).
        pub rounds: usize = 400, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Stop after this many rounds without a better validation accuracy (0 = never).
        pub patience: usize = 100, "0..=100000" => |v| *v <= 100_000;
        /// SGD learning rates of the grid.
        pub lrs: Vec<f64> = vec![0.01, 0.05, 0.25], "non-empty, without repeats, each in [1e-9, 100]" => |v: &Vec<f64>| !v.is_empty() && v.iter().all(|x| (1e-9..=100.0).contains(x)) && ferrolab_core::config::distinct(v);
        /// Local steps per round of the grid.
        pub local_steps: Vec<usize> = vec![1, 4, 16], "non-empty, without repeats, each in 1..=10000" => |v: &Vec<usize>| !v.is_empty() && v.iter().all(|x| (1..=10_000).contains(x)) && ferrolab_core::config::distinct(v);
        /// L2 weight decay.
        pub weight_decay: f64 = 5e-4, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Seeds per grid cell (each draws its own node split, client split and initialisation).
        pub seeds: usize = 5, "1..=100" => |v| (1..=100).contains(v);
        /// Which validation figure picks the best round (and drives early stopping):
        /// `val_accuracy`, or `val_loss` (FederatedScope's default
        /// `eval.best_res_update_round_wise_key`, which its citation yaml keeps).
        pub select_by: String = "val_accuracy".into(), "`val_accuracy` or `val_loss`" => |v| ["val_accuracy", "val_loss"].contains(&v.as_str());
        /// `inproc` (clients are threads of this process) or `nats` (each client a
        /// `ferrolab fed client --system fedgraph` process, every message through a NATS
        /// server; FedAvg, FedProx and FedOpt on a node task).
        pub runtime: String = "inproc".into(), "`inproc` or `nats`" => |v| v == "inproc" || v == "nats";
        /// NATS server URL for `fed.runtime = "nats"` (empty: `$FERROLAB_NATS_URL`).
        pub nats_url: String = String::new();
        /// Seconds the server waits for a round's updates; a client silent that long (a
        /// crashed or disconnected client process) misses the round, which goes on with the
        /// others, and its missing update is counted as rejected.
        pub reply_seconds: f64 = 900.0, "in (0, 86400]" => |v| *v > 0.0 && *v <= 86_400.0;
    }
}

ferrolab_core::config_section! {
    /// Baselines: `baselines.local`, `baselines.global`.
    pub struct BaselineSection {
        /// Each client trains alone on its subgraph.
        pub local: bool = true;
        /// One model trained on the whole graph.
        pub global: bool = true;
        /// With `fed.algo = "gcfl"` and `gcfl.variant = "gcfl+"`: plain GCFL (cosine cut of
        /// the updates) on the same data, initialisation and ε, reported as
        /// `baselines.gcfl_plain`.
        pub gcfl_plain: bool = false;
    }
}

ferrolab_core::config_section! {
    /// FedSage+ (Zhang et al., NeurIPS 2021) keys: `fedsage.num_pred`, … Defaults follow
    /// FederatedScope's `fedsageplus` section except `gen_rounds` (200 there; fewer here for
    /// time, see FEDGRAPH.md).
    pub struct FedSageSection {
        /// Generated neighbours per node at most (FS `num_pred`).
        pub num_pred: usize = 5, "1..=64" => |v| (1..=64).contains(v);
        /// Hidden width of the feature generator (FS `gen_hidden`).
        pub gen_hidden: usize = 128, "1..=65536" => |v| (1..=65536).contains(v);
        /// Width of the generator's encoder output.
        pub enc_dim: usize = 64, "1..=65536" => |v| (1..=65536).contains(v);
        /// Share hidden to make the training targets (FS `hide_portion`): of the client's
        /// validation nodes, or of all its nodes (`fedsage.hide_from`).
        pub hide_portion: f64 = 0.5, "in (0, 1)" => |v| *v > 0.0 && *v < 1.0;
        /// Which nodes may be hidden: `val` (FS's `HideGraph`: a share of the client's
        /// validation nodes) or `all` (a share of every node of the subgraph).
        pub hide_from: String = "val".into(), "`val` or `all`" => |v| v == "val" || v == "all";
        /// Which graph the trained generator reads to mend: `impaired` (FS's `GraphMender`:
        /// the graph it was trained on; hidden nodes get no generated neighbours) or `whole`
        /// (the client's whole subgraph).
        pub mend_on: String = "impaired".into(), "`impaired` or `whole`" => |v| v == "impaired" || v == "whole";
        /// Rounds of federated generator training (FS `fedgen_epoch`).
        pub gen_rounds: usize = 50, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Adam learning rate of the generator.
        pub gen_lr: f64 = 0.01, "in (0, 10]" => |v| *v > 0.0 && *v <= 10.0;
        /// Weight α of the cross-client term of FedSage+'s feature loss: the other clients'
        /// gradients on a client's generator, averaged, times α.
        pub cross_weight: f64 = 1.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Weight of the feature-generation loss against the count loss (FS `b`; `a` = 1).
        pub feat_weight: f64 = 1.0, ">= 0, finite" => |v| *v >= 0.0 && v.is_finite();
        /// Standard deviation of the Gaussian noise added to the encoder output during
        /// generator training (FedSage's sampling layer).
        pub noise: f64 = 1.0, "in [0, 1000]" => |v| (0.0..=1000.0).contains(v);
        /// Local pre-training steps of each client's whole generator on its own losses,
        /// before the federated rounds (FS `loc_epoch`: one epoch of its full-batch
        /// trainer). 0: none, the federated rounds start from the initialisation.
        pub pretrain_steps: usize = 0, "0..=100000" => |v| *v <= 100_000;
        /// Freeze the encoder and the count regressor after the pre-training steps, so that
        /// the federated rounds train the feature generator only, as FS's `FedSage_Plus`
        /// does (`requires_grad_(False)` on `encoder_model` and `reg_model`). false: the
        /// federated rounds train all of NeighGen.
        pub freeze: bool = false;
    }
}

impl Validate for FedGraphConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check(
            self.model.arch != "gat" || self.model.hidden.is_multiple_of(self.model.heads),
            "model.heads",
            self.model.heads,
            "must divide model.hidden for GAT",
        )?;
        check(
            self.model.init != "glorot" || ["gcn", "gat"].contains(&self.model.arch.as_str()),
            "model.init",
            &self.model.init,
            "glorot is PyG's initialisation of gcn and gat layers; sage, gin and gpr keep fan_in",
        )?;
        let graph_task = self.data.dataset == "graph-families";
        check(
            graph_task || self.fed.algo != "gcfl",
            "fed.algo",
            &self.fed.algo,
            "GCFL+ is a graph-classification algorithm: it needs data.dataset = \"graph-families\"",
        )?;
        check(
            !graph_task || ["gcfl", "fedavg"].contains(&self.fed.algo.as_str()),
            "fed.algo",
            &self.fed.algo,
            "data.dataset = \"graph-families\" (graph classification) runs `gcfl` or `fedavg`; fedprox, fedopt and fedsage are node-classification algorithms",
        )?;
        check(
            !self.baselines.gcfl_plain || (self.fed.algo == "gcfl" && self.gcfl.variant == "gcfl+"),
            "baselines.gcfl_plain",
            self.baselines.gcfl_plain,
            "runs plain GCFL beside GCFL+: it needs fed.algo = \"gcfl\" with gcfl.variant = \"gcfl+\"",
        )?;
        let wide = self.families.features == "width-by-group";
        check(
            !(graph_task && wide) || self.gcfl.pre,
            "families.features",
            &self.families.features,
            "gives the client groups features of different widths, which only a per-client input layer reads: it needs gcfl.pre = true",
        )?;
        check(
            !(graph_task && wide && self.baselines.global),
            "baselines.global",
            self.baselines.global,
            "one global network cannot read the groups' different feature widths (families.features = \"width-by-group\"): set baselines.global = false",
        )?;
        check(
            !(graph_task && wide) || self.gcfl.share == "gnn",
            "gcfl.share",
            &self.gcfl.share,
            "\"all\" averages the input layers too, which differ in width between the groups (families.features = \"width-by-group\"): use \"gnn\"",
        )?;
        check(
            !(self.data.path.is_some() && self.data.synthetic.is_some()),
            "data.synthetic",
            "set",
            "data.path and data.synthetic are exclusive",
        )?;
        check(
            !graph_task || self.data.synthetic.is_none(),
            "data.synthetic",
            "set",
            "data.dataset = \"graph-families\" generates its own graphs (families.*)",
        )?;
        if let Some(s) = &self.data.synthetic {
            s.csbm(0).validate().map_err(|e| ConfigError::Invalid {
                key: "data.synthetic".into(),
                value: format!("{} nodes", s.nodes),
                reason: e.to_string(),
            })?;
        }
        check(
            !graph_task || self.data.path.is_none(),
            "data.path",
            self.data.path.as_deref().unwrap_or(""),
            "data.dataset = \"graph-families\" is generated, it reads no file",
        )?;
        check(
            self.task.mode == "table"
                || (self.fed.algo == "fedavg" && self.data.dataset != "graph-families"),
            "task.mode",
            &self.task.mode,
            "hpo and privacy tune / attack FedAvg on a node task: they need fed.algo = \"fedavg\" and a node-classification graph",
        )?;
        check(
            self.fed.runtime != "nats"
                || (["table", "hpo", "privacy"].contains(&self.task.mode.as_str())
                    && !graph_task
                    && ["fedavg", "fedprox", "fedopt", "fedsage"]
                        .contains(&self.fed.algo.as_str()))
                || (self.task.mode == "table" && graph_task),
            "fed.runtime",
            &self.fed.runtime,
            "\"nats\" runs the node table (fed.algo = fedavg, fedprox, fedopt or fedsage), hpo, privacy and the graph-families table (gcfl, fedavg)",
        )?;
        if graph_task {
            // The graph-classification table draws its graphs and their splits from
            // `families.*`: the node table's split keys would be accepted and ignored.
            let (d, base) = (&self.data, DataSection::default());
            for (key, unchanged) in [
                ("data.split", d.split == base.split),
                ("data.delta", d.delta == base.delta),
                ("data.alpha", d.alpha == base.alpha),
                (
                    "data.train_per_class",
                    d.train_per_class == base.train_per_class,
                ),
                ("data.num_val", d.num_val == base.num_val),
                ("data.row_normalize", d.row_normalize == base.row_normalize),
            ] {
                check(
                    unchanged,
                    key,
                    "set",
                    "applies to node-classification graphs; data.dataset = \"graph-families\" splits its graphs by families.*",
                )?;
            }
        }
        if self.task.mode != "table" {
            // hpo and privacy draw their rounds, step sizes, local steps and seeds from their
            // own sections and run plain FedAvg in-process: the table's keys would be accepted
            // and ignored.
            let (f, base, mode) = (&self.fed, FedSection::default(), self.task.mode.as_str());
            let own = |k: &str| format!("{mode}.{k}");
            let rounds = if mode == "hpo" {
                own("max_rounds")
            } else {
                own("rounds")
            };
            let lr = if mode == "hpo" { own("lrs") } else { own("lr") };
            for (key, unchanged, instead) in [
                ("fed.rounds", f.rounds == base.rounds, rounds),
                ("fed.lrs", f.lrs == base.lrs, lr),
                (
                    "fed.local_steps",
                    f.local_steps == base.local_steps,
                    own("local_steps"),
                ),
                ("fed.seeds", f.seeds == base.seeds, own("seeds")),
                (
                    "fed.patience",
                    f.patience == base.patience,
                    format!("nothing: {mode} runs every round it is given"),
                ),
                (
                    "fed.select_by",
                    f.select_by == base.select_by,
                    "nothing: the best round is picked by validation accuracy".into(),
                ),
                (
                    "fed.reply_seconds",
                    f.reply_seconds == base.reply_seconds,
                    "nothing: it runs in-process".into(),
                ),
                (
                    "fed.prox_mu",
                    f.prox_mu == base.prox_mu,
                    "nothing: it runs FedAvg".into(),
                ),
            ] {
                check(
                    unchanged,
                    key,
                    "set",
                    &format!("is not read with task.mode = {mode:?}; set {instead}"),
                )?;
            }
            for (key, unchanged) in [
                ("fed.server_lr", f.server_lr == base.server_lr),
                ("fed.server_beta1", f.server_beta1 == base.server_beta1),
                ("fed.server_beta2", f.server_beta2 == base.server_beta2),
                ("fed.server_tau", f.server_tau == base.server_tau),
            ] {
                check(
                    unchanged,
                    key,
                    "set",
                    &format!("is FedOpt's; task.mode = {mode:?} runs FedAvg"),
                )?;
            }
        }
        check(
            !graph_task || self.fed.select_by == "val_accuracy",
            "fed.select_by",
            &self.fed.select_by,
            "the graph-classification table (data.dataset = \"graph-families\") selects by validation accuracy only",
        )?;
        check(
            self.hpo.min_rounds <= self.hpo.max_rounds,
            "hpo.min_rounds",
            self.hpo.min_rounds,
            "must not exceed hpo.max_rounds",
        )?;
        check(
            self.fed.algo != "gcfl"
                || self.gcfl.min_side <= 1
                || self.fed.clients <= crate::fedgraph::gcfl::MAX_EXHAUSTIVE,
            "gcfl.min_side",
            self.gcfl.min_side,
            &format!(
                "> 1 searches every bipartition, which needs fed.clients <= {}",
                crate::fedgraph::gcfl::MAX_EXHAUSTIVE
            ),
        )?;
        // The generator refuses these too (it is a library entry point); here they are found
        // by `--print-config` and before any run folder is made.
        let f = &self.families;
        check(
            f.min_nodes <= f.max_nodes,
            "families.min_nodes",
            f.min_nodes,
            "must not exceed families.max_nodes",
        )?;
        let n = f.graphs_per_client;
        let (n_val, n_test) = crate::fedgraph::families::held_out(f);
        check(
            n_val + n_test < n,
            "families.graphs_per_client",
            n,
            &format!("leaves no training graph after {n_val} validation and {n_test} test graphs"),
        )?;
        Ok(())
    }
}
