//! Offline jobs: commands that run beside the service or against it and
//! exit. [`train`] fits the purchase model, [`segment`] groups customers,
//! [`replay`] sends data files to a running service, [`retrain`] keeps the
//! served model current from the recorded sessions, [`archive`] keeps the
//! event log in the data lake as Parquet, [`bench`] measures it, and
//! [`demo`] runs all of it together as a living showcase.

pub mod archive;
pub mod bench;
pub mod demo;
pub mod replay;
pub mod retrain;
pub mod segment;
pub mod train;
