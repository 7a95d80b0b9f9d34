//! Customer segmentations as the rest of the system knows them: the feature
//! [`transform`] a fit and the live assignment share, the stored versions
//! and their figures ([`versions`]), segment [`naming`], and activation and
//! live assignment of the active version ([`assign`]). Fitting runs in
//! `jobs::segment`; the API and the session actors use this.

pub mod assign;
pub mod naming;
pub mod transform;
pub mod versions;
