//! Detection and segmentation metrics, each checked against the implementation users trust:
//! [`coco`] against pycocotools' `COCOeval` (bbox), [`seg`] against medpy 0.5.2's
//! `metric.binary.{dc, jc, hd95}`. `tests/metrics_reference.rs` compares both with values the
//! references computed on the fixture `bench/vision_metrics_fixture.py` writes.

pub mod coco;
pub mod seg;
