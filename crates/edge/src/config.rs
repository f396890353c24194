//! `ferrolab adaevo` configuration (TOML + `--set`), checked once before any work starts:
//! unknown task, method, drift type or condition names, drifts that end after the stream, and
//! an edge memory budget smaller than the smallest evolution task are configuration errors.

use crate::model::Mlp;
use crate::profiler::{model_memory_bytes, shape_memory_bytes};
use crate::stream::{CLASSES, Drift, INPUT, INPUT_SIDE};
use ferrolab_core::ConfigError;
use ferrolab_core::config::{Validate, check, distinct};
use ferrolab_vision::tiny::ConvPool;

/// The knapsack DP counts memory in whole units: the budget rounded down, a task rounded up.
/// A unit so coarse that the smallest task never fits would leave every task queued for ever.
fn check_units(
    budget: u64,
    smallest: u64,
    key: &str,
    unit_kb: f64,
    budget_key: &str,
) -> Result<(), ConfigError> {
    let unit = AdaEvoConfig::unit_bytes(unit_kb);
    let (cap, need) = (budget / unit, smallest.div_ceil(unit));
    check(
        crate::scheduler::fits_units(smallest, budget, unit),
        key,
        unit_kb,
        &format!(
            "is too coarse: {budget_key} rounds down to {cap} unit(s), the smallest task needs {need}"
        ),
    )?;
    check(
        cap <= MAX_UNITS,
        key,
        unit_kb,
        &format!(
            "is too fine: {budget_key} is {cap} units, at most {MAX_UNITS} (the scheduler's table grows with them)"
        ),
    )
}

/// Memory units of the knapsack's capacity at most: its table holds (tasks + 1) × (units + 1)
/// × (concurrent + 1) values and is rebuilt at every scheduling event.
pub const MAX_UNITS: u64 = 4096;

/// Tasks the experiment runs.
pub const TASKS: [&str; 2] = ["classification", "detection"];
/// Base image sources.
pub const DATASETS: [&str; 2] = ["synthetic", "fashion-mnist"];
/// Methods: ours first, then the baselines (report keys `baselines.<name>`).
pub const METHODS: [&str; 7] = [
    "adaevo",
    "no_evolution",
    "naive",
    "ablation_periodic_trigger",
    "ablation_fixed_sampling",
    "ablation_fifo_scheduler",
    "ablation_no_profiler",
];
/// Where a task's retraining starts (`edge.base`).
pub const BASES: [&str; 3] = ["current", "factory", "best"];
/// Frames of the smallest task the edge must be able to hold.
pub const MIN_TASK_FRAMES: usize = 8;

ferrolab_core::config_section! {
    /// The whole experiment configuration.
    pub struct AdaEvoConfig {
        /// The mobile task.
        pub task: TaskSection = TaskSection::default();
        /// Base images.
        pub data: DataSection = DataSection::default();
        /// The drifting streams.
        pub stream: StreamSection = StreamSection::default();
        /// The mobile ends.
        pub mobile: MobileSection = MobileSection::default();
        /// The edge server.
        pub edge: EdgeSection = EdgeSection::default();
        /// Seeds and methods.
        pub experiment: ExperimentSection = ExperimentSection::default();
        /// The detection task (`task.name = "detection"`).
        pub detect: DetectSection = DetectSection::default();
    }
}

ferrolab_core::config_section! {
    /// Keys `task.*`.
    pub struct TaskSection {
        /// `classification` (shape / Fashion-MNIST frames, `stream.*`, `data.*`) or `detection`
        /// (rendered underwater frames drifting in water type, light and turbidity,
        /// `detect.*`; accuracy is mAP@0.5).
        pub name: String = "classification".into(), "`classification` or `detection`" => |v| TASKS.contains(&v.as_str());
    }
}

ferrolab_core::config_section! {
    /// Keys `data.*`.
    pub struct DataSection {
        /// `synthetic` (ten shape classes, generated) or `fashion-mnist` (IDX files from the
        /// data lookup or `data.dir`).
        pub dataset: String = "synthetic".into(), "`synthetic` or `fashion-mnist`" => |v| DATASETS.contains(&v.as_str());
        /// Folder with the Fashion-MNIST IDX files (overrides the lookup).
        pub dir: Option<String> = None;
        /// Images generated for `synthetic` (half pre-train the models, half feed the streams).
        pub synthetic_images: usize = 4000, "100..=100000" => |v| (100..=100_000).contains(v);
        /// Images that pre-train the teacher and the factory mobile model.
        pub pretrain_images: usize = 2000, "50..=60000" => |v| (50..=60_000).contains(v);
        /// Pre-training epochs (teacher and mobile model).
        pub pretrain_epochs: usize = 8, "1..=200" => |v| (1..=200).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `stream.*`.
    pub struct StreamSection {
        /// Mobile ends contending for the edge.
        pub ends: usize = 8, "1..=1000" => |v| (1..=1000).contains(v);
        /// Stream length, simulated seconds.
        pub seconds: usize = 480, "60..=100000" => |v| (60..=100_000).contains(v);
        /// Frames each end captures per simulated second. The trigger, the drift typing and
        /// the label-free estimate read the first frame of every second (their windows are
        /// in seconds, whatever the rate); uploads sample from every captured frame, so a
        /// drift-end window [t₁, t₃] holds `fps` times as many candidates (the paper's
        /// dashcams record 30 fps). Classification task only.
        pub fps: usize = 1, "1..=30" => |v| (1..=30).contains(v);
        /// Drifts `type:condition@start+duration` (seconds; types sudden, incremental,
        /// gradual; conditions clean, rotate, dark, bright, blur, noise, occlude, prior).
        pub drifts: Vec<String> = vec!["sudden:rotate@60".into(), "incremental:dark@180+80".into(), "gradual:blur@330+80".into()];
        /// Each end's drift times are shifted by a seeded offset in [0, jitter_s].
        pub jitter_s: f64 = 30.0, "0..=10000" => |v| (0.0..=10_000.0).contains(v);
        /// Each end's drift targets are a seeded permutation of the listed ones.
        pub shuffle_targets: bool = true;
        /// Each end's condition strength is 1 ± this (seeded).
        pub strength_jitter: f64 = 0.2, "[0, 0.9]" => |v| (0.0..=0.9).contains(v);
        /// Accuracy is evaluated every this many seconds.
        pub eval_every_s: usize = 5, "1..=10000" => |v| (1..=10_000).contains(v);
        /// Fresh frames per evaluation (ground truth used here only).
        pub eval_frames: usize = 48, "8..=10000" => |v| (8..=10_000).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `mobile.*`.
    pub struct MobileSection {
        /// Hidden units of the mobile model (14×14 input, 10 classes).
        pub hidden: usize = 32, "4..=1024" => |v| (4..=1024).contains(v);
        /// Where the mobile model comes from: `factory` (its own MLP of `mobile.hidden` units
        /// trained on clean frames) or `teacher` (the teacher's network, pruned and stored
        /// int8 as the paper deploys it; its widths are the teacher's; needs
        /// `edge.teacher_standardise = false`, since the end feeds its model the plain input).
        pub source: String = "factory".into(), "`factory` or `teacher`" => |v| v == "factory" || v == "teacher";
        /// Filters of a convolutional first block (3×3 by default, "same" padding, ReLU, 2×2
        /// max-pool: `ferrolab_vision::tiny::ConvPool`) in front of the hidden layer; 0: the
        /// plain MLP on the 14×14 input. The detection task puts it on each cell's window
        /// (with `edge.teacher_conv_channels` > 0 too).
        pub conv_channels: usize = 0, "0..=64" => |v| *v <= 64;
        /// Kernel size of that block (odd).
        pub conv_kernel: usize = 3, "odd, 1..=7" => |v| v % 2 == 1 && *v <= 7;
        /// Magnitude-pruned fraction of each weight matrix (then int8).
        pub sparsity: f64 = 0.5, "[0, 0.95]" => |v| (0.0..=0.95).contains(v);
        /// Trigger window, frames.
        pub window: usize = 40, "6..=10000" => |v| (6..=10_000).contains(v);
        /// Sub-windows of the stabilisation test.
        pub subwindows: usize = 3, "2..=100" => |v| (2..=100).contains(v);
        /// Frames per window slide.
        pub step: usize = 5, "1..=10000" => |v| (1..=10_000).contains(v);
        /// Rate of decline that marks a drift's onset.
        pub rod_threshold: f64 = 0.05, "(0, 1)" => |v| *v > 0.0 && *v < 1.0;
        /// F statistic below which a window is stable.
        pub stable_f: f64 = 3.0, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// |t| of the window's linear trend below which a window is stable.
        pub stable_t: f64 = 2.0, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Whether the drift-end test also waits for the frames' condition descriptors to stop
        /// moving (`trigger.rs`). Off by default: slow drifts are then typed right more often,
        /// but the later triggers cost QoE (crates/edge/README.md, "Drift typing").
        pub settle_on_descriptors: bool = false;
        /// Slides after onset after which the trigger fires anyway.
        pub max_slides: usize = 40, "1..=100000" => |v| (1..=100_000).contains(v);
        /// No longer read: the drift type used to rest on the slides from onset to trigger (a
        /// drift settled within this many was sudden); it now rests on the fitted confidence
        /// transition (`mobile.sudden_max_s`). Kept so existing configs still parse.
        pub sudden_slides: usize = 0;
        /// Longest transition (seconds) of the confidence ramp fitted from before the onset to
        /// the trigger for which a drift counts as sudden.
        pub sudden_max_s: f64 = 25.0, ">= 0" => |v| *v >= 0.0 && v.is_finite();
        /// Alternation statistic above which a slow drift is incremental (else gradual).
        pub alternation_ratio: f64 = 1.08, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Most frames one task uploads.
        pub upload_budget: usize = 100, "8..=100000" => |v| (8..=100_000).contains(v);
        /// Fixed-rate sampling takes the last this many seconds before the trigger.
        pub fixed_window_s: usize = 100, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Period of the periodic trigger, seconds.
        pub period_s: usize = 100, "1..=100000" => |v| (1..=100_000).contains(v);
        /// Uplink, MB/s (the paper's 10.65).
        pub bandwidth_mb_s: f64 = 10.65, "in [0.001, 1e9]" => |v| (0.001..=1e9).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `edge.*`.
    pub struct EdgeSection {
        /// Hidden units of the teacher (trained on all conditions, labels uploaded frames).
        pub teacher_hidden: usize = 64, "4..=4096" => |v| (4..=4096).contains(v);
        /// Units of the teacher's second hidden layer (0: one hidden layer).
        pub teacher_hidden2: usize = 0, "0..=4096" => |v| *v <= 4096;
        /// Filters of the teacher's convolutional first block (`mobile.conv_kernel` wide; 0:
        /// none). Detection: set with `mobile.conv_channels` or not at all.
        pub teacher_conv_channels: usize = 0, "0..=64" => |v| *v <= 64;
        /// Renders of each pre-training image under random conditions the teacher trains on.
        pub teacher_renders: usize = 4, "1..=64" => |v| (1..=64).contains(v);
        /// Teacher training epochs (0: `data.pretrain_epochs`).
        pub teacher_epochs: usize = 0, "0..=200" => |v| *v <= 200;
        /// Training images the teacher learns from (0: the pre-training images). The edge's
        /// model may know more of the domain than the factory's compressed one: with more, it
        /// draws them from the training split beyond the pre-training images (Fashion-MNIST)
        /// or generates more shapes with another seed (synthetic); never from the stream pool.
        pub teacher_images: usize = 0, "0..=60000" => |v| *v <= 60_000;
        /// The teacher reads each frame standardised (zero mean, unit spread).
        pub teacher_standardise: bool = true;
        /// Edge compute, MFLOP per simulated second, shared by the running tasks.
        pub throughput_mflops: f64 = 3.0, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Edge training memory, MB.
        pub memory_mb: f64 = 1.0, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Memory unit of the knapsack DP, KB.
        pub memory_unit_kb: f64 = 8.0, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Tasks running at once at most.
        pub max_concurrent: usize = 4, "1..=64" => |v| (1..=64).contains(v);
        /// Epoch budgets the profiler offers the scheduler (one variant per budget). One budget
        /// by default: offering 2, 4 and 8 let the profiler's gain curve (gain MAE 0.13) pick
        /// budgets that lost to a fixed 4 on every figure over 20 seeds (crate README).
        pub epochs: Vec<usize> = vec![4], "1 to 6 values in 1..=100" => |v: &Vec<usize>| (1..=6).contains(&v.len()) && v.iter().all(|e| (1..=100).contains(e));
        /// Epochs of FIFO and of the no-profiler ablation.
        pub fixed_epochs: usize = 4, "1..=100" => |v| (1..=100).contains(v);
        /// Probe epochs of the accuracy-curve fit.
        pub probe_epochs: usize = 3, "2..=20" => |v| (2..=20).contains(v);
        /// Mini-batch size.
        pub batch: usize = 16, "1..=4096" => |v| (1..=4096).contains(v);
        /// Step size of retraining.
        pub lr: f64 = 0.02, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Frames of an end's earlier uploads replayed in its next task (0: none; an end's
        /// conditions do not come back in our streams, and with the ~45 frames a drift-end
        /// trigger uploads at one frame per second, 100 replayed frames of the previous
        /// condition made the new one 18% of what a task trained on).
        pub replay: usize = 0, "0..=100000" => |v| *v <= 100_000;
        /// Original (clean) training samples the edge mixes into every retraining.
        pub anchor: usize = 100, "0..=100000" => |v| *v <= 100_000;
        /// Shifted copies (one input pixel right, left, down, up: 0–4) of every uploaded frame
        /// trained on with the frame's teacher label.
        pub augment: usize = 0, "0..=4" => |v| *v <= 4;
        /// Teacher confidence (top probability) below which an uploaded frame is left out of
        /// its task (the most confident 8 are always kept; 0: keep all).
        pub label_min_confidence: f64 = 0.0, "[0, 1)" => |v| (0.0..1.0).contains(v);
        /// The model a task retrains from: `current` (the end's latest evolved model),
        /// `factory` (the end's original model), or `best` (whichever of the two agrees more
        /// with the teacher's labels of the task's uploaded frames; neither has trained on
        /// them). Applies to every evolving method.
        pub base: String = "current".into(), "`current`, `factory` or `best`" => |v| BASES.contains(&v.as_str());
        /// With the profiler: a task whose best predicted accuracy gain over the end's
        /// deployed model (both scored on teacher-labelled uploads the probe did not train
        /// on) is below this is declined and the end keeps its model (0: never decline).
        pub min_gain: f64 = 0.0, "[0, 1)" => |v| (0.0..1.0).contains(v);
        /// Framework workspace added to every task's memory, KB.
        pub workspace_kb: f64 = 64.0, "in [0, 1e9] (1 TB)" => |v| (0.0..=1e9).contains(v);
    }
}

ferrolab_core::config_section! {
    /// Keys `experiment.*`.
    pub struct ExperimentSection {
        /// Seeds (run k's seed derives from `--seed` and `seed<k>`).
        pub seeds: usize = 3, "1..=100" => |v| (1..=100).contains(v);
        /// Methods to run, `adaevo` first (see the README for each).
        pub methods: Vec<String> = METHODS.iter().map(|s| s.to_string()).collect();
    }
}

ferrolab_core::config_section! {
    /// Keys `detect.*`: the detection task. Ends, stream length, jitter, evaluation period,
    /// the mobile trigger and sampling, epochs, batch and step size come from the shared
    /// sections; what differs for detection (frames, models, drifts, edge capacity) is here.
    pub struct DetectSection {
        /// Frame side, pixels (RGB, rendered by `ferrolab_data::underwater`).
        pub side: usize = 64, "16..=256, a multiple of detect.cell" => |v| (16..=256).contains(v);
        /// Grid cell side, pixels: one prediction (class or background, and a box) per cell.
        pub cell: usize = 8, "4..=64" => |v| (4..=64).contains(v);
        /// Average-pooling factor of a cell's input window.
        pub pool: usize = 2, "1..=16" => |v| (1..=16).contains(v);
        /// Side of a cell's input window, in cells (odd: centred on the cell).
        pub context: usize = 3, "odd, 1..=9" => |v| (1..=9).contains(v) && v % 2 == 1;
        /// Hidden units of the mobile detector.
        pub hidden: usize = 32, "4..=1024" => |v| (4..=1024).contains(v);
        /// Hidden units of the teacher detector.
        pub teacher_hidden: usize = 64, "4..=4096" => |v| (4..=4096).contains(v);
        /// Scenes the factory model and the teacher pre-train on.
        pub pretrain_frames: usize = 1000, "20..=100000" => |v| (20..=100_000).contains(v);
        /// Renders of each pre-training scene under random water for the teacher.
        pub teacher_renders: usize = 2, "1..=32" => |v| (1..=32).contains(v);
        /// Pre-training epochs (factory model and teacher).
        pub pretrain_epochs: usize = 15, "1..=500" => |v| (1..=500).contains(v);
        /// Step size of pre-training and retraining.
        pub lr: f64 = 0.01, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Share of background cells kept in a training set (every object cell is kept).
        pub bg_keep: f64 = 0.2, "(0, 1]" => |v| *v > 0.0 && *v <= 1.0;
        /// Consecutive frames of one seabed scene (the camera moves on after them).
        pub frames_per_scene: usize = 3, "1..=1000" => |v| (1..=1000).contains(v);
        /// Drifts `type:condition@start+duration` of the water (conditions clear, coastal,
        /// green, turbid, murky, deep; the stream starts in clear water).
        pub drifts: Vec<String> = vec!["sudden:turbid@60".into(), "incremental:deep@180+80".into(), "gradual:green@330+80".into()];
        /// Fresh frames per evaluation (their mAP@0.5 is the end's accuracy then).
        pub eval_frames: usize = 12, "4..=1000" => |v| (4..=1000).contains(v);
        /// Score from which a mobile detection enters the estimate CLC.
        pub det_score: f64 = 0.3, "(0, 1)" => |v| *v > 0.0 && *v < 1.0;
        /// Score from which a teacher detection becomes a label of an uploaded frame.
        pub label_score: f64 = 0.5, "(0, 1)" => |v| *v > 0.0 && *v < 1.0;
        /// Hidden units of the IoU regressor (LC).
        pub iou_hidden: usize = 16, "2..=1024" => |v| (2..=1024).contains(v);
        /// Jittered copies of every ground-truth box the IoU regressor trains on.
        pub iou_jitters: usize = 8, "1..=100" => |v| (1..=100).contains(v);
        /// Clean pre-training frames (with their boxes) mixed into every retraining.
        pub anchor_frames: usize = 50, "0..=100000" => |v| *v <= 100_000;
        /// Edge compute for detection tasks, MFLOP per simulated second.
        pub throughput_mflops: f64 = 120.0, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Edge training memory for detection tasks, MB.
        pub memory_mb: f64 = 40.0, "> 0" => |v| *v > 0.0 && v.is_finite();
        /// Memory unit of the knapsack DP for detection tasks, KB.
        pub memory_unit_kb: f64 = 128.0, "> 0" => |v| *v > 0.0 && v.is_finite();
    }
}

impl AdaEvoConfig {
    /// The parsed detection drifts (`detect.drifts`).
    pub fn detect_drifts(&self) -> Result<Vec<Drift>, ConfigError> {
        parse_drifts(
            &self.detect.drifts,
            "detect.drifts",
            &crate::detect::stream::CONDITIONS,
            self.stream.jitter_s,
            self.stream.seconds,
        )
    }

    /// The detection grid.
    pub fn grid(&self) -> crate::detect::grid::Grid {
        crate::detect::grid::Grid {
            side: self.detect.side,
            cell: self.detect.cell,
            pool: self.detect.pool,
            context: self.detect.context,
            conv: self.mobile.conv_channels > 0,
        }
    }

    /// Edge memory for detection tasks, bytes.
    pub fn detect_memory_bytes(&self) -> u64 {
        (self.detect.memory_mb * 1e6) as u64
    }

    /// Memory of the smallest possible detection task (every cell of its frames kept).
    pub fn smallest_detect_task_bytes(&self) -> u64 {
        let g = self.grid();
        let (sizes, stem) = self.detector_shape(self.mobile.conv_channels, self.detect.hidden, 0);
        shape_memory_bytes(
            &sizes,
            stem.as_ref(),
            MIN_TASK_FRAMES * g.cells(),
            self.edge.batch,
            1,
            (self.edge.workspace_kb * 1e3) as u64,
        )
    }

    /// The parsed drifts.
    pub fn drifts(&self) -> Result<Vec<Drift>, ConfigError> {
        parse_drifts(
            &self.stream.drifts,
            "stream.drifts",
            &crate::stream::CONDITIONS,
            self.stream.jitter_s,
            self.stream.seconds,
        )
    }

    /// A freshly initialised mobile model (`mobile.hidden` units, behind a conv block when
    /// `mobile.conv_channels` > 0; the teacher's architecture with `mobile.source = teacher`).
    pub fn new_mobile(&self, seed: u64) -> Mlp {
        if self.mobile.source == "teacher" {
            return self.new_teacher(seed);
        }
        let hidden = [self.mobile.hidden, CLASSES];
        match self.mobile.conv_channels {
            0 => Mlp::new(&[INPUT, hidden[0], hidden[1]], seed),
            c => Mlp::with_stem(1, INPUT_SIDE, c, self.mobile.conv_kernel, &hidden, seed),
        }
    }

    /// A freshly initialised teacher (`edge.teacher_hidden`, `teacher_hidden2`,
    /// `teacher_conv_channels`).
    pub fn new_teacher(&self, seed: u64) -> Mlp {
        let mut hidden = vec![self.edge.teacher_hidden];
        if self.edge.teacher_hidden2 > 0 {
            hidden.push(self.edge.teacher_hidden2);
        }
        hidden.push(CLASSES);
        match self.edge.teacher_conv_channels {
            0 => Mlp::new(&[[INPUT].as_slice(), &hidden].concat(), seed),
            c => Mlp::with_stem(1, INPUT_SIDE, c, self.mobile.conv_kernel, &hidden, seed),
        }
    }

    /// A freshly initialised mobile detector: per cell `detect.hidden` units and the class and
    /// box outputs, behind a conv block of `mobile.conv_channels` filters on the cell's window
    /// when there is one.
    pub fn new_detector(&self, seed: u64) -> Mlp {
        self.detector(self.mobile.conv_channels, self.detect.hidden, seed)
    }

    /// A freshly initialised teacher detector (`detect.teacher_hidden`,
    /// `edge.teacher_conv_channels`).
    pub fn new_detect_teacher(&self, seed: u64) -> Mlp {
        self.detector(
            self.edge.teacher_conv_channels,
            self.detect.teacher_hidden,
            seed,
        )
    }

    fn detector(&self, channels: usize, hidden: usize, seed: u64) -> Mlp {
        let (sizes, stem) = self.detector_shape(channels, hidden, seed);
        let mut m = Mlp::new(&sizes, seed);
        m.stem = stem;
        m
    }

    /// A detector's fully connected widths and its conv block (on the RGB cell window) when
    /// `channels` > 0, as [`Mlp::with_stem`] lays them out.
    fn detector_shape(
        &self,
        channels: usize,
        hidden: usize,
        seed: u64,
    ) -> (Vec<usize>, Option<ConvPool>) {
        let g = self.grid();
        let out = crate::detect::grid::OUT;
        match channels {
            0 => (vec![g.input(), hidden, out], None),
            c => {
                let k = self.mobile.conv_kernel;
                let (stem, sizes) = Mlp::stem_shape(3, g.window_side(), c, k, &[hidden, out], seed);
                (sizes, Some(stem))
            }
        }
    }

    /// The knapsack scheduler's memory unit, bytes.
    pub fn unit_bytes(unit_kb: f64) -> u64 {
        (unit_kb * 1e3).max(1.0) as u64
    }

    /// Edge memory, bytes.
    pub fn memory_bytes(&self) -> u64 {
        (self.edge.memory_mb * 1e6) as u64
    }

    /// Memory of the smallest possible task: its fewest frames plus the clean anchor samples
    /// the edge adds to every task.
    pub fn smallest_task_bytes(&self) -> u64 {
        model_memory_bytes(
            &self.new_mobile(0),
            MIN_TASK_FRAMES + self.edge.anchor.min(self.data.pretrain_images),
            self.edge.batch,
            1,
            (self.edge.workspace_kb * 1e3) as u64,
        )
    }
}

/// Parses drift strings against `conditions`: in time order, each ending (plus the jitter)
/// inside the stream.
fn parse_drifts(
    list: &[String],
    key: &str,
    conditions: &[&str],
    jitter_s: f64,
    seconds: usize,
) -> Result<Vec<Drift>, ConfigError> {
    let mut out: Vec<Drift> = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let d = Drift::parse_for(s, conditions).map_err(|e| ConfigError::Invalid {
            key: format!("{key}[{i}]"),
            value: s.clone(),
            reason: e,
        })?;
        if let Some(prev) = out.last() {
            check(
                d.start >= prev.end(),
                &format!("{key}[{i}]"),
                s,
                &format!(
                    "starts at {} s, before the previous drift ends ({} s)",
                    d.start,
                    prev.end()
                ),
            )?;
        }
        check(
            d.end() + jitter_s <= seconds as f64,
            &format!("{key}[{i}]"),
            s,
            &format!(
                "ends at {} s (+ jitter {} s), after the stream's {} s",
                d.end(),
                jitter_s,
                seconds
            ),
        )?;
        out.push(d);
    }
    Ok(out)
}

impl Validate for AdaEvoConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.task.name == "detection" {
            let side = self.grid().window_side();
            check(
                self.mobile.conv_channels == 0 || side >= 2,
                "mobile.conv_channels",
                self.mobile.conv_channels,
                &format!(
                    "needs a cell window of at least 2×2 pixels for its 2×2 pooling; detect.context × detect.cell / detect.pool gives {side}"
                ),
            )?;
            // The detection grid cuts one window layout per run (channel-major for a conv
            // stem, pixel-major with the cell's position otherwise), and the teacher labels the
            // very windows the mobile detector trains on: both have a stem or neither has.
            check(
                (self.mobile.conv_channels == 0) == (self.edge.teacher_conv_channels == 0),
                "edge.teacher_conv_channels",
                self.edge.teacher_conv_channels,
                &format!(
                    "must be 0 when mobile.conv_channels is 0 and above 0 when it is not (mobile.conv_channels = {}): the detection task's mobile detector and teacher read the same cell windows",
                    self.mobile.conv_channels
                ),
            )?;
        }
        if self.mobile.source == "teacher" {
            check(
                self.mobile.conv_channels == 0,
                "mobile.conv_channels",
                self.mobile.conv_channels,
                "is the factory model's: with mobile.source = teacher the mobile model is the teacher (set edge.teacher_conv_channels)",
            )?;
            check(
                !self.edge.teacher_standardise,
                "mobile.source",
                "teacher",
                "needs edge.teacher_standardise = false (the mobile end feeds its model the plain input, which a standardising teacher was not trained on)",
            )?;
            check(
                self.task.name == "classification",
                "mobile.source",
                "teacher",
                "is implemented for the classification task only",
            )?;
        }
        check(
            !self.stream.drifts.is_empty(),
            "stream.drifts",
            "[]",
            "needs at least one drift",
        )?;
        if self.task.name == "detection" {
            check(
                !self.detect.drifts.is_empty(),
                "detect.drifts",
                "[]",
                "needs at least one drift",
            )?;
            self.detect_drifts()?;
            self.grid().check().map_err(|reason| ConfigError::Invalid {
                key: "detect.side".into(),
                value: self.detect.side.to_string(),
                reason,
            })?;
            let small = self.smallest_detect_task_bytes();
            check(
                self.detect_memory_bytes() >= small,
                "detect.memory_mb",
                self.detect.memory_mb,
                &format!(
                    "is smaller than any detection task (the smallest, {} frames, needs {:.3} MB)",
                    MIN_TASK_FRAMES,
                    small as f64 / 1e6
                ),
            )?;
            check_units(
                self.detect_memory_bytes(),
                small,
                "detect.memory_unit_kb",
                self.detect.memory_unit_kb,
                "detect.memory_mb",
            )?;
            check(
                self.stream.fps == 1,
                "stream.fps",
                self.stream.fps,
                "is implemented for the classification task only (detection frames come one per second)",
            )?;
        } else {
            self.drifts()?;
        }
        check(
            self.stream.eval_every_s < self.stream.seconds,
            "stream.eval_every_s",
            self.stream.eval_every_s,
            &format!(
                "must be below stream.seconds ({}): only the evaluation at t = 0, before any drift, would fall inside the stream",
                self.stream.seconds
            ),
        )?;
        let m = &self.experiment.methods;
        check(
            !m.is_empty() && distinct(m),
            "experiment.methods",
            format!("{m:?}"),
            "must be a non-empty list without repeats",
        )?;
        for (i, name) in m.iter().enumerate() {
            check(
                METHODS.contains(&name.as_str()),
                &format!("experiment.methods[{i}]"),
                name,
                &format!("unknown method (known: {})", METHODS.join(", ")),
            )?;
        }
        check(
            m[0] == "adaevo",
            "experiment.methods",
            format!("{m:?}"),
            "must start with adaevo (ours; the others are baselines)",
        )?;
        let small = self.smallest_task_bytes();
        check(
            self.memory_bytes() >= small,
            "edge.memory_mb",
            self.edge.memory_mb,
            &format!(
                "is smaller than any evolution task (the smallest, {} frames, needs {:.3} MB)",
                MIN_TASK_FRAMES,
                small as f64 / 1e6
            ),
        )?;
        check(
            self.edge.epochs.contains(&self.edge.fixed_epochs),
            "edge.fixed_epochs",
            self.edge.fixed_epochs,
            &format!(
                "must be one of edge.epochs {:?} (the FIFO ablation trains that variant)",
                self.edge.epochs
            ),
        )?;
        check_units(
            self.memory_bytes(),
            small,
            "edge.memory_unit_kb",
            self.edge.memory_unit_kb,
            "edge.memory_mb",
        )?;
        check(
            self.mobile.window >= 2 * self.mobile.subwindows,
            "mobile.window",
            self.mobile.window,
            "must hold at least two frames per sub-window",
        )?;
        if self.data.dataset == "synthetic" {
            check(
                self.data.pretrain_images + crate::stream::CLASSES <= self.data.synthetic_images,
                "data.pretrain_images",
                self.data.pretrain_images,
                &format!(
                    "must leave at least {} of data.synthetic_images for the streams (one per class)",
                    crate::stream::CLASSES
                ),
            )?;
        }
        Ok(())
    }
}
