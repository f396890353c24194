//! Detection and segmentation metrics (owned by the metrics work).
