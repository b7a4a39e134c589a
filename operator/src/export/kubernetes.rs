//! `dockop export kubernetes`: each `Container` as a Deployment, a Service, a Secret skeleton and
//! PersistentVolumeClaims, plus one typed [`Warning`] per field Kubernetes cannot express.
//!
//! Pure: objects in, manifests and warnings out; reading files and printing belong to the CLI. Secret
//! values are never read: a `valueFrom.file` becomes a `secretKeyRef` and an empty Secret key.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

use crate::spec::load::FieldPositions;
use crate::spec::{
    Container, ContainerSpec, Protocol, RestartPolicy, RollbackPolicy, UpdatePolicy, UpdateStrategy,
};

/// Label naming the app on every exported object; the Deployment and Service select on it.
pub const NAME_LABEL: &str = "app.kubernetes.io/name";
/// Label saying which tool made the object.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "dockop-export";
/// Default PersistentVolumeClaim size (`--volume-size`).
pub const DEFAULT_VOLUME_SIZE: &str = "1Gi";

/// Why the export options were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// `--namespace` is not a DNS label.
    #[error(
        "namespace {0:?} is not a DNS label (1-63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    Namespace(String),
    /// `--volume-size` is not a positive Kubernetes quantity.
    #[error(
        "volume size {0:?} is not a positive Kubernetes quantity (a number with an optional suffix: Ki, Mi, Gi, Ti, Pi, Ei, k, M, G, T, P, E, e.g. 1Gi or 500Mi)"
    )]
    VolumeSize(String),
    /// An object could not be written as YAML.
    #[error("cannot write {kind} {name} as YAML: {message}")]
    Yaml {
        /// Kind of the object.
        kind: &'static str,
        /// Name of the object.
        name: String,
        /// What the serializer said.
        message: String,
    },
}

/// A Kubernetes namespace name (a DNS label).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace(String);

impl Namespace {
    /// Checks `value` is a DNS label.
    pub fn parse(value: &str) -> Result<Self, ExportError> {
        if is_dns_label(value) {
            Ok(Self(value.to_owned()))
        } else {
            Err(ExportError::Namespace(value.to_owned()))
        }
    }
}

/// A positive Kubernetes resource quantity such as `1Gi`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quantity(String);

impl Quantity {
    /// Checks `value` is a positive quantity: digits with an optional fraction, then an optional binary
    /// (`Ki`..`Ei`), decimal (`k`, `M`..`E`) or exponent (`e3`) suffix.
    pub fn parse(value: &str) -> Result<Self, ExportError> {
        let bad = || ExportError::VolumeSize(value.to_owned());
        let number_end = value
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(value.len());
        let (number, suffix) = value.split_at(number_end);
        let mut parts = number.split('.');
        let whole = parts.next().unwrap_or_default();
        let fraction = parts.next();
        let well_formed = !whole.is_empty()
            && parts.next().is_none()
            && fraction.is_none_or(|f| !f.is_empty())
            && number.chars().any(|c| c.is_ascii_digit() && c != '0');
        let exponent = suffix
            .strip_prefix(['e', 'E'])
            .map(|e| e.strip_prefix(['+', '-']).unwrap_or(e))
            .is_some_and(|e| !e.is_empty() && e.chars().all(|c| c.is_ascii_digit()));
        let known = matches!(
            suffix,
            "" | "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" | "k" | "M" | "G" | "T" | "P" | "E"
        );
        if well_formed && (known || exponent) {
            Ok(Self(value.to_owned()))
        } else {
            Err(bad())
        }
    }
}

/// What shapes the export besides the objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Set as `metadata.namespace` on every object when given.
    pub namespace: Option<Namespace>,
    /// Requested storage of every PersistentVolumeClaim.
    pub volume_size: Quantity,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            volume_size: Quantity(DEFAULT_VOLUME_SIZE.to_owned()),
        }
    }
}

/// One object to export, with where its fields were written when known.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    /// The validated object.
    pub object: &'a Container,
    /// Field positions, for warnings that point into the file.
    pub positions: Option<&'a FieldPositions>,
}

/// Where a warned-about field was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// The file.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WarningKind {
    /// Ports are published on the host (`hostPort`/`hostIP`); the Service is ClusterIP only.
    HostPorts,
    /// A bind mount, exported as a node-specific `hostPath` volume.
    HostPath {
        /// The host path.
        path: String,
    },
    /// The Secret holding the `valueFrom.file` variables is exported with empty values.
    SecretToFill {
        /// Secret name.
        secret: String,
        /// Secret key and the host file dockop reads it from (the path, never the content).
        keys: Vec<(String, String)>,
    },
    /// The named volume is renamed to be a valid PersistentVolumeClaim name.
    RenamedVolume {
        /// dockop's volume name.
        from: String,
        /// The claim name.
        to: String,
    },
    /// The named volume is used by another object too; one claim is exported for both.
    SharedVolume {
        /// The claim name.
        claim: String,
        /// The object that used it first.
        first: String,
    },
    /// The image tag is followed (`update.policy` auto or monitor without a pinned digest).
    TagFollowing {
        /// The policy.
        policy: UpdatePolicy,
    },
    /// `update.window` limits when updates happen.
    UpdateWindow,
    /// `update.preflight` tries each new image in a throwaway container first.
    Preflight,
    /// `update.rollback: auto` rolls a failed change back.
    Rollback,
    /// `init` runs an init process as PID 1.
    Init,
    /// `users` keeps Linux accounts inside the container.
    Users,
    /// The health probe sends a secret (`basicAuth`, a header `valueFrom.file`); Kubernetes probes take
    /// literal header values only.
    ProbeSecret,
    /// `dependsOn` orders starts on a Docker host; pods start independently.
    DependsOn,
    /// User-defined networks and aliases: a cluster network is flat, reached through Services.
    Networks,
    /// Docker log options: the kubelet rotates container logs itself.
    Logging,
    /// A pids limit is a node (kubelet) setting.
    PidsLimit,
    /// A restart policy other than `always`/`unless-stopped`; a Deployment always restarts.
    Restart {
        /// The dockop policy.
        policy: RestartPolicy,
    },
    /// `user` is a name, which `runAsUser` cannot express.
    NonNumericUser {
        /// The user as written.
        user: String,
    },
    /// A label or annotation key (or label value) Kubernetes refuses, or a label dockop-export sets
    /// itself; it is left out.
    SkippedKey {
        /// The key.
        key: String,
    },
}

impl WarningKind {
    /// A stable label for the kind.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::HostPorts => "host-ports",
            Self::HostPath { .. } => "host-path",
            Self::SecretToFill { .. } => "secret-to-fill",
            Self::RenamedVolume { .. } => "renamed-volume",
            Self::SharedVolume { .. } => "shared-volume",
            Self::TagFollowing { .. } => "tag-following",
            Self::UpdateWindow => "update-window",
            Self::Preflight => "preflight",
            Self::Rollback => "rollback",
            Self::Init => "init",
            Self::Users => "users",
            Self::ProbeSecret => "probe-secret",
            Self::DependsOn => "depends-on",
            Self::Networks => "networks",
            Self::Logging => "logging",
            Self::PidsLimit => "pids-limit",
            Self::Restart { .. } => "restart",
            Self::NonNumericUser { .. } => "non-numeric-user",
            Self::SkippedKey { .. } => "skipped-key",
        }
    }

    fn message(&self, object: &str, namespace: Option<&Namespace>) -> String {
        let none = "no Kubernetes equivalent";
        match self {
            Self::HostPorts => format!(
                "hostPort/hostIP: {none} (the Service is ClusterIP, reachable inside the cluster only; expose it with a LoadBalancer or NodePort Service, or an Ingress)"
            ),
            Self::HostPath { path } => format!(
                "exported as a hostPath volume on {path}, which ties the pod to one node's files (move the data into a PersistentVolumeClaim, a ConfigMap or the image)"
            ),
            Self::SecretToFill { secret, keys } => {
                let files: Vec<String> = keys
                    .iter()
                    .map(|(key, file)| format!("--from-file={key}={file}"))
                    .collect();
                let ns = namespace.map_or(String::new(), |n| format!(" --namespace {}", n.0));
                format!(
                    "Secret {secret} is exported with empty values; fill it before applying, e.g. replace that document with the output of `kubectl create secret generic {secret} {}{ns} --dry-run=client -o yaml`",
                    files.join(" ")
                )
            }
            Self::RenamedVolume { from, to } => format!(
                "volume {from} is exported as PersistentVolumeClaim {to} (Kubernetes names are lowercase DNS names)"
            ),
            Self::SharedVolume { claim, first } => format!(
                "PersistentVolumeClaim {claim} is shared with {first}: ReadWriteOnce lets both pods mount it only on the same node (use a ReadWriteMany storage class, or give each its own volume)"
            ),
            Self::TagFollowing { policy } => {
                let what = match policy {
                    UpdatePolicy::Monitor => "reporting that the tag moved",
                    UpdatePolicy::Auto | UpdatePolicy::Manual => "following the tag",
                };
                format!(
                    "{what}: {none} (a Deployment pulls the tag once and never checks the registry again; pin `digest` and roll out new digests from CI, or use an image-automation tool)"
                )
            }
            Self::UpdateWindow => format!(
                "{none} (start rollouts from a scheduled pipeline or CronJob within the window)"
            ),
            Self::Preflight => format!(
                "{none} (test the image in CI before it is rolled out; a RollingUpdate with a readinessProbe keeps the old pod serving until the new one is ready)"
            ),
            Self::Rollback => format!(
                "{none} (a failed rollout stops at progressDeadlineSeconds and stays; run `kubectl rollout undo deployment/{object}`, or use a progressive-delivery controller)"
            ),
            Self::Init => format!(
                "{none} (put an init such as tini in the image as its ENTRYPOINT, or set shareProcessNamespace: true so the pause container reaps zombies)"
            ),
            Self::Users => format!(
                "{none} (create the accounts in the image, or in an entrypoint that reads their hashes from a Secret)"
            ),
            Self::DependsOn => format!(
                "{none} (pods start independently: make the app retry until its dependencies answer, or add an init container that waits for their Service)"
            ),
            Self::Networks => format!(
                "{none} (a cluster network is flat: other objects reach this one by its Service name, {object}; a NetworkPolicy restricts who may)"
            ),
            Self::Logging => format!(
                "{none} (the kubelet rotates container logs: containerLogMaxSize / containerLogMaxFiles in its configuration; ship logs with a node agent)"
            ),
            Self::PidsLimit => format!(
                "{none} per container (the kubelet's podPidsLimit sets it for every pod of a node)"
            ),
            Self::ProbeSecret => format!(
                "{none}: a Kubernetes httpGet probe sends literal header values only, and the secret is not exported (probe an unauthenticated path, or use an exec probe that reads the Secret)"
            ),
            Self::Restart { policy } => format!(
                "{:?}: {none} (a Deployment always restarts its container; use a Job for a container that should stop)",
                policy.as_docker()
            ),
            Self::NonNumericUser { user } => format!(
                "{user:?}: {none} (securityContext.runAsUser needs a numeric UID; write `user` as UID[:GID], e.g. \"1000:1000\", or set USER in the image)"
            ),
            Self::SkippedKey { key } => format!(
                "{key:?} is not a valid Kubernetes label or annotation, or is set by the export itself; left out"
            ),
        }
    }
}

/// Something the export could not carry over as it is; printed on stderr, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where the field was written, when the file spells it out.
    pub position: Option<Position>,
    /// The object's name.
    pub object: String,
    /// Dotted field path, e.g. `spec.update.preflight`.
    pub field: String,
    /// What it is about.
    pub kind: WarningKind,
    message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.position {
            write!(f, "{}:{}:{}: ", p.file.display(), p.line, p.column)?;
        }
        write!(f, "{}: {}: {}", self.object, self.field, self.message)
    }
}

/// The result of an export: the Kubernetes objects in apply order and the warnings.
#[derive(Debug, Clone, PartialEq)]
pub struct Export {
    /// Per input object: its PersistentVolumeClaims, Secret, Service, then Deployment.
    pub objects: Vec<Object>,
    /// One per field that could not be carried over as it is.
    pub warnings: Vec<Warning>,
}

impl Export {
    /// The objects as one multi-document YAML stream (`---` between documents), deterministic.
    pub fn to_yaml(&self) -> Result<String, ExportError> {
        let mut out = String::new();
        for object in &self.objects {
            // Plain scalars only: long image references stay on one line.
            let mut yaml_options = serde_saphyr::SerializerOptions::default();
            yaml_options.prefer_block_scalars = false;
            let text = serde_saphyr::to_string_with_options(object, yaml_options).map_err(|e| {
                ExportError::Yaml {
                    kind: object.kind(),
                    name: object.name().to_owned(),
                    message: e.to_string(),
                }
            })?;
            out.push_str("---\n");
            out.push_str(text.trim_start_matches("---\n"));
            if !out.ends_with('\n') {
                out.push('\n');
            }
        }
        Ok(out)
    }
}

/// Converts `inputs` (already validated) into Kubernetes objects and warnings.
pub fn export(inputs: &[Input<'_>], options: &Options) -> Export {
    let mut out = Export {
        objects: Vec::new(),
        warnings: Vec::new(),
    };
    // Claim name -> the object that exported it first.
    let mut claims: BTreeMap<String, String> = BTreeMap::new();
    for input in inputs {
        export_one(input, options, &mut claims, &mut out);
    }
    out
}

/// Collects the warnings of one object.
struct Warnings<'a> {
    input: &'a Input<'a>,
    namespace: Option<&'a Namespace>,
    out: Vec<Warning>,
}

impl Warnings<'_> {
    fn push(&mut self, field: impl Into<String>, kind: WarningKind) {
        let field = field.into();
        let object = self.input.object.name();
        let position = self.input.positions.and_then(|p| {
            p.key_position(&field).map(|(line, column)| Position {
                file: p.file().to_path_buf(),
                line,
                column,
            })
        });
        let message = kind.message(object, self.namespace);
        self.out.push(Warning {
            position,
            object: object.to_owned(),
            field,
            kind,
            message,
        });
    }
}

fn export_one(
    input: &Input<'_>,
    options: &Options,
    claims: &mut BTreeMap<String, String>,
    out: &mut Export,
) {
    let object = input.object;
    let name = object.name();
    let spec = &object.spec;
    let mut warnings = Warnings {
        input,
        namespace: options.namespace.as_ref(),
        out: Vec::new(),
    };
    let labels = labels(object, &mut warnings);
    let annotations = annotations(object, &mut warnings);
    let meta = |name: &str| ObjectMeta {
        name: name.to_owned(),
        namespace: options.namespace.as_ref().map(|n| n.0.clone()),
        labels: labels.clone(),
        annotations: BTreeMap::new(),
    };

    // Volumes: a claim per named volume (once across objects), hostPath for bind mounts.
    let mut pod_volumes = Vec::new();
    let mut mounts = Vec::new();
    for (i, volume) in spec.volumes.iter().enumerate() {
        let (pod_volume, source) = match (&volume.name, &volume.host_path) {
            (Some(volume_name), _) => {
                let claim = claim_name(volume_name, name, i);
                if claim != *volume_name {
                    warnings.push(
                        format!("spec.volumes[{i}].name"),
                        WarningKind::RenamedVolume {
                            from: volume_name.clone(),
                            to: claim.clone(),
                        },
                    );
                }
                match claims.get(&claim) {
                    Some(first) if first != name => warnings.push(
                        format!("spec.volumes[{i}].name"),
                        WarningKind::SharedVolume {
                            claim: claim.clone(),
                            first: first.clone(),
                        },
                    ),
                    Some(_) => {}
                    None => {
                        claims.insert(claim.clone(), name.to_owned());
                        out.objects.push(Object::PersistentVolumeClaim(
                            PersistentVolumeClaim::new(meta(&claim), &options.volume_size),
                        ));
                    }
                }
                (
                    pod_volume_name(&claim, i, &pod_volumes),
                    VolumeSource::Claim {
                        claim_name: claim,
                        read_only: volume.read_only,
                    },
                )
            }
            (None, Some(path)) => {
                warnings.push(
                    format!("spec.volumes[{i}].hostPath"),
                    WarningKind::HostPath { path: path.clone() },
                );
                (
                    pod_volume_name(&format!("host-path-{i}"), i, &pod_volumes),
                    VolumeSource::HostPath { path: path.clone() },
                )
            }
            // Validation guarantees exactly one of the two.
            (None, None) => continue,
        };
        mounts.push(VolumeMount {
            name: pod_volume.clone(),
            mount_path: volume.mount_path.clone(),
            read_only: volume.read_only,
        });
        pod_volumes.push(PodVolume::new(pod_volume, source));
    }

    // Environment: literals as they are, files as keys of the object's Secret.
    let mut env = Vec::new();
    let mut secret_keys = Vec::new();
    let mut first_secret_field = None;
    for (i, var) in spec.env.iter().enumerate() {
        match (&var.value, &var.value_from) {
            (_, Some(from)) => {
                first_secret_field.get_or_insert(i);
                secret_keys.push((var.name.clone(), from.file.clone()));
                env.push(K8sEnvVar {
                    name: var.name.clone(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        secret_key_ref: SecretKeySelector {
                            name: name.to_owned(),
                            key: var.name.clone(),
                        },
                    }),
                });
            }
            (value, None) => env.push(K8sEnvVar {
                name: var.name.clone(),
                value: Some(value.clone().unwrap_or_default()),
                value_from: None,
            }),
        }
    }
    if let Some(i) = first_secret_field {
        out.objects.push(Object::Secret(Secret::new(
            meta(name),
            secret_keys.iter().map(|(k, _)| k.clone()),
        )));
        warnings.push(
            format!("spec.env[{i}].valueFrom.file"),
            WarningKind::SecretToFill {
                secret: name.to_owned(),
                keys: secret_keys,
            },
        );
    }

    // Ports: one per container port and protocol; a ClusterIP Service over them.
    let mut ports: Vec<ContainerPort> = Vec::new();
    for p in &spec.ports {
        let port = ContainerPort::new(p.container_port, p.protocol);
        if !ports.contains(&port) {
            ports.push(port);
        }
    }
    if !ports.is_empty() {
        warnings.push("spec.ports", WarningKind::HostPorts);
        out.objects.push(Object::Service(Service::new(
            meta(name),
            selector(name),
            &ports,
        )));
    }

    let mut security_context = match spec.user.as_deref().map(numeric_user) {
        None => SecurityContext::default(),
        Some(Some(ctx)) => ctx,
        Some(None) => {
            warnings.push(
                "spec.user",
                WarningKind::NonNumericUser {
                    user: spec.user.clone().unwrap_or_default(),
                },
            );
            SecurityContext::default()
        }
    };
    security_context.read_only_root_filesystem = spec.read_only_root_filesystem.then_some(true);
    security_context.allow_privilege_escalation = spec.no_new_privileges.then_some(false);
    security_context.capabilities = spec
        .capabilities
        .as_ref()
        .filter(|c| !c.add.is_empty() || !c.drop.is_empty())
        .map(|c| K8sCapabilities {
            add: c.add.clone(),
            drop: c.drop.clone(),
        });
    let security_context = (!security_context.is_empty()).then_some(security_context);
    let resources = spec.resources.as_ref().and_then(|r| {
        let mut limits = BTreeMap::new();
        if let Some(m) = &r.memory {
            limits.insert("memory", m.clone());
        }
        if let Some(c) = r.cpus {
            limits.insert("cpu", format!("{}m", (c * 1000.0).round() as i64));
        }
        (!limits.is_empty()).then_some(ResourceRequirements { limits })
    });
    // tmpfs: in-memory emptyDir volumes.
    for (i, t) in spec.tmpfs.iter().enumerate() {
        let pod_volume = format!("tmpfs-{i}");
        mounts.push(VolumeMount {
            name: pod_volume.clone(),
            mount_path: t.mount_path.clone(),
            read_only: false,
        });
        pod_volumes.push(PodVolume::new(
            pod_volume,
            VolumeSource::Memory {
                size_limit: t.size.clone(),
            },
        ));
    }
    let mut host_aliases: Vec<HostAlias> = Vec::new();
    for entry in &spec.extra_hosts {
        if let Some((host, ip)) = entry.split_once(':') {
            match host_aliases.iter_mut().find(|a| a.ip == ip) {
                Some(a) => a.hostnames.push(host.to_owned()),
                None => host_aliases.push(HostAlias {
                    ip: ip.to_owned(),
                    hostnames: vec![host.to_owned()],
                }),
            }
        }
    }
    for (field, kind) in unmapped(spec) {
        warnings.push(field, kind);
    }

    let health = spec.health.as_ref();
    let container = K8sContainer {
        name: name.to_owned(),
        image: image(spec),
        command: spec.entrypoint.clone(),
        args: spec.command.clone(),
        working_dir: spec.working_dir.clone(),
        env,
        ports,
        startup_probe: health.map(|h| Probe {
            failure_threshold: h
                .startup_deadline_seconds
                .div_ceil(h.interval_seconds)
                .max(1),
            ..Probe::new(h)
        }),
        readiness_probe: health.map(Probe::new),
        liveness_probe: health.map(Probe::new),
        security_context,
        resources,
        volume_mounts: mounts,
    };
    let mut deployment_meta = meta(name);
    deployment_meta.annotations = annotations;
    out.objects.push(Object::Deployment(Deployment {
        api_version: "apps/v1",
        kind: "Deployment",
        metadata: deployment_meta,
        spec: DeploymentSpec {
            replicas: 1,
            selector: LabelSelector {
                match_labels: selector(name),
            },
            strategy: DeploymentStrategy::of(rollout(spec)),
            template: PodTemplate {
                metadata: TemplateMeta { labels },
                spec: PodSpec {
                    containers: vec![container],
                    restart_policy: "Always",
                    termination_grace_period_seconds: spec.stop_timeout_seconds,
                    volumes: pod_volumes,
                    host_network: spec.host_network,
                    hostname: spec.hostname.clone(),
                    host_aliases,
                },
            },
        },
    }));
    out.warnings.extend(warnings.out);
}

/// dockop fields Kubernetes has no place for, each as one warning when the object uses it. A new
/// field without an equivalent (e.g. `dependsOn`) is one more entry here.
fn unmapped(spec: &ContainerSpec) -> Vec<(&'static str, WarningKind)> {
    let update = &spec.update;
    let follows_tag = spec.digest.is_none() && !spec.image.contains('@');
    let mut out = Vec::new();
    if follows_tag && update.policy != UpdatePolicy::Manual {
        out.push((
            "spec.update.policy",
            WarningKind::TagFollowing {
                policy: update.policy,
            },
        ));
    }
    if update.window.is_some() {
        out.push(("spec.update.window", WarningKind::UpdateWindow));
    }
    if update.preflight {
        out.push(("spec.update.preflight", WarningKind::Preflight));
    }
    if update.rollback == RollbackPolicy::Auto {
        out.push(("spec.update.rollback", WarningKind::Rollback));
    }
    if spec.init {
        out.push(("spec.init", WarningKind::Init));
    }
    if !spec.users.is_empty() {
        out.push(("spec.users", WarningKind::Users));
    }
    if !spec.depends_on.is_empty() {
        out.push(("spec.dependsOn", WarningKind::DependsOn));
    }
    if !spec.networks.is_empty() {
        out.push(("spec.networks", WarningKind::Networks));
    }
    if spec.logging.is_some() {
        out.push(("spec.logging", WarningKind::Logging));
    }
    if spec.resources.as_ref().is_some_and(|r| r.pids.is_some()) {
        out.push(("spec.resources.pids", WarningKind::PidsLimit));
    }
    if let Some(h) = &spec.health {
        if h.basic_auth.is_some() {
            out.push(("spec.health.basicAuth", WarningKind::ProbeSecret));
        }
        if h.http_headers.iter().any(|x| x.value_from.is_some()) {
            out.push(("spec.health.httpHeaders", WarningKind::ProbeSecret));
        }
    }
    match spec.restart {
        RestartPolicy::Always | RestartPolicy::UnlessStopped => {}
        policy @ (RestartPolicy::No | RestartPolicy::OnFailure) => {
            out.push(("spec.restart", WarningKind::Restart { policy }));
        }
    }
    out
}

/// How dockop replaces the container on an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rollout {
    /// Stop the old container, then start the new one (dockop's default).
    StopFirst,
    /// Start the new one next to the old one and switch once it is healthy.
    StartFirst,
}

/// The object's rollout, from `spec.update.strategy`.
fn rollout(spec: &ContainerSpec) -> Rollout {
    match spec.update.strategy {
        UpdateStrategy::StopFirst => Rollout::StopFirst,
        UpdateStrategy::StartFirst => Rollout::StartFirst,
    }
}

fn image(spec: &ContainerSpec) -> String {
    match &spec.digest {
        Some(digest) => {
            let base = spec.image.split('@').next().unwrap_or(&spec.image);
            format!("{base}@{digest}")
        }
        None => spec.image.clone(),
    }
}

/// `runAsUser`/`runAsGroup` from `UID[:GID]`; `None` when either part is not a number.
fn numeric_user(user: &str) -> Option<SecurityContext> {
    let (uid, gid) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    Some(SecurityContext {
        run_as_user: Some(uid.parse().ok()?),
        run_as_group: match gid {
            Some(g) => Some(g.parse().ok()?),
            None => None,
        },
        ..SecurityContext::default()
    })
}

fn selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(NAME_LABEL.to_owned(), name.to_owned())])
}

/// The object's labels that Kubernetes accepts, then the two the export sets.
fn labels(object: &Container, warnings: &mut Warnings<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in &object.metadata.labels {
        let ours = key == NAME_LABEL || key == MANAGED_BY_LABEL;
        if ours || !is_qualified_name(key) || !is_label_value(value) {
            warnings.push(
                "metadata.labels",
                WarningKind::SkippedKey { key: key.clone() },
            );
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    out.insert(NAME_LABEL.to_owned(), object.name().to_owned());
    out.insert(MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned());
    out
}

/// The object's annotations whose keys Kubernetes accepts.
fn annotations(object: &Container, warnings: &mut Warnings<'_>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (key, value) in &object.metadata.annotations {
        if is_qualified_name(key) {
            out.insert(key.clone(), value.clone());
        } else {
            warnings.push(
                "metadata.annotations",
                WarningKind::SkippedKey { key: key.clone() },
            );
        }
    }
    out
}

/// A claim name (DNS subdomain) from a Docker volume name: lowercase, `_` as `-`.
fn claim_name(volume: &str, object: &str, index: usize) -> String {
    let lowered: String = volume
        .chars()
        .map(|c| match c {
            '_' => '-',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    let trimmed = lowered
        .trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(253)
        .collect::<String>();
    let trimmed = trimmed.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        format!("{object}-volume-{index}")
    } else {
        trimmed.to_owned()
    }
}

/// A pod volume name (a DNS label) from `preferred` (a claim name, or `host-path-N`), unique within the
/// pod: dots become `-`, and a name already taken (or not a DNS label) becomes `volume-N[-k]`.
fn pod_volume_name(preferred: &str, index: usize, taken: &[PodVolume]) -> String {
    let free = |name: &str| is_dns_label(name) && taken.iter().all(|v| v.name != name);
    let dotless: String = preferred
        .chars()
        .map(|c| if c == '.' { '-' } else { c })
        .take(63)
        .collect();
    let name = dotless.trim_end_matches('-');
    if free(name) {
        return name.to_owned();
    }
    let fallback = format!("volume-{index}");
    (1..)
        .map(|k| match k {
            1 => fallback.clone(),
            k => format!("{fallback}-{k}"),
        })
        .find(|n| free(n))
        .unwrap_or(fallback)
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `[prefix/]name`: prefix a DNS subdomain of at most 253 characters, name as [`is_label_value`] and
/// not empty.
fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok =
        prefix.is_none_or(|p| !p.is_empty() && p.len() <= 253 && p.split('.').all(is_dns_label));
    prefix_ok && !name.is_empty() && is_label_value(name)
}

/// At most 63 characters of `[A-Za-z0-9_.-]`, beginning and ending with a letter or digit (or empty).
fn is_label_value(s: &str) -> bool {
    let edges_ok = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && edges_ok(s.chars().next())
        && edges_ok(s.chars().last())
}

// ---------------------------------------------------------------------------------------------------
// The Kubernetes objects, as small typed structs: their field order is the conventional one and the
// YAML is deterministic (maps are sorted).
// ---------------------------------------------------------------------------------------------------

/// One exported Kubernetes object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Object {
    /// apps/v1 Deployment.
    Deployment(Deployment),
    /// v1 Service.
    Service(Service),
    /// v1 Secret.
    Secret(Secret),
    /// v1 PersistentVolumeClaim.
    PersistentVolumeClaim(PersistentVolumeClaim),
}

impl Object {
    /// The object's kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deployment(o) => o.kind,
            Self::Service(o) => o.kind,
            Self::Secret(o) => o.kind,
            Self::PersistentVolumeClaim(o) => o.kind,
        }
    }

    /// The object's name.
    pub fn name(&self) -> &str {
        &self.metadata().name
    }

    /// The object's metadata.
    pub fn metadata(&self) -> &ObjectMeta {
        match self {
            Self::Deployment(o) => &o.metadata,
            Self::Service(o) => &o.metadata,
            Self::Secret(o) => &o.metadata,
            Self::PersistentVolumeClaim(o) => &o.metadata,
        }
    }
}

/// `metadata` of an exported object.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// Name.
    pub name: String,
    /// Namespace, from `--namespace`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations (the Deployment carries the object's).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An apps/v1 Deployment of one replica.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// `apps/v1`.
    pub api_version: &'static str,
    /// `Deployment`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: DeploymentSpec,
}

/// Deployment spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSpec {
    /// Always 1: dockop runs one container per object.
    pub replicas: u32,
    /// Selects on [`NAME_LABEL`].
    pub selector: LabelSelector,
    /// From the update strategy.
    pub strategy: DeploymentStrategy,
    /// The pod.
    pub template: PodTemplate,
}

/// A label selector.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelSelector {
    /// Labels to match.
    pub match_labels: BTreeMap<String, String>,
}

/// Deployment strategy.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStrategy {
    /// `Recreate` or `RollingUpdate`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// Surge and unavailability of a rolling update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolling_update: Option<RollingUpdate>,
}

impl DeploymentStrategy {
    fn of(rollout: Rollout) -> Self {
        match rollout {
            Rollout::StopFirst => Self {
                type_: "Recreate",
                rolling_update: None,
            },
            Rollout::StartFirst => Self {
                type_: "RollingUpdate",
                rolling_update: Some(RollingUpdate {
                    max_surge: 1,
                    max_unavailable: 0,
                }),
            },
        }
    }
}

/// Rolling update parameters.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RollingUpdate {
    /// Pods above the replica count during the update.
    pub max_surge: u32,
    /// Pods below the replica count during the update.
    pub max_unavailable: u32,
}

/// Pod template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PodTemplate {
    /// Labels of the pod.
    pub metadata: TemplateMeta,
    /// The pod spec.
    pub spec: PodSpec,
}

/// Pod template metadata.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TemplateMeta {
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// Pod spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    /// The one container.
    pub containers: Vec<K8sContainer>,
    /// Always `Always` (the only policy a Deployment allows).
    pub restart_policy: &'static str,
    /// From `stopTimeoutSeconds`.
    pub termination_grace_period_seconds: u32,
    /// Claims and host paths.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<PodVolume>,
    /// `hostNetwork`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub host_network: bool,
    /// `hostname`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// `extraHosts`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub host_aliases: Vec<HostAlias>,
}

/// A container of the pod.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sContainer {
    /// The object's name.
    pub name: String,
    /// Image, `image@digest` when pinned.
    pub image: String,
    /// dockop `entrypoint` (replaces ENTRYPOINT).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// dockop `command` (replaces CMD).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// Working directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    /// Environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<K8sEnvVar>,
    /// Ports.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<ContainerPort>,
    /// Until the first healthy answer, within `startupDeadlineSeconds`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup_probe: Option<Probe>,
    /// Traffic only while healthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub readiness_probe: Option<Probe>,
    /// Restart after `failureThreshold` failed probes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub liveness_probe: Option<Probe>,
    /// From a numeric `user` and the hardening fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// `resources.memory` and `resources.cpus` as limits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Mounts.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// An environment variable.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct K8sEnvVar {
    /// Name.
    pub name: String,
    /// Literal value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Secret reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_from: Option<EnvVarSource>,
}

/// Where an environment variable's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvVarSource {
    /// A key of a Secret.
    pub secret_key_ref: SecretKeySelector,
}

/// A key of a Secret.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecretKeySelector {
    /// Secret name.
    pub name: String,
    /// Key.
    pub key: String,
}

/// A container port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    /// `tcp-4096`.
    pub name: String,
    /// Port.
    pub container_port: u16,
    /// `TCP` or `UDP`.
    pub protocol: &'static str,
}

impl ContainerPort {
    fn new(port: u16, protocol: Protocol) -> Self {
        Self {
            name: format!("{protocol}-{port}"),
            container_port: port,
            protocol: match protocol {
                Protocol::Tcp => "TCP",
                Protocol::Udp => "UDP",
            },
        }
    }
}

/// An HTTP probe.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Probe {
    /// What to GET.
    pub http_get: HttpGet,
    /// `intervalSeconds`.
    pub period_seconds: u32,
    /// `timeoutSeconds`.
    pub timeout_seconds: u32,
    /// `failureThreshold` (startup: deadline / interval, rounded up).
    pub failure_threshold: u32,
}

impl Probe {
    fn new(h: &crate::spec::Health) -> Self {
        Self {
            http_get: HttpGet {
                path: h.path.clone(),
                port: h.port,
                http_headers: h
                    .http_headers
                    .iter()
                    .filter_map(|x| {
                        x.value.as_ref().map(|value| HttpHeader {
                            name: x.name.clone(),
                            value: value.clone(),
                        })
                    })
                    .collect(),
            },
            period_seconds: h.interval_seconds,
            timeout_seconds: h.timeout_seconds,
            failure_threshold: h.failure_threshold,
        }
    }
}

/// An HTTP GET.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpGet {
    /// Path.
    pub path: String,
    /// Container port.
    pub port: u16,
    /// Literal request headers (`health.httpHeaders` with `value`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http_headers: Vec<HttpHeader>,
}

/// A probe request header.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpHeader {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
}

/// Container security context: the user and the hardening fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityContext {
    /// UID, from a numeric `user`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_user: Option<u64>,
    /// GID, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_as_group: Option<u64>,
    /// `readOnlyRootFilesystem`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_root_filesystem: Option<bool>,
    /// `false` for `noNewPrivileges: true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_privilege_escalation: Option<bool>,
    /// `capabilities`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<K8sCapabilities>,
}

impl SecurityContext {
    fn is_empty(&self) -> bool {
        *self == SecurityContext::default()
    }
}

/// Capabilities added and dropped (names without `CAP_`, as both dockop and Kubernetes write them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct K8sCapabilities {
    /// Added.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub add: Vec<String>,
    /// Dropped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drop: Vec<String>,
}

/// Resource limits of the container.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceRequirements {
    /// `memory` (a quantity, as written) and `cpu` (millicores).
    pub limits: BTreeMap<&'static str, String>,
}

/// Host names resolved to `ip` inside the pod (`extraHosts`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostAlias {
    /// Address.
    pub ip: String,
    /// Names.
    pub hostnames: Vec<String>,
}

/// An in-memory scratch volume (`tmpfs`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirSource {
    /// Always `Memory`.
    pub medium: &'static str,
    /// `tmpfs[].size`, when given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<String>,
}

/// A volume mount.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeMount {
    /// Pod volume name.
    pub name: String,
    /// Path in the container.
    pub mount_path: String,
    /// Read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

enum VolumeSource {
    Claim { claim_name: String, read_only: bool },
    HostPath { path: String },
    Memory { size_limit: Option<String> },
}

/// A pod volume: a claim or a host path.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodVolume {
    /// Name (a DNS label).
    pub name: String,
    /// A PersistentVolumeClaim.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<ClaimSource>,
    /// A host path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_path: Option<HostPathSource>,
    /// An in-memory scratch volume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub empty_dir: Option<EmptyDirSource>,
}

impl PodVolume {
    fn new(name: String, source: VolumeSource) -> Self {
        let mut v = Self {
            name,
            persistent_volume_claim: None,
            host_path: None,
            empty_dir: None,
        };
        match source {
            VolumeSource::Claim {
                claim_name,
                read_only,
            } => {
                v.persistent_volume_claim = Some(ClaimSource {
                    claim_name,
                    read_only,
                });
            }
            VolumeSource::HostPath { path } => v.host_path = Some(HostPathSource { path }),
            VolumeSource::Memory { size_limit } => {
                v.empty_dir = Some(EmptyDirSource {
                    medium: "Memory",
                    size_limit,
                });
            }
        }
        v
    }
}

/// A claim used as a pod volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSource {
    /// Claim name.
    pub claim_name: String,
    /// Read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A host path used as a pod volume.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostPathSource {
    /// Path on the node.
    pub path: String,
}

/// A v1 ClusterIP Service.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `v1`.
    pub api_version: &'static str,
    /// `Service`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ServiceSpec,
}

impl Service {
    fn new(
        metadata: ObjectMeta,
        selector: BTreeMap<String, String>,
        ports: &[ContainerPort],
    ) -> Self {
        Self {
            api_version: "v1",
            kind: "Service",
            metadata,
            spec: ServiceSpec {
                type_: "ClusterIP",
                selector,
                ports: ports
                    .iter()
                    .map(|p| ServicePort {
                        name: p.name.clone(),
                        port: p.container_port,
                        target_port: p.container_port,
                        protocol: p.protocol,
                    })
                    .collect(),
            },
        }
    }
}

/// Service spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSpec {
    /// `ClusterIP`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// Selects on [`NAME_LABEL`].
    pub selector: BTreeMap<String, String>,
    /// Ports.
    pub ports: Vec<ServicePort>,
}

/// A Service port.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    /// `tcp-4096`.
    pub name: String,
    /// Service port (the container port).
    pub port: u16,
    /// Container port.
    pub target_port: u16,
    /// `TCP` or `UDP`.
    pub protocol: &'static str,
}

/// A v1 Opaque Secret skeleton: keys with empty values, to be filled by the user.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Secret {
    /// `v1`.
    pub api_version: &'static str,
    /// `Secret`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// `Opaque`.
    #[serde(rename = "type")]
    pub type_: &'static str,
    /// Key -> "" (never the value).
    pub string_data: BTreeMap<String, String>,
}

impl Secret {
    fn new(metadata: ObjectMeta, keys: impl Iterator<Item = String>) -> Self {
        Self {
            api_version: "v1",
            kind: "Secret",
            metadata,
            type_: "Opaque",
            string_data: keys.map(|k| (k, String::new())).collect(),
        }
    }
}

/// A v1 PersistentVolumeClaim (ReadWriteOnce).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaim {
    /// `v1`.
    pub api_version: &'static str,
    /// `PersistentVolumeClaim`.
    pub kind: &'static str,
    /// Metadata.
    pub metadata: ObjectMeta,
    /// Spec.
    pub spec: ClaimSpec,
}

impl PersistentVolumeClaim {
    fn new(metadata: ObjectMeta, size: &Quantity) -> Self {
        Self {
            api_version: "v1",
            kind: "PersistentVolumeClaim",
            metadata,
            spec: ClaimSpec {
                access_modes: vec!["ReadWriteOnce"],
                resources: ClaimResources {
                    requests: BTreeMap::from([("storage", size.0.clone())]),
                },
            },
        }
    }
}

/// Claim spec.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClaimSpec {
    /// `[ReadWriteOnce]`.
    pub access_modes: Vec<&'static str>,
    /// The requested size.
    pub resources: ClaimResources,
}

/// Claim resources.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClaimResources {
    /// `storage: SIZE`.
    pub requests: BTreeMap<&'static str, String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use std::path::Path;

    use serde_json::{Value, json};

    use super::*;
    use crate::spec::load::{load_str, load_with_positions};

    const DIGEST: &str = "sha256:3c540000000000000000000000000000000000000000000000000000000000ff";

    /// A valid object `name` with `spec_extra` (YAML lines at `spec:` indentation) after its image.
    fn mk_yaml(name: &str, spec_extra: &str) -> String {
        crate::testing::object(name).spec(spec_extra).yaml()
    }

    fn mk_objects(text: &str) -> Vec<Container> {
        let loaded = load_str(Path::new("t.yaml"), text);
        assert!(loaded.is_valid(), "{:?}", loaded.diagnostics);
        loaded.objects.into_iter().map(|o| o.object).collect()
    }

    fn mk_export(text: &str, options: &Options) -> Export {
        let objects = mk_objects(text);
        let inputs: Vec<Input<'_>> = objects
            .iter()
            .map(|object| Input {
                object,
                positions: None,
            })
            .collect();
        export(&inputs, options)
    }

    fn json_of(export: &Export, kind: &str) -> Value {
        let object = export
            .objects
            .iter()
            .find(|o| o.kind() == kind)
            .unwrap_or_else(|| panic!("no {kind} in {:?}", export.objects));
        serde_json::to_value(object).unwrap()
    }

    fn kinds(export: &Export) -> Vec<&'static str> {
        export.warnings.iter().map(|w| w.kind.as_str()).collect()
    }

    const CONTAINER: &str = "/spec/template/spec/containers/0";

    #[test]
    fn mapping_rules() {
        // (spec lines, kind, JSON pointer, expected value)
        let table: &[(&str, &str, &str, Value)] = &[
            ("", "Deployment", "/spec/replicas", json!(1)),
            (
                "",
                "Deployment",
                "/spec/strategy",
                json!({"type": "Recreate"}),
            ),
            (
                "",
                "Deployment",
                "/spec/template/spec/restartPolicy",
                json!("Always"),
            ),
            (
                "",
                "Deployment",
                "/spec/template/spec/terminationGracePeriodSeconds",
                json!(10),
            ),
            (
                "",
                "Deployment",
                "/spec/selector/matchLabels",
                json!({NAME_LABEL: "app"}),
            ),
            (
                "",
                "Deployment",
                &format!("{CONTAINER}/image"),
                json!("127.0.0.1:5000/web:v1"),
            ),
            (
                &format!("digest: {DIGEST}"),
                "Deployment",
                &format!("{CONTAINER}/image"),
                json!(format!("127.0.0.1:5000/web:v1@{DIGEST}")),
            ),
            (
                "entrypoint: [/sbin/tini, --]\ncommand: [web, --port, \"80\"]",
                "Deployment",
                &format!("{CONTAINER}/command"),
                json!(["/sbin/tini", "--"]),
            ),
            (
                "entrypoint: [/sbin/tini, --]\ncommand: [web, --port, \"80\"]",
                "Deployment",
                &format!("{CONTAINER}/args"),
                json!(["web", "--port", "80"]),
            ),
            (
                "env:\n  - {name: TZ, value: UTC}\n  - {name: API_KEY, valueFrom: {file: /etc/k}}",
                "Deployment",
                &format!("{CONTAINER}/env"),
                json!([{"name": "TZ", "value": "UTC"},
                    {"name": "API_KEY", "valueFrom": {"secretKeyRef": {"name": "app", "key": "API_KEY"}}}]),
            ),
            (
                "env:\n  - {name: API_KEY, valueFrom: {file: /etc/k}}",
                "Secret",
                "/stringData",
                json!({"API_KEY": ""}),
            ),
            (
                "env:\n  - {name: API_KEY, valueFrom: {file: /etc/k}}",
                "Secret",
                "/type",
                json!("Opaque"),
            ),
            (
                "ports:\n  - {containerPort: 53, protocol: udp}\n  - {containerPort: 53, hostPort: 5353, protocol: udp}",
                "Deployment",
                &format!("{CONTAINER}/ports"),
                json!([{"name": "udp-53", "containerPort": 53, "protocol": "UDP"}]),
            ),
            (
                "ports:\n  - {containerPort: 4096, hostPort: 3000}",
                "Service",
                "/spec",
                json!({"type": "ClusterIP", "selector": {NAME_LABEL: "app"},
                    "ports": [{"name": "tcp-4096", "port": 4096, "targetPort": 4096, "protocol": "TCP"}]}),
            ),
            (
                "health: {path: /h, port: 80, intervalSeconds: 7, timeoutSeconds: 3, failureThreshold: 4, startupDeadlineSeconds: 30}",
                "Deployment",
                &format!("{CONTAINER}/readinessProbe"),
                json!({"httpGet": {"path": "/h", "port": 80}, "periodSeconds": 7, "timeoutSeconds": 3, "failureThreshold": 4}),
            ),
            (
                "health: {path: /h, port: 80, intervalSeconds: 7, timeoutSeconds: 3, failureThreshold: 4, startupDeadlineSeconds: 30}",
                "Deployment",
                &format!("{CONTAINER}/livenessProbe/failureThreshold"),
                json!(4),
            ),
            (
                "health: {path: /h, port: 80, intervalSeconds: 7, timeoutSeconds: 3, failureThreshold: 4, startupDeadlineSeconds: 30}",
                "Deployment",
                &format!("{CONTAINER}/startupProbe/failureThreshold"),
                json!(5),
            ),
            (
                "health: {port: 80}",
                "Deployment",
                &format!("{CONTAINER}/startupProbe/failureThreshold"),
                json!(60),
            ),
            (
                "workingDir: /srv",
                "Deployment",
                &format!("{CONTAINER}/workingDir"),
                json!("/srv"),
            ),
            (
                "user: \"1000\"",
                "Deployment",
                &format!("{CONTAINER}/securityContext"),
                json!({"runAsUser": 1000}),
            ),
            (
                "user: \"1000:2000\"",
                "Deployment",
                &format!("{CONTAINER}/securityContext"),
                json!({"runAsUser": 1000, "runAsGroup": 2000}),
            ),
            (
                "stopTimeoutSeconds: 45",
                "Deployment",
                "/spec/template/spec/terminationGracePeriodSeconds",
                json!(45),
            ),
            (
                "restart: \"no\"",
                "Deployment",
                "/spec/template/spec/restartPolicy",
                json!("Always"),
            ),
            (
                "volumes:\n  - {name: app-data, mountPath: /data, readOnly: true}\n  - {hostPath: /srv, mountPath: /srv}",
                "Deployment",
                "/spec/template/spec/volumes",
                json!([{"name": "app-data", "persistentVolumeClaim": {"claimName": "app-data", "readOnly": true}},
                    {"name": "host-path-1", "hostPath": {"path": "/srv"}}]),
            ),
            (
                "volumes:\n  - {name: app-data, mountPath: /data, readOnly: true}",
                "Deployment",
                &format!("{CONTAINER}/volumeMounts"),
                json!([{"name": "app-data", "mountPath": "/data", "readOnly": true}]),
            ),
            (
                "volumes:\n  - {name: My_Data.v1, mountPath: /data}",
                "PersistentVolumeClaim",
                "/metadata/name",
                json!("my-data.v1"),
            ),
            (
                "volumes:\n  - {name: My_Data.v1, mountPath: /data}",
                "Deployment",
                "/spec/template/spec/volumes/0/name",
                json!("my-data-v1"),
            ),
            (
                "volumes:\n  - {name: d, mountPath: /data}",
                "PersistentVolumeClaim",
                "/spec",
                json!({"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}),
            ),
        ];
        for (spec, kind, pointer, want) in table {
            let export = mk_export(&mk_yaml("app", spec), &Options::default());
            let got = json_of(&export, kind);
            assert_eq!(
                got.pointer(pointer),
                Some(want),
                "{spec:?}: {kind} {pointer} in {got:#}"
            );
        }
    }

    #[test]
    fn labels_annotations_and_namespace_on_every_object() {
        let text = mk_yaml(
            "app",
            "env: [{name: K, valueFrom: {file: /etc/k}}]\nports: [{containerPort: 80}]\nvolumes: [{name: d, mountPath: /d}]",
        )
        .replace(
            "  name: app\n",
            "  name: app\n  labels: {team: tools, note: \"two words\", app.kubernetes.io/name: other}\n  annotations: {owner: ops}\n",
        );
        let options = Options {
            namespace: Some(Namespace::parse("prod").unwrap()),
            volume_size: Quantity::parse("5Gi").unwrap(),
        };
        let export = mk_export(&text, &options);
        let order: Vec<&str> = export.objects.iter().map(Object::kind).collect();
        assert_eq!(
            order,
            ["PersistentVolumeClaim", "Secret", "Service", "Deployment"]
        );
        let want = BTreeMap::from([
            (NAME_LABEL.to_owned(), "app".to_owned()),
            (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
            ("team".to_owned(), "tools".to_owned()),
        ]);
        for object in &export.objects {
            assert_eq!(object.metadata().namespace.as_deref(), Some("prod"));
            assert_eq!(object.metadata().labels, want, "{}", object.kind());
        }
        let deployment = json_of(&export, "Deployment");
        assert_eq!(
            deployment["metadata"]["annotations"],
            json!({"owner": "ops"})
        );
        assert_eq!(
            deployment["spec"]["template"]["metadata"]["labels"],
            serde_json::to_value(&want).unwrap()
        );
        assert_eq!(
            json_of(&export, "PersistentVolumeClaim")["spec"]["resources"]["requests"]["storage"],
            json!("5Gi")
        );
        let skipped: Vec<&WarningKind> = export
            .warnings
            .iter()
            .filter(|w| w.field == "metadata.labels")
            .map(|w| &w.kind)
            .collect();
        assert_eq!(
            skipped,
            [
                &WarningKind::SkippedKey {
                    key: "app.kubernetes.io/name".into()
                },
                &WarningKind::SkippedKey { key: "note".into() },
            ]
        );
    }

    #[test]
    fn every_warning_by_kind() {
        // (spec lines, warnings expected in order; the defaults of preflight, rollback and init are
        // turned off unless the row is about them)
        let quiet = "digest: sha256:3c540000000000000000000000000000000000000000000000000000000000ff\ninit: false\nupdate: {preflight: false, rollback: never}";
        let table: &[(&str, &[&str])] = &[
            ("", &[]),
            (
                "ports: [{containerPort: 80, hostPort: 8080, hostIP: 0.0.0.0}]",
                &["host-ports"],
            ),
            (
                "volumes: [{hostPath: /srv, mountPath: /srv}]",
                &["host-path"],
            ),
            (
                "env: [{name: A, valueFrom: {file: /etc/a}}, {name: B, valueFrom: {file: /etc/b}}]",
                &["secret-to-fill"],
            ),
            (
                "volumes: [{name: Data_1, mountPath: /d}]",
                &["renamed-volume"],
            ),
            (
                "users: [{name: alice, locked: true}, {name: bob, locked: true}]",
                &["users"],
            ),
            ("restart: on-failure", &["restart"]),
            ("restart: always", &[]),
            ("restart: unless-stopped", &[]),
            ("user: www-data", &["non-numeric-user"]),
            ("user: \"1000:staff\"", &["non-numeric-user"]),
        ];
        for (spec, want) in table {
            let export = mk_export(
                &mk_yaml("app", &format!("{quiet}\n{spec}")),
                &Options::default(),
            );
            assert_eq!(kinds(&export), *want, "{spec:?}: {:?}", export.warnings);
        }
        // The update section, field by field, on a tag-following object.
        let table: &[(&str, &[&str])] = &[
            ("", &["tag-following", "preflight", "rollback", "init"]),
            (
                "init: false\nupdate: {policy: manual, preflight: false, rollback: never}",
                &[],
            ),
            (
                "init: false\nupdate: {policy: monitor, preflight: false, rollback: never}",
                &["tag-following"],
            ),
            (
                "init: false\nupdate: {policy: manual, preflight: false, rollback: never, window: \"Mon-Fri 02:00-04:00 UTC\"}",
                &["update-window"],
            ),
            (
                "init: false\nupdate: {policy: manual, rollback: never}",
                &["preflight"],
            ),
            (
                "init: false\nupdate: {policy: manual, preflight: false}",
                &["rollback"],
            ),
            (
                "update: {policy: manual, preflight: false, rollback: never}",
                &["init"],
            ),
        ];
        for (spec, want) in table {
            let export = mk_export(&mk_yaml("app", spec), &Options::default());
            assert_eq!(kinds(&export), *want, "{spec:?}: {:?}", export.warnings);
        }
    }

    #[test]
    fn warnings_name_the_secret_files_never_the_values() {
        let text = mk_yaml(
            "app",
            "env: [{name: TOKEN, valueFrom: {file: /etc/dockop/secrets/token}}]",
        );
        let options = Options {
            namespace: Some(Namespace::parse("prod").unwrap()),
            ..Options::default()
        };
        let export = mk_export(&text, &options);
        let w = export
            .warnings
            .iter()
            .find(|w| w.kind.as_str() == "secret-to-fill")
            .unwrap();
        assert_eq!(
            w.kind,
            WarningKind::SecretToFill {
                secret: "app".into(),
                keys: vec![("TOKEN".into(), "/etc/dockop/secrets/token".into())]
            }
        );
        assert!(
            w.to_string().contains(
                "kubectl create secret generic app --from-file=TOKEN=/etc/dockop/secrets/token --namespace prod"
            ),
            "{w}"
        );
    }

    #[test]
    fn shared_volume_is_one_claim() {
        let text = format!(
            "{}---\n{}",
            mk_yaml("a", "volumes: [{name: shared, mountPath: /d}]"),
            mk_yaml("b", "volumes: [{name: shared, mountPath: /d}]")
        );
        let export = mk_export(&text, &Options::default());
        let claims = export
            .objects
            .iter()
            .filter(|o| o.kind() == "PersistentVolumeClaim")
            .count();
        assert_eq!(claims, 1);
        let shared: Vec<_> = export
            .warnings
            .iter()
            .filter(|w| matches!(w.kind, WarningKind::SharedVolume { .. }))
            .map(|w| (w.object.as_str(), &w.kind))
            .collect();
        assert_eq!(
            shared,
            [(
                "b",
                &WarningKind::SharedVolume {
                    claim: "shared".into(),
                    first: "a".into()
                }
            )]
        );
    }

    #[test]
    fn warnings_point_into_the_file_when_the_field_is_written() {
        let text = mk_yaml("app", "init: true\nports: [{containerPort: 80}]");
        let read = load_with_positions(&[PathBuf::from("-")], || Ok(text.clone()));
        assert!(read.loaded.is_valid());
        let inputs = [Input {
            object: &read.loaded.objects[0].object,
            positions: read.positions[0].as_ref(),
        }];
        let export = export(&inputs, &Options::default());
        let lines: Vec<String> = export.warnings.iter().map(ToString::to_string).collect();
        let init = lines.iter().find(|l| l.contains("spec.init")).unwrap();
        assert!(
            init.starts_with("<stdin>:7:3: app: spec.init: no Kubernetes equivalent ("),
            "{init}"
        );
        let ports = lines.iter().find(|l| l.contains("spec.ports")).unwrap();
        assert!(
            ports.starts_with("<stdin>:8:3: app: spec.ports: "),
            "{ports}"
        );
        // Defaulted fields have no position.
        let preflight = lines.iter().find(|l| l.contains("preflight")).unwrap();
        assert!(
            preflight.starts_with("app: spec.update.preflight: no Kubernetes equivalent ("),
            "{preflight}"
        );
    }

    #[test]
    fn start_first_maps_to_a_surge_rollout() {
        assert_eq!(
            serde_json::to_value(DeploymentStrategy::of(Rollout::StartFirst)).unwrap(),
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}})
        );
    }

    #[test]
    fn quantities_and_namespaces() {
        for ok in ["1Gi", "500Mi", "1", "1.5Gi", "2e3", "1E+2", "100k", "0.5Ti"] {
            assert_eq!(Quantity::parse(ok), Ok(Quantity(ok.to_owned())), "{ok}");
        }
        for bad in [
            "", "0", "0Gi", "Gi", "1GB", "1 Gi", "-1Gi", "1.", ".5", "1..5Gi", "1e", "1Gi2",
        ] {
            assert_eq!(
                Quantity::parse(bad),
                Err(ExportError::VolumeSize(bad.to_owned())),
                "{bad}"
            );
        }
        for ok in ["prod", "a", "team-1", &"a".repeat(63)] {
            assert!(Namespace::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Prod", "-a", "a-", "a.b", "a_b", &"a".repeat(64)] {
            assert_eq!(
                Namespace::parse(bad),
                Err(ExportError::Namespace(bad.to_owned())),
                "{bad}"
            );
        }
    }

    #[test]
    fn yaml_is_deterministic_and_multi_document() {
        let text = mk_yaml(
            "app",
            "env: [{name: B, value: \"2\"}, {name: A, value: \"true\"}]\nports: [{containerPort: 80}]",
        );
        let first = mk_export(&text, &Options::default()).to_yaml().unwrap();
        let second = mk_export(&text, &Options::default()).to_yaml().unwrap();
        assert_eq!(first, second);
        assert_eq!(first.matches("---\n").count(), 2, "{first}");
        assert!(
            first.starts_with("---\napiVersion: v1\nkind: Service\n"),
            "{first}"
        );
        // Strings that look like other YAML types stay strings.
        assert!(first.contains("value: \"true\""), "{first}");
        assert!(first.contains("value: \"2\""), "{first}");
    }
}
