//! The real engine: bollard 0.21 against the Docker API (negotiated; 1.41 on Debian's docker.io 20.10).
//! Every call goes through [`DockerEngine::call`]: a timeout, a tracing span and the engine metrics.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummary,
    ContainerSummaryStateEnum, HostConfig, Mount, MountType, PortBinding as DockerPortBinding,
    RestartPolicy, RestartPolicyNameEnum, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, RenameContainerOptions, StatsOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

use super::{
    ContainerInfo, CreateRequest, Credentials, Engine, EngineError, EngineEvent, EventStream,
    ExecOutput, LABEL_NAME, LocalImage, Op, ProgressSink, PullProgress, RunState,
};
use crate::telemetry::metrics;

/// Default limit for quick calls (inspect, create, rename, ...).
const QUICK: Duration = Duration::from_secs(30);
/// Limit for a pull (large images on slow links).
const PULL: Duration = Duration::from_secs(30 * 60);
/// Limit for one exec.
const EXEC: Duration = Duration::from_secs(120);
/// Output kept from an exec or logs call.
const OUTPUT_CAP: usize = 64 * 1024;

/// The bollard-backed engine.
#[derive(Debug, Clone)]
pub struct DockerEngine {
    docker: Docker,
}

impl DockerEngine {
    /// Connects to `host` (`unix://...`, `tcp://...`, `http://...`), or to `DOCKER_HOST` / the local socket
    /// when `None`, and negotiates the API version.
    pub async fn connect(host: Option<&str>) -> Result<Self, EngineError> {
        let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
            op: Op::Ping,
            message: e.to_string(),
        };
        let docker = match host {
            Some(h) if h.starts_with("unix://") => {
                Docker::connect_with_socket(h, 120, bollard::API_DEFAULT_VERSION)
                    .map_err(unreachable)?
            }
            Some(h) if h.starts_with("tcp://") || h.starts_with("http://") => {
                Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION)
                    .map_err(unreachable)?
            }
            Some(h) => {
                return Err(EngineError::Unreachable {
                    op: Op::Ping,
                    message: format!(
                        "unsupported Docker host {h:?}: use unix:///path or tcp://host:port"
                    ),
                });
            }
            None => Docker::connect_with_local_defaults().map_err(unreachable)?,
        };
        let docker = timed(Op::Ping, QUICK, docker.negotiate_version()).await?;
        Ok(Self { docker })
    }

    /// The engine's version and API version (`dockop version`).
    pub async fn version(&self) -> Result<(String, String), EngineError> {
        let v = timed(Op::Ping, QUICK, self.docker.version()).await?;
        Ok((
            v.version.unwrap_or_else(|| "unknown".into()),
            v.api_version.unwrap_or_else(|| "unknown".into()),
        ))
    }
}

/// Runs `fut` under a timeout, a span and the engine metrics, mapping bollard errors.
async fn timed<T>(
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
    metrics().engine_call(op.as_str(), ok, start.elapsed());
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
    let ip_address = r.network_settings.as_ref().and_then(|n| {
        n.networks.as_ref().and_then(|nets| {
            nets.values()
                .filter_map(|e| e.ip_address.clone())
                .find(|ip| !ip.is_empty())
        })
    });
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
    let ip_address = s.network_settings.and_then(|n| {
        n.networks.and_then(|nets| {
            nets.into_values()
                .filter_map(|e| e.ip_address)
                .find(|ip| !ip.is_empty())
        })
    });
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
    })
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
        timed(Op::Ping, QUICK, self.docker.ping()).await.map(|_| ())
    }

    async fn list_managed(&self) -> Result<Vec<ContainerInfo>, EngineError> {
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), vec![LABEL_NAME.to_owned()])]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = timed(Op::List, QUICK, self.docker.list_containers(Some(opts))).await?;
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
        let filters: HashMap<String, Vec<String>> =
            HashMap::from([("label".to_owned(), vec![LABEL_NAME.to_owned()])]);
        let opts = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let summaries = timed(Op::List, QUICK, self.docker.list_containers(Some(opts))).await?;
        Ok(summaries.into_iter().filter_map(summary_to_info).collect())
    }

    async fn inspect(&self, id_or_name: &str) -> Result<Option<ContainerInfo>, EngineError> {
        match timed(
            Op::Inspect,
            QUICK,
            self.docker.inspect_container(id_or_name, None),
        )
        .await
        {
            Ok(r) => Ok(Some(to_info(r))),
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
        timed(Op::Pull, PULL, fut).await
    }

    async fn ensure_volume(
        &self,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), EngineError> {
        match timed(Op::VolumeCreate, QUICK, self.docker.inspect_volume(name)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let req = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels.clone().into_iter().collect()),
            ..Default::default()
        };
        timed(Op::VolumeCreate, QUICK, self.docker.create_volume(req))
            .await
            .map(|_| ())
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
        let body = ContainerCreateBody {
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
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptions {
            name: Some(req.name.clone()),
            ..Default::default()
        };
        let r = timed(
            Op::Create,
            QUICK,
            self.docker.create_container(Some(opts), body),
        )
        .await?;
        Ok(r.id)
    }

    async fn start(&self, id: &str) -> Result<(), EngineError> {
        timed(Op::Start, QUICK, self.docker.start_container(id, None)).await
    }

    async fn stop(&self, id: &str, timeout_secs: u32) -> Result<(), EngineError> {
        let opts = StopContainerOptions {
            t: Some(i32::try_from(timeout_secs).unwrap_or(i32::MAX)),
            signal: None,
        };
        let limit = QUICK + Duration::from_secs(u64::from(timeout_secs));
        match timed(Op::Stop, limit, self.docker.stop_container(id, Some(opts))).await {
            Err(e) if e.is_not_found() => Ok(()),
            other => other,
        }
    }

    async fn rename(&self, id: &str, new_name: &str) -> Result<(), EngineError> {
        let opts = RenameContainerOptions {
            name: new_name.to_owned(),
        };
        timed(Op::Rename, QUICK, self.docker.rename_container(id, opts)).await
    }

    async fn remove(&self, id: &str, volumes: bool) -> Result<(), EngineError> {
        let opts = RemoveContainerOptions {
            v: volumes,
            force: true,
            link: false,
        };
        match timed(
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
        timed(Op::Exec, EXEC, fut).await
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
        timed(Op::Logs, QUICK, fut).await
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
        timed(Op::Stats, QUICK, fut).await
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
        let stream = self
            .docker
            .events(Some(opts))
            .filter_map(|item| async move {
                match item {
                    Err(e) => {
                        metrics().engine_call(Op::Events.as_str(), false, Duration::ZERO);
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
                        }))
                    }
                }
            });
        Box::pin(stream)
    }
}
