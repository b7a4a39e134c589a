//! The real engine: bollard 0.21 against the Docker API (negotiated; 1.41 on Debian's docker.io 20.10).
//! Every call goes through `timed`: a timeout, a tracing span and the engine metrics.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, EndpointSettings, HostConfig, HostConfigLogConfig, Mount, MountType,
    NetworkConnectRequest, NetworkCreateRequest, NetworkingConfig,
    PortBinding as DockerPortBinding, RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RenameContainerOptions, StatsOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::endpoint::Endpoint;
use super::{
    ContainerInfo, CreateRequest, Credentials, Engine, EngineError, EngineEvent, EventStream,
    ExecOutput, HostSettings, LABEL_MANAGED, LABEL_NAME, LocalImage, NetworkEndpoint, Op,
    ProgressSink, PullProgress, RunState,
};
use crate::telemetry::Metrics;

/// Default limit for quick calls (inspect, create, rename, ...).
const QUICK: Duration = Duration::from_secs(30);
/// Limit for a pull (large images on slow links).
const PULL: Duration = Duration::from_secs(30 * 60);
/// Limit for one exec.
const EXEC: Duration = Duration::from_secs(120);
/// Where a host-network container is reached (it has no address of its own).
const HOST_NETWORK_ADDRESS: &str = "127.0.0.1";
/// Output kept from an exec or logs call.
const OUTPUT_CAP: usize = 64 * 1024;

/// The bollard-backed engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
    /// The engine's host when it is another machine.
    remote_host: Option<String>,
    /// Where every call is counted and timed.
    metrics: Arc<Metrics>,
}

impl DockerEngine {
    /// Connects to `endpoint` and negotiates the API version, counting calls in `metrics`. Certificates
    /// are read on a blocking thread.
    pub async fn connect(endpoint: &Endpoint, metrics: Arc<Metrics>) -> Result<Self, EngineError> {
        let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
            op: Op::Ping,
            message: e.to_string(),
        };
        let docker = match endpoint {
            Endpoint::LocalDefault => Docker::connect_with_local_defaults().map_err(unreachable)?,
            Endpoint::Unix(path) => {
                Docker::connect_with_socket(path, 120, bollard::API_DEFAULT_VERSION)
                    .map_err(unreachable)?
            }
            Endpoint::Plain { address, .. } => {
                Docker::connect_with_http(address, 120, bollard::API_DEFAULT_VERSION)
                    .map_err(unreachable)?
            }
            Endpoint::Tls { address, files, .. } => {
                let (address, files) = (address.clone(), files.clone());
                tokio::task::spawn_blocking(move || {
                    Docker::connect_with_ssl(
                        &address,
                        &files.key,
                        &files.cert,
                        &files.ca,
                        120,
                        bollard::API_DEFAULT_VERSION,
                    )
                })
                .await
                .map_err(|e| EngineError::Unreachable {
                    op: Op::Ping,
                    message: format!("reading the TLS certificates: {e}"),
                })?
                .map_err(unreachable)?
            }
        };
        let docker = timed(&metrics, Op::Ping, QUICK, docker.negotiate_version()).await?;
        Ok(Self {
            docker,
            remote_host: endpoint.remote_host().map(str::to_owned),
            metrics,
        })
    }

    /// Every container (any state) carrying [`LABEL_NAME`], as the list call gives them.
    async fn list_labelled(&self) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), vec![LABEL_NAME.to_owned()])]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        timed(
            &self.metrics,
            Op::List,
            QUICK,
            self.docker.list_containers(Some(opts)),
        )
        .await
    }

    fn located(&self, mut info: ContainerInfo) -> ContainerInfo {
        info.engine_host.clone_from(&self.remote_host);
        info
    }

    /// The engine's version and API version (`dockop version`).
    pub async fn version(&self) -> Result<(String, String), EngineError> {
        let v = timed(&self.metrics, Op::Ping, QUICK, self.docker.version()).await?;
        Ok((
            v.version.unwrap_or_else(|| "unknown".into()),
            v.api_version.unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// Runs `fut` under a timeout, a span and the engine metrics, mapping bollard errors.
async fn timed<T>(
    metrics: &Metrics,
    op: Op,
    limit: Duration,
    fut: impl Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, EngineError> {
    let span = tracing::debug_span!("engine", op = op.as_str());
    let start = Instant::now();
    let res = tokio::time::timeout(limit, fut).instrument(span).await;
    let out = match res {
        Err(_) => Err(EngineError::Timeout {
            op,
            seconds: limit.as_secs(),
        }),
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(map_error(op, e)),
    };
    // A 404 on inspect is an answer, not a failed call.
    let ok = matches!(&out, Ok(_) | Err(EngineError::NotFound { .. }));
    metrics.engine_call(op.as_str(), ok, start.elapsed());
    if let Err(e) = &out {
        tracing::debug!(op = op.as_str(), error = %e, "engine call failed");
    }
    out
}

fn map_error(op: Op, e: bollard::errors::Error) -> EngineError {
    use bollard::errors::Error as B;
    match e {
        B::DockerResponseServerError {
            status_code,
            message,
        } => {
            let lower = message.to_lowercase();
            if lower.contains("unauthorized")
                || lower.contains("authentication required")
                || lower.contains("no basic auth credentials")
                || lower.contains("access denied")
                || status_code == 401
            {
                EngineError::Unauthorized { op, message }
            } else if status_code == 404 {
                EngineError::NotFound { op, message }
            } else if status_code == 409 {
                EngineError::Conflict { op, message }
            } else {
                EngineError::Other {
                    op,
                    message: format!("{message} (HTTP {status_code})"),
                }
            }
        }
        B::DockerStreamError { error } => {
            let lower = error.to_lowercase();
            if lower.contains("unauthorized") || lower.contains("authentication required") {
                EngineError::Unauthorized { op, message: error }
            } else if lower.contains("not found") || lower.contains("manifest unknown") {
                EngineError::NotFound { op, message: error }
            } else {
                EngineError::Other { op, message: error }
            }
        }
        B::HyperLegacyError { .. }
        | B::IOError { .. }
        | B::SocketNotFoundError(_)
        | B::HttpClientError { .. } => EngineError::Unreachable {
            op,
            message: e.to_string(),
        },
        other => EngineError::Other {
            op,
            message: other.to_string(),
        },
    }
}

fn bollard_creds(c: Option<&Credentials>) -> Option<DockerCredentials> {
    c.map(|c| DockerCredentials {
        username: Some(c.username.clone()),
        password: Some(c.secret.expose_secret().to_owned()),
        serveraddress: Some(c.server.clone()),
        ..Default::default()
    })
}

fn to_info(r: ContainerInspectResponse) -> ContainerInfo {
    let state = r.state.unwrap_or_default();
    let run = match state.status {
        Some(ContainerStateStatusEnum::CREATED) => RunState::Created,
        Some(ContainerStateStatusEnum::RUNNING) => RunState::Running,
        Some(ContainerStateStatusEnum::PAUSED) => RunState::Paused,
        Some(ContainerStateStatusEnum::RESTARTING) => RunState::Restarting,
        Some(ContainerStateStatusEnum::REMOVING) => RunState::Removing,
        Some(ContainerStateStatusEnum::DEAD) => RunState::Dead,
        _ => RunState::Exited,
    };
    let ip_address = probe_ip(
        r.network_settings
            .as_ref()
            .and_then(|n| n.networks.as_ref())
            .into_iter()
            .flat_map(|nets| nets.values().map(|e| e.ip_address.clone())),
        r.host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref()),
    );
    ContainerInfo {
        id: r.id.unwrap_or_default(),
        name: r
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_owned(),
        labels: r
            .config
            .and_then(|c| c.labels)
            .unwrap_or_default()
            .into_iter()
            .collect(),
        state: run,
        exit_code: state.exit_code.unwrap_or(0),
        oom_killed: state.oom_killed.unwrap_or(false),
        started_at: state.started_at.filter(|s| !s.starts_with("0001-")),
        image_id: r.image.unwrap_or_default(),
        ip_address,
        engine_host: None,
    }
}

/// A list entry in dockop's terms (see [`Engine::list_brief`] for the fields the list does not carry).
fn summary_to_info(s: ContainerSummary) -> Option<ContainerInfo> {
    use ContainerSummaryStateEnum as S;
    let state = match s.state {
        Some(S::CREATED) => RunState::Created,
        Some(S::RUNNING) => RunState::Running,
        Some(S::PAUSED) => RunState::Paused,
        Some(S::RESTARTING) => RunState::Restarting,
        Some(S::REMOVING) => RunState::Removing,
        Some(S::DEAD) => RunState::Dead,
        _ => RunState::Exited,
    };
    let network_mode = s.host_config.as_ref().and_then(|h| h.network_mode.clone());
    let ip_address = probe_ip(
        s.network_settings
            .and_then(|n| n.networks)
            .into_iter()
            .flat_map(|nets| nets.into_values().map(|e| e.ip_address)),
        network_mode.as_deref(),
    );
    Some(ContainerInfo {
        id: s.id?,
        name: s
            .names
            .unwrap_or_default()
            .iter()
            .map(|n| n.trim_start_matches('/'))
            // Legacy links add `/other/alias` names: the container's own has no inner slash.
            .find(|n| !n.contains('/'))
            .unwrap_or_default()
            .to_owned(),
        labels: s.labels.unwrap_or_default().into_iter().collect(),
        state,
        exit_code: 0,
        oom_killed: false,
        started_at: None,
        image_id: s.image_id.unwrap_or_default(),
        ip_address,
        engine_host: None,
    })
}

/// The address a container is probed on: its first network address, else 127.0.0.1 for a host-network
/// container (it has none of its own).
fn probe_ip(
    addresses: impl Iterator<Item = Option<String>>,
    network_mode: Option<&str>,
) -> Option<String> {
    addresses
        .flatten()
        .find(|ip| !ip.is_empty())
        .or_else(|| (network_mode == Some("host")).then(|| HOST_NETWORK_ADDRESS.to_owned()))
}

/// The endpoint of a user-defined network: its aliases.
fn endpoint(n: &NetworkEndpoint) -> EndpointSettings {
    EndpointSettings {
        aliases: (!n.aliases.is_empty()).then(|| n.aliases.clone()),
        ..Default::default()
    }
}

/// Networking, limits, logging and hardening as Docker's `HostConfig` (the caller adds ports, mounts,
/// init and the restart policy).
fn host_config(h: &HostSettings) -> HostConfig {
    let network_mode = if h.host_network {
        Some("host".to_owned())
    } else {
        h.networks.first().map(|n| n.name.clone())
    };
    HostConfig {
        network_mode,
        memory: h.memory,
        nano_cpus: h.nano_cpus,
        pids_limit: h.pids_limit,
        log_config: Some(HostConfigLogConfig {
            typ: Some(h.log.driver.clone()),
            config: Some(h.log.options.clone().into_iter().collect()),
        }),
        readonly_rootfs: h.readonly_rootfs.then_some(true),
        tmpfs: (!h.tmpfs.is_empty()).then(|| h.tmpfs.clone().into_iter().collect()),
        cap_add: (!h.cap_add.is_empty()).then(|| h.cap_add.clone()),
        cap_drop: (!h.cap_drop.is_empty()).then(|| h.cap_drop.clone()),
        security_opt: h
            .no_new_privileges
            .then(|| vec!["no-new-privileges:true".to_owned()]),
        extra_hosts: (!h.extra_hosts.is_empty()).then(|| h.extra_hosts.clone()),
        ..Default::default()
    }
}

fn cap(mut s: String) -> String {
    if s.len() > OUTPUT_CAP {
        let mut cut = s.len() - OUTPUT_CAP;
        while !s.is_char_boundary(cut) {
            cut += 1;
        }
        s.drain(..cut);
    }
    s
}

#[async_trait]
impl Engine for DockerEngine {
    async fn ping(&self) -> Result<(), EngineError> {
        timed(&self.metrics, Op::Ping, QUICK, self.docker.ping())
            .await
            .map(|_| ())
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, EngineError> {
        let summaries = self.list_labelled().await?;
        let mut out = Vec::with_capacity(summaries.len());
        for s in summaries {
            let Some(id) = s.id else { continue };
            // Gone between list and inspect: not an error, just no longer there.
            if let Some(info) = self.inspect(&id).await? {
                out.push(info);
            }
        }
        Ok(out)
    }

    async fn list_brief(&self) -> Result<Vec<ContainerInfo>, EngineError> {
        let summaries = self.list_labelled().await?;
        Ok(summaries
            .into_iter()
            .filter_map(summary_to_info)
            .map(|i| self.located(i))
            .collect())
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, EngineError> {
        match timed(
            &self.metrics,
            Op::Inspect,
            QUICK,
            self.docker.inspect_container(id_or_name, None),
        )
        .await
        {
            Ok(r) => Ok(Some(self.located(to_info(r)))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn registry_digest(
        &self,
        image: &str,
        auth: Option<&Credentials>,
    ) -> Result<String, EngineError> {
        let r = timed(
            &self.metrics,
            Op::RegistryDigest,
            QUICK,
            self.docker
                .inspect_registry_image(image, bollard_creds(auth)),
        )
        .await?;
        r.descriptor.digest.ok_or_else(|| EngineError::Other {
            op: Op::RegistryDigest,
            message: format!("registry answered for {image} without a digest"),
        })
    }

    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, EngineError> {
        match timed(
            &self.metrics,
            Op::ImageInspect,
            QUICK,
            self.docker.inspect_image(reference),
        )
        .await
        {
            Ok(i) => Ok(Some(LocalImage {
                id: i.id.unwrap_or_default(),
                repo_digests: i.repo_digests.unwrap_or_default(),
            })),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn pull(
        &self,
        reference: &str,
        auth: Option<&Credentials>,
        progress: ProgressSink<'_>,
    ) -> Result<(), EngineError> {
        let opts = CreateImageOptions {
            from_image: Some(reference.to_owned()),
            ..Default::default()
        };
        let mut stream = self
            .docker
            .create_image(Some(opts), None, bollard_creds(auth));
        let fut = async {
            while let Some(item) = stream.next().await {
                let info = item?;
                let detail = info.progress_detail.unwrap_or_default();
                progress(PullProgress {
                    layer: info.id.unwrap_or_default(),
                    status: info.status.unwrap_or_default(),
                    current: detail.current.and_then(|v| u64::try_from(v).ok()),
                    total: detail.total.and_then(|v| u64::try_from(v).ok()),
                });
            }
            Ok(())
        };
        timed(&self.metrics, Op::Pull, PULL, fut).await
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        match timed(
            &self.metrics,
            Op::VolumeCreate,
            QUICK,
            self.docker.inspect_volume(name),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let req = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        timed(
            &self.metrics,
            Op::VolumeCreate,
            QUICK,
            self.docker.create_volume(req),
        )
        .await
        .map(|_| ())
    }

    async fn ensure_network(&self, name: &str) -> Result<(), EngineError> {
        match timed(
            &self.metrics,
            Op::NetworkCreate,
            QUICK,
            self.docker.inspect_network(name, None),
        )
        .await
        {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let req = NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".to_owned()),
            labels: Some(HashMap::from([(
                LABEL_MANAGED.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        };
        match timed(
            &self.metrics,
            Op::NetworkCreate,
            QUICK,
            self.docker.create_network(req),
        )
        .await
        {
            // Created by someone else in between: the result is the same.
            Err(EngineError::Conflict { .. }) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    async fn create(&self, req: &CreateRequest) -> Result<String, EngineError> {
        let mut bindings: HashMap<String, Option<Vec<DockerPortBinding>>> = HashMap::new();
        for p in &req.ports {
            bindings
                .entry(format!("{}/{}", p.container_port, p.protocol))
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(DockerPortBinding {
                    host_ip: Some(p.host_ip.clone()),
                    host_port: Some(p.host_port.to_string()),
                });
        }
        let mounts = req
            .mounts
            .iter()
            .map(|m| Mount {
                typ: Some(if m.named_volume {
                    MountType::VOLUME
                } else {
                    MountType::BIND
                }),
                source: Some(m.source.clone()),
                target: Some(m.target.clone()),
                read_only: Some(m.read_only),
                ..Default::default()
            })
            .collect();
        let restart = match req.restart.as_str() {
            "always" => RestartPolicyNameEnum::ALWAYS,
            "unless-stopped" => RestartPolicyNameEnum::UNLESS_STOPPED,
            "on-failure" => RestartPolicyNameEnum::ON_FAILURE,
            _ => RestartPolicyNameEnum::NO,
        };
        let h = &req.host;
        let body = ContainerCreateBody {
            hostname: h.hostname.clone(),
            networking_config: h.networks.first().map(|n| NetworkingConfig {
                endpoints_config: Some(HashMap::from([(n.name.clone(), endpoint(n))])),
            }),
            image: Some(req.image.clone()),
            env: Some(req.env.clone()),
            cmd: req.cmd.clone(),
            entrypoint: req.entrypoint.clone(),
            user: req.user.clone(),
            working_dir: req.working_dir.clone(),
            labels: Some(req.labels.clone().into_iter().collect()),
            exposed_ports: Some(req.exposed.clone()),
            stop_timeout: Some(i64::from(req.stop_timeout)),
            host_config: Some(HostConfig {
                init: Some(req.init),
                port_bindings: Some(bindings),
                mounts: Some(mounts),
                restart_policy: Some(RestartPolicy {
                    name: Some(restart),
                    maximum_retry_count: None,
                }),
                ..host_config(h)
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(req.name.clone()),
            ..Default::default()
        };
        let r = timed(
            &self.metrics,
            Op::Create,
            QUICK,
            self.docker.create_container(Some(opts), body),
        )
        .await?;
        // API 1.41 takes one network at create; the others are joined before the start.
        for n in h.networks.iter().skip(1) {
            let connect = NetworkConnectRequest {
                container: r.id.clone(),
                endpoint_config: Some(endpoint(n)),
            };
            if let Err(e) = timed(
                &self.metrics,
                Op::NetworkConnect,
                QUICK,
                self.docker.connect_network(&n.name, connect),
            )
            .await
            {
                let _ = self.remove(&r.id, true).await;
                return Err(e);
            }
        }
        Ok(r.id)
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        timed(
            &self.metrics,
            Op::Start,
            QUICK,
            self.docker.start_container(id, None),
        )
        .await
    }

    async fn stop(&self, id: &str, timeout_secs: u32) -> Result<(), EngineError> {
        let opts = StopContainerOptions {
            t: Some(i32::try_from(timeout_secs).unwrap_or(i32::MAX)),
            signal: None,
        };
        let limit = QUICK + Duration::from_secs(u64::from(timeout_secs));
        match timed(
            &self.metrics,
            Op::Stop,
            limit,
            self.docker.stop_container(id, Some(opts)),
        )
        .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), EngineError> {
        let opts = RenameContainerOptions {
            name: new_name.to_owned(),
        };
        timed(
            &self.metrics,
            Op::Rename,
            QUICK,
            self.docker.rename_container(id, opts),
        )
        .await
    }

    async fn remove(&self, id: &str, volumes: bool) -> Result<(), EngineError> {
        let opts = RemoveContainerOptions {
            v: volumes,
            force: true,
            link: false,
        };
        match timed(
            &self.metrics,
            Op::Remove,
            QUICK,
            self.docker.remove_container(id, Some(opts)),
        )
        .await
        {
            Err(e) if e.is_not_found() => Ok(()),
            // Already being removed by someone else: the result is the same.
            Err(EngineError::Conflict { message, .. })
                if message.contains("already in progress") =>
            {
                Ok(())
            }
            other => other,
        }
    }

    async fn exec(
        &self,
        id: &str,
        cmd: &[String],
        stdin: Option<&[u8]>,
    ) -> Result<ExecOutput, EngineError> {
        let fut = async {
            let created = self
                .docker
                .create_exec(
                    id,
                    CreateExecOptions {
                        attach_stdin: Some(stdin.is_some()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        cmd: Some(cmd.to_vec()),
                        user: Some("0".to_owned()),
                        ..Default::default()
                    },
                )
                .await?;
            let mut out = ExecOutput::default();
            if let StartExecResults::Attached {
                mut output,
                mut input,
            } = self
                .docker
                .start_exec(
                    &created.id,
                    Some(StartExecOptions {
                        detach: false,
                        ..Default::default()
                    }),
                )
                .await?
            {
                if let Some(data) = stdin {
                    input.write_all(data).await?;
                    input.flush().await?;
                }
                input.shutdown().await?;
                drop(input);
                while let Some(chunk) = output.next().await {
                    match chunk? {
                        LogOutput::StdOut { message } | LogOutput::Console { message } => {
                            out.stdout.push_str(&String::from_utf8_lossy(&message));
                        }
                        LogOutput::StdErr { message } => {
                            out.stderr.push_str(&String::from_utf8_lossy(&message))
                        }
                        LogOutput::StdIn { .. } => {}
                    }
                }
            }
            let inspected = self.docker.inspect_exec(&created.id).await?;
            out.exit_code = inspected.exit_code.unwrap_or(-1);
            out.stdout = cap(out.stdout);
            out.stderr = cap(out.stderr);
            Ok(out)
        };
        timed(&self.metrics, Op::Exec, EXEC, fut).await
    }

    async fn logs_tail(&self, id: &str, lines: usize) -> Result<String, EngineError> {
        let opts = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut stream = self.docker.logs(id, Some(opts));
        let fut = async {
            let mut s = String::new();
            while let Some(chunk) = stream.next().await {
                s.push_str(&chunk?.to_string());
            }
            Ok(cap(s))
        };
        timed(&self.metrics, Op::Logs, QUICK, fut).await
    }

    async fn memory_usage(&self, id: &str) -> Result<Option<u64>, EngineError> {
        let mut stream = self.docker.stats(
            id,
            Some(StatsOptions {
                stream: false,
                one_shot: true,
            }),
        );
        let fut = async {
            match stream.next().await {
                Some(Ok(s)) => Ok(s.memory_stats.and_then(|m| m.usage)),
                Some(Err(e)) => Err(e),
                None => Ok(None),
            }
        };
        timed(&self.metrics, Op::Stats, QUICK, fut).await
    }

    fn events(&self) -> EventStream {
        let filters: HashMap<String, Vec<String>> = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), vec![LABEL_NAME.to_owned()]),
        ]);
        let opts = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        let metrics = Arc::clone(&self.metrics);
        let stream = self.docker.events(Some(opts)).filter_map(move |item| {
            let metrics = Arc::clone(&metrics);
            async move {
                match item {
                    Err(e) => {
                        metrics.engine_call(Op::Events.as_str(), false, Duration::ZERO);
                        Some(Err(map_error(Op::Events, e)))
                    }
                    Ok(msg) => {
                        let actor = msg.actor?;
                        let attrs = actor.attributes.unwrap_or_default();
                        let object = attrs.get(LABEL_NAME)?.clone();
                        let action = msg.action.unwrap_or_default();
                        // "exec_start: sh -c ..." and "health_status: healthy" carry details after a colon.
                        let action = action
                            .split(':')
                            .next()
                            .unwrap_or_default()
                            .trim()
                            .to_owned();
                        Some(Ok(EngineEvent {
                            action,
                            id: actor.id.unwrap_or_default(),
                            object,
                            instance: attrs.get(super::LABEL_INSTANCE).cloned(),
                        }))
                    }
                }
            }
        });
        Box::pin(stream)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::engine::LogConfig;

    #[test]
    fn host_config_carries_limits_and_hardening() {
        let h = HostSettings {
            networks: vec![NetworkEndpoint {
                name: "web".into(),
                aliases: vec!["app".into()],
            }],
            memory: Some(512 << 20),
            nano_cpus: Some(1_500_000_000),
            pids_limit: Some(512),
            log: LogConfig {
                driver: "json-file".into(),
                options: BTreeMap::from([("max-size".into(), "10m".into())]),
            },
            readonly_rootfs: true,
            tmpfs: BTreeMap::from([("/tmp".into(), "size=1024".into())]),
            cap_add: vec!["NET_BIND_SERVICE".into()],
            cap_drop: vec!["ALL".into()],
            no_new_privileges: true,
            extra_hosts: vec!["db:10.0.0.5".into()],
            ..Default::default()
        };
        let c = host_config(&h);
        assert_eq!(c.network_mode.as_deref(), Some("web"));
        assert_eq!(c.memory, Some(512 << 20));
        assert_eq!(c.nano_cpus, Some(1_500_000_000));
        assert_eq!(c.pids_limit, Some(512));
        let log = c.log_config.unwrap();
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(
            log.config.unwrap().get("max-size").map(String::as_str),
            Some("10m")
        );
        assert_eq!(c.readonly_rootfs, Some(true));
        assert_eq!(
            c.tmpfs.unwrap().get("/tmp").map(String::as_str),
            Some("size=1024")
        );
        assert_eq!(c.cap_add.unwrap(), ["NET_BIND_SERVICE"]);
        assert_eq!(c.cap_drop.unwrap(), ["ALL"]);
        assert_eq!(c.security_opt.unwrap(), ["no-new-privileges:true"]);
        assert_eq!(c.extra_hosts.unwrap(), ["db:10.0.0.5"]);
        assert_eq!(endpoint(&h.networks[0]).aliases.unwrap(), ["app"]);
        let host = host_config(&HostSettings {
            host_network: true,
            ..Default::default()
        });
        assert_eq!(host.network_mode.as_deref(), Some("host"));
        assert_eq!(host.readonly_rootfs, None);
        assert_eq!(host.cap_drop, None);
    }
}
