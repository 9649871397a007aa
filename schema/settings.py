"""One settings class, read from the environment (prefix ``DOCBATCH_``), ``.env`` and the
TOML file ``DOCBATCH_CONFIG`` names, in that order of precedence (``schema/config.py``).

Every knob is documented in ``.env.example``. Example::

    DOCBATCH_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1/docbatch \
    DOCBATCH_BROKER_URL=redis://127.0.0.1:6379/0 docbatch api
    DOCBATCH_CONFIG=docbatch.toml docbatch config show      # unit_tokens = 4096, [models.embed]
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from docbatch.schema.tasks import TASK_KINDS
from docbatch.schema.tasks import TASKS as TASKS  # where every caller has read it from


class GenerationConfig(BaseModel):
    """Generation parameters for seq2seq handlers (``None``: the handler's default).

    Set from the environment as ``DOCBATCH_MODELS__SUMMARIZE__GENERATION__NUM_BEAMS=4``.
    Every result records the values in force (``params.generation``).
    """

    num_beams: int | None = Field(None, ge=1, description="1 = greedy")
    max_new_tokens: int | None = Field(None, ge=1)
    min_new_tokens: int | None = Field(None, ge=0)
    length_penalty: float | None = None
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)
    early_stopping: bool | None = None
    # Sampling defaults (generate; a job's own values win).
    do_sample: bool | None = None
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)

    def merged(self, defaults: dict[str, Any]) -> dict[str, Any]:
        """``defaults`` overridden by whatever is set here."""
        return {**defaults, **self.model_dump(exclude_none=True)}


class ModelConfig(BaseModel):
    """How one task's worker loads and runs its model."""

    handler: str = Field("", description="'module:Class' of the handler; empty: the default")
    model: str = Field("", description="Hub id or local path; empty means the handler default")
    revision: str = Field("main", description="Pinned revision recorded on every result")
    device: str = Field("auto", description="'auto' picks cuda when present, else cpu")
    batch_tokens: int = Field(
        0,
        description="Token budget per batch (padded length x rows); 0: 16384 on a GPU, 4096 on "
        "CPU, where big batches run slower per token (measured by bench/run.py efficiency)",
    )
    max_batch_rows: int = Field(256, description="Upper bound on rows per batch")
    unit_tokens: int = Field(
        0,
        ge=0,
        description="Estimated tokens per work unit of this deployment; 0: DOCBATCH_UNIT_TOKENS. "
        "A generator's batches are filled per unit, so bigger units waste fewer decode steps",
    )
    max_input_tokens: int = Field(0, description="0 means the model's own limit")
    params: dict[str, Any] = Field(default_factory=dict, description="Handler defaults")
    dtype: str = Field(
        "auto", description="auto (bf16/fp16 on cuda, float32 on cpu), float32, float16, bfloat16"
    )
    backend: str = Field(
        "transformers", description="transformers; ctranslate2 (seq2seq); vllm (generate, GPU)"
    )
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    fallback_model: str = Field(
        "", description="translate: many-to-many model (NLLB/M2M100) for pairs with no pair model"
    )


class Deployment(ModelConfig):
    """A named model of a task: what one kind of worker pins (``docbatch worker --deployment``).

    Every task has a default deployment named after the task, configured by the per-task
    settings (``DOCBATCH_MODELS__<TASK>__...``) and consumed from the queue
    ``<prefix>.<task>``; more are listed in ``DOCBATCH_DEPLOYMENTS`` (JSON) or the YAML file
    named by ``DOCBATCH_DEPLOYMENTS_FILE``, each on its own queue ``<prefix>.<task>.<name>``::

        DOCBATCH_DEPLOYMENTS='[{"name": "e5", "task": "embed", "model": "/models/e5-small"}]'

    A job task picks one with ``"model": "e5"`` (default: the task's default). An unknown
    key is refused (a typo would otherwise be a setting silently not applied).
    """

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        min_length=1,
        max_length=24,  # the task columns of job_tasks, units and results hold it
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Unique in the fleet; names the queue and the job task's result key",
    )
    task: str = Field(description="The task it serves: " + ", ".join(TASKS))
    worker: dict[str, Any] = Field(
        default_factory=dict,
        description="How its workers run (ops/deployments.yaml: GPU, CPUs, memory, replicas); "
        "read by the Compose and Kubernetes generators, not by docbatch",
    )

    @property
    def is_default(self) -> bool:
        return self.name == self.task


def _default_models() -> dict[str, ModelConfig]:
    return {name: ModelConfig(handler=kind.handler) for name, kind in TASK_KINDS.items()}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="DOCBATCH_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        from docbatch.schema.config import gather

        toml = gather().toml_path
        extra = (TomlConfigSettingsSource(settings_cls, toml_file=toml),) if toml else ()
        return (init_settings, env_settings, dotenv_settings, *extra)

    database_url: str = "postgresql+psycopg://postgres@127.0.0.1:5432/docbatch"
    # The same database for the connections that hold session-level advisory locks: each
    # worker's lease connection (its units' leases and its claims), the cancel sweep's and
    # the delete's per-job locks. Empty: database_url. Point it at Postgres directly (or a
    # session-mode pool) when database_url goes through a transaction-mode pooler such as
    # PgBouncer: there a lock would stay on a server connection handed to other clients.
    # Same server and database as database_url: the pooled side reads these locks and
    # connections (pg_locks, pg_stat_activity) to tell live workers from dead ones.
    lease_database_url: str = ""
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Folder of kombu's filesystem transport (broker_url "filesystem://", `docbatch run`).
    broker_folder: str = ".docbatch/broker"
    # The task this worker process serves (`docbatch worker --task T` sets it for its pool
    # children); empty: a process that loads no model (api, beat, `docbatch webhooks`).
    worker_task: str = ""
    # Queues are "<prefix>.<task>", "<prefix>.maintenance" and "<prefix>.webhooks".
    queue_prefix: str = "docbatch"
    # Threads a model worker uses (torch, OpenMP/MKL, tokenizers); 0 = its share of the
    # cores: cores // workers_per_host (worker/threads.py).
    torch_threads: int = 0
    # Model workers running on one host (sharing its cores); `docbatch run` sets it to the
    # number of tasks.
    workers_per_host: int = Field(1, ge=1)
    # A folder the model workers of one host share: with it (and torch_threads 0), the
    # workers running a unit split the cores between them, rechecked before every batch
    # (worker/threads.py). `docbatch run` sets it; empty: the static share above.
    core_share_dir: str = ""

    # Work units: documents are grouped until a unit holds about this many tokens.
    unit_tokens: int = 8192
    unit_max_documents: int = 256
    # Fair dispatch (docbatch.domain.dispatch): each queue holds about this many unit ids
    # in the broker; the rest wait in Postgres and are sent in fair order across tenants.
    dispatch_depth: int = Field(2, ge=1)
    # Inside one tenant, at one priority, the job with the fewest tokens left goes first;
    # a job's age earns it this many tokens of credit per second, up to the cap, so a big
    # job submitted earlier still progresses.
    fair_age_credit_tokens_per_second: float = Field(100.0, ge=0)
    fair_max_age_credit_tokens: int = Field(1_000_000, ge=0)
    # Per-tenant quotas (docbatch.domain.quotas); `docbatch tenants set-limits` overrides
    # them per tenant. 0: no limit. Queued = documents (per task) and estimated tokens of
    # unfinished units; per day = documents submitted since 00:00 UTC; concurrent units =
    # units running or sent to a worker, enforced only while other tenants wait.
    tenant_max_queued_documents: int = Field(0, ge=0)
    tenant_max_queued_tokens: int = Field(0, ge=0)
    tenant_max_documents_per_day: int = Field(0, ge=0)
    tenant_max_concurrent_units: int = Field(0, ge=0)
    # Reconciler: units still queued (or running with no heartbeat) after this are republished.
    requeue_after_seconds: float = 120.0
    running_lease_seconds: float = 120.0
    # A worker touches its running unit's heartbeat this often (must be well under the lease).
    unit_heartbeat_seconds: float = 10.0
    reconcile_interval_seconds: float = 30.0
    # The beat's batch tick: OpenAI batches whose job ended are finalized (their output and
    # error files written) and batches past their completion window expired, this often.
    batch_tick_seconds: float = 5.0
    max_unit_attempts: int = 3
    # Cancelling a job: its queued units are closed (cancelled result rows written) this
    # many documents per transaction, off the request path; the job row stays locked (its
    # workers' result writes wait) for one batch at a time.
    cancel_batch_documents: int = Field(5000, ge=1)
    # Deleting a job (DELETE /v1/jobs/{id}, retention): its rows go this many per
    # transaction, off the request path, the job row last (docbatch.domain.deletion).
    delete_batch_rows: int = Field(5000, ge=1)
    # The beat's lifecycle pass (docbatch.domain.lifecycle): finishes interrupted deletes,
    # removes orphaned blobs, deletes jobs past retention and expired OpenAI files.
    lifecycle_interval_seconds: float = Field(300.0, gt=0)
    # Finished jobs are deleted this many days after they finished; 0 keeps them forever.
    # A tenant may have its own (`docbatch tenants set-retention`), a job a shorter one.
    retention_days: int = Field(0, ge=0)
    # Keep the original bytes of uploaded files after extraction succeeded (a job's
    # keep_originals and a tenant's default override it).
    keep_originals: bool = True
    # A unit running longer than base + per_1k_tokens x (its tokens / 1000) seconds has its
    # worker process replaced (a hung model or tokenizer); the attempt counts. 0 turns it off.
    unit_time_limit_base_seconds: float = 300.0
    unit_time_limit_seconds_per_1k_tokens: float = 60.0
    # The api's /metrics labels jobs and queued units by tenant for this many tenants (the
    # ones with most jobs; the rest count as "other"); 0: no tenant label at all.
    # Each tenant adds a series per job status and per task.
    metrics_tenants: int = Field(0, ge=0)
    # A file the worker writes once it can take units (its model loaded): a Kubernetes
    # readinessProbe checks it. Empty: none.
    ready_file: str = ""
    # Worker /metrics (Prometheus) on this port, served by the process running the model;
    # 0 turns it off.
    worker_metrics_port: int = 0
    # Scheduled jobs: beat sends a tick this often; each tick fires the schedules that are due.
    schedule_tick_seconds: float = 15.0
    # Folders schedules may read (JSON list): tenant T reads only below <root>/T. Empty (the
    # default): no folder schedules at all.
    schedule_folder_roots: list[str] = Field(default_factory=list)
    # Pipelined worker (worker/runner.py, Postgres only): claim and chunk the next queued
    # unit while the model runs, write results on a thread; a task chains units this long.
    worker_claim_ahead: bool = True
    # Whether that claim/chunk and the result writes run on threads beside the model:
    # "threads", "inline" (one after the other, in the task's thread) or "auto" (threads on
    # a GPU, inline on the CPU, where they only take cores and the GIL from the model).
    worker_overlap: Literal["auto", "threads", "inline"] = "auto"
    worker_chain_seconds: float = 30.0
    # A worker asked to stop (SIGTERM) claims no further unit; the unit it is computing may
    # finish within this many seconds, past them it is given back (queued again, attempt
    # refunded) for another worker. Keep it well under the orchestrator's grace period
    # (Kubernetes terminationGracePeriodSeconds, compose stop_grace_period).
    worker_shutdown_grace_seconds: float = Field(20.0, ge=0)

    # Input limits (4xx naming the limit and this setting when exceeded).
    max_documents_per_job: int = 1_000_000
    max_document_bytes: int = 1_000_000
    max_request_bytes: int = 1_073_741_824
    max_labels_per_task: int = 256
    max_questions_per_task: int = 32
    # Characters in one label (tags, classify) and in one question (ask).
    max_label_chars: int = 500
    max_question_chars: int = 2000
    # generate: most new tokens a job may ask for per prompt.
    max_new_tokens: int = 4096
    # A document's metadata, encoded as compact UTF-8 JSON.
    max_metadata_bytes: int = 16_384
    # Nesting of any JSON the api reads (a body, an NDJSON line, metadata).
    max_json_depth: int = 32
    # A JSON body is parsed whole, so it has its own cap far below the streamed NDJSON body's
    # (DOCBATCH_MAX_REQUEST_BYTES); bigger submissions go as NDJSON or a multipart upload.
    max_json_body_bytes: int = 10_485_760
    # One NDJSON line, checked while the body arrives; it must hold the biggest document
    # JSON-escaped (up to 6 bytes per character) plus its metadata.
    max_line_bytes: int = 8_388_608

    # Files (PDF, DOCX, HTML, e-mail, archives, ...) are turned into text by the extract
    # stage (`docbatch worker --task extract`, no model) before the job's model tasks run.
    # A file over extract_max_bytes is not stored and fails alone at extraction.
    extract_max_bytes: int = 100_000_000
    extract_max_pages: int = 2000
    extract_max_text_chars: int = 10_000_000
    # Archives (zip, tar, tar.gz) and attachments: one budget for everything inside one
    # uploaded file, nested archives included: files, unpacked bytes, unpacked bytes per
    # byte of the upload (a zip bomb fails the archive that breaks it), nesting depth.
    extract_archive_max_files: int = Field(10_000, ge=1)
    extract_archive_max_total_bytes: int = Field(1_000_000_000, ge=1)
    extract_archive_max_ratio: float = Field(100.0, gt=0)
    extract_max_depth: int = 3
    # Where a unit's texts and unpacked files wait for its write ("" = the system's temp
    # directory); up to EXTRACT_UNIT_FILES x ARCHIVE_MAX_TOTAL_BYTES of disk at worst.
    extract_spool_dir: str = ""
    # The sandbox child's address space (RLIMIT_AS): a parser that wants more fails its
    # file ("ran out of memory"), not the worker. 0: no limit.
    extract_max_memory_bytes: int = Field(2_147_483_648, ge=0)
    # OCR (Tesseract) for pages and images without a text layer: seconds per page on a CPU
    # core, so off by default.
    extract_ocr: bool = False
    extract_ocr_languages: str = "eng"
    # Per document, in a child process: past it the child is killed and the file fails.
    extract_time_limit_seconds: float = 60.0
    # Files per extract unit (the unit of work of the extract queue).
    extract_unit_files: int = Field(8, ge=1)

    # Webhooks: tries per delivery, first retry after webhook_retry_seconds, doubling (max 1 h).
    webhook_max_attempts: int = 15
    webhook_retry_seconds: float = 2.0
    # Per phase (connect, each read, each write) of one try.
    webhook_timeout_seconds: float = 10.0
    # The whole of one try, however the receiver trickles its answer.
    webhook_deadline_seconds: float = 30.0
    # Networks webhooks may reach besides public addresses (JSON list of CIDRs or addresses,
    # e.g. ["10.1.2.0/24"]); loopback, private, link-local and reserved are refused otherwise.
    webhook_allow_networks: list[str] = Field(default_factory=list)
    # Deliveries `docbatch webhooks` sends at once (threads; it runs no model).
    webhook_concurrency: int = 8

    # Logs: "text" (the default, for people) or "json" (one object per line with job_id,
    # unit_id, tenant, task and, on the api, request_id: for a log pipeline).
    log_format: Literal["text", "json"] = "text"
    # OpenTelemetry: spans (submit, unit claim, batch, write) exported over OTLP/HTTP to this
    # endpoint, e.g. http://otel-collector:4318 (needs `pip install 'docbatch[otel]'`).
    # Empty (the default): no tracing, nothing imported.
    otlp_endpoint: str = ""

    # CLI client: where `docbatch submit/status/results` send requests.
    api_url: str = "http://127.0.0.1:8000"
    api_key: str = ""

    # API
    # The admin key: creates, lists and revokes tenant keys over /v1/admin/keys (every
    # change audited). Empty (the default): those routes do not exist. Keep it in a Secret;
    # at least 32 characters.
    admin_key: str = Field("", repr=False)
    # How long the api trusts a checked key (a revoked key works at most this much longer).
    api_key_cache_seconds: float = 10.0
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Idle keep-alive of client connections. Longer than clients' and proxies' own idle
    # timeouts (httpx: 5 s, typical proxies: 60 s), so the server never closes a connection
    # a client is about to reuse (the client would see a reset).
    api_keep_alive_seconds: int = 75
    results_page_size: int = 1000

    models: dict[str, ModelConfig] = Field(default_factory=_default_models)
    # More deployments (named models) beside each task's default (the ``models`` entry
    # above): a JSON list of Deployment objects, and/or a YAML file holding such a list.
    deployments: list[Deployment] = Field(default_factory=list)
    deployments_file: str = ""
    # OpenAI-compatible Batch API: model names a batch line may ask for, mapped to the task
    # whose worker serves them (the configured model's own id and last path part always
    # work), e.g. DOCBATCH_OPENAI_MODELS='{"text-embedding-3-small": "embed"}'.
    openai_models: dict[str, str] = Field(default_factory=dict)
    # /v1/moderations (on a classify deployment whose labels are the categories): a
    # category is flagged at this score or above, and a result is flagged if any is.
    openai_moderation_threshold: float = Field(0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _lease_database_is_postgres_too(self) -> Settings:
        sqlite = [u.startswith("sqlite") for u in (self.database_url, self.lease_database_url)]
        if self.lease_database_url and sqlite[0] != sqlite[1]:
            raise ValueError(
                "DOCBATCH_LEASE_DATABASE_URL must reach the same database as "
                "DOCBATCH_DATABASE_URL (Postgres directly, where DOCBATCH_DATABASE_URL goes "
                "through a transaction-mode pooler), or be left empty; one is SQLite and the "
                "other is not"
            )
        return self

    @model_validator(mode="after")
    def _admin_key_is_long(self) -> Settings:
        if self.admin_key and len(self.admin_key) < 32:
            raise ValueError(
                "DOCBATCH_ADMIN_KEY is too short: use at least 32 random characters "
                "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return self

    @model_validator(mode="after")
    def _fill_models(self) -> Settings:
        # Setting one field of one task (DOCBATCH_MODELS__EMBED__MODEL=...) keeps the defaults
        # of everything else.
        defaults = _default_models()
        for task, default in defaults.items():
            configured = self.models.get(task)
            if configured is None:
                self.models[task] = default
            elif not configured.handler:
                configured.handler = default.handler
        listed = list(self.deployments)
        if self.deployments_file:
            listed += read_deployments_file(self.deployments_file)
        seen_defaults: set[str] = set()
        extra: dict[str, Deployment] = {}
        for dep in listed:
            if dep.task not in defaults:
                raise ValueError(
                    f"deployment {dep.name!r}: unknown task {dep.task!r}; tasks: {', '.join(TASKS)}"
                )
            if dep.name in extra or (dep.is_default and dep.name in seen_defaults):
                raise ValueError(f"deployment {dep.name!r} is listed twice; names are unique")
            if (dep.name in defaults and not dep.is_default) or dep.name == "extract":
                raise ValueError(
                    f"deployment {dep.name!r} of task {dep.task!r}: a task's name is the name "
                    "of that task's default deployment; choose another name"
                )
            if dep.is_default:
                # A listed default sets the fields it names; the others keep the per-task
                # settings (DOCBATCH_MODELS__<TASK>__*), so a list naming only its workers
                # changes no model.
                seen_defaults.add(dep.name)
                named = dep.model_fields_set - {"name", "task", "worker"}
                merged = {**self.models[dep.task].model_dump(), **dep.model_dump(include=named)}
                self.models[dep.task] = ModelConfig(**merged)
                if not self.models[dep.task].handler:
                    self.models[dep.task].handler = defaults[dep.task].handler
            else:
                if not dep.handler:
                    dep.handler = defaults[dep.task].handler
                extra[dep.name] = dep
        self._listed = extra
        return self

    _listed: dict[str, Deployment] = PrivateAttr(default_factory=dict)

    @property
    def fleet(self) -> dict[str, Deployment]:
        """Every deployment by name: each task's default (named after it), then the listed."""
        defaults = {
            task: Deployment(name=task, task=task, **config.model_dump())
            for task, config in self.models.items()
        }
        return {**defaults, **self._listed}

    def deployments_of(self, task: str) -> list[Deployment]:
        """The deployments serving ``task``, its default first."""
        return [d for d in self.fleet.values() if d.task == task]

    def model_for(self, name: str) -> ModelConfig:
        """The model configuration of a deployment (a task's name: its default)."""
        return self.models[name] if name in self.models else self._listed[name]

    def task_of(self, name: str) -> str:
        """The task a deployment serves (a task's own name: itself; ``extract``: itself)."""
        dep = self._listed.get(name)
        return dep.task if dep is not None else name

    def is_deployment(self, name: str) -> bool:
        return name in self.models or name in self._listed

    def queue_for(self, name: str) -> str:
        """The queue of a deployment, the one place it is computed: ``<prefix>.<task>`` for
        a task's default (and the extract stage), ``<prefix>.<task>.<name>`` for the others."""
        dep = self._listed.get(name)
        if dep is None:
            return f"{self.queue_prefix}.{name}"
        return f"{self.queue_prefix}.{dep.task}.{dep.name}"

    @property
    def maintenance_queue(self) -> str:
        return f"{self.queue_prefix}.maintenance"

    @property
    def webhook_queue(self) -> str:
        """Consumed only by `docbatch webhooks`, never by a model worker."""
        return f"{self.queue_prefix}.webhooks"


def read_deployments_file(path: str) -> list[Deployment]:
    """The deployments listed in a YAML file (a list, or ``{"deployments": [...]}``)."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as exc:
        raise ValueError(f"DOCBATCH_DEPLOYMENTS_FILE {path!r}: {exc.strerror}") from None
    if isinstance(data, dict):
        data = data.get("deployments")
    if not isinstance(data, list):
        raise ValueError(
            f"DOCBATCH_DEPLOYMENTS_FILE {path!r} must hold a list of deployments "
            "(name, task, model, ...)"
        )
    listed = []
    for i, item in enumerate(data):
        try:
            listed.append(Deployment.model_validate(item))
        except ValidationError as exc:
            name = item.get("name") if isinstance(item, dict) else None
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'entry'}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(
                f"DOCBATCH_DEPLOYMENTS_FILE {path!r}: deployments[{i}]"
                + (f" ({name})" if name else "")
                + f": {problems}"
            ) from None
    return listed


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings of this process, checked: an unknown ``DOCBATCH_*`` name or a bad value
    raises ``SettingsError`` naming the variable (``schema/config.py``)."""
    from docbatch.schema.config import load_settings

    settings: Settings = load_settings()
    return settings
