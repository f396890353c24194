//! Evolution helps where it should: on frames under a drift, the factory compressed model
//! loses accuracy, the teacher keeps most of it, and retraining the pruned model on a hundred
//! teacher-labelled frames of the drift (through the edge server, as a task) raises the
//! compressed model's accuracy under the drifts, on average over four of them.

#![allow(clippy::unwrap_used)] // test: a panic is the failure report

use ferrolab_edge::config::AdaEvoConfig;
use ferrolab_edge::edge::{EdgeParams, EdgeServer, SchedulerKind};
use ferrolab_edge::experiment::{load_base, prepare};
use ferrolab_edge::protocol::{DriftType, Frame, ProtocolError, TaskRequest};
use ferrolab_edge::stream::{self, Drift, Schedule};

// The task memory the edge reports is the heap peak of training, as in the `ferrolab` binary.
#[global_allocator]
static ALLOC: ferrolab_core::alloc::PeakAlloc = ferrolab_core::alloc::PeakAlloc;

#[test]
fn retraining_on_teacher_labels_recovers_a_drift() {
    recovers(0);
}

/// The same with a conv stem on the mobile model and the teacher (`mobile.conv_channels`,
/// `edge.teacher_conv_channels`): the stem is pruned, shipped as AEVO2, trained by the edge,
/// and the profiler's memory prediction (stem terms included) holds against the heap.
#[test]
fn a_conv_stem_model_evolves_too() {
    recovers(4);
}

fn recovers(conv: usize) {
    let mut cfg = AdaEvoConfig::default();
    cfg.mobile.conv_channels = conv;
    cfg.edge.teacher_conv_channels = conv;
    cfg.stream.ends = 1;
    cfg.stream.seconds = 60;
    cfg.stream.drifts = vec!["sudden:rotate@10".into()];
    cfg.stream.jitter_s = 0.0;
    cfg.data.synthetic_images = 2000;
    cfg.data.pretrain_images = 1000;
    let (pre, pool) = load_base(&cfg, None, 5).unwrap();
    let prep = prepare(&cfg, &pre, &pool, 5);
    let params = |min_gain: f64| EdgeParams {
        throughput: 1e6,
        memory: 10_000_000,
        memory_unit: 8_000,
        max_concurrent: 2,
        epochs: vec![4],
        fixed_epochs: 4,
        probe_epochs: 3,
        batch: 16,
        lr: 0.02,
        replay: 0,
        workspace: 0,
        sparsity: 0.5,
        scheduler: SchedulerKind::Knapsack,
        profiler: true,
        seed: 1,
        anchor: prep.anchor.clone(),
        anchor_per_task: 100,
        label_min_confidence: 0.0,
        base: ferrolab_edge::edge::Base::Current,
        min_gain,
        augment: 0,
    };
    let mut sums = [0.0f64; 3];
    for target in ["rotate", "dark", "blur", "noise"] {
        let sch = Schedule {
            drifts: vec![Drift::parse(&format!("sudden:{target}@0")).unwrap()],
            strength: 1.0,
        };
        let frames: Vec<_> = (0..100)
            .map(|i| stream::draw(&pool, &sch, 1.0 + i as f64, 77))
            .collect();
        let test: Vec<_> = (0..400)
            .map(|i| stream::draw(&pool, &sch, 1.0 + i as f64, 991))
            .collect();
        let xs: Vec<Vec<f32>> = test.iter().map(|f| f.input.clone()).collect();
        let ys: Vec<u8> = test.iter().map(|f| f.label).collect();
        let before = prep.mobile.accuracy(&xs, &ys);
        let teacher = prep.teacher.accuracy(&xs, &ys);
        let mut edge = EdgeServer::new(params(0.0), prep.teacher.clone());
        edge.register(0, prep.dense.clone(), prep.mobile.clone());
        let req = TaskRequest {
            end: 0,
            seq: 0,
            model_version: 0,
            trigger_t: 0.0,
            drift: DriftType::Sudden,
            estimate: 0.5,
            threshold: 0.8,
            remaining_s: 1000.0,
            frames: frames
                .iter()
                .map(|f| Frame {
                    t: 0.0,
                    pixels: f.pixels.clone(),
                })
                .collect(),
        };
        // An edge that asks for more predicted gain than any task can bring declines it:
        // nothing is queued and the refusal says why.
        let mut strict = EdgeServer::new(params(0.99), prep.teacher.clone());
        strict.register(0, prep.dense.clone(), prep.mobile.clone());
        let e = strict.submit(req.clone(), 0.0).unwrap_err();
        assert!(
            matches!(e, ProtocolError::Declined(ref m) if m.contains("edge.min_gain")),
            "{e}"
        );
        assert_eq!((strict.declined, strict.queued()), (1, 0));
        // A task that needs more memory than the whole edge has is declined at once (queued,
        // it would wait for ever, and under FIFO block every task behind it).
        for scheduler in [SchedulerKind::Knapsack, SchedulerKind::Fifo] {
            let mut tiny = EdgeServer::new(
                EdgeParams {
                    memory: 50_000,
                    scheduler,
                    ..params(0.0)
                },
                prep.teacher.clone(),
            );
            tiny.register(0, prep.dense.clone(), prep.mobile.clone());
            let e = tiny.submit(req.clone(), 0.0).unwrap_err();
            assert!(
                matches!(e, ProtocolError::Declined(ref m) if m.contains("training memory")),
                "{e}"
            );
            assert_eq!((tiny.declined, tiny.queued()), (1, 0));
        }
        edge.submit(req, 0.0).unwrap();
        edge.schedule(0.0);
        let done = edge.advance(0.0, 1e6);
        assert_eq!(done.len(), 1);
        // Measured memory is what training allocated: at least its 200 resident inputs (100
        // uploaded frames, 100 anchor samples) and the model's weights, and within a quarter
        // of the profiler's analytic prediction.
        assert!(ferrolab_core::alloc::counting());
        let (pred, measured) = (done[0].memory_pred, done[0].memory_measured);
        let floor = 200 * 196 * 4 + 4 * prep.dense.params() as u64;
        if conv > 0 {
            let st = prep.dense.stem.as_ref().unwrap();
            assert!(
                prep.mobile
                    .stem
                    .as_ref()
                    .unwrap()
                    .weight
                    .iter()
                    .filter(|w| **w == 0.0)
                    .count()
                    >= st.weight.len() / 2
            );
        }
        assert!(measured >= floor, "measured {measured} < {floor}");
        let err = (pred as f64 - measured as f64).abs() / measured as f64;
        assert!(
            err < 0.25,
            "{target}: predicted {pred} vs measured {measured}"
        );
        let shipped = done[0].blob.decode().unwrap();
        assert!(shipped.same_shape(&prep.dense));
        assert_eq!(shipped.stem.is_some(), conv > 0);
        let after = shipped.accuracy(&xs, &ys);
        eprintln!(
            "{target}: factory {before:.3} teacher {teacher:.3} evolved {after:.3} (clean {:.3})",
            prep.clean_accuracy
        );
        sums[0] += before;
        sums[1] += teacher;
        sums[2] += after;
    }
    assert!(
        sums[1] > sums[0],
        "the teacher must be more robust: {sums:?}"
    );
    assert!(
        sums[2] > sums[0],
        "evolution must help on average: {sums:?}"
    );
}
