//! AdaEvo's detection task (issue 22, task b): rendered underwater frames
//! (`ferrolab_data::underwater`) whose water type, light and turbidity drift along a moving
//! camera path; a tiny single-scale grid detector in plain Rust (pruned + int8 on the mobile
//! end, like the classifier); the label-free estimate `CLC = mean(CC_i · LC_i)` over a frame's
//! detections, with `LC` a two-layer IoU regressor trained on jittered ground-truth boxes;
//! an edge that labels uploads with a larger teacher detector, profiles (NNLS curve of the
//! probe's mAP@0.5), schedules (the same knapsack DP / FIFO) and retrains. The accuracy of
//! the detection task is mAP@0.5 (COCO's 101-point AP at IoU 0.5, `ferrolab_vision`'s
//! pycocotools-equal metric) of the end's current model on fresh frames of that moment.
//!
//! | module | what |
//! |---|---|
//! | [`grid`] | the grid detector: cell inputs, targets, training, decoding + NMS, mAP@0.5 |
//! | [`estimator`] | the IoU regressor (LC) and the per-frame CLC |
//! | [`stream`] | water conditions, drifting camera-path frames |
//! | [`edge`] | the detection edge server (labelling, profiler, scheduler, retraining) |
//! | [`experiment`] | preparation, one method's simulation, the whole comparison |

pub mod edge;
pub mod estimator;
pub mod experiment;
pub mod grid;
pub mod stream;
