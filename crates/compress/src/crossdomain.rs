//! Cross-domain members of the ground truth: SECNN on MR (`ferrolab-text`) and the GCN on Cora
//! (`ferrolab-graph`), one seed each, small sizes.
//!
//! Neither model exposes its layers by name, so [`Flat`] sees any burn module through its
//! float parameters in visiting order: every rank-2 parameter (burn's `[in, out]` layout of a
//! linear layer, SECNN's stacked filter bank `[E, F·Σk]`, the word vectors `[vocab, E]`) is
//! one layer, its columns the output channels. Biases and other rank-1 parameters stay as
//! trained. The operators then act on these views exactly as on the image zoo.
//!
//! There is no activation cache here: a probe reruns the whole forward, which is cheap for
//! these models (one sparse propagation on Cora's 2,708 nodes; 2,000 MR sentences through a
//! narrow SECNN).

use crate::criteria::{Subject, logit_distance};
use crate::ops::LayerWeights;
use crate::zoo::LayerParams;
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::nn::loss::CrossEntropyLossConfig;
use burn::prelude::*;
use ferrolab_core::nn::to_vec_f32;
use ferrolab_core::train::Trainer;
use ferrolab_graph::models::GcnInput;
use ferrolab_graph::zoo::train::{NodeTask, OptimKind};
use ferrolab_graph::zoo::{Arch, GnnModel, GraphTensors, ZooConfig, masked_cross_entropy};
use ferrolab_text::models::SentenceClassifier;
use ferrolab_text::models::conv::ConvEncoderConfig;
use ferrolab_text::train::{Encoded, Fit, batch_tensors, predict_proba};
use ferrolab_text::{Secnn, tokenize::Vocab};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use std::path::Path;
use std::sync::Arc;

/// Cross-domain member names `zoo.cross_domain` accepts.
pub const MEMBERS: [&str; 2] = ["secnn-mr", "gcn-cora"];

struct Shapes(Vec<Vec<usize>>);
impl ModuleVisitor for Shapes {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        self.0.push(p.val().dims().to_vec());
    }
}

struct Get {
    want: usize,
    next: usize,
    out: Vec<f32>,
}
impl ModuleVisitor for Get {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if self.next == self.want {
            self.out = to_vec_f32(p.val());
        }
        self.next += 1;
    }
}

struct Grad<'a> {
    want: &'a [usize],
    next: usize,
    grads: &'a burn::tensor::Gradients,
    out: Vec<Vec<f32>>,
}
impl ModuleVisitor for Grad<'_> {
    fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
        if self.want.contains(&self.next) {
            self.out
                .push(p.val().grad(self.grads).map(to_vec_f32).unwrap_or_default());
        }
        self.next += 1;
    }
}

struct Put {
    want: usize,
    next: usize,
    data: Option<Vec<f32>>,
}
impl ModuleMapper for Put {
    fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let k = self.next;
        self.next += 1;
        if k != self.want {
            return p;
        }
        let Some(data) = self.data.take() else {
            return p;
        };
        p.map(|t| {
            let rg = t.is_require_grad();
            let n = Tensor::<D>::from_data(TensorData::new(data, t.dims()), &t.device());
            if rg { n.require_grad() } else { n }
        })
    }
}

/// Every float parameter of `m`, in visiting order (for copying between two builds).
fn all_params<M: Module>(m: &M) -> Vec<Vec<f32>> {
    struct All(Vec<Vec<f32>>);
    impl ModuleVisitor for All {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.push(to_vec_f32(p.val()));
        }
    }
    let mut a = All(Vec::new());
    m.visit(&mut a);
    a.0
}

/// Writes parameter `k` (visiting order) of `m`; the shape stays.
fn put_param<M: Module>(m: M, k: usize, data: Vec<f32>) -> M {
    m.map(&mut Put {
        want: k,
        next: 0,
        data: Some(data),
    })
}

/// A burn module seen through its rank-2 parameters as [`LayerParams`].
#[derive(Debug, Clone)]
pub struct Flat<M> {
    pub model: M,
    /// Visiting index of each layer's parameter.
    slots: Vec<usize>,
    names: Vec<String>,
    /// `[in, out]` per layer.
    shapes: Vec<[usize; 2]>,
}

impl<M: Module + Clone> Flat<M> {
    /// Every rank-2 parameter of `model` as a layer, named by `names` when the count matches
    /// (else `p<index>`).
    pub fn new(model: M, names: &[&str]) -> Self {
        let mut sh = Shapes(Vec::new());
        model.visit(&mut sh);
        let (mut slots, mut shapes) = (Vec::new(), Vec::new());
        for (k, d) in sh.0.iter().enumerate() {
            if let [a, b] = d[..] {
                slots.push(k);
                shapes.push([a, b]);
            }
        }
        let names = if names.len() == slots.len() {
            names.iter().map(|s| s.to_string()).collect()
        } else {
            slots.iter().map(|k| format!("p{k}")).collect()
        };
        Flat {
            model,
            slots,
            names,
            shapes,
        }
    }

    /// Per-layer gradients in `grads` (view layout), zero-length for a layer without one.
    pub fn grads(&self, grads: &burn::tensor::Gradients) -> Vec<Vec<f32>> {
        let mut g = Grad {
            want: &self.slots,
            next: 0,
            grads,
            out: Vec::new(),
        };
        self.model.visit(&mut g);
        g.out
            .into_iter()
            .zip(&self.shapes)
            .map(|(v, &[a, b])| {
                if v.len() == a * b {
                    transpose(&v, a, b)
                } else {
                    vec![0.0; a * b]
                }
            })
            .collect()
    }

    /// The same layers on another build of the model (same parameter shapes).
    pub fn with_model(&self, model: M) -> Self {
        Flat {
            model,
            slots: self.slots.clone(),
            names: self.names.clone(),
            shapes: self.shapes.clone(),
        }
    }
}

/// `[r, c]` row-major to `[c, r]`.
fn transpose(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            t[j * r + i] = v[i * c + j];
        }
    }
    t
}

impl<M: Module + Clone> LayerParams for Flat<M> {
    fn layer_names(&self) -> Vec<String> {
        self.names.clone()
    }

    fn layer(&self, l: usize) -> LayerWeights {
        let mut g = Get {
            want: self.slots[l],
            next: 0,
            out: Vec::new(),
        };
        self.model.visit(&mut g);
        let [a, b] = self.shapes[l];
        LayerWeights {
            weight: transpose(&g.out, a, b),
            out_channels: b,
            bn_scale: None,
        }
    }

    fn set_layer_weight(&mut self, l: usize, w: &[f32]) {
        let [a, b] = self.shapes[l];
        let m = self.model.clone();
        self.model = put_param(m, self.slots[l], transpose(w, b, a));
    }
}

type LossFn<M> = Arc<dyn Fn(&M, Option<usize>) -> Tensor<1> + Send + Sync>;
type LogitsFn<M> = Arc<dyn Fn(&M) -> Tensor<2> + Send + Sync>;

/// A cross-domain model as a criteria [`Subject`]: `grad` (autodiff device) gives the loss
/// on calibration batch `b` (all of them for `None`), `infer` the logits of a fixed batch.
#[derive(Clone)]
pub struct FlatSubject<M> {
    pub grad: Flat<M>,
    pub infer: Flat<M>,
    loss: LossFn<M>,
    logits: LogitsFn<M>,
    batches: usize,
}

impl<M: Module + Clone> LayerParams for FlatSubject<M> {
    fn layer_names(&self) -> Vec<String> {
        self.grad.layer_names()
    }
    fn layer(&self, l: usize) -> LayerWeights {
        self.grad.layer(l)
    }
    fn set_layer_weight(&mut self, l: usize, w: &[f32]) {
        self.grad.set_layer_weight(l, w);
    }
}

impl<M: Module + Clone> Subject for FlatSubject<M> {
    fn calib_batches(&self) -> usize {
        self.batches
    }
    fn grads(&self, b: Option<usize>) -> Vec<Vec<f32>> {
        let g = (self.loss)(&self.grad.model, b).backward();
        self.grad.grads(&g)
    }
    fn output_change(&mut self, l: usize, w: &[f32]) -> f64 {
        let base = (self.logits)(&self.infer.model);
        let rows = base.dims()[0];
        let mut m = self.infer.clone();
        m.set_layer_weight(l, w);
        logit_distance(base, (self.logits)(&m.model)) / rows.max(1) as f64
    }
}

/// A trained cross-domain member: its layers, its accuracy on the evaluation split, and the
/// criteria subject.
pub struct CrossMember {
    pub arch: &'static str,
    pub eval_size: usize,
    pub model: CrossModel,
}

/// The two kinds, each with what evaluating it needs.
pub enum CrossModel {
    Text {
        net: Box<Flat<Secnn>>,
        subject: Box<FlatSubject<Secnn>>,
        eval: Encoded,
        min_len: usize,
    },
    Graph {
        net: Box<Flat<GnnModel>>,
        subject: Box<FlatSubject<GnnModel>>,
        task: Box<NodeTask>,
    },
}

/// SECNN sizes (narrower than the paper's 300-d vectors and 100 maps per width, so a member
/// trains in about a minute on two cores).
pub const SECNN_EMBED: usize = 64;
pub const SECNN_MAPS: usize = 32;
pub const SECNN_EPOCHS: usize = 4;
/// MR sentences held out for evaluation.
pub const MR_EVAL: usize = 2000;
/// SECNN's layer names in parameter order.
const SECNN_LAYERS: [&str; 5] = ["embedding", "conv", "se.fc1", "se.fc2", "fc"];

fn secnn_build(vocab: usize, dropout: f64, dev: &Device) -> Secnn {
    let enc = ConvEncoderConfig::new(vocab)
        .with_embed_dim(SECNN_EMBED)
        .with_maps(SECNN_MAPS)
        .with_widths(vec![3, 4, 5]);
    Secnn::new(&enc, 2, dropout, 16, dev)
}

/// Trains SECNN on MR (the rest after holding out [`MR_EVAL`] sentences, drawn by `seed`).
pub fn secnn_mr(data_dir: Option<&Path>, seed: u64, calib: usize) -> Result<CrossMember, String> {
    let path = ferrolab_data::lookup::find_dataset(data_dir, "mr").map_err(|e| e.to_string())?;
    let raw = ferrolab_data::read_labeled_sentences(&path).map_err(|e| e.to_string())?;
    let mut classes: Vec<u32> = raw.labels.clone();
    classes.sort_unstable();
    classes.dedup();
    if classes.len() != 2 || raw.texts.len() <= MR_EVAL + 100 {
        return Err(format!(
            "{}: expected MR (two classes, more than {} sentences), found {} classes and {} sentences",
            path.display(),
            MR_EVAL + 100,
            classes.len(),
            raw.texts.len()
        ));
    }
    let tokens: Vec<Vec<String>> = raw
        .texts
        .iter()
        .map(|t| ferrolab_text::tokenize::tokenize(t))
        .collect();
    let labels: Vec<usize> = raw
        .labels
        .iter()
        .map(|l| usize::from(*l != classes[0]))
        .collect();
    let mut idx: Vec<usize> = (0..tokens.len()).collect();
    idx.shuffle(&mut StdRng::seed_from_u64(ferrolab_core::seed::derive(
        seed, "mr-split",
    )));
    let (eval_idx, train_idx) = idx.split_at(MR_EVAL);
    let vocab = Vocab::build(train_idx.iter().map(|&i| &tokens[i]), 1);
    let enc = |ix: &[usize]| Encoded {
        ids: ix.iter().map(|&i| vocab.encode(&tokens[i], 64)).collect(),
        labels: ix.iter().map(|&i| labels[i]).collect(),
    };
    let train = enc(train_idx);
    let eval = enc(eval_idx);
    let min_len = 5;
    let tdev = ferrolab_core::backend::train_device();
    ferrolab_core::backend::seed_backend(ferrolab_core::seed::derive(seed, "init"));
    let model = secnn_build(vocab.len(), 0.5, &tdev);
    let mut fit = Fit::new(
        model,
        &train,
        None,
        50,
        min_len,
        3.0,
        ferrolab_core::seed::derive(seed, "batches"),
    );
    let trainer = Trainer {
        epochs: SECNN_EPOCHS,
        lr: 1e-3,
        schedule: Default::default(),
        early_stopping: None,
        label: "layer-importance secnn-mr".into(),
    };
    trainer
        .fit(&mut fit, &mut [])
        .map_err(|e| format!("SECNN training: {e}"))?;
    let trained = fit
        .into_model()
        .ok_or_else(|| "SECNN training lost the model".to_string())?;
    // The criteria differentiate the model as it is evaluated: a copy without dropout.
    let mut twin = secnn_build(vocab.len(), 0.0, &tdev);
    for (k, p) in all_params(&trained).into_iter().enumerate() {
        twin = put_param(twin, k, p);
    }
    let infer = Flat::new(twin.clone().valid(), &SECNN_LAYERS);
    // Calibration sentences from the training part, in batches of 64.
    let mut cidx: Vec<usize> = (0..train.len()).collect();
    cidx.shuffle(&mut StdRng::seed_from_u64(ferrolab_core::seed::derive(
        seed, "calib",
    )));
    cidx.truncate(calib.clamp(1, train.len()));
    let cal: Vec<Vec<usize>> = cidx.chunks(64).map(<[usize]>::to_vec).collect();
    let nb = cal.len();
    let train_c = train.clone();
    let loss: LossFn<Secnn> = Arc::new(move |m: &Secnn, b: Option<usize>| {
        let dev = ferrolab_core::backend::train_device();
        let ix: Vec<usize> = match b.and_then(|b| cal.get(b)) {
            Some(c) => c.clone(),
            None => cal.concat(),
        };
        let (t, mask) = batch_tensors(&train_c, &ix, min_len, &dev);
        let y: Vec<i64> = ix.iter().map(|&i| train_c.labels[i] as i64).collect();
        let y = Tensor::<1, Int>::from_data(TensorData::new(y, [ix.len()]), &dev);
        CrossEntropyLossConfig::new()
            .init(&dev)
            .forward(m.forward(t, mask), y)
    });
    let out_ix: Vec<usize> = (0..eval.len().min(256)).collect();
    let eval_c = eval.clone();
    let logits: LogitsFn<Secnn> = Arc::new(move |m: &Secnn| {
        let dev = ferrolab_core::backend::device();
        let (t, mask) = batch_tensors(&eval_c, &out_ix, min_len, &dev);
        m.forward(t, mask)
    });
    let subject = FlatSubject {
        grad: infer.with_model(twin),
        infer: infer.clone(),
        loss,
        logits,
        batches: nb,
    };
    Ok(CrossMember {
        arch: "secnn",
        eval_size: eval.len(),
        model: CrossModel::Text {
            net: Box::new(infer),
            subject: Box::new(subject),
            eval,
            min_len,
        },
    })
}

/// GCN layer names.
const GCN_LAYERS: [&str; 2] = ["conv1", "conv2"];
/// Kipf & Welling's Cora recipe: 16 hidden, dropout 0.5, Adam 0.01, weight decay 5e-4.
pub const GCN_EPOCHS: usize = 200;

/// Trains the two-layer GCN on Cora's Planetoid split; evaluates on its 1,000 test nodes.
pub fn gcn_cora(data_dir: Option<&Path>, seed: u64) -> Result<CrossMember, String> {
    let data = ferrolab_graph::NodeData::load_cora(data_dir).map_err(|e| e.to_string())?;
    let tdev = ferrolab_core::backend::train_device();
    let n = data.num_nodes();
    let rows: Vec<usize> = (0..n).collect();
    let task = NodeTask::new(
        &data.graph,
        &data.features,
        &rows,
        data.labels.clone(),
        data.num_classes,
        data.split.clone(),
        &tdev,
    )
    .map_err(|e| e.to_string())?;
    let mut cfg = ZooConfig::new(Arch::Gcn, data.num_features(), data.num_classes);
    cfg.hidden = 16;
    ferrolab_core::backend::seed_backend(ferrolab_core::seed::derive(seed, "init"));
    let mut model = cfg.init(&tdev).map_err(|e| e.to_string())?;
    let mut opt = OptimKind::Adam { weight_decay: 5e-4 }.init();
    let mut rng = StdRng::seed_from_u64(ferrolab_core::seed::derive(seed, "dropout"));
    for _ in 0..GCN_EPOCHS {
        model = task.train_steps(model, &cfg, &mut opt, 0.01, 1, &mut rng).0;
    }
    let net = Flat::new(model.clone(), &GCN_LAYERS);
    let train_nodes: Vec<i64> = task.split.train.iter().map(|&v| v as i64).collect();
    let train_y: Vec<i64> = task
        .split
        .train
        .iter()
        .map(|&v| task.labels[v] as i64)
        .collect();
    let nt = train_nodes.len();
    let ti = Tensor::<1, Int>::from_data(TensorData::new(train_nodes, [nt]), &tdev);
    let ty = Tensor::<1, Int>::from_data(TensorData::new(train_y, [nt]), &tdev);
    let (g, x) = (task.graph.clone(), task.x.clone());
    // One full-batch loss on the labelled training nodes (what Kipf & Welling train on):
    // every "batch" is the same.
    let loss: LossFn<GnnModel> = Arc::new(move |m: &GnnModel, _b: Option<usize>| {
        masked_cross_entropy(m.forward(&g, &x, 0.0, None), &ti, &ty)
    });
    let (g2, x2): (GraphTensors, GcnInput) = (task.graph.clone(), task.x.clone());
    let logits: LogitsFn<GnnModel> =
        Arc::new(move |m: &GnnModel| m.forward(&g2, &x2, 0.0, None).detach());
    let subject = FlatSubject {
        grad: net.clone(),
        infer: net.clone(),
        loss,
        logits,
        batches: 1,
    };
    Ok(CrossMember {
        arch: "gcn",
        eval_size: task.split.test.len(),
        model: CrossModel::Graph {
            net: Box::new(net),
            subject: Box::new(subject),
            task: Box::new(task),
        },
    })
}

impl CrossMember {
    /// Accuracy on the evaluation split as the model stands.
    pub fn accuracy(&self) -> f64 {
        match &self.model {
            CrossModel::Text {
                net, eval, min_len, ..
            } => text_accuracy(&net.model, eval, *min_len),
            CrossModel::Graph { net, task, .. } => task.evaluate(&net.model).test_accuracy,
        }
    }

    /// Layer names and weights per layer.
    pub fn layers(&self) -> (Vec<String>, Vec<usize>) {
        match &self.model {
            CrossModel::Text { net, .. } => (net.layer_names(), net.layer_sizes()),
            CrossModel::Graph { net, .. } => (net.layer_names(), net.layer_sizes()),
        }
    }
}

fn text_accuracy(m: &Secnn, eval: &Encoded, min_len: usize) -> f64 {
    let dev = ferrolab_core::backend::device();
    let pred = ferrolab_text::train::argmax(&predict_proba(m, eval, min_len, &dev));
    ferrolab_core::metrics::accuracy(&pred, &eval.labels)
}

/// The ground-truth sweep and the criteria of one cross-domain member.
pub fn measure(
    member: &mut CrossMember,
    grid: &crate::dataset::Grid,
    cs: &crate::criteria::CriteriaSettings,
    seed: u64,
) -> (
    f64,
    crate::dataset::FamilyResults,
    usize,
    crate::criteria::Scores,
) {
    let base = member.accuracy();
    match &mut member.model {
        CrossModel::Text {
            net,
            subject,
            eval,
            min_len,
        } => {
            let (f, p) = crate::dataset::sweep(net.as_mut(), base, grid, seed, |m, _| {
                text_accuracy(&m.model, eval, *min_len)
            });
            (
                base,
                f,
                p,
                crate::criteria::compute_for(subject.as_ref(), cs, seed),
            )
        }
        CrossModel::Graph { net, subject, task } => {
            let (f, p) = crate::dataset::sweep(net.as_mut(), base, grid, seed, |m, _| {
                task.evaluate(&m.model).test_accuracy
            });
            (
                base,
                f,
                p,
                crate::criteria::compute_for(subject.as_ref(), cs, seed),
            )
        }
    }
}
