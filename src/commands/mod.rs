pub mod classify;
pub mod features;
