//! Engine state -> [`Observed`]: the containers of one object, classified by name and labels.
//!
//! Docker labels are immutable, so roles are read this way: the container named exactly `<name>` is the
//! active one, `<name>-previous` is the previous one kept during an update, and anything labelled
//! `dockop.dev/role=preflight` is a preflight candidate. Any other container carrying the object's label is
//! a stray (e.g. renamed by hand) and is removed by the planner.

use crate::engine::{
    ContainerInfo, Engine, EngineError, LABEL_DIGEST, LABEL_NAME, LABEL_ROLE, LABEL_SPEC_HASH,
};

/// Suffix of the previous container's name.
pub const PREVIOUS_SUFFIX: &str = "-previous";
/// Suffix of the new container's name between its creation and the switch (`<name>-next`); found after a
/// crash, it is a stray and removed.
pub const NEXT_SUFFIX: &str = "-next";
/// Suffix of a preflight candidate's name.
pub const PREFLIGHT_SUFFIX: &str = "-preflight";

/// What runs on the engine for one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observed {
    /// The container named `<name>` carrying the object's label.
    pub active: Option<ContainerInfo>,
    /// `<name>-previous`: the container kept for rollback during an update.
    pub previous: Option<ContainerInfo>,
    /// Preflight candidates (leftovers after a crash).
    pub preflight: Vec<ContainerInfo>,
    /// Other containers labelled for this object.
    pub strays: Vec<ContainerInfo>,
    /// A container named `<name>` exists but is not managed by dockop: never touched, reported.
    pub foreign: Option<ContainerInfo>,
    /// Start-first objects: the route `dockop proxy` serves for the object now (`None`: no route).
    pub route: Option<crate::switch::Route>,
}

impl Observed {
    /// Classifies `all` (every container labelled `dockop.dev/name`) for object `name`, with `foreign` the
    /// container holding the name when it carries no dockop label.
    pub fn classify(name: &str, all: &[ContainerInfo], foreign: Option<ContainerInfo>) -> Self {
        let previous_name = format!("{name}{PREVIOUS_SUFFIX}");
        let mut o = Observed {
            foreign,
            ..Default::default()
        };
        for c in all.iter().filter(|c| c.label(LABEL_NAME) == Some(name)) {
            if c.label(LABEL_ROLE) == Some("preflight") {
                o.preflight.push(c.clone());
            } else if c.name == name {
                o.active = Some(c.clone());
            } else if c.name == previous_name {
                o.previous = Some(c.clone());
            } else {
                o.strays.push(c.clone());
            }
        }
        o
    }

    /// Reads the engine for one object: one list (shared when given) and one inspect for the name.
    pub async fn read(
        engine: &dyn Engine,
        name: &str,
        all: Option<&[ContainerInfo]>,
    ) -> Result<Self, EngineError> {
        let owned;
        let all = match all {
            Some(a) => a,
            None => {
                owned = engine.list_managed().await?;
                &owned
            }
        };
        let foreign = if all.iter().any(|c| c.name == name) {
            None
        } else {
            engine
                .inspect(name)
                .await?
                .filter(|c| c.label(LABEL_NAME).is_none())
        };
        Ok(Self::classify(name, all, foreign))
    }
}

/// The manifest digest a container was created from (its label).
pub fn digest_of(c: &ContainerInfo) -> Option<&str> {
    c.label(LABEL_DIGEST)
}

/// The spec hash a container was created with (its label).
pub fn spec_hash_of(c: &ContainerInfo) -> Option<&str> {
    c.label(LABEL_SPEC_HASH)
}
