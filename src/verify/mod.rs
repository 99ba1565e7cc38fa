//! Verification: does the destination hold what the source holds?
//!
//! Per migrated namespace: counts; every document compared by its bytes (a streaming match of
//! both sides in `_id` order, see [`matcher`]); indexes and collection options ([`metadata`]).
//! Used by `mongoshift verify` and by the cutover's verification step. Parallel across and
//! within collections, resumable from a checkpoint, and, while a sync is still applying
//! changes, rechecking differences until they agree or persist ([`run`]).

pub mod matcher;
pub mod metadata;
pub mod report;
pub mod run;

pub use report::{DifferenceList, NamespaceReport, VerifyMode, VerifyReport};
pub use run::{VerifyError, VerifyRequest, checkpoint_path, verify};
