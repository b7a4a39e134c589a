//! `dependsOn` order of a set of objects: pure. Start order in layers (every object after its
//! dependencies), removal order the reverse. Names outside the set are ignored (validation reports them).

use std::collections::{BTreeMap, BTreeSet};

use super::Container;

/// Indexes of `objects` in start layers: layer 0 depends on nothing in the set, layer n only on earlier
/// layers. Objects caught in a cycle (refused by validation) come last, in one layer.
pub fn start_layers(objects: &[Container]) -> Vec<Vec<usize>> {
    let index: BTreeMap<&str, usize> = objects
        .iter()
        .enumerate()
        .map(|(i, o)| (o.name(), i))
        .collect();
    let deps: Vec<BTreeSet<usize>> = objects
        .iter()
        .map(|o| {
            o.spec
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()).copied())
                .collect()
        })
        .collect();
    let mut placed: BTreeSet<usize> = BTreeSet::new();
    let mut layers = Vec::new();
    while placed.len() < objects.len() {
        let layer: Vec<usize> = (0..objects.len())
            .filter(|i| !placed.contains(i))
            .filter(|i| deps.get(*i).is_some_and(|d| d.is_subset(&placed)))
            .collect();
        if layer.is_empty() {
            layers.push((0..objects.len()).filter(|i| !placed.contains(i)).collect());
            break;
        }
        placed.extend(layer.iter().copied());
        layers.push(layer);
    }
    layers
}

/// Names of `objects` in removal order: every object before the objects it depends on.
pub fn removal_order(objects: &[Container]) -> Vec<String> {
    start_layers(objects)
        .into_iter()
        .rev()
        .flatten()
        .filter_map(|i| objects.get(i).map(|o| o.name().to_owned()))
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn obj(name: &str, deps: &[&str]) -> Container {
        crate::testing::object(name).depends_on(deps).build()
    }

    #[test]
    fn layers_follow_dependencies() {
        let objs = [
            obj("proxy", &["app"]),
            obj("app", &["db", "cache"]),
            obj("db", &[]),
            obj("cache", &[]),
            obj("lone", &["not-here"]),
        ];
        assert_eq!(start_layers(&objs), vec![vec![2, 3, 4], vec![1], vec![0]]);
        assert_eq!(
            removal_order(&objs),
            ["proxy", "app", "db", "cache", "lone"]
        );
    }

    #[test]
    fn cycles_end_up_last() {
        let objs = [obj("a", &["b"]), obj("b", &["a"]), obj("c", &[])];
        assert_eq!(start_layers(&objs), vec![vec![2], vec![0, 1]]);
    }
}
