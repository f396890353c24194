//! Seeded augmentations (owned by the data/augmentation work).
