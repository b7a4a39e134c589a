//! Engine state -> [`Observed`]: the containers of one object, classified by name and labels.
//!
//! Docker labels are immutable, so roles are read this way: the container named exactly `<name>` is the
//! active one, `<name>-previous` is the previous one kept during an update, and anything labelled
//! `dockop.dev/role=preflight` is a preflight candidate. Any other container carrying the object's label is
//! a stray (e.g. renamed by hand) and is removed by the planner.
//!
//! The list handed in is the instance's own (see [`crate::engine::instance`]); a container holding the
//! object's name that is managed by dockop but missing from that list belongs to another instance and is
//! reported in [`Observed::other_instance`], never touched.

use crate::engine::{
    ContainerInfo, Engine, EngineError, LABEL_DIGEST, LABEL_INSTANCE, LABEL_NAME, LABEL_ROLE,
    LABEL_SPEC_HASH,
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
    /// A container named `<name>` managed by another dockop instance: never touched, reported.
    pub other_instance: Option<OtherInstance>,
    /// Start-first objects: the route `dockop proxy` serves for the object now (`None`: no route).
    pub route: Option<crate::switch::Route>,
}

/// A container holding a wanted name for another dockop instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtherInstance {
    /// The container.
    pub container: ContainerInfo,
    /// Its `dockop.dev/instance` label; `None` when made by an older dockop (only the default instance
    /// adopts those).
    pub instance: Option<String>,
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
        let holder = if all.iter().any(|c| c.name == name) {
            None
        } else {
            engine.inspect(name).await?
        };
        let (foreign, other) = match holder {
            Some(c) if c.label(LABEL_NAME).is_none() => (Some(c), None),
            Some(c) => {
                let instance = c.label(LABEL_INSTANCE).map(str::to_owned);
                (
                    None,
                    Some(OtherInstance {
                        container: c,
                        instance,
                    }),
                )
            }
            None => (None, None),
        };
        let mut o = Self::classify(name, all, foreign);
        o.other_instance = other;
        Ok(o)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::instance::{Instance, ScopedEngine};
    use crate::testing::{engine_with, info};

    /// A running container named `name`, labelled for object `object` and `instance` when given.
    fn container(
        id: &str,
        name: &str,
        object: Option<&str>,
        instance: Option<&str>,
    ) -> ContainerInfo {
        info(id, name).object(object).instance(instance).build()
    }

    async fn observe(instance: Instance, cs: &[ContainerInfo], name: &str) -> Observed {
        let e = ScopedEngine::new(Arc::new(engine_with(cs)), instance);
        Observed::read(&e, name, None).await.expect("read")
    }

    #[tokio::test]
    async fn own_containers_are_classified_and_others_reported() {
        let cs = [
            container("1", "web", Some("web"), Some("a")),
            container("2", "web-previous", Some("web"), Some("a")),
            container("3", "api", Some("api"), Some("b")),
            container("4", "old", Some("old"), None),
            container("5", "plain", None, None),
        ];
        let a = || Instance::new("a", false).expect("a");
        let o = observe(a(), &cs, "web").await;
        assert_eq!(o.active.map(|c| c.id).as_deref(), Some("1"));
        assert_eq!(o.previous.map(|c| c.id).as_deref(), Some("2"));
        assert!(o.other_instance.is_none() && o.foreign.is_none());

        let o = observe(a(), &cs, "api").await;
        assert!(o.active.is_none());
        let other = o.other_instance.expect("api belongs to b");
        assert_eq!(other.instance.as_deref(), Some("b"));

        // Made by an older dockop: another instance's for a named instance, adopted by the default one.
        let o = observe(a(), &cs, "old").await;
        assert!(o.active.is_none());
        assert_eq!(o.other_instance.map(|x| x.instance), Some(None));
        let o = observe(Instance::new("host", true).expect("host"), &cs, "old").await;
        assert_eq!(o.active.map(|c| c.id).as_deref(), Some("4"));

        let o = observe(a(), &cs, "plain").await;
        assert!(o.foreign.is_some() && o.other_instance.is_none());
    }
}
