//! Users inside the container: created, password hash set, locked or unlocked through exec; removed ones
//! locked or deleted. Only accounts carrying the `dockop-managed` GECOS marker are ever touched.
//!
//! STUB: the interface is fixed; the implementation is being written.

use crate::desired::DesiredContainer;
use crate::engine::Engine;
use crate::status::ObjectStatus;

/// GECOS comment marking accounts dockop manages.
pub const MARKER: &str = "dockop-managed";

/// What a users pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersReport {
    /// Something was changed (drift repaired).
    pub changed: bool,
    /// One line for people, never a hash.
    pub summary: String,
    /// An error that left some users unapplied (the others were applied).
    pub error: Option<String>,
}

/// Why users could not be reconciled at all.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum UsersError {
    /// The image has neither shadow-utils nor busybox user tools.
    #[error(
        "users: the image has no useradd/chpasswd (shadow-utils) or busybox adduser; cannot manage users"
    )]
    NoTools,
    /// Exec failed.
    #[error("users: {0}")]
    Exec(String),
}

/// True when a previous pass may have created accounts that must now be locked or deleted.
pub fn may_have_managed(status: &ObjectStatus) -> bool {
    !status.users.is_empty()
}

/// Reconciles users in container `id`.
pub async fn apply(
    engine: &dyn Engine,
    id: &str,
    desired: &DesiredContainer,
    status: &mut ObjectStatus,
) -> Result<UsersReport, UsersError> {
    let _ = (engine, id, desired, status);
    Ok(UsersReport::default())
}
