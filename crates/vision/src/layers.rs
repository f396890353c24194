//! burn modules over ferrolab_core::kernels (owned by the models work).
