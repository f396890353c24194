//! Image models (owned by the models work).
